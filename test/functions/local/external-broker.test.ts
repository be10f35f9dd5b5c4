/**
 * `blackcloud up --broker mqtts://...`: the gate fronts an external broker, a real Mosquitto 2.0.11 with TLS,
 * client certificates from the data directory's CA and the dynamic-security plugin (test/support/mosquitto.ts,
 * the generated configuration). Before the knock the device cannot reach it; after, pub/sub work; the fleet
 * commands drive the broker's dynamic security while `up` runs: a device added is served at once, disable and
 * remove close its session at the broker within 5 s (no restart), enable lets it back.
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
import { systemClock, systemRandom } from '../../../functions/core/system.ts';
import { deviceTopic } from '../../../functions/core/topics.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { ensureLocalPki } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { removeDir, tempDir } from './helpers.ts';

let dataDir: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let cloud: LocalCloud | undefined;
let notes: string[] = [];
const clients: MqttClient[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-external');
  notes = [];
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
  cloud = await startLocalCloud(config, { onNote: (line) => notes.push(line), keyRotation: false });
  return cloud;
}

async function knock(device: DeviceConfig): Promise<void> {
  const { bytes } = buildKnock(device, {
    now: () => Date.now(),
    randomBytes: (n) => new Uint8Array(randomBytes(n)),
  });
  await sendDatagram('127.0.0.1', cloud!.spa.port, bytes);
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
    const publisher = await connectToBroker(device, { deadlineMs: 5000 });
    clients.push(publisher);
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
});
