/**
 * The firewall's placement and call ordering on the EC2 model (bench/support/modelled-ec2.ts: EC2's token
 * buckets, the per-group quota, every call logged with its virtual send and answer times), docs/scaling.md
 * "Staying inside the EC2 API budget":
 *  - receivers with their own fill order (`fillOffset`) make fewer calls for the same load than receivers all
 *    filling the groups in the same order, and never race each other for a group's last slots;
 *  - a batch's authorizes into slots free now are sent with its revokes, not after them; only an allow that
 *    needs the slot a revoke frees waits for that revoke;
 *  - a revoke that arrives while its allow's flush is still running (the allow then queued for a slot) keeps that
 *    allow from ever being opened;
 *  - a grant that waits for a slot past `maxSlotWaitMs` (DEFAULT_SLOT_WAIT_MS) is refused and never opened;
 *  - receivers keeping to their shares of the slots (`slotShare`) never send a call into a group another filled,
 *    where receivers without shares do; a share split over two groups is kept in both; without a share again, the
 *    receiver takes any free slot.
 * Virtual time only: no real sleeps, no wall-clock asserts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { deviceAddress, seededRandom } from '../../../bench/fleet/fleet-model.ts';
import { ModelledEc2 } from '../../../bench/support/modelled-ec2.ts';
import { Ec2Pacing } from '../../../functions/aws/call-pacer.ts';
import { isThrottling } from '../../../functions/aws/retry.ts';
import {
  DEFAULT_SLOT_WAIT_MS,
  SecurityGroupFirewall,
} from '../../../functions/aws/security-group-firewall.ts';
import type { SlotShare } from '../../../functions/aws/sg-plan.ts';
import { deviceGrant } from '../../support/device-grant.ts';
import { VirtualTime } from '../../support/virtual-time.ts';

const T0 = 1_000_000;
const LATENCY_MS = 100;

let ec2: ModelledEc2 | undefined;
afterEach(() => {
  ec2?.restore();
  ec2 = undefined;
});

function firewallOn(
  model: ModelledEc2,
  time: VirtualTime,
  groupIds: readonly string[],
  rulesPerGroup: number,
  options: {
    fillOffset?: number;
    slotShare?: SlotShare;
    random?: () => number;
    coalesceWindowMs?: number;
  } = {},
): SecurityGroupFirewall {
  return new SecurityGroupFirewall({
    ec2: model.client,
    securityGroupIds: groupIds,
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: time,
    timers: time,
    retry: {
      maxAttempts: 20,
      baseDelayMs: 200,
      maxDelayMs: 20_000,
      sleep: (ms) => time.sleep(ms),
      random: options.random ?? (() => 0.5),
    },
    metrics: { put() {} },
    rulesPerGroup,
    maxUnsentRules: 10_000,
    coalesceWindowMs: options.coalesceWindowMs ?? 20,
    pacing: new Ec2Pacing({ clock: time, sleep: (ms) => time.sleep(ms), isThrottling }),
    ...(options.fillOffset === undefined ? {} : { fillOffset: options.fillOffset }),
    ...(options.slotShare === undefined ? {} : { slotShare: options.slotShare }),
  });
}

const grantFor = deviceGrant;

/**
 * Four paced receivers, 2,000 grants over 20 s (500 each), every rule revoked 2 s after it opened: about 300 rules
 * open at once, more than one group holds (200), but fewer than 200 per receiver.
 */
