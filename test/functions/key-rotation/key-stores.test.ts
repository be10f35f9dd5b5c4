/**
 * The two durable key stores on disk: the controller's devices-file store (generations recorded next to the key
 * file references, key files 0600, retired key files deleted) and the device's key store (device.json rewritten
 * atomically, 0600, refused without change when the result would not validate).
 */
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { storeNativeKey } from '../../../device-client/key-store.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { DeviceConfigError } from '../../../functions/core/config-errors.ts';
import { KeyIdTakenError } from '../../../functions/core/key-rotation-interfaces.ts';
import { systemRandom, systemTimers } from '../../../functions/core/system.ts';
import { KeyRotationController } from '../../../functions/key-rotation/key-rotation-controller.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { writeDeviceFile } from '../../../functions/local/device-file.ts';
import { DeviceFileKeyStore, KeyStoreError } from '../../../functions/local/device-file-key-store.ts';
import { removeDir, tempDir } from '../local/helpers.ts';

const T = Date.UTC(2026, 10, 30, 12);
let dir: string | undefined;
let devicesFile: string;
let changes = 0;

beforeEach(async () => {
  dir = await tempDir('bc7-stores');
  devicesFile = join(dir, 'devices.yaml');
  await mkdir(join(dir, 'keys'), { mode: 0o700 });
  await writeFile(join(dir, 'keys/d1.bc1'), `${Buffer.alloc(32, 1).toString('base64')}\n`, { mode: 0o600 });
  await writeDeviceFile(devicesFile, [
    { id: 'd1', allowedAccess: ['tcp/8883'], nativeKeys: [{ keyId: 10, key: { file: 'keys/d1.bc1' } }] },
  ]);
  changes = 0;
});

afterEach(async () => {
  await removeDir(dir);
});

