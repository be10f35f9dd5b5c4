/** SecurityGroupFirewall against moto server's EC2 (non-default VPC) and DynamoDB grants table. */
import {
  AuthorizeSecurityGroupIngressCommand,
  DescribeSecurityGroupRulesCommand,
  RevokeSecurityGroupIngressCommand,
} from '@aws-sdk/client-ec2';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import {
  GrantNotOpenedError,
  GrantNotPermittedError,
  GrantQueueFullError,
} from '../../../functions/aws/errors.ts';
import type { MetricName, Metrics } from '../../../functions/aws/metrics.ts';
import {
  SecurityGroupFirewall,
  type SecurityGroupFirewallOptions,
} from '../../../functions/aws/security-group-firewall.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import {
  createBrokerGroups,
  createTable,
  fillGroup,
  type MotoServer,
  type RecordedCall,
  recordCalls,
  startMoto,
} from '../../support/moto.ts';
import { immediateRetry } from '../../support/retry.ts';
import { globalTimers as timers } from '../../support/timers.ts';

let moto: MotoServer;
let clients: AwsClients;
/** Unrecorded clients for setup, out-of-band changes and inspection. */
let other: AwsClients;
let groupIds: string[];
let now: number;
let calls: RecordedCall[];
let metricPoints: { name: MetricName; value: number; dimensions?: Readonly<Record<string, string>> }[];
const firewalls: SecurityGroupFirewall[] = [];

const noSleepRetry = immediateRetry(3);
const metrics: Metrics = {
  put: (name, value, dimensions) => metricPoints.push({ name, value, ...(dimensions ? { dimensions } : {}) }),
};

beforeAll(async () => {
  moto = await startMoto();
});
afterAll(async () => {
  await moto?.stop();
});
beforeEach(async () => {
  await moto.reset();
  clients = moto.clients();
  other = moto.clients();
  ({ groupIds } = await createBrokerGroups(other.ec2, 2));
  await createTable(clients.dynamodb, 'grants', 'ttl');
  now = 1_700_000_000_000;
  metricPoints = [];
  calls = recordCalls(clients.ec2);
});
afterEach(async () => {
  await Promise.all(firewalls.splice(0).map((f) => f.close()));
});

function firewall(options: Partial<SecurityGroupFirewallOptions> = {}): SecurityGroupFirewall {
  const f = new SecurityGroupFirewall({
    ec2: clients.ec2,
    securityGroupIds: [groupIds[0] ?? ''],
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: { now: () => now },
    timers,
    retry: noSleepRetry,
    metrics,
    grantStore: new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }),
    coalesceWindowMs: 5,
    queueRetryMs: 3_600_000,
    ...options,
  });
  firewalls.push(f);
  return f;
}

const grant = (n: number, seconds = 30, overrides: Partial<Grant> = {}): Grant => ({
  deviceId: `dev-${n}`,
  address: `198.51.100.${n}`,
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt: now,
  expiresAt: now + seconds * 1000,
  ...overrides,
});

async function rules(
  groupId: string,
): Promise<{ cidr: string; port: number | undefined; description?: string }[]> {
  const result = await other.ec2.send(
    new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: [groupId] }] }),
  );
  return (result.SecurityGroupRules ?? [])
    .filter((r) => r.IsEgress === false && r.Description !== 'operator rule')
    .map((r) => ({
      cidr: r.CidrIpv4 ?? r.CidrIpv6 ?? '',
      port: r.FromPort,
      ...(r.Description === undefined ? {} : { description: r.Description }),
    }))
    .sort((a, b) => a.cidr.localeCompare(b.cidr));
}

const commands = (name: string) => calls.filter((c) => c.command === name);
const rangesOf = (call: RecordedCall | undefined): string[] => {
  const input = (call?.input ?? {}) as { IpPermissions?: { IpRanges?: { CidrIp: string }[] }[] };
  return (input.IpPermissions ?? []).flatMap((p) => p.IpRanges?.map((r) => r.CidrIp) ?? []);
};

