/**
 * The real Mosquitto 2.0.11 (Debian) with the dynamic-security plugin, mutual TLS and `use_identity_as_username`,
 * driven by the admin session (functions/broker/dynsec-admin.ts) with the commands of dynsec-commands.ts:
 * enrolment at run time, disable and remove closing an open session within 5 s with no broker restart, a foreign
 * SUBSCRIBE refused in the SUBACK (MQTT 3.1.1 0x80, MQTT 5 0x87), a device name on a plain listener refused with
 * any password or none, and what 2.0.11 does to a returning disabled or removed device (docs/fleet.md).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectDynsecAdmin, type DynsecAdmin } from '../../../functions/broker/dynsec-admin.ts';
import {
  disableDevice,
  enableDevice,
  enrolDevice,
  removeDevice,
} from '../../../functions/broker/dynsec-commands.ts';
import { CONTROLLER_IDENTITY, deviceTopic, keyTopic } from '../../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem, type Pem } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { freePort, removeDir, tempDir, waitFor } from '../local/helpers.ts';

let dir: string | undefined;
let ca: Pem;
let mosquitto: RunningMosquitto | undefined;
let plainPort: number;
let admin: DynsecAdmin | undefined;
const certs = new Map<string, Pem>();
const open = new Set<MqttClient>();

beforeAll(async () => {
  dir = await tempDir('bc-dynsec');
  const pkiDir = join(dir, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  ca = await loadPem(pki.caCert, pki.caKey);
  for (const name of ['dev-a', 'dev-b', 'dev-c', 'dev-d', 'dev-e', 'ghost', CONTROLLER_IDENTITY]) {
    certs.set(name, await issueCertificate(ca, { commonName: name, kind: 'client' }));
  }
  const work = join(dir, 'broker');
  await mkdir(work);
  plainPort = await freePort();
  mosquitto = await startMosquitto(pkiDir, work, {
    dynamicSecurity: { devices: ['dev-a', 'dev-b', 'dev-c'].map((id) => ({ id, enabled: true })) },
    // A second, plain listener (no TLS): a device's name presented there must get nowhere.
    extraConf: [`listener ${plainPort} 127.0.0.1`],
  });
  admin = await connectDynsecAdmin({ url: url(), ca: ca.cert, ...certs.get(CONTROLLER_IDENTITY)! });
}, 60_000);

afterEach(async () => {
  await Promise.all([...open].map((client) => client.endAsync(true)));
  open.clear();
});

afterAll(async () => {
  await admin?.close();
  await mosquitto?.stop();
  await removeDir(dir);
});

function url(): string {
  return `mqtts://127.0.0.1:${mosquitto!.port}`;
}

async function connect(name: string, extra: Partial<IClientOptions> = {}): Promise<MqttClient> {
  const cert = certs.get(name)!;
  const client = await connectAsync(
    url(),
    {
      ca: ca.cert,
      cert: cert.cert,
      key: cert.key,
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      clientId: `${name}-${Math.random().toString(16).slice(2, 8)}`,
      ...extra,
    },
    false,
  );
  open.add(client);
  return client;
}

/** The SUBACK codes for one filter (mqtt.js rejects on a failure code; the packet is on the error). */
async function subackCodes(client: MqttClient, filter: string): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filter, { qos: 1 })).map((grant) => grant.qos);
  } catch (error) {
    const granted = (error as { packet?: { granted?: number[]; reasonCode?: number } }).packet?.granted;
    if (granted === undefined) throw error;
    return granted;
  }
}

function closed(client: MqttClient): Promise<number> {
  const start = performance.now();
  return new Promise((resolve) => client.once('close', () => resolve(performance.now() - start)));
}

/** Whether `publisher`'s message on `topic` reaches a controller subscriber within `ms`. */
async function delivered(publisher: MqttClient, topic: string, ms = 1_000): Promise<boolean> {
  const watcher = await connect(CONTROLLER_IDENTITY);
  await watcher.subscribeAsync(topic, { qos: 1 });
  const arrived = new Promise<boolean>((resolve) => {
    watcher.once('message', () => resolve(true));
    setTimeout(() => resolve(false), ms);
  });
  await publisher.publishAsync(topic, 'probe', { qos: 1 });
  return arrived;
}

