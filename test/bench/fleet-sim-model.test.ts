/**
 * The fleet simulation's models: the EC2 token buckets and security-group semantics the figures in
 * docs/scaling.md rest on (bench/support/modelled-ec2.ts, on the receiver's token bucket), the virtual clock
 * (test/support/virtual-time.ts), the seeded schedule and the devices' attempts (bench/fleet/). Virtual time only:
 * no real sleeps.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  DescribeSecurityGroupsCommand,
  RevokeSecurityGroupIngressCommand,
} from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { connectDelayMs, DEFAULT_CONNECT_RANGE } from '../../bench/fleet/connect-model.ts';
import { type Attempt, DeviceAttempts } from '../../bench/fleet/device-attempts.ts';
import { deviceAddress, fleetSchedule, seededRandom } from '../../bench/fleet/fleet-model.ts';
import { TimerHeap } from '../../bench/fleet/timer-heap.ts';
import { EC2_BUCKETS, ModelledEc2 } from '../../bench/support/modelled-ec2.ts';
import { Ec2Pacing } from '../../functions/aws/call-pacer.ts';
import { awsErrorCode } from '../../functions/aws/errors.ts';
import { isThrottling } from '../../functions/aws/retry.ts';
import { DEFAULT_GRANT_WAIT_MS, SecurityGroupFirewall } from '../../functions/aws/security-group-firewall.ts';
import { TokenBucketRateLimiter } from '../../functions/receiver/rate-limiter.ts';
import { VirtualTime } from '../support/virtual-time.ts';

const idle = { inFlight: () => 0, quantumMs: 0 };

const permission = (cidrs: string[]) => ({
  IpPermissions: [
    { IpProtocol: 'tcp', FromPort: 8883, ToPort: 8883, IpRanges: cidrs.map((CidrIp) => ({ CidrIp })) },
  ],
});

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'ok';
  } catch (error) {
    return awsErrorCode(error);
  }
}

describe("EC2 throttling (the Authorize bucket on the receiver's token bucket)", () => {
  it('1. gives 50 at once, then refuses, then 5 per second', () => {
    let now = 0;
    const bucket = new TokenBucketRateLimiter({
      ...EC2_BUCKETS.AuthorizeSecurityGroupIngress,
      clock: { now: () => now },
    });
    const take = () => bucket.take('AuthorizeSecurityGroupIngress');
    const burst = Array.from({ length: 60 }, take).filter(Boolean).length;
    expect(burst).toBe(50);
    now = 1000;
    expect(Array.from({ length: 10 }, take).filter(Boolean).length).toBe(5);
    now = 1_000_000;
    expect(Array.from({ length: 60 }, take).filter(Boolean).length).toBe(50);
  });
});

describe('VirtualTime', () => {
  it('2. fires timers in due order (ties in setting order) and ends at `until`', async () => {
    const time = new VirtualTime(1000);
    const fired: string[] = [];
    time.setTimeout(() => fired.push(`b@${time.now()}`), 20);
    time.setTimeout(() => fired.push(`a@${time.now()}`), 10);
    time.setTimeout(() => fired.push(`c@${time.now()}`), 20);
    const cancelled = time.setTimeout(() => fired.push('never'), 5);
    time.clearTimeout(cancelled);
    time.setTimeout(() => fired.push('late'), 100);
    await time.run(1050, idle);
    expect(fired).toEqual(['a@1010', 'b@1020', 'c@1020']);
    expect(time.now()).toBe(1050);
  });
});

describe('ModelledEc2 (security groups as EC2 answers them)', () => {
  const models: ModelledEc2[] = [];
  afterEach(() => {
    for (const m of models.splice(0)) m.restore();
  });

  function model(rulesPerGroup = 2) {
    const time = new VirtualTime(0);
    const ec2 = new ModelledEc2({
      clock: time,
      timers: time,
      groupIds: ['sg-1'],
      rulesPerGroup,
      latencyMs: 100,
    });
    models.push(ec2);
    const send = (command: AuthorizeSecurityGroupIngressCommand | RevokeSecurityGroupIngressCommand) => {
      const answer: Promise<unknown> = ec2.client.send(command);
      void answer.catch(() => undefined);
      return answer;
    };
    return { time, ec2, send };
  }

  it('3. Duplicate, quota and NotFound change nothing; a call answers after its latency', async () => {
    const { time, ec2, send } = model();
    const first = send(
      new AuthorizeSecurityGroupIngressCommand({ GroupId: 'sg-1', ...permission(['198.51.100.1/32']) }),
    );
    await time.run(99, idle);
    expect(ec2.rules().now).toBe(0);
    await time.run(100, idle);
    expect(await codeOf(first)).toBe('ok');
    const duplicate = send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: 'sg-1',
        ...permission(['198.51.100.2/32', '198.51.100.1/32']),
      }),
    );
    const twice = send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: 'sg-1',
        ...permission(['198.51.100.3/32', '198.51.100.3/32']),
      }),
    );
    const full = send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: 'sg-1',
        ...permission(['198.51.100.4/32', '198.51.100.5/32']),
      }),
    );
    const missing = send(
      new RevokeSecurityGroupIngressCommand({
        GroupId: 'sg-1',
        ...permission(['198.51.100.1/32', '198.51.100.9/32']),
      }),
    );
    await time.run(1000, idle);
    expect(await Promise.all([duplicate, twice, full, missing].map(codeOf))).toEqual([
      'InvalidPermission.Duplicate',
      'InvalidParameterValue',
      'RulesPerSecurityGroupLimitExceeded',
      'InvalidPermission.NotFound',
    ]);
    expect(ec2.cidrs()).toEqual(['198.51.100.1/32']);
    const described = ec2.client.send(new DescribeSecurityGroupsCommand({ GroupIds: ['sg-1'] }));
    await time.run(2000, idle);
    expect(await described).toMatchObject({
      SecurityGroups: [
        { GroupId: 'sg-1', IpPermissions: [{ FromPort: 8883, IpRanges: [{ CidrIp: '198.51.100.1/32' }] }] },
      ],
    });
  });

  it('4. the 51st Authorize within a second is RequestLimitExceeded; counted per action', async () => {
    const { time, ec2, send } = model(1000);
    const answers = Array.from({ length: 51 }, (_, i) =>
      send(new AuthorizeSecurityGroupIngressCommand({ GroupId: 'sg-1', ...permission([`10.0.0.${i}/32`]) })),
    );
    await time.run(500, idle);
    const codes = await Promise.all(answers.map(codeOf));
    expect(codes.filter((c) => c === 'ok')).toHaveLength(50);
    expect(codes.at(-1)).toBe('RequestLimitExceeded');
    expect(ec2.counts().AuthorizeSecurityGroupIngress).toEqual({
      calls: 51,
      errors: { RequestLimitExceeded: 1 },
    });
  });

  it('4b. an Authorize or Revoke of more than 100 ranges (IPv4 and IPv6 together) is InvalidParameterValue and changes nothing; 100 pass', async () => {
    const { time, ec2, send } = model(1000);
    const v4 = (from: number, n: number) => Array.from({ length: n }, (_, i) => `10.0.${from + i}.1/32`);
    const mixed = (n4: number, n6: number) => ({
      IpPermissions: [
        {
          IpProtocol: 'tcp',
          FromPort: 8883,
          ToPort: 8883,
          IpRanges: v4(0, n4).map((CidrIp) => ({ CidrIp })),
          Ipv6Ranges: Array.from({ length: n6 }, (_, i) => ({ CidrIpv6: `2001:db8::${i + 1}/128` })),
        },
      ],
    });
    // 60 + 41 ranges in one permission; then 101 over two permissions (two ports).
    const tooMany = send(new AuthorizeSecurityGroupIngressCommand({ GroupId: 'sg-1', ...mixed(60, 41) }));
    const twoPorts = send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: 'sg-1',
        IpPermissions: [
          { ...permission(v4(0, 51)).IpPermissions[0], FromPort: 8883, ToPort: 8883 },
          { ...permission(v4(100, 50)).IpPermissions[0], FromPort: 1883, ToPort: 1883 },
        ],
      }),
    );
    await time.run(1000, idle);
    expect(await Promise.all([tooMany, twoPorts].map(codeOf))).toEqual([
      'InvalidParameterValue',
      'InvalidParameterValue',
    ]);
    expect(ec2.rules().now).toBe(0);

    const hundred = send(new AuthorizeSecurityGroupIngressCommand({ GroupId: 'sg-1', ...mixed(60, 40) }));
    const more = send(
      new AuthorizeSecurityGroupIngressCommand({ GroupId: 'sg-1', ...permission(v4(200, 50)) }),
    );
    await time.run(2000, idle);
    expect(await Promise.all([hundred, more].map(codeOf))).toEqual(['ok', 'ok']);
    expect(ec2.rules().now).toBe(150);

    const revokeAll = send(
      new RevokeSecurityGroupIngressCommand({
        GroupId: 'sg-1',
        IpPermissions: [...mixed(60, 40).IpPermissions, ...permission(v4(200, 50)).IpPermissions],
      }),
    );
    await time.run(3000, idle);
    expect(await codeOf(revokeAll)).toBe('InvalidParameterValue');
    expect(ec2.rules().now).toBe(150);
    const revokeHundred = send(new RevokeSecurityGroupIngressCommand({ GroupId: 'sg-1', ...mixed(60, 40) }));
    await time.run(4000, idle);
    expect(await codeOf(revokeHundred)).toBe('ok');
    expect(ec2.rules().now).toBe(50);
    expect(ec2.counts().RevokeSecurityGroupIngress).toEqual({
      calls: 2,
      errors: { InvalidParameterValue: 1 },
    });
    expect(ec2.stats.largestCall).toBe(150);
  });
});

describe('fleet schedule', () => {
  it('5. is the same for the same seed; every device knocks once in a full-fleet storm', () => {
    const params = {
      devices: 500,
      seed: 7,
      reconnectHours: 6,
      outageAtSeconds: 60,
      outageFraction: 1,
      outageSeconds: 30,
      stormSpreadSeconds: 60,
      endSeconds: 300,
      replayEverySeconds: 2,
      junkPerSecond: 1,
    };
    const a = fleetSchedule(params);
    expect(fleetSchedule(params)).toEqual(a);
    const storm = a.filter((e) => e.kind === 'knock' && e.storm);
    expect(storm).toHaveLength(500);
    expect(storm.every((e) => e.at >= 90_000 && e.at < 150_000)).toBe(true);
    expect(a.filter((e) => e.kind === 'replay')).toHaveLength(149);
    expect(a.every((e, i) => i === 0 || a[i - 1]!.at <= e.at)).toBe(true);
    expect(deviceAddress(99_999)).toBe('100.65.134.159');
  });
});

describe('connect model (rule in place to MQTT session, closed on connect)', () => {
  it('6. draws whole ms within the range, both ends reachable; a reversed or negative range names the flags', () => {
    const range = DEFAULT_CONNECT_RANGE;
    expect(connectDelayMs(() => 0, range)).toBe(300);
    expect(connectDelayMs(() => 0.999_999_9, range)).toBe(1000);
    expect(connectDelayMs(() => 0.5, range)).toBe(650);
    expect(connectDelayMs(() => 0.7, { minMs: 400, maxMs: 400 })).toBe(400);
    expect(() => connectDelayMs(() => 0, { minMs: 1000, maxMs: 300 })).toThrow(/--connect-min-ms/);
    expect(() => connectDelayMs(() => 0, { minMs: -1, maxMs: 300 })).toThrow(RangeError);
  });
});

describe('Paced receivers on the EC2 model (functions/aws/call-pacer.ts, docs/scaling.md "Staying inside the EC2 API budget")', () => {
  it('7. four paced firewalls sharing the budget open and close every grant of a 3,000-grant burst, in full calls', async () => {
    const time = new VirtualTime(1_000_000);
    const groupIds = ['sg-1', 'sg-2', 'sg-3', 'sg-4', 'sg-5'];
    const ec2 = new ModelledEc2({ clock: time, timers: time, groupIds, rulesPerGroup: 200, latencyMs: 100 });
    const random = seededRandom(7);
    const firewalls = Array.from(
      { length: 4 },
      () =>
        new SecurityGroupFirewall({
          ec2: ec2.client,
          securityGroupIds: groupIds,
          brokerAccess: [{ protocol: 'tcp', port: 8883 }],
          clock: time,
          timers: time,
          retry: {
            maxAttempts: 20,
            baseDelayMs: 200,
            maxDelayMs: 20_000,
            sleep: (ms) => time.sleep(ms),
            random,
          },
          metrics: { put() {} },
          rulesPerGroup: 200,
          maxUnsentRules: 10_000,
          // A grant that found no slot waits its whole grant wait here: the pacing under test, not the early
          // refusal at DEFAULT_SLOT_WAIT_MS (test/functions/aws/firewall-lanes.test.ts, bench/fleet-sim).
          maxSlotWaitMs: DEFAULT_GRANT_WAIT_MS,
          coalesceWindowMs: 1000,
          pacing: new Ec2Pacing({ clock: time, sleep: (ms) => time.sleep(ms), isThrottling }),
        }),
    );
    // 3,000 grants over 10 s, 750 per receiver; each rule is revoked 1 s after it is open (closed on connect).
    const outcomes: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const grant = {
        deviceId: `dev-${i}`,
        address: deviceAddress(i),
        family: 4 as const,
        access: [{ protocol: 'tcp' as const, port: 8883 }],
        openedAt: 0,
        expiresAt: 0,
      };
      time.setTimeout(
        () => {
          const live = { ...grant, openedAt: time.now(), expiresAt: time.now() + 60_000 };
          const firewall = firewalls[i % 4]!;
          firewall.allow([live]).then(
            () =>
              time.setTimeout(() => {
                firewall.revoke([live]).then(
                  () => outcomes.push('closed'),
                  (error: Error) => outcomes.push(`revoke: ${error.name}`),
                );
              }, 1000),
            (error: Error) => outcomes.push(`allow: ${error.name}`),
          );
        },
        Math.floor((i / 3000) * 10_000),
      );
    }
    await time.run(1_000_000 + 60_000, { inFlight: () => 0, quantumMs: 10 });
    expect(outcomes.filter((o) => o !== 'closed')).toEqual([]);
    expect(outcomes.length).toBe(3000);
    expect(ec2.rules().now).toBe(0);
    expect(ec2.rules().peak).toBeLessThanOrEqual(1000);
    const calls = ec2.counts();
    const authorize = calls.AuthorizeSecurityGroupIngress!;
    const revoke = calls.RevokeSecurityGroupIngress!;
    // 300 grants/s need 3 full calls/s of the 5/s budget; the pacers keep throttling to a small share of calls.
    expect(ec2.applied.authorized).toBe(3000);
    expect(ec2.applied.revoked).toBe(3000);
    expect(authorize.errors.RequestLimitExceeded ?? 0).toBeLessThan(authorize.calls * 0.2);
    expect(
      ec2.applied.authorized / (authorize.calls - (authorize.errors.RequestLimitExceeded ?? 0)),
    ).toBeGreaterThan(20);
    expect(ec2.stats.largestCall).toBeLessThanOrEqual(100);
    console.log(
      `paced burst: Authorize ${JSON.stringify(authorize)}, Revoke ${JSON.stringify(revoke)}, peak rules ${ec2.rules().peak}`,
    );
    ec2.restore();
  }, 120_000);
});

describe("devices' attempts (bench/fleet/device-attempts.ts, as device-client/connect-device.ts makes them)", () => {
  /**
   * Devices whose knocks are logged; `rules` says, per knock number (from 1), when its rule comes (ms after the
   * knock), if ever; a rule stays `ruleLifeMs`. The device dials at 0.25, 1.25, 3.25 and 7.25 s after each knock.
   */
  function fleet(
    rules: (knock: number) => number | undefined,
    retries = 3,
    endMs = 1_000_000,
    ruleLifeMs = 30_000,
  ) {
    const time = new VirtualTime(0);
    const knocks: number[] = [];
    const granted: boolean[] = [];
    const connectedAt: number[] = [];
    let ruleUntil = Number.NEGATIVE_INFINITY;
    let ruleFrom = Number.POSITIVE_INFINITY;
    const attempts = new DeviceAttempts({
      clock: time,
      timers: time,
      timeoutMs: 10_000,
      retries,
      endMs,
      backoffMs: (failures) => failures * 1000,
      admits: () => time.now() >= ruleFrom && time.now() < ruleUntil,
      connected: () => connectedAt.push(time.now()),
      knock: (_device, attempt: Attempt) => {
        knocks.push(time.now());
        const ruleAfter = rules(knocks.length);
        if (ruleAfter === undefined) return;
        time.setTimeout(() => {
          ruleFrom = time.now();
          ruleUntil = time.now() + ruleLifeMs;
          granted.push(attempt.granted());
        }, ruleAfter);
      },
    });
    return { time, knocks, granted, connectedAt, attempts };
  }

  it('8. the device connects at its first dial after the rule; a rule after a failed attempt is an orphan, used by the re-knock', async () => {
    const { time, knocks, granted, connectedAt, attempts } = fleet((n) => (n === 1 ? 12_000 : undefined));
    expect(attempts.start(7, false)).toBe(true);
    expect(attempts.start(7, true)).toBe(false); // already trying
    await time.run(100_000, idle);
    // First attempt 0..10 s fails (no rule at 0.25/1.25/3.25/7.25 s); re-knock after backoff(1) = 1 s at 11 s; the
    // first knock's rule comes at 12 s (an orphan of the failed attempt) and the re-knock's dial at 12.25 s uses it.
    expect(knocks).toEqual([0, 11_000]);
    expect(granted).toEqual([false]);
    expect(connectedAt).toEqual([12_250]);
    expect(attempts.stats()).toEqual({
      started: 1,
      ended: { connected: 1, refusedForGood: 0, notRetriedAtEnd: 0 },
      running: 0,
      orphans: 1,
      lost: 0,
    });
  });

  it('9. a rule gone before the next dial is a lost grant; the device goes on as after any failed attempt', async () => {
    // The rule comes 2 s after the first knock and lives 1 s: dials at 1.25 s (before) and 3.25 s (after) miss it.
    const { time, knocks, granted, connectedAt, attempts } = fleet(
      (n) => (n === 1 ? 2000 : n === 2 ? 500 : undefined),
      3,
      1_000_000,
      1000,
    );
    attempts.start(3, false);
    await time.run(100_000, idle);
    expect(knocks).toEqual([0, 11_000]);
    expect(granted).toEqual([true, true]);
    expect(connectedAt).toEqual([11_000 + 1250]); // the re-knock's rule at 11.5 s, its dial at 12.25 s
    expect(attempts.stats()).toMatchObject({ lost: 1, orphans: 0, ended: { connected: 1 } });
  });

  it('10. a silent refusal: re-knocks after each failed attempt until the retries are spent, or the end of traffic', async () => {
    const never = fleet(() => undefined, 3);
    never.attempts.start(1, false);
    await never.time.run(200_000, idle);
    // Attempts end at knock + 10 s; backoff 1, 2, 3 s: knocks at 0, 11, 23, 36 s; the 4th failure ends it.
    expect(never.knocks).toEqual([0, 11_000, 23_000, 36_000]);
    expect(never.attempts.stats().ended).toEqual({ connected: 0, refusedForGood: 1, notRetriedAtEnd: 0 });
    const late = fleet(() => undefined, 3, 22_000);
    late.attempts.start(1, false);
    await late.time.run(200_000, idle);
    expect(late.knocks).toEqual([0, 11_000]); // the next knock (23 s) would be after the end of traffic
    expect(late.attempts.stats()).toMatchObject({
      ended: { connected: 0, refusedForGood: 0, notRetriedAtEnd: 1 },
      running: 0,
    });
  });
});