describe('SecurityGroupFirewall on moto', () => {
  it('opens a /32 rule on the broker port with the documented description, records it, and revokes it', async () => {
    const g0 = groupIds[0] ?? '';
    const store = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' });
    const f = firewall();
    await f.allow([grant(1)]);
    expect(await rules(g0)).toEqual([
      { cidr: '198.51.100.1/32', port: 8883, description: 'blackcloud:dev-1:exp=1700000030' },
    ]);
    expect(await store.get('198.51.100.1')).toMatchObject({ deviceId: 'dev-1', securityGroupIds: [g0] });
    await f.revoke([grant(1)]);
    expect(await rules(g0)).toEqual([]);
    expect(await store.get('198.51.100.1')).toBeUndefined();
    expect(f.openRules()).toEqual([]);
  });

  it('extends an open rule in place: one rule, later expiry, no second Authorize', async () => {
    const g0 = groupIds[0] ?? '';
    const f = firewall();
    await f.allow([grant(1)]);
    now += 10_000;
    await f.allow([grant(1)]);
    expect(await rules(g0)).toEqual([
      { cidr: '198.51.100.1/32', port: 8883, description: 'blackcloud:dev-1:exp=1700000040' },
    ]);
    expect(commands('AuthorizeSecurityGroupIngressCommand')).toHaveLength(1);
    expect(commands('UpdateSecurityGroupRuleDescriptionsIngressCommand').map((c) => c.input)).toEqual([
      {
        GroupId: g0,
        IpPermissions: [
          {
            IpProtocol: 'tcp',
            FromPort: 8883,
            ToPort: 8883,
            IpRanges: [{ CidrIp: '198.51.100.1/32', Description: 'blackcloud:dev-1:exp=1700000040' }],
          },
        ],
      },
    ]);
    // An earlier expiry changes nothing.
    const before = calls.length;
    await f.allow([grant(1, 1)]);
    expect(calls.length).toBe(before);
    expect(
      (await new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }).get('198.51.100.1'))
        ?.expiresAt,
    ).toBe(1_700_000_040_000);
  });

  it('opens IPv6 sources as /128 rules', async () => {
    const g0 = groupIds[0] ?? '';
    const f = firewall();
    const v6 = grant(6, 30, { address: '2001:DB8:0::6', family: 6 });
    await f.allow([v6]);
    expect(await rules(g0)).toEqual([
      { cidr: '2001:db8::6/128', port: 8883, description: 'blackcloud:dev-6:exp=1700000030' },
    ]);
    await f.revoke([v6]);
    expect(await rules(g0)).toEqual([]);
  });

  it('revoking a rule that is already gone succeeds (InvalidPermission.NotFound), and so does a never-opened one', async () => {
    const g0 = groupIds[0] ?? '';
    const f = firewall();
    await f.allow([grant(1), grant(2)]);
    // Someone else (the sweeper) removes one of them.
    await other.ec2.send(
      new RevokeSecurityGroupIngressCommand({
        GroupId: g0,
        IpPermissions: [
          { IpProtocol: 'tcp', FromPort: 8883, ToPort: 8883, IpRanges: [{ CidrIp: '198.51.100.1/32' }] },
        ],
      }),
    );
    calls.length = 0;
    await f.revoke([grant(1), grant(2)]);
    expect(await rules(g0)).toEqual([]);
    // One call for both: NotFound (nothing revoked), describe, then the rest in one call.
    expect(calls.map((c) => c.command)).toEqual([
      'RevokeSecurityGroupIngressCommand',
      'DescribeSecurityGroupsCommand',
      'RevokeSecurityGroupIngressCommand',
    ]);
    expect(rangesOf(calls[0])).toEqual(['198.51.100.1/32', '198.51.100.2/32']);
    expect(rangesOf(calls[2])).toEqual(['198.51.100.2/32']);
    await expect(f.revoke([grant(1), grant(9)])).resolves.toBeUndefined();
  });

  it('coalesces N grants arriving together into one Authorize call, and N revokes into one Revoke call', async () => {
    const g0 = groupIds[0] ?? '';
    const f = firewall();
    const grants = Array.from({ length: 20 }, (_, i) => grant(i + 1));
    await Promise.all(grants.map((g) => f.allow([g])));
    const authorize = commands('AuthorizeSecurityGroupIngressCommand');
    expect(authorize).toHaveLength(1);
    expect(rangesOf(authorize[0])).toHaveLength(20);
    expect((await rules(g0)).length).toBe(20);
    await Promise.all(grants.map((g) => f.revoke([g])));
    expect(commands('RevokeSecurityGroupIngressCommand')).toHaveLength(1);
    expect(await rules(g0)).toEqual([]);
  });

  it('sends the same address twice in one batch once (duplicates are InvalidParameterValue on EC2)', async () => {
    const f = firewall();
    await Promise.all([f.allow([grant(1, 30)]), f.allow([grant(1, 60)]), f.allow([grant(1, 45)])]);
    const authorize = commands('AuthorizeSecurityGroupIngressCommand');
    expect(authorize).toHaveLength(1);
    expect(authorize[0]?.input).toEqual({
      GroupId: groupIds[0],
      IpPermissions: [
        {
          IpProtocol: 'tcp',
          FromPort: 8883,
          ToPort: 8883,
          IpRanges: [{ CidrIp: '198.51.100.1/32', Description: 'blackcloud:dev-1:exp=1700000060' }],
        },
      ],
    });
  });

  it('opens only broker ports; a grant with none is refused, never silently dropped', async () => {
    const g0 = groupIds[0] ?? '';
    const f = firewall();
    await f.allow([
      grant(1, 30, {
        access: [
          { protocol: 'tcp', port: 22 },
          { protocol: 'tcp', port: 8883 },
        ],
      }),
    ]);
    expect((await rules(g0)).map((r) => r.port)).toEqual([8883]);
    await expect(f.allow([grant(2, 30, { access: [{ protocol: 'tcp', port: 22 }] })])).rejects.toBeInstanceOf(
      GrantNotPermittedError,
    );
  });

  it('reuses a rule another receiver opened (InvalidPermission.Duplicate → describe → extend)', async () => {
    const g0 = groupIds[0] ?? '';
    const f = firewall();
    await f.allow([grant(2)]); // the firewall has described the group once
    await other.ec2.send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: g0,
        IpPermissions: [
          {
            IpProtocol: 'tcp',
            FromPort: 8883,
            ToPort: 8883,
            IpRanges: [{ CidrIp: '198.51.100.1/32', Description: 'blackcloud:dev-1:exp=1700000010' }],
          },
        ],
      }),
    );
    calls.length = 0;
    await f.allow([grant(1)]);
    expect(calls.map((c) => c.command)).toEqual([
      'AuthorizeSecurityGroupIngressCommand',
      'DescribeSecurityGroupsCommand',
      'UpdateSecurityGroupRuleDescriptionsIngressCommand',
    ]);
    expect(await rules(g0)).toEqual([
      { cidr: '198.51.100.1/32', port: 8883, description: 'blackcloud:dev-1:exp=1700000030' },
      { cidr: '198.51.100.2/32', port: 8883, description: 'blackcloud:dev-2:exp=1700000030' },
    ]);
  });

  it('never extends or revokes a rule it did not write', async () => {
    const g0 = groupIds[0] ?? '';
    await other.ec2.send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: g0,
        IpPermissions: [
          {
            IpProtocol: 'tcp',
            FromPort: 8883,
            ToPort: 8883,
            IpRanges: [{ CidrIp: '198.51.100.1/32', Description: 'admin laptop' }],
          },
        ],
      }),
    );
    const f = firewall();
    await f.allow([grant(1)]);
    await f.revoke([grant(1)]);
    expect(await rules(g0)).toEqual([{ cidr: '198.51.100.1/32', port: 8883, description: 'admin laptop' }]);
    expect(commands('AuthorizeSecurityGroupIngressCommand')).toHaveLength(0);
    expect(commands('RevokeSecurityGroupIngressCommand')).toHaveLength(0);
  });

  it('places one call whole in the next group with room for all of it rather than a few rules in each', async () => {
    const [g0 = '', g1 = ''] = groupIds;
    await fillGroup(other.ec2, g0, 58);
    const f = firewall({ securityGroupIds: [g0, g1] });
    await Promise.all([1, 2, 3, 4, 5].map((n) => f.allow([grant(n)])));
    expect(await rules(g0)).toEqual([]);
    expect((await rules(g1)).map((r) => r.cidr)).toHaveLength(5);
    expect(
      commands('AuthorizeSecurityGroupIngressCommand').map((c) => (c.input as { GroupId: string }).GroupId),
    ).toEqual([g1]);
  });

  it('spreads rules over the second group when no group has room for the whole call (counted from the groups)', async () => {
    const [g0 = '', g1 = ''] = groupIds;
    await fillGroup(other.ec2, g0, 58);
    await fillGroup(other.ec2, g1, 57);
    const f = firewall({ securityGroupIds: [g0, g1] });
    await Promise.all([1, 2, 3, 4, 5].map((n) => f.allow([grant(n)])));
    expect((await rules(g0)).map((r) => r.cidr)).toEqual(['198.51.100.1/32', '198.51.100.2/32']);
    expect((await rules(g1)).map((r) => r.cidr)).toEqual([
      '198.51.100.3/32',
      '198.51.100.4/32',
      '198.51.100.5/32',
    ]);
    expect(
      commands('AuthorizeSecurityGroupIngressCommand').map((c) => (c.input as { GroupId: string }).GroupId),
    ).toEqual([g0, g1]);
    const store = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' });
    expect((await store.get('198.51.100.4'))?.securityGroupIds).toEqual([g1]);
  });

  it('moves to the next group on RulesPerSecurityGroupLimitExceeded and counts it as an ApiErrors metric', async () => {
    const [g0 = '', g1 = ''] = groupIds;
    await fillGroup(other.ec2, g0, 58);
    // The firewall believes in a raised quota (100) that EC2 (moto: 60) does not have.
    const f = firewall({ securityGroupIds: [g0, g1], rulesPerGroup: 100 });
    await Promise.all([1, 2, 3].map((n) => f.allow([grant(n)])));
    expect((await rules(g0)).length).toBe(0);
    expect((await rules(g1)).length).toBe(3);
    expect(metricPoints).toContainEqual({
      name: 'ApiErrors',
      value: 1,
      dimensions: { Code: 'RulesPerSecurityGroupLimitExceeded' },
    });
  });

  it('queues grants when every group is full (bounded, GrantQueueDepth metric) and opens them as slots free', async () => {
    const [g0 = '', g1 = ''] = groupIds;
    await fillGroup(other.ec2, g0, 59);
    await fillGroup(other.ec2, g1, 59);
    const f = firewall({ securityGroupIds: [g0, g1], maxQueuedRules: 2 });
    const results = new Map<number, string>();
    const pending = [1, 2, 3, 4, 5].map((n) =>
      f.allow([grant(n, n === 4 ? 5 : 30)]).then(
        () => results.set(n, 'open'),
        (e: Error) => results.set(n, e.name),
      ),
    );
    await f.idle();
    await Promise.resolve();
    expect(f.queueDepth).toBe(2);
    expect(results.get(5)).toBe(GrantQueueFullError.name);
    expect([results.get(1), results.get(2)]).toEqual(['open', 'open']);
    expect(metricPoints.filter((p) => p.name === 'GrantQueueDepth').map((p) => p.value)).toEqual([1, 2]);

    // A revoke frees a slot: the oldest waiting grant (3) opens there.
    await f.revoke([grant(1)]);
    await f.idle();
    expect((await rules(g0)).map((r) => r.cidr)).toEqual(['198.51.100.3/32']);
    expect(results.get(3)).toBe('open');

    // Grant 4 expires while it waits: freeing a slot later does not open it.
    now += 6_000;
    await f.revoke([grant(2)]);
    await f.idle();
    await Promise.all(pending);
    expect(results.get(4)).toBe(GrantNotOpenedError.name);
    expect(f.queueDepth).toBe(0);
    expect(await rules(g1)).toEqual([]);
    expect(metricPoints.filter((p) => p.name === 'GrantQueueDepth').at(-1)?.value).toBe(0);
  });

  it('rejects grants still waiting at close', async () => {
    const g0 = groupIds[0] ?? '';
    await fillGroup(other.ec2, g0, 60);
    const f = firewall();
    const waiting = f.allow([grant(1)]);
    await f.idle();
    expect(f.queueDepth).toBe(1);
    await f.close();
    await expect(waiting).rejects.toBeInstanceOf(GrantNotOpenedError);
  });
});

