/**
 * The start of `pub` and `sub`: load the device, knock (unless --no-knock), then connect to the broker over
 * mutual TLS with retries, and resolve the topic inside the device's namespace.
 */
import type { MqttClient } from 'mqtt';
import { connectToBroker } from '../../device-client/index.ts';
import type { DeviceConfig } from '../../functions/core/device-config.ts';
import { deviceTopicPrefix, resolveDeviceTopic } from '../../functions/core/topics.ts';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../usage-error.ts';
import type { DeviceFlags } from './device-options.ts';
import { loadDeviceFromFlags } from './device-options.ts';
import { describeKnock, knockAs } from './knock.ts';

export interface SessionFlags extends DeviceFlags {
  readonly topic?: string;
  readonly knock?: boolean;
  readonly timeout?: string;
  readonly verbose?: boolean;
  readonly json?: boolean;
}

export interface Session {
  readonly config: DeviceConfig;
  readonly client: MqttClient;
  readonly topic: string;
}

function timeoutMs(text: string | undefined): number {
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

export async function openSession(flags: SessionFlags, io: CliIo, subscription: boolean): Promise<Session> {
  const config = await loadDeviceFromFlags(flags);
  const topic = topicFor(config, flags.topic, subscription);
  const deadlineMs = timeoutMs(flags.timeout);
  if (flags.knock !== false) {
    const knocked = await knockAs(config, flags);
    if (flags.verbose) io.err(describeKnock(knocked));
  }
  const client = await connectToBroker(config, {
    deadlineMs,
    ...(flags.verbose
      ? {
          onAttemptFailed: (n: number, error: Error) =>
            io.err(`connect attempt ${n} failed: ${error.message}`),
        }
      : {}),
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
