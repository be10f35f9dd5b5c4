/**
 * An MQTT-over-mutual-TLS device connection for the benches and the hostile suite (mqtt.js, protocol 3.1.1, clean
 * session, no automatic reconnect unless asked): `connectOnce` resolves on CONNACK or rejects on the first error,
 * close or timeout; `connectWithRetry` keeps trying (a knock's grant may land a few ms after the knock) and says
 * how many attempts it took. `localAddress` binds the device to one loopback address, so each simulated device
 * has its own source address (grants are per source address).
 */
import { connect as tcpConnect } from 'node:net';
import { createSecureContext, type SecureContext } from 'node:tls';
import mqtt, { type MqttClient } from 'mqtt';
import type { ClientTls } from '../../test/support/mosquitto.ts';

/** One TLS context per credential set (parsing PEM per connection would be measured otherwise). */
const contexts = new WeakMap<ClientTls, SecureContext>();
function secureContextOf(tls: ClientTls): SecureContext {
  let context = contexts.get(tls);
  if (context === undefined) {
    context = createSecureContext({ ca: tls.ca, cert: tls.cert, key: tls.key });
    contexts.set(tls, context);
  }
  return context;
}

export interface DeviceConnectOptions {
  readonly port: number;
  readonly tls: ClientTls;
  readonly localAddress?: string;
  readonly clientId: string;
  /** One attempt's limit (TCP + TLS + CONNECT), ms. */
  readonly timeoutMs: number;
  /** mqtt.js reconnectPeriod, ms. @default 0 (no automatic reconnect) */
  readonly reconnectPeriod?: number;
  /** MQTT keepalive, s. @default 60 (the device library's) */
  readonly keepaliveSeconds?: number;
}

export function connectOnce(options: DeviceConnectOptions): Promise<MqttClient> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(`mqtts://127.0.0.1:${options.port}`, {
      secureContext: secureContextOf(options.tls),
      // Small MQTT packets: without TCP_NODELAY, Nagle + delayed ACK stall each exchange by ~40 ms.
      noDelay: true,
      rejectUnauthorized: true,
      servername: 'localhost',
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      clientId: options.clientId,
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: options.reconnectPeriod ?? 0,
      connectTimeout: options.timeoutMs,
      keepalive: options.keepaliveSeconds ?? 60,
    } as mqtt.IClientOptions);
    let settled = false;
    // Only our own listeners are removed: mqtt.js listens to its own 'close' to reconnect.
    const onError = (error: Error): void => fail(error);
    const onClose = (): void => fail(new Error('connection closed before CONNACK'));
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('error', onError);
      client.off('close', onClose);
      client.on('error', () => undefined);
      client.end(true);
      reject(error);
    };
    const timer = setTimeout(
      () => fail(new Error(`no CONNACK within ${options.timeoutMs} ms`)),
      options.timeoutMs,
    );
    client.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('error', onError);
      client.off('close', onClose);
      client.on('error', () => undefined);
      resolve(client);
    });
    client.once('error', onError);
    client.once('close', onClose);
  });
}

export async function connectWithRetry(
  options: DeviceConnectOptions & { readonly deadlineMs: number; readonly retryDelayMs: number },
): Promise<{ client: MqttClient; attempts: number }> {
  const started = Date.now();
  for (let attempts = 1; ; attempts++) {
    try {
      return { client: await connectOnce(options), attempts };
    } catch (error) {
      if (Date.now() - started > options.deadlineMs) throw error;
      if (options.retryDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, options.retryDelayMs));
    }
  }
}

/**
 * Dials TCP from `localAddress` until a connection is accepted, each try limited to `probeMs` (a SYN dropped by a
 * firewall gets no answer: waiting for the kernel's 1 s retransmit would measure the kernel, not the grant).
 * Resolves with the number of tries; the probe connection is closed at once.
 */
export async function waitForTcp(
  port: number,
  localAddress: string,
  probeMs: number,
  deadlineMs: number,
): Promise<number> {
  const started = Date.now();
  for (let tries = 1; ; tries++) {
    const connected = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host: '127.0.0.1', port, localAddress });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(false);
      }, probeMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (connected) return tries;
    if (Date.now() - started > deadlineMs)
      throw new Error(`no TCP connection to port ${port} within ${deadlineMs} ms`);
  }
}

/** Ends a client (forced) and waits until it says so, at most one second. */
export function endClient(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 1000);
    client.end(true, {}, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
