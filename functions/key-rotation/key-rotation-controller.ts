/**
 * The receiver acting as SDP controller: rotates each device's native SPA key over the protected broker session
 * (docs/key-lifecycle.md). The decisions are rotation-plan.ts's; this module runs the I/O.
 *
 * Contract:
 * - `rotate(id)` (on demand) or `tick()` (schedule: due devices only) generates a fresh 32-byte key and a random
 *   u32 key id, records it as the device's pending generation (durably, before anything is sent), then publishes
 *   the offer to the device's own key topic, sealed (BKO1, functions/core/sealed-key-offer.ts) under the device's
 *   newest current key with a fresh nonce: no key ever crosses the broker readable. The store's 'add-pending' is the key id's reservation: an id already
 *   in use rejects with `KeyIdTakenError` and another is drawn, at most `KEY_ID_ATTEMPTS` times (then the
 *   rotation fails, naming the cause). No listing of the fleet per offer. A device with a pending key gets the same offer
 *   again instead (`tick` re-sends it every `resendMs`; `start()` re-sends every pending offer at once, so a
 *   restart mid-rotation resumes it).
 * - `start()` begins the schedule and runs the first tick at once; it returns that tick's completion, which a
 *   caller that must not wait on the fleet (`blackcloud up`) does not await: offers then go out in the background.
 *   The schedule continues whether or not the first tick succeeded; `stop()` ends it. Ticks never overlap: a tick
 *   asked for while one runs (`tickSoon`, the timer, a call) runs after it.
 * - A tick works on at most `tickConcurrency` devices at once (default 8, like `rotateMany`): with 1,000 pending
 *   offers, 8 publishes are in flight, never 1,000 (nor one at a time).
 * - `handleMessage(topic, payload)` takes acks from the broker. Each device's acks first pass a token bucket
 *   (`ackLimit`, default a burst of 5 then 1 a minute), before anything touches the store: an ack over the limit
 *   is refused as 'rate-limited' and counted (`key.ack.rate-limited`). Then the key must be the device's pending
 *   one, the proof must verify in constant time under that key, and the (device, key id, nonce) must be new; only
 *   then does the key become current and the old keys end after `graceMs`. Anything else changes nothing and is
 *   audited as 'key.ack-rejected' with a reason; those audit lines are capped (`rejectAudit`, default a burst of
 *   20 then 1 a second, for all devices together), the ones beyond counted (`key.ack-rejected.suppressed`).
 *   `counters()` is a snapshot of both counts.
 * - `noteKeyUsed(id, keyId)` (after each accepted knock) confirms a pending key at first use and retires the
 *   older keys at once; it touches the store only for devices this controller knows to hold several keys
 *   (learned from its own offers, acks and every `tick()`). `tick()` removes keys whose grace has ended.
 * - `tick()` lists the fleet once (`store.list()`, read in bulk) and decides on that snapshot; it reads a device
 *   again (`store.get`) only before acting on it (expiry, offer, re-send) or when this controller changed it since
 *   the list. An idle tick therefore costs the store's one bulk listing, whatever the fleet size.
 * - Operations on one device run one at a time (offers, acks, knocks, schedule), never interleaved.
 * - Every rotation, outcome and failure is audited; key material never leaves through the audit or errors.
 *   No method throws on a device's failure: it is returned as an outcome and audited.
 */

import { BC1_KEY_LENGTH } from '../../spa/limits.ts';
import type { AuditSink, Clock, NonceStore, RandomSource, Timers } from '../core/interfaces.ts';
import { parseKeyAck, verifyAckProof } from '../core/key-messages.ts';
import {
  type ControllerSession,
  type DeviceKeys,
  type KeyChange,
  type KeyGenerationStore,
  KeyIdTakenError,
  type ListedDeviceKeys,
} from '../core/key-rotation-interfaces.ts';
import {
  KEY_OFFER_NONCE_LENGTH,
  type KeyOffer,
  type SealingKey,
  sealKeyOffer,
} from '../core/sealed-key-offer.ts';
import { identityOfKeyAckTopic, keyTopic } from '../core/topics.ts';
import { type Counters, createCounters } from '../receiver/counters.ts';
import { MemoryNonceStore } from '../receiver/memory-nonce-store.ts';
import { TokenBucketRateLimiter } from '../receiver/rate-limiter.ts';
import {
  checkAckTarget,
  newestCurrent,
  planAck,
  planExpiry,
  planKeyUsed,
  planRotation,
  type RotationTimers,
} from './rotation-plan.ts';