describe('Mosquitto 2.0.11 with dynamic security, mutual TLS, use_identity_as_username', () => {
  it('serves an enrolled device its own topics only, and a device enrolled at run time at once', async () => {
    const a = await connect('dev-a');
    expect(await subackCodes(a, deviceTopic('dev-a', '#'))).toEqual([1]);
    expect(await subackCodes(a, keyTopic('dev-a'))).toEqual([1]);
    expect(await delivered(a, deviceTopic('dev-a', 'telemetry'))).toBe(true);
    expect(await delivered(a, deviceTopic('dev-b', 'telemetry'))).toBe(false);

    await admin!.send(enrolDevice('dev-d'));
    const d = await connect('dev-d');
    expect(await subackCodes(d, deviceTopic('dev-d', 'x'))).toEqual([1]);
    expect(await delivered(d, deviceTopic('dev-d', 'x'))).toBe(true);
  });

  it.each([
    ['MQTT 3.1.1', 4, 0x80],
    ['MQTT 5', 5, 0x87],
  ] as const)(
    'refuses a SUBSCRIBE to another device topic in the SUBACK (%s: %i)',
    async (_label, version, code) => {
      const a = await connect('dev-a', { protocolVersion: version });
      for (const filter of [deviceTopic('dev-b', '#'), keyTopic('dev-b'), 'blackcloud/keys/#', '#']) {
        expect(await subackCodes(a, filter)).toEqual([code]);
      }
    },
  );

  it('disable closes the open session within 5 s; the device cannot come back until enabled', async () => {
    const b = await connect('dev-b');
    await b.subscribeAsync(deviceTopic('dev-b', '#'), { qos: 1 });
    const gone = closed(b);
    await admin!.send(disableDevice('dev-b'));
    expect(await gone).toBeLessThan(5_000);

    // 2.0.11 accepts the CONNECT of a certificate identity whatever its dynsec state; without its role it can
    // do nothing: every SUBSCRIBE refused, nothing it publishes delivered, nothing delivered to it.
    const back = await connect('dev-b');
    expect(await subackCodes(back, deviceTopic('dev-b', '#'))).toEqual([0x80]);
    expect(await subackCodes(back, keyTopic('dev-b'))).toEqual([0x80]);
    expect(await delivered(back, deviceTopic('dev-b', 'telemetry'))).toBe(false);

    await admin!.send(enableDevice('dev-b'));
    await waitFor(
      async () => (back.connected ? undefined : true),
      'the role change to close the old session',
    );
    const again = await connect('dev-b');
    expect(await subackCodes(again, deviceTopic('dev-b', '#'))).toEqual([1]);
    expect(await delivered(again, deviceTopic('dev-b', 'telemetry'))).toBe(true);
  });

  it('remove closes the open session within 5 s and refuses the device afterwards, with no broker restart', async () => {
    const starts = mosquitto!.log().split('mosquitto version 2.0.11 running').length;
    const c = await connect('dev-c');
    await c.subscribeAsync(deviceTopic('dev-c', '#'), { qos: 1 });
    const gone = closed(c);
    await admin!.send(removeDevice('dev-c'));
    expect(await gone).toBeLessThan(5_000);
    const back = await connect('dev-c');
    expect(await subackCodes(back, deviceTopic('dev-c', '#'))).toEqual([0x80]);
    expect(await delivered(back, deviceTopic('dev-c', 'telemetry'))).toBe(false);
    expect(mosquitto!.log().split('mosquitto version 2.0.11 running').length).toBe(starts);
    expect(starts).toBe(2);
  });

  it('gives a certificate of the CA that names no dynsec client nothing (2.0.11 still accepts its CONNECT)', async () => {
    const ghost = await connect('ghost');
    expect(await subackCodes(ghost, deviceTopic('ghost', '#'))).toEqual([0x80]);
    expect(await delivered(ghost, deviceTopic('ghost', 'x'))).toBe(false);
  });

  it.each([
    ['no password', undefined],
    ['a password', 'guess'],
    ['an empty password', ''],
  ])('refuses a device name on the plain listener with %s', async (_label, password) => {
    for (const username of ['dev-a', CONTROLLER_IDENTITY]) {
      const attempt = connectAsync(
        `mqtt://127.0.0.1:${plainPort}`,
        {
          username,
          ...(password === undefined ? {} : { password }),
          reconnectPeriod: 0,
          connectTimeout: 5_000,
        },
        false,
      );
      await expect(attempt).rejects.toThrow(/Not authorized|Bad username or password/i);
    }
  });

  it('reconcile brings the broker to exactly the devices given, then has nothing left to do', async () => {
    const e = await connect('dev-e');
    expect(await subackCodes(e, deviceTopic('dev-e', '#'))).toEqual([0x80]);
    const a = await connect('dev-a');
    const aGone = closed(a);
    const sent = await admin!.reconcile([
      { id: 'dev-a', enabled: false },
      { id: 'dev-b', enabled: true },
      { id: 'dev-e', enabled: true },
    ]);
    expect(sent.map((command) => command.command)).toContain('createClient');
    expect(await aGone).toBeLessThan(5_000);
    const e2 = await connect('dev-e');
    expect(await subackCodes(e2, deviceTopic('dev-e', '#'))).toEqual([1]);
    const d = await connect('dev-d'); // enrolled earlier, not in the list: removed
    expect(await subackCodes(d, deviceTopic('dev-d', '#'))).toEqual([0x80]);
    expect(
      await admin!.reconcile([
        { id: 'dev-a', enabled: false },
        { id: 'dev-b', enabled: true },
        { id: 'dev-e', enabled: true },
      ]),
    ).toEqual([]);
  });
});
