/**
 * The plain profile end to end with `blackcloud up` (gate, embedded broker): real UDP knocks, real MQTT over plain
 * TCP, real sockets bound to 127.0.0.1 (the knocking address) and 127.0.0.2 (an address that knocks only as another
 * device, so the gate lets it reach the plain port and the broker itself must refuse). A plain device is enrolled
 * with `devices add --transport plain` (LocalFleet); its one-time credential (connect-credential.ts) logs it in once,
 * from its address, within its grant; the same CONNECT bytes are refused from elsewhere, a second time, and after
 * the grant closed; a TLS device's name is refused on the plain listener; the credential is never in the audit.
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rotateKeys } from '../../../cli/commands/keys.ts';
import { LocalFleet } from '../../../cli/fleet/local-fleet.ts';
import { createProgram } from '../../../cli/program.ts';
import { connectDevice, type DeviceClient } from '../../../device-client/connect-device.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import { systemClock, systemRandom } from '../../../functions/core/system.ts';
import { deviceTopic, keyTopic } from '../../../functions/core/topics.ts';
import { DEMO_DEVICE_ID } from '../../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { connectBytes, knockFrom, sendConnect } from '../../support/plain-mqtt.ts';
import { removeDir, tempDir, waitFor } from './helpers.ts';

const PLAIN_ID = 'tiny-1';

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (line: string) => out.push(line), err: (line: string) => err.push(line) }, out, err };
}
const OTHER_ADDRESS = '127.0.0.2';

let dataDir: string | undefined;
let cloud: LocalCloud | undefined;
const clients: DeviceClient[] = [];
const credentials: string[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-plain');
  credentials.length = 0;
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.end(true);
  // Whatever a test did, the one-time credentials never reached the audit file.
  if (cloud !== undefined && credentials.length > 0) {
    const audit = await readFile(cloud.layout.auditFile, 'utf8');
    expect(audit.length).toBeGreaterThan(0);
    for (const credential of credentials) expect(audit).not.toContain(credential);
  }
  await cloud?.close();
  cloud = undefined;
  await removeDir(dataDir);
});

/** Enrols the plain device with the local fleet (as `devices add --transport plain`) and waits until up loads it. */
async function enrolPlain(running: LocalCloud): Promise<DeviceConfig> {
  const fleet = await LocalFleet.open({
    dataDir: dataDir!,
    random: systemRandom,
    clock: systemClock,
    operator: 'test',
  });
  const enrolled = await fleet.enrol({ deviceId: PLAIN_ID, format: 'native', transport: 'plain' });
  await waitFor(() => running.directory.byId(PLAIN_ID), 'the plain device to be loaded', 5000);
  return loadDeviceConfig(enrolled.deviceFile);
}

async function up(
  keyRotation = false,
  readers?: string,
): Promise<{ running: LocalCloud; plain: DeviceConfig; tls: DeviceConfig }> {
  const config = resolveUpConfig({
    dataDir: dataDir!,
    spaPort: '0',
    mqttPort: '0',
    plainPort: '0',
    grantSeconds: '60',
    ...(readers === undefined ? {} : { readers }),
  });
  const running = await startLocalCloud(config, keyRotation ? {} : { keyRotation: false });
  cloud = running;
  const plain = await enrolPlain(running);
  const tls = await loadDeviceConfig(running.layout.deviceFile(DEMO_DEVICE_ID));
  return { running, plain, tls };
}

async function knock(device: DeviceConfig, address = '127.0.0.1'): Promise<string> {
  const credential = await knockFrom(device, cloud!.spa.port, address);
  credentials.push(credential);
  return credential;
}

const connect = (bytes: Buffer, localAddress: string) => sendConnect(bytes, cloud!.plain!.port, localAddress);

