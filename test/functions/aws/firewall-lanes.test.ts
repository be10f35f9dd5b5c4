/**
 * The firewall's two lanes on the EC2 model (bench/support/modelled-ec2.ts, every call logged with its virtual send
 * and answer times), docs/scaling.md "Staying inside the EC2 API budget":
 *  - a revoke is sent while an Authorize still waits for the pacer: closing never queues behind opening;
 *  - an allow of a rule whose revoke is in flight waits for that revoke and then opens the rule again (never takes
 *    the vanishing rule for open), and a revoke of a rule whose Authorize is in flight waits for it and closes it;
 *  - a describe whose answer left before an Authorize was answered does not drop that rule from the picture;
 *  - a grant still waiting for the pacer when its wait runs out is refused and never sent;
 *  - with pacing, the allows waiting to be sent are bounded by the full calls the Authorize pacer sends in 0.5 s;
 *  - each lane gathers for its own window (`closeWindowMs` for the closes lane);
 *  - with `contendedMs`, a spill group EC2 answered full takes no new rules for that long, although a describe shows
 *    room; the receiver's first group always does.
 * Virtual time only: no real sleeps, no wall-clock asserts.
 */
import type { EC2Client } from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { deviceAddress } from '../../../bench/fleet/fleet-model.ts';
import { ModelledEc2 } from '../../../bench/support/modelled-ec2.ts';
import { type AimdPacerOptions, EC2_PACING, Ec2Pacing } from '../../../functions/aws/call-pacer.ts';
import { isThrottling } from '../../../functions/aws/retry.ts';
import { SecurityGroupFirewall } from '../../../functions/aws/security-group-firewall.ts';
import { deviceGrant } from '../../support/device-grant.ts';
import { VirtualTime } from '../../support/virtual-time.ts';

const T0 = 1_000_000;
const LATENCY_MS = 100;
const WINDOW_MS = 20;
const AUTHORIZE = 'AuthorizeSecurityGroupIngress';
const CONTENDED_MS = 10_000;
const REVOKE = 'RevokeSecurityGroupIngress';

let ec2: ModelledEc2 | undefined;
afterEach(() => {
  ec2?.restore();
  ec2 = undefined;
});

/** One Authorize at once, then one every 5 s: the second Authorize waits about 5 s for its turn. */
const SLOW_AUTHORIZE: AimdPacerOptions = {
  ...EC2_PACING[AUTHORIZE]!,
  initialRate: 0.2,
  maxRate: 0.2,
  minRate: 0.2,
  burst: 1,
};

function setUp(
  options: {
    authorize?: AimdPacerOptions;
    maxWaitMs?: number;
    maxBatchRules?: number;
    coalesceWindowMs?: number;
    closeWindowMs?: number;
    contendedMs?: number;
    groupIds?: string[];
    client?: (model: ModelledEc2, time: VirtualTime) => EC2Client;
  } = {},
) {
  const time = new VirtualTime(T0);
  const groupIds = options.groupIds ?? ['sg-a'];
  const model = new ModelledEc2({
    clock: time,
    timers: time,
    groupIds,
    rulesPerGroup: 200,
    latencyMs: LATENCY_MS,
  });
  ec2 = model;
  const firewall = new SecurityGroupFirewall({
    ec2: options.client?.(model, time) ?? model.client,
    securityGroupIds: groupIds,
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: time,
    timers: time,
    retry: {
      maxAttempts: 5,
      baseDelayMs: 200,
      maxDelayMs: 2000,
      sleep: (ms) => time.sleep(ms),
      random: () => 0.5,
    },
    metrics: { put() {} },
    rulesPerGroup: 200,
    maxUnsentRules: 10_000,
    coalesceWindowMs: options.coalesceWindowMs ?? WINDOW_MS,
    ...(options.closeWindowMs === undefined ? {} : { closeWindowMs: options.closeWindowMs }),
    ...(options.maxWaitMs === undefined ? {} : { maxWaitMs: options.maxWaitMs }),
    ...(options.contendedMs === undefined ? {} : { contendedMs: options.contendedMs }),
    ...(options.maxBatchRules === undefined ? {} : { maxBatchRules: options.maxBatchRules }),
    pacing: new Ec2Pacing({
      clock: time,
      sleep: (ms) => time.sleep(ms),
      isThrottling,
      actions: {
        ...EC2_PACING,
        ...(options.authorize === undefined ? {} : { [AUTHORIZE]: options.authorize }),
      },
    }),
  });
  const calls = (action: string) => model.callLog().filter((c) => c.action === action);
  return { time, model, firewall, calls };
}

const grantFor = deviceGrant;

/** The calls sent after the first `before` ones, as [action, outcome]. */
const callsSince = (model: ModelledEc2, before: number) =>
  model
    .callLog()
    .slice(before)
    .map((c) => [c.action, c.outcome]);

const outcomeOf = (promise: Promise<void>) =>
  promise.then(
    () => 'opened',
    (error: Error) => `${error.name}: ${error.message}`,
  );

