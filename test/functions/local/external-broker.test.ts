/**
 * `blackcloud up --broker mqtts://...`: the gate fronts an external broker, a real Mosquitto 2.0.11 with TLS,
 * client certificates from the data directory's CA and the dynamic-security plugin (test/support/mosquitto.ts,
 * the generated configuration). Before the knock the device cannot reach it; after, pub/sub work; the fleet
 * commands drive the broker's dynamic security while `up` runs: a device added is served at once, disable and
 * remove close its session at the broker within 5 s (no restart), enable lets it back. Closed on connect through
 * Mosquitto's own connection log: the rule goes once every device that knocked for the address has its session.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalFleet } from '../../../cli/fleet/local-fleet.ts';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { BrokerConnectError } from '../../../device-client/errors.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { systemClock, systemRandom } from '../../../functions/core/system.ts';
import { deviceTopic } from '../../../functions/core/topics.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { ensureLocalPki } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { removeDir, sleep, tempDir, waitFor } from './helpers.ts';

let dataDir: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let cloud: LocalCloud | undefined;
let notes: string[] = [];
let audits: AuditEvent[] = [];
const clients: MqttClient[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-external');
  notes = [];
  audits = [];
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  cloud = undefined;
  await mosquitto?.stop();
  mosquitto = undefined;
  await removeDir(dataDir);
});

/** The PKI, Mosquitto with dynamic security (no device in its file yet), and `up --broker` in front of it. */
async function startAll(): Promise<LocalCloud> {
  const layout = dataDirLayout(dataDir!);
  await ensureLocalPki(layout.pkiDir);
  const work = join(dataDir!, 'broker-work');
  await mkdir(work);
  mosquitto = await startMosquitto(layout.pkiDir, work, { dynamicSecurity: {} });
  const config = resolveUpConfig({
    dataDir: dataDir!,
    spaPort: '0',
    mqttPort: '0',
    broker: `mqtts://127.0.0.1:${mosquitto.port}`,
  });
  cloud = await startLocalCloud(config, {
    onNote: (line) => notes.push(line),
    onAudit: (event) => audits.push(event),
    keyRotation: false,
  });
  return cloud;
}

async function knock(device: DeviceConfig): Promise<void> {
  const { bytes } = buildKnock(device, {
    now: () => Date.now(),
    randomBytes: (n) => new Uint8Array(randomBytes(n)),
  });
  await sendDatagram('127.0.0.1', cloud!.spa.port, bytes);
}

/** Knocks and waits until the receiver has opened or extended the grant of that device (its claim is in). */
async function knockAndAwaitGrant(device: DeviceConfig): Promise<void> {
  const granted = () =>
    audits.filter(
      (e) => (e.type === 'grant.opened' || e.type === 'grant.extended') && e.deviceId === device.deviceId,
    ).length;
  const before = granted();
  await knock(device);
  await waitFor(() => (granted() > before ? true : undefined), `the grant of ${device.deviceId}`, 10_000);
}

async function knockAndConnect(device: DeviceConfig): Promise<MqttClient> {
  await knock(device);
  const client = await connectToBroker(device, { deadlineMs: 5000 });
  clients.push(client);
  return client;
}

function fleet(): Promise<LocalFleet> {
  return LocalFleet.open({
    dataDir: dataDir!,
    random: systemRandom,
    clock: systemClock,
    operator: 'tester@test',
  });
}

function closedWithin(client: MqttClient): Promise<number> {
  const start = performance.now();
  return new Promise((resolve) => client.once('close', () => resolve(performance.now() - start)));
}

