/**
 * The real `fwknop` client (fwknop-client 2.6.10) knocking the local black cloud: a device provisioned in fwknop
 * format gets in with the client's command line and with the printed ~/.fwknoprc stanza; a captured packet
 * (`--save-packet`) replayed is refused, also after a restart with the file-backed nonce store.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { BrokerConnectError } from '../../../device-client/errors.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { fwknoprcStanza } from '../../../functions/local/fwknop-hints.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { type ProvisionedDevice, provisionDevice } from '../../../functions/local/provision-device.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { loadPem } from '../../../functions/pki/local-ca.ts';
import { removeDir, requireTool, tempDir, waitFor } from './helpers.ts';

const run = promisify(execFile);

let dataDir: string | undefined;
let home: string | undefined;
let cloud: LocalCloud | undefined;
let events: AuditEvent[] = [];
const clients: MqttClient[] = [];

async function up(): Promise<LocalCloud> {
  events = [];
  cloud = await startLocalCloud(resolveUpConfig({ dataDir: dataDir!, spaPort: '0', mqttPort: '0' }), {
    onAudit: (event) => events.push(event),
  });
  return cloud;
}

async function addFwknopDevice(running: LocalCloud, deviceId: string): Promise<ProvisionedDevice> {
  const pki = running.layout.pkiDir;
  const device = await provisionDevice({
    layout: running.layout,
    deviceId,
    format: 'fwknop',
    access: [{ protocol: 'tcp', port: running.mqtt.port }],
    endpoints: running.endpoints,
    ca: await loadPem(`${pki}/ca.crt`, `${pki}/ca.key`),
    caFile: `${pki}/ca.crt`,
    random: { randomBytes: (n) => new Uint8Array(randomBytes(n)) },
  });
  await waitFor(() => running.directory.byId(deviceId), 'the directory to pick up the new device');
  // fwknop stamps whole seconds: a knock in the nonce store's first second would be 'before-start'.
  const notBefore = running.deps.nonces.notBefore ?? 0;
  await waitFor(
    () => (Math.floor(Date.now() / 1000) * 1000 >= notBefore ? true : undefined),
    'the next second',
  );
  return device;
}

function fwknopEvents(type: 'packet.accepted' | 'packet.rejected', reason?: string): AuditEvent[] {
  return events.filter(
    (event) =>
      event.type === type &&
      (event.type !== 'packet.rejected' || reason === undefined || event.reason === reason) &&
      ('format' in event ? event.format === 'fwknop' : false),
  );
}

beforeEach(async () => {
  dataDir = await tempDir('bc-fwknop');
  home = await tempDir('bc-fwknop-home');
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  cloud = undefined;
  await removeDir(dataDir);
  await removeDir(home);
});

describe('the real fwknop client knocking blackcloud', () => {
  it('opens access for an fwknop-format device; the captured packet replayed is refused, also after a restart', async () => {
    const fwknop = await requireTool('fwknop', 'fwknop-client');
    let running = await up();
    const device = await addFwknopDevice(running, 'legacy-1');
    const config = await loadDeviceConfig(device.deviceFile);
    expect(config.spa.format).toBe('fwknop');

    const before = await connectToBroker(config, { deadlineMs: 600 }).catch((error: unknown) => error);
    expect(before).toBeInstanceOf(BrokerConnectError);

    const packetFile = join(home!, 'packet.txt');
    await run(
      fwknop,
      [
        '--no-save-args',
        '-A',
        `tcp/${running.mqtt.port}`,
        '-a',
        '127.0.0.1',
        '-D',
        '127.0.0.1',
        '-p',
        String(running.spa.port),
        '-U',
        'legacy-1',
        '--use-hmac',
        '--key-base64-rijndael',
        device.fwknop!.keyBase64,
        '--key-base64-hmac',
        device.fwknop!.hmacKeyBase64,
        '--save-packet',
        packetFile,
      ],
      { env: { ...process.env, HOME: home! }, cwd: home!, timeout: 15_000 },
    );
    const opened = await waitFor(() => fwknopEvents('packet.accepted')[0], 'the fwknop knock to be accepted');
    expect(opened).toMatchObject({ deviceId: 'legacy-1', source: '127.0.0.1' });

    const client = await connectToBroker(config, { deadlineMs: 5000 });
    clients.push(client);
    await client.publishAsync('blackcloud/devices/legacy-1/hello', 'from an fwknop device', { qos: 1 });

    // Replay the very packet the client sent.
    const wire = new TextEncoder().encode((await readFile(packetFile, 'utf8')).trim());
    await sendDatagram('127.0.0.1', running.spa.port, wire);
    await waitFor(() => fwknopEvents('packet.rejected', 'replay')[0], 'the replay to be refused');

    await running.close();
    running = await up();
    await sendDatagram('127.0.0.1', running.spa.port, wire);
    await waitFor(
      () => fwknopEvents('packet.rejected', 'replay')[0],
      'the replay after a restart to be refused',
    );
    expect(fwknopEvents('packet.accepted')).toHaveLength(0);
  });

  it('knocks with the ~/.fwknoprc stanza that "devices add" prints', async () => {
    const fwknop = await requireTool('fwknop', 'fwknop-client');
    const running = await up();
    const device = await addFwknopDevice(running, 'legacy-2');
    const stanza = fwknoprcStanza({
      stanza: 'blackcloud-legacy-2',
      username: 'legacy-2',
      server: '127.0.0.1',
      spaPort: running.spa.port,
      access: [{ protocol: 'tcp', port: running.mqtt.port }],
      keyBase64: device.fwknop!.keyBase64,
      hmacKeyBase64: device.fwknop!.hmacKeyBase64,
      hmacType: 'sha256',
    });
    await writeFile(join(home!, '.fwknoprc'), `${stanza}\n`, { mode: 0o600 });
    await run(fwknop, ['--no-save-args', '-n', 'blackcloud-legacy-2'], {
      env: { ...process.env, HOME: home! },
      cwd: home!,
      timeout: 15_000,
    });
    const opened = await waitFor(() => fwknopEvents('packet.accepted')[0], 'the stanza knock to be accepted');
    expect(opened).toMatchObject({
      deviceId: 'legacy-2',
      access: [{ protocol: 'tcp', port: running.mqtt.port }],
    });
    const client = await connectToBroker(await loadDeviceConfig(device.deviceFile), { deadlineMs: 5000 });
    clients.push(client);
    expect(client.connected).toBe(true);
  });
});