export interface KeyRotationConfig extends RotationTimers {
  /** Re-send a pending offer that long after the last send. */
  readonly resendMs: number;
  /** How often `start()` runs `tick()`. */
  readonly tickMs: number;
}

const HOUR_MS = 3_600_000;
export const DEFAULT_KEY_ROTATION: KeyRotationConfig = Object.freeze({
  periodMs: 24 * HOUR_MS,
  graceMs: HOUR_MS,
  resendMs: 5 * 60_000,
  tickMs: 60_000,
});

export class KeyRotationConfigError extends RangeError {
  override readonly name = 'KeyRotationConfigError';
}

/** Validates a partial config once, at the edge. */
export function keyRotationConfig(partial: Partial<KeyRotationConfig> = {}): KeyRotationConfig {
  const config = { ...DEFAULT_KEY_ROTATION, ...partial };
  for (const [field, value] of Object.entries(config)) {
    if (!Number.isInteger(value) || value < 1 || value > 366 * 24 * HOUR_MS) {
      throw new KeyRotationConfigError(
        `key rotation ${field}: received ${String(value)}; expected an integer number of milliseconds in ` +
          `1..${366 * 24 * HOUR_MS} (default ${DEFAULT_KEY_ROTATION[field as keyof KeyRotationConfig]})`,
      );
    }
  }
  return Object.freeze(config);
}

/** A token bucket's settings (functions/receiver/rate-limiter.ts). */
export interface BucketLimit {
  readonly burst: number;
  readonly ratePerSecond: number;
}

/** Acks one device may send before the store is touched: a burst, then one a minute. */
export const ACK_LIMIT_DEFAULTS: BucketLimit = Object.freeze({ burst: 5, ratePerSecond: 1 / 60 });
/** 'key.ack-rejected' audit lines, all devices together: a burst, then one a second; the rest are counted. */
export const ACK_REJECT_AUDIT_DEFAULTS: BucketLimit = Object.freeze({ burst: 20, ratePerSecond: 1 });
/** Devices a tick (and `rotateMany`) works on at once. */
export const DEFAULT_ROTATION_CONCURRENCY = 8;

/** The controller's counters (`counters()`). */
export const controllerCounterName = {
  acksRateLimited: 'key.ack.rate-limited',
  ackAuditSuppressed: 'key.ack-rejected.suppressed',
} as const;

export interface KeyRotationDeps {
  readonly store: KeyGenerationStore;
  readonly session: ControllerSession;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly random: RandomSource;
  readonly timers: Timers;
  /** Replay protection for acks. @default an in-memory store */
  readonly acks?: NonceStore;
  readonly config?: Partial<KeyRotationConfig>;
  /** Per-device ack limit. @default ACK_LIMIT_DEFAULTS */
  readonly ackLimit?: BucketLimit;
  /** Cap on 'key.ack-rejected' audit lines. @default ACK_REJECT_AUDIT_DEFAULTS */
  readonly rejectAudit?: BucketLimit;
  /** Devices a tick works on at once. @default DEFAULT_ROTATION_CONCURRENCY */
  readonly tickConcurrency?: number;
  /** @default a fresh set */
  readonly counters?: Counters;
}

export type RotateOutcome =
  | { readonly deviceId: string; readonly status: 'offered' | 'resent'; readonly keyId: number }
  | { readonly deviceId: string; readonly status: 'skipped'; readonly reason: string }
  | { readonly deviceId: string; readonly status: 'failed'; readonly error: string };

