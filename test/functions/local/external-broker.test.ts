/**
 * `blackcloud up --broker mqtts://...`: the gate fronts an external broker, a real Mosquitto 2 with TLS and client
 * certificates from the data directory's CA. Before the knock the device cannot reach it; after, pub/sub work.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, chown, copyFile, writeFile } from 'node:fs/promises';
import { connect as tcpConnect } from 'node:net';
import { basename, join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { BrokerConnectError } from '../../../device-client/errors.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { ensureLocalPki } from '../../../functions/pki/local-ca.ts';
import { freePort, removeDir, requireTool, tempDir, waitFor } from './helpers.ts';

let dataDir: string | undefined;
let certDir: string | undefined;
let mosquitto: ChildProcess | undefined;
let cloud: LocalCloud | undefined;
const clients: MqttClient[] = [];

function listening(port: number): Promise<true | undefined> {
  return new Promise((done) => {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(undefined));
  });
}

beforeEach(async () => {
  dataDir = await tempDir('bc-external');
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  cloud = undefined;
  if (mosquitto !== undefined && mosquitto.exitCode === null) {
    const gone = new Promise((done) => mosquitto!.once('exit', done));
    mosquitto.kill('SIGTERM');
    await gone;
  }
  mosquitto = undefined;
  await removeDir(dataDir);
  await removeDir(certDir);
  certDir = undefined;
});

describe('blackcloud up --broker (external Mosquitto behind the gate)', () => {
  it('keeps Mosquitto dark until the knock, then carries MQTT to it', async () => {
    const binary = await requireTool('mosquitto', 'mosquitto');
    const layout = dataDirLayout(dataDir!);
    const pki = await ensureLocalPki(layout.pkiDir);
    const brokerPort = await freePort();
    // docs/local.md's recipe, as root: Mosquitto drops to its own user, which cannot enter the 0700 data
    // directory, so it gets copies it may read (root:mosquitto, 0750 / 0640), and no `user root`.
    const gid = Number(execFileSync('id', ['-g', 'mosquitto'], { encoding: 'utf8', timeout: 10_000 }).trim());
    const certs = await tempDir('bc-mosquitto-certs');
    certDir = certs;
    await chown(certs, 0, gid);
    await chmod(certs, 0o750);
    for (const file of [pki.caCert, pki.brokerCert, pki.brokerKey]) {
      const copy = join(certs, basename(file));
      await copyFile(file, copy);
      await chown(copy, 0, gid);
      await chmod(copy, 0o640);
    }
    const conf = `${dataDir}/mosquitto.conf`;
    await writeFile(
      conf,
      [
        'persistence false',
        'log_dest stderr',
        `listener ${brokerPort} 127.0.0.1`,
        `cafile ${join(certs, 'ca.crt')}`,
        `certfile ${join(certs, 'broker.crt')}`,
        `keyfile ${join(certs, 'broker.key')}`,
        'require_certificate true',
        'use_identity_as_username true',
        '',
      ].join('\n'),
    );
    let log = '';
    mosquitto = spawn(binary, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
    mosquitto.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      log += chunk;
    });
    await waitFor(() => listening(brokerPort), `mosquitto to listen on ${brokerPort} (log: ${log})`);

    const config = resolveUpConfig({
      dataDir: dataDir!,
      spaPort: '0',
      mqttPort: '0',
      broker: `mqtts://127.0.0.1:${brokerPort}`,
    });
    cloud = await startLocalCloud(config);
    expect(cloud.broker).toEqual({ host: '127.0.0.1', port: brokerPort, embedded: false, inProcess: false });
    const device = await loadDeviceConfig(layout.deviceFile(DEMO_DEVICE_ID));
    expect(device.mqtt.url).toBe(`mqtts://127.0.0.1:${cloud.mqtt.port}`);

    const before = await connectToBroker(device, { deadlineMs: 600 }).catch((error: unknown) => error);
    expect(before).toBeInstanceOf(BrokerConnectError);

    const { bytes } = buildKnock(device, {
      now: () => Date.now(),
      randomBytes: (n) => new Uint8Array(randomBytes(n)),
    });
    await sendDatagram('127.0.0.1', cloud.spa.port, bytes);
    const subscriber = await connectToBroker(device, { deadlineMs: 5000 });
    clients.push(subscriber);
    await subscriber.subscribeAsync('blackcloud/devices/demo-device/#', { qos: 1 });
    const arriving = new Promise<string>((done) =>
      subscriber.once('message', (_topic, payload) => done(payload.toString())),
    );
    const publisher = await connectToBroker(device, { deadlineMs: 5000 });
    clients.push(publisher);
    await publisher.publishAsync('blackcloud/devices/demo-device/t', 'through mosquitto', { qos: 1 });
    await expect(arriving).resolves.toBe('through mosquitto');
  });
});