async function burst(offsets: 'shared' | 'own') {
  const time = new VirtualTime(T0);
  const groupIds = ['sg-1', 'sg-2', 'sg-3', 'sg-4', 'sg-5'];
  const model = new ModelledEc2({
    clock: time,
    timers: time,
    groupIds,
    rulesPerGroup: 200,
    latencyMs: LATENCY_MS,
  });
  ec2 = model;
  const random = seededRandom(11);
  const firewalls = [0, 1, 2, 3].map((r) =>
    firewallOn(model, time, groupIds, 200, {
      ...(offsets === 'own' ? { fillOffset: r } : {}),
      random,
      coalesceWindowMs: 500,
    }),
  );
  const outcomes: string[] = [];
  for (let i = 0; i < 2000; i++) {
    time.setTimeout(
      () => {
        const grant = grantFor(i, time.now());
        const firewall = firewalls[i % 4]!;
        firewall.allow([grant]).then(
          () =>
            time.setTimeout(() => {
              firewall.revoke([grant]).then(
                () => outcomes.push('closed'),
                (error: Error) => outcomes.push(`revoke: ${error.name}`),
              );
            }, 2000),
          (error: Error) => outcomes.push(`allow: ${error.name} ${error.message}`),
        );
      },
      Math.floor((i / 2000) * 20_000),
    );
  }
  await time.run(T0 + 90_000, { inFlight: () => 0, quantumMs: 10 });
  const counts = model.counts();
  const authorize = counts.AuthorizeSecurityGroupIngress!;
  const revoke = counts.RevokeSecurityGroupIngress!;
  const okAuthorize = model
    .callLog()
    .filter((c) => c.action === 'AuthorizeSecurityGroupIngress' && c.outcome === 'ok');
  return {
    outcomes,
    authorize,
    revoke,
    describes: counts.DescribeSecurityGroups?.calls ?? 0,
    rangesPerAuthorize: model.applied.authorized / okAuthorize.length,
    rulesNow: model.rules().now,
    applied: model.applied,
  };
}

describe("SecurityGroupFirewall: a receiver's own fill order (fillOffset) on the EC2 model", () => {
  it('four receivers with offsets 0..3 open and close the same load with no quota races and no more Authorize calls', async () => {
    const shared = await burst('shared');
    ec2?.restore();
    const own = await burst('own');
    for (const run of [shared, own]) {
      expect(run.outcomes.filter((o) => o !== 'closed')).toEqual([]);
      expect(run.outcomes).toHaveLength(2000);
      expect(run.applied).toEqual({ authorized: 2000, revoked: 2000 });
      expect(run.rulesNow).toBe(0);
    }
    console.log(
      `fill order shared / own: Authorize ${JSON.stringify(shared.authorize)} / ${JSON.stringify(own.authorize)}, ` +
        `Revoke ${shared.revoke.calls} / ${own.revoke.calls}, Describe ${shared.describes} / ${own.describes}, ` +
        `ranges per Authorize ${shared.rangesPerAuthorize.toFixed(1)} / ${own.rangesPerAuthorize.toFixed(1)}`,
    );
    // Sharing one order, receivers race for the same group's last slots; with their own, none does.
    expect(shared.authorize.errors.RulesPerSecurityGroupLimitExceeded ?? 0).toBeGreaterThan(0);
    expect(own.authorize.errors.RulesPerSecurityGroupLimitExceeded ?? 0).toBe(0);
    expect(own.authorize.errors['InvalidPermission.Duplicate'] ?? 0).toBe(0);
    expect(own.authorize.calls).toBeLessThanOrEqual(shared.authorize.calls);
  }, 120_000);

  it('one receiver: offset 0 and no offset place identically (the configured order)', async () => {
    const placed: string[][] = [];
    for (const fillOffset of [undefined, 0]) {
      const time = new VirtualTime(T0);
      const model = new ModelledEc2({
        clock: time,
        timers: time,
        groupIds: ['sg-a', 'sg-b'],
        rulesPerGroup: 3,
      });
      ec2 = model;
      const firewall = firewallOn(
        model,
        time,
        ['sg-a', 'sg-b'],
        3,
        fillOffset === undefined ? {} : { fillOffset },
      );
      const opened = firewall.allow([1, 2, 3, 4, 5].map((i) => grantFor(i, T0)));
      await time.advance(1000);
      await opened;
      placed.push(firewall.openRules().map((r) => `${r.groupId} ${r.spec.cidr}`));
      model.restore();
    }
    expect(placed[0]).toHaveLength(5);
    expect(placed[0]!.filter((p) => p.startsWith('sg-a'))).toHaveLength(3);
    expect(placed[1]).toEqual(placed[0]);
  });
});