describe('DeviceFileKeyStore', () => {
  const store = () =>
    new DeviceFileKeyStore(devicesFile, {
      onChange: () => {
        changes += 1;
      },
    });

  it('records a pending generation, confirms it, retires the old key and deletes its file', async () => {
    const keys = store();
    expect(await keys.get('d1')).toEqual({
      deviceId: 'd1',
      enabled: true,
      keys: [{ keyId: 10, generation: 0, state: 'current' }],
    });
    await keys.apply('d1', {
      type: 'add-pending',
      keyId: 11,
      key: new Uint8Array(32).fill(2),
      generation: 1,
      createdAt: T,
    });
    expect((await stat(join(dir!, 'keys/d1.11.bc1'))).mode & 0o777).toBe(0o600);
    expect((await stat(devicesFile)).mode & 0o777).toBe(0o600);
    expect(await keys.keyMaterial('d1', 11)).toEqual(new Uint8Array(32).fill(2));
    expect((await keys.get('d1'))?.keys[1]).toEqual({
      keyId: 11,
      generation: 1,
      state: 'pending',
      createdAt: T,
    });

    await keys.apply('d1', { type: 'confirm', keyId: 11, othersNotAfter: T + 1000 });
    expect((await keys.get('d1'))?.keys).toEqual([
      { keyId: 10, generation: 0, state: 'current', notAfter: T + 1000 },
      { keyId: 11, generation: 1, state: 'current', createdAt: T },
    ]);
    expect(await readFile(devicesFile, 'utf8')).toContain('notAfter: 2026-11-30T12:00:01.000Z');

    await keys.apply('d1', { type: 'remove', keyIds: [10] });
    expect((await keys.get('d1'))?.keys.map((key) => key.keyId)).toEqual([11]);
    await expect(stat(join(dir!, 'keys/d1.bc1'))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(changes).toBe(3);
  });

  it('refuses an unknown device and a key id already in use, changing nothing', async () => {
    const keys = store();
    const before = await readFile(devicesFile, 'utf8');
    await expect(keys.apply('nobody', { type: 'remove', keyIds: [10] })).rejects.toThrow(
      new KeyStoreError(`device "nobody" is not in ${devicesFile}: check the id (blackcloud devices list)`),
    );
    await expect(
      keys.apply('d1', {
        type: 'add-pending',
        keyId: 10,
        key: new Uint8Array(32),
        generation: 1,
        createdAt: T,
      }),
    ).rejects.toThrow('key id 10 is already used by device "d1"');
    expect(await readFile(devicesFile, 'utf8')).toBe(before);
    expect(changes).toBe(0);
  });
});

describe('DeviceFileKeyStore across processes', () => {
  it("two stores on one file (up and keys rotate) never lose each other's changes", async () => {
    await writeFile(join(dir!, 'keys/d2.bc1'), `${Buffer.alloc(32, 5).toString('base64')}\n`, {
      mode: 0o600,
    });
    await writeDeviceFile(devicesFile, [
      { id: 'd1', allowedAccess: ['tcp/8883'], nativeKeys: [{ keyId: 10, key: { file: 'keys/d1.bc1' } }] },
      { id: 'd2', allowedAccess: ['tcp/8883'], nativeKeys: [{ keyId: 20, key: { file: 'keys/d2.bc1' } }] },
    ]);
    const up = new DeviceFileKeyStore(devicesFile);
    const cli = new DeviceFileKeyStore(devicesFile);
    const add = (store: DeviceFileKeyStore, deviceId: string, keyId: number) =>
      store.apply(deviceId, {
        type: 'add-pending',
        keyId,
        key: new Uint8Array(32).fill(keyId),
        generation: 1,
        createdAt: T,
      });
    await Promise.all([
      add(up, 'd1', 11),
      add(cli, 'd2', 21),
      up.apply('d2', { type: 'confirm', keyId: 20, othersNotAfter: T }),
    ]);
    const after = await up.list();
    expect(after.map((device) => device.keys.map((key) => key.keyId))).toEqual([
      [10, 11],
      [20, 21],
    ]);
    await expect(stat(`${devicesFile}.lock`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses a second pending key for one device, and takes over a stale lock', async () => {
    // The lock of a writer that died a minute ago: its heartbeat stopped refreshing the lock directory's mtime.
    await mkdir(`${devicesFile}.lock`);
    const died = new Date(Date.now() - 60_000);
    await utimes(`${devicesFile}.lock`, died, died);
    const store = new DeviceFileKeyStore(devicesFile, { staleLockMs: 0 });
    await store.apply('d1', {
      type: 'add-pending',
      keyId: 11,
      key: new Uint8Array(32),
      generation: 1,
      createdAt: T,
    });
    await expect(
      store.apply('d1', {
        type: 'add-pending',
        keyId: 12,
        key: new Uint8Array(32),
        generation: 2,
        createdAt: T,
      }),
    ).rejects.toThrow('device "d1" already has a pending key (11): it is offered again until acknowledged');
    await expect(stat(`${devicesFile}.lock`)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('DeviceFileKeyStore key id reservation', () => {
  beforeEach(async () => {
    await writeFile(join(dir!, 'keys/d2.bc1'), `${Buffer.alloc(32, 5).toString('base64')}\n`, {
      mode: 0o600,
    });
    await writeDeviceFile(devicesFile, [
      { id: 'd1', allowedAccess: ['tcp/8883'], nativeKeys: [{ keyId: 10, key: { file: 'keys/d1.bc1' } }] },
      { id: 'd2', allowedAccess: ['tcp/8883'], nativeKeys: [{ keyId: 20, key: { file: 'keys/d2.bc1' } }] },
    ]);
  });

  it("refuses another device's key id with KeyIdTakenError, changing nothing", async () => {
    const before = await readFile(devicesFile, 'utf8');
    const refused = new DeviceFileKeyStore(devicesFile).apply('d1', {
      type: 'add-pending',
      keyId: 20,
      key: new Uint8Array(32),
      generation: 1,
      createdAt: T,
    });
    await expect(refused).rejects.toBeInstanceOf(KeyIdTakenError);
    await expect(refused).rejects.toThrow('key id 20 is already used by device "d2": draw another key id');
    expect(await readFile(devicesFile, 'utf8')).toBe(before);
    await expect(stat(join(dir!, 'keys/d1.20.bc1'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('the controller draws another key id when the first is taken', async () => {
    let keyIdDraws = 0;
    const random = {
      randomBytes: (length: number) =>
        length === 4 && ++keyIdDraws === 1 ? new Uint8Array([0, 0, 0, 20]) : systemRandom.randomBytes(length),
    };
    const published: string[] = [];
    const controller = new KeyRotationController({
      store: new DeviceFileKeyStore(devicesFile),
      session: { publish: async (topic) => void published.push(topic) },
      audit: new MemoryAuditSink(),
      clock: { now: () => T },
      random,
      timers: systemTimers,
    });
    const outcome = await controller.rotate('d1');
    expect(outcome).toMatchObject({ deviceId: 'd1', status: 'offered' });
    const keyId = (outcome as { keyId: number }).keyId;
    expect(keyId).not.toBe(20);
    expect(keyIdDraws).toBe(2);
    expect(published).toEqual(['blackcloud/keys/d1']);
    const keys = await new DeviceFileKeyStore(devicesFile).list();
    expect(keys.map((device) => device.keys.map((key) => [key.keyId, key.state]))).toEqual([
      [
        [10, 'current'],
        [keyId, 'pending'],
      ],
      [[20, 'current']],
    ]);
  });
});

describe('storeNativeKey (device side)', () => {
  const deviceJson = (native: unknown) =>
    JSON.stringify({
      version: 1,
      deviceId: 'd1',
      spa: { host: '127.0.0.1', port: 62201, native },
      access: ['tcp/8883'],
      mqtt: { url: 'mqtts://127.0.0.1:8883', ca: 'ca.crt', cert: 'client.crt', key: 'client.key' },
    });

  it('replaces spa.native atomically, keeps every other field, mode 0600', async () => {
    const file = join(dir!, 'device.json');
    await writeFile(file, deviceJson({ keyId: 1, key: Buffer.alloc(32, 1).toString('base64') }), {
      mode: 0o644,
    });
    await storeNativeKey(file, 2, new Uint8Array(32).fill(3));
    const config = await loadDeviceConfig(file);
    expect(config.spa.native).toEqual({ keyId: 2, key: new Uint8Array(32).fill(3) });
    expect(config.mqtt.url).toBe('mqtts://127.0.0.1:8883');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  it('refuses a file that is not JSON, and a key of the wrong size, leaving the file as it was', async () => {
    const file = join(dir!, 'device.json');
    await writeFile(file, 'not json', { mode: 0o600 });
    await expect(storeNativeKey(file, 2, new Uint8Array(32))).rejects.toBeInstanceOf(DeviceConfigError);
    const valid = deviceJson({ keyId: 1, key: Buffer.alloc(32, 1).toString('base64') });
    await writeFile(file, valid, { mode: 0o600 });
    const failure = storeNativeKey(file, 2, new Uint8Array(31));
    await expect(failure).rejects.toBeInstanceOf(DeviceConfigError);
    await expect(failure).rejects.toMatchObject({ field: 'spa.native.key' });
    expect(await readFile(file, 'utf8')).toBe(valid);
  });
});
