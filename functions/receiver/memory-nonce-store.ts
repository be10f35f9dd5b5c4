/**
 * In-memory NonceStore for one receiver process (the local default).
 *
 * Contract:
 * - `record(id, expiresAt)` answers 'fresh' the first time an id is seen and 'replay' every later time while the
 *   record lives (an id seen again after its expiry but before the sweep is still 'replay': safe either way,
 *   because such a packet fails the clock window first). Check-and-insert is synchronous, so two concurrent
 *   calls for one id never both get 'fresh'.
 * - Start-time guard: `notBefore` is the clock reading at construction (the process start). The receiver's
 *   clock step refuses packets stamped before it ('before-start'), so a restart, which forgets every record,
 *   cannot re-open a replay of a packet the previous process accepted.
 * - Records expire at their `expiresAt` (timestamp + clock window); expired records are swept on insert at most
 *   once per `sweepIntervalMs` of the injected clock. Memory is bounded by `maxEntries`: when full even after a
 *   sweep, `record` throws `NonceStoreFullError` and the receiver fails closed (never evicts a live record,
 *   which would allow a replay). Only authenticated packets reach the store, so filling it needs valid keys.
 */
import type { Clock, NonceRecordResult, NonceStore } from '../core/interfaces.ts';

export class NonceStoreFullError extends Error {
  override readonly name = 'NonceStoreFullError';
}

export interface MemoryNonceStoreOptions {
  readonly clock: Clock;
  /** @default 1_000_000 */
  readonly maxEntries?: number;
  /** @default 10_000 */
  readonly sweepIntervalMs?: number;
}

export class MemoryNonceStore implements NonceStore {
  readonly notBefore: number;
  readonly #clock: Clock;
  readonly #maxEntries: number;
  readonly #sweepIntervalMs: number;
  readonly #expiries = new Map<string, number>();
  #lastSweep: number;

  constructor(options: MemoryNonceStoreOptions) {
    this.#clock = options.clock;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
    this.#sweepIntervalMs = options.sweepIntervalMs ?? 10_000;
    this.notBefore = this.#clock.now();
    this.#lastSweep = this.notBefore;
  }

  /** Live (not yet swept) records. */
  get size(): number {
    return this.#expiries.size;
  }

  async record(replayId: string, expiresAt: number): Promise<NonceRecordResult> {
    return this.recordSync(replayId, expiresAt);
  }

  /** The synchronous core of `record`, shared with FileNonceStore. */
  recordSync(replayId: string, expiresAt: number): NonceRecordResult {
    if (this.#expiries.has(replayId)) return 'replay';
    const now = this.#clock.now();
    const sinceSweep = now - this.#lastSweep;
    // Sweep on schedule, or early when full (at most once a second, so a full store is not swept per packet).
    if (
      sinceSweep >= this.#sweepIntervalMs ||
      (this.#expiries.size >= this.#maxEntries && sinceSweep >= 1000)
    ) {
      this.sweep(now);
    }
    if (this.#expiries.size >= this.#maxEntries) {
      throw new NonceStoreFullError(
        `nonce store holds ${this.#expiries.size} live records (maxEntries ${this.#maxEntries}): refusing new ` +
          'packets until records expire; raise maxEntries if this is legitimate load',
      );
    }
    this.#expiries.set(replayId, expiresAt);
    return 'fresh';
  }

  /** Drops records whose expiresAt is before `now`; returns how many were dropped. */
  sweep(now: number = this.#clock.now()): number {
    this.#lastSweep = now;
    let dropped = 0;
    for (const [id, expiresAt] of this.#expiries) {
      if (expiresAt < now) {
        this.#expiries.delete(id);
        dropped += 1;
      }
    }
    return dropped;
  }

  /** Live records as [replayId, expiresAt] pairs (for the file store's compaction). */
  entries(): IterableIterator<[string, number]> {
    return this.#expiries.entries();
  }

  /** Loads a record without the fresh/replay decision (for the file store's start-up). */
  restore(replayId: string, expiresAt: number): void {
    const current = this.#expiries.get(replayId);
    this.#expiries.set(replayId, Math.max(current ?? expiresAt, expiresAt));
  }

  async close(): Promise<void> {
    this.#expiries.clear();
  }
}