describe('SecurityGroupFirewall: authorizes do not wait for revokes that free no slot they need', () => {
  /** One receiver whose first group (sg-a, 2 rules) is full with grants 1 and 2. */
  async function fullFirstGroup(groupIds: string[]) {
    const time = new VirtualTime(T0);
    const model = new ModelledEc2({
      clock: time,
      timers: time,
      groupIds,
      rulesPerGroup: 2,
      latencyMs: LATENCY_MS,
    });
    ec2 = model;
    const firewall = firewallOn(model, time, groupIds, 2);
    const first = [grantFor(1, T0), grantFor(2, T0)];
    const opened = firewall.allow(first);
    await time.advance(1000);
    await opened;
    expect(firewall.openRules().map((r) => r.groupId)).toEqual(['sg-a', 'sg-a']);
    return { time, model, firewall, first, before: model.callLog().length };
  }

  it('a batch revoking in sg-a and opening new rules with room in sg-b sends the Authorize with the Revoke', async () => {
    const { time, model, firewall, first, before } = await fullFirstGroup(['sg-a', 'sg-b']);
    // One batch: the two revokes and two new allows arrive within one coalescing window.
    const revoked = firewall.revoke(first);
    const opened = firewall.allow([grantFor(3, time.now()), grantFor(4, time.now())]);
    await time.advance(1000);
    await Promise.all([revoked, opened]);
    const calls = model.callLog().slice(before);
    const revoke = calls.filter((c) => c.action === 'RevokeSecurityGroupIngress');
    const authorize = calls.filter((c) => c.action === 'AuthorizeSecurityGroupIngress');
    expect(revoke.map((c) => [c.groupId, c.ranges, c.outcome])).toEqual([['sg-a', 2, 'ok']]);
    expect(authorize.map((c) => [c.groupId, c.ranges, c.outcome])).toEqual([['sg-b', 2, 'ok']]);
    // Sent together: the Authorize went out before the Revoke was answered (both take LATENCY_MS).
    expect(authorize[0]!.sentAt).toBe(revoke[0]!.sentAt);
    expect(authorize[0]!.sentAt).toBeLessThan(revoke[0]!.answeredAt!);
    expect(firewall.openRules().map((r) => `${r.groupId} ${r.spec.cidr}`)).toEqual([
      `sg-b ${deviceAddress(3)}/32`,
      `sg-b ${deviceAddress(4)}/32`,
    ]);
  });

  it('an allow that needs the slot a revoke frees is sent after that revoke is answered, in the freed group', async () => {
    const { time, model, firewall, first, before } = await fullFirstGroup(['sg-a']);
    const revoked = firewall.revoke([first[0]!]);
    const opened = firewall.allow([grantFor(3, time.now())]);
    await time.advance(1000);
    await Promise.all([revoked, opened]);
    const calls = model.callLog().slice(before);
    expect(calls.map((c) => [c.action, c.groupId, c.ranges, c.outcome])).toEqual([
      ['RevokeSecurityGroupIngress', 'sg-a', 1, 'ok'],
      ['AuthorizeSecurityGroupIngress', 'sg-a', 1, 'ok'],
    ]);
    expect(calls[1]!.sentAt).toBeGreaterThanOrEqual(calls[0]!.answeredAt!);
    expect(firewall.queueDepth).toBe(0);
    expect(model.rules().now).toBe(2);
  });

  it('with every group full and nothing revoked the allow waits in the queue, then opens after a later revoke', async () => {
    const { time, model, firewall, first } = await fullFirstGroup(['sg-a']);
    const opened = firewall.allow([grantFor(3, time.now())]);
    await time.advance(100);
    expect(firewall.queueDepth).toBe(1);
    const revoked = firewall.revoke([first[1]!]);
    await time.advance(1000);
    await Promise.all([revoked, opened]);
    expect(firewall.queueDepth).toBe(0);
    expect(model.hasRule(`${deviceAddress(3)}/32`)).toBe(true);
    expect(model.hasRule(`${deviceAddress(2)}/32`)).toBe(false);
  });

  it('an allow queued for a slot past the wait limit is refused and never opened, though a slot frees later', async () => {
    const { time, model, firewall, first } = await fullFirstGroup(['sg-a']);
    const outcome = firewall.allow([grantFor(3, time.now())]).then(
      () => 'opened',
      (error: Error) => `${error.name}: ${error.message}`,
    );
    await time.advance(100);
    expect(firewall.queueDepth).toBe(1);
    await time.advance(DEFAULT_SLOT_WAIT_MS + 5_000); // the queue is looked at again every 5 s
    expect(await outcome).toMatch(/^GrantNotOpenedError: .*more than 2000 ms: past its device's early dials/);
    expect(firewall.queueDepth).toBe(0);
    const revoked = firewall.revoke([first[1]!]);
    await time.advance(1000);
    await revoked;
    expect(model.hasRule(`${deviceAddress(3)}/32`)).toBe(false);
  });
});

describe('SecurityGroupFirewall: a revoke overtaking its allow on the way to the queue', () => {
  it('the allow queued by a flush that ran while its revoke waited is never opened, even once a slot frees', async () => {
    const time = new VirtualTime(T0);
    const model = new ModelledEc2({
      clock: time,
      timers: time,
      groupIds: ['sg-a'],
      rulesPerGroup: 1,
      latencyMs: LATENCY_MS,
    });
    ec2 = model;
    const firewall = firewallOn(model, time, ['sg-a'], 1);
    const first = grantFor(1, T0);
    const openedFirst = firewall.allow([first]);
    await time.advance(1000);
    await openedFirst;
    // One batch: extend grant 1 (an Update call of LATENCY_MS) and grant 2, which finds no slot.
    const later = { ...first, expiresAt: first.expiresAt + 30_000 };
    const extended = firewall.allow([later]);
    const second = grantFor(2, time.now());
    const outcome = firewall.allow([second]).then(
      () => 'opened',
      (error: Error) => error.name,
    );
    await time.advance(20 + LATENCY_MS / 2); // the batch's Update is in flight: grant 2 is not queued yet
    expect(firewall.queueDepth).toBe(0);
    const revokedSecond = firewall.revoke([second]);
    await time.advance(1000);
    await Promise.all([extended, revokedSecond]);
    expect(await outcome).toBe('GrantNotOpenedError');
    expect(firewall.queueDepth).toBe(0);
    // The slot frees: nothing is waiting for it, so grant 2's rule never appears.
    const revokedFirst = firewall.revoke([later]);
    await time.advance(10_000);
    await revokedFirst;
    expect(model.hasRule(`${deviceAddress(2)}/32`)).toBe(false);
    expect(model.rules().now).toBe(0);
  });
});

describe('SecurityGroupFirewall: each receiver its share of the slots (slotShare) on the EC2 model', () => {
  const groupIds = ['sg-a', 'sg-b'];
  const setUp = () => {
    const time = new VirtualTime(T0);
    const model = new ModelledEc2({
      clock: time,
      timers: time,
      groupIds,
      rulesPerGroup: 10,
      latencyMs: LATENCY_MS,
    });
    ec2 = model;
    return { time, model };
  };
  const full = (model: ModelledEc2) =>
    model.counts().AuthorizeSecurityGroupIngress?.errors.RulesPerSecurityGroupLimitExceeded ?? 0;
  /** The outcome of an allow, its rejection handled at once (it may come while time advances). */
  const outcome = (p: Promise<void>) =>
    p.then(
      () => 'opened',
      (error: Error) => error.name,
    );
  const settle = (outcomes: readonly Promise<string>[]) => Promise.all(outcomes);
  const groupsOf = (firewall: SecurityGroupFirewall) =>
    firewall
      .openRules()
      .map((rule) => rule.groupId)
      .sort();

  it.each([
    ['shares 0 and 1 of 2: no call finds a group full, each receiver in its own group', true],
    [
      'no shares, own fill offsets (the default): spilling into the other group, calls find it full and slots go unused',
      false,
    ],
  ])('two receivers, 15 grants each at once into 2 groups of 10 rules: %s', async (_, shares) => {
    const { time, model } = setUp();
    const [r0, r1] = [0, 1].map((r) =>
      firewallOn(model, time, groupIds, 10, shares ? { slotShare: { index: r, of: 2 } } : { fillOffset: r }),
    ) as [SecurityGroupFirewall, SecurityGroupFirewall];
    const asked = [
      ...Array.from({ length: 15 }, (_, i) => outcome(r0.allow([grantFor(i, T0)]))),
      ...Array.from({ length: 15 }, (_, i) => outcome(r1.allow([grantFor(100 + i, T0)]))),
    ];
    await time.advance(DEFAULT_SLOT_WAIT_MS + 5000);
    const outcomes = await settle(asked);
    const opened = outcomes.filter((o) => o === 'opened').length;
    expect(model.rules().now).toBe(opened);
    if (shares) {
      expect(opened).toBe(20); // every slot used
      expect(full(model)).toBe(0);
      expect(groupsOf(r0)).toEqual(Array(10).fill('sg-a'));
      expect(groupsOf(r1)).toEqual(Array(10).fill('sg-b'));
      expect(outcomes.filter((o) => o !== 'opened')).toEqual(Array(10).fill('GrantNotOpenedError'));
    } else {
      // Calls answered full are retried elsewhere, found full again, and grants run out of their slot wait.
      expect(full(model)).toBeGreaterThan(0);
      expect(opened).toBeLessThan(20);
    }
  });

  it('a share split over two groups (share 1 of 3 on 2 x 10: 4 + 3 slots) is kept in both; without it, any free slot', async () => {
    const { time, model } = setUp();
    const firewall = firewallOn(model, time, groupIds, 10, { slotShare: { index: 1, of: 3 } });
    const asked = Array.from({ length: 10 }, (_, i) => outcome(firewall.allow([grantFor(i, T0)])));
    await time.advance(DEFAULT_SLOT_WAIT_MS + 5000);
    const outcomes = await settle(asked);
    // 13 slots are free, but the share holds 7: the other 3 grants wait for a slot of the share, then are refused.
    expect(outcomes.filter((o) => o === 'opened')).toHaveLength(7);
    expect(groupsOf(firewall)).toEqual(['sg-a', 'sg-a', 'sg-a', 'sg-a', 'sg-b', 'sg-b', 'sg-b']);
    // A revoked rule frees a slot of the share: the next grant takes it.
    const revoked = firewall.revoke([grantFor(0, T0)]);
    await time.advance(1000);
    await revoked;
    const next = outcome(firewall.allow([grantFor(20, time.now())]));
    await time.advance(3000);
    expect(await settle([next])).toEqual(['opened']);
    expect(groupsOf(firewall).filter((g) => g === 'sg-a')).toHaveLength(4);
    // Without a share (the lease lost): the free slots of both groups are the receiver's again.
    firewall.setSlotShare(undefined);
    const more = Array.from({ length: 4 }, (_, i) => outcome(firewall.allow([grantFor(30 + i, time.now())])));
    await time.advance(3000);
    expect(await settle(more)).toEqual(Array(4).fill('opened'));
    expect(model.rules().now).toBe(11);
    expect(full(model)).toBe(0);
  });
});
