/**
 * The local black cloud end to end, in process, on real sockets (ports 0): receiver + userspace gate + embedded
 * broker (aedes, mutual TLS), composed by startLocalCloud exactly as `blackcloud up` does. Devices are driven with
 * the device-client library (real knocks over UDP, real MQTT over TLS).
 */
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { BrokerConnectError } from '../../../device-client/errors.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { DEMO_DEVICE_ID } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { provisionDevice } from '../../../functions/local/provision-device.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { loadPem } from '../../../functions/pki/local-ca.ts';
import { removeDir, sendAndListen, sleep, tempDir, waitFor } from './helpers.ts';

const knockIo = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };

let dataDir: string | undefined;
let cloud: LocalCloud | undefined;
let events: AuditEvent[] = [];
const clients: MqttClient[] = [];

async function up(dir: string): Promise<LocalCloud> {
  events = [];
  const config = resolveUpConfig({ dataDir: dir, spaPort: '0', mqttPort: '0' });
  cloud = await startLocalCloud(config, { onAudit: (event) => events.push(event) });
  return cloud;
}

async function knock(config: DeviceConfig, format = config.spa.format): Promise<Uint8Array> {
  const { bytes } = buildKnock(config, knockIo, format);
  await sendDatagram(config.spa.host, config.spa.port, bytes);
  return bytes;
}

async function connect(config: DeviceConfig, deadlineMs = 5000): Promise<MqttClient> {
  const client = await connectToBroker(config, { deadlineMs, retryDelayMs: 100, attemptTimeoutMs: 1000 });
  clients.push(client);
  return client;
}

function nextMessage(client: MqttClient): Promise<{ topic: string; text: string }> {
  return new Promise((done) =>
    client.once('message', (topic, payload) => done({ topic, text: payload.toString() })),
  );
}

function accepted(deviceId: string): AuditEvent[] {
  return events.filter((event) => event.type === 'packet.accepted' && event.deviceId === deviceId);
}

function rejectedFor(reason: string): AuditEvent[] {
  return events.filter((event) => event.type === 'packet.rejected' && event.reason === reason);
}

beforeEach(async () => {
  dataDir = await tempDir('bc-local');
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  cloud = undefined;
  await removeDir(dataDir);
});

