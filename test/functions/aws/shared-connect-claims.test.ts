/**
 * Connect claims shared in the grants table (functions/aws/dynamo-connect-claims.ts), against moto server:
 *   1. the ConnectClaimStore contract (functions/core/interfaces.ts), for the in-process store and the DynamoDB
 *      one alike, then what only a shared store does: two receivers' stores on one table, one claimed release,
 *      a revoke for every receiver told of the session;
 *   2. the layout next to the grant item: claims written before the grant survive its put, `get` and the scans
 *      ignore claims-only items, deleting the grant drops its claims;
 *   3. closed on connect behind the load balancer: two GrantManagers (two receivers, each its own clients,
 *      firewall and picture of the group) on one grants table and one EC2. Device X knocks via A, device Y from
 *      the same address (or the same /24 with prefix grants) via B: X's session, reported to both, leaves the rule;
 *      a device that never knocked changes nothing; Y's session closes it within the calls; without sessions
 *      the window ends it.
 */
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { DescribeSecurityGroupRulesCommand } from '@aws-sdk/client-ec2';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { DynamoConnectClaims } from '../../../functions/aws/dynamo-connect-claims.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import { noMetrics } from '../../../functions/aws/metrics.ts';
import { SecurityGroupFirewall } from '../../../functions/aws/security-group-firewall.ts';
import type { ConnectClaimStore } from '../../../functions/core/interfaces.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { InMemoryConnectClaimStore } from '../../../functions/receiver/connect-claims.ts';
import { GrantManager, type GrantSource } from '../../../functions/receiver/grant-manager.ts';
import { createBrokerGroups, createTable, type MotoServer, startMoto } from '../../support/moto.ts';
import { immediateRetry } from '../../support/retry.ts';
import { globalTimers } from '../../support/timers.ts';
import { VirtualTime } from '../../support/virtual-time.ts';

const T0 = 1_700_000_000_000;
const ADDRESS = '198.51.100.7';
const PREFIX = '203.0.113.0/24';
const TCP_8883 = [{ protocol: 'tcp' as const, port: 8883 }];

let moto: MotoServer;
let inspect: AwsClients;
let groupIds: string[];
const firewalls: SecurityGroupFirewall[] = [];
const managers: GrantManager[] = [];

beforeAll(async () => {
  moto = await startMoto();
}, 180_000);
afterAll(async () => {
  await moto?.stop();
});
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.release()));
  await Promise.all(firewalls.splice(0).map((f) => f.close()));
});

async function freshCloud(): Promise<void> {
  await moto.reset();
  inspect = moto.clients();
  ({ groupIds } = await createBrokerGroups(inspect.ec2, 1));
  await createTable(inspect.dynamodb, 'grants', 'ttl');
}

/** One receiver's claims: its own DynamoDB client on the shared grants table. */
const sharedClaims = (): DynamoConnectClaims =>
  new DynamoConnectClaims({ dynamodb: moto.clients().dynamodb, tableName: 'grants' });

async function rawItem(pk: string): Promise<Record<string, unknown> | undefined> {
  const result = await inspect.dynamodb.send(
    new GetItemCommand({ TableName: 'grants', Key: { pk: { S: pk } }, ConsistentRead: true }),
  );
  return result.Item;
}

describe.each([
  ['in process', () => new InMemoryConnectClaimStore() as ConnectClaimStore],
  ['in the grants table', () => sharedClaims() as ConnectClaimStore],
])('the ConnectClaimStore contract, %s', (_, makeStore) => {
  beforeEach(() => freshCloud());

  it('revokes when the last device that knocked connects, not before', async () => {
    const store = makeStore();
    await store.knock('dev-x', ADDRESS, T0 + 30_000);
    await store.knock('dev-y', ADDRESS, T0 + 31_000);
    expect([...(await store.waiting(ADDRESS, T0))].sort()).toEqual(['dev-x', 'dev-y']);
    expect(await store.release('dev-x', ADDRESS, T0 + 1000)).toEqual({
      revoke: false,
      claimed: true,
      waiting: ['dev-y'],
    });
    expect(await store.release('dev-y', ADDRESS, T0 + 2000)).toEqual({
      revoke: true,
      claimed: true,
      waiting: [],
    });
    expect(await store.waiting(ADDRESS, T0 + 2000)).toEqual([]);
  });

  it('a device that never knocked there, or whose window ended, changes nothing', async () => {
    const store = makeStore();
    await store.knock('dev-x', ADDRESS, T0 + 10_000);
    await store.knock('dev-y', ADDRESS, T0 + 30_000);
    expect(await store.release('dev-z', ADDRESS, T0)).toEqual({
      revoke: false,
      claimed: false,
      waiting: ['dev-x', 'dev-y'].filter((d) => d !== 'dev-z'),
    });
    // dev-x's window ended: its late session shortens nobody's grant.
    expect(await store.release('dev-x', ADDRESS, T0 + 10_000)).toEqual({
      revoke: false,
      claimed: false,
      waiting: ['dev-y'],
    });
    expect(await store.waiting(ADDRESS, T0 + 10_000)).toEqual(['dev-y']);
  });

  it('a later knock extends a claim; a shorter one never shortens it', async () => {
    const store = makeStore();
    await store.knock('dev-x', ADDRESS, T0 + 30_000);
    await store.knock('dev-x', ADDRESS, T0 + 5000);
    expect(await store.waiting(ADDRESS, T0 + 20_000)).toEqual(['dev-x']);
    await store.knock('dev-x', ADDRESS, T0 + 40_000);
    expect(await store.waiting(ADDRESS, T0 + 35_000)).toEqual(['dev-x']);
  });
});

