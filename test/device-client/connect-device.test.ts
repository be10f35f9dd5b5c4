/**
 * connectDevice: the full-jitter backoff arithmetic under an injected random source, and a long-lived device
 * session on real sockets: `blackcloud up --broker` in process (receiver + userspace gate) in front of a real
 * Mosquitto 2 (mutual TLS, the generated ACL, persistence on). The broker is killed and restarted under two
 * connected connectDevice clients, then the receiver (and its gate) is: each time both clients knock again and
 * reconnect with no operator action, and a QoS 1 message published during the outage arrives.
 * Then the terminal outcomes, where retrying cannot help: the operator disables or removes a connected device (the
 * embedded broker's session notice), the broker refuses a reconnect (CONNACK 5), and the optional give-up bounds
 * (`maxConsecutiveFailures`, `giveUpAfterMs`); each ends the session once, with nothing left running.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalFleet } from '../../cli/fleet/local-fleet.ts';
import {
  backoffDelayMs,
  connectDevice,
  DEFAULT_BACKOFF,
  type DeviceClient,
  type DeviceEvent,
} from '../../device-client/connect-device.ts';
import { BrokerConnectError, SessionEndedError } from '../../device-client/errors.ts';
import { type EmbeddedBroker, startEmbeddedBroker } from '../../functions/broker/embedded-broker.ts';
import { systemClock, systemRandom } from '../../functions/core/system.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../functions/local/local-cloud.ts';
import { resolveUpConfig, type UpConfig } from '../../functions/local/up-config.ts';
import { ensureLocalPki, loadPem } from '../../functions/pki/local-ca.ts';
import { freePort, removeDir, sleep, tempDir, waitFor } from '../functions/local/helpers.ts';
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts';

describe('backoffDelayMs (full jitter)', () => {
  it('is random(0, min(cap, base * 2^failures)) with the documented defaults base 1 s, cap 60 s', () => {
    expect(DEFAULT_BACKOFF).toEqual({ baseMs: 1000, capMs: 60_000 });
    const ceilings = [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000];
    for (const [failures, ceiling] of ceilings.entries()) {
      expect(backoffDelayMs(failures, () => 0)).toBe(0);
      expect(backoffDelayMs(failures, () => 0.5)).toBe(ceiling / 2);
      expect(backoffDelayMs(failures, () => 0.999_999)).toBe(Math.floor(ceiling * 0.999_999));
    }
    // Huge failure counts stay finite and capped.
    expect(backoffDelayMs(10_000, () => 0.25)).toBe(15_000);
    expect(backoffDelayMs(-3, () => 0.5)).toBe(500);
    expect(backoffDelayMs(3, () => 0.5, { baseMs: 100, capMs: 500 })).toBe(250);
  });

  it('spreads a fleet uniformly: a seeded source gives mean ≈ ceiling / 2 and every delay in [0, ceiling)', () => {
    let seed = 12_345;
    const lcg = (): number => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const delays = Array.from({ length: 20_000 }, () => backoffDelayMs(6, lcg));
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...delays)).toBeLessThan(60_000);
    const mean = delays.reduce((a, b) => a + b, 0) / delays.length;
    expect(Math.abs(mean - 30_000)).toBeLessThan(600);
    // Each tenth of the window holds about a tenth of the fleet (no thundering herd at 0 or at the cap).
    const buckets = new Array<number>(10).fill(0);
    for (const delay of delays) buckets[Math.floor(delay / 6000)]! += 1;
    for (const count of buckets) expect(Math.abs(count - 2000)).toBeLessThan(200);
  });
});

let dataDir: string | undefined;
let mosquitto: RunningMosquitto | undefined;
let cloud: LocalCloud | undefined;
let broker: EmbeddedBroker | undefined;
const devices: DeviceClient[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-connect-device');
});

afterEach(async () => {
  for (const device of devices.splice(0)) device.end(true);
  await broker?.close();
  broker = undefined;
  await cloud?.close();
  cloud = undefined;
  await mosquitto?.stop();
  mosquitto = undefined;
  await removeDir(dataDir);
});

async function setUp(): Promise<{ config: UpConfig; file: string }> {
  const layout = dataDirLayout(dataDir!);
  await ensureLocalPki(layout.pkiDir);
  const work = join(dataDir!, 'test-broker'); // not <data-dir>/mosquitto/, where up --broker writes its recipe;
  await mkdir(join(work, 'db'), { recursive: true });
  mosquitto = await startMosquitto(layout.pkiDir, work, {
    // Persistent sessions survive the broker restart: the subscriber's queued QoS 1 messages are kept.
    extraConf: ['persistence true', `persistence_location ${join(work, 'db')}/`],
  });
  // Fixed ports, so that the restarted receiver and gate are where the device file says.
  const config = resolveUpConfig({
    dataDir: dataDir!,
    spaPort: String(await freePort()),
    mqttPort: String(await freePort()),
    broker: `mqtts://127.0.0.1:${mosquitto.port}`,
  });
  cloud = await startLocalCloud(config, { keyRotation: false });
  return { config, file: cloud.layout.deviceFile(DEMO_DEVICE_ID) };
}

interface Watched {
  readonly client: DeviceClient;
  readonly events: DeviceEvent[];
}

async function device(file: string, extra: { clientId?: string; clean?: boolean } = {}): Promise<Watched> {
  const events: DeviceEvent[] = [];
  const client = await connectDevice(file, {
    ...extra,
    backoff: { baseMs: 200, capMs: 2000 },
    knockWaitMs: 50,
    attemptTimeoutMs: 2000,
    firstConnectDeadlineMs: 10_000,
    onEvent: (event) => events.push(event),
  });
  devices.push(client);
  return { client, events };
}

const of = <T extends DeviceEvent['type']>(events: DeviceEvent[], type: T) =>
  events.filter((event): event is Extract<DeviceEvent, { type: T }> => event.type === type);

describe('connectDevice: a session that outlives broker and receiver restarts', () => {
  it('without a knock the gate stays dark: the first connection gives up at its deadline', async () => {
    const { file } = await setUp();
    const refused = await connectDevice(file, {
      knock: false,
      firstConnectDeadlineMs: 1200,
      attemptTimeoutMs: 500,
      backoff: { baseMs: 100, capMs: 200 },
    }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(BrokerConnectError);
  });

  it('re-knocks and reconnects after a broker restart and after a receiver restart; QoS 1 sent offline arrives', async () => {
    const { config, file } = await setUp();
    const topic = `blackcloud/devices/${DEMO_DEVICE_ID}/outage`;
    const subscriber = await device(file, { clientId: `${DEMO_DEVICE_ID}/watcher`, clean: false });
    await subscriber.client.subscribeAsync(topic, { qos: 1 });
    const received: string[] = [];
    subscriber.client.on('message', (_topic, payload) => received.push(payload.toString()));
    const publisher = await device(file);
    expect(of(publisher.events, 'knock')).toHaveLength(1);
    expect(of(publisher.events, 'connect')).toEqual([{ type: 'connect', connection: 1, attempt: 1 }]);

    // 1. The broker dies and comes back on the same port.
    const knocksBefore = of(publisher.events, 'knock').length;
    await mosquitto!.kill();
    await waitFor(() => (publisher.client.connected ? undefined : true), 'the publisher to go offline');
    const duringBrokerOutage = publisher.client.publishAsync(topic, 'sent while the broker was down', {
      qos: 1,
    });
    await mosquitto!.restart();
    await duringBrokerOutage;
    await waitFor(
      () => (received.includes('sent while the broker was down') ? true : undefined),
      'the message',
      15_000,
    );
    const brokerReconnect = of(publisher.events, 'connect').at(-1)!;
    expect(brokerReconnect.connection).toBe(2);
    expect(of(publisher.events, 'knock').length).toBeGreaterThan(knocksBefore);
    expect(of(publisher.events, 'offline')).toHaveLength(1);
    const subscriberBroker = of(subscriber.events, 'connect').at(-1)!;
    expect(subscriberBroker.connection).toBe(2);

    // 2. The receiver (with its gate) stops and starts again; the broker keeps running.
    const knocksBeforeReceiver = of(publisher.events, 'knock').length;
    await cloud!.close();
    cloud = undefined;
    await waitFor(() => (publisher.client.connected ? undefined : true), 'the publisher to go offline');
    const duringReceiverOutage = publisher.client.publishAsync(topic, 'sent while the receiver was down', {
      qos: 1,
    });
    cloud = await startLocalCloud(config, { keyRotation: false });
    await duringReceiverOutage;
    await waitFor(
      () => (received.includes('sent while the receiver was down') ? true : undefined),
      'the message',
      15_000,
    );
    const receiverReconnect = of(publisher.events, 'connect').at(-1)!;
    expect(receiverReconnect.connection).toBe(3);
    expect(of(publisher.events, 'knock').length).toBeGreaterThan(knocksBeforeReceiver);
    await waitFor(
      () => (of(subscriber.events, 'connect').at(-1)!.connection === 3 ? true : undefined),
      'the subscriber to reconnect',
    );
    // QoS 1 is at least once: a delivery whose PUBACK died with the gate may come again (flagged dup).
    expect([...new Set(received)]).toEqual([
      'sent while the broker was down',
      'sent while the receiver was down',
    ]);
    // Each attempt knocked first; every delay stayed inside the full-jitter window.
    for (const scheduled of of(publisher.events, 'reconnect-scheduled')) {
      expect(scheduled.delayMs).toBeLessThan(Math.min(2000, 200 * 2 ** scheduled.failures));
    }
    expect(JSON.stringify([...publisher.events, ...subscriber.events])).not.toMatch(/"key"\s*:/);

    console.log(
      `reconnect times (offline -> CONNACK): broker restart publisher ${brokerReconnect.offlineMs} ms ` +
        `subscriber ${subscriberBroker.offlineMs} ms; receiver restart publisher ${receiverReconnect.offlineMs} ms ` +
        `subscriber ${of(subscriber.events, 'connect').at(-1)!.offlineMs} ms; publisher knocks ` +
        `${of(publisher.events, 'knock').length}, attempts ${publisher.client.device.stats().attempts}`,
    );
  }, 60_000);
});

/** `blackcloud up` in process with its embedded broker behind the gate (the broker that sends session notices). */
async function setUpEmbedded(): Promise<{ file: string }> {
  const config = resolveUpConfig({
    dataDir: dataDir!,
    spaPort: String(await freePort()),
    mqttPort: String(await freePort()),
  });
  cloud = await startLocalCloud(config, { keyRotation: false });
  return { file: cloud.layout.deviceFile(DEMO_DEVICE_ID) };
}

