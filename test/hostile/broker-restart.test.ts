/**
 * A broker restart while devices are connected: a real Mosquitto with mutual TLS behind the userspace gate, the
 * receiver opening grants for five devices (each on its own loopback address). Mosquitto is stopped and started
 * again on the same port: every device reconnects through the gate (its grant still holds) and MQTT works again,
 * the gate and the receiver keep running, and a device without a grant still cannot get in.
 */
import { createSocket } from 'node:dgram';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { connectOnce, connectWithRetry, endClient } from '../../bench/support/mqtt-device.ts';
import { deviceTopic } from '../../functions/core/topics.ts';
import { type GateEvent, type GateFirewall, startGateFirewall } from '../../functions/local/gate-firewall.ts';
import { createReceiverDeps } from '../../functions/receiver/receiver-deps.ts';
import { type RunningReceiver, startReceiver } from '../../functions/receiver/udp-receiver.ts';
import { bc1Packet, harness, T0 } from '../functions/receiver/helpers.ts';
import { BENCH_IDENTITY, type MosquittoWithClient, startMosquittoWithClient } from '../support/mosquitto.ts';

let mosquitto: MosquittoWithClient | undefined;
let gate: GateFirewall | undefined;
let receiver: RunningReceiver | undefined;
const clients: MqttClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map(endClient));
  await receiver?.close();
  await gate?.close();
  await mosquitto?.stop();
});

function knock(from: string, port: number): Promise<void> {
  const socket = createSocket('udp4');
  return new Promise<void>((resolve, reject) =>
    socket.bind(0, from, () =>
      socket.send(bc1Packet({ timestampMs: T0 }), port, '127.0.0.1', (error) =>
        error ? reject(error) : resolve(),
      ),
    ),
  ).finally(() => socket.close());
}

describe('broker restart with devices connected through the gate', () => {
  it('devices reconnect and publish again; the receiver and gate live on; no grant, no entry', async () => {
    mosquitto = await startMosquittoWithClient();
    const h = harness();
    const events: GateEvent[] = [];
    gate = await startGateFirewall({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: '127.0.0.1', port: mosquitto.ports[0]! },
      clock: h.time,
      onEvent: (event) => events.push(event),
    });
    const gatePort = gate.address().port;
    // The device directory allows tcp/8883; the gate guards its own port: grant that port for these devices.
    const deps = createReceiverDeps({
      directory: h.directory,
      nonces: h.nonces,
      firewall: {
        allow: (grants) =>
          gate!.allow(grants.map((g) => ({ ...g, access: [{ protocol: 'tcp', port: gatePort }] }))),
        revoke: (grants) =>
          gate!.revoke(grants.map((g) => ({ ...g, access: [{ protocol: 'tcp', port: gatePort }] }))),
      },
      audit: h.audit,
      clock: h.time,
      timers: h.time,
      // The harness's one device key stands for the five devices here: let it hold five addresses.
      deviceBounds: { maxAddressesPerDevice: 5 },
    });
    receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps });

    const addresses = Array.from({ length: 5 }, (_, i) => `127.0.2.${i + 1}`);
    const reconnects = new Map<string, number>();
    for (const address of addresses) {
      await knock(address, receiver.address.port);
      const { client } = await connectWithRetry({
        port: gatePort,
        tls: mosquitto.tls,
        localAddress: address,
        clientId: `dev-${address}`,
        timeoutMs: 3000,
        reconnectPeriod: 50,
        deadlineMs: 10_000,
        retryDelayMs: 10,
      });
      clients.push(client);
      client.on('connect', () => reconnects.set(address, (reconnects.get(address) ?? 0) + 1));
    }
    expect(receiver.counters().accepted).toBe(addresses.length);

    await mosquitto.restart();
    await vi.waitFor(() => expect(addresses.every((a) => (reconnects.get(a) ?? 0) >= 1)).toBe(true), {
      timeout: 20_000,
      interval: 20,
    });

    // MQTT works again for every device: each publishes to a topic that the first device subscribed to.
    const subscriber = clients[0]!;
    await subscriber.subscribeAsync(deviceTopic(BENCH_IDENTITY, 'restart', '#'), { qos: 1 });
    const seen = new Set<string>();
    subscriber.on('message', (topic) => seen.add(topic));
    for (const [i, client] of clients.entries())
      await client.publishAsync(deviceTopic(BENCH_IDENTITY, 'restart', String(i)), 'after', { qos: 1 });
    await vi.waitFor(() => expect(seen.size).toBe(clients.length), { timeout: 10_000, interval: 20 });

    // The receiver and the gate live on: a new device knocks and gets in; one without a grant does not.
    await expect(
      connectOnce({
        port: gatePort,
        tls: mosquitto.tls,
        localAddress: '127.0.2.99',
        clientId: 'no-grant',
        timeoutMs: 2000,
      }),
    ).rejects.toThrow();
    await knock('127.0.2.50', receiver.address.port);
    const late = await connectWithRetry({
      port: gatePort,
      tls: mosquitto.tls,
      localAddress: '127.0.2.50',
      clientId: 'late',
      timeoutMs: 3000,
      deadlineMs: 10_000,
      retryDelayMs: 10,
    });
    clients.push(late.client);
    expect(events.filter((e) => e.type === 'gate.refused').map((e) => e.source)).toContain('127.0.2.99');
    expect(receiver.counters()['rejected.internal-error']).toBeUndefined();
    await deps.grants.close();
  }, 60_000);
});
