/**
 * Key rotation in `blackcloud up` (the receiver as controller, embedded aedes broker behind the gate) driven by
 * `blackcloud keys rotate` in process: progress lines, bounded concurrency, a confirmed device, an offline device
 * that keeps its old key, and the flags' errors. Devices use the device-client library over real sockets.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rotateKeys } from '../../cli/commands/keys.ts';
import { createProgram } from '../../cli/program.ts';
import { UsageError } from '../../cli/usage-error.ts';
import { connectToBroker } from '../../device-client/broker-connection.ts';
import { listenForKeys } from '../../device-client/key-listener.ts';
import { buildKnock } from '../../device-client/knock.ts';
import { loadDeviceConfig } from '../../device-client/load-device-config.ts';
import { sendDatagram } from '../../device-client/send-datagram.ts';
import type { DeviceConfig } from '../../functions/core/device-config.ts';
import type { AuditEvent } from '../../functions/core/interfaces.ts';
import { systemRandom } from '../../functions/core/system.ts';
import { DEMO_DEVICE_ID } from '../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../functions/local/local-cloud.ts';
import { controllerEndpointFile } from '../../functions/local/local-controller.ts';
import { provisionDevice } from '../../functions/local/provision-device.ts';
import { LocalConfigError, resolveUpConfig } from '../../functions/local/up-config.ts';
import { loadPem } from '../../functions/pki/local-ca.ts';
import { freePort, removeDir, tempDir, waitFor } from '../functions/local/helpers.ts';

const random = (n: number) => new Uint8Array(randomBytes(n));
let dataDir: string | undefined;
let cloud: LocalCloud | undefined;
const events: AuditEvent[] = [];
const clients: MqttClient[] = [];

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (line: string) => out.push(line), err: (line: string) => err.push(line) }, out, err };
}

async function knockAndWait(config: DeviceConfig): Promise<AuditEvent> {
  const before = events.length;
  await sendDatagram(
    config.spa.host,
    config.spa.port,
    buildKnock(config, { now: Date.now, randomBytes: random }).bytes,
  );
  return waitFor(
    () => events.slice(before).find((e) => e.type === 'packet.accepted' || e.type === 'packet.rejected'),
    'the knock to be handled',
  );
}

beforeAll(async () => {
  dataDir = await tempDir('bc7-keys-cli');
  cloud = await startLocalCloud(resolveUpConfig({ dataDir, spaPort: '0', mqttPort: '0' }), {
    onAudit: (event) => events.push(event),
  });
  const layout = cloud.layout;
  await provisionDevice({
    layout,
    deviceId: 'offline-device',
    format: 'native',
    access: [{ protocol: 'tcp', port: cloud.mqtt.port }],
    endpoints: cloud.endpoints,
    ca: await loadPem(`${layout.pkiDir}/ca.crt`, `${layout.pkiDir}/ca.key`),
    caFile: `${layout.pkiDir}/ca.crt`,
    random: systemRandom,
  });
});

afterAll(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await cloud?.close();
  await removeDir(dataDir);
});

describe('blackcloud keys rotate with blackcloud up as controller', () => {
  it('rotates the connected demo device: progress lines, confirmed by up, the next knock uses the new key', async () => {
    expect(cloud!.keyRotation).toBeDefined();
    const file = cloud!.layout.deviceFile(DEMO_DEVICE_ID);
    const old = await loadDeviceConfig(file);
    expect(await knockAndWait(old)).toMatchObject({ type: 'packet.accepted' });
    const client = await connectToBroker(old, { deadlineMs: 5000 });
    clients.push(client);
    await listenForKeys(client, old, { randomBytes: random });

    const { io, out, err } = capture();
    const [result] = await rotateKeys({ device: DEMO_DEVICE_ID, dataDir: dataDir!, wait: '20' }, io);
    expect(result).toMatchObject({ deviceId: DEMO_DEVICE_ID, status: 'confirmed' });
    const keyId = (result as { keyId: number }).keyId;
    expect(err[0]).toMatch(
      /^rotating 1 device\(s\), 8 at a time; blackcloud up \(in-process\) sends the keys$/,
    );
    expect(err).toContain(
      `[1/1] ${DEMO_DEVICE_ID}: key ${keyId} offered, awaiting ack (the old key still works)`,
    );
    expect(err).toContain(`[1/1 acks] ${DEMO_DEVICE_ID}: new key ${keyId} confirmed by the device`);
    expect(out).toEqual([`${DEMO_DEVICE_ID}: new key ${keyId} confirmed by the device`]);
    // `up`'s controller confirmed it (the CLI only offered): one confirmation, by ack. The CLI learns of it from
    // the devices file, which the controller writes before it audits: wait for the audit line, then count.
    await waitFor(
      () => events.find((e) => e.type === 'key.confirmed'),
      'up to audit the confirmation',
      10_000,
    );
    expect(events.filter((e) => e.type === 'key.confirmed')).toEqual([
      expect.objectContaining({ deviceId: DEMO_DEVICE_ID, keyId, by: 'ack' }),
    ]);

    const renewed = await loadDeviceConfig(file);
    expect(renewed.spa.native?.keyId).toBe(keyId);
    expect(await knockAndWait(renewed)).toMatchObject({ type: 'packet.accepted', deviceId: DEMO_DEVICE_ID });
    await waitFor(
      () => events.find((e) => e.type === 'key.retired'),
      'the old key to be retired at first use',
    );
    expect(await knockAndWait(old)).toMatchObject({ type: 'packet.rejected', reason: 'unknown-key' });
  });

  it('--all: the offline device keeps its old key and is reported as awaiting ack; --json lines', async () => {
    const offline = await loadDeviceConfig(cloud!.layout.deviceFile('offline-device'));
    const { io, out, err } = capture();
    const results = await rotateKeys(
      { all: true, dataDir: dataDir!, wait: '1', concurrency: '1', json: true },
      io,
    );
    expect(results.map((r) => [r.deviceId, r.status])).toEqual([
      [DEMO_DEVICE_ID, 'confirmed'],
      ['offline-device', 'offered'],
    ]);
    expect(out.map((line) => JSON.parse(line).status)).toEqual(['confirmed', 'offered']);
    expect(err.at(-1)).toBe('1 confirmed, 1 awaiting ack, 0 skipped, 0 failed');
    expect(await knockAndWait(offline)).toMatchObject({
      type: 'packet.accepted',
      deviceId: 'offline-device',
    });
  });

  it('blackcloud sub receives, stores and acknowledges a new key while connected, and never prints it', async () => {
    const file = cloud!.layout.deviceFile(DEMO_DEVICE_ID);
    const { io, out, err } = capture();
    const running = createProgram(io).parseAsync(['sub', '--device', file, '-t', 'news', '--count', '1'], {
      from: 'user',
    });
    await waitFor(() => err.find((line) => line.startsWith('subscribed to')), 'sub to be ready');
    const cli = capture();
    const [result] = await rotateKeys({ device: DEMO_DEVICE_ID, dataDir: dataDir! }, cli.io);
    expect(result?.status).toBe('confirmed');
    const keyId = (result as { keyId: number }).keyId;
    expect(err).toContain(`new SPA key ${keyId} stored in ${file}`);
    expect(err).toContain(`new SPA key ${keyId} acknowledged; the next knock uses it`);
    // End sub with one message on its topic (published by the controller's session).
    await cloud!.keyRotation!.session.publish(`blackcloud/devices/${DEMO_DEVICE_ID}/news`, 'done');
    await running;
    expect(out).toEqual([`blackcloud/devices/${DEMO_DEVICE_ID}/news done`]);
    const key = Buffer.from((await loadDeviceConfig(file)).spa.native!.key).toString('base64');
    expect([...out, ...err].join('\n')).not.toContain(key);
  });

  it.each([
    [{}, '--device / --all'],
    [{ device: 'x', all: true }, '--device / --all'],
    [{ all: true, concurrency: '0' }, '--concurrency'],
    [{ all: true, wait: 'soon' }, '--wait'],
    [{ device: 'nobody' }, '--device'],
  ])('refuses %j naming %s', async (flags, flag) => {
    const { io } = capture();
    const failure = rotateKeys({ ...flags, dataDir: dataDir! }, io);
    await expect(failure).rejects.toBeInstanceOf(UsageError);
    await expect(failure).rejects.toMatchObject({ flag });
  });

  it('with --firewall nftables, up grants its own controller session; keys rotate goes through up', async () => {
    const dir = await tempDir('bc7-nft');
    const notes: string[] = [];
    const audits: AuditEvent[] = [];
    const table = `bc7_${randomBytes(4).toString('hex')}`;
    const nft = await startLocalCloud(
      resolveUpConfig({ dataDir: dir, spaPort: '0', mqttPort: '0', firewall: 'nftables', nftTable: table }),
      { onNote: (line) => notes.push(line), onAudit: (event) => audits.push(event) },
    );
    try {
      expect(notes.filter((line) => line.startsWith('key rotation is off'))).toEqual([]);
      expect(nft.keyRotation?.session.client.connected).toBe(true);
      // keys rotate needs no broker session of its own: it records the key, up's controller sends it.
      const [result] = await rotateKeys({ device: DEMO_DEVICE_ID, dataDir: dir, wait: '0' }, capture().io);
      expect(result).toMatchObject({ status: 'offered' });
      await waitFor(
        () => audits.find((e) => e.type === 'key.resent' && e.keyId === (result as { keyId: number }).keyId),
        "up's controller to send the recorded key",
      );
      expect(JSON.parse(await readFile(controllerEndpointFile(dir), 'utf8'))).toEqual({
        url: `mqtts://127.0.0.1:${nft.broker.inProcess ? 'the nftables broker listens' : nft.broker.port}`,
      });
    } finally {
      await nft.close();
    }
    // A stopped `up` leaves no broker record behind for `keys rotate` to follow.
    await expect(readFile(controllerEndpointFile(dir), 'utf8')).rejects.toMatchObject({ code: 'ENOENT' });
    await removeDir(dir);
  });

  it('names the broker and the fix when the controller session cannot be opened', async () => {
    const port = await freePort();
    const { io } = capture();
    await expect(
      rotateKeys({ device: DEMO_DEVICE_ID, dataDir: dataDir!, broker: `mqtts://127.0.0.1:${port}` }, io),
    ).rejects.toThrow(
      new RegExp(`^cannot open the controller session to mqtts://127\\.0\\.0\\.1:${port} \\(.*\\); fix: `),
    );
  });

  it('is registered as "blackcloud keys rotate"', async () => {
    const { io, out } = capture();
    await expect(
      createProgram(io).parseAsync(['keys', 'rotate', '--help'], { from: 'user' }),
    ).rejects.toThrow();
    expect(out.join('\n')).toContain('--device <id>');
    expect(out.join('\n')).toContain('blackcloud keys rotate --all --concurrency 16 --wait 60');
  });
});

describe('up --key-rotation-hours', () => {
  it('defaults to 24 h; the flag wins over the config file', () => {
    expect(resolveUpConfig({}).keyRotationHours).toBe(24);
    expect(resolveUpConfig({}, { source: 'x.yaml', keyRotationHours: 6 }).keyRotationHours).toBe(6);
    expect(
      resolveUpConfig({ keyRotationHours: '2' }, { source: 'x.yaml', keyRotationHours: 6 }).keyRotationHours,
    ).toBe(2);
  });

  it.each(['0', '8785', '1.5', 'daily'])('refuses %j naming the flag', (hours) => {
    expect(() => resolveUpConfig({ keyRotationHours: hours })).toThrow(
      new LocalConfigError(
        '--key-rotation-hours',
        `must be an integer number of hours 1..8784; received "${hours}"`,
      ),
    );
  });

  it('sets the controller period of blackcloud up', () => {
    expect(cloud!.keyRotation?.controller.config.periodMs).toBe(24 * 3_600_000);
  });
});
