/**
 * The local fleet against a real local black cloud (startLocalCloud: receiver, gate, embedded aedes broker with
 * mutual TLS, ports 0): disable cuts a connected device off, grants are listed and revoked through the control
 * socket, remove leaves nothing, and enrolment is all or nothing.
 */
import { randomBytes } from 'node:crypto';
import { cp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FleetError } from '../../../cli/fleet/fleet.ts';
import { LocalFleet } from '../../../cli/fleet/local-fleet.ts';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { BrokerConnectError } from '../../../device-client/errors.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { systemClock, systemRandom } from '../../../functions/core/system.ts';
import {
  controlSocketPath,
  handleControlRequest,
  startControlServer,
} from '../../../functions/local/control-server.ts';
import { DeviceFileError } from '../../../functions/local/device-file.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { removeDir, tempDir, waitFor } from '../../functions/local/helpers.ts';

const knockIo = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };

let dataDir: string;
let cloud: LocalCloud | undefined;
let events: AuditEvent[] = [];
const clients: MqttClient[] = [];

async function up(): Promise<LocalCloud> {
  const config = resolveUpConfig({ dataDir, spaPort: '0', mqttPort: '0' });
  cloud = await startLocalCloud(config, { onAudit: (event) => events.push(event) });
  return cloud;
}

function fleet(): Promise<LocalFleet> {
  return LocalFleet.open({ dataDir, random: systemRandom, clock: systemClock, operator: 'tester@test' });
}

async function knockAndConnect(config: DeviceConfig): Promise<MqttClient> {
  const { bytes } = buildKnock(config, knockIo, 'native');
  await sendDatagram(config.spa.host, config.spa.port, bytes);
  const client = await connectToBroker(config, {
    deadlineMs: 5000,
    retryDelayMs: 100,
    attemptTimeoutMs: 1000,
  });
  clients.push(client);
  return client;
}

