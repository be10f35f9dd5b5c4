/**
 * The pure coalescing logic under a virtual clock: the Coalescer's batching windows and the planner's
 * per-rule decisions (merge, extend, revoke, a receiver's own fill order, what waits for a revoke, queue).
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { Coalescer } from '../../../functions/aws/coalescer.ts';
import {
  type AllowOp,
  coalesceOps,
  fillOffsetOf,
  fillOrder,
  type OpenRule,
  planBatch,
  type RevokeOp,
  type SlotState,
  slotShareCaps,
} from '../../../functions/aws/sg-plan.ts';
import type { RuleSpec } from '../../../functions/aws/sg-rules.ts';
import { globalTimers as timers } from '../../support/timers.ts';

describe('Coalescer (virtual clock)', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function recorder(flushMs = 0, maxBatch = 5) {
    const batches: { at: number; items: number[] }[] = [];
    const coalescer = new Coalescer<number>({
      windowMs: 20,
      maxBatch,
      timers,
      flush: async (items) => {
        batches.push({ at: Date.now(), items });
        if (flushMs > 0) await new Promise((resolve) => setTimeout(resolve, flushMs));
      },
    });
    return { batches, coalescer };
  }

  it('1. items within one window go out together when it closes', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder();
    coalescer.add(1);
    await vi.advanceTimersByTimeAsync(5);
    coalescer.add(2);
    await vi.advanceTimersByTimeAsync(10);
    coalescer.add(3);
    expect(batches).toEqual([]);
    await vi.advanceTimersByTimeAsync(5);
    expect(batches).toEqual([{ at: start + 20, items: [1, 2, 3] }]);
  });

  it('2. reaching maxBatch flushes at once, the rest waits for the window since that flush started', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder();
    coalescer.add(1, 2, 3, 4, 5, 6, 7);
    await vi.advanceTimersByTimeAsync(0);
    expect(batches).toEqual([{ at: start, items: [1, 2, 3, 4, 5] }]);
    await vi.advanceTimersByTimeAsync(20);
    expect(batches).toEqual([
      { at: start, items: [1, 2, 3, 4, 5] },
      { at: start + 20, items: [6, 7] },
    ]);
    // A full batch does not wait.
    coalescer.add(8, 9, 10, 11, 12);
    await vi.advanceTimersByTimeAsync(0);
    expect(batches.at(-1)).toEqual({ at: start + 20, items: [8, 9, 10, 11, 12] });
  });

  it('2b. under load at most one batch per window: items added during fast flushes go out once per window', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder(2, 100);
    coalescer.add(1);
    for (let t = 1; t <= 60; t++) {
      await vi.advanceTimersByTimeAsync(1);
      coalescer.add(100 + t);
    }
    await vi.advanceTimersByTimeAsync(40);
    await coalescer.drain();
    const at = batches.map((b) => b.at - start);
    expect(at.slice(0, 3)).toEqual([20, 40, 60]);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(20);
    expect(batches.flatMap((b) => b.items)).toHaveLength(61);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('3. items arriving during a slow flush form the next batch, sent as soon as it ends', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder(100);
    coalescer.add(1);
    await vi.advanceTimersByTimeAsync(20);
    coalescer.add(2);
    await vi.advanceTimersByTimeAsync(50);
    coalescer.add(3);
    await vi.advanceTimersByTimeAsync(50);
    expect(batches).toEqual([
      { at: start + 20, items: [1] },
      { at: start + 120, items: [2, 3] },
    ]);
    await vi.advanceTimersByTimeAsync(100);
    await coalescer.idle();
  });

  it('4. addFirst puts waiting work ahead; drain flushes without waiting for the window', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder();
    coalescer.add(2, 3);
    coalescer.addFirst(1);
    await coalescer.drain();
    expect(batches).toEqual([{ at: start, items: [1, 2, 3] }]);
  });

  it('5. separate windows give separate batches; idle resolves after the last', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder();
    coalescer.add(1);
    await vi.advanceTimersByTimeAsync(30);
    coalescer.add(2);
    const idle = coalescer.idle();
    await vi.advanceTimersByTimeAsync(20);
    await idle;
    expect(batches).toEqual([
      { at: start + 20, items: [1] },
      { at: start + 50, items: [2] },
    ]);
  });

  it('6. a rejecting flush is reported and later batches still run', async () => {
    const errors: unknown[] = [];
    const seen: number[][] = [];
    const coalescer = new Coalescer<number>({
      windowMs: 1,
      maxBatch: 10,
      timers,
      flush: async (items) => {
        seen.push(items);
        if (items[0] === 1) throw new Error('boom');
      },
      onFlushError: (e) => errors.push(e),
    });
    coalescer.add(1);
    await vi.advanceTimersByTimeAsync(1);
    coalescer.add(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen).toEqual([[1], [2]]);
    expect(errors).toHaveLength(1);
  });

  it('7. take removes the matching pending items in order; taking all leaves no window armed and idle resolves', async () => {
    const start = Date.now();
    const { batches, coalescer } = recorder(0, 10);
    coalescer.add(1, 2, 3, 4);
    expect(coalescer.take((n) => n % 2 === 0)).toEqual([2, 4]);
    expect(coalescer.pending).toBe(2);
    await vi.advanceTimersByTimeAsync(20);
    expect(batches).toEqual([{ at: start + 20, items: [1, 3] }]);
    coalescer.add(5);
    let idle = false;
    void coalescer.idle().then(() => {
      idle = true;
    });
    expect(coalescer.take(() => true)).toEqual([5]);
    await vi.advanceTimersByTimeAsync(0);
    expect(idle).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    await vi.advanceTimersByTimeAsync(100);
    expect(batches).toHaveLength(1);
  });
});

const v4 = (n: number): RuleSpec => ({ protocol: 'tcp', port: 8883, family: 4, cidr: `198.51.100.${n}/32` });
const v6 = (n: number): RuleSpec => ({ protocol: 'tcp', port: 8883, family: 6, cidr: `2001:db8::${n}/128` });
const grant = (n: number, exp: number) => ({
  deviceId: `dev-${n}`,
  address: `198.51.100.${n}`,
  family: 4 as const,
  access: [{ protocol: 'tcp' as const, port: 8883 }],
  openedAt: 0,
  expiresAt: exp * 1000,
});
const allow = (spec: RuleSpec, exp: number, ticket: string): AllowOp<string> => ({
  kind: 'allow',
  spec,
  grant: grant(1, exp),
  expiresAtSeconds: exp,
  tickets: [ticket],
});
const revoke = (spec: RuleSpec, ticket: string): RevokeOp<string> => ({
  kind: 'revoke',
  spec,
  tickets: [ticket],
});
const open = (spec: RuleSpec, groupId: string, exp: number, foreign = false): [string, OpenRule] => [
  `${spec.protocol}/${spec.port}/${spec.cidr}`,
  { spec, groupId, deviceId: 'dev', expiresAtSeconds: exp, foreign },
];

describe('coalesceOps', () => {
  it('merges allows of one rule into one with the later expiry and all tickets', () => {
    expect(
      coalesceOps([
        allow(v4(1), 10, 'a'),
        allow(v4(2), 10, 'b'),
        allow(v4(1), 30, 'c'),
        allow(v4(1), 20, 'd'),
      ]),
    ).toEqual([{ ...allow(v4(1), 30, 'c'), tickets: ['a', 'c', 'd'] }, allow(v4(2), 10, 'b')]);
  });

  it('lets the later of allow/revoke win', () => {
    expect(coalesceOps([allow(v4(1), 10, 'a'), revoke(v4(1), 'r')])).toEqual([
      { ...revoke(v4(1), 'r'), tickets: ['a', 'r'] },
    ]);
    expect(coalesceOps([revoke(v4(1), 'r'), allow(v4(1), 10, 'a')])).toEqual([
      { ...allow(v4(1), 10, 'a'), tickets: ['r', 'a'] },
    ]);
  });
});

describe('planBatch', () => {
  const state = (
    groups: [string, number, number][],
    openRules: [string, OpenRule][] = [],
    rulesPerGroup = 3,
  ): SlotState => ({
    groups: groups.map(([groupId, u4, u6]) => ({ groupId, used: { 4: u4, 6: u6 } })),
    open: new Map(openRules),
    rulesPerGroup,
  });

  it('1. new rules go a call at a time to the first group with room for all of it, per family, batched per group and family', () => {
    const plan = planBatch(
      state([
        ['sg-a', 2, 0],
        ['sg-b', 0, 0],
      ]),
      [allow(v4(1), 10, 't'), allow(v4(2), 10, 't'), allow(v6(3), 10, 't')],
    );
    // sg-a has one IPv4 slot: the two IPv4 rules go to sg-b in one call rather than one call to each group.
    expect(plan.authorize.map((s) => [s.groupId, s.family, s.ops.map((o) => o.spec.cidr)])).toEqual([
      ['sg-b', 4, ['198.51.100.1/32', '198.51.100.2/32']],
      ['sg-a', 6, ['2001:db8::3/128']],
    ]);
    expect(plan.queue).toEqual([]);
  });

  it('1b. calls of callRules rules are placed one by one: each whole where it fits, the rest rule by rule', () => {
    const plan = planBatch(
      {
        ...state(
          [
            ['sg-a', 1, 0],
            ['sg-b', 2, 0],
            ['sg-c', 2, 0],
          ],
          [],
          4,
        ),
        callRules: 2,
      },
      [
        allow(v4(1), 10, 't'),
        allow(v4(2), 10, 't'),
        allow(v4(3), 10, 't'),
        allow(v4(4), 10, 't'),
        allow(v4(5), 10, 't'),
      ],
    );
    // Calls [1, 2] → sg-a (3 free), [3, 4] → sg-b (sg-a has 1 left), [5] → sg-a (its last slot).
    expect(plan.authorize.map((s) => [s.groupId, s.ops.map((o) => o.spec.cidr.split('.')[3])])).toEqual([
      ['sg-a', ['1/32', '2/32', '5/32']],
      ['sg-b', ['3/32', '4/32']],
    ]);
  });

  it('2. an open rule with a later expiry is extended in its group, not re-authorized', () => {
    const plan = planBatch(state([['sg-a', 1, 0]], [open(v4(1), 'sg-a', 10)]), [allow(v4(1), 40, 't')]);
    expect([...plan.update].map(([g, ops]) => [g, ops.map((o) => o.expiresAtSeconds)])).toEqual([
      ['sg-a', [40]],
    ]);
    expect(plan.authorize).toEqual([]);
  });

  it('3. an open rule with the same or an earlier expiry, or a foreign rule, needs nothing', () => {
    const plan = planBatch(
      state([['sg-a', 2, 0]], [open(v4(1), 'sg-a', 40), open(v4(2), 'sg-a', Infinity, true)]),
      [allow(v4(1), 40, 't'), allow(v4(1), 30, 't'), allow(v4(2), 50, 't')],
    );
    expect(plan.noop).toHaveLength(3);
    expect(plan.update.size + plan.authorize.length).toBe(0);
  });

  it('4. revokes of known rules free slots for this batch (the allow waits for them); unknown ones are looked up; foreign ones left alone', () => {
    const plan = planBatch(
      state([['sg-a', 3, 0]], [open(v4(1), 'sg-a', 10), open(v4(9), 'sg-a', Infinity, true)]),
      [revoke(v4(1), 'r'), revoke(v4(2), 'r'), revoke(v4(9), 'r'), allow(v4(3), 10, 't')],
    );
    expect([...plan.revoke].map(([g, ops]) => [g, ops.map((o) => o.spec.cidr)])).toEqual([
      ['sg-a', ['198.51.100.1/32']],
    ]);
    expect(plan.unknownRevoke.map((o) => o.spec.cidr)).toEqual(['198.51.100.2/32']);
    expect(plan.noop.map((o) => o.spec.cidr)).toEqual(['198.51.100.9/32']);
    // The only slot is the one the revoke frees: the allow is planned again after it, not sent with it.
    expect(plan.authorize).toEqual([]);
    expect(plan.afterRevoke.map((o) => o.spec.cidr)).toEqual(['198.51.100.3/32']);
    expect(plan.queue).toEqual([]);
  });

  it('5. when every group is full for the family, the rest is queued in order', () => {
    const plan = planBatch(
      state([
        ['sg-a', 3, 0],
        ['sg-b', 2, 3],
      ]),
      [allow(v4(1), 10, 't'), allow(v4(2), 10, 't'), allow(v6(3), 10, 't'), allow(v6(4), 10, 't')],
    );
    expect(plan.authorize.map((s) => [s.groupId, s.family, s.ops.length])).toEqual([
      ['sg-b', 4, 1],
      ['sg-a', 6, 2],
    ]);
    expect(plan.queue.map((o) => o.spec.cidr)).toEqual(['198.51.100.2/32']);
  });

  it('6. allows take slots free before the revokes (sent alongside them); only the overflow waits for a revoke', () => {
    const plan = planBatch(
      state(
        [
          ['sg-a', 3, 0],
          ['sg-b', 2, 0],
        ],
        [open(v4(1), 'sg-a', 10), open(v4(2), 'sg-a', 10)],
      ),
      [
        revoke(v4(1), 'r'),
        revoke(v4(2), 'r'),
        allow(v4(3), 10, 't'),
        allow(v4(4), 10, 't'),
        allow(v4(5), 10, 't'),
      ],
    );
    expect([...plan.revoke].map(([g, ops]) => [g, ops.length])).toEqual([['sg-a', 2]]);
    expect(plan.authorize.map((s) => [s.groupId, s.ops.map((o) => o.spec.cidr)])).toEqual([
      ['sg-b', ['198.51.100.3/32']],
    ]);
    expect(plan.afterRevoke.map((o) => o.spec.cidr)).toEqual(['198.51.100.4/32', '198.51.100.5/32']);
    expect(plan.queue).toEqual([]);
  });

  it('7. no more allows wait for revokes than the revokes free (per family); the rest is queued', () => {
    const plan = planBatch(state([['sg-a', 3, 3]], [open(v4(1), 'sg-a', 10)]), [
      revoke(v4(1), 'r'),
      allow(v4(3), 10, 't'),
      allow(v4(4), 10, 't'),
      allow(v6(5), 10, 't'),
    ]);
    expect(plan.afterRevoke.map((o) => o.spec.cidr)).toEqual(['198.51.100.3/32']);
    expect(plan.queue.map((o) => o.spec.cidr)).toEqual(['198.51.100.4/32', '2001:db8::5/128']);
  });

  it('8. a fill offset starts at its own group and moves on only when it is full, wrapping', () => {
    const groups: [string, number, number][] = [
      ['sg-a', 0, 0],
      ['sg-b', 2, 0],
      ['sg-c', 0, 0],
    ];
    const ops = [allow(v4(1), 10, 't'), allow(v4(2), 10, 't'), allow(v4(3), 10, 't'), allow(v4(4), 10, 't')];
    const placed = (fillOffset: number) =>
      planBatch({ ...state(groups), fillOffset }, ops).authorize.map((s) => [s.groupId, s.ops.length]);
    expect(placed(0)).toEqual([
      ['sg-a', 3],
      ['sg-b', 1],
    ]);
    expect(placed(1)).toEqual([
      ['sg-b', 1],
      ['sg-c', 3],
    ]);
    expect(placed(2)).toEqual([
      ['sg-c', 3],
      ['sg-a', 1],
    ]);
    // Taken modulo the groups' number; the default is the configured order.
    expect(placed(5)).toEqual(placed(2));
    expect(planBatch(state(groups), ops).authorize).toEqual(
      planBatch({ ...state(groups), fillOffset: 0 }, ops).authorize,
    );
  });

  it('9. receivers with different offsets place one batch each in its own group (one call each)', () => {
    const groups: [string, number, number][] = [0, 1, 2, 3, 4].map((i) => [`sg-${i}`, 0, 0]);
    const batch = (r: number) => [1, 2, 3].map((n) => allow(v4(10 * r + n), 10, 't'));
    const firstGroups = [0, 1, 2, 3].map((r) =>
      planBatch({ ...state(groups, [], 200), fillOffset: r }, batch(r)).authorize.map((s) => s.groupId),
    );
    expect(firstGroups).toEqual([['sg-0'], ['sg-1'], ['sg-2'], ['sg-3']]);
  });
});

describe('fillOrder / fillOffsetOf', () => {
  it('rotates the groups by the offset and refuses a negative or fractional one', () => {
    expect(fillOrder(['a', 'b', 'c'], 0)).toEqual(['a', 'b', 'c']);
    expect(fillOrder(['a', 'b', 'c'], 1)).toEqual(['b', 'c', 'a']);
    expect(fillOrder(['a', 'b', 'c'], 4)).toEqual(['b', 'c', 'a']);
    expect(fillOrder([], 3)).toEqual([]);
    expect(() => fillOrder(['a'], -1)).toThrow(RangeError);
    expect(() => fillOrder(['a'], 0.5)).toThrow(RangeError);
  });

  it('derives the same offset from the same id, and different ones from different ids', () => {
    expect(fillOffsetOf('0123456789abcdef')).toBe(fillOffsetOf('0123456789abcdef'));
    const offsets = new Set(
      ['a1', 'b2', 'c3', 'd4', 'e5', 'f6', 'g7', 'h8'].map((id) => fillOffsetOf(id) % 5),
    );
    expect(offsets.size).toBeGreaterThan(1);
    for (const id of ['', 'x', 'receiver-with-a-long-id']) {
      expect(Number.isInteger(fillOffsetOf(id))).toBe(true);
      expect(fillOffsetOf(id)).toBeGreaterThanOrEqual(0);
    }
  });
});

describe('slotShareCaps', () => {
  it("gives each receiver whole groups, then an equal run of the groups left over; each group's caps sum to its rules", () => {
    const caps = [0, 1, 2, 3].map((i) => slotShareCaps(5, 200, i, 4));
    expect(caps).toEqual([
      [200, 0, 0, 0, 50],
      [0, 200, 0, 0, 50],
      [0, 0, 200, 0, 50],
      [0, 0, 0, 200, 50],
    ]);
    for (let g = 0; g < 5; g++) expect(caps.reduce((sum, c) => sum + c[g]!, 0)).toBe(200);
    // 16 groups of 62 for 3 receivers: five whole groups each, the last one cut 20 + 21 + 21.
    const sixteen = [0, 1, 2].map((i) => slotShareCaps(16, 62, i, 3));
    expect(sixteen.map((c) => c.slice(0, 15).filter((n) => n === 62).length)).toEqual([5, 5, 5]);
    expect(sixteen.map((c) => c[15])).toEqual([20, 21, 21]);
    expect(sixteen[1]!.slice(5, 10)).toEqual([62, 62, 62, 62, 62]);
    // Fewer groups than receivers: 3 of 2 x 10 (20 slots) share both, 6, 7 and 7, whole slots, nothing lost.
    expect([0, 1, 2].map((i) => slotShareCaps(2, 10, i, 3))).toEqual([
      [6, 0],
      [4, 3],
      [0, 7],
    ]);
    expect(slotShareCaps(3, 60, 0, 1)).toEqual([60, 60, 60]);
  });

  it.each([
    [4, 4],
    [-1, 4],
    [0.5, 4],
    [0, 0],
  ])('rejects index %s of %s (RangeError)', (index, of) => {
    expect(() => slotShareCaps(5, 200, index, of)).toThrow(RangeError);
  });
});
