/**
 * Leader election for the key-rotation controller among several receivers: a lease, one item in the devices
 * table, so that at most one receiver at a time runs the controller (several would offer a device competing keys).
 *
 * Item (partition key `pk`; the prefix `lease#` is neither `device#` nor `key#`, so it can never be read as a
 * device or key item, functions/aws/device-record.ts):
 *   lease#key-rotation-controller  { holder S (a random id per process), expiresAt N (epoch ms) }
 *
 * Protocol: every `renewMs` (default 20 s) each receiver ticks: a conditional PutItem
 * `attribute_not_exists(pk) OR expiresAt < :now OR holder = :me` with `expiresAt = now + leaseMs` (default 60 s),
 * `now` read before the request. It succeeds for the holder (renewal) and for anyone once the lease is free or
 * expired (acquisition). `release()` is a conditional DeleteItem `holder = :me`.
 *
 * Contract:
 * - At most one holder whose lease has not expired: the conditional write is atomic, and a lease is only taken
 *   from another holder once its `expiresAt` is past (by the taker's clock).
 * - A holder is leader only while `now < expiresAt - safetyMs` (`safetyMs` default 10 s) of its last successful
 *   write. If it cannot renew by then (DynamoDB slow, unreachable, process stalled) a timer makes it step down
 *   (`onLeadershipChange(false)`) `safetyMs` before anyone else can take over. This holds as long as the
 *   receivers' clocks differ by less than `safetyMs`.
 * - DynamoDB failures mean "not leader" (fail safe): a leader that fails to renew steps down at once. Failures
 *   are reported to `onError` (never thrown) and retried at the next tick.
 * - `onLeadershipChange` is called on every transition only (false -> true, true -> false), synchronously.
 * - Worst-case failover after a leader dies without releasing: `leaseMs + renewMs` (80 s by default); after a
 *   clean release: the next tick of another receiver (at most `renewMs`, 20 s).
 * Clock, timers and the holder id are injected.
 */
import {
  ConditionalCheckFailedException,
  DeleteItemCommand,
  type DynamoDBClient,
  PutItemCommand,
} from '@aws-sdk/client-dynamodb';
import type { Clock, RandomSource, Timers } from '../core/interfaces.ts';

export const LEASE_ITEM_PREFIX = 'lease#';
export const KEY_ROTATION_LEASE = 'key-rotation-controller';
export const DEFAULT_LEASE_MS = 60_000;
export const DEFAULT_RENEW_MS = 20_000;
export const DEFAULT_LEASE_SAFETY_MS = 10_000;

export const leaseItemKey = (name: string): string => `${LEASE_ITEM_PREFIX}${name}`;

/** A random holder id (16 bytes, hex): one per process. */
export function newHolderId(random: RandomSource): string {
  return Buffer.from(random.randomBytes(16)).toString('hex');
}

export interface LeaseTimings {
  /** How long a successful write holds the lease. @default 60000 */
  readonly leaseMs?: number;
  /** Tick period (renew, or try to acquire). @default 20000 */
  readonly renewMs?: number;
  /** A holder steps down this long before its lease expires. @default 10000 */
  readonly safetyMs?: number;
}

export interface ControllerLeaseOptions extends LeaseTimings {
  readonly dynamodb: DynamoDBClient;
  /** The devices table. */
  readonly table: string;
  /** @default 'key-rotation-controller' */
  readonly name?: string;
  readonly holderId: string;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly onLeadershipChange?: (leader: boolean) => void;
  readonly onError?: (error: unknown) => void;
}

export class ControllerLease {
  readonly holderId: string;
  readonly leaseMs: number;
  readonly renewMs: number;
  readonly safetyMs: number;
  readonly #o: ControllerLeaseOptions;
  readonly #pk: string;
  /** End of leadership (expiresAt - safetyMs of the last successful write); undefined = not leader. */
  #leaderUntil: number | undefined;
  #tickTimer: unknown;
  #deadlineTimer: unknown;
  #inFlight: Promise<void> | undefined;
  #running = false;

  constructor(options: ControllerLeaseOptions) {
    this.#o = options;
    this.holderId = options.holderId;
    this.leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
    this.renewMs = options.renewMs ?? DEFAULT_RENEW_MS;
    this.safetyMs = options.safetyMs ?? DEFAULT_LEASE_SAFETY_MS;
    for (const [name, value] of [
      ['leaseMs', this.leaseMs],
      ['renewMs', this.renewMs],
      ['safetyMs', this.safetyMs],
    ] as const) {
      if (!Number.isInteger(value) || value <= 0)
        throw new RangeError(`lease ${name} must be a positive integer`);
    }
    if (this.renewMs >= this.leaseMs - this.safetyMs) {
      throw new RangeError(
        'lease renewMs must be shorter than leaseMs - safetyMs (a holder renews before stepping down)',
      );
    }
    if (options.holderId === '') throw new RangeError('lease holderId must not be empty');
    this.#pk = leaseItemKey(options.name ?? KEY_ROTATION_LEASE);
  }

