/**
 * The revoker and sweeper logic (and their thin Lambda handlers) against moto server. A group holding more than
 * 100 rules is one moto cannot make (it caps a VPC group at 60 ingress rules whatever the quota): that sweep runs
 * on the EC2 model (bench/support/modelled-ec2.ts, which refuses a call of more than 100 ranges as EC2 does),
 * with its grants table on moto.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  DescribeSecurityGroupRulesCommand,
  type EC2Client,
} from '@aws-sdk/client-ec2';
import type { SQSEvent } from 'aws-lambda';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ModelledEc2 } from '../../../bench/support/modelled-ec2.ts';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import { encodeGrantMessage } from '../../../functions/aws/grant-message.ts';
import { noMetrics } from '../../../functions/aws/metrics.ts';
import { formatRuleDescription } from '../../../functions/aws/rule-description.ts';
import { SecurityGroupFirewall } from '../../../functions/aws/security-group-firewall.ts';
import { EC2_MAX_RANGES_PER_CALL } from '../../../functions/aws/sg-api.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { type RevokerDeps, revokeGrantMessages } from '../../../functions/revoker/revoke-grants.ts';
import { type SweeperDeps, sweepExpiredGrants } from '../../../functions/sweeper/sweep.ts';
import {
  createBrokerGroups,
  createTable,
  type MotoServer,
  type RecordedCall,
  recordCalls,
  setMotoEnv,
  startMoto,
} from '../../support/moto.ts';
import { immediateRetry } from '../../support/retry.ts';
import { globalTimers as timers } from '../../support/timers.ts';

const T0 = 1_700_000_000_000;
const MISSING_GROUP = 'sg-0000000000deadbee';

let moto: MotoServer;
let clients: AwsClients;
let other: AwsClients;
let groupIds: string[];
let grants: DynamoGrantStore;
let now: number;
const firewalls: SecurityGroupFirewall[] = [];

const retry = immediateRetry(2);

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
  await createTable(other.dynamodb, 'grants', 'ttl');
  grants = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' });
  now = T0;
});
afterEach(async () => {
  await Promise.all(firewalls.splice(0).map((f) => f.close()));
});

const grant = (n: number, seconds = 30, openedAt = T0): Grant => ({
  deviceId: `dev-${n}`,
  address: `198.51.100.${n}`,
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt,
  expiresAt: openedAt + seconds * 1000,
});

/** The receiver's side: open grants the real way (rule + grants item). */
function receiverFirewall(securityGroupIds = groupIds): SecurityGroupFirewall {
  const f = new SecurityGroupFirewall({
    ec2: other.ec2,
    securityGroupIds,
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: { now: () => now },
    timers,
    retry,
    metrics: noMetrics,
    grantStore: new DynamoGrantStore({ dynamodb: other.dynamodb, tableName: 'grants' }),
    coalesceWindowMs: 1,
  });
  firewalls.push(f);
  return f;
}

async function openRule(ec2: EC2Client, groupId: string, cidr: string, description: string): Promise<void> {
  await ec2.send(
    new AuthorizeSecurityGroupIngressCommand({
      GroupId: groupId,
      IpPermissions: [
        {
          IpProtocol: 'tcp',
          FromPort: 8883,
          ToPort: 8883,
          IpRanges: [{ CidrIp: cidr, Description: description }],
        },
      ],
    }),
  );
}

async function cidrs(groupId: string): Promise<string[]> {
  const result = await other.ec2.send(
    new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: [groupId] }] }),
  );
  return (result.SecurityGroupRules ?? [])
    .filter((r) => r.IsEgress === false)
    .map((r) => r.CidrIpv4 ?? r.CidrIpv6 ?? '')
    .sort();
}

const message = (id: string, g: Grant) => ({ messageId: id, body: encodeGrantMessage(g) });

function revokerDeps(securityGroupIds = groupIds): RevokerDeps {
  return { ec2: clients.ec2, grants, securityGroupIds, clock: { now: () => now }, retry };
}

function sweeperDeps(securityGroupIds = groupIds): SweeperDeps {
  return { ec2: clients.ec2, grants, securityGroupIds, clock: { now: () => now }, retry };
}

