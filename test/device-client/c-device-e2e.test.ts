/**
 * The C library end to end: the reference device program (device-client/c/examples/knock_publish.c, linked with
 * the library, Debian's mbedTLS and libmosquitto) knocks a running receiver over real UDP, then connects through
 * the userspace gate to a real Mosquitto 2 with mutual TLS (the demo device's certificate) and publishes at QoS 1.
 * A subscriber connected straight to the broker (behind the gate, so it opens nothing for the program) sees the
 * message. Without a knock, or with a knock under a wrong key, the gate resets the connection: the broker is dark.
 * With `-R` the program also takes a key rotation from up's controller: the sealed offer (BKO1) opened in C, the
 * key stored before the ack, the rotation confirmed by the ack, the next knock under the new key.
 * `blackcloud up --broker` runs in process with port 0 for the receiver and the gate.
 * The plain profile (docs/protocol.md [PC-1]..[PC-6]): `up` in gate mode (embedded broker) with a plain port, a
 * device enrolled with `blackcloud devices add <id> --transport plain`; the program (-L) knocks, connects without
 * TLS as username = device id, password = bc_connect_credential of that knock, and publishes; a subscriber (the
 * TypeScript device library, as the same plain device, before the program) receives it.
 */
import { execFile } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createProgram } from '../../cli/program.ts';
import { tlsSettings } from '../../device-client/broker-connection.ts';
import { connectDevice, type DeviceClient } from '../../device-client/connect-device.ts';
import { loadDeviceConfig } from '../../device-client/load-device-config.ts';
import type { DeviceConfig } from '../../functions/core/device-config.ts';
import type { AuditEvent } from '../../functions/core/interfaces.ts';
import { deviceTopic } from '../../functions/core/topics.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../functions/local/data-dir.ts';
import type { GateEvent } from '../../functions/local/gate-firewall.ts';
import { type LocalCloud, startLocalCloud } from '../../functions/local/local-cloud.ts';
import { resolveUpConfig } from '../../functions/local/up-config.ts';
import { ensureLocalPki } from '../../functions/pki/local-ca.ts';
import type { Outcome } from '../../functions/receiver/handle-datagram.ts';
import { removeDir, tempDir, waitFor } from '../functions/local/helpers.ts';
import { C_ROOT, compileC } from '../support/c-build.ts';
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts';

let buildDir = '';
let program = '';

beforeAll(async () => {
  buildDir = await tempDir('bc-c-e2e-build');
  program = join(buildDir, 'knock_publish');
  await compileC({
    program: [`${C_ROOT}examples/knock_publish.c`],
    libraries: ['mbedcrypto', 'mosquitto'],
    output: program,
  });
}, 120_000);

afterAll(async () => {
  await removeDir(buildDir);
});

let dataDir: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let cloud: LocalCloud | undefined;
let subscriber: mqtt.MqttClient | undefined;
const outcomes: Outcome[] = [];
const gate: GateEvent[] = [];
const received: { topic: string; payload: string }[] = [];
const audits: AuditEvent[] = [];
let device: DeviceConfig;

/**
 * `blackcloud up --broker` in process, with its key-rotation controller (it rotates only when asked here; a pending
 * offer is re-sent every 300 ms until acknowledged).
 */
async function startCloud(): Promise<LocalCloud> {
  return startLocalCloud(
    resolveUpConfig({
      dataDir: dataDir!,
      spaPort: '0',
      mqttPort: '0',
      broker: `mqtts://127.0.0.1:${mosquitto!.port}`,
    }),
    {
      keyRotation: { resendMs: 300, tickMs: 100 },
      onOutcome: (outcome) => outcomes.push(outcome),
      onGateEvent: (event) => gate.push(event),
      onAudit: (event) => audits.push(event),
    },
  );
}

