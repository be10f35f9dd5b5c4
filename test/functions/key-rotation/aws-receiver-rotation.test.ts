/**
 * The AWS receiver as controller, end to end: moto (IoT fleet, DynamoDB tables, EC2 security group) for the
 * directory and grants, a real Mosquitto with the generated configuration and ACL for the controller session
 * (certificate files as the boot script writes them), a device that stores and acknowledges its new key over
 * mutual TLS, then knocks with it: the old key is retired in DynamoDB.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tlsSettings } from '../../../device-client/broker-connection.ts';
import { listenForKeys } from '../../../device-client/key-listener.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import { loadAwsControllerConfig } from '../../../functions/aws/aws-controller.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import { systemRandom } from '../../../functions/core/system.ts';
import { CONTROLLER_IDENTITY } from '../../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem } from '../../../functions/pki/local-ca.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { createStackResources, type MotoServer, stackReceiverEnv, startMoto } from '../../support/moto.ts';
import { removeDir, tempDir, waitFor } from '../local/helpers.ts';

const OLD_KEY = new Uint8Array(32).fill(0x5a);
let work: string | undefined;
let moto: MotoServer | undefined;
let mosquitto: RunningMosquitto | undefined;
let receiver: AwsReceiver | undefined;
let device: MqttClient | undefined;
const lines: string[] = [];
const outcomes: Outcome[] = [];

const audits = (type: string) =>
  lines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((line) => line.type === type);

beforeAll(async () => {
  work = await tempDir('bc7-aws-rotation');
  const pkiDir = join(work, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  const ca = await loadPem(pki.caCert, pki.caKey);
  mosquitto = await startMosquitto(pkiDir, work);
  const port = mosquitto.port;

  // The controller's TLS files, as the receiver's boot script writes them.
  const controller = await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' });
  await writeFile(join(work, 'controller.crt'), controller.cert);
  await writeFile(join(work, 'controller.key'), controller.key, { mode: 0o600 });

  moto = await startMoto();
  const clients = moto.clients();
  const { groupIds, queueUrl } = await createStackResources(clients);
  await clients.iot.send(
    new CreateThingCommand({
      thingName: 'dev-1',
      attributePayload: { attributes: { enabled: 'true', allowedAccess: `tcp/${port}` } },
    }),
  );
  await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-1' }));
  await clients.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [42]) }));
  await clients.dynamodb.send(
    new PutItemCommand({ TableName: 'devices', Item: keyItem('dev-1', { keyId: 42, key: OLD_KEY }) }),
  );

  const env = {
    ...stackReceiverEnv(moto.endpoint, groupIds[0] ?? '', queueUrl),
    BLACKCLOUD_BROKER_PORT: String(port),
    BLACKCLOUD_BROKER_HOST: '127.0.0.1',
    BLACKCLOUD_CONTROLLER_CA_FILE: pki.caCert,
    BLACKCLOUD_CONTROLLER_CERT_FILE: join(work, 'controller.crt'),
    BLACKCLOUD_CONTROLLER_KEY_FILE: join(work, 'controller.key'),
  };
  receiver = await startAwsReceiver(loadAwsReceiverConfig(env), {
    host: '127.0.0.1',
    port: 0,
    clients,
    keyRotation: loadAwsControllerConfig(env),
    out: { write: (line: string) => lines.push(line) },
    onOutcome: (outcome) => outcomes.push(outcome),
  });

  // The device: its certificate (CN dev-1) and its device file with the provisioned key.
  const tls = await issueCertificate(ca, { commonName: 'dev-1', kind: 'client' });
  await writeFile(join(work, 'dev-1.crt'), tls.cert);
  await writeFile(join(work, 'dev-1.key'), tls.key, { mode: 0o600 });
  await writeFile(
    join(work, 'device.json'),
    JSON.stringify({
      version: 1,
      deviceId: 'dev-1',
      spa: {
        host: '127.0.0.1',
        port: receiver.receiver.address.port,
        native: { keyId: 42, key: Buffer.from(OLD_KEY).toString('base64') },
      },
      access: [`tcp/${port}`],
      mqtt: { url: `mqtts://127.0.0.1:${port}`, ca: 'pki/ca.crt', cert: 'dev-1.crt', key: 'dev-1.key' },
    }),
    { mode: 0o600 },
  );
});

afterAll(async () => {
  await device?.endAsync(true);
  await receiver?.close();
  await moto?.stop();
  await mosquitto?.stop();
  await removeDir(work);
});

async function knockWith(file: string, native?: DeviceConfig['spa']['native']): Promise<Outcome> {
  const loaded = await loadDeviceConfig(file);
  const config = native === undefined ? loaded : { ...loaded, spa: { ...loaded.spa, native } };
  const before = outcomes.length;
  await sendDatagram(
    '127.0.0.1',
    config.spa.port,
    buildKnock(config, { now: Date.now, randomBytes: systemRandom.randomBytes }).bytes,
  );
  return waitFor(() => outcomes[before], 'the receiver to handle the knock');
}

describe('AWS receiver as key-rotation controller (moto + Mosquitto)', () => {
  it('rotates a device over its TLS session; the first knock with the new key retires the old one in DynamoDB', async () => {
    const file = join(work!, 'device.json');
    await waitFor(
      () => (receiver!.keyRotation?.session.client.connected ? true : undefined),
      'the controller session',
    );
    const config = await loadDeviceConfig(file);
    device = await mqtt.connectAsync(
      config.mqtt.url,
      {
        ca: await readFile(tlsSettings(config).caFile),
        cert: await readFile(tlsSettings(config).certFile),
        key: await readFile(tlsSettings(config).keyFile),
        rejectUnauthorized: true,
        reconnectPeriod: 0,
        protocolVersion: 4,
      },
      false,
    );
    await listenForKeys(device, config, { randomBytes: systemRandom.randomBytes });

    const rotated = await receiver!.keyRotation!.controller.rotate('dev-1');
    expect(rotated.status).toBe('offered');
    const keyId = (rotated as { keyId: number }).keyId;
    await waitFor(() => (audits('key.confirmed').length > 0 ? true : undefined), 'the ack to be confirmed');
    expect(audits('key.confirmed')[0]).toMatchObject({ kind: 'audit', deviceId: 'dev-1', keyId, by: 'ack' });

    expect(await knockWith(file)).toMatchObject({ ok: true, value: { deviceId: 'dev-1', keyId } });
    await waitFor(() => (audits('key.retired').length > 0 ? true : undefined), 'the old key to be retired');
    const gone = await moto!
      .clients()
      .dynamodb.send(new GetItemCommand({ TableName: 'devices', Key: { pk: { S: 'key#42' } } }));
    expect(gone.Item).toBeUndefined();
    expect(await knockWith(file, { keyId: 42, key: OLD_KEY })).toEqual({ ok: false, reason: 'unknown-key' });
  });
});
