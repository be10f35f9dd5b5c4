/**
 * Closed on connect on AWS, against moto server with IAM enforced (the receiver signs as a moto IAM user whose only
 * policy is what the synthesized stack grants the receiver role, test/support/iam.ts): a real knock over UDP opens
 * the security-group rule; the session signal of another device changes nothing; the signal of the device that
 * knocked revokes the rule and the grants-table item at once, audited 'grant.revoked' reason 'connected' and
 * counted as GrantsClosed{Reason=connected}. The signal enters through `AwsReceiver.grants.sessionEstablished`,
 * the one entry every broker-side signal uses (docs/scaling.md).
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import {
  ADMIN_POLICY,
  createIamUser,
  enforceIam,
  iamClients,
  type MotoStackNames,
  relaxIam,
  resolvePolicy,
  synthesizePolicies,
} from '../../support/iam.ts';
import { createStackResources, type MotoServer, stackReceiverEnv, startMoto } from '../../support/moto.ts';

const KEY = new Uint8Array(32).fill(0x3c);

let moto: MotoServer;
let receiver: AwsReceiver | undefined;

beforeAll(async () => {
  moto = await startMoto();
}, 180_000);

afterAll(async () => {
  await moto?.stop();
});

afterEach(async () => {
  await receiver?.close();
  receiver = undefined;
});

describe('closed on connect: the security-group rule', () => {
  it('GIVEN IAM enforced WHEN the device that knocked connects THEN its rule and grants item are revoked; another device cannot', async () => {
    await relaxIam(moto);
    await moto.reset();
    const setup = moto.clients();
    const resources = await createStackResources(setup);
    const groupId = resources.groupIds[0] ?? '';
    const names: MotoStackNames = {
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
        attributePayload: {
          attributes: { enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' },
        },
      }),
    );
    await setup.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-1' }));
    await setup.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [7]) }));
    await setup.dynamodb.send(
      new PutItemCommand({ TableName: 'devices', Item: keyItem('dev-1', { keyId: 7, key: KEY }) }),
    );
    const admin: AwsClients = iamClients(moto, await createIamUser(moto, 'admin', ADMIN_POLICY));
    const key = await createIamUser(
      moto,
      'receiver-user',
      resolvePolicy(synthesizePolicies(), 'receiver', names, { without: [] }),
    );
    await enforceIam(moto);

    const denied: string[] = [];
    const lines: string[] = [];
    const outcomes: Outcome[] = [];
    receiver = await startAwsReceiver(
      loadAwsReceiverConfig(stackReceiverEnv(moto.endpoint, groupId, resources.queueUrl)),
      {
        host: '127.0.0.1',
        port: 0,
        clients: iamClients(moto, key, denied),
        out: { write: (line: string) => lines.push(line) },
        onOutcome: (outcome) => outcomes.push(outcome),
      },
    );
    const ranges = async () => {
      const result = await admin.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] }));
      return (result.SecurityGroups?.[0]?.IpPermissions ?? []).flatMap((p) =>
        (p.IpRanges ?? []).map((r) => r.CidrIp),
      );
    };
    const grantItems = async () =>
      (await admin.dynamodb.send(new ScanCommand({ TableName: 'grants' }))).Items ?? [];

    const packet = encodeBc1(
      { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
      { keyId: 7, key: KEY, nonce: randomBytes(12) },
    );
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) =>
      socket.send(packet, receiver!.receiver.address.port, '127.0.0.1', (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    socket.close();
    while (outcomes.length === 0) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(outcomes[0]?.ok).toBe(true);
    expect(await ranges()).toEqual(['127.0.0.1/32']);
    expect(await grantItems()).toHaveLength(1);

    // Another device's session from the same address (it never knocked) releases nothing.
    expect(await receiver.grants.sessionEstablished('dev-2', '127.0.0.1')).toEqual([]);
    expect(await ranges()).toEqual(['127.0.0.1/32']);

    // The knocking device's session: the rule goes now, not at the end of its 60 s window.
    const started = Date.now();
    const closed = await receiver.grants.sessionEstablished('dev-1', '127.0.0.1');
    expect(closed.map((grant) => [grant.deviceId, grant.address])).toEqual([['dev-1', '127.0.0.1']]);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(await ranges()).toEqual([]);
    expect(await grantItems()).toEqual([]);
    expect(denied).toEqual([]);
    const audit = lines.filter((line) => line.includes('"kind":"audit"')).map((line) => JSON.parse(line));
    expect(audit.filter((event) => event.type === 'grant.revoked')).toMatchObject([
      { deviceId: 'dev-1', source: '127.0.0.1', reason: 'connected' },
    ]);
    await receiver.close();
    receiver = undefined;
    const emf = lines.filter((line) => line.includes('"_aws"')).map((line) => JSON.parse(line));
    expect(emf.some((doc) => doc.Reason === 'connected' && doc.GrantsClosed === 1)).toBe(true);
  }, 240_000);
});
