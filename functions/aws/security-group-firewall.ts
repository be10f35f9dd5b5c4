/**
 * Firewall on EC2 security groups: each grant becomes one ingress rule per broker port for the source's /32 (or
 * /128), written with the description `blackcloud:<deviceId>:exp=<epochSeconds>` (rule-description.ts) so the
 * sweeper can close it if every other mechanism fails.
 *
 * Guarantees:
 *   - Two lanes (docs/scaling.md "Staying inside the EC2 API budget"): opens (allows and extensions) and closes
 *     (revokes) are coalesced and sent apart, each lane at most one batch at a time, so a revoke never waits behind
 *     an Authorize held by the pacer or by throttling: a closed rule frees its slot at once.
 *   - Coalescing: within a lane, operations arriving within `coalesceWindowMs` (and all that arrive while its
 *     flush runs) go out together, up to `maxBatchOps` per batch: one Authorize / Update / Revoke call per security
 *     group (and per address family for Authorize) for each `maxBatchRules` ranges, each permission once
 *     (coalescer.ts, sg-plan.ts).
 *   - One rule, one lane at a time: an operation on a rule the other lane is sending waits for that flush to end,
 *     then goes first in its own lane, so an allow never takes a rule being revoked for open (nor a revoke miss a
 *     rule being opened). A revoke drops the allows of its rules not yet sent (GrantNotOpenedError "was revoked").
 *   - Describes (a stale picture, a Duplicate, a vanished or unknown rule) cover every group in parallel, shared
 *     by both lanes; writes answered while a group's describe is under way are applied again on its snapshot, so a
 *     describe never undoes the other lane's answered writes.
 *   - Allows that need a slot are placed in slots free now; those that find none wait in the queue and are sent
 *     again once a revoke frees a slot (or `queueRetryMs` passes), until `maxSlotWaitMs` after their `allow`
 *     (DEFAULT_SLOT_WAIT_MS, before the device's third dial): then they are refused (GrantNotOpenedError).
 *   - Pacing (optional `pacing`, call-pacer.ts; docs/scaling.md "Staying inside the EC2 API budget"): every call
 *     waits for its action's turn in a client-side AIMD token bucket that halves its rate on throttling, so
 *     several receivers sharing the account's budget converge instead of retrying into it; while a batch's calls
 *     wait, the next batch grows, so calls carry more ranges exactly when the budget is short. With pacing, at most
 *     the full calls the Authorize pacer's current rate sends in `maxUnsentMs` wait to be sent (never more than
 *     `maxUnsentRules`); a grant beyond it is refused at once (GrantQueueFullError).
 *   - A grant that expires while waiting to be sent (coalescing, pacing) or for a slot is never opened, nor one
 *     that waited longer than `maxWaitMs` (DEFAULT_GRANT_WAIT_MS, just before the device's last dial), looked at
 *     again as each Authorize attempt leaves: it rejects with GrantNotOpenedError and the device must knock again.
 *   - Reuse: a rule already open for the address and port is extended, never duplicated: its description's
 *     expiry moves forward with UpdateSecurityGroupRuleDescriptionsIngress (one call per group, no new rule slot,
 *     not a "resource-intensive" action). `InvalidPermission.Duplicate` means our picture of the group is stale:
 *     the group is described again and the batch re-planned (existing rules become extensions).
 *   - Idempotent revoke: `InvalidPermission.NotFound` / `UnknownIpPermissions` = already gone (sg-api.ts).
 *     A revoked grant still waiting for a slot is never opened (GrantNotOpenedError "was revoked"), also when
 *     its allow reached the queue only after the revoke was asked (the revoke's batch drops it).
 *   - Several receivers: with a grant store, a batch's revokes first read their addresses' grants-table items
 *     (the single record of what is open, strongly consistent): when another receiver extended a grant past the
 *     expiry being revoked, its rule is left open (the later expiry wins) and this firewall's picture takes the
 *     later expiry, so it never shortens the rule's description either. An unreadable item revokes as asked
 *     (closing is the safe direction).
 *   - Quota: rules are placed in the first group, in this receiver's fill order (from `fillOffset`, wrapping),
 *     with a free slot for the family (counted from DescribeSecurityGroups, EC2's per-family limit
 *     `rulesPerGroup`): with distinct offsets, receivers fill distinct groups and a batch's rules land in one
 *     group (one call) while it has room; `RulesPerSecurityGroupLimitExceeded` marks the group full for that
 *     family and the rules move to the next group. With a share of the slots (`slotShare`, `setSlotShare`; the
 *     receivers of a scaled stack each hold one, slot-share-lease.ts) a group counts as full for this receiver once
 *     the rules it wrote there reach the share's cap (sg-plan.ts slotShareCaps), so receivers never spend a call on
 *     a group another filled. When all are full, grants wait
 *     in a bounded FIFO queue (GrantQueueDepth metric) until a revoke frees a slot or `queueRetryMs` passes (the
 *     groups are then described again: another receiver or the sweeper may have freed slots). A grant that
 *     expires while waiting rejects with GrantNotOpenedError; a full queue rejects with GrantQueueFullError.
 *     Allows still unsettled after the batch's rounds (groups racing with other receivers) wait in that queue too.
 *     Nothing is dropped silently: every failed grant rejects `allow` (the receiver audits grant.failed).
 *   - Throttling (`RequestLimitExceeded`) retried with exponential backoff and full jitter (retry.ts), the whole
 *     call again with all its ranges (EC2 applied none of them). Every failed call is an ApiErrors data point (by
 *     Code).
 *   - `allow` resolves when all the grants' rules are open (and recorded in the grant store, if given); rules for
 *     access entries that are not broker entries are never opened (a grant with none rejects GrantNotPermittedError).
 *   - Rules this firewall did not write (no `blackcloud:` description) are never extended or revoked.
 */
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { AccessEntry, AddressFamily } from '../../spa/types.ts';
import type { Clock, Firewall, Grant, Timers } from '../core/interfaces.ts';
import { parseTarget, targetOfCidr } from './address.ts';
import type { Ec2Pacing } from './call-pacer.ts';
import { Coalescer } from './coalescer.ts';
import type { GrantStore } from './dynamo-grant-store.ts';
import {
  AwsConfigError,
  awsErrorCode,
  FirewallApiError,
  GrantNotOpenedError,
  GrantNotPermittedError,
  GrantQueueFullError,
} from './errors.ts';
import type { Metrics } from './metrics.ts';
import type { RetryPolicy } from './retry.ts';
import { formatRuleDescription, toEpochSeconds } from './rule-description.ts';
import {
  authorizeIngress,
  describeIngress,
  EC2_MAX_RANGES_PER_CALL,
  revokeIngressIdempotent,
  type SgContext,
  updateIngressDescriptions,
} from './sg-api.ts';
import {
  type AllowOp,
  callChunks,
  coalesceOps,
  type GroupUsage,
  type OpenRule,
  planBatch,
  type RevokeOp,
  type RuleOp,
  type SlotShare,
  slotShareCaps,
} from './sg-plan.ts';
import { type RuleSpec, ruleKey, rulesForGrant } from './sg-rules.ts';

