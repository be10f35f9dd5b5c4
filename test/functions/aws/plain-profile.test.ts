/**
 * The plain profile on AWS (docs/fleet.md, "Plain devices on AWS"): the receiver, started as on the receiver
 * instance (the controller's certificate, the broker's plain port), against moto server with IAM enforced (the
 * receiver signs as a moto IAM user whose only policy is what the synthesized stack grants the receiver role) and a
 * real Mosquitto 2.0.11 with the dynamic-security plugin, its TLS listener and its plain listener from the one
 * generator. A plain device knocks over UDP: the rule opened is the plain port; it connects without TLS with its
 * knock's one-time credential and publishes. The receivers watch the broker's connection log ($SYS/broker/log/N):
 * the rule is revoked within a few seconds of CONNACK (closed on connect, for a plain and a TLS device), and a plain
 * session outlives its grant window (Mosquitto 2.0.11 would end it on a password change, so the credential is held
 * while that session lives) and the credential is refused once the session ended, once its grant closed with no
 * session, and once a later knock replaced it (through the same receiver or another one); a TLS device's name is
 * refused on the plain listener; the credential is in no log line.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import { AddThingToThingGroupCommand, CreateThingCommand, UpdateThingCommand } from '@aws-sdk/client-iot';
import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAwsControllerConfig } from '../../../functions/aws/aws-controller.ts';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import { connectCredential } from '../../../functions/core/connect-credential.ts';
import { ENV, OPTIONAL_ENV } from '../../../functions/core/environment.ts';
import { CONTROLLER_IDENTITY, deviceTopic } from '../../../functions/core/topics.ts';
import { ensureLocalPki, issueCertificate, loadPem, writePemFiles } from '../../../functions/pki/local-ca.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import {
  ADMIN_POLICY,
  createIamUser,
  enforceIam,
  iamClients,
  type MotoStackNames,
  relaxIam,
  resolvePolicy,
  synthesizePolicies,
} from '../../support/iam.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { createStackResources, type MotoServer, stackReceiverEnv, startMoto } from '../../support/moto.ts';
import { freePort } from '../local/helpers.ts';

const PLAIN_KEY = new Uint8Array(32).fill(0x51);
const PLAIN_KEY_ID = 21;
const TLS_KEY = new Uint8Array(32).fill(0x52);
/** The plain device's window: short, so its end can be waited for. */
const WINDOW_SECONDS = 4;

let moto: MotoServer;
let admin: AwsClients;
let groupId: string;
let mosquitto: RunningMosquitto | undefined;
let plainPort: number;
let receiver: AwsReceiver | undefined;
/** What a second receiver of the same stack is started with. */
let receiverEnv: Record<string, string>;
let receiverKey: Awaited<ReturnType<typeof createIamUser>>;
let dir: string;
let pkiDir: string;
const lines: string[] = [];
const outcomes: Outcome[] = [];
const denied: string[] = [];
const clients: MqttClient[] = [];
/** Every credential a test derived: none may appear in any log line. */
const credentials: string[] = [];

async function thing(name: string, attributes: Record<string, string>, keyId: number, key: Uint8Array) {
  const setup = moto.clients();
  await setup.iot.send(
    new CreateThingCommand({
      thingName: name,
      attributePayload: { attributes: { enabled: 'true', ...attributes } },
    }),
  );
  await setup.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: name }));
  await setup.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem(name, [keyId]) }));
  await setup.dynamodb.send(
    new PutItemCommand({ TableName: 'devices', Item: keyItem(name, { keyId, key }) }),
  );
}

