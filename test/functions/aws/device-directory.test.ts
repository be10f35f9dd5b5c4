/** IotDeviceDirectory: things in the fleet group (AWS IoT) + key material (DynamoDB), against moto server. */
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand, UpdateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, type Item, keyItem } from '../../../functions/aws/device-record.ts';
import { DeviceRecordError } from '../../../functions/aws/errors.ts';
import { IotDeviceDirectory } from '../../../functions/aws/iot-device-directory.ts';
import type { FwknopSettings } from '../../../functions/core/interfaces.ts';
import {
  createTable,
  createThingGroup,
  type MotoServer,
  recordCalls,
  startMoto,
} from '../../support/moto.ts';

let moto: MotoServer;
let clients: AwsClients;
let now: number;

const FLEET = 'blackcloud-fleet';
const key = (fill: number) => new Uint8Array(32).fill(fill);
const fwknop = (username: string): FwknopSettings => ({
  username,
  encryptionKey: new Uint8Array(32).fill(7),
  hmacKey: new Uint8Array(64).fill(8),
  hmacType: 'sha256',
});

async function thing(name: string, attributes: Record<string, string>, inFleet = true): Promise<void> {
  await clients.iot.send(new CreateThingCommand({ thingName: name, attributePayload: { attributes } }));
  if (inFleet)
    await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: FLEET, thingName: name }));
}

async function put(item: Item) {
  await clients.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: item }));
}

function directory(cacheTtlMs = 30_000) {
  return new IotDeviceDirectory({
    iot: clients.iot,
    dynamodb: clients.dynamodb,
    devicesTable: 'devices',
    fleetThingGroup: FLEET,
    clock: { now: () => now },
    defaultMaxOpenSeconds: 30,
    cacheTtlMs,
    cacheMaxEntries: 100,
  });
}