/**
 * A bare embedded broker whose `authenticate` answer the test flips, with a copy of the demo device file that
 * dials it directly (no knock: nothing stands in front of it).
 */
async function setUpBareBroker(allowed: { value: boolean }): Promise<{ file: string }> {
  const { file } = await setUpEmbedded();
  const pki = await ensureLocalPki(dataDirLayout(dataDir!).pkiDir);
  const [tls, ca] = [await loadPem(pki.brokerCert, pki.brokerKey), await loadPem(pki.caCert, pki.caKey)];
  broker = await startEmbeddedBroker({
    host: '127.0.0.1',
    port: 0,
    tls: { key: tls.key, cert: tls.cert, ca: ca.cert },
    authenticate: () => allowed.value,
  });
  const document = JSON.parse(await readFile(file, 'utf8')) as { mqtt: { url: string } };
  document.mqtt.url = `mqtts://127.0.0.1:${broker.address().port}`;
  const direct = join(dataDir!, 'devices', DEMO_DEVICE_ID, 'direct.json');
  await writeFile(direct, JSON.stringify(document), { mode: 0o600 });
  return { file: direct };
}

function fleet(): Promise<LocalFleet> {
  return LocalFleet.open({
    dataDir: dataDir!,
    random: systemRandom,
    clock: systemClock,
    operator: 'tester@test',
  });
}