describe('shared in the grants table: several receivers', () => {
  beforeEach(() => freshCloud());

  it('GIVEN two receivers told of one session THEN exactly one release is claimed, and both are told to revoke', async () => {
    const a = sharedClaims();
    const b = sharedClaims();
    await a.knock('dev-x', ADDRESS, T0 + 30_000);
    const releases = await Promise.all([
      a.release('dev-x', ADDRESS, T0 + 1000),
      b.release('dev-x', ADDRESS, T0 + 1000),
    ]);
    expect(releases.filter((r) => r.claimed)).toHaveLength(1);
    expect(releases.map((r) => r.revoke)).toEqual([true, true]);
    // A third report of the same session (a reconnect) still finds nobody waiting: idempotent.
    expect((await b.release('dev-x', ADDRESS, T0 + 2000)).revoke).toBe(true);
  });

  it('GIVEN another device still waits WHEN the session is reported again THEN no receiver revokes', async () => {
    const a = sharedClaims();
    const b = sharedClaims();
    await a.knock('dev-x', ADDRESS, T0 + 30_000);
    await b.knock('dev-y', ADDRESS, T0 + 30_000);
    expect(await b.release('dev-x', ADDRESS, T0 + 1000)).toEqual({
      revoke: false,
      claimed: true,
      waiting: ['dev-y'],
    });
    expect(await a.release('dev-x', ADDRESS, T0 + 1000)).toEqual({
      revoke: false,
      claimed: false,
      waiting: ['dev-y'],
    });
  });

  it('GIVEN a released device knocks again THEN it waits again, and a report of its old session does not revoke', async () => {
    const a = sharedClaims();
    await a.knock('dev-x', ADDRESS, T0 + 30_000);
    await a.release('dev-x', ADDRESS, T0 + 1000);
    await a.knock('dev-x', ADDRESS, T0 + 40_000);
    expect(await sharedClaims().waiting(ADDRESS, T0 + 10_000)).toEqual(['dev-x']);
    expect(await sharedClaims().release('dev-z', ADDRESS, T0 + 10_000)).toMatchObject({ revoke: false });
    const item = await rawItem(ADDRESS);
    expect(Object.keys(item ?? {}).sort()).toEqual(['pk', 'ttl', 'w:dev-x']);
  });

  it('GIVEN claims written before the grant THEN the grant put keeps them; get and the scans ignore claims-only items; delete drops them', async () => {
    const claims = sharedClaims();
    const grants = new DynamoGrantStore({ dynamodb: inspect.dynamodb, tableName: 'grants' });
    await claims.knock('dev-x', ADDRESS, T0 + 30_000);
    await claims.knock('dev-x', PREFIX, T0 + 30_000);
    expect(await grants.get(ADDRESS)).toBeUndefined();
    expect(await grants.listActive(T0)).toEqual([]);
    expect(await grants.listExpired(T0 + 60_000)).toEqual([]);
    const grant = {
      deviceId: 'dev-x',
      address: ADDRESS,
      family: 4 as const,
      access: TCP_8883,
      openedAt: T0,
      expiresAt: T0 + 30_000,
      securityGroupIds: ['sg-1'],
    };
    await grants.put(grant);
    await grants.put({ ...grant, expiresAt: T0 + 20_000 }); // a late, shorter write changes nothing
    await grants.put({ ...grant, expiresAt: T0 + 31_000, securityGroupIds: [] });
    expect(await grants.get(ADDRESS)).toEqual({ ...grant, expiresAt: T0 + 31_000, securityGroupIds: [] });
    expect((await grants.listActive(T0)).map((g) => g.address)).toEqual([ADDRESS]);
    expect(await claims.waiting(ADDRESS, T0)).toEqual(['dev-x']);
    expect(await grants.delete(ADDRESS)).toBe('deleted');
    expect(await claims.waiting(ADDRESS, T0)).toEqual([]);
    expect(await rawItem(ADDRESS)).toBeUndefined();
  });
});

