/**
 * connectDevice: the full-jitter backoff arithmetic under an injected random source, and a long-lived device
 * session on real sockets: `blackcloud up --broker` in process (receiver + userspace gate) in front of a real
 * Mosquitto 2 (mutual TLS, the generated ACL, persistence on). The broker is killed and restarted under two
 * connected connectDevice clients, then the receiver (and its gate) is: each time both clients knock again and
 * reconnect with no operator action, and a QoS 1 message published during the outage arrives.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  backoffDelayMs,
  connectDevice,
  DEFAULT_BACKOFF,
  type DeviceClient,
  type DeviceEvent,
} from '../../device-client/connect-device.ts';
import { BrokerConnectError } from '../../device-client/errors.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../functions/local/local-cloud.ts';
import { resolveUpConfig, type UpConfig } from '../../functions/local/up-config.ts';
import { ensureLocalPki } from '../../functions/pki/local-ca.ts';
import { freePort, removeDir, tempDir, waitFor } from '../functions/local/helpers.ts';
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
const devices: DeviceClient[] = [];

beforeEach(async () => {
  dataDir = await tempDir('bc-connect-device');
});

afterEach(async () => {
  for (const device of devices.splice(0)) device.end(true);
  await cloud?.close();
  cloud = undefined;
  await mosquitto?.stop();
  mosquitto = undefined;
  await removeDir(dataDir);
});

async function setUp(): Promise<{ config: UpConfig; file: string }> {
  const layout = dataDirLayout(dataDir!);
  await ensureLocalPki(layout.pkiDir);
  const work = join(dataDir!, 'mosquitto');
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
