/**
 * Which share of the broker groups' rule slots this receiver fills, among `of` receivers (docs/scaling.md "Each
 * receiver its share of the slots"): one of `of` leases, items `lease#grant-slots-<k>-of-<of>` in the devices table,
 * each a ControllerLease (the same conditional PutItem, renewal every `renewMs`, step-down `safetyMs` before
 * expiry). The share's caps come from sg-plan.ts slotShareCaps; the firewall keeps to them (SecurityGroupFirewall
 * `setSlotShare`).
 *
 * Contract:
 * - A receiver holds at most one share. While it holds none it tries every index at each tick, from `firstIndex`
 *   (mod `of`) on, so receivers starting together try different indexes first; each try is one conditional PutItem.
 * - `onShareChange(share)` is called on every change only (none -> k, k -> none), synchronously; `share` reads it.
 * - A share is a placement hint, not a safety property: two receivers holding the same index (clocks apart by more
 *   than `safetyMs`), or one receiver without a share, only contend for slots as receivers without shares do (EC2
 *   answers RulesPerSecurityGroupLimitExceeded and the firewall moves on). A dead receiver's share stays unused
 *   until its lease expires and another receiver (a replacement, or one left without a share) takes it.
 * - DynamoDB failures mean "no share" for that lease (ControllerLease) and go to `onError`, never thrown.
 * - `close()` stops the ticks and releases the share held, so a replacement takes it at its next tick.
 * The `of` in the item name keeps shares of different receiver counts apart (a stack update changing it).
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { Clock, Timers } from '../core/interfaces.ts';
import { ControllerLease, DEFAULT_RENEW_MS, type LeaseTimings } from './controller-lease.ts';
import type { SlotShare } from './sg-plan.ts';

/** The lease name of share `index` of `of` (the item is `lease#<name>`, controller-lease.ts). */
export const slotShareLeaseName = (index: number, of: number): string => `grant-slots-${index}-of-${of}`;

export interface SlotShareLeaseOptions extends LeaseTimings {
  readonly dynamodb: DynamoDBClient;
  /** The devices table (where the controller lease lives too). */
  readonly table: string;
  readonly holderId: string;
  /** How many receivers share the slots (the stack's `receivers`). */
  readonly of: number;
  /** The index tried first (taken mod `of`). @default 0 */
  readonly firstIndex?: number;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly onShareChange: (share: SlotShare | undefined) => void;
  readonly onError?: (error: unknown) => void;
}

export class SlotShareLease {
  readonly #o: SlotShareLeaseOptions;
  readonly #renewMs: number;
  #held: { readonly share: SlotShare; readonly lease: ControllerLease } | undefined;
  #timer: unknown;
  #inFlight: Promise<void> | undefined;
  #running = false;

  constructor(options: SlotShareLeaseOptions) {
    if (!Number.isInteger(options.of) || options.of < 1)
      throw new RangeError(`slot share lease: of must be a whole number >= 1, got ${options.of}`);
    const first = options.firstIndex ?? 0;
    if (!Number.isInteger(first) || first < 0)
      throw new RangeError(`slot share lease: firstIndex must be a whole number >= 0, got ${first}`);
    this.#o = options;
    this.#renewMs = options.renewMs ?? DEFAULT_RENEW_MS;
  }

  /** The share held now (its lease not past its safety margin), or undefined. */
  get share(): SlotShare | undefined {
    return this.#held?.lease.isLeader === true ? this.#held.share : undefined;
  }

  /** The first try (awaited; failures are "no share"), then one every `renewMs` while none is held, until close. */
  async start(): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    await this.tick();
  }

  /** While no share is held, try each index once (ticks never overlap). Exposed for tests; `start()` schedules. */
  tick(): Promise<void> {
    this.#inFlight ??= this.#tryEach().finally(() => {
      this.#inFlight = undefined;
      this.#schedule();
    });
    return this.#inFlight;
  }

  /** No more ticks; the share held is released (deleted if still ours) and `onShareChange(undefined)` called. */
  async close(): Promise<void> {
    this.#running = false;
    this.#o.timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#inFlight;
    await this.#held?.lease.close();
  }

  async #tryEach(): Promise<void> {
    if (this.#held !== undefined || !this.#running) return;
    const { of } = this.#o;
    for (let i = 0; i < of && this.#running; i++) {
      const index = ((this.#o.firstIndex ?? 0) + i) % of;
      const share: SlotShare = { index, of };
      const lease: ControllerLease = new ControllerLease({
        dynamodb: this.#o.dynamodb,
        table: this.#o.table,
        name: slotShareLeaseName(index, of),
        holderId: this.#o.holderId,
        clock: this.#o.clock,
        timers: this.#o.timers,
        ...(this.#o.leaseMs === undefined ? {} : { leaseMs: this.#o.leaseMs }),
        renewMs: this.#renewMs,
        ...(this.#o.safetyMs === undefined ? {} : { safetyMs: this.#o.safetyMs }),
        onLeadershipChange: (leader) => {
          if (leader || this.#held?.lease !== lease) return;
          this.#held = undefined; // lost: this lease stops; every index is tried again at the next tick
          void lease.stop();
          this.#o.onShareChange(undefined);
        },
        ...(this.#o.onError === undefined ? {} : { onError: this.#o.onError }),
      });
      await lease.tick();
      if (!lease.isLeader) continue;
      this.#held = { share, lease };
      this.#o.onShareChange(share);
      await lease.start(); // renews every renewMs from now on
      return;
    }
  }

  #schedule(): void {
    if (!this.#running) return;
    this.#o.timers.clearTimeout(this.#timer);
    this.#timer = this.#o.timers.setTimeout(() => {
      this.#timer = undefined;
      void this.tick();
    }, this.#renewMs);
  }
}