export interface SecurityGroupFirewallOptions {
  readonly ec2: EC2Client;
  /** The broker's security groups (the configured order; each receiver starts filling at its `fillOffset`). */
  readonly securityGroupIds: readonly string[];
  /**
   * Index of the group this receiver fills first (modulo the groups' number; sg-plan.ts fillOrder): receiver i
   * of several passes i (or, on AWS, fillOffsetOf(its id)) so each fills its own group and batches go out as
   * one call. Default 0: the configured order.
   */
  readonly fillOffset?: number;
  /** What may be opened on the broker (e.g. tcp/8883). Other requested entries are never opened. */
  readonly brokerAccess: readonly AccessEntry[];
  readonly clock: Clock;
  readonly timers: Timers;
  /** Backoff for throttled calls. Its onError is replaced: failures are reported to `metrics` as ApiErrors. */
  readonly retry: RetryPolicy;
  readonly metrics: Metrics;
  /** Records opened grants (and forgets revoked ones) so restarts, the revoker and the sweeper know. */
  readonly grantStore?: GrantStore | undefined;
  /** Inbound rules per group per family (EC2 default quota 60). */
  readonly rulesPerGroup?: number;
  /** Default 20 ms. */
  readonly coalesceWindowMs?: number;
  /** Rules (IP ranges) per EC2 call. Default 100. */
  readonly maxBatchRules?: number;
  /** Rule operations per coalesced batch (split into calls of `maxBatchRules`). Default 10 × maxBatchRules. */
  readonly maxBatchOps?: number;
  /** Client-side AIMD pacing of the EC2 calls (call-pacer.ts). Default none: calls go out as soon as planned. */
  readonly pacing?: Ec2Pacing | undefined;
  /** Rules waiting for a slot, at most. Default 1000. */
  readonly maxQueuedRules?: number;
  /**
   * Rules waiting to be sent (coalescing, pacing), at most: a grant beyond it rejects at once with
   * GrantQueueFullError, so under a storm a device is told to come back rather than kept past its attempt.
   * Default 1000.
   */
  readonly maxUnsentRules?: number;
  /** While grants wait, look again after this long. Default 5000 ms. */
  readonly queueRetryMs?: number;
  /**
   * A grant that found no free slot is opened from the queue only until this long after its `allow` (then refused,
   * GrantNotOpenedError): a rule opened later misses the device's early dials and holds its slot until a late one.
   * Default DEFAULT_SLOT_WAIT_MS; at most `maxWaitMs`.
   */
  readonly maxSlotWaitMs?: number;
  /**
   * After EC2 answered a group full (another receiver fills it, unseen in this picture), no new rules are placed
   * there for this long, describes notwithstanding (never in this receiver's first group). Default 0, off: it
   * helps an overloaded fleet and costs a busy one (docs/scaling.md "Two lanes, whole calls and early refusals").
   */
  readonly contendedMs?: number;
  /**
   * This receiver's share of the slots (`index` of `of` receivers; sg-plan.ts slotShareCaps): it places new rules
   * only in its own share, counted by the rules it wrote itself, so receivers sharing the groups never spend an
   * Authorize call on a group another receiver filled. Default none: every free slot is every receiver's.
   */
  readonly slotShare?: SlotShare | undefined;
  /** Coalescing window of the closes lane (revokes). Default `coalesceWindowMs`. */
  readonly closeWindowMs?: number;
  /**
   * With pacing, allows wait to be sent at most as many as the full calls the Authorize pacer's rate sends in this
   * long (at least one call). Default UNSENT_MS.
   */
  readonly maxUnsentMs?: number;
  /**
   * A grant not yet opened this long after its `allow` is refused (GrantNotOpenedError): its device has stopped
   * dialling for that knock and knocks again (docs/scaling.md, "What cannot be sent in time is refused"). Default
   * DEFAULT_GRANT_WAIT_MS.
   */
  readonly maxWaitMs?: number;
  /** Called when the grant store could not be written (the rule itself is open; the sweeper still closes it). */
  readonly onGrantStoreError?: (error: unknown) => void;
}

/** One `allow`/`revoke` call: settles when every rule operation it asked for has settled. */
class Ticket {
  readonly promise: Promise<void>;
  #remaining: number;
  #error: Error | undefined;
  #resolve!: () => void;
  #reject!: (error: Error) => void;

  constructor(operations: number, error?: Error) {
    this.#remaining = operations;
    this.#error = error;
    this.promise = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    if (operations === 0) this.#settle();
  }