const ec2Commands = (calls: RecordedCall[]) =>
  calls.map((c) => c.command).filter((c) => !c.startsWith('Get') && !c.startsWith('Delete'));

describe('revoker', () => {
  it('revokes a due grant and forgets it; the same message again succeeds with nothing to do', async () => {
    const [g0 = ''] = groupIds;
    await receiverFirewall().allow([grant(1)]);
    expect(await cidrs(g0)).toEqual(['198.51.100.1/32']);
    now = T0 + 30_000;
    const first = await revokeGrantMessages([message('m1', grant(1))], revokerDeps());
    expect(first).toEqual({
      outcomes: [
        { messageId: 'm1', result: 'revoked', deviceId: 'dev-1', address: '198.51.100.1', revokedRules: 1 },
      ],
      batchItemFailures: [],
    });
    expect(await cidrs(g0)).toEqual([]);
    expect(await grants.get('198.51.100.1')).toBeUndefined();
    const second = await revokeGrantMessages([message('m1', grant(1))], revokerDeps());
    expect(second.outcomes[0]?.result).toBe('already-gone');
    expect(second.batchItemFailures).toEqual([]);
  });

  it('does nothing when the grants table says the grant was extended past now', async () => {
    const [g0 = ''] = groupIds;
    const f = receiverFirewall();
    await f.allow([grant(1)]);
    now = T0 + 20_000;
    await f.allow([grant(1, 30, now)]); // extended to T0 + 50 s
    now = T0 + 31_000;
    const result = await revokeGrantMessages([message('m1', grant(1))], revokerDeps());
    expect(result.outcomes[0]?.result).toBe('extended');
    expect(await cidrs(g0)).toEqual(['198.51.100.1/32']);
    expect((await grants.get('198.51.100.1'))?.expiresAt).toBe(T0 + 50_000);
  });

  it('keeps a rule whose description was extended even if the grants table missed the extension', async () => {
    const [g0 = ''] = groupIds;
    await openRule(other.ec2, g0, '198.51.100.1/32', `blackcloud:dev-1:exp=${(T0 + 90_000) / 1000}`);
    await grants.put({ ...grant(1), securityGroupIds: [g0] });
    now = T0 + 31_000;
    const result = await revokeGrantMessages([message('m1', grant(1))], revokerDeps());
    expect(result.outcomes[0]).toMatchObject({ result: 'extended', revokedRules: 0 });
    expect(await cidrs(g0)).toEqual(['198.51.100.1/32']);
  });

  it('leaves a message that came early (grant longer than the 900 s SQS cap) to later', async () => {
    await receiverFirewall().allow([grant(1, 1200)]);
    now = T0 + 900_000;
    const result = await revokeGrantMessages([message('m1', grant(1, 1200))], revokerDeps());
    expect(result.outcomes[0]?.result).toBe('extended');
    expect(await cidrs(groupIds[0] ?? '')).toEqual(['198.51.100.1/32']);
  });

  it('handles a batch with one describe per group and one revoke call, reporting bad messages as failures', async () => {
    const [g0 = '', g1 = ''] = groupIds;
    await receiverFirewall([g0]).allow([grant(1), grant(2), grant(3)]);
    await receiverFirewall([g1]).allow([grant(4)]);
    now = T0 + 30_000;
    const calls = recordCalls(clients.ec2);
    const result = await revokeGrantMessages(
      [
        message('m1', grant(1)),
        { messageId: 'bad', body: '{"v":1}' },
        message('m2', grant(2)),
        message('m4', grant(4)),
      ],
      revokerDeps(),
    );
    expect(result.outcomes.map((o) => [o.messageId, o.result])).toEqual([
      ['m1', 'revoked'],
      ['bad', 'invalid'],
      ['m2', 'revoked'],
      ['m4', 'revoked'],
    ]);
    expect(result.batchItemFailures).toEqual([{ itemIdentifier: 'bad' }]);
    expect(ec2Commands(calls).sort()).toEqual([
      'DescribeSecurityGroupsCommand',
      'DescribeSecurityGroupsCommand',
      'RevokeSecurityGroupIngressCommand',
      'RevokeSecurityGroupIngressCommand',
    ]);
    expect(await cidrs(g0)).toEqual(['198.51.100.3/32']);
    expect(await cidrs(g1)).toEqual([]);
  });

  it('reports a batch item failure (for redelivery) when its group cannot be read, and keeps the grants item', async () => {
    await grants.put({ ...grant(1), securityGroupIds: [MISSING_GROUP] });
    now = T0 + 30_000;
    const result = await revokeGrantMessages([message('m1', grant(1))], revokerDeps([MISSING_GROUP]));
    expect(result.outcomes[0]?.result).toBe('failed');
    expect(result.outcomes[0]?.error).toContain('InvalidGroup.NotFound');
    expect(result.batchItemFailures).toEqual([{ itemIdentifier: 'm1' }]);
    expect(await grants.get('198.51.100.1')).toBeDefined();
  });
});

