/**
 * Plans one coalesced batch of rule operations against what the firewall knows is open (pure).
 *
 * coalesceOps: one operation per rule (protocol/port/CIDR), in first-arrival order. Two allows merge into one
 *   with the later expiry (a duplicate range in one EC2 call is InvalidParameterValue); otherwise the later
 *   operation wins (allow-then-revoke = revoke, revoke-then-allow = allow). Tickets of merged ops travel along.
 * planBatch:
 *   revoke  known rule                  → revoke in its group (frees a slot for this batch's allows)
 *           rule not known              → unknownRevoke (refresh, then revoke where found; else already gone)
 *           rule not written by us      → noop (blackcloud never revokes a rule it did not write)
 *   allow   open, later expiry          → update the description in its group (extend, no new rule)
 *           open, same or earlier expiry, or not ours → noop (already open)
 *           not open                    → authorize in a slot free NOW (before this batch's revokes) for the
 *                                         address family (EC2 counts IPv4 and IPv6 separately), sent alongside
 *                                         the revokes, never waiting for them. The new rules are placed a call
 *                                         (`callRules`) at a time: the whole call into the first group, in this
 *                                         receiver's fill order, with room for all of it (one call, not a few
 *                                         ranges in each of several groups); if none has, rule by rule into the
 *                                         first with a free slot;
 *                                         no such slot, but one of this batch's revokes frees one → afterRevoke
 *                                         (the firewall plans it again once the revokes are done);
 *                                         neither → queue
 * Fill order (fillOrder): the groups from index `fillOffset` (mod their number) on, wrapping: receiver i of n
 *   starts at group i and moves on only when it is full, so one receiver's rules (and later its revokes) land in
 *   one group, one call per batch, and receivers do not race for the same group's last slots. Offset 0 is the
 *   configured order (one receiver: nothing changes). fillOffsetOf derives an offset from a receiver's id.
 * Shares (slotShareCaps): receiver i of n may hold at most a cap of rules per group, the caps of a group summing to
 *   its rules, so receivers keeping to them never find a group full under them; the firewall passes the groups'
 *   counts with what lies outside its share counted as used, so planBatch needs no notion of shares.
 * callChunks: the firewall sends each group's revokes, updates and authorizes in calls of at most `maxBatchRules`;
 *   sg-api.ts revokeIngressIdempotent splits any revoke into calls of at most EC2_MAX_RANGES_PER_CALL.
 */
import type { AddressFamily } from '../../spa/types.ts';
import type { Grant } from '../core/interfaces.ts';
import { type RuleSpec, ruleKey } from './sg-rules.ts';

export interface GroupUsage {
  readonly groupId: string;
  /** Rules counted against the group's quota, per family. */
  readonly used: Readonly<Record<AddressFamily, number>>;
}

export interface OpenRule {
  readonly spec: RuleSpec;
  readonly groupId: string;
  readonly deviceId: string;
  readonly expiresAtSeconds: number;
  /** Not written by blackcloud (no `blackcloud:` description): never extended or revoked. */
  readonly foreign: boolean;
}

export interface SlotState {
  readonly groups: readonly GroupUsage[];
  readonly open: ReadonlyMap<string, OpenRule>;
  readonly rulesPerGroup: number;
  /** Index of the group this receiver fills first (taken modulo the groups' number). @default 0 */
  readonly fillOffset?: number;
  /** Rules one Authorize call carries (the firewall's maxBatchRules): a call is placed whole where it fits. */
  readonly callRules?: number;
}

export interface AllowOp<T> {
  readonly kind: 'allow';
  readonly spec: RuleSpec;
  readonly grant: Grant;
  readonly expiresAtSeconds: number;
  readonly tickets: readonly T[];
  /** When the firewall was asked (ms): a grant that expires after this while still waiting is never opened. */
  readonly askedAt?: number;
}

export interface RevokeOp<T> {
  readonly kind: 'revoke';
  readonly spec: RuleSpec;
  readonly tickets: readonly T[];
  /** The expiry (ms) of the grant being revoked: a stored grant ending later was extended elsewhere. */
  readonly grantExpiresAt?: number;
}

export type RuleOp<T> = AllowOp<T> | RevokeOp<T>;

