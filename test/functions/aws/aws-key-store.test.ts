/**
 * Key rotation on the AWS device directory (IoT fleet group + DynamoDB devices/keys table), against moto server:
 * the controller with DynamoKeyStore, the receiver's IotDeviceDirectory seeing each step, a recording session.
 */
import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAwsControllerConfig } from '../../../functions/aws/aws-controller.ts';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { AwsConfigError } from '../../../functions/aws/errors.ts';
import { encodeKeyAck, makeKeyAck } from '../../../functions/core/key-messages.ts';
import { openKeyOffer } from '../../../functions/core/sealed-key-offer.ts';
import { systemRandom } from '../../../functions/core/system.ts';
import { keyAckTopic, keyTopic } from '../../../functions/core/topics.ts';
import { awsRotation } from '../../support/aws-rotation.ts';
import { createTable, createThingGroup, type MotoServer, startMoto } from '../../support/moto.ts';

const FLEET = 'blackcloud-fleet';
const HOUR = 3_600_000;
let moto: MotoServer;
let clients: AwsClients;
let now = 1_800_000_000_000;
const clock = { now: () => now };
const DEVICE_KEY = { keyId: 42, key: new Uint8Array(32).fill(1) };

function setup() {
  return awsRotation({ clients, fleetThingGroup: FLEET, clock, config: { graceMs: HOUR } });
}

beforeAll(async () => {
  moto = await startMoto();
  clients = moto.clients();
  await createTable(clients.dynamodb, 'devices');
  await createThingGroup(clients.iot, FLEET);
  await clients.iot.send(
    new CreateThingCommand({
      thingName: 'dev-1',
      attributePayload: { attributes: { enabled: 'true', allowedAccess: 'tcp/8883' } },
    }),
  );
  await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: FLEET, thingName: 'dev-1' }));
  await clients.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-1', [42]) }));
  await clients.dynamodb.send(
    new PutItemCommand({
      TableName: 'devices',
      Item: keyItem('dev-1', DEVICE_KEY),
    }),
  );
});

afterAll(async () => {
  await moto?.stop();
});

describe('key rotation on the AWS device directory (moto)', () => {
  it('offers, refuses a wrong proof, confirms a valid ack, refuses its replay, retires the old key at first use', async () => {
    const { directory, store, session, audit, controller } = setup();
    const rotated = await controller.rotate('dev-1');
    expect(rotated.status).toBe('offered');
    const keyId = (rotated as { keyId: number }).keyId;
    expect(session.published.map((p) => p.topic)).toEqual([keyTopic('dev-1')]);
    // Sealed under the device's current key 42, for dev-1 (docs/protocol.md [KO-6]).
    const offer = openKeyOffer([DEVICE_KEY], 'dev-1', session.published[0]!.payload);
    if (!offer.ok) throw new Error(offer.reason);
    expect(offer.value).toMatchObject({ sealingKeyId: 42, keyId });

    // The receiver's directory accepts both keys while the offer is pending; the old key has no end yet.
    expect((await directory.byKeyId(keyId))?.key.key).toEqual(offer.value.key);
    expect((await directory.byKeyId(42))?.key.notAfter).toBeUndefined();
    expect((await store.get('dev-1'))?.keys).toEqual([
      { keyId: 42, generation: 0, state: 'current' },
      { keyId, generation: 1, state: 'pending', createdAt: now },
    ]);

    const ackTopic = keyAckTopic('dev-1');
    const wrong = makeKeyAck(new Uint8Array(32).fill(9), keyId, systemRandom.randomBytes(16));
    expect(await controller.handleMessage(ackTopic, Buffer.from(encodeKeyAck(wrong)))).toEqual({
      ok: false,
      reason: 'bad-proof',
    });
    expect((await store.get('dev-1'))?.keys[1]?.state).toBe('pending');

    const valid = Buffer.from(encodeKeyAck(makeKeyAck(offer.value.key, keyId, systemRandom.randomBytes(16))));
    expect(await controller.handleMessage(ackTopic, valid)).toEqual({ ok: true, deviceId: 'dev-1', keyId });
    expect((await store.get('dev-1'))?.keys).toEqual([
      { keyId: 42, generation: 0, state: 'current', notAfter: now + HOUR },
      { keyId, generation: 1, state: 'current', createdAt: now },
    ]);
    expect((await directory.byKeyId(42))?.key.notAfter).toBe(now + HOUR);
    expect(await controller.handleMessage(ackTopic, valid)).toEqual({ ok: false, reason: 'not-pending' });

    expect(await controller.noteKeyUsed('dev-1', keyId)).toEqual({ type: 'remove', keyIds: [42] });
    expect(await directory.byKeyId(42)).toBeUndefined();
    const gone = await clients.dynamodb.send(
      new GetItemCommand({ TableName: 'devices', Key: { pk: { S: 'key#42' } } }),
    );
    expect(gone.Item).toBeUndefined();
    expect(audit.events.map((e) => e.type)).toEqual([
      'key.offered',
      'key.ack-rejected',
      'key.confirmed',
      'key.ack-rejected',
      'key.retired',
    ]);
  });

  it('a new controller (receiver restart) re-sends the pending offer; the old key keeps working meanwhile', async () => {
    const first = setup();
    const rotated = await first.controller.rotate('dev-1');
    const keyId = (rotated as { keyId: number }).keyId;
    const before = (await first.store.get('dev-1'))!.keys.find((k) => k.state === 'current')!;

    now += 60_000;
    const second = setup();
    await second.controller.start();
    second.controller.stop();
    // The re-send is sealed under the device's current key (the one the previous test confirmed), as the first.
    const current = { keyId: before.keyId, key: (await first.store.keyMaterial('dev-1', before.keyId))! };
    expect(
      second.session.published.map((p) => {
        const opened = openKeyOffer([current], 'dev-1', p.payload);
        return [p.topic, opened.ok && opened.value.sealingKeyId, opened.ok && opened.value.keyId];
      }),
    ).toEqual([[keyTopic('dev-1'), before.keyId, keyId]]);
    expect(second.audit.ofType('key.resent')).toEqual([
      expect.objectContaining({ deviceId: 'dev-1', keyId }),
    ]);
    expect((await second.directory.byKeyId(before.keyId))?.key.notAfter).toBeUndefined();
  });
});

