/**
 * Closed on connect, end to end in process (docs/scaling.md): the local black cloud with the userspace gate and the
 * embedded broker, real knocks over UDP and real MQTT over mutual TLS (device-client library). The broker's
 * session signal releases the knocking device's claim; the gate's rule closes once no device that knocked from the
 * address still waits, while the established sessions live on.
 */
import { randomBytes } from 'node:crypto';
import type { MqttClient } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { BrokerConnectError } from '../../../device-client/errors.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import type { AuditEvent } from '../../../functions/core/interfaces.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { provisionDevice } from '../../../functions/local/provision-device.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { loadPem } from '../../../functions/pki/local-ca.ts';
import { removeDir, sleep, tempDir, waitFor } from './helpers.ts';

const knockIo = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };
/** Every device here knocks from 127.0.0.1: the gate sees one address for all of them (a shared NAT). */
const ADDRESS = '127.0.0.1';

let dataDir: string | undefined;
let cloud: LocalCloud | undefined;
let events: AuditEvent[] = [];
const clients: MqttClient[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-connclose');
  events = [];
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  cloud = undefined;
  await removeDir(dataDir);
});

/** `up` with three devices (the demo device and two more), a 60 s window (so only a connect closes early). */
async function up(): Promise<{ running: LocalCloud; devices: DeviceConfig[] }> {
  const config = resolveUpConfig({ dataDir: dataDir!, spaPort: '0', mqttPort: '0', grantSeconds: '60' });
  const running = await startLocalCloud(config, { onAudit: (event) => events.push(event) });
  cloud = running;
  const ca = await loadPem(`${running.layout.pkiDir}/ca.crt`, `${running.layout.pkiDir}/ca.key`);
  for (const deviceId of ['tracker-a', 'tracker-b']) {
    await provisionDevice({
      layout: running.layout,
      deviceId,
      format: 'native',
      access: [{ protocol: 'tcp', port: running.mqtt.port }],
      endpoints: running.endpoints,
      ca,
      caFile: `${running.layout.pkiDir}/ca.crt`,
      random: knockIo,
    });
  }
  await waitFor(() => running.directory.byId('tracker-b'), 'the directory to reload');
  const devices = await Promise.all(
    ['tracker-a', 'tracker-b'].map((id) => loadDeviceConfig(running.layout.deviceFile(id))),
  );
  return { running, devices };
}

async function knock(device: DeviceConfig): Promise<void> {
  const before = events.filter((event) => event.type === 'grant.opened' || event.type === 'grant.extended');
  await sendDatagram(device.spa.host, device.spa.port, buildKnock(device, knockIo, 'native').bytes);
  await waitFor(
    () =>
      events.filter((event) => event.type === 'grant.opened' || event.type === 'grant.extended').length >
      before.length
        ? true
        : undefined,
    `the knock of ${device.deviceId} to open its grant`,
    10_000,
  );
}

async function connect(device: DeviceConfig, deadlineMs = 5000): Promise<MqttClient> {
  const client = await connectToBroker(device, { deadlineMs, retryDelayMs: 100, attemptTimeoutMs: 2000 });
  clients.push(client);
  return client;
}

/** A connection attempt that must be refused by the gate (no open rule for the address). */
async function refused(device: DeviceConfig): Promise<boolean> {
  const error = await connect(device, 600).then(
    () => undefined,
    (e: unknown) => e,
  );
  return error instanceof BrokerConnectError;
}

const revokedOnConnect = () =>
  events.filter((event) => event.type === 'grant.revoked' && event.reason === 'connected');

function echo(client: MqttClient, deviceId: string, text: string): Promise<string> {
  const topic = `blackcloud/devices/${deviceId}/echo`;
  return (async () => {
    await client.subscribeAsync(topic, { qos: 1 });
    const arriving = new Promise<string>((done) =>
      client.once('message', (_t, payload) => done(payload.toString())),
    );
    await client.publishAsync(topic, text, { qos: 1 });
    return arriving;
  })();
}

describe('closed on connect (gate + embedded broker)', () => {
  it('a device that connects gets its rule revoked within a few seconds of CONNACK; its session lives on', async () => {
    const { running, devices } = await up();
    const [a] = devices as [DeviceConfig];
    await knock(a);
    const session = await connect(a);
    const connectedAt = Date.now();
    await waitFor(() => revokedOnConnect()[0], 'the rule to close on connect', 5000);
    expect(Date.now() - connectedAt).toBeLessThan(3000);
    expect(revokedOnConnect()).toMatchObject([{ deviceId: 'tracker-a', source: ADDRESS }]);
    expect(running.deps.grants.active()).toEqual([]);
    expect(events.some((event) => event.type === 'grant.revoked' && event.reason === 'expired')).toBe(false);
    // The established session still publishes and receives; a new connection without a knock is refused.
    await expect(echo(session, 'tracker-a', 'still here')).resolves.toBe('still here');
    expect(await refused(a)).toBe(true);
    expect(session.connected).toBe(true);
  }, 60_000);

  it('two devices knocking from one address keep the rule until both connected', async () => {
    const { running, devices } = await up();
    const [a, b] = devices as [DeviceConfig, DeviceConfig];
    await knock(a);
    await knock(b);
    const sessionA = await connect(a);
    await sleep(1000); // the broker's signal for tracker-a has long arrived
    expect(revokedOnConnect()).toEqual([]);
    expect(running.deps.grants.active()).toHaveLength(1);
    const sessionB = await connect(b); // the rule is still open for the device that waits
    await waitFor(() => revokedOnConnect()[0], 'the rule to close once both connected', 5000);
    expect(revokedOnConnect()).toMatchObject([{ deviceId: 'tracker-b', source: ADDRESS }]);
    expect(running.deps.grants.active()).toEqual([]);
    await expect(echo(sessionA, 'tracker-a', 'a')).resolves.toBe('a');
    await expect(echo(sessionB, 'tracker-b', 'b')).resolves.toBe('b');
    expect(await refused(a)).toBe(true);
  }, 60_000);

  it('a device connecting without a claim cannot make the receiver revoke the rule another device waits on', async () => {
    const { running, devices } = await up();
    const [a, b] = devices as [DeviceConfig, DeviceConfig];
    await knock(a);
    // tracker-b did not knock; it gets in through the rule tracker-a opened (same address) ...
    const intruder = await connect(b);
    expect(intruder.connected).toBe(true);
    await sleep(1000);
    // ... and its session releases nothing: the rule stays for tracker-a.
    expect(revokedOnConnect()).toEqual([]);
    expect(running.deps.grants.active().map((grant) => grant.deviceId)).toEqual(['tracker-a']);
    // A second and third session of tracker-b change nothing either.
    await connect(b);
    await connect(b);
    await sleep(500);
    expect(running.deps.grants.active()).toHaveLength(1);
    await connect(a);
    await waitFor(() => revokedOnConnect()[0], 'the rule to close when tracker-a connected', 5000);
    expect(revokedOnConnect()).toMatchObject([{ deviceId: 'tracker-a' }]);
  }, 60_000);
});
