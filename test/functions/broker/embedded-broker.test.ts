/**
 * The embedded broker over real mutual TLS with real mqtt.js clients: who gets in, and who may publish, subscribe
 * and receive where.
 */
import type { Client } from 'aedes';
import { connectAsync, type IClientOptions, type MqttClient } from 'mqtt';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  BrokerListenError,
  BrokerTlsError,
  CONTROLLER_IDENTITY,
  deviceTopic,
  type EmbeddedBroker,
  startEmbeddedBroker,
} from '../../../functions/broker/embedded-broker.ts';
import { createCa, issueCertificate, type Pem } from '../../../functions/pki/local-ca.ts';

let ca: Pem;
let serverPem: Pem;
const certs: Record<string, Pem> = {};
let broker: EmbeddedBroker;
const readyClients: string[] = [];
let tlsClientsSeen = 0;
const open = new Set<MqttClient>();

beforeAll(async () => {
  ca = await createCa('broker test CA');
  serverPem = await issueCertificate(ca, {
    commonName: 'blackcloud-broker',
    kind: 'server',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  for (const name of ['device-a', 'device-b', 'device-disabled', CONTROLLER_IDENTITY]) {
    certs[name] = await issueCertificate(ca, { commonName: name, kind: 'client' });
  }
  certs['server-as-client'] = await issueCertificate(ca, {
    commonName: 'device-a',
    kind: 'server',
    dnsNames: ['localhost'],
  });
  const otherCa = await createCa('other CA');
  certs['other-ca'] = await issueCertificate(otherCa, { commonName: 'device-a', kind: 'client' });

  broker = await startEmbeddedBroker({
    host: '127.0.0.1',
    port: 0,
    tls: { key: serverPem.key, cert: serverPem.cert, ca: ca.cert },
    authenticate: ({ identity }) => identity !== 'device-disabled',
  });
  broker.aedes.on('client', () => {
    tlsClientsSeen += 1;
  });
  broker.aedes.on('clientReady', (client: Client) => readyClients.push(client.id));
});

afterEach(async () => {
  await Promise.all([...open].map((client) => client.endAsync(true)));
  open.clear();
});

afterAll(async () => {
  await broker?.close();
});

function options(cert: Pem | undefined, extra: Partial<IClientOptions> = {}): IClientOptions {
  return {
    ca: ca.cert,
    ...(cert ? { cert: cert.cert, key: cert.key } : {}),
    rejectUnauthorized: true,
    reconnectPeriod: 0,
    connectTimeout: 5_000,
    ...extra,
  };
}

async function connect(name: string | undefined, extra: Partial<IClientOptions> = {}): Promise<MqttClient> {
  const { port } = broker.address();
  const client = await connectAsync(
    `mqtts://127.0.0.1:${port}`,
    options(name ? certs[name] : undefined, extra),
    false,
  );
  open.add(client);
  return client;
}

/** The SUBACK return codes for one filter (mqtt.js rejects when a code is 0x80; the packet is on the error). */
async function subackCodes(client: MqttClient, filter: string): Promise<number[]> {
  try {
    return (await client.subscribeAsync(filter, { qos: 1 })).map((grant) => grant.qos);
  } catch (error) {
    const granted = (error as { packet?: { granted?: number[] } }).packet?.granted;
    if (granted === undefined) throw error;
    return granted;
  }
}

/** Collects messages a client receives. */
function inbox(client: MqttClient): { topic: string; payload: string }[] {
  const messages: { topic: string; payload: string }[] = [];
  client.on('message', (topic, payload) => messages.push({ topic, payload: payload.toString() }));
  return messages;
}

function nextMessage(client: MqttClient): Promise<{ topic: string; payload: string }> {
  return new Promise((resolve) => {
    client.once('message', (topic, payload) => resolve({ topic, payload: payload.toString() }));
  });
}

describe('mutual TLS', () => {
  it('lets a client with a certificate from the CA in; pub/sub on its own topic works', async () => {
    const a = await connect('device-a', { clientId: 'device-a' });
    const topic = deviceTopic('device-a', 'telemetry');
    const granted = await a.subscribeAsync(topic, { qos: 1 });
    expect(granted).toEqual([{ topic, qos: 1 }]);
    const received = nextMessage(a);
    await a.publishAsync(topic, 'hello', { qos: 1 });
    expect(await received).toEqual({ topic, payload: 'hello' });
  });

  it.each([
    ['no client certificate', undefined],
    ['a certificate from another CA (same CN)', 'other-ca'],
    ['a server certificate (no clientAuth) used as a client certificate', 'server-as-client'],
  ])('refuses %s before MQTT', async (_label, name) => {
    const seenBefore = tlsClientsSeen;
    const { port } = broker.address();
    await expect(
      connectAsync(`mqtts://127.0.0.1:${port}`, options(name ? certs[name] : undefined), false),
    ).rejects.toThrow();
    expect(tlsClientsSeen).toBe(seenBefore);
  });

  it('refuses (CONNACK 5) an identity the authenticate hook refuses', async () => {
    await expect(connect('device-disabled')).rejects.toThrow(/Not authorized/i);
  });
});

describe('identity = certificate CN', () => {
  it('keeps device A out of device B topics: SUBACK 0x80, nothing received', async () => {
    const a = await connect('device-a');
    const b = await connect('device-b');
    const aInbox = inbox(a);
    const bTopic = deviceTopic('device-b', 'telemetry');
    for (const filter of [bTopic, 'blackcloud/devices/+/telemetry', 'blackcloud/#', '#', '$SYS/#']) {
      expect(await subackCodes(a, filter)).toEqual([0x80]);
    }
    await a.subscribeAsync(deviceTopic('device-a', '#'), { qos: 1 });
    await b.publishAsync(bTopic, 'secret of b', { qos: 1 });
    // Barrier: a later message on A's own topic arrives after anything the broker wrote to A before it.
    const controller = await connect(CONTROLLER_IDENTITY);
    const own = nextMessage(a);
    await controller.publishAsync(deviceTopic('device-a', 'cmd'), 'for a', { qos: 1 });
    await own;
    expect(aInbox).toEqual([{ topic: deviceTopic('device-a', 'cmd'), payload: 'for a' }]);
  });

  it('disconnects device A when it publishes to device B topic, and B never sees it', async () => {
    const a = await connect('device-a');
    const b = await connect('device-b');
    const bInbox = inbox(b);
    await b.subscribeAsync(deviceTopic('device-b', '#'), { qos: 1 });
    const closed = new Promise<void>((resolve) => a.once('close', () => resolve()));
    a.publish(deviceTopic('device-b', 'cmd'), 'forged', { qos: 1 });
    await closed;
    const own = nextMessage(b);
    await b.publishAsync(deviceTopic('device-b', 'telemetry'), 'own', { qos: 1 });
    await own;
    expect(bInbox).toEqual([{ topic: deviceTopic('device-b', 'telemetry'), payload: 'own' }]);
  });

  it('ignores the MQTT username: a device claiming the controller name stays a device', async () => {
    const a = await connect('device-a', { username: CONTROLLER_IDENTITY, password: 'x' });
    expect(await subackCodes(a, deviceTopic('device-b', '#'))).toEqual([0x80]);
    expect(await subackCodes(a, deviceTopic('device-a', '#'))).toEqual([1]);
  });

  it('lets the controller subscribe to every device and publish to any device', async () => {
    const controller = await connect(CONTROLLER_IDENTITY);
    const a = await connect('device-a');
    const b = await connect('device-b');
    const filter = 'blackcloud/devices/+/telemetry';
    expect(await controller.subscribeAsync(filter, { qos: 1 })).toEqual([{ topic: filter, qos: 1 }]);
    const controllerInbox = inbox(controller);
    await a.publishAsync(deviceTopic('device-a', 'telemetry'), 'from a', { qos: 1 });
    await b.publishAsync(deviceTopic('device-b', 'telemetry'), 'from b', { qos: 1 });
    await expect.poll(() => controllerInbox.length).toBe(2);
    expect(controllerInbox).toEqual(
      expect.arrayContaining([
        { topic: deviceTopic('device-a', 'telemetry'), payload: 'from a' },
        { topic: deviceTopic('device-b', 'telemetry'), payload: 'from b' },
      ]),
    );
    await b.subscribeAsync(deviceTopic('device-b', 'cmd'), { qos: 1 });
    const command = nextMessage(b);
    await controller.publishAsync(deviceTopic('device-b', 'cmd'), 'rotate', { qos: 1 });
    expect(await command).toEqual({ topic: deviceTopic('device-b', 'cmd'), payload: 'rotate' });
  });

  it('namespaces client ids by identity, so B cannot take over A session', async () => {
    const a = await connect('device-a', { clientId: 'device-a' });
    const aClosed = new Promise<string>((resolve) => a.once('close', () => resolve('closed')));
    await connect('device-b', { clientId: 'device-a' });
    await connect('device-b', { clientId: 'random-id' });
    expect(readyClients).toEqual(
      expect.arrayContaining(['device-a', 'device-b/device-a', 'device-b/random-id']),
    );
    expect(a.connected).toBe(true);
    const own = nextMessage(a);
    await a.subscribeAsync(deviceTopic('device-a', 'x'));
    await a.publishAsync(deviceTopic('device-a', 'x'), 'still here');
    expect(await Promise.race([own.then((m) => m.payload), aClosed])).toBe('still here');
  });

  it('refuses a will message outside the identity topics (CONNACK 5)', async () => {
    await expect(
      connect('device-a', { will: { topic: deviceTopic('device-b', 'status'), payload: Buffer.from('x') } }),
    ).rejects.toThrow(/Not authorized/i);
    const a = await connect('device-a', {
      will: { topic: deviceTopic('device-a', 'status'), payload: Buffer.from('gone') },
    });
    expect(a.connected).toBe(true);
  });

  it('disconnect(identity) drops every connection of that identity only', async () => {
    const a1 = await connect('device-a', { clientId: 'device-a/1' });
    const a2 = await connect('device-a', { clientId: 'device-a/2' });
    const b = await connect('device-b');
    const closed = Promise.all(
      [a1, a2].map((c) => new Promise<void>((resolve) => c.once('close', () => resolve()))),
    );
    expect(broker.disconnect('device-a')).toBe(2);
    await closed;
    expect(b.connected).toBe(true);
  });
});

describe('configuration errors', () => {
  it('names the busy port', async () => {
    const { port } = broker.address();
    const error = await startEmbeddedBroker({
      host: '127.0.0.1',
      port,
      tls: { key: serverPem.key, cert: serverPem.cert, ca: ca.cert },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BrokerListenError);
    expect((error as BrokerListenError).code).toBe('EADDRINUSE');
    expect((error as Error).message).toContain(`port ${port}`);
  });

  it('refuses missing or unusable TLS material', async () => {
    await expect(
      startEmbeddedBroker({
        host: '127.0.0.1',
        port: 0,
        tls: { key: serverPem.key, cert: serverPem.cert, ca: '' },
      }),
    ).rejects.toBeInstanceOf(BrokerTlsError);
    await expect(
      startEmbeddedBroker({
        host: '127.0.0.1',
        port: 0,
        tls: { key: 'nope', cert: serverPem.cert, ca: ca.cert },
      }),
    ).rejects.toBeInstanceOf(BrokerTlsError);
  });
});