  /** True while this process holds the lease and `now < expiresAt - safetyMs`. */
  get isLeader(): boolean {
    return this.#leaderUntil !== undefined && this.#o.clock.now() < this.#leaderUntil;
  }

  /** Runs the first tick (awaited; failures are "not leader"), then ticks every `renewMs` until `stop()`. */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    await this.tick();
  }

  /**
   * One acquire-or-renew attempt (ticks never overlap: a tick during another returns that one). Exposed for
   * tests; `start()` schedules them.
   */
  tick(): Promise<void> {
    this.#inFlight ??= this.#attempt().finally(() => {
      this.#inFlight = undefined;
      this.#schedule();
    });
    return this.#inFlight;
  }

  /** No more ticks (waits for one in flight). Leadership ends (`onLeadershipChange(false)`); the item stays. */
  async stop(): Promise<void> {
    this.#running = false;
    this.#o.timers.clearTimeout(this.#tickTimer);
    this.#tickTimer = undefined;
    await this.#inFlight;
    this.#stepDown();
  }

  /**
   * Gives the lease up: steps down, then deletes the item if this process still holds it (conditional on
   * `holder`), so another receiver takes over at its next tick. Failures go to `onError`. Ticks go on if started.
   */
  async release(): Promise<void> {
    await this.#inFlight;
    this.#stepDown();
    try {
      await this.#o.dynamodb.send(
        new DeleteItemCommand({
          TableName: this.#o.table,
          Key: { pk: { S: this.#pk } },
          ConditionExpression: 'holder = :me',
          ExpressionAttributeValues: { ':me': { S: this.holderId } },
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) this.#o.onError?.(error);
    }
  }

  /** `stop()` then `release()`. */
  async close(): Promise<void> {
    await this.stop();
    await this.release();
  }

  async #attempt(): Promise<void> {
    const now = this.#o.clock.now();
    const expiresAt = now + this.leaseMs;
    try {
      await this.#o.dynamodb.send(
        new PutItemCommand({
          TableName: this.#o.table,
          Item: {
            pk: { S: this.#pk },
            holder: { S: this.holderId },
            expiresAt: { N: String(expiresAt) },
          },
          ConditionExpression: 'attribute_not_exists(pk) OR expiresAt < :now OR holder = :me',
          ExpressionAttributeValues: { ':now': { N: String(now) }, ':me': { S: this.holderId } },
        }),
      );
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) this.#o.onError?.(error);
      this.#stepDown();
      return;
    }
    const until = expiresAt - this.safetyMs;
    if (this.#o.clock.now() >= until) {
      // The answer came too late to lead safely on it.
      this.#stepDown();
      return;
    }
    if (this.#leaderUntil !== undefined && !this.isLeader) this.#stepDown(); // its deadline timer is late
    const was = this.#leaderUntil !== undefined;
    this.#leaderUntil = until;
    this.#o.timers.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = this.#o.timers.setTimeout(() => this.#checkDeadline(), until - this.#o.clock.now());
    if (!was) this.#o.onLeadershipChange?.(true);
  }

  #checkDeadline(): void {
    this.#deadlineTimer = undefined;
    if (this.#leaderUntil === undefined) return;
    if (this.#o.clock.now() >= this.#leaderUntil) {
      this.#stepDown();
    } else {
      this.#deadlineTimer = this.#o.timers.setTimeout(
        () => this.#checkDeadline(),
        this.#leaderUntil - this.#o.clock.now(),
      );
    }
  }

  #stepDown(): void {
    this.#o.timers.clearTimeout(this.#deadlineTimer);
    this.#deadlineTimer = undefined;
    if (this.#leaderUntil === undefined) return;
    this.#leaderUntil = undefined;
    this.#o.onLeadershipChange?.(false);
  }

  #schedule(): void {
    if (!this.#running) return;
    this.#o.timers.clearTimeout(this.#tickTimer);
    this.#tickTimer = this.#o.timers.setTimeout(() => {
      this.#tickTimer = undefined;
      void this.tick();
    }, this.renewMs);
  }
}