describe('SecurityGroupFirewall on moto: prefix grants (docs/scaling.md "Prefix grants")', () => {
  it('opens one rule for the prefix CIDR (IPv4 /24, IPv6 /64), records it by prefix, and revokes it', async () => {
    const g0 = groupIds[0] ?? '';
    const store = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' });
    const f = firewall();
    const v4 = grant(7, 30, { address: '198.51.100.0', prefixLength: 24 });
    const v6 = grant(8, 30, { address: '2001:db8:aa:bb::', family: 6, prefixLength: 64 });
    await f.allow([v4, v6]);
    expect(rangesOf(commands('AuthorizeSecurityGroupIngressCommand')[0])).toEqual(['198.51.100.0/24']);
    const v6Ranges = commands('AuthorizeSecurityGroupIngressCommand').flatMap(
      (c) =>
        (c.input as { IpPermissions?: { Ipv6Ranges?: { CidrIpv6: string }[] }[] }).IpPermissions?.flatMap(
          (p) => p.Ipv6Ranges?.map((r) => r.CidrIpv6) ?? [],
        ) ?? [],
    );
    expect(v6Ranges).toEqual(['2001:db8:aa:bb::/64']);
    expect(await rules(g0)).toEqual([
      { cidr: '198.51.100.0/24', port: 8883, description: 'blackcloud:dev-7:exp=1700000030' },
      { cidr: '2001:db8:aa:bb::/64', port: 8883, description: 'blackcloud:dev-8:exp=1700000030' },
    ]);
    expect(await store.get('198.51.100.0/24')).toMatchObject({
      deviceId: 'dev-7',
      address: '198.51.100.0',
      prefixLength: 24,
      securityGroupIds: [g0],
    });
    // The host 198.51.100.0 is another grant than its /24.
    expect(await store.get('198.51.100.0')).toBeUndefined();
    await f.revoke([v4, v6]);
    expect(await rules(g0)).toEqual([]);
    expect(await store.get('198.51.100.0/24')).toBeUndefined();
    expect(f.openRules()).toEqual([]);
  });
});