/** Runs the C program against the running cloud with the demo device's files; `key` overrides the SPA key. */
async function runProgram(options: {
  knock: boolean;
  key?: Uint8Array;
  keyId?: number;
  message: string;
  timeoutMs?: number;
  /** -R: wait that long for a key offer after the publish. */
  rotateMs?: number;
}) {
  const keyFile = join(dataDir!, 'c-device.key');
  const key = options.key ?? device.spa.native!.key;
  writeFileSync(keyFile, `${Buffer.from(key).toString('hex')}\n`, { mode: 0o600 });
  const args = [
    ...['-s', cloud!.spa.host, '-p', String(cloud!.spa.port)],
    ...['-i', String(options.keyId ?? device.spa.native!.keyId), '-k', keyFile],
    ...['-H', cloud!.mqtt.host, '-P', String(cloud!.mqtt.port)],
    ...[
      '-a',
      tlsSettings(device).caFile,
      '-c',
      tlsSettings(device).certFile,
      '-e',
      tlsSettings(device).keyFile,
    ],
    ...[
      '-I',
      `${DEMO_DEVICE_ID}/c-e2e`,
      '-t',
      `blackcloud/devices/${DEMO_DEVICE_ID}/c`,
      '-m',
      options.message,
    ],
    ...(options.knock ? ['-w', '200'] : ['-n']),
    // A refused connection shows as no CONNACK in time (libmosquitto retries a reset TLS handshake); the gate's
    // own 'refused' event is what proves the refusal, so the refused cases need not wait long.
    ...['-T', String(options.timeoutMs ?? 10_000)],
    ...(options.rotateMs === undefined ? [] : ['-D', DEMO_DEVICE_ID, '-R', String(options.rotateMs)]),
  ];
  const started = Date.now();
  // Asynchronous: the receiver and the gate run in this process and must serve the program meanwhile.
  return new Promise<{ status: number | null; stdout: string; stderr: string; ms: number; keyFile: string }>(
    (resolve) => {
      execFile(program, args, { encoding: 'utf8', timeout: 30_000 }, (error, stdout, stderr) => {
        const status = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ status, stdout, stderr, ms: Date.now() - started, keyFile });
      });
    },
  );
}

const accepted = () => outcomes.filter((o) => o.ok);
const refusedByGate = () => gate.filter((e) => e.type === 'gate.refused');