describe('blackcloud up, in process (gate + embedded broker)', () => {
  it('creates the data directory on first run: CA, broker certificate, demo device, private files 0600', async () => {
    const running = await up(dataDir!);
    expect(running.demoDevice?.deviceId).toBe(DEMO_DEVICE_ID);
    const layout = running.layout;
    for (const file of [
      `${layout.pkiDir}/ca.key`,
      `${layout.pkiDir}/broker.key`,
      `${layout.keysDir}/demo-device.bc1`,
      layout.deviceFile(DEMO_DEVICE_ID),
      `${layout.deviceDir(DEMO_DEVICE_ID)}/client.key`,
      layout.devicesFile,
      layout.nonceFile,
    ]) {
      expect({ file, mode: (await stat(file)).mode & 0o777 }).toEqual({ file, mode: 0o600 });
    }
    expect((await stat(layout.root)).mode & 0o777).toBe(0o700);
    const device = await loadDeviceConfig(layout.deviceFile(DEMO_DEVICE_ID));
    expect(device.spa.port).toBe(running.spa.port);
    expect(device.mqtt.url).toBe(`mqtts://127.0.0.1:${running.mqtt.port}`);
    expect(device.access).toEqual([{ protocol: 'tcp', port: running.mqtt.port }]);
    // Behind the gate the embedded broker has no socket of its own (the gate hands it granted connections).
    expect(running.broker).toEqual({ embedded: true, inProcess: true });
    const endpoints = JSON.parse(await readFile(layout.endpointsFile, 'utf8'));
    expect(endpoints).toMatchObject({
      host: '127.0.0.1',
      spaPort: running.spa.port,
      mqttPort: running.mqtt.port,
    });
  });

  it('refuses MQTT before the knock; after it, publish and subscribe work', async () => {
    const running = await up(dataDir!);
    const device = await loadDeviceConfig(running.layout.deviceFile(DEMO_DEVICE_ID));

    const before = await connect(device, 800).catch((error: unknown) => error);
    expect(before).toBeInstanceOf(BrokerConnectError);

    await knock(device);
    const subscriber = await connect(device);
    await subscriber.subscribeAsync('blackcloud/devices/demo-device/#', { qos: 1 });
    const arriving = nextMessage(subscriber);
    await knock(device); // the rule closed on connect: every connection knocks first, as the device library does
    const publisher = await connect(device);
    await publisher.publishAsync('blackcloud/devices/demo-device/hello', 'hello through the gate', {
      qos: 1,
    });
    await expect(arriving).resolves.toEqual({
      topic: 'blackcloud/devices/demo-device/hello',
      text: 'hello through the gate',
    });
    expect(accepted(DEMO_DEVICE_ID)).toHaveLength(2);
    expect(events.some((event) => event.type === 'grant.opened')).toBe(true);
  });

  it('after expiry new connections fail while the established session lives', async () => {
    const running = await up(dataDir!);
    const ca = await loadPem(`${running.layout.pkiDir}/ca.crt`, `${running.layout.pkiDir}/ca.key`);
    await provisionDevice({
      layout: running.layout,
      deviceId: 'short-lived',
      format: 'native',
      access: [{ protocol: 'tcp', port: running.mqtt.port }],
      maxOpenSeconds: 1,
      endpoints: running.endpoints,
      ca,
      caFile: `${running.layout.pkiDir}/ca.crt`,
      random: knockIo,
    });
    // The running receiver picks the new device up without a restart.
    await waitFor(() => running.directory.byId('short-lived'), 'the directory to reload');
    const device = await loadDeviceConfig(running.layout.deviceFile('short-lived'));

    await knock(device);
    const session = await connect(device);
    await session.subscribeAsync('blackcloud/devices/short-lived/echo', { qos: 1 });
    await waitFor(
      () => events.find((event) => event.type === 'grant.revoked'),
      'the 1 s grant to expire',
      5000,
    );

    const after = await connect(device, 800).catch((error: unknown) => error);
    expect(after).toBeInstanceOf(BrokerConnectError);

    const echo = nextMessage(session);
    await session.publishAsync('blackcloud/devices/short-lived/echo', 'still here', { qos: 1 });
    await expect(echo).resolves.toEqual({ topic: 'blackcloud/devices/short-lived/echo', text: 'still here' });
  });

  it('refuses a replayed native knock, also after a restart (file-backed nonce store)', async () => {
    let running = await up(dataDir!);
    const device = await loadDeviceConfig(running.layout.deviceFile(DEMO_DEVICE_ID));
    const packet = await knock(device);
    await waitFor(() => accepted(DEMO_DEVICE_ID)[0], 'the knock to be accepted');

    await sendDatagram('127.0.0.1', running.spa.port, packet);
    await waitFor(() => rejectedFor('replay')[0], 'the replay to be refused');
    expect(running.counters()['rejected.replay']).toBe(1);

    await running.close();
    running = await up(dataDir!);
    expect(running.demoDevice).toBeUndefined(); // not the first run any more
    await sendDatagram('127.0.0.1', running.spa.port, packet);
    await waitFor(() => rejectedFor('replay')[0], 'the replay after restart to be refused');
    expect(accepted(DEMO_DEVICE_ID)).toHaveLength(0);
    expect(running.deps.grants.active()).toHaveLength(0);
  });

  it('disabling a device in devices.yaml closes its broker session and refuses its knocks, without a restart', async () => {
    const running = await up(dataDir!);
    const device = await loadDeviceConfig(running.layout.deviceFile(DEMO_DEVICE_ID));
    await knock(device);
    const session = await connect(device);
    const closed = new Promise<void>((done) => session.once('close', () => done()));

    const text = await readFile(running.layout.devicesFile, 'utf8');
    expect(text).toContain('enabled: true');
    await writeFile(running.layout.devicesFile, text.replace('enabled: true', 'enabled: false'), {
      mode: 0o600,
    });
    await closed;
    expect(running.directory.byId(DEMO_DEVICE_ID)?.enabled).toBe(false);

    await knock(device);
    await waitFor(() => rejectedFor('device-disabled')[0], "the disabled device's knock to be refused");
  });

  it('answers nothing to junk, empty, oversize and a flood, and keeps working', async () => {
    const running = await up(dataDir!);
    const junk = [
      new Uint8Array(0),
      new Uint8Array(randomBytes(48)).fill(0x00, 0, 1),
      new Uint8Array(4000).fill(0x41),
      ...Array.from({ length: 300 }, () => new Uint8Array(randomBytes(64)).fill(0xb1, 0, 1)),
    ];
    const probe = await sendAndListen('127.0.0.1', running.spa.port, junk, 300);
    expect(probe).toEqual({ bytesBack: 0, icmpError: false });
    // The kernel may drop part of a flood on loopback; what arrived was handled and nothing was accepted.
    await waitFor(() => running.counters()['rejected.bad-magic'], 'the junk to be counted');
    const counters = running.counters();
    expect(counters.accepted).toBeUndefined();
    expect(counters.rejected).toBe(counters.received);

    await sleep(300); // the per-source bucket refills (5 tokens/s)
    const device = await loadDeviceConfig(running.layout.deviceFile(DEMO_DEVICE_ID));
    await knock(device);
    const client = await connect(device);
    expect(client.connected).toBe(true);
  });
});
