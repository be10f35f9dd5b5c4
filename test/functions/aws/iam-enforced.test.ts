/**
 * IAM proven by enforcement: each runtime runs against moto server with IAM enforced, signed by a moto IAM user
 * whose only policy is what the synthesized stack grants its role (test/support/iam.ts resolves the template's
 * statements to the moto resources). A call the template does not allow fails with AccessDenied, exactly as on
 * AWS: the receiver (knock opens a rule, shutdown revokes it), the revoker and the sweeper logic, key rotation on
 * AWS (DynamoKeyStore through the controller, the controller lease, the slot share leases), and the operator CLI's fleet (devices add,
 * list, disable) under the operator policy of infra/operator-policy.ts. Setup and checks use an admin IAM user.
 */
import { createPrivateKey, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateStackCommand } from '@aws-sdk/client-cloudformation';
import { CreateLogGroupCommand } from '@aws-sdk/client-cloudwatch-logs';
import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { AuthorizeSecurityGroupIngressCommand, DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import { AddThingToThingGroupCommand, CreateThingCommand, CreateThingTypeCommand } from '@aws-sdk/client-iot';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createOperatorClients, type OperatorClients } from '../../../cli/fleet/aws-clients.ts';
import { AwsFleet, openAwsFleet } from '../../../cli/fleet/aws-fleet.ts';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { ControllerLease } from '../../../functions/aws/controller-lease.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import { DynamoKeyStore } from '../../../functions/aws/dynamo-key-store.ts';
import { encodeGrantMessage } from '../../../functions/aws/grant-message.ts';
import { IotDeviceDirectory } from '../../../functions/aws/iot-device-directory.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import { formatRuleDescription } from '../../../functions/aws/rule-description.ts';
import { SlotShareLease } from '../../../functions/aws/slot-share-lease.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { encodeKeyAck, makeKeyAck } from '../../../functions/core/key-messages.ts';
import type { ControllerSession } from '../../../functions/core/key-rotation-interfaces.ts';
import { openKeyOffer } from '../../../functions/core/sealed-key-offer.ts';
import { STACK_OUTPUTS } from '../../../functions/core/stack-outputs.ts';
import { systemRandom, systemTimers } from '../../../functions/core/system.ts';
import { keyAckTopic } from '../../../functions/core/topics.ts';
import { KeyRotationController } from '../../../functions/key-rotation/key-rotation-controller.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { createCa } from '../../../functions/pki/certificate-authority.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { revokeGrantMessages } from '../../../functions/revoker/revoke-grants.ts';
import { sweepExpiredGrants } from '../../../functions/sweeper/sweep.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import {
  type AccessKey,
  ADMIN_POLICY,
  createIamUser,
  enforceIam,
  iamClients,
  type MotoStackNames,
  type Principal,
  readableAccessDenied,
  relaxIam,
  resolvePolicy,
  type SynthesizedPolicies,
  synthesizePolicies,
} from '../../support/iam.ts';
import {
  createStackResources,
  MOTO_REGION,
  type MotoServer,
  stackReceiverEnv,
  startMoto,
} from '../../support/moto.ts';
import { immediateRetry } from '../../support/retry.ts';
import { removeDir, tempDir } from '../local/helpers.ts';

const KEY = new Uint8Array(32).fill(0x5a);
const retry = immediateRetry(2);

let policies: SynthesizedPolicies;
let moto: MotoServer;
let names: MotoStackNames;
let admin: AwsClients;
let queueUrl: string;
let groupId: string;

beforeAll(async () => {
  policies = synthesizePolicies();
  moto = await startMoto();
}, 180_000);

afterAll(async () => {
  await moto?.stop();
});

/** Fresh moto state shaped like the stack, an admin user, then IAM enforced. */
beforeEach(async () => {
  await relaxIam(moto);
  await moto.reset();
  const setup = moto.clients();
  const resources = await createStackResources(setup);
  groupId = resources.groupIds[0] ?? '';
  queueUrl = resources.queueUrl;
  names = {
    noncesTable: 'nonces',
    devicesTable: 'devices',
    grantsTable: 'grants',
    revokeQueueName: 'revoke',
    auditLogGroup: 'audit',
    brokerSecurityGroupIds: resources.groupIds,
  };
  await setup.iot.send(
    new CreateThingCommand({
      thingName: 'dev-1',
      attributePayload: { attributes: { enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' } },
    }),
  );
  await setup.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-1' }));
  await setup.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [42]) }));
  await setup.dynamodb.send(
    new PutItemCommand({ TableName: 'devices', Item: keyItem('dev-1', { keyId: 42, key: KEY }) }),
  );
  admin = iamClients(moto, await createIamUser(moto, 'admin', ADMIN_POLICY));
});