describe('the plain profile with up (gate, embedded broker)', () => {
  it('enrols without a certificate: transport plain in devices.yaml and device.json, access = the plain port', async () => {
    const { running, plain } = await up();
    expect(plain.mqtt).toEqual({ transport: 'plain', url: `mqtt://127.0.0.1:${running.plain!.port}` });
    expect(plain.access).toEqual([{ protocol: 'tcp', port: running.plain!.port }]);
    expect(running.directory.byId(PLAIN_ID)?.transport).toBe('plain');
    expect(running.directory.byId(PLAIN_ID)?.certificateSerial).toBeUndefined();
    await expect(readFile(`${running.layout.deviceDir(PLAIN_ID)}/client.crt`)).rejects.toThrow(/ENOENT/);
    expect(await readFile(running.layout.devicesFile, 'utf8')).toMatch(/transport: plain/);
  });

  it('with reader threads (up --readers 2) the credential is derived in the thread and the device logs in', async () => {
    const { running } = await up(false, '2');
    const client = await connectDevice(running.layout.deviceFile(PLAIN_ID), {
      firstConnectDeadlineMs: 8000,
      keyRotation: false,
    });
    clients.push(client);
    await client.publishAsync(deviceTopic(PLAIN_ID, 'telemetry'), 'through a reader thread', { qos: 1 });
    expect(client.device.stats().connections).toBe(1);
  });

  it('the device library knocks, logs in with the credential, publishes; a second session receives it; reconnects work', async () => {
    const { running } = await up();
    const file = running.layout.deviceFile(PLAIN_ID);
    const subscriber = await connectDevice(file, { firstConnectDeadlineMs: 8000, keyRotation: false });
    clients.push(subscriber);
    const topic = deviceTopic(PLAIN_ID, 'telemetry');
    await subscriber.subscribeAsync(topic, { qos: 1 });
    const received = new Promise<string>((resolve) =>
      subscriber.on('message', (_topic, payload) => resolve(payload.toString())),
    );
    const publisher = await connectDevice(file, { firstConnectDeadlineMs: 8000, keyRotation: false });
    clients.push(publisher);
    await publisher.publishAsync(topic, 'over plain MQTT', { qos: 1 });
    expect(await received).toBe('over plain MQTT');
    // Reconnect: the broker drops the publisher's socket; the library knocks again with a fresh credential.
    const reconnected = new Promise<void>((resolve) => publisher.once('connect', () => resolve()));
    (publisher.stream as { destroy(): void }).destroy();
    await reconnected;
    expect(publisher.device.stats().connections).toBe(2);
    // Closed on connect works for plain sessions: the grant of 127.0.0.1 closed once the sessions were up.
    await waitFor(
      () => (running.deps.grants.active().length === 0 ? true : undefined),
      'the grant to close on connect',
      5000,
    );
  });

  it('refuses the same CONNECT bytes from another address, a second time, and after the grant closed', async () => {
    const { running, plain, tls } = await up();
    const credential = await knock(plain);
    const bytes = connectBytes(PLAIN_ID, credential, `${PLAIN_ID}/raw`);
    // 127.0.0.2 never knocked: the gate resets it before the broker sees a byte.
    expect(await connect(bytes, OTHER_ADDRESS)).toBe('reset');
    // A grant for the TLS port does not open the plain port: 127.0.0.2 knocks as the TLS device, still reset.
    await knock(tls, OTHER_ADDRESS);
    expect(await connect(bytes, OTHER_ADDRESS)).toBe('reset');
    // From the knocking address: accepted once (CONNACK 0) ...
    expect(await connect(bytes, '127.0.0.1')).toBe(0);
    // ... and the grant closed on connect: the same bytes are reset by the gate now.
    await waitFor(
      () => (running.deps.grants.active().some((g) => g.address === '127.0.0.1') ? undefined : true),
      'the grant to close on connect',
      5000,
    );
    expect(await connect(bytes, '127.0.0.1')).toBe('reset');
  });

  it('the broker itself refuses a consumed credential, one from another address, and one whose grant closed', async () => {
    const { running, plain } = await up();
    // Two plain knocks from two addresses: the second replaces the first credential (only the last one lives).
    const first = await knock(plain, '127.0.0.1');
    const second = await knock(plain, OTHER_ADDRESS);
    // Both addresses hold a plain-port grant now, so these reach the broker, which must refuse:
    expect(await connect(connectBytes(PLAIN_ID, first, 'a'), '127.0.0.1')).toBe(5); // replaced
    expect(await connect(connectBytes(PLAIN_ID, second, 'b'), '127.0.0.1')).toBe(5); // wrong address
    expect(await connect(connectBytes(PLAIN_ID, second, 'c'), OTHER_ADDRESS)).toBe(0); // its own address
    expect(await connect(connectBytes(PLAIN_ID, second, 'd'), OTHER_ADDRESS)).not.toBe(0); // consumed
    // A knock whose grant is closed by the operator: its credential dies with the grant.
    const third = await knock(plain, '127.0.0.1');
    await running.deps.grants.revokeWhere((grant) => grant.address === '127.0.0.1');
    expect(running.credentials?.has(PLAIN_ID)).toBe(false);
    // 127.0.0.2 may reach the plain port again (a fresh knock, whose own credential replaces nothing alive): the
    // broker refuses `third` there, dead with its grant.
    await knock(plain, OTHER_ADDRESS);
    expect(await connect(connectBytes(PLAIN_ID, third, 'e'), OTHER_ADDRESS)).toBe(5);
  });

  it("refuses a TLS device's name, no password, no username, and the controller's name on the plain listener", async () => {
    const { plain, tls } = await up();
    const credential = await knock(plain); // 127.0.0.1 may reach the plain port now
    for (const password of [credential, 'guess', '']) {
      expect(await connect(connectBytes(tls.deviceId, password, 'x'), '127.0.0.1')).toBe(5);
    }
    expect(await connect(connectBytes(tls.deviceId, undefined, 'x'), '127.0.0.1')).toBe(5);
    expect(await connect(connectBytes(PLAIN_ID, undefined, 'x'), '127.0.0.1')).toBe(5);
    expect(await connect(connectBytes(undefined, undefined, 'x'), '127.0.0.1')).toBe(5);
    expect(await connect(connectBytes('blackcloud-controller', credential, 'x'), '127.0.0.1')).toBe(5);
    // None of those consumed the plain device's credential.
    expect(await connect(connectBytes(PLAIN_ID, credential, 'y'), '127.0.0.1')).toBe(0);
  });

  it("rotates a plain device's key with a sealed offer (BKO1) over its plain session; the next session uses the new key", async () => {
    const { running, plain } = await up(true);
    expect(running.keyRotation).toBeDefined();
    const file = running.layout.deviceFile(PLAIN_ID);
    const keys: number[] = [];
    const device = await connectDevice(file, {
      firstConnectDeadlineMs: 8000,
      onEvent: (event) => {
        if (event.type === 'key-rotated') keys.push(event.keyId);
      },
    });
    clients.push(device);
    // What crossed the unencrypted session on the key topic: the sealed 80-byte offer, never the key in the clear.
    const offers: Buffer[] = [];
    device.on('message', (topic, payload) => {
      if (topic === keyTopic(PLAIN_ID)) offers.push(Buffer.from(payload));
    });
    const out: string[] = [];
    const [result] = await rotateKeys(
      { device: PLAIN_ID, dataDir: dataDir!, wait: '20' },
      { out: (line) => out.push(line), err: () => undefined },
    );
    expect(result).toMatchObject({ deviceId: PLAIN_ID, status: 'confirmed' });
    const keyId = (result as { keyId: number }).keyId;
    expect(keyId).not.toBe(plain.spa.native!.keyId);
    expect(keys).toEqual([keyId]);
    const stored = await loadDeviceConfig(file);
    expect(stored.spa.native?.keyId).toBe(keyId);
    expect(offers.length).toBeGreaterThan(0);
    for (const offer of offers) {
      expect(offer.subarray(0, 3).toString('latin1')).toBe('BKO');
      expect(offer).toHaveLength(80);
      expect(offer.includes(Buffer.from(stored.spa.native!.key))).toBe(false);
    }
    // A new session knocks with the new key and logs in with the credential derived from it.
    const again = await connectDevice(file, { firstConnectDeadlineMs: 8000, keyRotation: false });
    clients.push(again);
    expect(again.device.config().spa.native?.keyId).toBe(keyId);
  });

  it('blackcloud pub and sub work for a plain device; pub --no-knock is refused with the reason', async () => {
    const { running } = await up();
    const file = running.layout.deviceFile(PLAIN_ID);
    const sub = capture();
    const subscribing = createProgram(sub.io).parseAsync(
      ['sub', '--device', file, '-t', 'news', '--count', '1', '--timeout', '10'],
      { from: 'user' },
    );
    await waitFor(() => sub.err.find((line) => line.startsWith('subscribed to')), 'sub to be ready', 10_000);
    const pub = capture();
    await createProgram(pub.io).parseAsync(['pub', '--device', file, '-t', 'news', '-m', 'plain hello'], {
      from: 'user',
    });
    await subscribing;
    expect(sub.out.join('\n')).toContain('plain hello');
    const refused = capture();
    await expect(
      createProgram(refused.io).parseAsync(['pub', '--device', file, '--no-knock', '-t', 'news', '-m', 'x'], {
        from: 'user',
      }),
    ).rejects.toThrow(/mqtt\.transport.*plain.*one-time credential/);
  });
});