export interface AuthorizeStep<T> {
  readonly groupId: string;
  readonly family: AddressFamily;
  readonly ops: readonly AllowOp<T>[];
}

export interface Plan<T> {
  readonly revoke: ReadonlyMap<string, readonly RevokeOp<T>[]>;
  readonly unknownRevoke: readonly RevokeOp<T>[];
  readonly update: ReadonlyMap<string, readonly AllowOp<T>[]>;
  /** Placed in slots free before this batch's revokes: sent without waiting for them. */
  readonly authorize: readonly AuthorizeStep<T>[];
  /** Allows that fit only in a slot one of this batch's revokes frees: planned again after the revokes. */
  readonly afterRevoke: readonly AllowOp<T>[];
  readonly noop: readonly RuleOp<T>[];
  readonly queue: readonly AllowOp<T>[];
}

/** `items` in runs of at most `size` (one EC2 call carries at most so many rules), order kept. */
export function callChunks<V>(items: readonly V[], size: number): V[][] {
  if (!Number.isInteger(size) || size < 1)
    throw new RangeError(`callChunks: size must be a whole number >= 1, got ${size}`);
  const out: V[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * The groups in the order a receiver fills them: from index `fillOffset` (mod their number) on, wrapping.
 * A negative or fractional offset is a programming error (RangeError).
 */
export function fillOrder<G>(groups: readonly G[], fillOffset = 0): G[] {
  if (!Number.isInteger(fillOffset) || fillOffset < 0)
    throw new RangeError(`fillOrder: fillOffset must be a whole number >= 0, got ${fillOffset}`);
  if (groups.length === 0) return [];
  const start = fillOffset % groups.length;
  return [...groups.slice(start), ...groups.slice(0, start)];
}

/**
 * A fill offset from a receiver's id (FNV-1a, 32 bits): the same id always gives the same offset; distinct ids
 * spread over the groups, though two receivers may share one (then they share a first group, as all did before).
 */
export function fillOffsetOf(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    hash ^= id.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** Receiver `index` (0-based) of `of` receivers that share the groups' slots. */
export interface SlotShare {
  readonly index: number;
  readonly of: number;
}

/**
 * Receiver `index` of `of`'s share of the groups' slots (per family), as a cap per group in the configured order.
 * Each receiver gets whole groups first, floor(groups / of) of them (receiver i the i-th run), so its rules, its
 * calls and later its revokes stay in one group; the groups left over (the last groups % of) are shared: their
 * slots laid end to end and cut into `of` runs as equal as whole slots allow, run i to receiver i. With fewer
 * groups than receivers every group is shared that way. The caps of one group over all receivers sum to
 * `rulesPerGroup`, so receivers that keep to their caps never find a group full under them (no
 * RulesPerSecurityGroupLimitExceeded). `index` outside 0..of-1 is a programming error (RangeError).
 */
export function slotShareCaps(groups: number, rulesPerGroup: number, index: number, of: number): number[] {
  if (!Number.isInteger(of) || of < 1 || !Number.isInteger(index) || index < 0 || index >= of)
    throw new RangeError(
      `slotShareCaps: index must be a whole number in 0..${of - 1} of ${of}, got ${index}`,
    );
  const whole = Math.floor(groups / of);
  const shared = groups - whole * of;
  const sharedSlots = shared * rulesPerGroup;
  const from = Math.floor((index * sharedSlots) / of);
  const to = Math.floor(((index + 1) * sharedSlots) / of);
  return Array.from({ length: groups }, (_, g) => {
    if (g < whole * of) return Math.floor(g / whole) === index ? rulesPerGroup : 0;
    const s = g - whole * of; // the s-th shared group
    return Math.max(0, Math.min(to, (s + 1) * rulesPerGroup) - Math.max(from, s * rulesPerGroup));
  });
}

export function coalesceOps<T>(ops: readonly RuleOp<T>[]): RuleOp<T>[] {
  const byRule = new Map<string, RuleOp<T>>();
  for (const op of ops) {
    const key = ruleKey(op.spec);
    const prev = byRule.get(key);
    if (prev === undefined) {
      byRule.set(key, op);
    } else if (prev.kind === 'allow' && op.kind === 'allow') {
      const later = op.expiresAtSeconds >= prev.expiresAtSeconds ? op : prev;
      byRule.set(key, { ...later, tickets: [...prev.tickets, ...op.tickets] });
    } else {
      byRule.set(key, { ...op, tickets: [...prev.tickets, ...op.tickets] });
    }
  }
  return [...byRule.values()];
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

export function planBatch<T>(state: SlotState, ops: readonly RuleOp<T>[]): Plan<T> {
  const revoke = new Map<string, RevokeOp<T>[]>();
  const update = new Map<string, AllowOp<T>[]>();
  const authorize = new Map<string, AuthorizeStep<T> & { ops: AllowOp<T>[] }>();
  const unknownRevoke: RevokeOp<T>[] = [];
  const afterRevoke: AllowOp<T>[] = [];
  const noop: RuleOp<T>[] = [];
  const queue: AllowOp<T>[] = [];
  const groups = fillOrder(state.groups, state.fillOffset ?? 0);
  /** Slots this batch takes now, per group and family. */
  const taken = new Map<string, Record<AddressFamily, number>>(
    groups.map((g) => [g.groupId, { 4: 0, 6: 0 }]),
  );
  /** Slots this batch's revokes free (and afterRevoke allows already count on), per group and family. */
  const freed = new Map<string, Record<AddressFamily, number>>(
    groups.map((g) => [g.groupId, { 4: 0, 6: 0 }]),
  );

  for (const op of ops) {
    if (op.kind !== 'revoke') continue;
    const open = state.open.get(ruleKey(op.spec));
    if (open === undefined) {
      unknownRevoke.push(op);
    } else if (open.foreign) {
      noop.push(op);
    } else {
      push(revoke, open.groupId, op);
      const f = freed.get(open.groupId);
      if (f !== undefined) f[op.spec.family]++;
    }
  }

  const freeNow = (g: GroupUsage, family: AddressFamily) =>
    state.rulesPerGroup - g.used[family] - (taken.get(g.groupId)?.[family] ?? 0);
  const callRules = state.callRules ?? Number.POSITIVE_INFINITY;
  /** New rules still to place per family, so the size of the call being started is known. */
  const fresh: Record<AddressFamily, number> = { 4: 0, 6: 0 };
  for (const op of ops) if (op.kind === 'allow' && !state.open.has(ruleKey(op.spec))) fresh[op.spec.family]++;
  /** Per family, the group the current call goes to and how many of its rules are still to place. */
  const call: Record<AddressFamily, { group: GroupUsage | undefined; left: number }> = {
    4: { group: undefined, left: 0 },
    6: { group: undefined, left: 0 },
  };
  for (const op of ops) {
    if (op.kind !== 'allow') continue;
    const open = state.open.get(ruleKey(op.spec));
    if (open !== undefined) {
      if (!open.foreign && op.expiresAtSeconds > open.expiresAtSeconds) push(update, open.groupId, op);
      else noop.push(op);
      continue;
    }
    const family = op.spec.family;
    const current = call[family];
    if (current.left === 0 || current.group === undefined || freeNow(current.group, family) <= 0) {
      // A new call: whole into the first group with room for all of it, else into the first with any room.
      const size = Math.min(callRules, fresh[family]);
      current.group =
        groups.find((g) => freeNow(g, family) >= size) ?? groups.find((g) => freeNow(g, family) > 0);
      current.left = size;
    }
    fresh[family]--;
    current.left--;
    const group = current.group;
    if (group === undefined) {
      const freeing = groups.find((g) => freeNow(g, family) + (freed.get(g.groupId)?.[family] ?? 0) > 0);
      const f = freeing === undefined ? undefined : freed.get(freeing.groupId);
      if (f === undefined) {
        queue.push(op);
      } else {
        f[family]--;
        afterRevoke.push(op);
      }
      continue;
    }
    const t = taken.get(group.groupId);
    if (t !== undefined) t[family]++;
    const stepKey = `${group.groupId}|${family}`;
    const step = authorize.get(stepKey);
    if (step === undefined) authorize.set(stepKey, { groupId: group.groupId, family, ops: [op] });
    else step.ops.push(op);
  }

  return { revoke, unknownRevoke, update, authorize: [...authorize.values()], afterRevoke, noop, queue };
}