describe('TimerHeap (many timers on one virtual timer)', () => {
  it('11. fires in due order, ties in setting order, at their due time; cleared ones never; 0 ms is 1 ms', async () => {
    const time = new VirtualTime(1000);
    const heap = new TimerHeap(time, time);
    const fired: string[] = [];
    heap.setTimeout(() => fired.push(`b@${time.now()}`), 20);
    heap.setTimeout(() => {
      fired.push(`a@${time.now()}`);
      heap.setTimeout(() => fired.push(`nested@${time.now()}`), 0);
    }, 10);
    heap.setTimeout(() => fired.push(`c@${time.now()}`), 20);
    const cancelled = heap.setTimeout(() => fired.push('never'), 5);
    heap.clearTimeout(cancelled);
    heap.clearTimeout({}); // a foreign handle: nothing
    time.setTimeout(() => fired.push(`direct@${time.now()}`), 15);
    heap.setTimeout(() => fired.push('late'), 100);
    expect(heap.pending).toBe(4);
    await time.run(1050, idle);
    expect(fired).toEqual(['a@1010', 'nested@1011', 'direct@1015', 'b@1020', 'c@1020']);
    expect(heap.pending).toBe(1);
    expect(time.pendingTimers).toBe(1); // one underlying timer, for the 'late' one
  });
});