describe('devices add --transport', () => {
  const add = async (...args: string[]) => {
    const io = capture();
    await createProgram(io.io).parseAsync(['devices', 'add', ...args, '--data-dir', dataDir!], {
      from: 'user',
    });
    return io;
  };

  it('refuses plain with fwknop knocks and an unknown transport, naming --transport and the fix', async () => {
    await expect(add('f-1', '--transport', 'plain', '--format', 'fwknop')).rejects.toThrow(
      /--transport.*BC1 only.*fix: drop --format fwknop/,
    );
    // The fleet itself refuses it too (one rule for every fleet, cli/fleet/fleet.ts), before creating anything.
    await up();
    const fleet = await LocalFleet.open({
      dataDir: dataDir!,
      random: systemRandom,
      clock: systemClock,
      operator: 'tester@test',
    });
    await expect(fleet.enrol({ deviceId: 'f-2', format: 'fwknop', transport: 'plain' })).rejects.toThrow(
      /plain device knocks with BC1 only.*fix: drop --format fwknop for f-2/,
    );
    expect(await fleet.state('f-2')).toBe('absent');
    await expect(add('u-1', '--transport', 'udp')).rejects.toThrow(/--transport.*"tls".*"plain"/);
  });

  it('enrols in bulk with --count, each without a certificate; --help explains the option and its cost', async () => {
    await up();
    const { err } = await add('--count', '3', '--prefix', 'small-', '--transport', 'plain');
    expect(err.join('\n')).toMatch(/3\/3 \(created 3/);
    for (const id of ['small-1', 'small-2', 'small-3']) {
      const config = await loadDeviceConfig(`${dataDir}/devices/${id}/device.json`);
      expect(config.mqtt.transport).toBe('plain');
      await expect(readFile(`${dataDir}/devices/${id}/client.crt`)).rejects.toThrow(/ENOENT/);
    }
    const help = capture();
    await expect(
      createProgram(help.io).parseAsync(['devices', 'add', '--help'], { from: 'user' }),
    ).rejects.toThrow();
    expect(help.out.join('\n')).toMatch(/--transport <transport>[\s\S]*NOT encrypted/);
  });
});

describe('the plain profile with up --firewall nftables (root, loopback is filtered too)', () => {
  it('the plain port is dark until the plain device knocks, and stays dark for an address that did not', async () => {
    const table = `bcplain_${randomBytes(4).toString('hex')}`;
    const running = await startLocalCloud(
      resolveUpConfig({
        dataDir: dataDir!,
        spaPort: '0',
        mqttPort: '0',
        plainPort: '0',
        firewall: 'nftables',
        nftTable: table,
        grantSeconds: '60',
      }),
      { keyRotation: false },
    );
    cloud = running;
    const plain = await enrolPlain(running);
    const port = running.plain!.port;
    const probe = (bytes: Buffer, from: string) => sendConnect(bytes, port, from, 1500);
    const early = connectBytes(PLAIN_ID, 'f'.repeat(64), 'early');
    expect(await probe(early, '127.0.0.1')).toBe('closed'); // the SYN is dropped: no answer at all
    const credential = await knockFrom(plain, running.spa.port, '127.0.0.1');
    credentials.push(credential);
    const bytes = connectBytes(PLAIN_ID, credential, `${PLAIN_ID}/nft`);
    expect(await probe(bytes, OTHER_ADDRESS)).toBe('closed'); // never knocked: still dark
    expect(await probe(bytes, '127.0.0.1')).toBe(0);
    expect(await probe(bytes, '127.0.0.1')).not.toBe(0); // consumed (and the rule closed on connect)
  });
});
