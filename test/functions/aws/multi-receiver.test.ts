/**
 * Several receivers sharing one black cloud, against moto server (docs/scaling.md):
 *   1. a replay sent to two receivers at once is caught once (the shared nonce table), end to end over UDP;
 *   2. two receivers granting the same address at once end with one rule, and the later expiry wins (in the
 *      rule's description and in the grants table), in either order;
 *   3. a receiver whose own grant ends does not revoke a rule another receiver extended;
 *   4. revocation by any receiver, the revoker or the sweeper, in any order, is idempotent;
 *   5. the grants table is the single record of what is open: after each step its active items are exactly the
 *      addresses that have blackcloud rules;
 *   6. a receiver behind the load balancer answers the TCP health port, and hands its grants over at shutdown.
 * Each receiver has its own SDK clients and its own picture of the groups, as separate processes would.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { connect } from 'node:net';
import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { DescribeSecurityGroupRulesCommand } from '@aws-sdk/client-ec2';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import { encodeGrantMessage } from '../../../functions/aws/grant-message.ts';
import { noMetrics } from '../../../functions/aws/metrics.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import { parseRuleDescription } from '../../../functions/aws/rule-description.ts';
import { SecurityGroupFirewall } from '../../../functions/aws/security-group-firewall.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { revokeGrantMessages } from '../../../functions/revoker/revoke-grants.ts';
import { sweepExpiredGrants } from '../../../functions/sweeper/sweep.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import {
  createBrokerGroups,
  createQueue,
  createTable,
  createThingGroup,
  type MotoServer,
  stackReceiverEnv,
  startMoto,
} from '../../support/moto.ts';
import { immediateRetry } from '../../support/retry.ts';
import { globalTimers as timers } from '../../support/timers.ts';

const T0 = 1_700_000_000_000;
const ADDRESS = '198.51.100.7';

let moto: MotoServer;
let inspect: AwsClients;
let groupIds: string[];
let now: number;
const firewalls: SecurityGroupFirewall[] = [];

const retry = immediateRetry(3);

beforeAll(async () => {
  moto = await startMoto();
});
afterAll(async () => {
  await moto?.stop();
});
afterEach(async () => {
  await Promise.all(firewalls.splice(0).map((f) => f.close()));
});

async function freshCloud(groups = 2): Promise<void> {
  await moto.reset();
  inspect = moto.clients();
  ({ groupIds } = await createBrokerGroups(inspect.ec2, groups));
  await createTable(inspect.dynamodb, 'nonces', 'ttl');
  await createTable(inspect.dynamodb, 'grants', 'ttl');
  now = T0;
}

/** One receiver's firewall: its own clients, its own picture of the groups, the shared grants table. */
function receiverFirewall(): SecurityGroupFirewall {
  const clients = moto.clients();
  const firewall = new SecurityGroupFirewall({
    ec2: clients.ec2,
    securityGroupIds: groupIds,
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: { now: () => now },
    timers,
    retry,
    metrics: noMetrics,
    grantStore: new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }),
    coalesceWindowMs: 1,
  });
  firewalls.push(firewall);
  return firewall;
}

const grant = (seconds: number, deviceId = 'dev-7', openedAt = T0, address = ADDRESS): Grant => ({
  deviceId,
  address,
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt,
  expiresAt: openedAt + seconds * 1000,
});

interface SeenRule {
  readonly groupId: string;
  readonly cidr: string;
  readonly expiresAtSeconds: number | undefined;
}

/** Every ingress rule in the broker groups, as EC2 (moto) has it. */
async function brokerRules(): Promise<SeenRule[]> {
  const result = await inspect.ec2.send(
    new DescribeSecurityGroupRulesCommand({ Filters: [{ Name: 'group-id', Values: groupIds }] }),
  );
  return (result.SecurityGroupRules ?? [])
    .filter((r) => r.IsEgress === false)
    .map((r) => ({
      groupId: r.GroupId ?? '',
      cidr: r.CidrIpv4 ?? r.CidrIpv6 ?? '',
      expiresAtSeconds: parseRuleDescription(r.Description ?? '')?.expiresAtSeconds,
    }));
}