describe('SecurityGroupFirewall: opens and closes in two lanes', () => {
  it('sends a revoke while an Authorize still waits for its pacer turn', async () => {
    const { time, model, firewall, calls } = setUp({ authorize: SLOW_AUTHORIZE });
    const first = grantFor(1, T0);
    const openedFirst = firewall.allow([first]);
    await time.advance(1000);
    await openedFirst;
    // The second Authorize waits about 5 s for the pacer; the revoke of the first rule must not wait with it.
    const second = firewall.allow([grantFor(2, time.now())]);
    await time.advance(100);
    const revoked = firewall.revoke([first]);
    await time.advance(1000);
    await revoked;
    expect(model.hasRule(`${deviceAddress(1)}/32`)).toBe(false);
    expect(calls(AUTHORIZE)).toHaveLength(1);
    await time.advance(6000);
    await second;
    const [, secondAuthorize] = calls(AUTHORIZE);
    expect(calls(REVOKE)[0]!.answeredAt).toBeLessThan(secondAuthorize!.sentAt);
    expect(model.hasRule(`${deviceAddress(2)}/32`)).toBe(true);
  });

  it('an allow of a rule whose revoke is in flight waits for it, then opens the rule again', async () => {
    const { time, model, firewall, calls } = setUp();
    const grant = grantFor(1, T0);
    const opened = firewall.allow([grant]);
    await time.advance(1000);
    await opened;
    const before = model.callLog().length;
    const revoked = firewall.revoke([grant]);
    await time.advance(WINDOW_MS + LATENCY_MS / 2); // the Revoke is in flight
    expect(calls(REVOKE)).toHaveLength(1);
    expect(calls(REVOKE)[0]!.answeredAt).toBeUndefined();
    // The same grant again (same expiry): planned against the picture while the rule vanishes, it would be a no-op.
    const again = outcomeOf(firewall.allow([grant]));
    await time.advance(1000);
    await revoked;
    expect(await again).toBe('opened');
    expect(callsSince(model, before)).toEqual([
      [REVOKE, 'ok'],
      [AUTHORIZE, 'ok'],
    ]);
    expect(model.hasRule(`${deviceAddress(1)}/32`)).toBe(true);
    expect(firewall.openRules().map((r) => r.spec.cidr)).toEqual([`${deviceAddress(1)}/32`]);
  });

  it('a revoke of a rule whose Authorize is in flight waits for it, then closes the rule', async () => {
    const { time, model, firewall } = setUp();
    const warm = firewall.allow([grantFor(9, T0)]); // the first flush describes the group
    await time.advance(1000);
    await warm;
    const before = model.callLog().length;
    const grant = grantFor(1, time.now());
    const opened = firewall.allow([grant]);
    await time.advance(WINDOW_MS + LATENCY_MS / 2); // the Authorize is in flight
    const revoked = firewall.revoke([grant]);
    await time.advance(1000);
    await Promise.all([opened, revoked]);
    expect(callsSince(model, before)).toEqual([
      [AUTHORIZE, 'ok'],
      [REVOKE, 'ok'],
    ]);
    expect(model.hasRule(`${deviceAddress(1)}/32`)).toBe(false);
    expect(firewall.openRules().map((r) => r.spec.cidr)).toEqual([`${deviceAddress(9)}/32`]);
  });

  it('keeps a rule answered while a describe was under way whose answer predates it', async () => {
    // Describe answers arrive 400 ms after the model answered them: a snapshot older than the writes around it.
    const slowDescribe = (model: ModelledEc2, time: VirtualTime): EC2Client =>
      ({
        send: async (command: { constructor: { name: string } }) => {
          const answer = await (model.client.send as (c: unknown) => Promise<unknown>)(command);
          if (command.constructor.name === 'DescribeSecurityGroupsCommand') await time.sleep(400);
          return answer;
        },
      }) as unknown as EC2Client;
    const { time, model, firewall } = setUp({ client: slowDescribe });
    const warm = firewall.allow([grantFor(9, T0)]);
    await time.advance(2000);
    await warm;
    // A revoke of a rule this firewall does not know makes its lane describe the group again...
    const unknown = firewall.revoke([grantFor(5, time.now())]);
    await time.advance(WINDOW_MS + 10);
    // ...and while that describe is under way, the opens lane opens a new rule (answered before the snapshot lands).
    const opened = firewall.allow([grantFor(1, time.now())]);
    await time.advance(2000);
    await Promise.all([unknown, opened]);
    expect(model.hasRule(`${deviceAddress(1)}/32`)).toBe(true);
    expect(
      firewall
        .openRules()
        .map((r) => r.spec.cidr)
        .sort(),
    ).toEqual([`${deviceAddress(1)}/32`, `${deviceAddress(9)}/32`].sort());
    // The picture's count is right too: revoking both leaves the group empty with no describe needed.
    const describesBefore = model.counts().DescribeSecurityGroups?.calls ?? 0;
    const closed = firewall.revoke([grantFor(1, time.now()), grantFor(9, time.now())]);
    await time.advance(2000);
    await closed;
    expect(model.rules().now).toBe(0);
    expect(model.counts().DescribeSecurityGroups?.calls ?? 0).toBe(describesBefore);
  });

  it('refuses a grant whose wait runs out while its Authorize waits for the pacer, and never sends it', async () => {
    const { time, model, firewall, calls } = setUp({ authorize: SLOW_AUTHORIZE, maxWaitMs: 2000 });
    const first = firewall.allow([grantFor(1, T0)]);
    await time.advance(1000);
    await first;
    const late = outcomeOf(firewall.allow([grantFor(2, time.now())]));
    await time.advance(10_000);
    expect(await late).toMatch(/^GrantNotOpenedError: .*waited \d+ ms .*to be sent/);
    expect(calls(AUTHORIZE)).toHaveLength(1);
    expect(model.hasRule(`${deviceAddress(2)}/32`)).toBe(false);
  });

  it('gathers revokes for the closes window and allows for the opens window', async () => {
    const { time, firewall, calls } = setUp({ coalesceWindowMs: 1000, closeWindowMs: 250 });
    const grant = grantFor(1, T0);
    const opened = firewall.allow([grant]);
    await time.advance(2000);
    await opened;
    expect(calls(AUTHORIZE)[0]!.sentAt).toBe(T0 + 1000 + LATENCY_MS); // the first flush describes the group first
    const askedAt = time.now();
    const revoked = firewall.revoke([grant]);
    await time.advance(1000);
    await revoked;
    expect(calls(REVOKE)[0]!.sentAt).toBe(askedAt + 250);
  });

  it('bounds the allows waiting to be sent by the full calls the Authorize pacer sends in 0.5 s', async () => {
    // 4 Authorize calls per second of 10 ranges each: 20 rules may wait.
    const { time, firewall } = setUp({
      authorize: { ...SLOW_AUTHORIZE, initialRate: 4, maxRate: 4, minRate: 4 },
      maxBatchRules: 10,
    });
    const outcomes = Array.from({ length: 21 }, (_, i) => outcomeOf(firewall.allow([grantFor(i, T0)])));
    expect(firewall.unsentDepth).toBe(20);
    await time.advance(5000);
    const results = await Promise.all(outcomes);
    expect(results.slice(0, 20)).toEqual(Array(20).fill('opened'));
    expect(results[20]).toMatch(/^GrantQueueFullError: 20 rules already wait to be sent to EC2 \(at most 20/);
  });

  it.each([
    ['a spill group, for contendedMs', true, CONTENDED_MS, 'sg-b'],
    ['a spill group, not by default (off)', true, undefined, 'sg-a'],
    ["never the receiver's first group", false, CONTENDED_MS, 'sg-a'],
  ])(
    'keeps new rules out of a group EC2 answered full although a describe shows room: %s',
    async (_, spill, contendedMs, third) => {
      // With `spill`, the receiver's first group (sg-own) is full from the start: sg-a and sg-b are spill groups.
      const { time, model, firewall } = setUp({
        groupIds: spill ? ['sg-own', 'sg-a', 'sg-b'] : ['sg-a', 'sg-b'],
        ...(contendedMs === undefined ? {} : { contendedMs }),
      });
      if (spill) model.fill('sg-own', 200);
      const groupOf = (i: number) =>
        firewall.openRules().find((rule) => rule.spec.cidr === `${deviceAddress(i)}/32`)?.groupId;
      const opened = firewall.allow([grantFor(1, T0)]);
      await time.advance(1000);
      await opened;
      expect(groupOf(1)).toBe('sg-a');
      // Another writer fills sg-a behind this receiver's picture: EC2 answers the next Authorize there "full".
      model.fill('sg-a', 199);
      const second = firewall.allow([grantFor(2, time.now())]);
      await time.advance(2000);
      await second;
      expect(groupOf(2)).toBe('sg-b');
      expect(model.counts().AuthorizeSecurityGroupIngress!.errors.RulesPerSecurityGroupLimitExceeded).toBe(1);
      const fullAt = time.now();
      // The other writer empties sg-a again; a revoke of a rule this receiver does not know makes it describe both.
      model.unfill('sg-a');
      const describes = model.counts().DescribeSecurityGroups?.calls ?? 0;
      const unknown = firewall.revoke([grantFor(99, time.now())]);
      await time.advance(1000);
      await unknown;
      expect(model.counts().DescribeSecurityGroups!.calls).toBeGreaterThan(describes);
      const third_ = firewall.allow([grantFor(3, time.now())]);
      await time.advance(1000);
      await third_;
      expect(time.now()).toBeLessThan(fullAt + CONTENDED_MS);
      expect(groupOf(3)).toBe(third);
      // Once the time is over, sg-a takes rules again (the first group with room).
      await time.advance(fullAt + CONTENDED_MS - time.now());
      const fourth = firewall.allow([grantFor(4, time.now())]);
      await time.advance(1000);
      await fourth;
      expect(groupOf(4)).toBe('sg-a');
      expect(model.counts().AuthorizeSecurityGroupIngress!.errors.RulesPerSecurityGroupLimitExceeded).toBe(1);
    },
  );
});
