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
 *           not open                    → authorize in the first group (configured order) with a free slot for
 *                                         the address family (EC2 counts IPv4 and IPv6 separately); none → queue
 * callChunks: the firewall sends each group's revokes, updates and authorizes in calls of at most `maxBatchRules`.
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
  readonly authorize: readonly AuthorizeStep<T>[];
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
  const noop: RuleOp<T>[] = [];
  const queue: AllowOp<T>[] = [];
  const delta = new Map<string, Record<AddressFamily, number>>(
    state.groups.map((g) => [g.groupId, { 4: 0, 6: 0 }]),
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
      const d = delta.get(open.groupId);
      if (d !== undefined) d[op.spec.family]--;
    }
  }

  for (const op of ops) {
    if (op.kind !== 'allow') continue;
    const open = state.open.get(ruleKey(op.spec));
    if (open !== undefined) {
      if (!open.foreign && op.expiresAtSeconds > open.expiresAtSeconds) push(update, open.groupId, op);
      else noop.push(op);
      continue;
    }
    const family = op.spec.family;
    const group = state.groups.find(
      (g) => g.used[family] + (delta.get(g.groupId)?.[family] ?? 0) < state.rulesPerGroup,
    );
    if (group === undefined) {
      queue.push(op);
      continue;
    }
    const d = delta.get(group.groupId);
    if (d !== undefined) d[family]++;
    const stepKey = `${group.groupId}|${family}`;
    const step = authorize.get(stepKey);
    if (step === undefined) authorize.set(stepKey, { groupId: group.groupId, family, ops: [op] });
    else step.ops.push(op);
  }

  return { revoke, unknownRevoke, update, authorize: [...authorize.values()], noop, queue };
}