/** The single-record check: active grants-table items are exactly the addresses with blackcloud rules. */
async function expectTableMatchesRules(): Promise<void> {
  const store = new DynamoGrantStore({ dynamodb: inspect.dynamodb, tableName: 'grants' });
  const active = (await store.listActive(now)).map((g) => `${g.address}/32`).sort();
  const ruled = [...new Set((await brokerRules()).map((r) => r.cidr))].sort();
  expect(active).toEqual(ruled);
}

describe('two receivers granting the same address at once', () => {
  beforeEach(() => freshCloud());

  it.each([
    ['the later expiry first', 60, 30],
    ['the earlier expiry first', 30, 60],
  ])(
    'GIVEN %s THEN one rule, and the later expiry wins in the rule and the table',
    async (_, first, second) => {
      const a = receiverFirewall();
      const b = receiverFirewall();
      // Both knocks land within the same moment; neither receiver has seen the other's rule.
      await Promise.all([a.allow([grant(first, 'dev-7')]), b.allow([grant(second, 'dev-7')])]);
      const rules = await brokerRules();
      expect(rules).toHaveLength(1);
      expect(rules[0]).toMatchObject({ cidr: `${ADDRESS}/32`, expiresAtSeconds: (T0 + 60_000) / 1000 });
      const stored = await new DynamoGrantStore({ dynamodb: inspect.dynamodb, tableName: 'grants' }).get(
        ADDRESS,
      );
      expect(stored?.expiresAt).toBe(T0 + 60_000);
      await expectTableMatchesRules();
    },
  );

  it('GIVEN three receivers and twelve knocks from one address at once THEN one rule, kept open until the latest expiry', async () => {
    const receivers = [receiverFirewall(), receiverFirewall(), receiverFirewall()];
    await Promise.all(
      Array.from({ length: 12 }, (_, i) => receivers[i % 3]!.allow([grant(30 + i, `dev-${i}`)])),
    );
    const rules = await brokerRules();
    expect(rules.map((r) => r.cidr)).toEqual([`${ADDRESS}/32`]);
    const store = new DynamoGrantStore({ dynamodb: inspect.dynamodb, tableName: 'grants' });
    expect((await store.get(ADDRESS))?.expiresAt).toBe(T0 + 41_000);
    await expectTableMatchesRules();
    // Racing extensions may leave an earlier expiry in the description; the table's later one still rules:
    // neither the sweeper nor a receiver closes the rule before it.
    const deps = {
      ec2: moto.clients().ec2,
      grants: store,
      securityGroupIds: groupIds,
      clock: { now: () => now },
      retry,
    };
    now = T0 + 40_999;
    expect((await sweepExpiredGrants(deps)).revoked).toEqual([]);
    await receivers[0]!.revoke([grant(33, 'dev-3')]);
    expect(await brokerRules()).toHaveLength(1);
    now = T0 + 41_000;
    expect((await sweepExpiredGrants(deps)).revoked.map((r) => r.address)).toEqual([ADDRESS]);
    expect(await brokerRules()).toEqual([]);
  });

  it('GIVEN B extended what A opened WHEN A revokes its own (earlier) grant THEN the rule stays open', async () => {
    const a = receiverFirewall();
    const b = receiverFirewall();
    await a.allow([grant(30)]);
    now = T0 + 20_000;
    await b.allow([grant(30, 'dev-7', now)]); // ends at T0 + 50 s
    now = T0 + 30_000; // A's grant has ended: its timer revokes it
    await a.revoke([grant(30)]);
    expect((await brokerRules()).map((r) => r.expiresAtSeconds)).toEqual([(T0 + 50_000) / 1000]);
    await expectTableMatchesRules();
    // A does not shorten the extension either when the device knocks A again for less.
    await a.allow([grant(5, 'dev-7', now)]);
    expect((await brokerRules()).map((r) => r.expiresAtSeconds)).toEqual([(T0 + 50_000) / 1000]);
    // At B's expiry, B's revoke closes it.
    now = T0 + 50_000;
    await b.revoke([grant(30, 'dev-7', T0 + 20_000)]);
    expect(await brokerRules()).toEqual([]);
    await expectTableMatchesRules();
  });
});