describe('the C reference device program against a running receiver and Mosquitto (mutual TLS)', () => {
  beforeEach(async () => {
    dataDir = await tempDir('bc-c-e2e');
    const layout = dataDirLayout(dataDir);
    await ensureLocalPki(layout.pkiDir);
    const work = join(dataDir, 'test-broker'); // not <data-dir>/mosquitto/, where up --broker writes its recipe;
    await mkdir(work);
    mosquitto = await startMosquitto(layout.pkiDir, work);
    cloud = await startCloud();
    device = await loadDeviceConfig(cloud.layout.deviceFile(DEMO_DEVICE_ID));
    // The subscriber dials the broker itself, not the gate: it opens no grant the program could use.
    const tls = {
      ca: readFileSync(tlsSettings(device).caFile),
      cert: readFileSync(tlsSettings(device).certFile),
      key: readFileSync(tlsSettings(device).keyFile),
    };
    subscriber = await mqtt.connectAsync(`mqtts://127.0.0.1:${mosquitto.port}`, {
      ...tls,
      clientId: `${DEMO_DEVICE_ID}/c-e2e-watcher`,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    subscriber.on('message', (topic, payload) => received.push({ topic, payload: payload.toString() }));
    await subscriber.subscribeAsync(`blackcloud/devices/${DEMO_DEVICE_ID}/#`, { qos: 1 });
  }, 60_000);

  afterEach(async () => {
    await subscriber?.endAsync(true);
    subscriber = undefined;
    await cloud?.close();
    cloud = undefined;
    await mosquitto?.stop();
    mosquitto = undefined;
    await removeDir(dataDir);
    outcomes.length = 0;
    gate.length = 0;
    received.length = 0;
    audits.length = 0;
  });

  it('knocks over UDP, connects through the opened gate and publishes: the subscriber receives the message', async () => {
    expect(cloud!.mqtt.port).not.toBe(mosquitto!.port); // the program dials the gate, not the broker
    const run = await runProgram({ knock: true, message: 'hello from C' });
    expect(run.stderr).toContain('published to');
    expect(run.status).toBe(0);
    await waitFor(() => (received.length > 0 ? true : undefined), 'the message at the subscriber', 10_000);
    expect(received).toEqual([{ topic: `blackcloud/devices/${DEMO_DEVICE_ID}/c`, payload: 'hello from C' }]);
    // The receiver accepted exactly one BC1 knock, from the program, under the device's key id.
    expect(accepted()).toHaveLength(1);
    const knock = accepted()[0]!;
    expect(knock.ok && knock.value).toMatchObject({
      format: 'bc1',
      deviceId: DEMO_DEVICE_ID,
      source: '127.0.0.1',
      keyId: device.spa.native!.keyId,
    });
    expect(gate.some((e) => e.type === 'gate.piped' && e.source === '127.0.0.1')).toBe(true);
    expect(refusedByGate()).toEqual([]);
    console.log(`C device: knock + TLS + QoS 1 publish in ${run.ms} ms (knock wait 200 ms)`);
  }, 60_000);

  it('without a knock the broker is dark: the gate resets the connection and nothing is published', async () => {
    const run = await runProgram({ knock: false, message: 'must not arrive', timeoutMs: 1500 });
    expect(run.status).toBe(4);
    expect(run.stderr).toContain('no MQTT session');
    expect(outcomes).toEqual([]);
    expect(refusedByGate().map((e) => e.source)).toContain('127.0.0.1');
    // Give a stray delivery time to show up before asserting there was none.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(received).toEqual([]);
  }, 60_000);

  it('a knock sealed with a wrong key is rejected and opens nothing', async () => {
    const wrong = new Uint8Array(device.spa.native!.key).map((byte) => byte ^ 0x5a);
    const run = await runProgram({
      knock: true,
      key: wrong,
      message: 'must not arrive either',
      timeoutMs: 1500,
    });
    expect(run.status).toBe(4);
    expect(accepted()).toEqual([]);
    await waitFor(() => (outcomes.length > 0 ? true : undefined), 'the receiver to judge the knock');
    expect(outcomes.map((o) => (o.ok ? 'accepted' : o.reason))).toEqual(['auth-failed']);
    expect(refusedByGate().map((e) => e.source)).toContain('127.0.0.1');
    expect(received).toEqual([]);
  }, 60_000);

  it('takes a key rotation: opens the sealed offer in C, stores the key before the ack, and knocks with it next', async () => {
    expect(cloud!.keyRotation).toBeDefined();
    const oldKeyId = device.spa.native!.keyId;
    const run = runProgram({ knock: true, message: 'before the rotation', rotateMs: 15_000 });
    // Offered now (the program may not be subscribed yet: the controller re-sends every 300 ms until the ack).
    const rotated = await cloud!.keyRotation!.controller.rotate(DEMO_DEVICE_ID);
    expect(rotated.status).toBe('offered');
    const keyId = (rotated as { keyId: number }).keyId;
    const done = await run;
    expect(done.stderr).toContain(`stored the new key ${keyId}`);
    expect(done.status).toBe(0);
    expect(done.stdout).toBe(`key-id ${keyId}\n`);
    await waitFor(
      () => (audits.some((e) => e.type === 'key.confirmed' && e.keyId === keyId) ? true : undefined),
      'the controller to confirm the C device ack',
      10_000,
    );
    expect(audits.find((e) => e.type === 'key.confirmed')).toMatchObject({
      deviceId: DEMO_DEVICE_ID,
      keyId,
      by: 'ack',
    });
    // The key file was replaced (0600) by the key the controller holds for that id.
    expect(statSync(done.keyFile).mode & 0o777).toBe(0o600);
    const stored = new Uint8Array(Buffer.from(readFileSync(done.keyFile, 'utf8').trim(), 'hex'));
    expect(await cloud!.keyRotation!.store.keyMaterial(DEMO_DEVICE_ID, keyId)).toEqual(stored);

    // The next run knocks with the new key id and key: accepted under it, and the old key is retired at once.
    outcomes.length = 0;
    const next = await runProgram({ knock: true, key: stored, keyId, message: 'after the rotation' });
    expect(next.status).toBe(0);
    expect(accepted().map((o) => o.ok && o.value.keyId)).toEqual([keyId]);
    await waitFor(
      () => (audits.some((e) => e.type === 'key.retired') ? true : undefined),
      'the old key retired at first use',
    );
    expect(audits.find((e) => e.type === 'key.retired')).toMatchObject({
      keyIds: [oldKeyId],
      reason: 'new-key-used',
    });
    console.log(`C device: sealed key offer opened, stored and acknowledged in one run of ${done.ms} ms`);
  }, 90_000);
});

describe("the C reference device program as a plain device (-L: no TLS, the knock's one-time credential)", () => {
  const PLAIN_ID = 'c-plain-1';
  let plainDir: string | undefined;
  let plainCloud: LocalCloud | undefined;
  let watcher: DeviceClient | undefined;

  beforeEach(async () => {
    plainDir = await tempDir('bc-c-plain');
    // `blackcloud up` in gate mode (no --broker: the embedded broker) with --plain-port (0: a free port).
    plainCloud = await startLocalCloud(
      resolveUpConfig({ dataDir: plainDir, spaPort: '0', mqttPort: '0', plainPort: '0', grantSeconds: '60' }),
      { keyRotation: false, onOutcome: (outcome) => outcomes.push(outcome) },
    );
    const said: string[] = [];
    const io = { out: (line: string) => said.push(line), err: (line: string) => said.push(line) };
    await createProgram(io).parseAsync(
      ['devices', 'add', PLAIN_ID, '--transport', 'plain', '--data-dir', plainDir],
      { from: 'user' },
    );
    const running = plainCloud;
    await waitFor(() => running.directory.byId(PLAIN_ID), 'the plain device to be loaded', 5000);
    expect(said.join('\n')).toContain(PLAIN_ID);
  }, 60_000);

  afterEach(async () => {
    watcher?.end(true);
    watcher = undefined;
    await plainCloud?.close();
    plainCloud = undefined;
    await removeDir(plainDir);
    outcomes.length = 0;
  });

  async function runPlain(key: Uint8Array, keyId: number, message: string, timeoutMs = 10_000) {
    const keyFile = join(plainDir!, 'c-plain.key');
    writeFileSync(keyFile, `${Buffer.from(key).toString('hex')}\n`, { mode: 0o600 });
    const args = [
      '-L',
      ...['-D', PLAIN_ID],
      ...['-s', plainCloud!.spa.host, '-p', String(plainCloud!.spa.port), '-i', String(keyId), '-k', keyFile],
      ...['-H', plainCloud!.plain!.host, '-P', String(plainCloud!.plain!.port)],
      ...['-I', `${PLAIN_ID}/c`, '-t', deviceTopic(PLAIN_ID, 'c'), '-m', message],
      ...['-w', '200', '-T', String(timeoutMs)],
    ];
    return new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(program, args, { encoding: 'utf8', timeout: 30_000 }, (error, stdout, stderr) => {
        resolve({
          status: error === null ? 0 : typeof error.code === 'number' ? error.code : null,
          stdout,
          stderr,
        });
      });
    });
  }

  it('knocks, logs in over plain MQTT with the credential and publishes: the subscriber receives it', async () => {
    const file = plainCloud!.layout.deviceFile(PLAIN_ID);
    const plain = await loadDeviceConfig(file);
    expect(plain.mqtt).toEqual({ transport: 'plain', url: `mqtt://127.0.0.1:${plainCloud!.plain!.port}` });
    // The subscriber is the same plain device through the TypeScript library (its own knock and credential),
    // connected before the program knocks: the program's knock then makes the live credential its own [PC-3].
    watcher = await connectDevice(file, { firstConnectDeadlineMs: 8000, keyRotation: false });
    const got: string[] = [];
    watcher.on('message', (_topic, payload) => got.push(payload.toString()));
    await watcher.subscribeAsync(deviceTopic(PLAIN_ID, 'c'), { qos: 1 });
    outcomes.length = 0;

    const run = await runPlain(plain.spa.native!.key, plain.spa.native!.keyId, 'hello from a plain C device');
    expect(run.stderr).toContain('published to');
    expect(run.status).toBe(0);
    await waitFor(() => (got.length > 0 ? true : undefined), 'the message at the subscriber', 10_000);
    expect(got).toEqual(['hello from a plain C device']);
    expect(accepted()).toHaveLength(1);
    expect(accepted()[0]!.ok && accepted()[0]!.value).toMatchObject({
      format: 'bc1',
      deviceId: PLAIN_ID,
      keyId: plain.spa.native!.keyId,
    });
    // The credential is never printed by the program, nor in the audit [PC-6]: no 64-hex string anywhere.
    expect(`${run.stdout}${run.stderr}`).not.toMatch(/[0-9a-f]{64}/);
    expect(await readFile(plainCloud!.layout.auditFile, 'utf8')).not.toMatch(/[0-9a-f]{64}/);
  }, 60_000);

  it('a knock under a wrong key opens nothing: no plain session, nothing published', async () => {
    const plain = await loadDeviceConfig(plainCloud!.layout.deviceFile(PLAIN_ID));
    const wrong = new Uint8Array(plain.spa.native!.key).map((byte) => byte ^ 0x5a);
    const run = await runPlain(wrong, plain.spa.native!.keyId, 'must not arrive', 1500);
    expect(run.status).toBe(4);
    expect(run.stderr).toContain('no MQTT session');
    await waitFor(() => (outcomes.length > 0 ? true : undefined), 'the receiver to judge the knock');
    expect(outcomes.map((o) => (o.ok ? 'accepted' : o.reason))).toEqual(['auth-failed']);
  }, 60_000);
});
