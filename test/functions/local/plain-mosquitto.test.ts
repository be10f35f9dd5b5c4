/**
 * The plain profile with `up --broker --broker-plain` in front of a real Mosquitto 2.0.11 with dynamic security and
 * the generated plain listener (mosquittoConf `plainListener`): a plain device's knock sets its dynsec password to
 * the one-time credential (setClientPassword), the gate keeps the plain port dark, the device library publishes
 * over plain MQTT and a subscriber (the controller, over mutual TLS) receives it. The same CONNECT bytes are
 * reset from an address that never knocked and after the grant closed; at Mosquitto itself a credential replaced
 * by the next knock is refused, and a TLS device's name is refused with any password or none. No credential is in
 * the audit file or Mosquitto's log.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalFleet } from '../../../cli/fleet/local-fleet.ts';
import { connectDevice, type DeviceClient } from '../../../device-client/connect-device.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import { systemClock, systemRandom } from '../../../functions/core/system.ts';
import { deviceTopic } from '../../../functions/core/topics.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { ensureControllerTls } from '../../../functions/local/local-controller.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { ensureLocalPki, loadPem } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { connectBytes, knockFrom, sendConnect } from '../../support/plain-mqtt.ts';
import { freePort, removeDir, tempDir, waitFor } from './helpers.ts';

const PLAIN_ID = 'tiny-m';
const OTHER_ADDRESS = '127.0.0.2';

let dataDir: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let brokerPlainPort = 0;
let cloud: LocalCloud | undefined;
let notes: string[] = [];
const clients: (MqttClient | DeviceClient)[] = [];
const credentials: string[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-plain-mosq');
  notes = [];
  credentials.length = 0;
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  if (cloud !== undefined && credentials.length > 0) {
    const audit = await readFile(cloud.layout.auditFile, 'utf8');
    expect(audit.length).toBeGreaterThan(0);
    for (const credential of credentials) {
      expect(audit).not.toContain(credential);
      expect(mosquitto?.log() ?? '').not.toContain(credential);
      expect(notes.join('\n')).not.toContain(credential);
    }
  }
  await cloud?.close();
  cloud = undefined;
  await mosquitto?.stop();
  mosquitto = undefined;
  await removeDir(dataDir);
});

async function up(): Promise<{ running: LocalCloud; plain: DeviceConfig; tls: DeviceConfig }> {
  const layout = dataDirLayout(dataDir!);
  await ensureLocalPki(layout.pkiDir);
  const work = join(dataDir!, 'broker-work');
  await mkdir(work);
  brokerPlainPort = await freePort();
  mosquitto = await startMosquitto(layout.pkiDir, work, { dynamicSecurity: {}, plainPort: brokerPlainPort });
  const config = resolveUpConfig({
    dataDir: dataDir!,
    spaPort: '0',
    mqttPort: '0',
    plainPort: '0',
    grantSeconds: '60',
    broker: `mqtts://127.0.0.1:${mosquitto.port}`,
    brokerPlain: `mqtt://127.0.0.1:${brokerPlainPort}`,
  });
  const running = await startLocalCloud(config, { onNote: (line) => notes.push(line), keyRotation: false });
  cloud = running;
  expect(notes.join('\n')).toMatch(/follows the devices file/);
  const fleet = await LocalFleet.open({
    dataDir: dataDir!,
    random: systemRandom,
    clock: systemClock,
    operator: 'test',
  });
  const enrolled = await fleet.enrol({ deviceId: PLAIN_ID, format: 'native', transport: 'plain' });
  await waitFor(() => running.directory.byId(PLAIN_ID), 'the plain device to be loaded', 5000);
  await waitFor(
    () => (notes.some((line) => /change\(s\) applied/.test(line)) ? true : undefined),
    'the dynsec client of the plain device',
    5000,
  );
  return {
    running,
    plain: await loadDeviceConfig(enrolled.deviceFile),
    tls: await loadDeviceConfig(running.layout.deviceFile(DEMO_DEVICE_ID)),
  };
}

async function knock(device: DeviceConfig, address = '127.0.0.1'): Promise<string> {
  // setClientPassword is one round trip to Mosquitto: give it a little longer than the gate needs.
  const credential = await knockFrom(device, cloud!.spa.port, address, 300);
  credentials.push(credential);
  return credential;
}

describe('the plain profile with up --broker (Mosquitto 2.0.11, dynamic security)', () => {
  it('writes the plain listener into the generated mosquitto.conf', async () => {
    const { running } = await up();
    const conf = await readFile(join(running.layout.root, 'mosquitto', 'mosquitto.conf'), 'utf8');
    expect(conf).toContain(`listener ${brokerPlainPort} 127.0.0.1`);
    expect(conf).toMatch(/allow_anonymous false/);
  });

  it('the device library publishes over plain MQTT through the gate; the controller receives it', async () => {
    const { running } = await up();
    const ca = await loadPem(`${running.layout.pkiDir}/ca.crt`, `${running.layout.pkiDir}/ca.key`);
    const controller = await ensureControllerTls(running.layout.pkiDir, ca);
    const subscriber = await mqtt.connectAsync(`mqtts://127.0.0.1:${mosquitto!.port}`, {
      ca: ca.cert,
      cert: controller.cert,
      key: controller.key,
      clientId: 'test-subscriber',
      reconnectPeriod: 0,
    });
    clients.push(subscriber);
    const topic = deviceTopic(PLAIN_ID, 'telemetry');
    await subscriber.subscribeAsync(topic, { qos: 1 });
    const arriving = new Promise<string>((resolve) =>
      subscriber.once('message', (_topic, payload) => resolve(payload.toString())),
    );
    const device = await connectDevice(running.layout.deviceFile(PLAIN_ID), {
      firstConnectDeadlineMs: 10_000,
      keyRotation: false,
      knockWaitMs: 400,
    });
    clients.push(device);
    await device.publishAsync(topic, 'plain through mosquitto', { qos: 1 });
    await expect(arriving).resolves.toBe('plain through mosquitto');
  });

  it('the same CONNECT bytes: reset from an address that never knocked and after the grant closed', async () => {
    const { running, plain } = await up();
    const credential = await knock(plain);
    const bytes = connectBytes(PLAIN_ID, credential, `${PLAIN_ID}/raw`);
    const viaGate = (localAddress: string) => sendConnect(bytes, running.plain!.port, localAddress);
    expect(await viaGate(OTHER_ADDRESS)).toBe('reset');
    expect(await viaGate('127.0.0.1')).toBe(0); // Mosquitto took the live credential
    await running.deps.grants.revokeWhere((grant) => grant.address === '127.0.0.1');
    expect(await viaGate('127.0.0.1')).toBe('reset');
  });

  it("at Mosquitto itself: a replaced credential and a TLS device's name are refused", async () => {
    const { plain, tls } = await up();
    const direct = (username: string | undefined, password: string | undefined) =>
      sendConnect(
        connectBytes(username, password, `${username ?? 'anon'}/direct`),
        brokerPlainPort,
        '127.0.0.1',
      );
    const first = await knock(plain);
    const second = await knock(plain);
    expect(await direct(PLAIN_ID, first)).toBe(5); // replaced by the next knock
    expect(await direct(PLAIN_ID, second)).toBe(0);
    for (const password of [second, 'guess', '', undefined]) {
      expect(await direct(tls.deviceId, password)).toBe(5);
    }
    expect(await direct(PLAIN_ID, undefined)).toBe(5);
    expect(await direct(undefined, undefined)).toBe(5);
  });
});