export type AckOutcome =
  | { readonly ok: true; readonly deviceId: string; readonly keyId: number }
  | { readonly ok: false; readonly reason: string };

export interface RotateManyOptions {
  /** At most this many rotations at once. @default DEFAULT_ROTATION_CONCURRENCY */
  readonly concurrency?: number;
  /** false = scheduled semantics (only due devices). @default true */
  readonly force?: boolean;
  readonly onProgress?: (done: number, total: number, outcome: RotateOutcome) => void;
}

const KEY_ID_BYTES = 4;
/** Random key ids drawn per rotation before giving up (a u32 space: a collision is rare, eight in a row absurd). */
export const KEY_ID_ATTEMPTS = 8;

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Runs `run` over `items` with at most `concurrency` at once; results in input order. */
async function mapBounded<T, R>(
  items: readonly T[],
  concurrency: number,
  run: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      results[index] = await run(items[index]!, index);
    }
  };
  const workers = Math.min(Math.max(1, Math.floor(concurrency)), items.length);
  await Promise.all(Array.from({ length: workers }, worker));
  return results;
}

const REJECT_AUDIT_KEY = 'key.ack-rejected';

export class KeyRotationController {
  readonly config: KeyRotationConfig;
  readonly #deps: KeyRotationDeps;
  readonly #acks: NonceStore;
  /** When each pending offer was last published by this process (ms). Lost on restart: `start()` re-sends. */
  readonly #lastSent = new Map<string, number>();
  /** Devices holding more than one key (pending or retiring): the only ones a knock can change. */
  readonly #inRotation = new Set<string>();
  /** One operation at a time per device (acks, knocks, rotations), so two events never race on one record. */
  readonly #series = new Map<string, Promise<unknown>>();
  /** Keys of unknown age (from before rotation) count their age from the controller's start. */
  readonly #startedAt: number;
  /** When (in `#changes` order) this controller last changed each device, so a tick knows its snapshot is old. */
  readonly #changedAt = new Map<string, number>();
  #changes = 0;
  #timer: unknown;
  #soon: unknown;
  #started = false;
  /** The last tick asked for: the next one runs after it. */
  #ticks: Promise<unknown> = Promise.resolve();
  readonly #ackLimiter: TokenBucketRateLimiter;
  readonly #rejectAudit: TokenBucketRateLimiter;
  readonly #counters: Counters;
  readonly #tickConcurrency: number;

