/**
 * The broker policy of docs/key-lifecycle.md expressed as Mosquitto dynamic-security roles (the plugin's ACL
 * types, docs/fleet.md "Mosquitto with dynamic security"). Pure; the topic names come from functions/core/topics.ts,
 * so this is the same policy as the embedded broker's (topic-policy.ts) and the ACL file's (mosquitto-config.ts).
 *
 * Contract:
 * - `deviceRole(id)`: the role of device `id`, named `device:<id>` (':' is never in a device id, so no device's
 *   role can be named like another's or like the controller's). It allows exactly: publish, subscribe (pattern)
 *   and receive in its data tree `blackcloud/devices/<id>/#` (which covers `blackcloud/devices/<id>` itself);
 *   subscribe (literal) and receive its key topic `blackcloud/keys/<id>`; publish its acknowledgement topic
 *   `blackcloud/keys/<id>/ack`. Nothing else: `DEFAULT_ACL_ACCESS` denies what no role allows.
 * - `controllerRole()`: the receiver/controller (certificate CN `blackcloud-controller`): the dynamic-security
 *   control topics (`$CONTROL/dynamic-security/#`: send commands, read responses), publish every key topic,
 *   subscribe to and read every acknowledgement, publish, subscribe to and read the device data trees, subscribe to
 *   and read the broker's log topics `$SYS/broker/log/#` (the session signal, mosquitto-session-log.ts). No device
 *   role grants them, so a device's SUBSCRIBE there is refused.
 * - Throws `TypeError` for an id that is not a valid identity (it would widen the topics).
 */
import {
  CONTROLLER_IDENTITY,
  DEVICE_TOPIC_ROOT,
  deviceTopic,
  isValidIdentity,
  KEY_ACK_LEVEL,
  KEY_TOPIC_ROOT,
  keyAckTopic,
  keyTopic,
} from '../core/topics.ts';
import { MOSQUITTO_LOG_TOPICS } from './mosquitto-session-log.ts';

export type DynsecAclType =
  | 'publishClientSend'
  | 'publishClientReceive'
  | 'subscribeLiteral'
  | 'subscribePattern'
  | 'unsubscribeLiteral'
  | 'unsubscribePattern';

export interface DynsecAcl {
  readonly acltype: DynsecAclType;
  readonly topic: string;
  readonly allow: boolean;
}

export interface DynsecRole {
  readonly rolename: string;
  readonly acls: readonly DynsecAcl[];
}

/** The plugin's control topic prefix (commands on `.../v1`, answers on `.../v1/response`). */
export const DYNSEC_TOPIC_ROOT = '$CONTROL/dynamic-security';

/** What no role grants: denied, except unsubscribing (harmless). */
export const DEFAULT_ACL_ACCESS = Object.freeze({
  publishClientSend: false,
  publishClientReceive: false,
  subscribe: false,
  unsubscribe: true,
});

const DEVICE_ROLE_PREFIX = 'device:';

const allow = (acltype: DynsecAclType, topic: string): DynsecAcl => ({ acltype, topic, allow: true });

export function deviceRoleName(deviceId: string): string {
  return `${DEVICE_ROLE_PREFIX}${deviceId}`;
}

/** The device id a role name belongs to, or undefined (the controller's role, or any other). */
export function deviceOfRoleName(rolename: string): string | undefined {
  if (!rolename.startsWith(DEVICE_ROLE_PREFIX)) return undefined;
  const id = rolename.slice(DEVICE_ROLE_PREFIX.length);
  return isValidIdentity(id) ? id : undefined;
}

export function deviceRole(deviceId: string): DynsecRole {
  if (!isValidIdentity(deviceId) || deviceId === CONTROLLER_IDENTITY) {
    throw new TypeError(`not a device id: ${JSON.stringify(deviceId)}`);
  }
  const tree = deviceTopic(deviceId, '#');
  return {
    rolename: deviceRoleName(deviceId),
    acls: [
      allow('publishClientSend', tree),
      allow('subscribePattern', tree),
      allow('publishClientReceive', tree),
      allow('subscribeLiteral', keyTopic(deviceId)),
      allow('publishClientReceive', keyTopic(deviceId)),
      allow('publishClientSend', keyAckTopic(deviceId)),
    ],
  };
}

export function controllerRole(controllerIdentity: string = CONTROLLER_IDENTITY): DynsecRole {
  const control = `${DYNSEC_TOPIC_ROOT}/#`;
  const acks = `${KEY_TOPIC_ROOT}/+/${KEY_ACK_LEVEL}`;
  const trees = `${DEVICE_TOPIC_ROOT}/#`;
  return {
    rolename: controllerIdentity,
    acls: [
      allow('publishClientSend', control),
      allow('subscribePattern', control),
      allow('publishClientReceive', control),
      allow('publishClientSend', `${KEY_TOPIC_ROOT}/+`),
      allow('subscribePattern', acks),
      allow('publishClientReceive', acks),
      allow('publishClientSend', trees),
      allow('subscribePattern', trees),
      allow('publishClientReceive', trees),
      ...controllerLogAcls(),
    ],
  };
}

/** The controller's ACLs on the broker's log (the session signal); also added to a role that predates them. */
export function controllerLogAcls(): DynsecAcl[] {
  return [
    allow('subscribePattern', MOSQUITTO_LOG_TOPICS),
    allow('publishClientReceive', MOSQUITTO_LOG_TOPICS),
  ];
}
