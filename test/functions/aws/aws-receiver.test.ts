/**
 * The AWS receiver end to end against moto server: a real UDP knock (BC1) on a real socket → nonce in DynamoDB,
 * a /32 rule in the broker security group, a grants-table item, a delayed revoke message in SQS, audit lines and
 * EMF metrics on the output; a replay is refused; shutdown revokes the grant.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import { createStackResources, type MotoServer, stackReceiverEnv, startMoto } from '../../support/moto.ts';

let moto: MotoServer;
let clients: AwsClients;
let groupId: string;
let queueUrl: string;
let receiver: AwsReceiver | undefined;
const lines: string[] = [];
const outcomes: Outcome[] = [];
const waiters: (() => void)[] = [];
const KEY = new Uint8Array(32).fill(0x5a);

beforeAll(async () => {
  moto = await startMoto();
  clients = moto.clients();
  const resources = await createStackResources(clients);
  groupId = resources.groupIds[0] ?? '';
  queueUrl = resources.queueUrl;
  await clients.iot.send(
    new CreateThingCommand({
      thingName: 'dev-1',
      attributePayload: { attributes: { enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' } },
    }),
  );
  await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-1' }));
  await clients.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [42]) }));
  await clients.dynamodb.send(
    new PutItemCommand({ TableName: 'devices', Item: keyItem('dev-1', { keyId: 42, key: KEY }) }),
  );

  const config = loadAwsReceiverConfig({
    ...stackReceiverEnv(moto.endpoint, groupId, queueUrl),
  });
  receiver = await startAwsReceiver(config, {
    host: '127.0.0.1',
    port: 0,
    clients: moto.clients(),
    out: { write: (line: string) => lines.push(line) },
    onOutcome: (outcome) => {
      outcomes.push(outcome);
      for (const wake of waiters.splice(0)) wake();
    },
  });
});

afterAll(async () => {
  await receiver?.close();
  await moto?.stop();
});

async function knock(packet: Uint8Array): Promise<Outcome> {
  const seen = outcomes.length;
  const socket = createSocket('udp4');
  const port = receiver?.receiver.address.port ?? 0;
  await new Promise<void>((resolve, reject) =>
    socket.send(packet, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  );
  socket.close();
  while (outcomes.length <= seen) await new Promise<void>((resolve) => waiters.push(resolve));
  const outcome = outcomes[seen];
  if (outcome === undefined) throw new Error('no outcome');
  return outcome;
}

async function brokerRanges() {
  const result = await clients.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] }));
  return (result.SecurityGroups?.[0]?.IpPermissions ?? []).flatMap((p) =>
    (p.IpRanges ?? []).map((r) => ({ port: p.FromPort, cidr: r.CidrIp, description: r.Description })),
  );
}

describe('AWS receiver on moto', () => {
  it('a knock opens the broker for the source; a replay is refused; shutdown closes it', async () => {
    const packet = encodeBc1(
      { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
      { keyId: 42, key: KEY, nonce: randomBytes(12) },
    );
    const accepted = await knock(packet);
    expect(accepted.ok).toBe(true);
    if (!accepted.ok) return;
    expect(accepted.value.deviceId).toBe('dev-1');

    const ranges = await brokerRanges();
    expect(ranges).toHaveLength(1);
    expect(ranges[0]).toMatchObject({ port: 8883, cidr: '127.0.0.1/32' });
    expect(ranges[0]?.description).toBe(
      `blackcloud:dev-1:exp=${Math.ceil(accepted.value.grant.expiresAt / 1000)}`,
    );

    const nonces = await clients.dynamodb.send(new ScanCommand({ TableName: 'nonces' }));
    expect(nonces.Items).toHaveLength(1);
    const grants = await clients.dynamodb.send(new ScanCommand({ TableName: 'grants' }));
    expect(grants.Items?.map((i) => [i.pk?.S, i.deviceId?.S])).toEqual([['127.0.0.1', 'dev-1']]);
    const queue = await clients.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: queueUrl,
        AttributeNames: ['ApproximateNumberOfMessagesDelayed'],
      }),
    );
    expect(queue.Attributes?.ApproximateNumberOfMessagesDelayed).toBe('1');

    const replay = await knock(packet);
    expect(replay).toEqual({ ok: false, reason: 'replay' });

    const docs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(docs.filter((d) => d.kind === 'audit').map((d) => d.type)).toEqual([
      'grant.opened',
      'packet.accepted',
      'packet.rejected',
    ]);
    expect(docs.some((d) => d._aws !== undefined)).toBe(false); // metrics are written per flush

    await receiver?.close(); // the last flush
    const flushed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const emf = flushed.filter((d) => d._aws !== undefined);
    expect(emf.some((d) => d.PacketsAccepted === 1 && d._aws !== undefined)).toBe(true);
    expect(emf.some((d) => d.PacketsRejected === 1 && d.Reason === 'replay')).toBe(true);
    // One document carries every total, the receiver's own counters too.
    expect(emf[0]).toMatchObject({
      PacketsAccepted: 1,
      PacketsRejected: 1,
      DroppedOverload: 0,
      AuditSuppressed: 0,
    });
    expect(lines.join('')).not.toContain(Buffer.from(KEY).toString('hex'));

    expect(await brokerRanges()).toEqual([]);
    const after = await clients.dynamodb.send(new ScanCommand({ TableName: 'grants' }));
    expect(after.Items).toEqual([]);
  });
});
