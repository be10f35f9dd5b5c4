/**
 * The MQTT topic tree, defined once for the broker's policy (functions/broker/topic-policy.ts), the controller and
 * the device library. A device (client certificate CN = device id) publishes and subscribes only under
 * `blackcloud/devices/<id>/`; its keys travel on `blackcloud/keys/<id>` and `blackcloud/keys/<id>/ack`
 * (docs/key-lifecycle.md). A relative topic (`telemetry`) is placed under the device's tree; an absolute one must
 * already be there.
 *
 * Contract: `resolveDeviceTopic` never throws; it returns the full topic or a reason. Wildcards `+` and `#` are
 * allowed only when `allowWildcards` (subscriptions) and only as whole levels. Pure.
 */
import { ok, type Result, reject } from '../../spa/result.ts';
import { DEVICE_ID_PATTERN } from './device-id.ts';

export const DEVICE_TOPIC_ROOT = 'blackcloud/devices';
export const CONTROLLER_IDENTITY = 'blackcloud-controller';
/** Root of the key-rotation topics: `blackcloud/keys/<id>` (controller → device), `.../ack` (device → controller). */
export const KEY_TOPIC_ROOT = 'blackcloud/keys';
export const KEY_ACK_LEVEL = 'ack';

/** The topic under which a device publishes and receives: `blackcloud/devices/<identity>`. */
export function deviceTopic(identity: string, ...levels: string[]): string {
  return [DEVICE_TOPIC_ROOT, identity, ...levels].join('/');
}

/** Where the controller publishes a device's new SPA key; only that device may read it. */
export function keyTopic(identity: string): string {
  return `${KEY_TOPIC_ROOT}/${identity}`;
}

/** Where a device acknowledges a new key; only that device may publish there, only the controller reads it. */
export function keyAckTopic(identity: string): string {
  return `${KEY_TOPIC_ROOT}/${identity}/${KEY_ACK_LEVEL}`;
}

/** The device identity a key acknowledgement topic belongs to, or undefined for any other topic. */
export function identityOfKeyAckTopic(topic: string): string | undefined {
  const levels = topic.split('/');
  if (levels.length !== 4 || `${levels[0]}/${levels[1]}` !== KEY_TOPIC_ROOT || levels[3] !== KEY_ACK_LEVEL) {
    return undefined;
  }
  return isValidIdentity(levels[2]) ? levels[2] : undefined;
}

export function isValidIdentity(identity: unknown): identity is string {
  return typeof identity === 'string' && DEVICE_ID_PATTERN.test(identity);
}

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