describe('the AWS receiver key-rotation configuration (environment)', () => {
  const files = {
    BLACKCLOUD_CONTROLLER_CA_FILE: '/etc/blackcloud/controller/ca.crt',
    BLACKCLOUD_CONTROLLER_CERT_FILE: '/etc/blackcloud/controller/controller.crt',
    BLACKCLOUD_CONTROLLER_KEY_FILE: '/etc/blackcloud/controller/controller.key',
  };

  it('is off without a broker host, with the 24 h default period', () => {
    expect(loadAwsControllerConfig({})).toEqual({ enabled: false, periodMs: 86_400_000 });
  });

  it('is on with the broker host and the three TLS files', () => {
    expect(
      loadAwsControllerConfig({
        ...files,
        BLACKCLOUD_BROKER_HOST: '10.0.1.5',
        BLACKCLOUD_KEY_ROTATION_SECONDS: '3600',
      }),
    ).toEqual({
      enabled: true,
      periodMs: 3_600_000,
      brokerHost: '10.0.1.5',
      caFile: files.BLACKCLOUD_CONTROLLER_CA_FILE,
      certFile: files.BLACKCLOUD_CONTROLLER_CERT_FILE,
      keyFile: files.BLACKCLOUD_CONTROLLER_KEY_FILE,
    });
  });

  it.each([
    [
      { BLACKCLOUD_KEY_ROTATION_SECONDS: '10' },
      /BLACKCLOUD_KEY_ROTATION_SECONDS="10" is invalid: expected .*60\.\.31622400/,
    ],
    [
      { BLACKCLOUD_BROKER_HOST: '10.0.1.5' },
      /BLACKCLOUD_BROKER_HOST is set but BLACKCLOUD_CONTROLLER_CA_FILE, .*KEY_FILE not/,
    ],
    [{ ...files, BLACKCLOUD_BROKER_HOST: 'a b' }, /BLACKCLOUD_BROKER_HOST="a b" is invalid/],
    [
      { ...files, BLACKCLOUD_BROKER_HOST: 'broker', BLACKCLOUD_CONTROLLER_KEY_FILE: 'relative.key' },
      /CONTROLLER_KEY_FILE="relative.key" is invalid: expected an absolute path/,
    ],
  ])('refuses %j, naming the variable and the fix', (env, message) => {
    expect(() => loadAwsControllerConfig(env)).toThrow(AwsConfigError);
    expect(() => loadAwsControllerConfig(env)).toThrow(message);
  });
});