/** A user holding exactly `principal`'s synthesized policy; call before `enforceIam`. */
async function userFor(principal: Principal, without: readonly string[] = []): Promise<AccessKey> {
  return createIamUser(moto, `${principal}-user`, resolvePolicy(policies, principal, names, { without }));
}

async function brokerRanges(): Promise<{ cidr?: string; description?: string }[]> {
  const result = await admin.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] }));
  return (result.SecurityGroups?.[0]?.IpPermissions ?? []).flatMap((p) =>
    (p.IpRanges ?? []).map((r) => ({ cidr: r.CidrIp, description: r.Description })),
  );
}

async function scan(table: string): Promise<unknown[]> {
  return (await admin.dynamodb.send(new ScanCommand({ TableName: table }))).Items ?? [];
}

describe('the AWS receiver under its synthesized role', () => {
  let receiver: AwsReceiver | undefined;
  afterEach(async () => {
    await receiver?.close();
    receiver = undefined;
  });

  async function startReceiver(key: AccessKey, denied: string[]) {
    const outcomes: Outcome[] = [];
    const waiters: (() => void)[] = [];
    const lines: string[] = [];
    const config = loadAwsReceiverConfig({
      ...stackReceiverEnv(moto.endpoint, groupId, queueUrl),
    });
    receiver = await startAwsReceiver(config, {
      host: '127.0.0.1',
      port: 0,
      clients: iamClients(moto, key, denied),
      out: { write: (line: string) => lines.push(line) },
      onOutcome: (outcome) => {
        outcomes.push(outcome);
        for (const wake of waiters.splice(0)) wake();
      },
    });
    const port = receiver.receiver.address.port;
    const knock = async (): Promise<Outcome> => {
      const packet = encodeBc1(
        { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
        { keyId: 42, key: KEY, nonce: randomBytes(12) },
      );
      const seen = outcomes.length;
      const socket = createSocket('udp4');
      await new Promise<void>((resolve, reject) =>
        socket.send(packet, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
      );
      socket.close();
      while (outcomes.length <= seen) await new Promise<void>((resolve) => waiters.push(resolve));
      return outcomes[seen]!;
    };
    return { knock, lines };
  }

  it('GIVEN IAM enforced and the receiver role policy WHEN a device knocks THEN the rule opens; shutdown revokes it', async () => {
    const key = await userFor('receiver');
    await enforceIam(moto);
    const denied: string[] = [];
    const { knock, lines } = await startReceiver(key, denied);
    const accepted = await knock();
    expect(denied).toEqual([]);
    expect(lines.filter((line) => line.includes('grant.failed'))).toEqual([]);
    expect(accepted.ok).toBe(true);
    expect(await brokerRanges()).toEqual([
      { cidr: '127.0.0.1/32', description: expect.stringMatching(/^blackcloud:dev-1:exp=\d+$/) },
    ]);
    expect(await scan('nonces')).toHaveLength(1);
    expect(await scan('grants')).toHaveLength(1);
    await receiver?.close();
    receiver = undefined;
    expect(await brokerRanges()).toEqual([]);
    expect(await scan('grants')).toEqual([]);
    expect(denied).toEqual([]);
  });

  it('GIVEN the same policy without ec2:AuthorizeSecurityGroupIngress WHEN a device knocks THEN moto refuses the rule with AccessDenied (enforcement is live)', async () => {
    const key = await userFor('receiver', ['ec2:AuthorizeSecurityGroupIngress']);
    await enforceIam(moto);
    const denied: string[] = [];
    const { knock, lines } = await startReceiver(key, denied);
    await knock();
    expect(denied).toEqual([
      'AccessDenied: User: arn:aws:iam::123456789012:user/receiver-user is not authorized to perform: ' +
        'ec2:AuthorizeSecurityGroupIngress',
    ]);
    expect(lines.some((line) => line.includes('grant.failed') && line.includes('AccessDenied'))).toBe(true);
    expect(await brokerRanges()).toEqual([]);
  });
});

const T0 = 1_700_000_000_000;
const grant = (n: number, openedAt = T0): Grant => ({
  deviceId: `dev-${n}`,
  address: `198.51.100.${n}`,
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt,
  expiresAt: openedAt + 30_000,
});

/** An open grant as the receiver leaves it: the /32 rule and the grants item. */
async function openGrant(g: Grant): Promise<void> {
  await admin.ec2.send(
    new AuthorizeSecurityGroupIngressCommand({
      GroupId: groupId,
      IpPermissions: [
        {
          IpProtocol: 'tcp',
          FromPort: 8883,
          ToPort: 8883,
          IpRanges: [
            { CidrIp: `${g.address}/32`, Description: formatRuleDescription(g.deviceId, g.expiresAt / 1000) },
          ],
        },
      ],
    }),
  );
  await new DynamoGrantStore({ dynamodb: admin.dynamodb, tableName: 'grants' }).put({
    ...g,
    securityGroupIds: [groupId],
  });
}

/** What the revoker and the sweeper Lambdas hand their logic, on `clients`, at `now`. */
const revocationDeps = (clients: AwsClients, now: number) => ({
  ec2: clients.ec2,
  grants: new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }),
  securityGroupIds: [groupId],
  clock: { now: () => now },
  retry,
});

