/**
 * IotDeviceDirectory: things in the fleet group (AWS IoT) + key material (DynamoDB), against moto server, served
 * from an in-memory index: lookups never call AWS; a refresh (timer, refresh(), refreshDevice()) sees changes; a
 * failed refresh keeps the last good index.
 */
import { DeleteTableCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand, UpdateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, type Item, keyItem } from '../../../functions/aws/device-record.ts';
import { DeviceRecordError } from '../../../functions/aws/errors.ts';
import { IotDeviceDirectory } from '../../../functions/aws/iot-device-directory.ts';
import type { FwknopSettings, Timers } from '../../../functions/core/interfaces.ts';
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

function directory(extra: Partial<ConstructorParameters<typeof IotDeviceDirectory>[0]> = {}) {
  return new IotDeviceDirectory({
    iot: clients.iot,
    dynamodb: clients.dynamodb,
    devicesTable: 'devices',
    fleetThingGroup: FLEET,
    clock: { now: () => now },
    defaultMaxOpenSeconds: 30,
    ...extra,
  });
}

/** Timers whose callbacks the test runs by hand. */
function manualTimers(): Timers & { pending: { fn: () => void; ms: number }[] } {
  const pending: { fn: () => void; ms: number }[] = [];
  return {
    pending,
    setTimeout: (fn, ms) => {
      const entry = { fn, ms };
      pending.push(entry);
      return entry;
    },
    clearTimeout: (handle) => {
      const i = pending.indexOf(handle as { fn: () => void; ms: number });
      if (i >= 0) pending.splice(i, 1);
    },
  };
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

  it('answers from the index without AWS requests (unknown key ids too) until a refresh, then sees changes', async () => {
    const dir = directory();
    await dir.start();
    const iotCalls = recordCalls(clients.iot);
    const dbCalls = recordCalls(clients.dynamodb);
    expect((await dir.byKeyId(42))?.device.enabled).toBe(true);
    for (let keyId = 0; keyId < 1000; keyId++) if (keyId !== 42 && keyId !== 43) await dir.byKeyId(keyId);
    expect(await dir.byKeyId(7)).toBeUndefined();
    expect((await dir.fwknopCandidates({ address: '203.0.113.7', family: 4, port: 1 })).length).toBe(1);
    expect(iotCalls.length + dbCalls.length).toBe(0);

    await clients.iot.send(
      new UpdateThingCommand({
        thingName: 'dev-1',
        attributePayload: { attributes: { enabled: 'false' }, merge: true },
      }),
    );
    expect((await dir.byKeyId(42))?.device.enabled).toBe(true);
    iotCalls.length = 0; // the test's own UpdateThing
    await dir.refresh();
    expect((await dir.byKeyId(42))?.device.enabled).toBe(false);
    // One full refresh: 3 fleet things, one BatchGetItem of 3 device items, one of 2 listed keys.
    const counts: Record<string, number> = {};
    for (const c of [...iotCalls, ...dbCalls]) counts[c.command] = (counts[c.command] ?? 0) + 1;
    expect(counts).toEqual({
      ListThingsInThingGroupCommand: 1,
      DescribeThingCommand: 3,
      BatchGetItemCommand: 2,
    });
  });

  it('refreshes in the background every refreshMs; a failed refresh keeps the last good index and is reported', async () => {
    const timers = manualTimers();
    const failures: unknown[] = [];
    const dir = directory({ timers, refreshMs: 45_000, onRefreshError: (e) => failures.push(e) });
    await dir.start();
    expect(timers.pending.map((t) => t.ms)).toEqual([45_000]);
    await thing('dev-4', { enabled: 'true', allowedAccess: 'tcp/8883' });
    await put(deviceItem('dev-4', [50]));
    await put(keyItem('dev-4', { keyId: 50, key: key(5) }));
    expect(await dir.byKeyId(50)).toBeUndefined();
    now += 45_000;
    timers.pending.shift()?.fn();
    await expect.poll(() => dir.stats().loadedAt).toBe(now);
    expect((await dir.byKeyId(50))?.device.id).toBe('dev-4');
    await expect.poll(() => timers.pending.length).toBe(1);

    await clients.dynamodb.send(new DeleteTableCommand({ TableName: 'devices' }));
    timers.pending.shift()?.fn();
    await expect.poll(() => dir.stats().refreshFailures).toBe(1);
    expect(failures[0]).toMatchObject({ name: 'ResourceNotFoundException' });
    await expect(dir.refresh()).rejects.toMatchObject({ name: 'ResourceNotFoundException' });
    expect(dir.stats()).toMatchObject({ devices: 4, keys: 3, refreshFailures: 2 });
    expect((await dir.byKeyId(42))?.key.keyId).toBe(42);
    expect((await dir.byKeyId(50))?.device.id).toBe('dev-4');
    await expect.poll(() => timers.pending.length).toBe(1); // still refreshing
    dir.close();
    expect(timers.pending).toEqual([]);
  });

  it('refreshDevice reloads one device into the index (what the key store calls after a key change)', async () => {
    const dir = directory();
    await dir.start();
    await put(deviceItem('dev-1', [43, 44]));
    await put(keyItem('dev-1', { keyId: 44, key: key(6) }));
    const calls = [recordCalls(clients.iot), recordCalls(clients.dynamodb)];
    await dir.refreshDevice('dev-1');
    expect(calls.flat().map((c) => c.command)).toEqual([
      'DescribeThingCommand',
      'ListThingGroupsForThingCommand',
      'GetItemCommand',
      'BatchGetItemCommand',
    ]);
    expect(await dir.byKeyId(42)).toBeUndefined();
    expect((await dir.byKeyId(44))?.key.key).toEqual(key(6));
    expect((await dir.device('dev-1'))?.nativeKeys.map((k) => k.keyId)).toEqual([43, 44]);
  });

  it('refuses to index a fleet above maxDevices, naming the bound (the last good index stays)', async () => {
    const dir = directory({ maxDevices: 3 });
    await dir.start();
    await thing('dev-4', { enabled: 'true' });
    await expect(dir.refresh()).rejects.toThrow(
      'fleet thing group "blackcloud-fleet" has 4 things, above the directory\'s bound of 3 (maxDevices): raise it, or split the fleet',
    );
    expect((await dir.byKeyId(42))?.device.id).toBe('dev-1');
  });

  it('leaves a device with a malformed thing attribute out, reporting the thing, attribute, value and fix', async () => {
    await clients.iot.send(
      new UpdateThingCommand({
        thingName: 'dev-1',
        attributePayload: { attributes: { allowedAccess: 'tcp:8883' }, merge: true },
      }),
    );
    const errors: [string, unknown][] = [];
    const dir = directory({ onDeviceError: (id, e) => errors.push([id, e]) });
    expect(await dir.byKeyId(42)).toBeUndefined();
    expect(errors.map(([id]) => id)).toEqual(['dev-1']);
    const error = errors[0]?.[1];
    expect(error).toBeInstanceOf(DeviceRecordError);
    expect((error as Error).message).toBe(
      'thing "dev-1" attribute allowedAccess="tcp:8883": use comma-separated proto/port entries, e.g. "tcp/8883"',
    );
  });

  it('reads a grantPrefix attribute (prefix grants), and refuses a bad one naming the attribute and fix', async () => {
    const update = (grantPrefix: string) =>
      clients.iot.send(
        new UpdateThingCommand({
          thingName: 'dev-1',
          attributePayload: { attributes: { grantPrefix }, merge: true },
        }),
      );
    await update('ipv4=24,ipv6=64,range=198.51.100.0/22');
    expect((await directory().byKeyId(42))?.device.grantPrefix).toEqual({
      ipv4: 24,
      ipv6: 64,
      ranges: ['198.51.100.0/22'],
    });
    await update('ipv4=8');
    const errors: [string, unknown][] = [];
    expect(await directory({ onDeviceError: (id, e) => errors.push([id, e]) }).byKeyId(42)).toBeUndefined();
    expect(errors).toHaveLength(1);
    expect(String(errors[0]?.[1])).toMatch(
      /thing "dev-1" attribute grantPrefix="ipv4=8": grantPrefix\.ipv4: received 8; expected an integer 16\.\.32/,
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