describe('blackcloud up --broker (external Mosquitto behind the gate)', () => {
  it('keeps Mosquitto dark until the knock, then carries MQTT to it', async () => {
    await startAll();
    const layout = dataDirLayout(dataDir!);
    expect(cloud!.broker).toEqual({
      host: '127.0.0.1',
      port: mosquitto!.port,
      embedded: false,
      inProcess: false,
    });
    expect(notes.some((line) => line.includes('follows the devices file'))).toBe(true);
    // The recipe's files, from the one generator: the plugin and its file, no ACL file.
    const conf = await readFile(join(dataDir!, 'mosquitto', 'mosquitto.conf'), 'utf8');
    expect(conf).toContain(`listener ${mosquitto!.port} 127.0.0.1`);
    expect(conf).toMatch(/^plugin \/usr\/lib\/.*mosquitto_dynamic_security\.so$/m);
    expect(conf).not.toContain('acl_file');
    const device = await loadDeviceConfig(layout.deviceFile(DEMO_DEVICE_ID));
    expect(device.mqtt.url).toBe(`mqtts://127.0.0.1:${cloud!.mqtt.port}`);

    const before = await connectToBroker(device, { deadlineMs: 600 }).catch((error: unknown) => error);
    expect(before).toBeInstanceOf(BrokerConnectError);

    const subscriber = await knockAndConnect(device);
    await subscriber.subscribeAsync('blackcloud/devices/demo-device/#', { qos: 1 });
    const arriving = new Promise<string>((done) =>
      subscriber.once('message', (_topic, payload) => done(payload.toString())),
    );
    // A knock per connection (the device library's way): the subscriber's session closed its rule.
    const publisher = await knockAndConnect(device);
    await publisher.publishAsync('blackcloud/devices/demo-device/t', 'through mosquitto', { qos: 1 });
    await expect(arriving).resolves.toBe('through mosquitto');
  });

  it('drives the broker dynamic security: add serves at once, disable and remove cut the session within 5 s', async () => {
    await startAll();
    const fleetOps = await fleet();
    const added = await fleetOps.enrol({ deviceId: 'tracker-1', format: 'native' });
    const tracker = await loadDeviceConfig(added.deviceFile);
    const session = await knockAndConnect(tracker);
    // A device added while up runs is a dynsec client with its role: its own tree is granted (0x80 otherwise).
    expect(await session.subscribeAsync(deviceTopic('tracker-1', '#'), { qos: 1 })).toEqual([
      { topic: deviceTopic('tracker-1', '#'), qos: 1 },
    ]);

    const gone = closedWithin(session);
    const disabled = await fleetOps.setEnabled('tracker-1', false);
    expect(await gone).toBeLessThan(5_000);
    expect(disabled.notes.join(' ')).toMatch(/dynamic security closed/);
    await knock(tracker);
    await expect(connectToBroker(tracker, { deadlineMs: 1500 })).rejects.toBeInstanceOf(BrokerConnectError);

    await fleetOps.setEnabled('tracker-1', true);
    await new Promise((resolve) => setTimeout(resolve, 300)); // the file watcher's reload
    const back = await knockAndConnect(tracker);
    expect(await back.subscribeAsync(deviceTopic('tracker-1', '#'), { qos: 1 })).toHaveLength(1);

    const removedGone = closedWithin(back);
    await fleetOps.remove('tracker-1');
    expect(await removedGone).toBeLessThan(5_000);
    expect(mosquitto!.log().split('mosquitto version 2.0.11 running').length).toBe(2);
  });

  it("closes the rule on connect, from Mosquitto's log: two devices on one address keep it until both connected", async () => {
    await startAll();
    await waitFor(
      () => (notes.some((line) => line.includes('broker session signal: watching')) ? true : undefined),
      'the session signal',
    );
    const demo = await loadDeviceConfig(dataDirLayout(dataDir!).deviceFile(DEMO_DEVICE_ID));
    const tracker = await loadDeviceConfig(
      (await (await fleet()).enrol({ deviceId: 'tracker-2', format: 'native' })).deviceFile,
    );
    await waitFor(() => cloud!.directory.byId('tracker-2'), 'the directory to reload tracker-2');
    const revoked = () => audits.filter((e) => e.type === 'grant.revoked');
    // Both knock from 127.0.0.1: one rule, two claims. Each knock's grant is awaited: a session reported before the
    // second knock is handled would rightly close the rule.
    await knockAndAwaitGrant(demo);
    await knockAndAwaitGrant(tracker);
    const first = await connectToBroker(demo, { deadlineMs: 5000 });
    clients.push(first);
    // demo's session is logged and released; tracker still waits, so the rule stays.
    await waitFor(
      () => (mosquitto!.log().includes(`u'${DEMO_DEVICE_ID}'`) ? true : undefined),
      "demo-device's connect in Mosquitto's log",
    );
    await sleep(1_000);
    expect(revoked()).toEqual([]);
    const second = await connectToBroker(tracker, { deadlineMs: 5000 });
    clients.push(second);
    const connackAt = Date.now();
    await waitFor(() => (revoked().length > 0 ? true : undefined), 'the rule closed on connect', 5_000);
    const [closed] = revoked();
    expect(closed).toMatchObject({ type: 'grant.revoked', reason: 'connected', source: '127.0.0.1' });
    expect((closed as { time: number }).time - connackAt).toBeLessThan(5_000);
    // The rule is gone: a connection without a knock is refused; the established sessions live on.
    await expect(connectToBroker(demo, { deadlineMs: 800 })).rejects.toBeInstanceOf(BrokerConnectError);
    await second.subscribeAsync(deviceTopic('tracker-2', '#'), { qos: 1 });
    const arriving = new Promise<string>((done) =>
      second.once('message', (_t, payload) => done(payload.toString())),
    );
    await second.publishAsync(deviceTopic('tracker-2', 't'), 'after the rule closed', { qos: 1 });
    await expect(arriving).resolves.toBe('after the rule closed');
    expect(first.connected).toBe(true);
  });
});
