/**
 * In-memory NonceStore for one receiver process (the local default).
 *
 * Contract:
 * - `record(id, expiresAt)` answers 'fresh' the first time an id is seen and 'replay' every later time while the
 *   record lives (an id seen again after its expiry but before the sweep is still 'replay': safe either way,
 *   because such a packet fails the clock window first). Check-and-insert is synchronous, so two concurrent
 *   calls for one id never both get 'fresh'.
 * - Start-time guard: `notBefore` is the clock reading at construction (the process start) plus `guardMs` (pass
 *   the receiver's clock window). The receiver's clock step refuses packets stamped before it ('before-start'):
 *   the previous process accepted stamps up to its own clock + the window (a device clock running ahead), so a
 *   restart, which forgets every record, cannot re-open a replay of any packet the previous process accepted.
 * - Clock steps: the store remembers the latest `expiresAt` it ever dropped (`forgottenUntil`, a high-water mark
 *   that never goes down). A record whose `expiresAt` is not after it is answered 'replay' whether or not it is
 *   still held: after the clock was stepped forward (records swept under the wrong time) and back, a packet whose
 *   record was forgotten cannot be fresh again. Under a clock that only goes forward such a packet fails the
 *   clock window first, so nothing valid is refused.
 * - Records expire at their `expiresAt` (timestamp + clock window); expired records are swept on insert at most
 *   once per `sweepIntervalMs` of the injected clock. Memory is bounded by `maxEntries`: when full even after a
 *   sweep, `record` throws `NonceStoreFullError` and the receiver fails closed (never evicts a live record,
 *   which would allow a replay). Only authenticated packets reach the store, so filling it needs valid keys.
 * - Each owner's share is bounded by `maxEntriesPerOwner` (the receiver passes the device id): an owner holding
 *   that many live records gets 'share-full' (nothing recorded; the store sweeps early, at most once a second,
 *   before it says so), so one stolen key cannot fill the store: its device is refused, every other device
 *   still gets in. Records without an owner count only against `maxEntries`.
 */
import type { Clock, NonceRecordResult, NonceStore } from '../core/interfaces.ts';

export class NonceStoreFullError extends Error {
  override readonly name = 'NonceStoreFullError';
}

export interface MemoryNonceStoreOptions {
  readonly clock: Clock;
  /** @default 1_000_000 */
  readonly maxEntries?: number;
  /** Live records one owner (device) may hold. @default 4096 (DEFAULT_MAX_NONCES_PER_DEVICE) */
  readonly maxEntriesPerOwner?: number;
  /** @default 10_000 */
  readonly sweepIntervalMs?: number;
  /** How far past the start the start-time guard reaches: the receiver's clock window. @default 0 */
  readonly guardMs?: number;
}

/** A device's share of a replay store: far above any real device's knocks within two clock windows. */
export const DEFAULT_MAX_NONCES_PER_DEVICE = 4096;

interface NonceRecord {
  readonly expiresAt: number;
  readonly owner: string | undefined;
}

export class MemoryNonceStore implements NonceStore {
  readonly notBefore: number;
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #maxEntriesPerOwner: number;
  readonly #sweepIntervalMs: number;
  readonly #records = new Map<string, NonceRecord>();
  /** Live records per owner. */
  readonly #owned = new Map<string, number>();
  #lastSweep: number;
  #forgottenUntil = 0;

  constructor(options: MemoryNonceStoreOptions) {
    this.#clock = options.clock;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
    this.#maxEntriesPerOwner = options.maxEntriesPerOwner ?? DEFAULT_MAX_NONCES_PER_DEVICE;
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 10_000;
    const now = this.#clock.now();
    this.notBefore = now + (options.guardMs ?? 0);
    this.#lastSweep = now;
  }

  /** Live (not yet swept) records. */
  get size(): number {
    return this.#records.size;
  }

  /** Live (not yet swept) records of one owner. */
  ownedBy(owner: string): number {
    return this.#owned.get(owner) ?? 0;
  }

  async record(replayId: string, expiresAt: number, owner?: string): Promise<NonceRecordResult> {
    return this.recordSync(replayId, expiresAt, owner);
  }

  /** The synchronous core of `record`, shared with FileNonceStore. */
  recordSync(replayId: string, expiresAt: number, owner?: string): NonceRecordResult {
    if (this.#records.has(replayId) || expiresAt <= this.#forgottenUntil) return 'replay';
    const now = this.#clock.now();
    const sinceSweep = now - this.#lastSweep;
    const ownerFull = () => owner !== undefined && this.ownedBy(owner) >= this.#maxEntriesPerOwner;
    // Sweep on schedule, or early when full or the owner's share is (at most once a second, so a full store or
    // share is not swept per packet).
    if (
      sinceSweep >= this.#sweepIntervalMs ||
      ((this.#records.size >= this.#maxEntries || ownerFull()) && sinceSweep >= 1000)
    ) {
      this.sweep(now);
    }
    if (ownerFull()) return 'share-full';
    if (this.#records.size >= this.#maxEntries) {
      throw new NonceStoreFullError(
        `nonce store holds ${this.#records.size} live records (maxEntries ${this.#maxEntries}): refusing new ` +
          'packets until records expire; raise maxEntries if this is legitimate load',
      );
    }
    this.#insert(replayId, { expiresAt, owner });
    return 'fresh';
  }

  /** Drops records whose expiresAt is before `now`; returns how many were dropped. */
  sweep(now: number = this.#clock.now()): number {
    this.#lastSweep = now;
    let dropped = 0;
    for (const [id, record] of this.#records) {
      if (record.expiresAt < now) {
        this.#records.delete(id);
        this.forget(record.expiresAt);
        if (record.owner !== undefined) this.#disown(record.owner);
        dropped += 1;
      }
    }
    return dropped;
  }

  /** The latest `expiresAt` of a record this store dropped (or was told of): see the contract. */
  get forgottenUntil(): number {
    return this.#forgottenUntil;
  }

  /** Raises the high-water mark (a record with this expiry was dropped, here or by an earlier process). */
  forget(expiresAt: number): void {
    if (expiresAt > this.#forgottenUntil) this.#forgottenUntil = expiresAt;
  }

  /** Live records as [replayId, expiresAt, owner] (for the file store's compaction). */
  *entries(): IterableIterator<[string, number, string | undefined]> {
    for (const [id, record] of this.#records) yield [id, record.expiresAt, record.owner];
  }

  /** Loads a record without the fresh/replay decision or the share check (for the file store's start-up). */
  restore(replayId: string, expiresAt: number, owner?: string): void {
    const current = this.#records.get(replayId);
    if (current === undefined) {
      this.#insert(replayId, { expiresAt, owner });
      return;
    }
    this.#records.set(replayId, { expiresAt: Math.max(current.expiresAt, expiresAt), owner: current.owner });
  }

  async close(): Promise<void> {
    this.#records.clear();
    this.#owned.clear();
  }

  #insert(replayId: string, record: NonceRecord): void {
    this.#records.set(replayId, record);
    if (record.owner !== undefined) this.#owned.set(record.owner, this.ownedBy(record.owner) + 1);
  }

  #disown(owner: string): void {
    const left = this.ownedBy(owner) - 1;
    if (left > 0) this.#owned.set(owner, left);
    else this.#owned.delete(owner);
  }
}