describe('sweeper', () => {
  it('revokes every expired blackcloud rule, cleans the grants table, and a second run does nothing', async () => {
    const [g0 = '', g1 = ''] = groupIds;
    await receiverFirewall([g0]).allow([grant(1), grant(2, 60)]);
    await receiverFirewall([g1]).allow([grant(3)]);
    await openRule(other.ec2, g0, '203.0.113.1/32', 'operator rule');
    await grants.put({ ...grant(9, 10), securityGroupIds: [] }); // stale item: its rule is long gone
    now = T0 + 45_000;

    const first = await sweepExpiredGrants(sweeperDeps());
    expect(first.revoked.map((r) => [r.groupId, r.address, r.deviceId, r.expiresAtSeconds])).toEqual([
      [g0, '198.51.100.1', 'dev-1', (T0 + 30_000) / 1000],
      [g1, '198.51.100.3', 'dev-3', (T0 + 30_000) / 1000],
    ]);
    expect(first.deletedGrants).toEqual(['198.51.100.1', '198.51.100.3', '198.51.100.9']);
    expect(first.failures).toEqual([]);
    expect(await cidrs(g0)).toEqual(['198.51.100.2/32', '203.0.113.1/32']);
    expect(await cidrs(g1)).toEqual([]);
    expect((await grants.listActive(now)).map((g) => g.address)).toEqual(['198.51.100.2']);

    const second = await sweepExpiredGrants(sweeperDeps());
    expect([second.revoked, second.deletedGrants, second.keptGrants, second.failures]).toEqual([
      [],
      [],
      [],
      [],
    ]);
    expect(await cidrs(g0)).toEqual(['198.51.100.2/32', '203.0.113.1/32']);
  });

  it('sweeps the groups it can, reports the one it cannot, and keeps that group’s grants items', async () => {
    const [g0 = ''] = groupIds;
    await receiverFirewall([g0]).allow([grant(1)]);
    await grants.put({ ...grant(7), securityGroupIds: [MISSING_GROUP] });
    now = T0 + 31_000;
    const report = await sweepExpiredGrants(sweeperDeps([g0, MISSING_GROUP]));
    expect(report.revoked.map((r) => r.address)).toEqual(['198.51.100.1']);
    expect(report.deletedGrants).toEqual(['198.51.100.1']);
    expect(report.keptGrants).toEqual(['198.51.100.7']);
    expect(report.failures).toEqual([
      { where: MISSING_GROUP, error: expect.stringContaining('InvalidGroup.NotFound') },
    ]);
  });
});