  done(error?: Error): void {
    if (error !== undefined && this.#error === undefined) this.#error = error;
    this.#remaining--;
    if (this.#remaining === 0) this.#settle();
  }

  #settle(): void {
    if (this.#error === undefined) this.#resolve();
    else this.#reject(this.#error);
  }
}

const MAX_ROUNDS = 4;
/** Ranges per call by default: as many as EC2 takes in one Authorize / Revoke call (sg-api.ts). */
const DEFAULT_CALL_RULES = EC2_MAX_RANGES_PER_CALL;
/** A coalesced batch holds up to this many calls' worth of rule operations. */
const BATCH_CALLS = 10;
/**
 * How long a grant may wait to be sent: until just before the device library's last dial of its attempt
 * (device-client/connect-device.ts waits 250 ms after the knock; the kernel resends an unanswered SYN 1, 2 and 4 s
 * later, so the last dial leaves about 7.25 s after the knock, docs/scaling.md "What cannot be sent in time is
 * refused"). Checked as each Authorize leaves, so a rule sent at this age is open (about one EC2 answer later)
 * before that dial. A rule opened later serves nobody, holds a slot for its window and, while it waits, every later
 * operation of its address (the grant manager runs them in order).
 */
export const DEFAULT_GRANT_WAIT_MS = 7_000;
/**
 * How long after its knock a grant that found every slot taken may still be opened from the queue: a rule opened
 * by then waits about a second at most for the device's third dial (3.25 s). One opened later waits up to 4 s for
 * the last dial, holding its slot, so under a storm the slots would serve ever fewer devices (docs/scaling.md "What
 * cannot be sent in time is refused"; measured there: 2 s beat 1.3 s, 3 s and 7 s).
 */
export const DEFAULT_SLOT_WAIT_MS = 2_000;

/** The firewall's two lanes: opens (allows, extensions) and closes (revokes), batched and sent apart. */
type Lane = 'opens' | 'closes';
/**
 * With pacing, allows wait to be sent at most as many as the Authorize pacer's rate sends in this long (calls of
 * maxBatchRules): more would wait past the device's early dials, and a rule opened late holds its slot longer.
 */
const UNSENT_MS = 500;
/** Rules waiting for a slot, and rules waiting to be sent, at most (each its own bound). */
const DEFAULT_WAITING_RULES = 1000;

/** The grant target of a rule's CIDR: its host address, or `network/length` of a prefix grant (address.ts). */
const addressOfCidr = targetOfCidr;

export class SecurityGroupFirewall implements Firewall {
  readonly #o: SecurityGroupFirewallOptions;
  readonly #ctx: SgContext;
  readonly #rulesPerGroup: number;
  readonly #maxQueuedRules: number;
  readonly #queueRetryMs: number;
  readonly #maxSlotWaitMs: number;
  readonly #maxUnsentMs: number;
  readonly #contendedMs: number;
  /** Per `group|family`, until when EC2's "full" answer keeps new rules out of it (another receiver fills it). */
  readonly #contendedUntil = new Map<string, number>();
  readonly #maxWaitMs: number;
  readonly #maxCallRules: number;
  readonly #maxUnsentRules: number;
  /** The fill offset without a share (options.fillOffset). */
  readonly #ownFillOffset: number;
  /** The fill offset now: with a share, its largest group; otherwise #ownFillOffset. */
  #fillOffset: number;
  /** Per group (configured order), the slots of this receiver's share; undefined: no share, every slot. */
  #shareCaps: readonly number[] | undefined;
  /** The rules this receiver wrote and still knows open (rule key → group), counted against its share. */
  readonly #mine = new Map<string, string>();
  /** Allows handed to the coalescer and not yet taken by a flush. */
  readonly #unsentOps = new WeakSet<RuleOp<Ticket>>();
  #unsent = 0;
  /** The two lanes (see the header): opens (allows and extensions) and closes (revokes), each its own batches. */
  readonly #opens: Coalescer<RuleOp<Ticket>>;
  readonly #closes: Coalescer<RuleOp<Ticket>>;
  /** Per lane, the rules of its running flush: the other lane's operations on them wait until it ends. */
  readonly #sending: Record<Lane, Map<string, Promise<void>>> = { opens: new Map(), closes: new Map() };
  /** A describe of every group under way (both lanes share it). */
  #refreshing: Promise<void> | undefined;
  /** Per group, the writes answered while a describe of it is under way: replayed on its snapshot. */
  readonly #journals = new Map<string, (() => void)[][]>();
  readonly #brokerKeys: Set<string>;
  readonly #used = new Map<string, Record<AddressFamily, number>>();
  readonly #open = new Map<string, OpenRule>();
  #queue: AllowOp<Ticket>[] = [];
  #queueTimer: unknown;
  #stale = true;
  #closed = false;

  constructor(options: SecurityGroupFirewallOptions) {
    if (options.securityGroupIds.length === 0) {
      throw new AwsConfigError(
        'SecurityGroupFirewall needs at least one broker security group id, got none: pass the ids of the groups ' +
          'attached to the broker (BLACKCLOUD_BROKER_SECURITY_GROUP_IDS)',
      );
    }
    if (options.brokerAccess.length === 0) {
      throw new AwsConfigError(
        'SecurityGroupFirewall brokerAccess is empty: pass the broker port, e.g. tcp/8883',
      );
    }
    this.#o = options;
    this.#rulesPerGroup = options.rulesPerGroup ?? 60;
    this.#maxQueuedRules = options.maxQueuedRules ?? DEFAULT_WAITING_RULES;
    this.#queueRetryMs = options.queueRetryMs ?? 5000;
    this.#maxWaitMs = options.maxWaitMs ?? DEFAULT_GRANT_WAIT_MS;
    this.#maxUnsentMs = options.maxUnsentMs ?? UNSENT_MS;
    this.#contendedMs = options.contendedMs ?? 0;
    this.#maxSlotWaitMs = Math.min(this.#maxWaitMs, options.maxSlotWaitMs ?? DEFAULT_SLOT_WAIT_MS);
    this.#maxCallRules = options.maxBatchRules ?? DEFAULT_CALL_RULES;
    this.#maxUnsentRules = options.maxUnsentRules ?? DEFAULT_WAITING_RULES;
    this.#ownFillOffset = options.fillOffset ?? 0;
    if (!Number.isInteger(this.#ownFillOffset) || this.#ownFillOffset < 0)
      throw new AwsConfigError(
        `SecurityGroupFirewall fillOffset must be a whole number >= 0, got ${this.#ownFillOffset}`,
      );
    this.#fillOffset = this.#ownFillOffset;
    this.setSlotShare(options.slotShare);
    this.#brokerKeys = new Set(options.brokerAccess.map((a) => `${a.protocol}/${a.port}`));
    for (const id of options.securityGroupIds) this.#used.set(id, { 4: 0, 6: 0 });
    this.#ctx = {
      ec2: options.ec2,
      pacing: options.pacing,
      retry: {
        ...options.retry,
        onError: (operation, code) =>
          options.metrics.put('ApiErrors', 1, { Code: code }, { Operation: operation }),
      },
    };
    const opensWindowMs = options.coalesceWindowMs ?? 20;
    const lane = (name: Lane) =>
      new Coalescer<RuleOp<Ticket>>({
        windowMs: name === 'opens' ? opensWindowMs : (options.closeWindowMs ?? opensWindowMs),
        maxBatch: options.maxBatchOps ?? BATCH_CALLS * this.#maxCallRules,
        timers: options.timers,
        flush: (batch) => this.#flush(name, batch),
      });
    this.#opens = lane('opens');
    this.#closes = lane('closes');
  }

  allow(grants: readonly Grant[]): Promise<void> {
    if (this.#closed) return Promise.reject(new FirewallApiError('firewall is closed: allow after close()'));
    const ops: AllowOp<Ticket>[] = [];
    const refused: string[] = [];
    const tickets: Ticket[] = [];
    const planned: { grant: Grant; rules: RuleSpec[] }[] = [];
    try {
      for (const grant of grants) {
        const { rules } = rulesForGrant(grant, this.#o.brokerAccess);
        if (rules.length === 0) refused.push(`${grant.deviceId}@${grant.address}`);
        planned.push({ grant, rules });
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const count = planned.reduce((n, p) => n + p.rules.length, 0);
    const unsentLimit = this.#unsentLimit();
    if (count > 0 && this.#unsent + count > unsentLimit) {
      return Promise.reject(
        new GrantQueueFullError(
          `${this.#unsent} rules already wait to be sent to EC2 (at most ${unsentLimit}: the API budget ` +
            `is spent): grant ${planned.map((p) => `${p.grant.deviceId}@${p.grant.address}`).join(', ')} not ` +
            'opened, the device must knock again. More receivers do not help (they share the budget); see ' +
            'docs/scaling.md "Staying inside the EC2 API budget"',
        ),
      );
    }
    const ticket = new Ticket(
      count,
      refused.length === 0
        ? undefined
        : new GrantNotPermittedError(
            `grant ${refused.join(', ')} asks for no broker port (${[...this.#brokerKeys].join(', ')}): nothing ` +
              'else may be opened on the broker security groups; fix the device allowedAccess',
          ),
    );
    tickets.push(ticket);
    const askedAt = this.#o.clock.now();
    for (const { grant, rules } of planned) {
      const expiresAtSeconds = toEpochSeconds(grant.expiresAt);
      for (const spec of rules) ops.push({ kind: 'allow', spec, grant, expiresAtSeconds, tickets, askedAt });
    }
    for (const op of ops) this.#unsentOps.add(op);
    this.#unsent += ops.length;
    this.#opens.add(...ops);
    return ticket.promise;
  }

  revoke(grants: readonly Grant[]): Promise<void> {
    const specs: RuleSpec[] = [];
    const expiryOf = new Map<string, number>();
    try {
      for (const grant of grants) {
        for (const spec of rulesForGrant(grant, this.#o.brokerAccess).rules) {
          specs.push(spec);
          expiryOf.set(ruleKey(spec), Math.max(expiryOf.get(ruleKey(spec)) ?? 0, grant.expiresAt));
        }
      }
    } catch (error) {
      return Promise.reject(error);
    }
    const keys = new Set(specs.map(ruleKey));
    this.#dropUnsent(keys);
    this.#dropQueued(keys);
    const ticket = new Ticket(specs.length);
    const tickets = [ticket];
    this.#closes.add(
      ...specs.map(
        (spec): RevokeOp<Ticket> => ({
          kind: 'revoke',
          spec,
          tickets,
          grantExpiresAt: expiryOf.get(ruleKey(spec)) ?? 0,
        }),
      ),
    );
    return ticket.promise;
  }

  /** Flush what is pending, stop the queue timer and reject grants still waiting for a slot. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#lanesIdle((lane) => lane.drain());
    if (this.#queueTimer !== undefined) this.#o.timers.clearTimeout(this.#queueTimer);
    this.#queueTimer = undefined;
    const waiting = this.#queue;
    this.#queue = [];
    for (const op of waiting)
      this.#settle(op, new GrantNotOpenedError(this.#notOpened(op, 'was pending at close')));
    this.#reportQueue();
  }

  /** Rules this firewall believes are open (diagnostics, tests). */
  openRules(): readonly OpenRule[] {
    return [...this.#open.values()].filter((r) => !r.foreign);
  }

  /** Allows waiting to be sent (coalescing, pacing). */
  get unsentDepth(): number {
    return this.#unsent;
  }

  /** Rule operations waiting for a free slot. */
  get queueDepth(): number {
    return this.#queue.length;
  }

  /** Resolves when no batch is pending or in flight (queued grants may still wait). */
  idle(): Promise<void> {
    return this.#lanesIdle((lane) => lane.idle());
  }

  /** Both lanes idle at once (an operation one lane held back for the other may re-enter after its flush). */
  async #lanesIdle(wait: (lane: Coalescer<RuleOp<Ticket>>) => Promise<void>): Promise<void> {
    do {
      await Promise.all([wait(this.#opens), wait(this.#closes)]);
    } while (this.#opens.pending > 0 || this.#closes.pending > 0 || this.#held > 0);
  }

  /** Rules waiting to be sent, at most now: the full calls the Authorize pacer sends in UNSENT_MS (at least one). */
  #unsentLimit(): number {
    const rate = this.#o.pacing?.pacer('AuthorizeSecurityGroupIngress')?.rate;
    if (rate === undefined) return this.#maxUnsentRules;
    // Whole calls: a limit of 1.2 calls' rules would make every second call carry a fifth of a call.
    const calls = Math.max(1, Math.floor((rate * this.#maxUnsentMs) / 1000));
    return Math.min(this.#maxUnsentRules, calls * this.#maxCallRules);
  }

  /** Operations one lane holds back until the other's flush of the same rule ends. */
  #held = 0;

  /**
   * One lane's batch. Its operations on a rule the other lane is sending wait for that flush to end and come back
   * first in their lane, so an allow never plans against a rule being revoked (nor a revoke against one being
   * opened); the rest is sent now.
   */
  async #flush(lane: Lane, batch: RuleOp<Ticket>[]): Promise<void> {
    for (const op of batch) if (this.#unsentOps.delete(op)) this.#unsent--;
    const other = this.#sending[lane === 'opens' ? 'closes' : 'opens'];
    const now: RuleOp<Ticket>[] = [];
    const held = new Map<Promise<void>, RuleOp<Ticket>[]>();
    for (const op of batch) {
      const busy = other.get(ruleKey(op.spec));
      if (busy === undefined) now.push(op);
      else held.set(busy, [...(held.get(busy) ?? []), op]);
    }
    for (const [busy, ops] of held) {
      this.#held += ops.length;
      void busy.then(() => {
        this.#held -= ops.length;
        (lane === 'opens' ? this.#opens : this.#closes).addFirst(...ops);
      });
    }
    if (now.length === 0) return;
    const mine = this.#sending[lane];
    let finished = (): void => undefined;
    const sent = new Promise<void>((resolve) => {
      finished = resolve;
    });
    const keys = now.map((op) => ruleKey(op.spec));
    for (const key of keys) mine.set(key, sent);
    try {
      await this.#send(now);
    } finally {
      for (const key of keys) if (mine.get(key) === sent) mine.delete(key);
      finished();
    }
  }

  async #send(batch: RuleOp<Ticket>[]): Promise<void> {
    const settled: [RuleOp<Ticket>, Error | undefined][] = [];
    const done = (op: RuleOp<Ticket>, error?: Error) => settled.push([op, error]);
    const opened = new Map<string, Grant>();
    const revoked = new Set<string>();
    let freed = false;
    if (this.#stale) {
      try {
        await this.#refreshAll();
      } catch (error) {
        // Without a picture of the groups nothing in this batch can be planned.
        const reason = this.#apiError('describe', this.#o.securityGroupIds.join(','), error);
        for (const op of batch) this.#settle(op, reason);
        return;
      }
    }
    // An allow that went to the queue while this batch's revoke waited (its flush still ran) is older than the
    // revoke: it is never opened either.
    this.#dropQueued(new Set(batch.filter((op) => op.kind === 'revoke').map((op) => ruleKey(op.spec))));
    const due = await this.#notExtendedElsewhere(this.#withoutExpired(batch));
    {
      let ops = coalesceOps(due);
      let refreshedForUnknown = false;
      for (let round = 1; ops.length > 0; round++) {
        if (round > MAX_ROUNDS) {
          for (const op of ops) {
            // An allow still racing other receivers for a slot waits for one like any other.
            if (op.kind === 'allow') this.#enqueue(op);
            else
              done(
                op,
                new FirewallApiError(`rule ${ruleKey(op.spec)} could not be settled in ${MAX_ROUNDS} rounds`),
              );
          }
          break;
        }
        const plan = planBatch(
          {
            groups: this.#placeable(),
            open: this.#open,
            rulesPerGroup: this.#rulesPerGroup,
            fillOffset: this.#fillOffset,
            callRules: this.#maxCallRules,
          },
          ops,
        );
        const again: RuleOp<Ticket>[] = [];
        /** Groups our picture of is stale (a vanished or duplicate rule): described once the round's calls end. */
        const stale: { groupId: string; action: string; ops: readonly AllowOp<Ticket>[] }[] = [];
        for (const op of plan.noop) done(op);

        // Revokes, updates and the authorizes that fit in slots free now go out together: an authorize never
        // waits for a revoke (each action has its own EC2 bucket and pacer). Allows that need a slot one of these
        // revokes frees are planned again in the next round, once the revokes are done.
        await Promise.all([
          ...this.#perCall(plan.revoke).map(async ([groupId, revokes]) => {
            try {
              await revokeIngressIdempotent(
                this.#ctx,
                groupId,
                revokes.map((o) => o.spec),
              );
              for (const op of revokes) {
                this.#forget(op.spec);
                revoked.add(addressOfCidr(op.spec.cidr));
                done(op);
              }
              freed = true;
            } catch (error) {
              for (const op of revokes) done(op, this.#apiError('revoke', groupId, error));
            }
          }),
          ...this.#perCall(plan.update).map(async ([groupId, updates]) => {
            try {
              const outcome = await updateIngressDescriptions(
                this.#ctx,
                groupId,
                updates.map(this.#withDescription),
              );
              if (outcome === 'ok') {
                for (const op of updates) {
                  this.#remember(op, groupId);
                  this.#noteOpened(opened, op);
                  done(op);
                }
              } else {
                stale.push({ groupId, action: 'extend', ops: updates });
              }
            } catch (error) {
              for (const op of updates) done(op, this.#apiError('extend', groupId, error));
            }
          }),
          ...plan.authorize
            .flatMap((step) => callChunks(step.ops, this.#maxCallRules).map((ops) => ({ ...step, ops })))
            .map(async (step) => {
              // Looked at again as each attempt leaves (after the pacer's wait, after a throttled try): a grant
              // past its wait is refused rather than opened for nobody.
              let sending: readonly AllowOp<Ticket>[] = step.ops;
              const stillDue = () => {
                const now = this.#o.clock.now();
                const due: AllowOp<Ticket>[] = [];
                for (const op of sending) {
                  const stale = this.#staleReason(op, now);
                  if (stale === undefined) due.push(op);
                  else done(op, new GrantNotOpenedError(this.#notOpened(op, stale, 'to be sent')));
                }
                sending = due;
                return due.map(this.#withDescription);
              };
              try {
                const outcome = await authorizeIngress(this.#ctx, step.groupId, stillDue);
                if (outcome === 'ok') {
                  for (const op of sending) {
                    this.#remember(op, step.groupId);
                    this.#mine.set(ruleKey(op.spec), step.groupId);
                    this.#noteOpened(opened, op);
                    done(op);
                  }
                } else if (outcome === 'duplicate') {
                  stale.push({ groupId: step.groupId, action: 'authorize', ops: sending });
                } else {
                  // EC2 says full although our count disagrees: trust EC2 until the next describe.
                  const used = this.#usage(step.groupId);
                  used[step.family] = Math.max(used[step.family], this.#rulesPerGroup);
                  if (this.#contendedMs > 0)
                    this.#contendedUntil.set(
                      `${step.groupId}|${step.family}`,
                      this.#o.clock.now() + this.#contendedMs,
                    );
                  again.push(...sending);
                }
              } catch (error) {
                for (const op of sending) done(op, this.#apiError('authorize', step.groupId, error));
              }
            }),
        ]);
        again.push(...plan.afterRevoke);
        // Described after the round's calls, so a describe never races this batch's own writes to the group.
        const described = new Map<string, Promise<{ failed: unknown } | undefined>>();
        for (const { groupId } of stale) {
          if (described.has(groupId)) continue;
          const refreshed = this.#refreshGroup(groupId).then(
            () => undefined,
            (failed: unknown) => ({ failed }),
          );
          described.set(groupId, refreshed);
        }
        for (const { groupId, action, ops: staleOps } of stale) {
          const outcome = await described.get(groupId);
          if (outcome === undefined) again.push(...staleOps);
          else for (const op of staleOps) done(op, this.#apiError(action, groupId, outcome.failed));
        }

        if (plan.unknownRevoke.length > 0) {
          if (refreshedForUnknown) {
            for (const op of plan.unknownRevoke) done(op); // not in any group: already gone
          } else {
            try {
              await this.#refreshAll();
              refreshedForUnknown = true;
              again.push(...plan.unknownRevoke);
            } catch (error) {
              const reason = this.#apiError('describe', this.#o.securityGroupIds.join(','), error);
              for (const op of plan.unknownRevoke) done(op, reason);
            }
          }
        }

        for (const op of plan.queue) this.#enqueue(op);
        ops = again;
      }
    }

    await this.#record(opened, revoked);
    for (const [op, error] of settled) this.#settle(op, error);
    if (freed && this.#queue.length > 0) this.#requeue();
  }

  /**
   * The batch without the revokes whose grant another receiver extended (see the header): one strongly
   * consistent grants-table read per address; those revokes succeed at once, and this firewall's picture takes
   * the later expiry so it never shortens the rule's description.
   */
  async #notExtendedElsewhere(batch: RuleOp<Ticket>[]): Promise<RuleOp<Ticket>[]> {
    const store = this.#o.grantStore;
    if (store === undefined) return batch;
    const addresses = new Set<string>();
    for (const op of batch) {
      if (op.kind === 'revoke' && op.grantExpiresAt !== undefined) addresses.add(addressOfCidr(op.spec.cidr));
    }
    if (addresses.size === 0) return batch;
    const storedExpiry = new Map<string, number>();
    await Promise.all(
      [...addresses].map(async (address) => {
        try {
          const stored = await store.get(address);
          if (stored !== undefined) storedExpiry.set(address, stored.expiresAt);
        } catch (error) {
          // Unreadable: revoke as asked (closing is the safe direction).
          this.#o.metrics.put('ApiErrors', 1, { Code: awsErrorCode(error) }, { Operation: 'GrantStore' });
        }
      }),
    );
    const due: RuleOp<Ticket>[] = [];
    for (const op of batch) {
      const later = op.kind === 'revoke' ? storedExpiry.get(addressOfCidr(op.spec.cidr)) : undefined;
      if (op.kind !== 'revoke' || later === undefined || later <= (op.grantExpiresAt ?? Infinity)) {
        due.push(op);
        continue;
      }
      const open = this.#open.get(ruleKey(op.spec));
      const laterSeconds = toEpochSeconds(later);
      if (open !== undefined && !open.foreign && open.expiresAtSeconds < laterSeconds) {
        this.#open.set(ruleKey(op.spec), { ...open, expiresAtSeconds: laterSeconds });
      }
      this.#settle(op);
    }
    return due;
  }

  /** The batch without the allows whose grant expired, or waited past `maxWaitMs` (rejected: never opened). */
  #withoutExpired(batch: RuleOp<Ticket>[]): RuleOp<Ticket>[] {
    const now = this.#o.clock.now();
    const live: RuleOp<Ticket>[] = [];
    for (const op of batch) {
      const stale = op.kind === 'allow' ? this.#staleReason(op, now) : undefined;
      if (op.kind === 'allow' && stale !== undefined)
        this.#settle(op, new GrantNotOpenedError(this.#notOpened(op, stale, 'to be sent')));
      else live.push(op);
    }
    return live;
  }

  /** Why an allow must not be opened any more ('expired', or waited too long), or undefined. */
  #staleReason(op: AllowOp<Ticket>, now: number, limitMs = this.#maxWaitMs): string | undefined {
    if (op.askedAt === undefined) return undefined;
    if (op.grant.expiresAt > op.askedAt && op.grant.expiresAt <= now) return 'expired';
    if (now - op.askedAt > limitMs)
      return limitMs === this.#maxWaitMs
        ? `waited ${now - op.askedAt} ms (more than ${limitMs} ms: its device stopped dialling)`
        : `waited ${now - op.askedAt} ms (more than ${limitMs} ms: past its device's early dials)`;
    return undefined;
  }

  /** A group's operations in calls of at most maxBatchRules. */
  #perCall<O>(byGroup: ReadonlyMap<string, readonly O[]>): [string, O[]][] {
    return [...byGroup].flatMap(([groupId, ops]) =>
      callChunks(ops, this.#maxCallRules).map((chunk): [string, O[]] => [groupId, chunk]),
    );
  }

  #settle(op: RuleOp<Ticket>, error?: Error): void {
    for (const ticket of op.tickets) ticket.done(error);
  }

  readonly #withDescription = (op: AllowOp<Ticket>) => ({
    spec: op.spec,
    description: formatRuleDescription(op.grant.deviceId, op.expiresAtSeconds),
  });

  /**
   * From now on keep to `share` of the slots (sg-plan.ts slotShareCaps), filling from the group holding most of it;
   * undefined: every free slot, from the `fillOffset` given. Rules already open stay where they are; the rules this
   * firewall wrote count against the new share. An index outside 0..of-1 is a programming error (RangeError).
   */
  setSlotShare(share: SlotShare | undefined): void {
    if (share === undefined) {
      this.#shareCaps = undefined;
      this.#fillOffset = this.#ownFillOffset;
      return;
    }
    const caps = slotShareCaps(this.#o.securityGroupIds.length, this.#rulesPerGroup, share.index, share.of);
    this.#shareCaps = caps;
    this.#fillOffset = caps.indexOf(Math.max(...caps));
  }

  /**
   * The groups' counts for placing new rules: with a share, what lies outside it counts as used (#withinShare); and
   * a group other than this receiver's first (its fill order's) that EC2 said full for a family within `contendedMs`
   * counts as full for it, describes notwithstanding: under a storm the receiver waits for its own group's slots
   * rather than spend Authorize calls on another receiver's. The first group is never avoided: receivers that share
   * it (the same fill offset) take its slots as they free.
   */
  #placeable(): GroupUsage[] {
    const ids = this.#o.securityGroupIds;
    const caps = this.#shareCaps;
    const groups =
      caps === undefined
        ? ids.map((groupId) => ({ groupId, used: this.#usage(groupId) }))
        : this.#withinShare(ids, caps);
    if (this.#contendedUntil.size === 0) return groups;
    const now = this.#o.clock.now();
    const first = ids[this.#fillOffset % ids.length];
    const contended = (groupId: string, family: AddressFamily) =>
      groupId !== first && (this.#contendedUntil.get(`${groupId}|${family}`) ?? 0) > now;
    return groups.map(({ groupId, used }) => ({
      groupId,
      used: {
        4: contended(groupId, 4) ? this.#rulesPerGroup : used[4],
        6: contended(groupId, 6) ? this.#rulesPerGroup : used[6],
      },
    }));
  }

  /** Counts as used what lies outside this receiver's share: free = min(the group's free, the share's free). */
  #withinShare(ids: readonly string[], caps: readonly number[]): GroupUsage[] {
    const mine = new Map<string, Record<AddressFamily, number>>(ids.map((id) => [id, { 4: 0, 6: 0 }]));
    for (const [key, groupId] of this.#mine) {
      const rule = this.#open.get(key); // #release and #refreshGroup keep #mine to rules still open
      const count = mine.get(groupId);
      if (rule !== undefined && count !== undefined) count[rule.spec.family]++;
    }
    return ids.map((groupId, g) => {
      const used = this.#usage(groupId);
      const own = mine.get(groupId) ?? { 4: 0, 6: 0 };
      const outside = (family: AddressFamily) =>
        this.#rulesPerGroup - Math.max(0, (caps[g] ?? 0) - own[family]);
      return { groupId, used: { 4: Math.max(used[4], outside(4)), 6: Math.max(used[6], outside(6)) } };
    });
  }

  #usage(groupId: string): Record<AddressFamily, number> {
    let used = this.#used.get(groupId);
    if (used === undefined) {
      used = { 4: 0, 6: 0 };
      this.#used.set(groupId, used);
    }
    return used;
  }

  /** An answered write: applied now, and again on the snapshot of any describe of its group under way. */
  #journal(groupId: string, apply: () => void): void {
    apply();
    for (const journal of this.#journals.get(groupId) ?? []) journal.push(apply);
  }

  /** The rule is open in the group (a new rule takes a slot; an extension only moves its expiry). */
  #remember(op: AllowOp<Ticket>, groupId: string): void {
    const rule: OpenRule = {
      spec: op.spec,
      groupId,
      deviceId: op.grant.deviceId,
      expiresAtSeconds: op.expiresAtSeconds,
      foreign: false,
    };
    this.#journal(groupId, () => {
      const key = ruleKey(rule.spec);
      const before = this.#open.get(key);
      if (before?.groupId !== groupId) {
        if (before !== undefined) this.#release(before);
        this.#usage(groupId)[rule.spec.family]++;
      }
      this.#open.set(key, rule);
    });
  }

  #forget(spec: RuleSpec): void {
    const open = this.#open.get(ruleKey(spec));
    if (open === undefined) return;
    this.#journal(open.groupId, () => {
      const now = this.#open.get(ruleKey(spec));
      if (now !== undefined) this.#release(now);
    });
  }

  #release(rule: OpenRule): void {
    this.#open.delete(ruleKey(rule.spec));
    if (this.#mine.get(ruleKey(rule.spec)) === rule.groupId) this.#mine.delete(ruleKey(rule.spec));
    const used = this.#usage(rule.groupId);
    used[rule.spec.family] = Math.max(0, used[rule.spec.family] - 1);
  }

  #noteOpened(opened: Map<string, Grant>, op: AllowOp<Ticket>): void {
    const address = addressOfCidr(op.spec.cidr);
    const prev = opened.get(address);
    if (prev === undefined || op.grant.expiresAt > prev.expiresAt) opened.set(address, op.grant);
  }

  /** Every group described again, in parallel; a lane asking while the other's describe runs shares it. */
  #refreshAll(): Promise<void> {
    this.#refreshing ??= Promise.all(this.#o.securityGroupIds.map((groupId) => this.#refreshGroup(groupId)))
      .then(() => {
        this.#stale = false;
      })
      .finally(() => {
        this.#refreshing = undefined;
      });
    return this.#refreshing;
  }

  /**
   * The group's rules and counts from a describe. Writes answered while it was under way (the other lane's) may
   * or may not be in its snapshot: they are applied again on top of it (each is idempotent), so a describe never
   * undoes them.
   */
  async #refreshGroup(groupId: string): Promise<void> {
    const journal: (() => void)[] = [];
    const journals = this.#journals.get(groupId) ?? [];
    journals.push(journal);
    this.#journals.set(groupId, journals);
    let snapshot: Awaited<ReturnType<typeof describeIngress>>;
    try {
      snapshot = await describeIngress(this.#ctx, groupId);
    } finally {
      journals.splice(journals.indexOf(journal), 1);
      if (journals.length === 0) this.#journals.delete(groupId);
    }
    this.#used.set(groupId, { ...snapshot.used });
    for (const [key, rule] of this.#open) if (rule.groupId === groupId) this.#open.delete(key);
    for (const rule of snapshot.rules) {
      if (!this.#brokerKeys.has(`${rule.protocol}/${rule.port}`)) continue;
      this.#open.set(ruleKey(rule), {
        spec: { protocol: rule.protocol, port: rule.port, family: rule.family, cidr: rule.cidr },
        groupId,
        deviceId: rule.blackcloud?.deviceId ?? '',
        expiresAtSeconds: rule.blackcloud?.expiresAtSeconds ?? Number.POSITIVE_INFINITY,
        foreign: rule.blackcloud === undefined,
      });
    }
    for (const replay of journal) replay();
    for (const [key, mineIn] of this.#mine)
      if (mineIn === groupId && this.#open.get(key)?.groupId !== groupId) this.#mine.delete(key); // gone
  }

  #enqueue(op: AllowOp<Ticket>): void {
    if (this.#closed) {
      this.#settle(op, new GrantNotOpenedError(this.#notOpened(op, 'found every group full at close')));
      return;
    }
    if (this.#queue.length >= this.#maxQueuedRules) {
      this.#settle(
        op,
        new GrantQueueFullError(
          `every broker security group (${this.#o.securityGroupIds.join(', ')}) is full and ${this.#queue.length} ` +
            `rules already wait: grant ${op.grant.deviceId}@${op.grant.address} not opened. Raise the ` +
            '"Inbound or outbound rules per security group" quota or attach another broker security group',
        ),
      );
      return;
    }
    this.#queue.push(op);
    this.#reportQueue();
    if (this.#queueTimer === undefined) {
      this.#queueTimer = this.#o.timers.setTimeout(() => {
        this.#queueTimer = undefined;
        this.#stale = true; // others (sweeper, other receivers) may have freed slots
        this.#requeue();
      }, this.#queueRetryMs);
    }
  }

  /** An allow not yet sent whose rule is revoked is never sent (the revoke goes out in the other lane). */
  #dropUnsent(keys: ReadonlySet<string>): void {
    const waiting = this.#opens.take((op) => op.kind === 'allow' && keys.has(ruleKey(op.spec)));
    for (const op of waiting) {
      if (this.#unsentOps.delete(op)) this.#unsent--;
      if (op.kind === 'allow')
        this.#settle(op, new GrantNotOpenedError(this.#notOpened(op, 'was revoked', 'to be sent')));
    }
  }

  /** A grant still waiting for a slot whose rule is revoked is simply never opened. */
  #dropQueued(keys: ReadonlySet<string>): void {
    if (keys.size === 0) return;
    const waiting = this.#queue.filter((op) => keys.has(ruleKey(op.spec)));
    if (waiting.length === 0) return;
    this.#queue = this.#queue.filter((op) => !keys.has(ruleKey(op.spec)));
    this.#reportQueue();
    for (const op of waiting) this.#settle(op, new GrantNotOpenedError(this.#notOpened(op, 'was revoked')));
  }

  /** Put waiting grants back in front of the batch (FIFO), failing those that expired while waiting. */
  #requeue(): void {
    const now = this.#o.clock.now();
    const waiting = this.#queue;
    this.#queue = [];
    const live: AllowOp<Ticket>[] = [];
    for (const op of waiting) {
      const stale = op.grant.expiresAt <= now ? 'expired' : this.#staleReason(op, now, this.#maxSlotWaitMs);
      if (stale !== undefined) this.#settle(op, new GrantNotOpenedError(this.#notOpened(op, stale)));
      else live.push(op);
    }
    this.#reportQueue();
    this.#opens.addFirst(...live);
  }

  #reportQueue(): void {
    this.#o.metrics.put('GrantQueueDepth', this.#queue.length);
  }

  #notOpened(op: AllowOp<Ticket>, what: string, waitingFor = 'for a free rule slot'): string {
    return (
      `grant ${op.grant.deviceId}@${op.grant.address} ${ruleKey(op.spec)} ${what} while waiting ${waitingFor} ` +
      `in ${this.#o.securityGroupIds.join(', ')}: the device must knock again`
    );
  }

  #apiError(action: string, groupId: string, error: unknown): FirewallApiError {
    return new FirewallApiError(
      `could not ${action} rules in ${groupId}: ${awsErrorCode(error)}. Check the receiver role's ec2 permissions ` +
        'on the broker security groups and that the groups exist',
      { cause: error },
    );
  }

  async #record(opened: ReadonlyMap<string, Grant>, revoked: ReadonlySet<string>): Promise<void> {
    const store = this.#o.grantStore;
    if (store === undefined || (opened.size === 0 && revoked.size === 0)) return;
    const groupsOf = new Map<string, Set<string>>();
    for (const rule of this.#open.values()) {
      if (rule.foreign) continue;
      const address = addressOfCidr(rule.spec.cidr);
      const groups = groupsOf.get(address) ?? new Set<string>();
      groups.add(rule.groupId);
      groupsOf.set(address, groups);
    }
    const writes: Promise<unknown>[] = [];
    for (const [address, grant] of opened) {
      const range = parseTarget(address);
      writes.push(
        store.put({
          ...grant,
          address: range.address,
          ...(range.prefixLength === undefined ? {} : { prefixLength: range.prefixLength }),
          securityGroupIds: [...(groupsOf.get(address) ?? [])],
        }),
      );
    }
    for (const address of revoked) {
      if (!groupsOf.has(address) && !opened.has(address)) writes.push(store.delete(address));
    }
    const results = await Promise.allSettled(writes);
    for (const result of results) {
      if (result.status === 'rejected') {
        this.#o.metrics.put(
          'ApiErrors',
          1,
          { Code: awsErrorCode(result.reason) },
          { Operation: 'GrantStore' },
        );
        this.#o.onGrantStoreError?.(result.reason);
      }
    }
  }
}