/** One receiver: its own clients, firewall (its own picture of the group) and grant manager, the shared table. */
function receiver(time: VirtualTime, audit: MemoryAuditSink): GrantManager {
  const clients = moto.clients();
  const firewall = new SecurityGroupFirewall({
    ec2: clients.ec2,
    securityGroupIds: groupIds,
    brokerAccess: TCP_8883,
    clock: time,
    timers: globalTimers,
    retry: immediateRetry(3),
    metrics: noMetrics,
    grantStore: new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }),
    coalesceWindowMs: 1,
  });
  firewalls.push(firewall);
  const manager = new GrantManager({
    firewall,
    expiry: { schedule: async () => undefined },
    audit,
    clock: time,
    timers: time,
    connectClaims: new DynamoConnectClaims({ dynamodb: clients.dynamodb, tableName: 'grants' }),
  });
  managers.push(manager);
  return manager;
}

async function ruleCidrs(): Promise<string[]> {
  const result = await inspect.ec2.send(
    new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: groupIds }] }),
  );
  return (result.SecurityGroupRules ?? [])
    .filter((r) => r.IsEgress === false)
    .map((r) => r.CidrIpv4 ?? r.CidrIpv6 ?? '');
}

const revokedReasons = (audit: MemoryAuditSink) =>
  audit.events.flatMap((e) => (e.type === 'grant.revoked' ? [e.reason] : []));

describe.each([
  {
    name: 'the same address',
    x: { address: ADDRESS, family: 4 } satisfies GrantSource,
    y: { address: ADDRESS, family: 4 } satisfies GrantSource,
    xSession: ADDRESS,
    ySession: ADDRESS,
    cidr: `${ADDRESS}/32`,
  },
  {
    name: 'the same /24 (prefix grants)',
    x: { address: '203.0.113.0', family: 4, prefixLength: 24 } satisfies GrantSource,
    y: { address: '203.0.113.0', family: 4, prefixLength: 24 } satisfies GrantSource,
    xSession: '203.0.113.10',
    ySession: '203.0.113.20',
    cidr: PREFIX,
  },
])(
  'closed on connect with two receivers behind the load balancer: $name',
  ({ x, y, xSession, ySession, cidr }) => {
    let time: VirtualTime;
    let audit: MemoryAuditSink;
    let a: GrantManager;
    let b: GrantManager;

    beforeEach(async () => {
      await freshCloud();
      time = new VirtualTime(T0);
      audit = new MemoryAuditSink();
      a = receiver(time, audit);
      b = receiver(time, audit);
      expect((await a.open('dev-x', x, TCP_8883, 30)).ok).toBe(true);
      await time.advance(1000);
      expect((await b.open('dev-y', y, TCP_8883, 30)).ok).toBe(true); // extends A's rule: ends at T0 + 31 s
      expect(await ruleCidrs()).toEqual([cidr]);
    });

    it.each([
      ['A first', () => [a, b]],
      ['B first', () => [b, a]],
    ])(
      'GIVEN X connected (reported to both) WHEN Y connects (reported to both, %s) THEN the rule stays until Y, then goes',
      async (_, order) => {
        const [first, second] = order() as [GrantManager, GrantManager];
        // X's session, reported to both receivers: Y still waits, so nobody closes.
        expect(await a.sessionEstablished('dev-x', xSession)).toEqual([]);
        expect(await b.sessionEstablished('dev-x', xSession)).toEqual([]);
        expect(await ruleCidrs()).toEqual([cidr]);
        // A device that never knocked there: nothing changes.
        expect(await a.sessionEstablished('dev-z', xSession)).toEqual([]);
        expect(await b.sessionEstablished('dev-z', xSession)).toEqual([]);
        expect(await ruleCidrs()).toEqual([cidr]);
        await time.advance(1000);
        // Y's session: whichever receiver hears it first, the rule is gone once both calls returned.
        const closed = [
          ...(await first.sessionEstablished('dev-y', ySession)),
          ...(await second.sessionEstablished('dev-y', ySession)),
        ];
        expect(closed.length).toBeGreaterThan(0);
        expect(await ruleCidrs()).toEqual([]);
        expect(await rawItem(cidr.endsWith('/32') ? ADDRESS : cidr)).toBeUndefined();
        expect(a.active()).toEqual([]);
        expect(b.active()).toEqual([]);
        expect(new Set(revokedReasons(audit))).toEqual(new Set(['connected']));
      },
    );

    it('GIVEN nobody connects WHEN the window ends THEN the rule goes (expired)', async () => {
      expect(await a.sessionEstablished('dev-z', xSession)).toEqual([]);
      await time.advance(29_000); // T0 + 30 s: A's grant ends, but B extended the rule to T0 + 31 s
      await eventually(() => revokedReasons(audit).length === 1);
      expect(await ruleCidrs()).toEqual([cidr]);
      await time.advance(1000); // T0 + 31 s: B's grant ends, and the rule with it
      await eventually(() => revokedReasons(audit).length === 2);
      expect(await ruleCidrs()).toEqual([]);
      expect(revokedReasons(audit)).toEqual(['expired', 'expired']);
    });
  },
);

/** Waits (real time, the EC2 and DynamoDB calls are real) until `done()`; fails after 10 s. */
async function eventually(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the grant managers');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