describe('the revoker and the sweeper under their synthesized roles', () => {
  it('GIVEN IAM enforced and the revoker role policy WHEN a due grant message arrives THEN the rule and the item are gone', async () => {
    const key = await userFor('revoker');
    await enforceIam(moto);
    await openGrant(grant(1));
    const denied: string[] = [];
    const clients = iamClients(moto, key, denied);
    const result = await revokeGrantMessages(
      [{ messageId: 'm1', body: encodeGrantMessage(grant(1)) }],
      revocationDeps(clients, T0 + 30_000),
    );
    expect(denied).toEqual([]);
    expect(result.outcomes).toEqual([
      { messageId: 'm1', result: 'revoked', deviceId: 'dev-1', address: '198.51.100.1', revokedRules: 1 },
    ]);
    expect(await brokerRanges()).toEqual([]);
    expect(await scan('grants')).toEqual([]);
  });

  it('GIVEN IAM enforced and the sweeper role policy WHEN it sweeps THEN the expired rule and its item are gone', async () => {
    const key = await userFor('sweeper');
    await enforceIam(moto);
    await openGrant(grant(2));
    const denied: string[] = [];
    const clients = iamClients(moto, key, denied);
    const report = await sweepExpiredGrants(revocationDeps(clients, T0 + 31_000));
    expect(denied).toEqual([]);
    expect(report.failures).toEqual([]);
    expect(report.revoked.map((rule) => rule.address)).toEqual(['198.51.100.2']);
    expect(report.deletedGrants).toEqual(['198.51.100.2']);
    expect(await brokerRanges()).toEqual([]);
  });

  it('GIVEN the sweeper policy without ec2:DescribeSecurityGroups WHEN it sweeps THEN the failure is AccessDenied naming it', async () => {
    const key = await userFor('sweeper', ['ec2:DescribeSecurityGroups']);
    await enforceIam(moto);
    await openGrant(grant(3));
    const clients = iamClients(moto, key);
    const report = await sweepExpiredGrants(revocationDeps(clients, T0 + 31_000));
    expect(report.failures.map((failure) => failure.error).join('\n')).toMatch(
      /not authorized to perform: ec2:DescribeSecurityGroups/,
    );
    expect(await brokerRanges()).toHaveLength(1);
  });
});

class RecordingSession implements ControllerSession {
  readonly published: { topic: string; payload: Uint8Array }[] = [];
  async publish(topic: string, payload: string | Uint8Array): Promise<void> {
    this.published.push({ topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload });
  }
}