async function auditLines(): Promise<Record<string, unknown>[]> {
  const text = await readFile(`${dataDir}/audit.jsonl`, 'utf8');
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

beforeEach(async () => {
  dataDir = await tempDir('bc9-fleet');
  events = [];
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  cloud = undefined;
  await removeDir(dataDir);
});

describe('local fleet with a running black cloud', () => {
  it('disable cuts a connected device off at once: session closed, grant revoked, knocks refused, audited', async () => {
    const running = await up();
    const fleetOps = await fleet();
    await fleetOps.enrol({ deviceId: 'tracker-1', format: 'native' });
    await waitFor(() => running.directory.byId('tracker-1'), 'up to pick the new device up');
    const device = await loadDeviceConfig(running.layout.deviceFile('tracker-1'));
    const session = await knockAndConnect(device);
    const closed = new Promise<void>((done) => session.once('close', () => done()));
    // Its rule closed on connect (docs/scaling.md); a second knock (it waits to connect again) holds one open.
    await waitFor(
      async () => ((await fleetOps.grants()).length === 0 ? true : undefined),
      'close on connect',
    );
    await sendDatagram(device.spa.host, device.spa.port, buildKnock(device, knockIo, 'native').bytes);
    await waitFor(
      async () => ((await fleetOps.grants()).length === 1 ? true : undefined),
      'the second grant',
    );
    expect((await fleetOps.grants()).map((grant) => grant.deviceId)).toEqual(['tracker-1']);

    const result = await fleetOps.setEnabled('tracker-1', false);

    expect(result).toMatchObject({ changed: true, disconnected: 1, notes: [] });
    expect(result.revoked.map((grant) => [grant.deviceId, grant.address])).toEqual([
      ['tracker-1', '127.0.0.1'],
    ]);
    await closed;
    expect(await fleetOps.grants()).toEqual([]);
    expect(running.deps.grants.active()).toEqual([]);
    expect((await fleetOps.show('tracker-1'))?.enabled).toBe(false);
    // Its next knock is refused and no new session gets through.
    const { bytes } = buildKnock(device, knockIo, 'native');
    await sendDatagram(device.spa.host, device.spa.port, bytes);
    await waitFor(
      () => events.find((event) => event.type === 'packet.rejected' && event.reason === 'device-disabled'),
      'the knock of the disabled device to be refused',
    );
    const again = await connectToBroker(device, {
      deadlineMs: 600,
      retryDelayMs: 100,
      attemptTimeoutMs: 300,
    }).catch((error: unknown) => error);
    expect(again).toBeInstanceOf(BrokerConnectError);
    expect((await auditLines()).filter((line) => line.type === 'device.disabled')).toEqual([
      {
        type: 'device.disabled',
        time: expect.any(Number),
        deviceId: 'tracker-1',
        operator: 'tester@test',
        revokedGrants: 1,
        disconnected: 1,
      },
    ]);

    // Enable: it may knock and connect again; a second enable changes nothing.
    expect((await fleetOps.setEnabled('tracker-1', true)).changed).toBe(true);
    expect((await fleetOps.setEnabled('tracker-1', true)).changed).toBe(false);
    await waitFor(() => (running.directory.byId('tracker-1')?.enabled ? true : undefined), 'the reload');
    const back = await knockAndConnect(device);
    expect(back.connected).toBe(true);
  });

  it('grants revoke by address and by device closes only those grants; the knock log shows the revoke', async () => {
    const running = await up();
    const fleetOps = await fleet();
    await fleetOps.enrol({ deviceId: 'meter-1', format: 'native' });
    await fleetOps.enrol({
      deviceId: 'meter-2',
      format: 'native',
      access: [{ protocol: 'udp', port: 5683 }],
    });
    await waitFor(() => running.directory.byId('meter-2'), 'the reload');
    for (const id of ['meter-1', 'meter-2']) {
      const device = await loadDeviceConfig(running.layout.deviceFile(id));
      // meter-2 may only open udp/5683: its knock asks for that (no broker session needed to hold a grant).
      const { bytes } = buildKnock(device, knockIo, 'native');
      await sendDatagram(device.spa.host, device.spa.port, bytes);
    }
    await waitFor(async () => ((await fleetOps.grants()).length === 2 ? true : undefined), 'two grants');

    expect((await fleetOps.revokeGrants({ deviceId: 'meter-2' })).map((grant) => grant.deviceId)).toEqual([
      'meter-2',
    ]);
    expect((await fleetOps.grants()).map((grant) => grant.deviceId)).toEqual(['meter-1']);
    expect(await fleetOps.revokeGrants({ address: '10.9.9.9' })).toEqual([]);
    expect((await fleetOps.revokeGrants({ address: '127.0.0.1' })).map((grant) => grant.access)).toEqual([
      [`tcp/${running.mqtt.port}`],
    ]);
    expect(await fleetOps.grants()).toEqual([]);
    expect(events.filter((event) => event.type === 'grant.revoked')).toHaveLength(2);
  });

  it('remove deletes the entry, keys and bundle and closes the session; an unknown id is a clear error', async () => {
    const running = await up();
    const fleetOps = await fleet();
    await fleetOps.enrol({ deviceId: 'gone-1', format: 'fwknop' });
    await waitFor(() => running.directory.byId('gone-1'), 'the reload');
    const device = await loadDeviceConfig(running.layout.deviceFile('gone-1'));
    const session = await knockAndConnect(device);
    const closed = new Promise<void>((done) => session.once('close', () => done()));
    const copy = await tempDir('bc9-bundle');
    await cp(running.layout.deviceDir('gone-1'), copy, { recursive: true });

    // Its rule closed on connect (docs/scaling.md): remove closes the session, there is no grant left to revoke.
    await waitFor(
      async () => ((await fleetOps.grants()).length === 0 ? true : undefined),
      'close on connect',
    );
    const result = await fleetOps.remove('gone-1');
    expect(result).toMatchObject({ changed: true, disconnected: 1 });
    expect(result.revoked).toEqual([]);
    expect(events.filter((event) => event.type === 'grant.revoked')).toMatchObject([
      { deviceId: 'gone-1', reason: 'connected' },
    ]);
    await closed;
    expect(await fleetOps.state('gone-1')).toBe('absent');
    expect(await readdir(`${dataDir}/keys`)).toEqual(['demo-device.bc1']);
    expect(await readdir(`${dataDir}/devices`)).toEqual(['demo-device']);
    expect(await readFile(running.layout.devicesFile, 'utf8')).not.toContain('gone-1');
    // Its certificate is no longer accepted: with the gate open for this address (the demo device knocked and
    // has not connected yet, so its rule stays open), the broker itself refuses the removed identity.
    const demo = await loadDeviceConfig(running.layout.deviceFile('demo-device'));
    await sendDatagram(demo.spa.host, demo.spa.port, buildKnock(demo, knockIo, 'native').bytes);
    await waitFor(
      async () => ((await fleetOps.grants()).length === 1 ? true : undefined),
      "the demo's grant",
    );
    const kept = await loadDeviceConfig(`${copy}/device.json`);
    const again = await connectToBroker(kept, {
      deadlineMs: 600,
      retryDelayMs: 100,
      attemptTimeoutMs: 300,
    }).catch((error: unknown) => error);
    expect(again).toBeInstanceOf(BrokerConnectError);
    expect(String((again as Error).message)).toMatch(/not authori[sz]ed|refused|Connection refused/i);
    // The name reused: the new enrolment connects, the removed one's certificate stays refused.
    await fleetOps.enrol({ deviceId: 'gone-1', format: 'native' });
    await waitFor(() => running.directory.byId('gone-1'), 'the reload');
    const reborn = await loadDeviceConfig(running.layout.deviceFile('gone-1'));
    expect((await knockAndConnect(reborn)).connected).toBe(true);
    const revived = await connectToBroker(kept, {
      deadlineMs: 600,
      retryDelayMs: 100,
      attemptTimeoutMs: 300,
    }).catch((error: unknown) => error);
    await removeDir(copy);
    expect(revived).toBeInstanceOf(BrokerConnectError);
    expect(String((revived as Error).message)).toMatch(/not authori[sz]ed|refused|Connection refused/i);
    await fleetOps.remove('gone-1');

    await expect(fleetOps.remove('gone-1')).rejects.toThrow(FleetError);
    await expect(fleetOps.setEnabled('nobody', false)).rejects.toThrow(
      /device "nobody" is not in .*devices\.yaml; fix: check the id with "blackcloud devices list"/,
    );
  });
});

describe('local fleet without a running black cloud', () => {
  it('needs the data directory of up, names the flag and the fix', async () => {
    await expect(
      LocalFleet.open({
        dataDir: `${dataDir}/nothing`,
        random: systemRandom,
        clock: systemClock,
        operator: 'x',
      }),
    ).rejects.toThrow(/--data-dir: .* has no devices file .*; fix: run "blackcloud up --data-dir/);
  });

  it('disable works on the file alone and says nothing was open; grants are empty', async () => {
    await (await up()).close();
    cloud = undefined;
    const fleetOps = await fleet();
    const result = await fleetOps.setEnabled('demo-device', false);
    expect(result).toMatchObject({ changed: true, revoked: [], disconnected: 0 });
    expect(result.notes[0]).toMatch(/blackcloud up is not running here: nothing was open/);
    expect(await fleetOps.grants()).toEqual([]);
    expect(await fleetOps.running()).toBe(false);
    expect((await fleetOps.list()).map((device) => [device.id, device.enabled])).toEqual([
      ['demo-device', false],
    ]);
  });

  it("remove also deletes the device's rotated key files, never another device's whose id extends it", async () => {
    await (await up()).close();
    cloud = undefined;
    const fleetOps = await fleet();
    await fleetOps.enrol({ deviceId: 'meter', format: 'native' });
    await fleetOps.enrol({ deviceId: 'meter.7', format: 'native' });
    await writeFile(`${dataDir}/keys/meter.3.bc1`, 'rotated\n', { mode: 0o600 });
    await writeFile(`${dataDir}/keys/meter.4.bc1.tmp-0123456789abcdef`, 'torn\n', { mode: 0o600 });
    await fleetOps.remove('meter');
    expect((await readdir(`${dataDir}/keys`)).sort()).toEqual(['demo-device.bc1', 'meter.7.bc1']);
    expect(await fleetOps.state('meter')).toBe('absent');
    expect(await fleetOps.state('meter.7')).toBe('present');
  });

  it('a failed enrolment leaves nothing behind; a half-created device from a killed run is redone', async () => {
    await (await up()).close();
    cloud = undefined;
    const fleetOps = await fleet();
    // maxOpenSeconds beyond the devices-file limit: files are written, then the directory entry is refused.
    await expect(
      fleetOps.enrol({ deviceId: 'bad-1', format: 'fwknop', maxOpenSeconds: 100_000 }),
    ).rejects.toThrow(DeviceFileError);
    expect(await fleetOps.state('bad-1')).toBe('absent');
    expect(await readdir(`${dataDir}/keys`)).toEqual(['demo-device.bc1']);

    // What a run killed between the key files and the directory entry leaves: files, no entry.
    await writeFile(`${dataDir}/keys/half-1.bc1`, 'stale\n', { mode: 0o600 });
    expect(await fleetOps.state('half-1')).toBe('partial');
    const device = await fleetOps.enrol({ deviceId: 'half-1', format: 'native' });
    expect(await fleetOps.state('half-1')).toBe('present');
    expect((await readFile(`${dataDir}/keys/half-1.bc1`, 'utf8')).trim()).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect((await stat(device.deviceFile)).mode & 0o777).toBe(0o600);
    expect((await stat(`${device.bundleDir}/client.key`)).mode & 0o777).toBe(0o600);
    await expect(fleetOps.enrol({ deviceId: 'half-1', format: 'native' })).rejects.toThrow(/already exists/);
  });
});

describe('control socket requests', () => {
  const deps = {
    grants: { active: () => [], revokeWhere: async () => [] },
    reloadDevices: async () => undefined,
    isEnabled: () => false,
    brokerEmbedded: true,
    cutOffs: { cutOff: async () => undefined, take: async () => ({ revoked: [], disconnected: 2 }) },
  };

  it('cut-off reports closed sessions with the embedded broker, and none with an external one', async () => {
    const request = { op: 'cut-off', deviceIds: ['a'] };
    expect(await handleControlRequest(request, deps)).toEqual({ ok: true, revoked: [], disconnected: 2 });
    expect(await handleControlRequest(request, { ...deps, brokerEmbedded: false })).toEqual({
      ok: true,
      revoked: [],
    });
  });

  it('the socket answers junk with an error, drops silent clients at close, and refuses an over-long path', async () => {
    const path = controlSocketPath(dataDir);
    const server = await startControlServer(path, deps);
    expect(server).toBeDefined();
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const answer = await new Promise<string>((done) => {
      const socket = createConnection(path, () => socket.write('not json\n'));
      let text = '';
      socket.setEncoding('utf8').on('data', (chunk: string) => {
        text += chunk;
      });
      socket.on('close', () => done(text));
    });
    expect(JSON.parse(answer)).toEqual({ ok: false, error: 'the request is not one JSON line' });
    const silent = createConnection(path);
    await new Promise((done) => silent.once('connect', done));
    const silentClosed = new Promise((done) => silent.once('close', done));
    await server!.close();
    await silentClosed;
    await expect(stat(path)).rejects.toThrow(/ENOENT/);

    const notes: string[] = [];
    expect(
      await startControlServer(`/tmp/${'x'.repeat(120)}/control.sock`, deps, (n) => notes.push(n)),
    ).toBeUndefined();
    expect(notes[0]).toMatch(/is longer than 107 bytes: .* \(use a shorter --data-dir\)/);
  });

  it.each([
    [null, /unknown op undefined/],
    [{ op: 'drop-table' }, /unknown op "drop-table": expected "grants", "revoke" or "cut-off"/],
    [{ op: 'revoke' }, /revoke needs "address" or "deviceId"/],
    [{ op: 'revoke', address: '' }, /revoke needs "address" or "deviceId"/],
    [{ op: 'cut-off', deviceIds: 'x' }, /cut-off needs "deviceIds": a list of device ids/],
  ])('%j is refused with a message, never thrown', async (request, message) => {
    const response = await handleControlRequest(request, deps);
    expect(response.ok).toBe(false);
    expect(response.ok === false && response.error).toMatch(message);
  });
});