beforeAll(async () => {
  moto = await startMoto();
});
afterAll(async () => {
  await moto?.stop();
});
beforeEach(async () => {
  await moto.reset();
  clients = moto.clients();
  now = 1_700_000_000_000;
  await createTable(clients.dynamodb, 'devices');
  await createThingGroup(clients.iot, FLEET);
  await createThingGroup(clients.iot, 'other-fleet');
  // dev-1: enabled, two native keys (rotation in progress), no fwknop.
  await thing('dev-1', { enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' });
  await put(deviceItem('dev-1', [42, 43]));
  await put(keyItem('dev-1', { keyId: 42, key: key(1), notAfter: 1_700_000_600_000 }));
  await put(keyItem('dev-1', { keyId: 43, key: key(2) }));
  // dev-2: disabled, fwknop. dev-3: enabled, fwknop, no maxOpenSeconds attribute.
  await thing('dev-2', { enabled: 'false', allowedAccess: 'tcp/8883' });
  await put(deviceItem('dev-2', [], fwknop('alice')));
  await thing('dev-3', { enabled: 'true', allowedAccess: 'tcp/8883,udp/5683' });
  await put(deviceItem('dev-3', [], fwknop('bob')));
  // outsider: a thing with a key, but not in the fleet group.
  await thing('outsider', { enabled: 'true', allowedAccess: 'tcp/8883' }, false);
  await put(deviceItem('outsider', [99]));
  await put(keyItem('outsider', { keyId: 99, key: key(9) }));
  // A key item whose device no longer lists it (revoked key).
  await put(keyItem('dev-1', { keyId: 41, key: key(3) }));
  // A key whose thing is gone.
  await put(keyItem('ghost', { keyId: 77, key: key(4) }));
});

describe('IotDeviceDirectory', () => {
  it('finds a device by native key id: identity and policy from IoT, keys from DynamoDB', async () => {
    const found = await directory().byKeyId(42);
    expect(found?.key).toEqual({ keyId: 42, key: key(1), notAfter: 1_700_000_600_000 });
    expect(found?.device).toEqual({
      id: 'dev-1',
      enabled: true,
      allowedAccess: [{ protocol: 'tcp', port: 8883 }],
      maxOpenSeconds: 60,
      nativeKeys: [
        { keyId: 42, key: key(1), notAfter: 1_700_000_600_000 },
        { keyId: 43, key: key(2) },
      ],
    });
    expect((await directory().byKeyId(43))?.key.keyId).toBe(43);
  });

  it.each([
    [7, 'no such key'],
    [99, 'thing not in the fleet group'],
    [41, 'key no longer listed by its device'],
    [77, 'thing does not exist'],
  ])('key id %i is unknown (%s)', async (keyId) => {
    expect(await directory().byKeyId(keyId)).toBeUndefined();
  });

  it('returns enabled fleet devices with fwknop settings as candidates', async () => {
    const candidates = await directory().fwknopCandidates({ address: '203.0.113.7', family: 4, port: 40000 });
    expect(candidates.map((d) => [d.id, d.fwknop?.username, d.maxOpenSeconds])).toEqual([
      ['dev-3', 'bob', 30],
    ]);
    expect(candidates[0]?.allowedAccess).toEqual([
      { protocol: 'tcp', port: 8883 },
      { protocol: 'udp', port: 5683 },
    ]);
    expect(candidates[0]?.fwknop?.encryptionKey).toEqual(new Uint8Array(32).fill(7));
  });

  it('caches answers (negative too) until the TTL passes, then sees changes', async () => {
    const dir = directory(10_000);
    const iotCalls = recordCalls(clients.iot);
    const dbCalls = recordCalls(clients.dynamodb);
    expect((await dir.byKeyId(42))?.device.enabled).toBe(true);
    expect(await dir.byKeyId(7)).toBeUndefined();
    const afterFirst = iotCalls.length + dbCalls.length;
    expect((await dir.byKeyId(42))?.device.enabled).toBe(true);
    expect(await dir.byKeyId(7)).toBeUndefined();
    expect(iotCalls.length + dbCalls.length).toBe(afterFirst);

    await clients.iot.send(
      new UpdateThingCommand({
        thingName: 'dev-1',
        attributePayload: { attributes: { enabled: 'false' }, merge: true },
      }),
    );
    now += 9_999;
    expect((await dir.byKeyId(42))?.device.enabled).toBe(true);
    now += 1;
    expect((await dir.byKeyId(42))?.device.enabled).toBe(false);
    expect(iotCalls.length + dbCalls.length).toBeGreaterThan(afterFirst);
  });

  it('refuses a malformed thing attribute, naming the thing, attribute, value and fix', async () => {
    await clients.iot.send(
      new UpdateThingCommand({
        thingName: 'dev-1',
        attributePayload: { attributes: { allowedAccess: 'tcp:8883' }, merge: true },
      }),
    );
    const error = await directory()
      .byKeyId(42)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceRecordError);
    expect((error as Error).message).toBe(
      'thing "dev-1" attribute allowedAccess="tcp:8883": use comma-separated proto/port entries, e.g. "tcp/8883"',
    );
  });

  it('skips a malformed fleet device from fwknop candidates and reports it', async () => {
    await thing('dev-bad', { enabled: 'yes' });
    await put(deviceItem('dev-bad', [], fwknop('carol')));
    const skipped: string[] = [];
    const dir = new IotDeviceDirectory({
      iot: clients.iot,
      dynamodb: clients.dynamodb,
      devicesTable: 'devices',
      fleetThingGroup: FLEET,
      clock: { now: () => now },
      defaultMaxOpenSeconds: 30,
      onDeviceError: (id) => skipped.push(id),
    });
    const candidates = await dir.fwknopCandidates({ address: '203.0.113.7', family: 4, port: 1 });
    expect(candidates.map((d) => d.id)).toEqual(['dev-3']);
    expect(skipped).toEqual(['dev-bad']);
  });

  it('rejects (fail closed) when the devices table cannot be read', async () => {
    const dir = new IotDeviceDirectory({
      iot: clients.iot,
      dynamodb: clients.dynamodb,
      devicesTable: 'no-such-table',
      fleetThingGroup: FLEET,
      clock: { now: () => now },
      defaultMaxOpenSeconds: 30,
    });
    await expect(dir.byKeyId(42)).rejects.toMatchObject({ name: 'ResourceNotFoundException' });
  });
});