  constructor(deps: KeyRotationDeps) {
    this.#deps = deps;
    this.#startedAt = deps.clock.now();
    this.config = keyRotationConfig(deps.config);
    this.#acks = deps.acks ?? new MemoryNonceStore({ clock: deps.clock });
    this.#ackLimiter = new TokenBucketRateLimiter({
      clock: deps.clock,
      ...(deps.ackLimit ?? ACK_LIMIT_DEFAULTS),
    });
    this.#rejectAudit = new TokenBucketRateLimiter({
      clock: deps.clock,
      ...(deps.rejectAudit ?? ACK_REJECT_AUDIT_DEFAULTS),
      maxSources: 1,
    });
    this.#counters = deps.counters ?? createCounters();
    const concurrency = deps.tickConcurrency ?? DEFAULT_ROTATION_CONCURRENCY;
    if (!Number.isInteger(concurrency) || concurrency < 1) {
      throw new KeyRotationConfigError(
        `key rotation tickConcurrency: received ${String(concurrency)}; expected a positive integer (default ${DEFAULT_ROTATION_CONCURRENCY})`,
      );
    }
    this.#tickConcurrency = concurrency;
  }

  /** Rate-limited acks and suppressed rejection audit lines (`controllerCounterName`). */
  counters(): Record<string, number> {
    return this.#counters.snapshot();
  }

  /**
   * Starts the schedule: the first tick (which re-sends every pending offer: a restart resumes) runs at once, then
   * one every `tickMs`. Resolves when the first tick is done (rejects if it failed: the schedule goes on); do not
   * await it to leave the offers in the background. Idempotent while started.
   */
  start(): Promise<void> {
    if (this.#started) return this.#ticks.then(() => undefined);
    this.#started = true;
    const first = this.tick();
    void first
      .catch(() => undefined)
      .then(() => {
        if (this.#started) this.#schedule();
      });
    return first.then(() => undefined);
  }

  stop(): void {
    this.#started = false;
    if (this.#timer !== undefined) this.#deps.timers.clearTimeout(this.#timer);
    if (this.#soon !== undefined) this.#deps.timers.clearTimeout(this.#soon);
    this.#timer = undefined;
    this.#soon = undefined;
  }

  /**
   * Runs `tick()` once, soon (coalesced), e.g. when the directory changed under us: pending keys recorded by
   * another process are then offered at once. Only while started.
   */
  tickSoon(): void {
    if (!this.#started || this.#soon !== undefined) return;
    this.#soon = this.#deps.timers.setTimeout(() => {
      this.#soon = undefined;
      void this.tick().catch(() => undefined);
    }, 0);
  }

  #schedule(): void {
    this.#timer = this.#deps.timers.setTimeout(() => {
      void this.tick()
        .catch(() => undefined)
        .finally(() => {
          if (this.#started) this.#schedule();
        });
    }, this.config.tickMs);
  }

  #inSeries<T>(deviceId: string, run: () => Promise<T>): Promise<T> {
    const previous = this.#series.get(deviceId) ?? Promise.resolve();
    const next = previous.then(run);
    const settled = next.catch(() => undefined);
    this.#series.set(deviceId, settled);
    void settled.then(() => {
      if (this.#series.get(deviceId) === settled) this.#series.delete(deviceId);
    });
    return next;
  }

  #track(deviceId: string, keyCount: number): void {
    if (keyCount > 1) this.#inRotation.add(deviceId);
    else this.#inRotation.delete(deviceId);
  }

  /** On demand: rotate one device now (a pending rotation is re-sent instead). */
  rotate(deviceId: string, force = true): Promise<RotateOutcome> {
    const { store, clock } = this.#deps;
    return this.#inSeries(deviceId, async () => {
      try {
        const device = await store.get(deviceId);
        if (device === undefined) {
          return { deviceId, status: 'failed', error: `device "${deviceId}" is not in the directory` };
        }
        return await this.#rotateDevice(device, force, clock.now());
      } catch (error) {
        return this.#failed(deviceId, error);
      }
    });
  }

  /** Rotates many devices with bounded concurrency; outcomes in input order. */
  async rotateMany(deviceIds: readonly string[], options: RotateManyOptions = {}): Promise<RotateOutcome[]> {
    let done = 0;
    return mapBounded(deviceIds, options.concurrency ?? DEFAULT_ROTATION_CONCURRENCY, async (deviceId) => {
      const outcome = await this.rotate(deviceId, options.force ?? true);
      done += 1;
      options.onProgress?.(done, deviceIds.length, outcome);
      return outcome;
    });
  }

  /**
   * The schedule: removes keys past their grace, rotates due devices, re-sends stale pending offers, on at most
   * `tickConcurrency` devices at once. Runs after the tick before it (ticks never overlap).
   */
  tick(): Promise<RotateOutcome[]> {
    const run = this.#ticks.then(() => this.#tickOnce());
    this.#ticks = run.catch(() => undefined);
    return run;
  }

  async #tickOnce(): Promise<RotateOutcome[]> {
    const listedAt = this.#changes;
    const listed = await this.#deps.store.list();
    const outcomes = await mapBounded(listed, this.#tickConcurrency, (device) =>
      this.#inSeries(device.deviceId, () => this.#tickDevice(device, listedAt)),
    );
    return outcomes.filter((outcome) => outcome !== undefined);
  }

  /** Whether the listed snapshot calls for work now (an unknown `enabled` counts as enabled: `get` tells). */
  #mayNeedWork(listed: ListedDeviceKeys, now: number): boolean {
    const device: DeviceKeys = { ...listed, enabled: listed.enabled ?? true };
    if (planExpiry(device, now) !== undefined) return true;
    const decision = planRotation(device, now, this.config, false, this.#startedAt);
    if (decision.action !== 'resend') return decision.action === 'offer';
    const lastSent = this.#lastSent.get(device.deviceId);
    return lastSent === undefined || now - lastSent >= this.config.resendMs;
  }

  async #tickDevice(listed: ListedDeviceKeys, listedAt: number): Promise<RotateOutcome | undefined> {
    const { store, clock } = this.#deps;
    const { deviceId } = listed;
    const now = clock.now();
    try {
      const changedSince = (this.#changedAt.get(deviceId) ?? 0) > listedAt;
      if (!changedSince && !this.#mayNeedWork(listed, now)) {
        this.#track(deviceId, listed.keys.length);
        return undefined;
      }
      // Read again inside the series before acting: an ack, a knock or another writer may have changed it.
      const device = await store.get(deviceId);
      if (device === undefined) return undefined;
      const expiry = planExpiry(device, now);
      const removed = expiry?.type === 'remove' ? expiry.keyIds : [];
      this.#track(deviceId, device.keys.length - removed.length);
      if (expiry !== undefined) {
        await this.#apply(deviceId, expiry);
        this.#audit({ type: 'key.retired', time: now, deviceId, keyIds: removed, reason: 'grace-ended' });
      }
      const lastSent = this.#lastSent.get(deviceId);
      const resendDue = lastSent === undefined || now - lastSent >= this.config.resendMs;
      const decision = planRotation(device, now, this.config, false, this.#startedAt);
      if (decision.action === 'skip' || (decision.action === 'resend' && !resendDue)) return undefined;
      return await this.#rotateDevice(device, false, now);
    } catch (error) {
      return this.#failed(deviceId, error);
    }
  }

  async #rotateDevice(device: DeviceKeys, force: boolean, now: number): Promise<RotateOutcome> {
    const { store, session } = this.#deps;
    const { deviceId } = device;
    const decision = planRotation(device, now, this.config, force, this.#startedAt);
    if (decision.action === 'skip') return { deviceId, status: 'skipped', reason: decision.reason };
    const oldKeyNotAfter = now + this.config.graceMs;
    const sealing = await this.#sealingKey(device);
    if (decision.action === 'resend') {
      const { keyId } = decision;
      const key = await store.keyMaterial(deviceId, keyId);
      if (key === undefined) throw new Error(`pending key ${keyId} has no key material`);
      const generation = device.keys.find((k) => k.keyId === keyId)?.generation ?? 0;
      await session.publish(
        keyTopic(deviceId),
        this.#seal(sealing, deviceId, { keyId, key, oldKeyNotAfter }),
      );
      this.#lastSent.set(deviceId, now);
      this.#inRotation.add(deviceId);
      this.#audit({ type: 'key.resent', time: now, deviceId, keyId, generation, oldKeyNotAfter });
      return { deviceId, status: 'resent', keyId };
    }
    // Durable first: a crash after this line resumes by re-sending; the old key is untouched until confirmation.
    const { keyId, key } = await this.#addPending(deviceId, decision.generation, now);
    const { generation } = decision;
    this.#inRotation.add(deviceId);
    this.#audit({ type: 'key.offered', time: now, deviceId, keyId, generation, oldKeyNotAfter });
    await session.publish(keyTopic(deviceId), this.#seal(sealing, deviceId, { keyId, key, oldKeyNotAfter }));
    this.#lastSent.set(deviceId, now);
    return { deviceId, status: 'offered', keyId };
  }

  /**
   * The key a BKO1 offer is sealed under (docs/protocol.md [KO-6]): the device's newest current key, the one it
   * knocks with until it stores the offered key. A first offer and every re-send alike: a device that has stored
   * the key already cannot open a re-send and re-acknowledges instead ([KO-8]). Read before anything changes.
   */
  async #sealingKey(device: DeviceKeys): Promise<SealingKey> {
    const current = newestCurrent(device);
    const key =
      current === undefined ? undefined : await this.#deps.store.keyMaterial(device.deviceId, current.keyId);
    if (current === undefined || key === undefined) {
      throw new Error(
        `cannot seal a key offer: the device's current key ${current?.keyId ?? '(none)'} has no key material in the directory; fix: restore its key file or item`,
      );
    }
    return { keyId: current.keyId, key };
  }

  /** The sealed offer, with a fresh nonce. */
  #seal(sealing: SealingKey, deviceId: string, offer: KeyOffer): Uint8Array {
    return sealKeyOffer(sealing, deviceId, offer, this.#deps.random.randomBytes(KEY_OFFER_NONCE_LENGTH));
  }

  /**
   * A fresh key and a random key id, recorded as the device's pending generation. The store reserves the id (its
   * 'add-pending' refuses an id in use with `KeyIdTakenError`); a taken id is drawn again, `KEY_ID_ATTEMPTS` times
   * at most.
   */
  async #addPending(
    deviceId: string,
    generation: number,
    now: number,
  ): Promise<{ keyId: number; key: Uint8Array }> {
    const { random } = this.#deps;
    const taken: number[] = [];
    let key: Uint8Array | undefined;
    for (let attempt = 0; attempt < KEY_ID_ATTEMPTS; attempt++) {
      const keyId = Buffer.from(random.randomBytes(KEY_ID_BYTES)).readUInt32BE(0);
      key ??= random.randomBytes(BC1_KEY_LENGTH);
      try {
        await this.#apply(deviceId, { type: 'add-pending', keyId, key, generation, createdAt: now });
        return { keyId, key };
      } catch (error) {
        if (!(error instanceof KeyIdTakenError)) throw error;
        taken.push(keyId);
      }
    }
    throw new Error(
      `no free key id after ${KEY_ID_ATTEMPTS} random draws: each was already reserved ` +
        `(key ids ${[...new Set(taken)].join(', ')}); the random source is not random, or the key id space is full`,
    );
  }

  /** Every change goes through here, so that a tick knows which of its listed records it must read again. */
  async #apply(deviceId: string, change: KeyChange): Promise<void> {
    try {
      await this.#deps.store.apply(deviceId, change);
    } finally {
      this.#changedAt.set(deviceId, ++this.#changes);
    }
  }

  /** One message from the controller session (acks on `blackcloud/keys/<id>/ack`). Never throws. */
  async handleMessage(topic: string, payload: Uint8Array): Promise<AckOutcome> {
    const deviceId = identityOfKeyAckTopic(topic);
    if (deviceId === undefined) return { ok: false, reason: 'not-an-ack-topic' };
    // Before the queue and the store: a device flooding its ack topic costs a bucket lookup per message.
    if (!this.#ackLimiter.take(deviceId)) {
      this.#counters.increment(controllerCounterName.acksRateLimited);
      return this.#refuseAck(deviceId, 'rate-limited');
    }
    return this.#inSeries(deviceId, () => this.#handleAck(deviceId, payload));
  }

  /** Audits a rejected ack, within the audit cap (beyond it, counted only). */
  #refuseAck(deviceId: string, reason: string, keyId?: number): AckOutcome {
    if (this.#rejectAudit.take(REJECT_AUDIT_KEY)) {
      this.#audit({
        type: 'key.ack-rejected',
        time: this.#deps.clock.now(),
        deviceId,
        ...(keyId === undefined ? {} : { keyId }),
        reason,
      });
    } else {
      this.#counters.increment(controllerCounterName.ackAuditSuppressed);
    }
    return { ok: false, reason };
  }

  async #handleAck(deviceId: string, payload: Uint8Array): Promise<AckOutcome> {
    const { store, clock } = this.#deps;
    const refuse = (reason: string, keyId?: number): AckOutcome => this.#refuseAck(deviceId, reason, keyId);
    try {
      const ack = parseKeyAck(payload);
      if (!ack.ok) return refuse(`malformed:${ack.reason}`);
      const { keyId } = ack.value;
      const device = await store.get(deviceId);
      if (device === undefined) return refuse('unknown-device', keyId);
      const target = checkAckTarget(device, keyId);
      if (target !== undefined) return refuse(target, keyId);
      const key = await store.keyMaterial(deviceId, keyId);
      if (key === undefined || !verifyAckProof(key, ack.value)) return refuse('bad-proof', keyId);
      const now = clock.now();
      const replayId = `ack:${deviceId}:${keyId}:${Buffer.from(ack.value.nonce).toString('hex')}`;
      if ((await this.#acks.record(replayId, now + this.config.graceMs)) === 'replay') {
        return refuse('replay', keyId);
      }
      const change = planAck(keyId, now, this.config);
      await this.#apply(deviceId, change);
      this.#lastSent.delete(deviceId);
      this.#track(deviceId, device.keys.length);
      const oldKeysNotAfter = change.type === 'confirm' ? change.othersNotAfter : now;
      this.#audit({ type: 'key.confirmed', time: now, deviceId, keyId, by: 'ack', oldKeysNotAfter });
      return { ok: true, deviceId, keyId };
    } catch (error) {
      this.#failed(deviceId, error);
      return { ok: false, reason: 'internal-error' };
    }
  }

  /**
   * After an accepted knock: first use of a new key confirms it and retires the older keys. Cheap for devices
   * not in rotation (no store access). Never throws.
   */
  noteKeyUsed(deviceId: string, keyId: number): Promise<KeyChange | undefined> {
    if (!this.#inRotation.has(deviceId)) return Promise.resolve(undefined);
    return this.#inSeries(deviceId, () => this.#keyUsed(deviceId, keyId));
  }

  async #keyUsed(deviceId: string, keyId: number): Promise<KeyChange | undefined> {
    const { store, clock } = this.#deps;
    try {
      const device = await store.get(deviceId);
      if (device === undefined) return undefined;
      const now = clock.now();
      const change = planKeyUsed(device, keyId, now);
      if (change === undefined) return undefined;
      await this.#apply(deviceId, change);
      if (change.type === 'confirm') {
        this.#lastSent.delete(deviceId);
        this.#audit({
          type: 'key.confirmed',
          time: now,
          deviceId,
          keyId,
          by: 'first-use',
          oldKeysNotAfter: now,
        });
        const retired = device.keys.filter((key) => key.keyId !== keyId).map((key) => key.keyId);
        if (retired.length > 0) {
          await this.#apply(deviceId, { type: 'remove', keyIds: retired });
          this.#audit({ type: 'key.retired', time: now, deviceId, keyIds: retired, reason: 'new-key-used' });
        }
        this.#track(deviceId, 1);
      } else if (change.type === 'remove') {
        this.#audit({
          type: 'key.retired',
          time: now,
          deviceId,
          keyIds: change.keyIds,
          reason: 'new-key-used',
        });
        this.#track(deviceId, device.keys.length - change.keyIds.length);
      }
      return change;
    } catch (error) {
      this.#failed(deviceId, error);
      return undefined;
    }
  }

  #failed(deviceId: string, error: unknown): RotateOutcome {
    const text = message(error);
    this.#audit({ type: 'key.rotation-failed', time: this.#deps.clock.now(), deviceId, error: text });
    return { deviceId, status: 'failed', error: text };
  }

  #audit(event: Parameters<AuditSink['write']>[0]): void {
    try {
      this.#deps.audit.write(event);
    } catch {
      // an audit sink never stops a rotation
    }
  }
}
