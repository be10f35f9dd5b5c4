/**
 * MQTT topics a device may use. The broker lets a device (client certificate CN = device id) publish and
 * subscribe only under `blackcloud/devices/<id>/`. A relative topic (`telemetry`) is placed there; an absolute
 * one must already be there.
 *
 * Contract: `resolveDeviceTopic` never throws; it returns the full topic or a reason. Wildcards `+` and `#` are
 * allowed only when `allowWildcards` (subscriptions) and only as whole levels. Pure.
 */
import { ok, type Result, reject } from '../spa/result.ts';

export const DEVICE_TOPIC_ROOT = 'blackcloud/devices';

export function deviceTopicPrefix(deviceId: string): string {
  return `${DEVICE_TOPIC_ROOT}/${deviceId}/`;
}

export type TopicReason = 'empty' | 'outside-device-namespace' | 'bad-wildcard';

export function resolveDeviceTopic(
  deviceId: string,
  topic: string,
  allowWildcards: boolean,
): Result<string, TopicReason> {
  if (topic === '' || topic === '/') return reject('empty');
  const prefix = deviceTopicPrefix(deviceId);
  let full: string;
  if (topic.startsWith(`${DEVICE_TOPIC_ROOT}/`) || topic.startsWith('/')) {
    full = topic.startsWith('/') ? topic.slice(1) : topic;
    if (!full.startsWith(prefix)) return reject('outside-device-namespace');
  } else {
    full = prefix + topic;
  }
  if (full.length === prefix.length) return reject('empty');
  const levels = full.split('/');
  for (const [i, level] of levels.entries()) {
    const hasWildcard = level.includes('+') || level.includes('#');
    if (!hasWildcard) continue;
    if (!allowWildcards) return reject('bad-wildcard');
    if (level.length !== 1) return reject('bad-wildcard');
    if (level === '#' && i !== levels.length - 1) return reject('bad-wildcard');
  }
  return ok(full);
}
