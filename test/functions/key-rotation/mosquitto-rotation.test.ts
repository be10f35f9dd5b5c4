/**
 * Key rotation over the protected session, for real: a real Mosquitto 2 (the configuration and ACL blackcloud
 * generates, TLS certificates from the local CA made by the test), the userspace gate in front of it, the UDP
 * receiver, the controller's mutual-TLS session, and devices that knock, connect through the gate, store their
 * new key and acknowledge it. One shared clock (real time plus an offset the test moves forward) drives the
 * receiver, the gate and the controller, so grace periods pass without sleeping.
 */
import { statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { type KeyListenerEvent, listenForKeys } from '../../../device-client/key-listener.ts';
import { storeNativeKey } from '../../../device-client/key-store.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import type { DeviceConfig } from '../../../functions/core/device-config.ts';
import { encodeKeyAck, makeKeyAck } from '../../../functions/core/key-messages.ts';
import { KEY_OFFER_LENGTH, openKeyOffer } from '../../../functions/core/sealed-key-offer.ts';
import { systemRandom, systemTimers } from '../../../functions/core/system.ts';
import { CONTROLLER_IDENTITY, keyAckTopic, keyTopic } from '../../../functions/core/topics.ts';
import {
  connectControllerSession,
  type RunningControllerSession,
} from '../../../functions/key-rotation/controller-session.ts';
import { KeyRotationController } from '../../../functions/key-rotation/key-rotation-controller.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { type DataDirLayout, dataDirLayout } from '../../../functions/local/data-dir.ts';
import { DeviceFileKeyStore } from '../../../functions/local/device-file-key-store.ts';
import { FileDeviceDirectory } from '../../../functions/local/file-device-directory.ts';
import { type GateFirewall, startGateFirewall } from '../../../functions/local/gate-firewall.ts';
import { provisionDevice } from '../../../functions/local/provision-device.ts';
import { ensureLocalPki, issueCertificate, loadPem, type Pem } from '../../../functions/pki/local-ca.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../../../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps, type WiredReceiverDeps } from '../../../functions/receiver/receiver-deps.ts';
import { type RunningReceiver, startReceiver } from '../../../functions/receiver/udp-receiver.ts';
import { type RunningMosquitto, startMosquitto } from '../../support/mosquitto.ts';
import { removeDir, tempDir, waitFor } from '../local/helpers.ts';

const HOUR = 3_600_000;
const RESEND_MS = 10 * 60_000;
const DEVICES = ['dev-a', 'dev-b', 'dev-c', 'dev-d', 'dev-e', 'dev-f', 'dev-g'] as const;

const offset = { ms: 0 };
const clock = { now: () => Date.now() + offset.ms };

let work: string | undefined;
let layout: DataDirLayout;
let ca: Pem;
let controllerTls: Pem;
let mosquitto: RunningMosquitto | undefined;
let gate: GateFirewall | undefined;
let audit: MemoryAuditSink;
let store: DeviceFileKeyStore;
let directory: FileDeviceDirectory;
let deps: WiredReceiverDeps | undefined;
let receiver: RunningReceiver | undefined;
let controller: KeyRotationController | undefined;
let session: RunningControllerSession | undefined;
const outcomes: Outcome[] = [];
let keyUse: Promise<unknown> = Promise.resolve();
const clients: MqttClient[] = [];

/** The receiver and its directory (as after a process start); the controller hook notes each key's use. */
async function startReceiverProcess(): Promise<void> {
  directory = await FileDeviceDirectory.load(layout.devicesFile);
  store = new DeviceFileKeyStore(layout.devicesFile, { onChange: () => directory.reload() });
  deps = createReceiverDeps({
    directory,
    nonces: new MemoryNonceStore({ clock }),
    firewall: gate!,
    audit,
    clock,
    rejectAudit: false,
  });
  receiver = await startReceiver({
    host: '127.0.0.1',
    port: 0,
    deps,
    onOutcome: (outcome) => {
      outcomes.push(outcome);
      if (outcome.ok && outcome.value.keyId !== undefined && controller !== undefined) {
        keyUse = controller.noteKeyUsed(outcome.value.deviceId, outcome.value.keyId);
      }
    },
  });
}

/** The controller: its privileged mutual-TLS session to Mosquitto, then `start()` (resumes pending offers). */
async function startController(): Promise<void> {
  let handler: KeyRotationController | undefined;
  session = await connectControllerSession({
    url: `mqtts://127.0.0.1:${mosquitto!.port}`,
    ca: ca.cert,
    cert: controllerTls.cert,
    key: controllerTls.key,
    onMessage: (topic, payload) => handler?.handleMessage(topic, payload),
  });
  handler = new KeyRotationController({
    store,
    session,
    audit,
    clock,
    random: systemRandom,
    timers: systemTimers,
    config: { graceMs: HOUR, resendMs: RESEND_MS },
  });
  controller = handler;
  await controller.start();
}

async function stopAll(): Promise<void> {
  controller?.stop();
  controller = undefined;
  await session?.close();
  session = undefined;
  await receiver?.close();
  receiver = undefined;
  await deps?.grants.close();
  deps = undefined;
}

async function device(id: string): Promise<DeviceConfig> {
  return loadDeviceConfig(layout.deviceFile(id));
}

/** One knock sealed with `config`'s key, stamped by the shared clock; resolves with the receiver's outcome. */
async function knock(config: DeviceConfig): Promise<Outcome> {
  const before = outcomes.length;
  const { bytes } = buildKnock(config, { now: clock.now, randomBytes: systemRandom.randomBytes });
  await sendDatagram('127.0.0.1', receiver!.address.port, bytes);
  const outcome = await waitFor(() => outcomes[before], 'the receiver to handle the knock');
  await keyUse;
  return outcome;
}

/** Knock, then connect through the gate over mutual TLS. */
async function connectDevice(config: DeviceConfig): Promise<MqttClient> {
  expect((await knock(config)).ok).toBe(true);
  const client = await connectToBroker(config, { deadlineMs: 5000 });
  clients.push(client);
  return client;
}

function auditOf<T extends Parameters<MemoryAuditSink['ofType']>[0]>(type: T, deviceId: string) {
  return audit.ofType(type).filter((event) => 'deviceId' in event && event.deviceId === deviceId);
}

function waitForAudit<T extends Parameters<MemoryAuditSink['ofType']>[0]>(
  type: T,
  deviceId: string,
  count = 1,
) {
  return waitFor(() => {
    const found = auditOf(type, deviceId);
    return found.length >= count ? found : undefined;
  }, `${count} ${type} audit event(s) for ${deviceId}`);
}

beforeAll(async () => {
  work = await tempDir('bc7-rotation');
  layout = dataDirLayout(work);
  const pki = await ensureLocalPki(layout.pkiDir);
  ca = await loadPem(pki.caCert, pki.caKey);
  controllerTls = await issueCertificate(ca, { commonName: CONTROLLER_IDENTITY, kind: 'client' });
  mosquitto = await startMosquitto(layout.pkiDir, work);
  gate = await startGateFirewall({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: { host: '127.0.0.1', port: mosquitto.port },
    clock,
  });
  const brokerPort = gate.address().port;
  for (const deviceId of DEVICES) {
    await provisionDevice({
      layout,
      deviceId,
      format: 'native',
      access: [{ protocol: 'tcp', port: brokerPort }],
      endpoints: { host: '127.0.0.1', spaPort: 62201, mqttPort: brokerPort },
      ca,
      caFile: pki.caCert,
      random: systemRandom,
    });
  }
  audit = new MemoryAuditSink();
  await startReceiverProcess();
  await startController();
});

afterAll(async () => {
  await Promise.all(clients.map((client) => client.endAsync(true).catch(() => undefined)));
  await stopAll();
  await gate?.close();
  await mosquitto?.stop();
  await removeDir(work);
});

describe('key rotation over mutual TLS with a real Mosquitto', () => {
  it('rotates a connected device end to end; the next knock uses the new key and retires the old one', async () => {
    const old = await device('dev-a');
    const client = await connectDevice(old);
    const events: KeyListenerEvent[] = [];
    await listenForKeys(client, old, {
      randomBytes: systemRandom.randomBytes,
      onEvent: (e) => events.push(e),
    });

    const rotated = await controller!.rotate('dev-a');
    expect(rotated.status).toBe('offered');
    const keyId = (rotated as { keyId: number }).keyId;
    const [confirmed] = await waitForAudit('key.confirmed', 'dev-a');
    expect(confirmed).toMatchObject({ keyId, by: 'ack' });
    // Stored durably (0600) before the ack went out.
    expect(events).toEqual([
      { type: 'stored', keyId },
      { type: 'acknowledged', keyId },
    ]);
    const renewed = await device('dev-a');
    expect(renewed.spa.native?.keyId).toBe(keyId);
    expect(statSync(layout.deviceFile('dev-a')).mode & 0o777).toBe(0o600);
    // The directory records the generations: the old key ends one grace period after the ack.
    const oldKeyId = old.spa.native!.keyId;
    expect((await store.get('dev-a'))?.keys).toEqual([
      { keyId: oldKeyId, generation: 0, state: 'current', notAfter: confirmed!.oldKeysNotAfter },
      { keyId, generation: 1, state: 'current', createdAt: expect.any(Number) },
    ]);

    expect(await knock(renewed)).toMatchObject({ ok: true, value: { deviceId: 'dev-a', keyId } });
    expect(auditOf('key.retired', 'dev-a')).toEqual([
      expect.objectContaining({ keyIds: [oldKeyId], reason: 'new-key-used' }),
    ]);
    expect(await knock(old)).toEqual({ ok: false, reason: 'unknown-key' });
    // The new key's file is 0600; the retired key's file is gone.
    expect(statSync(`${layout.keysDir}/dev-a.${keyId}.bc1`).mode & 0o777).toBe(0o600);
    expect(() => statSync(`${layout.keysDir}/dev-a.bc1`)).toThrow(/ENOENT/);
    // Key material never reaches the audit trail.
    const lines = audit.lines().join('\n');
    expect(lines).not.toContain(Buffer.from(renewed.spa.native!.key).toString('base64'));
    expect(lines).not.toContain(Buffer.from(old.spa.native!.key).toString('base64'));
  });

  it('refuses the old key after its grace period, and removes it on schedule', async () => {
    const old = await device('dev-b');
    const client = await connectDevice(old);
    await listenForKeys(client, old, { randomBytes: systemRandom.randomBytes });
    await controller!.rotate('dev-b');
    await waitForAudit('key.confirmed', 'dev-b');

    expect((await knock(old)).ok).toBe(true); // within the grace period
    offset.ms += HOUR + 60_000;
    expect(await knock(old)).toEqual({ ok: false, reason: 'key-inactive' });

    await controller!.tick();
    expect(auditOf('key.retired', 'dev-b')).toEqual([
      expect.objectContaining({ keyIds: [old.spa.native!.keyId], reason: 'grace-ended' }),
    ]);
    expect(await knock(old)).toEqual({ ok: false, reason: 'unknown-key' });
    expect((await knock(await device('dev-b'))).ok).toBe(true);
  });

  it('keeps the old key working when the key message is lost, and delivers the key again later', async () => {
    const old = await device('dev-c');
    const rotated = await controller!.rotate('dev-c'); // nobody listening: the message is lost
    expect(rotated.status).toBe('offered');
    const keyId = (rotated as { keyId: number }).keyId;
    expect((await knock(old)).ok).toBe(true);
    expect((await store.get('dev-c'))?.keys.map((key) => [key.state, key.notAfter])).toEqual([
      ['current', undefined],
      ['pending', undefined],
    ]);

    const client = await connectDevice(old);
    await listenForKeys(client, old, { randomBytes: systemRandom.randomBytes });
    offset.ms += RESEND_MS;
    expect(await controller!.tick()).toContainEqual({ deviceId: 'dev-c', status: 'resent', keyId });
    await waitForAudit('key.confirmed', 'dev-c');
    expect(await knock(await device('dev-c'))).toMatchObject({ ok: true, value: { keyId } });
  });

  it('confirms a key whose ack was lost at its first use, and retires the old key at once', async () => {
    const old = await device('dev-f');
    const client = await connectDevice(old);
    const offers: Buffer[] = [];
    client.on('message', (topic, payload) => topic === keyTopic('dev-f') && offers.push(payload));
    await client.subscribeAsync(keyTopic('dev-f'), { qos: 1 });
    const rotated = await controller!.rotate('dev-f');
    const keyId = (rotated as { keyId: number }).keyId;
    const offer = openKeyOffer([old.spa.native!], 'dev-f', await waitFor(() => offers[0], 'the key offer'));
    // The device stores the key, but its ack never arrives.
    await storeNativeKey(layout.deviceFile('dev-f'), keyId, offer.ok ? offer.value.key : new Uint8Array());
    expect((await knock(await device('dev-f'))).ok).toBe(true);
    expect(auditOf('key.confirmed', 'dev-f').at(-1)).toMatchObject({ keyId, by: 'first-use' });
    expect(auditOf('key.retired', 'dev-f').at(-1)).toMatchObject({ reason: 'new-key-used' });
    expect((await store.get('dev-f'))?.keys.map((key) => [key.keyId, key.state])).toEqual([
      [keyId, 'current'],
    ]);
    expect(await knock(old)).toEqual({ ok: false, reason: 'unknown-key' });
  });

  it('completes a rotation whose ack was lost: the re-sent offer, sealed under the replaced key, is re-acknowledged [KO-8]', async () => {
    const old = await device('dev-g');
    const client = await connectDevice(old);
    const offers: Buffer[] = [];
    client.on('message', (topic, payload) => topic === keyTopic('dev-g') && offers.push(payload));
    await client.subscribeAsync(keyTopic('dev-g'), { qos: 1 });
    const rotated = await controller!.rotate('dev-g');
    const keyId = (rotated as { keyId: number }).keyId;
    const first = await waitFor(() => offers[0], 'the key offer');
    // On the wire: 80 sealed bytes, the new key nowhere readable in them.
    expect(first).toHaveLength(KEY_OFFER_LENGTH);
    const offer = openKeyOffer([old.spa.native!], 'dev-g', first);
    if (!offer.ok) throw new Error(offer.reason);
    expect(first.includes(Buffer.from(offer.value.key))).toBe(false);
    expect(openKeyOffer([old.spa.native!], 'dev-f', first)).toEqual({ ok: false, reason: 'unauthentic' });
    // The device stores the key; its ack is lost. It knocks no more before the re-send.
    await storeNativeKey(layout.deviceFile('dev-g'), keyId, offer.value.key);
    const renewed = await device('dev-g');
    const events: KeyListenerEvent[] = [];
    await listenForKeys(client, renewed, {
      randomBytes: systemRandom.randomBytes,
      onEvent: (e) => events.push(e),
    });
    offset.ms += RESEND_MS;
    expect(await controller!.tick()).toContainEqual({ deviceId: 'dev-g', status: 'resent', keyId });
    const [confirmed] = await waitForAudit('key.confirmed', 'dev-g');
    expect(confirmed).toMatchObject({ keyId, by: 'ack' });
    // The re-send was sealed under the old key again: the device, holding only the new one, re-acknowledged it.
    const resent = offers[1]!;
    expect(resent.readUInt32BE(4)).toBe(old.spa.native!.keyId);
    expect(openKeyOffer([renewed.spa.native!], 'dev-g', resent)).toEqual({
      ok: false,
      reason: 'unknown-sealing-key',
    });
    expect(events).toEqual([{ type: 'reacknowledged', keyId }]);
    expect(await knock(renewed)).toMatchObject({ ok: true, value: { deviceId: 'dev-g', keyId } });
    expect(await knock(old)).toEqual({ ok: false, reason: 'unknown-key' });
  });

  it("keeps a device out of another device's key topic, and its forged acks away from the controller", async () => {
    const a = await device('dev-a');
    const client = await connectDevice(a);
    const inbox: string[] = [];
    client.on('message', (topic) => inbox.push(topic));
    // Mosquitto 2.0's acl_file grants the SUBACK but never delivers what the ACL does not let the device read.
    await client.subscribeAsync(keyTopic('dev-b'), { qos: 1 });
    await client.subscribeAsync('blackcloud/keys/#', { qos: 1 });
    await session!.publish(keyTopic('dev-b'), 'not for dev-a');
    await client.subscribeAsync(keyTopic('dev-a'), { qos: 1 });
    const barrier = new Promise<void>((resolve) =>
      client.on('message', (topic) => topic === keyTopic('dev-a') && resolve()),
    );
    await session!.publish(keyTopic('dev-a'), 'barrier');
    await barrier;
    expect(new Set(inbox)).toEqual(new Set([keyTopic('dev-a')]));

    // dev-a forging an ack for dev-b, or publishing on a key topic: the broker drops it.
    const forged = encodeKeyAck(makeKeyAck(new Uint8Array(32), 1, new Uint8Array(16)));
    await client.publishAsync(keyAckTopic('dev-b'), forged, { qos: 1 });
    await client.publishAsync(keyTopic('dev-b'), 'fake key', { qos: 1 });
    const before = auditOf('key.ack-rejected', 'dev-a').length;
    await client.publishAsync(keyAckTopic('dev-a'), 'not json', { qos: 1 });
    await waitForAudit('key.ack-rejected', 'dev-a', before + 1);
    expect(auditOf('key.ack-rejected', 'dev-b')).toEqual([]);
    await waitFor(
      () => (mosquitto!.log().includes(`Denied PUBLISH from`) ? true : undefined),
      "Mosquitto's log of the denied publishes",
    );
  });

  it('changes nothing on an ack with a wrong proof, for a key that is not pending, or replayed', async () => {
    const old = await device('dev-d');
    const client = await connectDevice(old);
    const offers: Buffer[] = [];
    client.on('message', (_topic, payload) => offers.push(payload));
    await client.subscribeAsync(keyTopic('dev-d'), { qos: 1 });
    const rotated = await controller!.rotate('dev-d');
    const keyId = (rotated as { keyId: number }).keyId;
    const offer = openKeyOffer([old.spa.native!], 'dev-d', await waitFor(() => offers[0], 'the key offer'));
    expect(offer.ok && offer.value.keyId).toBe(keyId);
    const key = offer.ok ? offer.value.key : new Uint8Array();
    const nonce = (): Uint8Array => systemRandom.randomBytes(16);
    const send = async (payload: string, expectedRejections: number): Promise<void> => {
      await client.publishAsync(keyAckTopic('dev-d'), payload, { qos: 1 });
      await waitForAudit('key.ack-rejected', 'dev-d', expectedRejections);
    };
    const pendingFile = await readFile(layout.devicesFile, 'utf8');

    await send(encodeKeyAck(makeKeyAck(new Uint8Array(32).fill(9), keyId, nonce())), 1);
    await send(encodeKeyAck(makeKeyAck(key, old.spa.native!.keyId, nonce())), 2);
    expect(auditOf('key.ack-rejected', 'dev-d').map((event) => event.reason)).toEqual([
      'bad-proof',
      'not-pending',
    ]);
    expect(await readFile(layout.devicesFile, 'utf8')).toBe(pendingFile);

    const valid = encodeKeyAck(makeKeyAck(key, keyId, nonce()));
    await client.publishAsync(keyAckTopic('dev-d'), valid, { qos: 1 });
    await waitForAudit('key.confirmed', 'dev-d');
    const confirmedFile = await readFile(layout.devicesFile, 'utf8');
    await send(valid, 3); // the same ack again
    expect(auditOf('key.ack-rejected', 'dev-d')[2]).toMatchObject({ keyId, reason: 'not-pending' });
    expect(await readFile(layout.devicesFile, 'utf8')).toBe(confirmedFile);
    expect(auditOf('key.confirmed', 'dev-d')).toHaveLength(1);
  });

  it('resumes a rotation after the receiver restarts mid-rotation, without locking the device out', async () => {
    const old = await device('dev-e');
    const rotated = await controller!.rotate('dev-e'); // the device is offline
    const keyId = (rotated as { keyId: number }).keyId;
    await stopAll(); // the receiver process ends with the rotation pending

    await startReceiverProcess();
    expect((await knock(old)).ok).toBe(true);
    const client = await connectDevice(old);
    await listenForKeys(client, old, { randomBytes: systemRandom.randomBytes });
    await startController(); // re-sends every pending offer
    const [confirmed] = await waitForAudit('key.confirmed', 'dev-e');
    expect(confirmed).toMatchObject({ keyId, by: 'ack' });
    expect(auditOf('key.resent', 'dev-e')).toEqual([expect.objectContaining({ keyId })]);
    expect(await knock(await device('dev-e'))).toMatchObject({ ok: true, value: { keyId } });
  });
});
