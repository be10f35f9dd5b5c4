/**
 * Who may publish and subscribe where on the embedded broker. Pure: no sockets, no aedes.
 *
 * The identity is the CN of the client certificate (see embedded-broker.ts).
 * - A device identity `D` may publish to, subscribe to and receive only `blackcloud/devices/D` and topics below
 *   it (`blackcloud/devices/D/#`, its data). Wildcards are allowed only after that literal prefix, so they cannot
 *   reach another device's topics.
 * - Key rotation (docs/key-lifecycle.md) lives in a separate tree that devices cannot write into: device `D` may
 *   subscribe to and receive exactly its key topic `blackcloud/keys/D` (no wildcard filter), and publish exactly
 *   its acknowledgement topic `blackcloud/keys/D/ack`. The same rules as the Mosquitto ACL (mosquitto-config.ts).
 * - The controller identity (`blackcloud-controller`) may subscribe to anything and publish anywhere except the
 *   broker's reserved `$SYS/` tree.
 * - Identities are 1..64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit: never `/`, `+`, `#`,
 *   `$` or NUL, so an identity can never widen its own topic prefix.
 */
import { CONTROLLER_IDENTITY, deviceTopic, isValidIdentity, keyAckTopic, keyTopic } from '../core/topics.ts';

const SYS_PREFIX = '$SYS/';

function withinDeviceTree(identity: string, topic: string): boolean {
  const own = deviceTopic(identity);
  return topic === own || topic.startsWith(`${own}/`);
}

/** A PUBLISH topic name carries no wildcards and no NUL ([MQTT-3.3.2-2], [MQTT-1.5.3-2]). */
function isTopicName(topic: string): boolean {
  return topic.length > 0 && !topic.includes('+') && !topic.includes('#') && !topic.includes('\u0000');
}

export function mayPublish(identity: string, topic: string): boolean {
  if (!isValidIdentity(identity) || !isTopicName(topic)) return false;
  if (identity === CONTROLLER_IDENTITY) return !topic.startsWith(SYS_PREFIX);
  return withinDeviceTree(identity, topic) || topic === keyAckTopic(identity);
}

export function maySubscribe(identity: string, filter: string): boolean {
  if (!isValidIdentity(identity) || filter.length === 0 || filter.includes('\u0000')) return false;
  if (identity === CONTROLLER_IDENTITY) return true;
  return withinDeviceTree(identity, filter) || filter === keyTopic(identity);
}

/** Whether a message on `topic` may be delivered to `identity` (defence in depth behind `maySubscribe`). */
export function mayReceive(identity: string, topic: string): boolean {
  if (!isValidIdentity(identity)) return false;
  if (identity === CONTROLLER_IDENTITY) return true;
  return withinDeviceTree(identity, topic) || topic === keyTopic(identity);
}
