/**
 * Connects a device to the broker over mutual TLS (its client certificate is its identity), retrying for a few
 * seconds: right after a knock the firewall may not be open yet (a security-group change on AWS takes a short,
 * unpublished delay; the local gate and nftables are immediate), and a closed port looks exactly like a dropped
 * connection.
 *
 * Contract:
 * - Each attempt is one `mqtt.connect` with automatic reconnection off; it succeeds on CONNACK, fails on a socket
 *   or TLS error, a close before CONNACK, or `attemptTimeoutMs`. Failed clients are destroyed.
 * - Attempts repeat every `retryDelayMs` until `deadlineMs` has passed since the first; then `BrokerConnectError`
 *   with the attempt count and the last error. A CONNACK refusal (the broker answered: bad identity, not
 *   authorized) is final at once: retrying cannot change it.
 * - Missing or unreadable certificate files throw `DeviceConfigError` naming the `mqtt.*` field.
 * - The server certificate is always verified against the device's CA (never `rejectUnauthorized: false`).
 * - A plain-profile device (`mqtt.transport: "plain"`) has no TLS material and no reusable password: it cannot use
 *   this (`DeviceConfigError` on `mqtt.transport`); `connectDevice` knocks before every attempt and logs in with
 *   that knock's one-time credential (docs/device-sdk.md).
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import mqtt, { type MqttClient } from 'mqtt';
import { DeviceConfigError } from '../functions/core/config-errors.ts';
import type { DeviceConfig, TlsMqttConfig } from '../functions/core/device-config.ts';
import { BrokerConnectError } from './errors.ts';

export interface BrokerConnectOptions {
  /** Give up after this long, ms. @default 10000 */
  readonly deadlineMs?: number;
  /** Pause between attempts, ms. @default 300 */
  readonly retryDelayMs?: number;
  /** One attempt's limit (TCP + TLS + CONNECT), ms. @default 3000 */
  readonly attemptTimeoutMs?: number;
  /**
   * MQTT client id. @default `<deviceId>/<8 random hex>`: under the certificate identity (the embedded broker
   * namespaces ids that way anyway) and unique, so `pub` and `sub` of one device can run at once.
   */
  readonly clientId?: string;
  /** Called after each failed attempt (for `--verbose` output). */
  readonly onAttemptFailed?: (attempt: number, error: Error) => void;
}

export interface TlsMaterial {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

async function readPem(config: DeviceConfig, field: string, path: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new DeviceConfigError(
      config.file,
      field,
      `names ${path}, which cannot be read (${code}); fix: keep the PEM files next to device.json or correct the path`,
      { cause: error },
    );
  }
}

/** The device's TLS settings; a plain-profile device has none (`DeviceConfigError` on `mqtt.transport`). */
export function tlsSettings(config: DeviceConfig): TlsMqttConfig {
  if (config.mqtt.transport === 'tls') return config.mqtt;
  throw new DeviceConfigError(
    config.file,
    'mqtt.transport',
    'is "plain": this device has no TLS material and logs in with each knock\'s one-time credential; fix: use connectDevice (blackcloud pub/sub), which knocks before every attempt',
  );
}

export async function readTlsMaterial(config: DeviceConfig): Promise<TlsMaterial> {
  const mqtt = tlsSettings(config);
  const [ca, cert, key] = await Promise.all([
    readPem(config, 'mqtt.ca', mqtt.caFile),
    readPem(config, 'mqtt.cert', mqtt.certFile),
    readPem(config, 'mqtt.key', mqtt.keyFile),
  ]);
  return { ca, cert, key };
}

function randomSuffix(): string {
  return randomBytes(4).toString('hex');
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

/** A CONNACK refusal carries a numeric reason code; socket and TLS errors carry string codes. */
function isBrokerRefusal(error: Error): boolean {
  return typeof (error as { code?: unknown }).code === 'number';
}

function attempt(
  config: DeviceConfig,
  tls: TlsMaterial,
  clientId: string,
  timeoutMs: number,
): Promise<MqttClient> {
  const settings = tlsSettings(config);
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(settings.url, {
      ca: tls.ca,
      cert: tls.cert,
      key: tls.key,
      rejectUnauthorized: true,
      ...(settings.servername === undefined ? {} : { servername: settings.servername }),
      clientId,
      clean: true,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: timeoutMs,
      keepalive: 60,
    });
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.removeAllListeners();
      client.on('error', () => {});
      client.end(true);
      reject(error);
    };
    const timer = setTimeout(() => fail(new Error(`no CONNACK within ${timeoutMs} ms`)), timeoutMs);
    client.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.removeAllListeners('close');
      resolve(client);
    });
    client.once('error', (error) => fail(asError(error)));
    client.once('close', () =>
      fail(new Error('connection closed before CONNACK (firewall closed or TLS refused)')),
    );
  });
}

export async function connectToBroker(
  config: DeviceConfig,
  options: BrokerConnectOptions = {},
): Promise<MqttClient> {
  const deadlineMs = options.deadlineMs ?? 10_000;
  const retryDelayMs = options.retryDelayMs ?? 300;
  const attemptTimeoutMs = options.attemptTimeoutMs ?? 3_000;
  const clientId = options.clientId ?? `${config.deviceId}/${randomSuffix()}`;
  const tls = await readTlsMaterial(config);
  const started = Date.now();
  let attempts = 0;
  for (;;) {
    attempts += 1;
    const remaining = deadlineMs - (Date.now() - started);
    try {
      return await attempt(config, tls, clientId, Math.max(250, Math.min(attemptTimeoutMs, remaining)));
    } catch (error) {
      const failure = asError(error);
      options.onAttemptFailed?.(attempts, failure);
      if (isBrokerRefusal(failure)) {
        throw new BrokerConnectError(
          config.mqtt.url,
          attempts,
          `broker ${config.mqtt.url} refused device "${config.deviceId}" (${failure.message}); fix: the client ` +
            "certificate must be issued by the broker's CA with CN = the device id",
          { cause: failure },
        );
      }
      if (Date.now() - started + retryDelayMs >= deadlineMs) {
        throw new BrokerConnectError(
          config.mqtt.url,
          attempts,
          `could not connect to ${config.mqtt.url} within ${deadlineMs / 1000} s (${attempts} attempts; last error: ` +
            `${failure.message}); fix: check that the knock reached the receiver (same host/port as "blackcloud up" ` +
            'printed), that the device may open the broker port, and that both clocks agree',
          { cause: failure },
        );
      }
      await new Promise((resolve) => setTimeout(resolve, retryDelayMs));
    }
  }
}