/** Sends one BC1 knock of the plain device for the plain port; resolves with its credential once accepted. */
async function knockPlain(through: AwsReceiver = receiver!): Promise<string> {
  const nonce = randomBytes(12);
  const packet = encodeBc1(
    { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: plainPort }] },
    { keyId: PLAIN_KEY_ID, key: PLAIN_KEY, nonce },
  );
  const before = outcomes.length;
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) =>
    socket.send(packet, through.receiver.address.port, '127.0.0.1', (error) =>
      error ? reject(error) : resolve(),
    ),
  );
  socket.close();
  while (outcomes.length === before) await new Promise((resolve) => setTimeout(resolve, 20));
  expect(outcomes.at(-1)?.ok).toBe(true);
  const credential = connectCredential(PLAIN_KEY, { deviceId: 'plain-1', keyId: PLAIN_KEY_ID, nonce });
  credentials.push(credential);
  return credential;
}

function connectPlain(username: string, password: string | undefined): Promise<MqttClient> {
  return mqtt
    .connectAsync(
      `mqtt://127.0.0.1:${plainPort}`,
      {
        username,
        ...(password === undefined ? {} : { password }),
        clientId: `${username}-${randomBytes(4).toString('hex')}`,
        reconnectPeriod: 0,
        connectTimeout: 5_000,
        protocolVersion: 4,
        clean: true,
      },
      false,
    )
    .then((client) => {
      clients.push(client);
      return client;
    });
}

const REFUSED = /Not authorized|Bad username or password/i;

async function ruleRanges(): Promise<string[]> {
  const result = await admin.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] }));
  return (result.SecurityGroups?.[0]?.IpPermissions ?? []).flatMap((permission) =>
    (permission.IpRanges ?? []).map(
      (range) => `${permission.IpProtocol}/${permission.FromPort}-${permission.ToPort} ${range.CidrIp}`,
    ),
  );
}