describe('sweeper on a group holding more than 100 expired rules (EC2 model; grants table on moto)', () => {
  const GROUP = 'sg-0123456789abcdef0';
  const models: ModelledEc2[] = [];
  afterEach(() => {
    for (const m of models.splice(0)) m.restore();
  });

  it('revokes 150 expired rules (IPv4 and IPv6) in calls of at most 100 ranges, keeps the live and foreign ones', async () => {
    const ec2 = new ModelledEc2({ groupIds: [GROUP], rulesPerGroup: 500, clock: { now: () => now } });
    models.push(ec2);
    const expired = (T0 + 30_000) / 1000;
    const v4 = Array.from({ length: 120 }, (_, i) => ({
      deviceId: `dev-${i}`,
      address: `198.18.${i >> 8}.${(i & 0xff) + 1}`,
      family: 4 as const,
    }));
    const v6 = Array.from({ length: 30 }, (_, i) => ({
      deviceId: `dev6-${i}`,
      address: `2001:db8:5::${(i + 1).toString(16)}`,
      family: 6 as const,
    }));
    const due = [...v4, ...v6];
    // Opened by receivers in calls of at most 100 ranges (the model refuses more), plus one live and one foreign.
    const ranges = (hosts: typeof due) => ({
      IpRanges: hosts
        .filter((h) => h.family === 4)
        .map((h) => ({ CidrIp: `${h.address}/32`, Description: formatRuleDescription(h.deviceId, expired) })),
      Ipv6Ranges: hosts
        .filter((h) => h.family === 6)
        .map((h) => ({
          CidrIpv6: `${h.address}/128`,
          Description: formatRuleDescription(h.deviceId, expired),
        })),
    });
    for (const hosts of [due.slice(0, 75), due.slice(75)]) {
      await ec2.client.send(
        new AuthorizeSecurityGroupIngressCommand({
          GroupId: GROUP,
          IpPermissions: [{ IpProtocol: 'tcp', FromPort: 8883, ToPort: 8883, ...ranges(hosts) }],
        }),
      );
    }
    await openRule(ec2.client, GROUP, '203.0.113.1/32', 'operator rule');
    await openRule(ec2.client, GROUP, '198.51.100.7/32', formatRuleDescription('dev-live', expired + 60));
    await Promise.all(
      due.map((h) =>
        grants.put({
          ...h,
          access: [{ protocol: 'tcp', port: 8883 }],
          openedAt: T0,
          expiresAt: T0 + 30_000,
          securityGroupIds: [GROUP],
        }),
      ),
    );
    now = T0 + 45_000;
    const before = ec2.callLog().length;

    const report = await sweepExpiredGrants({
      ec2: ec2.client,
      grants,
      securityGroupIds: [GROUP],
      clock: { now: () => now },
      retry,
    });
    expect(report.failures).toEqual([]);
    expect(report.revoked.map((r) => r.address).sort()).toEqual(due.map((h) => h.address).sort());
    expect(report.deletedGrants).toHaveLength(150);
    expect(ec2.cidrs().sort()).toEqual(['198.51.100.7/32', '203.0.113.1/32']);

    const revokes = ec2
      .callLog()
      .slice(before)
      .filter((c) => c.action === 'RevokeSecurityGroupIngress');
    expect(revokes.map((c) => c.outcome)).toEqual(['ok', 'ok']);
    expect(revokes.every((c) => c.ranges <= EC2_MAX_RANGES_PER_CALL)).toBe(true);
    expect(revokes.map((c) => c.ranges)).toEqual([100, 50]);

    const second = await sweepExpiredGrants({
      ec2: ec2.client,
      grants,
      securityGroupIds: [GROUP],
      clock: { now: () => now },
      retry,
    });
    expect([second.revoked, second.deletedGrants, second.failures]).toEqual([[], [], []]);
  });
});

describe('Lambda handlers (env parsed once, clients from clients.ts)', () => {
  it('revoker and sweeper handlers run against moto from their environment', async () => {
    const [g0 = ''] = groupIds;
    setMotoEnv(moto.endpoint);
    process.env.BLACKCLOUD_BROKER_SECURITY_GROUP_IDS = groupIds.join(',');
    process.env.BLACKCLOUD_GRANTS_TABLE = 'grants';
    const { handler: revoker } = await import('../../../functions/revoker/handler.ts');
    const { handler: sweeper } = await import('../../../functions/sweeper/handler.ts');

    // Real time here: the handlers use the system clock. Grants that ended a minute ago.
    const past = Date.now() - 60_000;
    now = past;
    await receiverFirewall([g0]).allow([grant(1, 10, past), grant(2, 10, past)]);
    const event = {
      Records: [
        { messageId: 'm1', body: encodeGrantMessage(grant(1, 10, past)) },
        { messageId: 'm2', body: 'junk' },
      ],
    } as unknown as SQSEvent;
    expect(await revoker(event)).toEqual({ batchItemFailures: [{ itemIdentifier: 'm2' }] });
    expect(await cidrs(g0)).toEqual(['198.51.100.2/32']);

    const report = await sweeper();
    expect(report.revoked.map((r) => r.address)).toEqual(['198.51.100.2']);
    expect(await cidrs(g0)).toEqual([]);
    expect((await sweeper()).revoked).toEqual([]);
  });
});