describe('revocation by any receiver, the revoker or the sweeper is idempotent', () => {
  beforeEach(() => freshCloud());

  it('GIVEN a rule opened by A WHEN B, the revoker, the sweeper and A all revoke it THEN each succeeds once gone', async () => {
    const a = receiverFirewall();
    const b = receiverFirewall();
    const g = grant(30);
    await a.allow([g]);
    await b.allow([grant(30, 'dev-8', T0, '198.51.100.8')]); // another device, stays open
    await expectTableMatchesRules();
    now = T0 + 30_000;

    // B never opened it: it looks it up and revokes it.
    await expect(b.revoke([g])).resolves.toBeUndefined();
    expect((await brokerRules()).map((r) => r.cidr)).toEqual(['198.51.100.8/32']);
    const store = new DynamoGrantStore({ dynamodb: inspect.dynamodb, tableName: 'grants' });
    const deps = {
      ec2: moto.clients().ec2,
      grants: store,
      securityGroupIds: groupIds,
      clock: { now: () => now },
      retry,
    };
    const revoked = await revokeGrantMessages([{ messageId: 'm', body: encodeGrantMessage(g) }], deps);
    expect(revoked).toEqual({
      outcomes: [
        { messageId: 'm', result: 'already-gone', deviceId: 'dev-7', address: ADDRESS, revokedRules: 0 },
      ],
      batchItemFailures: [],
    });
    const swept = await sweepExpiredGrants(deps);
    // The other device's grant ended too: only it is swept.
    expect(swept.revoked.map((r) => r.address)).toEqual(['198.51.100.8']);
    expect(swept.failures).toEqual([]);
    // A's own timer fires last: its picture says open, EC2 says NotFound: success.
    await expect(a.revoke([g])).resolves.toBeUndefined();
    // And everything once more, in reverse.
    expect((await sweepExpiredGrants(deps)).revoked).toEqual([]);
    await expect(b.revoke([g])).resolves.toBeUndefined();
    expect(await brokerRules()).toEqual([]);
    await expectTableMatchesRules();
    expect((await inspect.dynamodb.send(new ScanCommand({ TableName: 'grants' }))).Items).toEqual([]);
  });

  it('GIVEN two receivers revoking the same rules at the same moment THEN both succeed and nothing is left', async () => {
    const a = receiverFirewall();
    const b = receiverFirewall();
    const grants = Array.from({ length: 5 }, (_, i) => grant(30, `dev-${i}`, T0, `198.51.100.${20 + i}`));
    await a.allow(grants);
    await b.allow(grants.slice(0, 2)); // B knows two of them (Duplicate → describe → same expiry: nothing to do)
    expect(await brokerRules()).toHaveLength(5);
    now = T0 + 30_000;
    await Promise.all([a.revoke(grants), b.revoke(grants)]);
    expect(await brokerRules()).toEqual([]);
    await expectTableMatchesRules();
  });
});

