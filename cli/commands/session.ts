/**
 * The start of `pub` and `sub`: load the device, resolve the topic inside the device's namespace, then
 * `connectDevice` (device-client/connect-device.ts): knock (unless --no-knock) before every connection attempt,
 * the first and each reconnect, over mutual TLS, with full-jitter backoff between attempts. `--timeout` bounds
 * the first connection; `giveUpAfterMs` bounds each later outage; the operator's refusal (device disabled or
 * removed) ends the session at once (`client.device.closed()` resolves to the reason).
 */
import type { MqttClient } from 'mqtt';
import {
  connectDevice,
  type DeviceClient,
  type DeviceEvent,
  formatAccessSpec,
} from '../../device-client/index.ts';
import type { DeviceConfig } from '../../functions/core/device-config.ts';
import { deviceTopicPrefix, resolveDeviceTopic } from '../../functions/core/topics.ts';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../usage-error.ts';
import type { DeviceFlags } from './device-options.ts';
import { knockTarget, loadDeviceFromFlags } from './device-options.ts';
import { describeKnock } from './knock.ts';

export interface SessionFlags extends DeviceFlags {
  readonly topic?: string;
  readonly knock?: boolean;
  readonly timeout?: string;
  readonly verbose?: boolean;
  readonly json?: boolean;
}

export interface Session {
  readonly config: DeviceConfig;
  readonly client: DeviceClient;
  readonly topic: string;
}

export interface SessionOptions {
  /** Receive and store rotated SPA keys (`sub`). */
  readonly keyRotation: boolean;
  /** Give up after this long without a session once connected, ms. @default none (keep trying) */
  readonly giveUpAfterMs?: number;
  /** Every session event (after the CLI's own --verbose lines). */
  readonly onEvent?: (event: DeviceEvent) => void;
}

/** `--timeout <seconds>`: (0, 300], default 10. */
export function timeoutMs(text: string | undefined): number {
  if (text === undefined) return 10_000;
  const seconds = Number(text);
  if (!/^[0-9]+(\.[0-9]+)?$/.test(text) || seconds <= 0 || seconds > 300) {
    throw new UsageError(
      '--timeout',
      `must be a number of seconds in (0, 300]; received ${JSON.stringify(text)}`,
    );
  }
  return Math.round(seconds * 1000);
}

export function topicFor(config: DeviceConfig, topic: string | undefined, subscription: boolean): string {
  if (topic === undefined) throw new UsageError('-t, --topic', 'is required, e.g. -t telemetry');
  const resolved = resolveDeviceTopic(config.deviceId, topic, subscription);
  if (resolved.ok) return resolved.value;
  const reasons: Record<typeof resolved.reason, string> = {
    empty: 'names no topic',
    'outside-device-namespace': `is outside this device's namespace ${deviceTopicPrefix(config.deviceId)}`,
    'bad-wildcard': subscription
      ? 'uses + or # inside a level (they must be whole levels, # only last)'
      : 'contains + or #, which only subscriptions may use',
  };
  throw new UsageError(
    '-t, --topic',
    `${JSON.stringify(topic)} ${reasons[resolved.reason]}; fix: use a relative topic such as "telemetry" ` +
      `(it becomes ${deviceTopicPrefix(config.deviceId)}telemetry)`,
  );
}

export async function openSession(
  flags: SessionFlags,
  io: CliIo,
  subscription: boolean,
  options: SessionOptions = { keyRotation: false },
): Promise<Session> {
  const config = await loadDeviceFromFlags(flags);
  const topic = topicFor(config, flags.topic, subscription);
  const deadlineMs = timeoutMs(flags.timeout);
  const target = knockTarget(config, flags);
  const verbose = (event: DeviceEvent): void => {
    if (event.type === 'knock') {
      io.err(
        describeKnock({
          deviceId: config.deviceId,
          format: event.format,
          server: event.server,
          port: event.port,
          bytes: event.bytes,
          access: config.access.map(formatAccessSpec),
        }),
      );
    } else if (event.type === 'reconnect-scheduled') {
      io.err(`connect attempt failed or session lost; next attempt in ${event.delayMs} ms`);
    } else if (event.type === 'error') {
      io.err(`connect attempt: ${event.error.message}`);
    }
  };
  const client = await connectDevice(config.file, {
    knock: flags.knock !== false,
    server: { host: target.host, port: target.port },
    format: target.format,
    firstConnectDeadlineMs: deadlineMs,
    // Short attempts: --timeout bounds the first session, and the firewall may take a moment to open.
    attemptTimeoutMs: Math.min(3000, deadlineMs),
    keyRotation: options.keyRotation,
    ...(options.giveUpAfterMs === undefined ? {} : { giveUpAfterMs: options.giveUpAfterMs }),
    onEvent: (event) => {
      if (flags.verbose) verbose(event);
      options.onEvent?.(event);
    },
  });
  return { config, client, topic };
}

/** Ends the MQTT session cleanly (DISCONNECT), or forcibly after a second. */
export function closeSession(client: MqttClient): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => client.end(true, {}, () => resolve()), 1000);
    client.end(false, {}, () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
