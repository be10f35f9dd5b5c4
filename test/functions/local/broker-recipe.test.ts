/**
 * docs/local.md's `--broker` recipe as written, as the user who runs `up` (root here, as in CI): `up --broker`
 * writes `<data-dir>/mosquitto/mosquitto.conf` and `dynamic-security.json` from the one generator and says dynamic
 * security is off; Mosquitto started with that file serves its TLS port (started as root it would drop to the
 * `mosquitto` user, which cannot enter the 0700 data directory: the generated file keeps root, issue 19 item 7(i));
 * `up` started again follows the devices file, and the demo device knocks and publishes through it.
 */
import { randomBytes } from 'node:crypto';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import { DEMO_DEVICE_ID } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import {
  type CliRun,
  freePort,
  removeDir,
  requireTool,
  runCommand,
  stopAllCli,
  tempDir,
  waitFor,
} from './helpers.ts';

let dataDir: string | undefined;
let cloud: LocalCloud | undefined;

beforeEach(async () => {
  dataDir = await tempDir('bc-recipe');
});

afterEach(async () => {
  await cloud?.close();
  cloud = undefined;
  await stopAllCli();
  await removeDir(dataDir);
});

function accepting(port: number): Promise<true | undefined> {
  return new Promise((done) => {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => done(undefined));
  });
}

describe("docs/local.md's --broker recipe", () => {
  it('up writes the Mosquitto files, Mosquitto runs from them, and the next up follows the devices file', async () => {
    const binary = await requireTool('mosquitto', 'mosquitto');
    const brokerPort = await freePort();
    // A fixed gate port: the demo device's access (tcp/<gate port>) is written on the first run.
    const config = resolveUpConfig({
      dataDir: dataDir!,
      spaPort: '0',
      mqttPort: String(await freePort()),
      broker: `mqtts://127.0.0.1:${brokerPort}`,
    });
    const firstNotes: string[] = [];
    cloud = await startLocalCloud(config, { onNote: (line) => firstNotes.push(line), keyRotation: false });
    expect(firstNotes.some((line) => line.includes('dynamic security is off'))).toBe(true);
    await cloud.close();
    cloud = undefined;

    const conf = join(dataDir!, 'mosquitto', 'mosquitto.conf');
    const mosquitto: CliRun = runCommand([binary, '-c', conf]);
    await waitFor(
      async () => {
        if (mosquitto.child.exitCode !== null) {
          throw new Error(`mosquitto -c ${conf} exited ${mosquitto.child.exitCode}: ${mosquitto.stderr()}`);
        }
        return accepting(brokerPort);
      },
      `mosquitto on port ${brokerPort} (stderr: ${mosquitto.stderr()})`,
      15_000,
    );

    const notes: string[] = [];
    cloud = await startLocalCloud(config, { onNote: (line) => notes.push(line), keyRotation: false });
    expect(notes.some((line) => line.includes('follows the devices file'))).toBe(true);

    const device = await loadDeviceConfig(cloud.layout.deviceFile(DEMO_DEVICE_ID));
    const { bytes } = buildKnock(device, {
      now: () => Date.now(),
      randomBytes: (n) => new Uint8Array(randomBytes(n)),
    });
    await sendDatagram('127.0.0.1', cloud.spa.port, bytes);
    const client = await connectToBroker(device, { deadlineMs: 5000 });
    try {
      const topic = `blackcloud/devices/${DEMO_DEVICE_ID}/recipe`;
      await client.subscribeAsync(topic, { qos: 1 });
      const arriving = new Promise<string>((done) =>
        client.once('message', (_t, payload) => done(`${payload}`)),
      );
      await client.publishAsync(topic, 'through the recipe', { qos: 1 });
      await expect(arriving).resolves.toBe('through the recipe');
    } finally {
      client.end(true);
    }
  }, 90_000);
});