describe('key rotation on AWS under the receiver role', () => {
  it('GIVEN IAM enforced WHEN the controller offers, confirms and retires a key THEN every step is allowed', async () => {
    const key = await userFor('receiver');
    await enforceIam(moto);
    const denied: string[] = [];
    const clients = iamClients(moto, key, denied);
    let now = 1_800_000_000_000;
    const clock = { now: () => now };
    const directory = new IotDeviceDirectory({
      iot: clients.iot,
      dynamodb: clients.dynamodb,
      devicesTable: 'devices',
      fleetThingGroup: 'fleet',
      clock,
      defaultMaxOpenSeconds: 30,
    });
    const store = new DynamoKeyStore({
      iot: clients.iot,
      dynamodb: clients.dynamodb,
      devicesTable: 'devices',
      fleetThingGroup: 'fleet',
      directory,
    });
    const session = new RecordingSession();
    const audit = new MemoryAuditSink();
    const controller = new KeyRotationController({
      store,
      session,
      audit,
      clock,
      random: systemRandom,
      timers: systemTimers,
      config: { graceMs: 3_600_000 },
    });
    expect((await store.list()).map((device) => device.deviceId)).toEqual(['dev-1']);
    const rotated = await controller.rotate('dev-1');
    expect(rotated.status).toBe('offered');
    const offer = openKeyOffer([{ keyId: 42, key: KEY }], 'dev-1', session.published[0]!.payload);
    if (!offer.ok) throw new Error(offer.reason);
    const ack = encodeKeyAck(makeKeyAck(offer.value.key, offer.value.keyId, systemRandom.randomBytes(16)));
    expect(await controller.handleMessage(keyAckTopic('dev-1'), Buffer.from(ack))).toEqual({
      ok: true,
      deviceId: 'dev-1',
      keyId: offer.value.keyId,
    });
    now += 1000;
    expect(await controller.noteKeyUsed('dev-1', offer.value.keyId)).toEqual({
      type: 'remove',
      keyIds: [42],
    });
    expect(audit.events.map((event) => event.type)).toEqual(['key.offered', 'key.confirmed', 'key.retired']);
    expect(denied).toEqual([]);
  });

  it('GIVEN IAM enforced WHEN a receiver takes, renews and releases the controller lease THEN every write is allowed', async () => {
    const key = await userFor('receiver');
    await enforceIam(moto);
    const errors: unknown[] = [];
    const denied: string[] = [];
    const lease = new ControllerLease({
      dynamodb: iamClients(moto, key, denied).dynamodb,
      table: 'devices',
      holderId: 'holder-a',
      clock: { now: () => Date.now() },
      timers: systemTimers,
      onError: (error) => errors.push(error),
    });
    await lease.start();
    expect(lease.isLeader).toBe(true);
    await lease.tick();
    expect(lease.isLeader).toBe(true);
    await lease.release();
    await lease.stop();
    expect(errors).toEqual([]);
    expect(denied).toEqual([]);
    expect(lease.isLeader).toBe(false);
  });

  it('GIVEN IAM enforced WHEN two receivers take shares of the rule slots and release them THEN every write is allowed', async () => {
    const key = await userFor('receiver');
    await enforceIam(moto);
    const errors: unknown[] = [];
    const denied: string[] = [];
    const shares = ['holder-a', 'holder-b'].map(
      (holderId) =>
        new SlotShareLease({
          dynamodb: iamClients(moto, key, denied).dynamodb,
          table: 'devices',
          holderId,
          of: 2,
          clock: { now: () => Date.now() },
          timers: systemTimers,
          onShareChange: () => {},
          onError: (error) => errors.push(error),
        }),
    );
    for (const share of shares) await share.start();
    expect(shares.map((share) => share.share?.index).sort()).toEqual([0, 1]);
    for (const share of shares) await share.close();
    expect(errors).toEqual([]);
    expect(denied).toEqual([]);
    expect(shares.map((share) => share.share)).toEqual([undefined, undefined]);
  });
});