/** After a terminal outcome: no timer, no socket, no knock any more (waits past the longest backoff delay). */
async function expectNothingLeft(watched: Watched, quietMs: number): Promise<void> {
  const attempts = watched.client.device.stats().attempts;
  const knocks = of(watched.events, 'knock').length;
  await sleep(quietMs);
  expect(watched.client.device.stats().attempts).toBe(attempts);
  expect(of(watched.events, 'knock')).toHaveLength(knocks);
  expect(of(watched.events, 'give-up')).toHaveLength(1);
  expect(watched.client.disconnecting).toBe(true);
  expect((watched.client as unknown as { reconnectTimer: unknown }).reconnectTimer ?? null).toBeNull();
  expect(watched.client.stream.destroyed).toBe(true);
}

describe('connectDevice: when retrying cannot help, the session ends once and says why', () => {
  it('the operator disables a connected device: the broker\'s notice ends it at once ("disabled")', async () => {
    const { file } = await setUpEmbedded();
    const watched = await device(file);
    const started = Date.now();
    const result = await (await fleet()).setEnabled(DEMO_DEVICE_ID, false);
    expect(result.disconnected).toBe(1);
    const ended = await watched.client.device.closed();
    const tookMs = Date.now() - started;
    expect(ended).toBeInstanceOf(SessionEndedError);
    expect(ended).toMatchObject({ reason: 'disabled', deviceId: DEMO_DEVICE_ID, retryable: false });
    expect(ended!.message).toBe(
      `the broker closed the session: the operator disabled device "${DEMO_DEVICE_ID}", so retrying cannot ` +
        `help (its knocks are refused too); fix: blackcloud devices enable ${DEMO_DEVICE_ID}, then connect again`,
    );
    expect(of(watched.events, 'give-up')).toEqual([{ type: 'give-up', reason: 'disabled', error: ended }]);
    // It never went offline and never knocked again: the notice came before the close.
    expect(of(watched.events, 'offline')).toHaveLength(0);
    await expectNothingLeft(watched, 2500);
    console.log(`disable -> give-up: ${tookMs} ms`);
  }, 30_000);

  it('the operator removes a connected device: "removed", with the fix to enrol it again', async () => {
    const { file } = await setUpEmbedded();
    const watched = await device(file);
    await (await fleet()).remove(DEMO_DEVICE_ID);
    const ended = await watched.client.device.closed();
    expect(ended).toMatchObject({ reason: 'removed', retryable: false });
    expect(ended!.message).toContain(`fix: enrol it again (blackcloud devices add ${DEMO_DEVICE_ID})`);
    await expectNothingLeft(watched, 2500);
  }, 30_000);

  it('a notice from nobody but the broker counts: a device cannot publish one on its own key topic', async () => {
    const { file } = await setUpEmbedded();
    const target = await device(file);
    const forger = await device(file);
    const keyTopicOfDevice = `blackcloud/keys/${DEMO_DEVICE_ID}`;
    // The broker closes a connection whose PUBLISH it refuses [MQTT-3.3.5-2]; the target hears nothing.
    forger.client.publish(keyTopicOfDevice, '{"v":1,"session":"closed","reason":"disabled"}', { qos: 0 });
    await waitFor(() => (of(forger.events, 'offline').length > 0 ? true : undefined), 'the forger cut off');
    await sleep(500);
    expect(of(target.events, 'give-up')).toHaveLength(0);
    expect(target.client.connected).toBe(true);
  }, 30_000);

  it('a reconnect the broker refuses (CONNACK 5) ends the session: "refused"', async () => {
    const allowed = { value: true };
    const { file } = await setUpBareBroker(allowed);
    const events: DeviceEvent[] = [];
    const client = await connectDevice(file, {
      knock: false,
      backoff: { baseMs: 100, capMs: 200 },
      attemptTimeoutMs: 2000,
      firstConnectDeadlineMs: 10_000,
      onEvent: (event) => events.push(event),
    });
    devices.push(client);
    allowed.value = false;
    expect(broker!.disconnect(DEMO_DEVICE_ID)).toBe(1); // no notice: a plain close, like a broker restart
    const ended = await client.device.closed();
    expect(ended).toMatchObject({ reason: 'refused', retryable: false });
    expect(ended!.message).toMatch(
      /refused device "demo-device" on reconnect \(Connection refused: Not authorized\)/,
    );
    expect(ended!.message).toContain('blackcloud devices enable demo-device');
    expect(of(events, 'offline')).toHaveLength(1);
    await expectNothingLeft({ client, events }, 1000);
  }, 30_000);

  it('maxConsecutiveFailures: the broker gone, it stops after that many failed attempts ("unreachable")', async () => {
    const { file } = await setUpBareBroker({ value: true });
    const events: DeviceEvent[] = [];
    const client = await connectDevice(file, {
      knock: false,
      backoff: { baseMs: 50, capMs: 100 },
      attemptTimeoutMs: 1000,
      maxConsecutiveFailures: 3,
      onEvent: (event) => events.push(event),
    });
    devices.push(client);
    const attemptsBefore = client.device.stats().attempts;
    await broker!.close();
    broker = undefined;
    const ended = await client.device.closed();
    expect(ended).toMatchObject({ reason: 'unreachable', retryable: true });
    expect(client.device.stats().attempts - attemptsBefore).toBe(3);
    expect(ended!.message).toMatch(
      /^no session with mqtts:\/\/127\.0\.0\.1:\d+ \(3 failed attempts in a row; 4 attempts in all\); stopped trying/,
    );
    for (const fix of ['blackcloud devices enable demo-device', 'blackcloud up', '--server']) {
      expect(ended!.message).toContain(fix);
    }
    await expectNothingLeft({ client, events }, 500);
  }, 30_000);

  it('giveUpAfterMs: offline that long, it stops on time even with a long backoff delay pending', async () => {
    const { file } = await setUpBareBroker({ value: true });
    const events: DeviceEvent[] = [];
    const client = await connectDevice(file, {
      knock: false,
      backoff: { baseMs: 10_000, capMs: 60_000 },
      attemptTimeoutMs: 1000,
      giveUpAfterMs: 1500,
      firstConnectDeadlineMs: 10_000,
      random: () => 0.99, // the first reconnect would wait ~10 s
      onEvent: (event) => events.push(event),
    });
    devices.push(client);
    await broker!.close();
    broker = undefined;
    const dropped = Date.now();
    const ended = await client.device.closed();
    const tookMs = Date.now() - dropped;
    expect(ended).toMatchObject({ reason: 'unreachable' });
    expect(ended!.message).toContain('(none for 1.5 s;');
    expect(tookMs).toBeGreaterThanOrEqual(1400);
    expect(tookMs).toBeLessThan(5000);
    await expectNothingLeft({ client, events }, 500);
  }, 30_000);

  it('before the first session a bound rejects the promise with the same error; the program ending it is no give-up', async () => {
    const { file } = await setUpBareBroker({ value: true });
    const port = broker!.address().port;
    await broker!.close();
    broker = undefined;
    const events: DeviceEvent[] = [];
    const refused = await connectDevice(file, {
      knock: false,
      backoff: { baseMs: 50, capMs: 100 },
      maxConsecutiveFailures: 2,
      onEvent: (event) => events.push(event),
    }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(SessionEndedError);
    expect((refused as SessionEndedError).message).toContain(`mqtts://127.0.0.1:${port}`);
    expect(of(events, 'give-up')).toHaveLength(1);

    const allowed = { value: true };
    broker = await startEmbeddedBroker({
      host: '127.0.0.1',
      port,
      tls: await (async () => {
        const pki = await ensureLocalPki(dataDirLayout(dataDir!).pkiDir);
        const [tls, ca] = [
          await loadPem(pki.brokerCert, pki.brokerKey),
          await loadPem(pki.caCert, pki.caKey),
        ];
        return { key: tls.key, cert: tls.cert, ca: ca.cert };
      })(),
      authenticate: () => allowed.value,
    });
    const client = await connectDevice(file, { knock: false, firstConnectDeadlineMs: 10_000 });
    client.end(true);
    expect(await client.device.closed()).toBeUndefined();
  }, 30_000);
});