async function until(what: string, check: () => Promise<boolean>, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`${what} not within ${ms} ms; receiver log:\n${lines.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** True when the credential currently logs the plain device in (the session is ended again at once). */
async function admits(credential: string): Promise<boolean> {
  const client = await connectPlain('plain-1', credential).catch(() => undefined);
  if (client === undefined) return false;
  await client.endAsync(true);
  return true;
}

/** A TLS session of the controller that sees what devices publish in their trees. */
async function observer(): Promise<{ client: MqttClient; messages: string[] }> {
  const read = (file: string) => readFile(join(pkiDir, file));
  const client = await mqtt.connectAsync(
    `mqtts://127.0.0.1:${mosquitto!.port}`,
    {
      ca: await read('ca.crt'),
      cert: await read(`${CONTROLLER_IDENTITY}.crt`),
      key: await read(`${CONTROLLER_IDENTITY}.key`),
      servername: 'localhost',
      rejectUnauthorized: true,
      reconnectPeriod: 0,
      clientId: `observer-${randomBytes(4).toString('hex')}`,
      protocolVersion: 4,
    },
    false,
  );
  clients.push(client);
  const messages: string[] = [];
  client.on('message', (topic, payload) => messages.push(`${topic} ${payload.toString()}`));
  await client.subscribeAsync(deviceTopic('plain-1', '#'), { qos: 1 });
  return { client, messages };
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bc-aws-plain-'));
  pkiDir = join(dir, 'pki');
  const pki = await ensureLocalPki(pkiDir);
  const ca = await loadPem(pki.caCert, pki.caKey);
  for (const name of [CONTROLLER_IDENTITY, 'tls-1']) {
    const issued = await issueCertificate(ca, { commonName: name, kind: 'client' });
    await writePemFiles(join(pkiDir, `${name}.crt`), join(pkiDir, `${name}.key`), issued);
  }
  const work = join(dir, 'broker');
  await mkdir(work);
  plainPort = await freePort();
  mosquitto = await startMosquitto(pkiDir, work, { dynamicSecurity: {}, plainPort });

  moto = await startMoto();
  await relaxIam(moto);
  const resources = await createStackResources(moto.clients());
  groupId = resources.groupIds[0] ?? '';
  await thing(
    'plain-1',
    { transport: 'plain', allowedAccess: `tcp/${plainPort}`, maxOpenSeconds: String(WINDOW_SECONDS) },
    PLAIN_KEY_ID,
    PLAIN_KEY,
  );
  await thing('tls-1', { allowedAccess: `tcp/${mosquitto.port}`, maxOpenSeconds: '60' }, 22, TLS_KEY);
  const names: MotoStackNames = {
    noncesTable: 'nonces',
    devicesTable: 'devices',
    grantsTable: 'grants',
    revokeQueueName: 'revoke',
    auditLogGroup: 'audit',
    brokerSecurityGroupIds: resources.groupIds,
  };
  admin = iamClients(moto, await createIamUser(moto, 'admin', ADMIN_POLICY));
  const key = await createIamUser(
    moto,
    'receiver-user',
    resolvePolicy(synthesizePolicies(), 'receiver', names, { without: [] }),
  );
  await enforceIam(moto);

  receiverKey = key;
  const env = {
    ...stackReceiverEnv(moto.endpoint, groupId, resources.queueUrl),
    [ENV.brokerPort]: String(mosquitto.port),
    [OPTIONAL_ENV.plainBrokerPort]: String(plainPort),
    BLACKCLOUD_DIRECTORY_REFRESH_SECONDS: '5',
    [ENV.brokerHost]: '127.0.0.1',
    [ENV.brokerTlsServerName]: 'localhost',
    [ENV.controllerCaFile]: join(pkiDir, 'ca.crt'),
    [ENV.controllerCertFile]: join(pkiDir, `${CONTROLLER_IDENTITY}.crt`),
    [ENV.controllerKeyFile]: join(pkiDir, `${CONTROLLER_IDENTITY}.key`),
  };
  receiverEnv = env;
  receiver = await startAwsReceiver(loadAwsReceiverConfig(env), {
    host: '127.0.0.1',
    port: 0,
    clients: iamClients(moto, key, denied),
    out: { write: (line: string) => lines.push(line) },
    keyRotation: loadAwsControllerConfig(env),
    onOutcome: (outcome) => outcomes.push(outcome),
  });
  // The receivers enrol the registry's devices at the broker (broker-sync.ts) before any knock matters.
  await until(
    'plain-1 enrolled at the broker',
    async () => lines.some((line) => line.includes('change(s) applied to match the device index')),
    20_000,
  );
}, 240_000);

