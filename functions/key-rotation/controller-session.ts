/**
 * The controller's privileged broker session over mutual TLS (certificate CN `blackcloud-controller`): publishes
 * key offers and hands every acknowledgement to a handler.
 *
 * Contract:
 * - `connectControllerSession` resolves once connected and subscribed to `blackcloud/keys/+/ack` (QoS 1); it
 *   rejects with the connection error (TLS refused, broker unreachable) after `connectTimeoutMs`.
 * - The server certificate is verified against the CA (never `rejectUnauthorized: false`).
 * - `publish` is QoS 1, never retained (keys never rest in the broker's retained store); it rejects when the
 *   broker does not acknowledge it. mqtt.js reconnects on its own; the subscription is restored on reconnect.
 * - `lazy: true` (the AWS receiver, whose broker may boot later): resolves at once and keeps connecting in the
 *   background every `reconnectMs`; the ack subscription is made on every (re)connect; while disconnected,
 *   `publish` rejects at once ("not connected"), so the controller records the failure and re-sends later.
 * - `transport` (the local gate mode, whose broker has no listening socket): each (re)connection runs TLS, with
 *   the same verification, over the stream `transport()` returns instead of dialling `url` (then only a label).
 * - Handler failures are swallowed (the controller's `handleMessage` never throws anyway).
 */
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import mqtt, { MqttClient } from 'mqtt';
import type { ControllerSession } from '../core/key-rotation-interfaces.ts';
import { KEY_ACK_LEVEL, KEY_TOPIC_ROOT } from '../core/topics.ts';

export interface ControllerSessionOptions {
  /** mqtts://host:port (with `transport`: only named in messages) */
  readonly url: string;
  /** A new stream to the broker per connection attempt, instead of dialling `url` (see the contract). */
  readonly transport?: () => Duplex;
  readonly ca: string | Buffer;
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly servername?: string;
  /** @default 5000 */
  readonly connectTimeoutMs?: number;
  /** @default 'blackcloud-controller' (a second session, e.g. the CLI next to `up`, needs its own id) */
  readonly clientId?: string;
  readonly onMessage: (topic: string, payload: Uint8Array) => unknown;
  /** Do not wait for the first connection (see the contract). @default false */
  readonly lazy?: boolean;
  /** Pause between connection attempts. @default 1000 (lazy: 5000) */
  readonly reconnectMs?: number;
}

export const ACK_FILTER = `${KEY_TOPIC_ROOT}/+/${KEY_ACK_LEVEL}`;

export interface RunningControllerSession extends ControllerSession {
  readonly client: MqttClient;
  close(): Promise<void>;
}

export async function connectControllerSession(
  options: ControllerSessionOptions,
): Promise<RunningControllerSession> {
  const mqttOptions = {
    ca: options.ca,
    cert: options.cert,
    key: options.key,
    rejectUnauthorized: true,
    ...(options.servername === undefined ? {} : { servername: options.servername }),
    clientId: options.clientId ?? 'blackcloud-controller',
    protocolVersion: 4 as const,
    clean: true,
    connectTimeout: options.connectTimeoutMs ?? 5000,
    reconnectPeriod: options.reconnectMs ?? (options.lazy ? 5000 : 1000),
    resubscribe: true,
  };
  let client: MqttClient;
  if (options.transport !== undefined) {
    const transport = options.transport;
    client = await connectOver(
      () =>
        tlsConnect({
          socket: transport(),
          ca: options.ca,
          cert: options.cert,
          key: options.key,
          rejectUnauthorized: true,
          servername: options.servername ?? 'localhost',
        }),
      mqttOptions,
    );
  } else if (options.lazy) {
    client = mqtt.connect(options.url, mqttOptions);
    client.on('error', () => undefined); // connection errors: mqtt.js retries; publish reports "not connected"
    client.on('connect', () => {
      client.subscribe(ACK_FILTER, { qos: 1 }, () => undefined);
    });
  } else {
    client = await mqtt.connectAsync(options.url, mqttOptions, false);
  }
  client.on('message', (topic, payload) => {
    try {
      void Promise.resolve(options.onMessage(topic, new Uint8Array(payload))).catch(() => undefined);
    } catch {
      // never let a handler break the session
    }
  });
  if (!options.lazy) await client.subscribeAsync(ACK_FILTER, { qos: 1 });
  return {
    client,
    async publish(topic, payload) {
      if (!client.connected) throw new Error(`the controller session to ${options.url} is not connected`);
      await client.publishAsync(topic, typeof payload === 'string' ? payload : Buffer.from(payload), {
        qos: 1,
        retain: false,
      });
    },
    async close() {
      await client.endAsync(true);
    },
  };
}

/** Like `mqtt.connectAsync(url, options, false)` over streams from `build`: resolves on the first CONNACK, rejects
 *  (and ends the client) on the first error or after `connectTimeout`. */
function connectOver(
  build: () => Duplex,
  options: ConstructorParameters<typeof MqttClient>[1],
): Promise<MqttClient> {
  const client = new MqttClient(() => build(), options);
  return new Promise<MqttClient>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      client.off('connect', connected);
      client.off('error', failed);
    };
    const connected = () => {
      done();
      resolve(client);
    };
    const failed = (error: Error) => {
      done();
      client.end(true);
      reject(error);
    };
    const timer = setTimeout(
      () => failed(new Error(`no CONNACK within ${options.connectTimeout ?? 30_000} ms`)),
      options.connectTimeout ?? 30_000,
    );
    client.on('connect', connected);
    client.on('error', failed);
  });
}