describe('the operator CLI under the operator policy (infra/operator-policy.ts)', () => {
  const saved = {
    id: process.env.AWS_ACCESS_KEY_ID,
    secret: process.env.AWS_SECRET_ACCESS_KEY,
    token: process.env.AWS_SESSION_TOKEN,
    region: process.env.AWS_REGION,
    endpoint: process.env.BLACKCLOUD_AWS_ENDPOINT,
  };
  let work: string;
  let operatorClients: OperatorClients | undefined;

  afterEach(async () => {
    for (const client of Object.values(operatorClients ?? {})) client.destroy();
    operatorClients = undefined;
    for (const [name, value] of [
      ['AWS_ACCESS_KEY_ID', saved.id],
      ['AWS_SECRET_ACCESS_KEY', saved.secret],
      ['AWS_SESSION_TOKEN', saved.token],
      ['AWS_REGION', saved.region],
      ['BLACKCLOUD_AWS_ENDPOINT', saved.endpoint],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    await removeDir(work);
  });

  it('GIVEN IAM enforced WHEN the operator adds, lists and disables a device with an open grant THEN every call is allowed', async () => {
    work = await tempDir('iam-fleet');
    const ca = await createCa('iam test CA');
    const caDir = join(work, 'ca');
    await mkdir(caDir, { mode: 0o700 });
    await writeFile(join(caDir, 'ca.crt'), ca.cert, { mode: 0o644 });
    await writeFile(join(caDir, 'ca.key'), createPrivateKey(ca.key).export({ type: 'sec1', format: 'pem' }), {
      mode: 0o600,
    });
    // Setup as admin: what the stack adds for the operator (audit log group, thing type, the stack's outputs).
    const adminKey = await createIamUser(moto, 'ops-admin', ADMIN_POLICY);
    const key = await userFor('operator');
    const env = (access: AccessKey) => {
      process.env.AWS_ACCESS_KEY_ID = access.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = access.secretAccessKey;
      delete process.env.AWS_SESSION_TOKEN;
      process.env.AWS_REGION = MOTO_REGION;
      process.env.BLACKCLOUD_AWS_ENDPOINT = moto.endpoint;
    };
    env(adminKey);
    const setup = createOperatorClients({ region: MOTO_REGION, endpoint: moto.endpoint });
    await setup.logs.send(new CreateLogGroupCommand({ logGroupName: 'audit' }));
    await setup.iot.send(new CreateThingTypeCommand({ thingTypeName: 'device' }));
    const outputs: Record<string, string> = {
      [STACK_OUTPUTS.devicesTable]: 'devices',
      [STACK_OUTPUTS.grantsTable]: 'grants',
      [STACK_OUTPUTS.fleetThingGroup]: 'fleet',
      [STACK_OUTPUTS.deviceThingType]: 'device',
      [STACK_OUTPUTS.brokerSecurityGroupIds]: groupId,
      [STACK_OUTPUTS.auditLogGroup]: 'audit',
      [STACK_OUTPUTS.receiverAddress]: '198.51.100.7',
      [STACK_OUTPUTS.spaPort]: '62201',
      [STACK_OUTPUTS.brokerAddress]: '198.51.100.8',
      [STACK_OUTPUTS.brokerPort]: '8883',
      [STACK_OUTPUTS.brokerTlsServerName]: 'broker.blackcloud.internal',
    };
    await setup.cloudformation.send(
      new CreateStackCommand({
        StackName: policies.stackName,
        TemplateBody: JSON.stringify({
          Resources: { Placeholder: { Type: 'AWS::SQS::Queue', Properties: {} } },
          Outputs: Object.fromEntries(
            Object.entries(outputs).map(([name, value]) => [name, { Value: value }]),
          ),
        }),
      }),
    );
    for (const client of Object.values(setup)) client.destroy();
    await enforceIam(moto);

    env(key);
    const opened = await openAwsFleet({ stack: policies.stackName, ca: caDir, out: join(work, 'bundles') });
    expect(opened).toBeInstanceOf(AwsFleet);
    operatorClients = createOperatorClients({ region: MOTO_REGION, endpoint: moto.endpoint });
    const denied: string[] = [];
    for (const client of Object.values(operatorClients)) readableAccessDenied(client, denied);
    const fleet = new AwsFleet({
      clients: operatorClients,
      stack: (opened as AwsFleet).stack,
      caDir,
      bundleDir: join(work, 'bundles'),
      operator: 'ops@laptop',
      retry,
    });
    const enrolled = await fleet.enrol({ deviceId: 'truck-1', format: 'native' });
    expect(enrolled.deviceId).toBe('truck-1');
    expect((await fleet.list()).map((device) => [device.id, device.enabled])).toEqual([
      ['dev-1', true],
      ['truck-1', true],
    ]);
    await openGrant({ ...grant(9, Date.now()), deviceId: 'truck-1' });
    const cut = await fleet.setEnabled('truck-1', false);
    expect(cut.revoked.map((g) => g.address)).toEqual(['198.51.100.9']);
    expect(await brokerRanges()).toEqual([]);
    expect((await fleet.show('truck-1'))?.enabled).toBe(false);
    expect(denied).toEqual([]);
  });
});