describe('SecurityGroupFirewall on moto: inside the EC2 budget (docs/scaling.md "Staying inside the EC2 API budget")', () => {
  const ranges = (input: unknown) =>
    ((input as { IpPermissions?: { IpRanges?: unknown[] }[] }).IpPermissions ?? []).reduce(
      (n, p) => n + (p.IpRanges?.length ?? 0),
      0,
    );

  it('sends one batch in calls of at most maxBatchRules ranges, every grant opened', async () => {
    const f = firewall({ maxBatchRules: 10, coalesceWindowMs: 20 });
    await Promise.all(Array.from({ length: 25 }, (_, i) => f.allow([grant(i + 1)])));
    const authorize = commands('AuthorizeSecurityGroupIngressCommand');
    expect(authorize.map((c) => ranges(c.input))).toEqual([10, 10, 5]);
    expect((await rules(groupIds[0] ?? '')).length).toBe(25);
    await Promise.all(Array.from({ length: 25 }, (_, i) => f.revoke([grant(i + 1)])));
    expect(commands('RevokeSecurityGroupIngressCommand').map((c) => ranges(c.input))).toEqual([10, 10, 5]);
    expect(await rules(groupIds[0] ?? '')).toEqual([]);
  });

  it('refuses at once a grant beyond maxUnsentRules (GrantQueueFullError naming the EC2 budget), opens the rest', async () => {
    const f = firewall({ maxUnsentRules: 3, coalesceWindowMs: 20 });
    const results = await Promise.allSettled([1, 2, 3, 4].map((n) => f.allow([grant(n)])));
    expect(results.slice(0, 3).map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    const refused = results[3];
    expect(refused?.status).toBe('rejected');
    const error = (refused as PromiseRejectedResult).reason as Error;
    expect(error).toBeInstanceOf(GrantQueueFullError);
    expect(error.message).toMatch(/3 rules already wait to be sent to EC2 .*dev-4@198\.51\.100\.4/);
    expect((await rules(groupIds[0] ?? '')).map((r) => r.cidr)).toEqual([
      '198.51.100.1/32',
      '198.51.100.2/32',
      '198.51.100.3/32',
    ]);
    // Sent: the bound counts only what still waits.
    await f.allow([grant(4)]);
    expect((await rules(groupIds[0] ?? '')).length).toBe(4);
  });

  it('never opens a grant that expired while waiting to be sent (GrantNotOpenedError), and makes no call for it', async () => {
    const f = firewall({ coalesceWindowMs: 50 });
    const late = f.allow([grant(7, 1)]);
    const onTime = f.allow([grant(8, 30)]);
    now += 2000; // the grant of 1 s ends before its batch goes out
    await expect(late).rejects.toThrow(GrantNotOpenedError);
    await expect(late).rejects.toThrow(/dev-7@198\.51\.100\.7 .* expired while waiting to be sent/);
    await onTime;
    expect(commands('AuthorizeSecurityGroupIngressCommand').map((c) => ranges(c.input))).toEqual([1]);
    expect((await rules(groupIds[0] ?? '')).map((r) => r.cidr)).toEqual(['198.51.100.8/32']);
  });
});