afterAll(async () => {
  for (const client of clients.splice(0)) client.end(true);
  await receiver?.close();
  await mosquitto?.stop();
  await moto?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('the plain profile on AWS: a knock installs a one-time credential at the broker', () => {
  it('GIVEN a plain device WHEN it knocks THEN the rule opened is the plain port, and it connects without TLS and publishes', async () => {
    const watch = await observer();
    const credential = await knockPlain();
    expect(await ruleRanges()).toEqual([`tcp/${plainPort}-${plainPort} 127.0.0.1/32`]);
    const device = await connectPlain('plain-1', credential);
    await device.publishAsync(deviceTopic('plain-1', 'reading'), '21.5', { qos: 1 });
    await until('the reading delivered', async () => watch.messages.length > 0, 5_000);
    expect(watch.messages).toEqual([`${deviceTopic('plain-1', 'reading')} 21.5`]);
    // Its own tree only, as over TLS.
    await expect(device.subscribeAsync(deviceTopic('tls-1', '#'), { qos: 1 })).rejects.toThrow(
      /Subscribe error/,
    );
    device.end(true);
    watch.client.end(true);
  }, 30_000);

  it('GIVEN a session on a credential WHEN its grant window ends THEN the session lives on and publishes; once it ends the credential is refused, replayed from its own address too', async () => {
    const watch = await observer();
    const credential = await knockPlain();
    const session = await connectPlain('plain-1', credential);
    const connackAt = Date.now();
    let endedAt: number | undefined;
    session.on('close', () => {
      endedAt ??= Date.now();
    });
    // Closed on connect from the broker's log: the rule goes within a few seconds of CONNACK, the session stays.
    await until('the rule revoked on connect', async () => (await ruleRanges()).length === 0, 5_000);
    expect(Date.now() - connackAt).toBeLessThan(5_000);
    // Well past the grant window (Mosquitto 2.0.11 would end the session on a password change: none happens).
    await new Promise((resolve) => setTimeout(resolve, (WINDOW_SECONDS + 4) * 1000));
    expect(endedAt).toBeUndefined();
    expect(session.connected).toBe(true);
    await session.publishAsync(deviceTopic('plain-1', 'late'), 'still here', { qos: 1 });
    await until('the late reading delivered', async () => watch.messages.length > 0, 5_000);
    expect(watch.messages).toEqual([`${deviceTopic('plain-1', 'late')} still here`]);
    watch.client.end(true);
    // The session ends: its credential dies with it, also from the device's own address after the window.
    await session.endAsync();
    await until('the credential withdrawn after the session', async () => !(await admits(credential)), 5_000);
    await expect(connectPlain('plain-1', credential)).rejects.toThrow(REFUSED);
    expect(lines.join('')).toContain(`watching $SYS/broker/log/N`);
  }, 60_000);

  it('GIVEN a TLS device WHEN it connects after its knock THEN its rule is revoked within a few seconds of CONNACK (the broker log) and its session lives on', async () => {
    const nonce = randomBytes(12);
    const packet = encodeBc1(
      { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: mosquitto!.port }] },
      { keyId: 22, key: TLS_KEY, nonce },
    );
    const before = outcomes.length;
    const socket = createSocket('udp4');
    await new Promise<void>((resolve, reject) =>
      socket.send(packet, receiver!.receiver.address.port, '127.0.0.1', (error) =>
        error ? reject(error) : resolve(),
      ),
    );
    socket.close();
    while (outcomes.length === before) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(outcomes.at(-1)?.ok).toBe(true);
    expect(await ruleRanges()).toEqual([`tcp/${mosquitto!.port}-${mosquitto!.port} 127.0.0.1/32`]);
    const read = (file: string) => readFile(join(pkiDir, file));
    const device = await mqtt.connectAsync(
      `mqtts://127.0.0.1:${mosquitto!.port}`,
      {
        ca: await read('ca.crt'),
        cert: await read('tls-1.crt'),
        key: await read('tls-1.key'),
        servername: 'localhost',
        rejectUnauthorized: true,
        reconnectPeriod: 0,
        clientId: `tls-1-${randomBytes(4).toString('hex')}`,
        protocolVersion: 4,
      },
      false,
    );
    clients.push(device);
    const connackAt = Date.now();
    // Its window is 60 s: only the session signal can close the rule this early.
    await until('the rule revoked on connect', async () => (await ruleRanges()).length === 0, 5_000);
    expect(Date.now() - connackAt).toBeLessThan(5_000);
    const revoked = lines
      .filter((line) => line.includes('"kind":"audit"'))
      .map((line) => JSON.parse(line))
      .filter((event) => event.type === 'grant.revoked' && event.deviceId === 'tls-1');
    expect(revoked).toMatchObject([{ source: '127.0.0.1', reason: 'connected' }]);
    expect(device.connected).toBe(true);
    await device.publishAsync(deviceTopic('tls-1', 'reading'), '1', { qos: 1 });
    await device.endAsync();
  }, 30_000);

  it('GIVEN a credential WHEN its grant closes before the window ends THEN the same credential is refused at once', async () => {
    const credential = await knockPlain();
    expect(await ruleRanges()).toHaveLength(1);
    // The grant closes early (here the session signal, the entry every closed-on-connect signal uses).
    const closed = await receiver!.grants.sessionEstablished('plain-1', '127.0.0.1');
    expect(closed.map((grant) => grant.deviceId)).toEqual(['plain-1']);
    expect(await ruleRanges()).toEqual([]);
    await until('the credential withdrawn', async () => !(await admits(credential)), 3_000);
    await expect(connectPlain('plain-1', credential)).rejects.toThrow(REFUSED);
  }, 30_000);

  it('GIVEN two knocks WHEN the second is accepted THEN only the second credential logs in (the last knock wins)', async () => {
    const first = await knockPlain();
    const second = await knockPlain();
    await expect(connectPlain('plain-1', first)).rejects.toThrow(REFUSED);
    expect(await admits(second)).toBe(true);
  }, 30_000);

  it('GIVEN a TLS device WHEN its name is presented on the plain listener THEN it is refused, whatever the password', async () => {
    const credential = await knockPlain();
    for (const password of [undefined, '', 'guess', credential]) {
      await expect(connectPlain('tls-1', password)).rejects.toThrow(REFUSED);
    }
    await expect(connectPlain(CONTROLLER_IDENTITY, credential)).rejects.toThrow(REFUSED);
  }, 30_000);

  it('GIVEN two receivers WHEN the device knocks through one, then the other THEN only the last credential logs in', async () => {
    const second = await startAwsReceiver(loadAwsReceiverConfig(receiverEnv), {
      host: '127.0.0.1',
      port: 0,
      clients: iamClients(moto, receiverKey, denied),
      out: { write: (line: string) => lines.push(line) },
      keyRotation: loadAwsControllerConfig(receiverEnv),
      leaseHolderId: 'second-receiver',
      onOutcome: (outcome) => outcomes.push(outcome),
    });
    try {
      await until(
        "the second receiver's admin session",
        async () =>
          lines.filter((line) => line.includes('broker dynamic security: admin session')).length >= 2,
        15_000,
      );
      const viaFirst = await knockPlain(receiver!);
      const viaSecond = await knockPlain(second);
      // One client per device at the broker: the later password replaced the earlier one.
      await expect(connectPlain('plain-1', viaFirst)).rejects.toThrow(REFUSED);
      expect(await admits(viaSecond)).toBe(true);
      // That session ended: the credential dies with it (both receivers saw it in the broker's log).
      await until(
        'the credential withdrawn after the session',
        async () => !(await admits(viaSecond)),
        5_000,
      );
      // And the other way round: a knock through the first receiver replaces the second's.
      const again = await knockPlain(receiver!);
      await expect(connectPlain('plain-1', viaSecond)).rejects.toThrow(REFUSED);
      expect(await admits(again)).toBe(true);
    } finally {
      await second.close();
    }
  }, 60_000);

  it('GIVEN a plain session holding its credential WHEN the device is disabled in the registry THEN the session ends within one refresh + 5 s and the credential is refused (last: plain-1 stays disabled)', async () => {
    const credential = await knockPlain();
    const session = await connectPlain('plain-1', credential);
    await until('the rule revoked on connect', async () => (await ruleRanges()).length === 0, 5_000);
    const ended = new Promise<number>((resolve) => session.once('close', () => resolve(Date.now())));
    const start = Date.now();
    await admin.iot.send(
      new UpdateThingCommand({
        thingName: 'plain-1',
        attributePayload: { attributes: { enabled: 'false' }, merge: true },
      }),
    );
    expect((await ended) - start).toBeLessThan((5 + 5) * 1000);
    await expect(connectPlain('plain-1', credential)).rejects.toThrow(REFUSED);
  }, 30_000);

  it('GIVEN every knock above THEN no credential is in any receiver line or the broker log, and IAM denied nothing', () => {
    expect(credentials.length).toBeGreaterThan(4);
    const everything = `${lines.join('')}\n${mosquitto!.log()}`;
    for (const credential of credentials) expect(everything).not.toContain(credential);
    expect(lines.join('')).not.toContain('could not be changed');
    expect(denied).toEqual([]);
  });
});
