/**
 * Two AWS receivers on one moto and one Mosquitto (TLS), both configured for key rotation: the controller lease
 * lets only one of them run the controller at a time. The first holds it and runs the controller session; when
 * it shuts down (releasing the lease) the other takes over at its next tick. Short lease timings, real time.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAwsControllerConfig } from '../../../functions/aws/aws-controller.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import { CONTROLLER_IDENTITY } from '../../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { createStackResources, type MotoServer, stackReceiverEnv, startMoto } from '../../support/moto.ts';
import { removeDir, tempDir, waitFor } from '../local/helpers.ts';

const LEASE = { leaseMs: 3000, renewMs: 300, safetyMs: 1000 } as const;
let work: string | undefined;
let moto: MotoServer | undefined;
let mosquitto: RunningMosquitto | undefined;
let env: Record<string, string> = {};
const receivers: AwsReceiver[] = [];
const lines: string[] = [];

async function startOne(holderId: string): Promise<AwsReceiver> {
  const receiver = await startAwsReceiver(loadAwsReceiverConfig(env), {
    host: '127.0.0.1',
    port: 0,
    clients: moto!.clients(),
    keyRotation: loadAwsControllerConfig(env),
    lease: LEASE,
    leaseHolderId: holderId,
    out: { write: (line: string) => lines.push(line) },
  });
  receivers.push(receiver);
  return receiver;
}

beforeAll(async () => {
  work = await tempDir('bc-aws-lease');
  const pkiDir = join(work, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  const ca = await loadPem(pki.caCert, pki.caKey);
  mosquitto = await startMosquitto(pkiDir, work);
  const controller = await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' });
  await writeFile(join(work, 'controller.crt'), controller.cert);
  await writeFile(join(work, 'controller.key'), controller.key, { mode: 0o600 });

  moto = await startMoto();
  const clients = moto.clients();
  const { groupIds, queueUrl } = await createStackResources(clients);
  await clients.iot.send(
    new CreateThingCommand({
      thingName: 'dev-1',
      attributePayload: { attributes: { enabled: 'true', allowedAccess: `tcp/${mosquitto.port}` } },
    }),
  );
  await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-1' }));
  await clients.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [42]) }));
  await clients.dynamodb.send(
    new PutItemCommand({
      TableName: 'devices',
      Item: keyItem('dev-1', { keyId: 42, key: new Uint8Array(32).fill(0x5a) }),
    }),
  );
  env = {
    ...stackReceiverEnv(moto.endpoint, groupIds[0] ?? '', queueUrl),
    BLACKCLOUD_BROKER_PORT: String(mosquitto.port),
    BLACKCLOUD_BROKER_HOST: '127.0.0.1',
    BLACKCLOUD_CONTROLLER_CA_FILE: pki.caCert,
    BLACKCLOUD_CONTROLLER_CERT_FILE: join(work, 'controller.crt'),
    BLACKCLOUD_CONTROLLER_KEY_FILE: join(work, 'controller.key'),
  };
});

afterAll(async () => {
  for (const receiver of receivers) await receiver.close();
  await moto?.stop();
  await mosquitto?.stop();
  await removeDir(work);
});

const leaseHolder = async (): Promise<string | undefined> => {
  const item = await moto!.clients().dynamodb.send(
    new GetItemCommand({
      TableName: 'devices',
      Key: { pk: { S: 'lease#key-rotation-controller' } },
      ConsistentRead: true,
    }),
  );
  return item.Item?.holder?.S;
};

describe('two AWS receivers with key rotation on (moto + Mosquitto): one controller at a time', () => {
  it('only the lease holder runs the controller; when it shuts down the other takes over', async () => {
    const a = await startOne('receiver-a');
    const b = await startOne('receiver-b');
    // A single receiver always wins: a had the lease before b started, and starts its controller at once.
    expect(a.keyRotation).toBeDefined();
    expect(b.keyRotation).toBeUndefined();
    expect(a.lease?.isLeader).toBe(true);
    expect(b.lease?.isLeader).toBe(false);
    await waitFor(
      () => (a.keyRotation?.session.client.connected ? true : undefined),
      "a's controller session",
    );

    // Over several renew periods, never two controllers.
    const deadline = Date.now() + 4 * LEASE.renewMs;
    while (Date.now() < deadline) {
      expect([a.keyRotation, b.keyRotation].filter((r) => r !== undefined)).toHaveLength(1);
      expect(a.keyRotation).toBeDefined();
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(await leaseHolder()).toBe('receiver-a');

    // a shuts down: its controller stops, the lease is released, b takes over at its next tick.
    await a.close();
    expect(a.keyRotation).toBeUndefined();
    expect(await leaseHolder()).not.toBe('receiver-a');
    await waitFor(
      () => (b.keyRotation?.session.client.connected ? true : undefined),
      "b's controller session",
    );
    expect(b.lease?.isLeader).toBe(true);
    expect(await leaseHolder()).toBe('receiver-b');
    const rotated = await b.keyRotation!.controller.rotate('dev-1');
    expect(rotated.status).toBe('offered');
    const messages = lines
      .map((line) => JSON.parse(line) as { message?: string })
      .map((l) => l.message ?? '');
    expect(messages.filter((m) => m.startsWith('key rotation on (controller lease held)'))).toHaveLength(2);
  });
});