describe('receivers end to end: the shared nonce table, the health port, shutdown handover', () => {
  const KEY = new Uint8Array(32).fill(0x3c);
  const receivers: AwsReceiver[] = [];
  const outcomes: Outcome[][] = [[], []];

  beforeAll(async () => {
    await freshCloud(1);
    await createTable(inspect.dynamodb, 'devices');
    const queueUrl = await createQueue(inspect.sqs, 'revoke');
    await createThingGroup(inspect.iot, 'fleet');
    await inspect.iot.send(
      new CreateThingCommand({
        thingName: 'dev-1',
        attributePayload: {
          attributes: { enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' },
        },
      }),
    );
    await inspect.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-1' }));
    await inspect.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [7]) }));
    await inspect.dynamodb.send(
      new PutItemCommand({ TableName: 'devices', Item: keyItem('dev-1', { keyId: 7, key: KEY }) }),
    );
    const config = loadAwsReceiverConfig({
      ...stackReceiverEnv(moto.endpoint, groupIds.join(','), queueUrl),
      BLACKCLOUD_SHUTDOWN: 'handover',
      BLACKCLOUD_RECEIVERS: '2',
    });
    for (const index of [0, 1]) {
      receivers.push(
        await startAwsReceiver(config, {
          host: '127.0.0.1',
          port: 0,
          healthPort: 0,
          clients: moto.clients(),
          out: { write: () => true },
          onOutcome: (outcome) => outcomes[index]!.push(outcome),
        }),
      );
    }
  });

  afterAll(async () => {
    await Promise.all(receivers.map((r) => r.close()));
  });

  async function waitFor(condition: () => boolean): Promise<void> {
    while (!condition()) await new Promise((resolve) => setImmediate(resolve));
  }

  it('GIVEN one packet sent to both receivers at once THEN exactly one accepts it, the other reports a replay', async () => {
    const packet = encodeBc1(
      { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
      { keyId: 7, key: KEY, nonce: randomBytes(12) },
    );
    const socket = createSocket('udp4');
    let answered = false;
    socket.on('message', () => {
      answered = true;
    });
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
    for (const receiver of receivers) {
      socket.send(packet, receiver.receiver.address.port, '127.0.0.1');
    }
    await waitFor(() => outcomes[0]!.length + outcomes[1]!.length === 2);
    const all = [...outcomes[0]!, ...outcomes[1]!];
    expect(all.filter((o) => o.ok)).toHaveLength(1);
    expect(all.filter((o) => !o.ok)).toEqual([{ ok: false, reason: 'replay' }]);
    expect((await inspect.dynamodb.send(new ScanCommand({ TableName: 'nonces' }))).Items).toHaveLength(1);
    expect((await brokerRules()).map((r) => r.cidr)).toEqual(['127.0.0.1/32']);
    socket.close();
    expect(answered).toBe(false);
  });

  it('GIVEN BLACKCLOUD_RECEIVERS=2 THEN each receiver holds its own share of the rule slots (a lease item each)', async () => {
    expect(receivers.map((r) => r.slotShare?.share?.index).sort()).toEqual([0, 1]);
    const items = await inspect.dynamodb.send(new ScanCommand({ TableName: 'devices' }));
    const leases = (items.Items ?? [])
      .map((item) => item.pk?.S)
      .filter((pk) => pk?.startsWith('lease#grant-slots-'));
    expect(leases.sort()).toEqual(['lease#grant-slots-0-of-2', 'lease#grant-slots-1-of-2']);
  });

  it('GIVEN the health port WHEN the balancer connects THEN it is accepted and closed with nothing written', async () => {
    const port = receivers[0]!.health?.address.port;
    expect(port).toBeGreaterThan(0);
    const received = await new Promise<number>((resolve, reject) => {
      let bytes = 0;
      const client = connect({ host: '127.0.0.1', port: port ?? 0 });
      client.on('data', (chunk) => {
        bytes += chunk.length;
      });
      client.on('close', () => resolve(bytes));
      client.on('error', reject);
    });
    expect(received).toBe(0);
  });

  it('GIVEN shutdown in handover mode THEN the health port closes and the open grant is left to the backstops', async () => {
    const [first] = receivers;
    const port = first!.health?.address.port ?? 0;
    await first!.close();
    const refused = await new Promise<string>((resolve) => {
      const client = connect({ host: '127.0.0.1', port });
      client.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      client.on('connect', () => resolve('connected'));
    });
    expect(refused).toBe('ECONNREFUSED');
    await receivers[1]!.close();
    // Neither receiver revoked the grant: the rule and its grants item are still there for the revoker/sweeper.
    expect((await brokerRules()).map((r) => r.cidr)).toEqual(['127.0.0.1/32']);
    const store = new DynamoGrantStore({ dynamodb: inspect.dynamodb, tableName: 'grants' });
    expect((await store.get('127.0.0.1'))?.deviceId).toBe('dev-1');
    // Their shares of the rule slots are released for the receivers replacing them.
    const items = await inspect.dynamodb.send(new ScanCommand({ TableName: 'devices' }));
    expect((items.Items ?? []).filter((item) => item.pk?.S?.startsWith('lease#grant-slots-'))).toEqual([]);
  });
});
