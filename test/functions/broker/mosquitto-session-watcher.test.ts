/**
 * The broker's session signal against the real Mosquitto 2.0.11 (Debian) with dynamic security, mutual TLS and
 * `use_identity_as_username`, configured by the one generator (functions/broker/mosquitto-config.ts, `log_dest
 * topic`): the admin session (dynsec-admin.ts, the controller's role) watches `$SYS/broker/log/N`
 * (mosquitto-session-watcher.ts) and sees a device's connect with its certificate name and address, its disconnect,
 * and the disconnect the plugin causes when the device is disabled; a device's SUBSCRIBE to the log is refused; on a
 * broker whose dynamic-security file predates the log ACLs the watcher adds them (`grantControllerLog`) and watches.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectDynsecAdmin, type DynsecAdmin } from '../../../functions/broker/dynsec-admin.ts';
import { disableDevice, grantControllerLog } from '../../../functions/broker/dynsec-commands.ts';
import type { SessionEvent } from '../../../functions/broker/mosquitto-session-log.ts';
import { watchMosquittoSessions } from '../../../functions/broker/mosquitto-session-watcher.ts';
import { CONTROLLER_IDENTITY } from '../../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem, type Pem } from '../../../functions/pki/local-ca.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { removeDir, tempDir, waitFor } from '../local/helpers.ts';

let dir: string | undefined;
let ca: Pem;
let mosquitto: RunningMosquitto | undefined;
let admin: DynsecAdmin | undefined;
const certs = new Map<string, Pem>();
const events: SessionEvent[] = [];
let watching = false;

beforeAll(async () => {
  dir = await tempDir('bc-session-log');
  const pkiDir = join(dir, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  ca = await loadPem(pki.caCert, pki.caKey);
  for (const name of ['dev-a', 'dev-b', CONTROLLER_IDENTITY]) {
    certs.set(name, await issueCertificate(ca, { commonName: name, kind: 'client' }));
  }
  const work = join(dir, 'broker');
  await mkdir(work);
  mosquitto = await startMosquitto(pkiDir, work, {
    logType: 'error', // only the generator's own log types: the signal must not depend on the test's extras
    dynamicSecurity: { devices: ['dev-a', 'dev-b'].map((id) => ({ id, enabled: true })) },
  });
  admin = await connectDynsecAdmin({ url: url(), ca: ca.cert, ...certs.get(CONTROLLER_IDENTITY)! });
  watching = await watchMosquittoSessions({ subscriber: admin, onEvent: (event) => events.push(event) });
}, 60_000);

afterAll(async () => {
  await admin?.close();
  await mosquitto?.stop();
  await removeDir(dir);
});

function url(): string {
  return `mqtts://127.0.0.1:${mosquitto!.port}`;
}

function connect(name: string, clientId: string): Promise<MqttClient> {
  const cert = certs.get(name)!;
  return connectAsync(
    url(),
    {
      ca: ca.cert,
      cert: cert.cert,
      key: cert.key,
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      clientId,
      protocolVersion: 4,
    },
    false,
  );
}

describe('the session signal from Mosquitto 2.0.11 log_dest topic', () => {
  it('GIVEN the controller role WHEN the watcher subscribes THEN the broker grants it', () => {
    expect(watching).toBe(true);
  });

  it('GIVEN a device WHEN it connects and disconnects THEN the watcher sees its name, address and client id', async () => {
    const device = await connect('dev-a', "cid a (p2, c1, k60, u'dev-b').");
    await waitFor(
      () => events.find((event) => event.kind === 'connected' && event.username === 'dev-a'),
      'the connect',
      5_000,
    );
    expect(
      events.filter((event) => event.kind === 'connected' && event.username !== CONTROLLER_IDENTITY),
    ).toEqual([
      {
        kind: 'connected',
        clientId: "cid a (p2, c1, k60, u'dev-b').",
        username: 'dev-a',
        address: '127.0.0.1',
        port: expect.any(Number),
      },
    ]);
    await device.endAsync();
    await waitFor(() => events.find((event) => event.kind === 'disconnected'), 'the disconnect', 5_000);
    expect(events.filter((event) => event.kind === 'disconnected')).toEqual([
      {
        kind: 'disconnected',
        clientId: "cid a (p2, c1, k60, u'dev-b').",
        username: 'dev-a',
        address: '127.0.0.1',
        port: expect.any(Number),
      },
    ]);
  }, 20_000);

  it('GIVEN a device WHEN it subscribes to the broker log THEN the SUBACK refuses it and nothing is delivered', async () => {
    const device = await connect('dev-b', 'cid-b-sub');
    const received: string[] = [];
    device.on('message', (topic) => received.push(topic));
    for (const filter of ['$SYS/broker/log/#', '$SYS/broker/log/N', '$SYS/#', '#']) {
      const codes = await device.subscribeAsync(filter, { qos: 0 }).then(
        (granted) => granted.map((grant) => grant.qos),
        (error: { packet?: { granted?: number[] } }) => error.packet?.granted,
      );
      expect(codes, filter).toEqual([0x80]);
    }
    const other = await connect('dev-a', 'cid-a-2');
    await other.endAsync();
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(received).toEqual([]);
    await device.endAsync(true);
  }, 20_000);

  it('GIVEN a connected device WHEN the plugin disables it THEN the watcher sees the session end', async () => {
    const device = await connect('dev-b', 'cid-b-kick');
    await waitFor(
      () => events.find((event) => event.kind === 'connected' && event.clientId === 'cid-b-kick'),
      'the connect',
      5_000,
    );
    await admin!.send(disableDevice('dev-b'));
    await waitFor(
      () => events.find((event) => event.kind === 'disconnected' && event.clientId === 'cid-b-kick'),
      'the disconnect',
      5_000,
    );
    expect(
      events.find((event) => event.kind === 'disconnected' && event.clientId === 'cid-b-kick'),
    ).toMatchObject({
      username: 'dev-b',
    });
    device.end(true);
  }, 20_000);

  it('GIVEN a broker whose controller role predates the log ACLs WHEN watched with ensureAccess THEN the ACLs are added and the signal flows', async () => {
    const work = join(dir!, 'old-broker');
    await mkdir(work);
    const old = await startMosquitto(join(dir!, 'pki'), work, { logType: 'error', dynamicSecurity: {} });
    let oldAdmin: DynsecAdmin | undefined;
    try {
      // The file as written before: the controller's role without $SYS/broker/log/#.
      await old.kill();
      const file = join(work, 'dynamic-security.json');
      const json = JSON.parse(await readFile(file, 'utf8')) as {
        roles: { acls: { topic: string }[] }[];
      };
      for (const role of json.roles) role.acls = role.acls.filter((acl) => !acl.topic.startsWith('$SYS'));
      await writeFile(file, JSON.stringify(json));
      await old.restart();
      oldAdmin = await connectDynsecAdmin({
        url: `mqtts://127.0.0.1:${old.port}`,
        ca: ca.cert,
        ...certs.get(CONTROLLER_IDENTITY)!,
        clientId: 'old-admin',
      });
      const seen: SessionEvent[] = [];
      const errors: string[] = [];
      const admin = oldAdmin;
      expect(await watchMosquittoSessions({ subscriber: admin, onEvent: (event) => seen.push(event) })).toBe(
        false,
      );
      const ensured = await watchMosquittoSessions({
        subscriber: admin,
        onEvent: (event) => seen.push(event),
        ensureAccess: () => admin.send(grantControllerLog()),
        onError: (error) => errors.push(error.message),
      });
      expect(ensured).toBe(true);
      // 2.0.11 kicked this session when the role changed: the answer was lost, the change made.
      expect(errors).toEqual([expect.stringMatching(/no answer from the dynamic-security plugin/)]);
      expect(old.log()).toContain('Client old-admin been disconnected by administrative action.');
      const probe = await connectAsync(
        `mqtts://127.0.0.1:${old.port}`,
        {
          ca: ca.cert,
          ...certs.get(CONTROLLER_IDENTITY)!,
          rejectUnauthorized: true,
          reconnectPeriod: 0,
          clientId: 'probe',
        },
        false,
      );
      await waitFor(() => seen.find((event) => event.clientId === 'probe'), 'the probe connect', 5_000);
      await probe.endAsync(true);
    } finally {
      await oldAdmin?.close();
      await old.stop();
    }
  }, 30_000);
});
