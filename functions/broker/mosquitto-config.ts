/**
 * The Mosquitto 2 configuration blackcloud generates, as pure text builders: one module for the cloud broker's
 * boot script (infra/host/broker-host.ts) and for the tests that run a real Mosquitto.
 *
 * Contract:
 * - `mosquittoConf`: one TLS listener (optionally bound to one address), client certificates required and
 *   verified against the CA, the certificate's common name as the MQTT username (`use_identity_as_username`),
 *   no anonymous access, and the access control: the ACL file (`aclFile`), or the dynamic-security plugin
 *   (`dynamicSecurity`: the plugin and its JSON file, which the plugin rewrites on every change). Nothing else
 *   listens, unless `plainListener` adds the plain profile's listener (docs/threat-model.md, "The plain profile"):
 *   plain MQTT, no anonymous access, passwords checked by the dynamic-security plugin (so it requires
 *   `dynamicSecurity`); only plain devices have a password there, and only while a knock's credential is live.
 *   The log goes to stderr (unless `stderrLog: false`) and to the topic `$SYS/broker/log/<type>` (`log_dest
 *   topic`, `MOSQUITTO_LOG_TYPES`): the receivers' session signal (mosquitto-session-log.ts). With the ACL file
 *   nobody is granted `$SYS/broker/log/#`; with dynamic security only the controller's role.
 * - `dynamicSecurityConfig`: the plugin's initial JSON file (its documented format: clients, roles,
 *   defaultACLAccess): the controller as the one admin client (no password: it logs in with its certificate) with
 *   `controllerRole()`, each given device as client `<id>` with `deviceRole(id)` (dynsec-policy.ts), everything
 *   else denied. `up` and the receivers keep it in step at run time (dynsec-commands.ts, dynsec-admin.ts).
 * - `mosquittoAcl`: the same policy as the embedded broker (topic-policy.ts). Mosquitto denies whatever no line
 *   grants, so the file only grants:
 *   - each device (`%u` = its certificate CN = its device id): read its own key topic `blackcloud/keys/<id>`,
 *     write its own acknowledgement topic `blackcloud/keys/<id>/ack`, read and write its own data tree
 *     `blackcloud/devices/<id>/#`. It can neither read another device's key nor write any key topic.
 *   - the controller (the receiver's privileged session): write every key topic, read every acknowledgement,
 *     read and write the device data trees.
 *   CNs never contain '/', '+' or '#' (the CAs refuse them, and Mosquitto refuses pattern matches on such
 *   usernames), so `%u` cannot widen a device's topics. Mosquitto 2.0's acl_file does not check SUBSCRIBE
 *   itself: a subscription to another device's key topic is acknowledged but nothing is ever delivered on it
 *   (every delivery is checked against the read rules).
 */
import { CONTROLLER_IDENTITY, DEVICE_TOPIC_ROOT, KEY_ACK_LEVEL, KEY_TOPIC_ROOT } from '../core/topics.ts';
import { controllerRole, DEFAULT_ACL_ACCESS, deviceRole } from './dynsec-policy.ts';

export const MOSQUITTO_TLS_FILES = Object.freeze({
  caCertificate: 'ca.crt',
  certificate: 'broker.crt',
  privateKey: 'broker.key',
});

export interface MosquittoConfOptions {
  /** TLS listener port. */
  readonly port: number;
  /** Bind only this address (e.g. 127.0.0.1 in tests). @default every address */
  readonly bindAddress?: string;
  /** Directory of ca.crt, broker.crt, broker.key. */
  readonly tlsDir: string;
  /** ACL file path (one of `aclFile` and `dynamicSecurity`). */
  readonly aclFile?: string;
  /** The dynamic-security plugin instead of an ACL file. */
  readonly dynamicSecurity?: DynamicSecurityFiles;
  /**
   * Mosquitto's `user`: whom a broker started as root runs as. Unset, Mosquitto's default (`mosquitto`), which
   * cannot read files in a private (0700) directory of another user.
   */
  readonly user?: string;
  /** The plain profile's listener (no TLS; dynsec passwords). Requires `dynamicSecurity`. @default none */
  readonly plainListener?: { readonly port: number; readonly bindAddress?: string };
  /**
   * Also log to stderr (`log_dest stderr`). Off where another file sets the destination (Debian's main
   * mosquitto.conf logs to its file; the conf.d fragment only adds the topic). @default true
   */
  readonly stderrLog?: boolean;
}

/**
 * The log lines every generated configuration writes: Mosquitto's default types (its notices carry the connect and
 * disconnect lines, mosquitto-session-log.ts), published on `$SYS/broker/log/<type>` too, which only the controller's
 * role may read (dynsec-policy.ts; docs/scaling.md, "The signal on AWS").
 */
export const MOSQUITTO_LOG_TYPES = Object.freeze(['error', 'warning', 'notice', 'information'] as const);

export interface DynamicSecurityFiles {
  /** The plugin, e.g. `debianDynsecPlugin('aarch64-linux-gnu')`. */
  readonly plugin: string;
  /** Its JSON file (written first with `dynamicSecurityConfig`; the broker must be able to rewrite it). */
  readonly configFile: string;
}

/** Where Debian's mosquitto package installs the plugin, per multiarch triplet. */
export function debianDynsecPlugin(triplet: 'x86_64-linux-gnu' | 'aarch64-linux-gnu'): string {
  return `/usr/lib/${triplet}/mosquitto_dynamic_security.so`;
}

/** mosquitto.conf text (or a conf.d fragment). */
export function mosquittoConf(options: MosquittoConfOptions): string {
  const { tlsDir, aclFile, dynamicSecurity } = options;
  if ((aclFile === undefined) === (dynamicSecurity === undefined)) {
    throw new TypeError('mosquittoConf needs exactly one of aclFile and dynamicSecurity');
  }
  const plain = options.plainListener;
  if (plain !== undefined && dynamicSecurity === undefined) {
    throw new TypeError(
      'mosquittoConf: plainListener needs dynamicSecurity (the plugin checks its passwords)',
    );
  }
  return [
    '# blackcloud broker: MQTT over TLS only, mutual authentication, per-device ACL. Generated by blackcloud.',
    // Small MQTT packets must not wait for Nagle's algorithm (a delayed ACK stalls each exchange by ~40 ms).
    'set_tcp_nodelay true',
    `listener ${options.port}${options.bindAddress === undefined ? '' : ` ${options.bindAddress}`}`,
    'protocol mqtt',
    `cafile ${tlsDir}/${MOSQUITTO_TLS_FILES.caCertificate}`,
    `certfile ${tlsDir}/${MOSQUITTO_TLS_FILES.certificate}`,
    `keyfile ${tlsDir}/${MOSQUITTO_TLS_FILES.privateKey}`,
    'require_certificate true',
    'use_identity_as_username true',
    'allow_anonymous false',
    ...(plain === undefined
      ? []
      : [
          "# The plain profile: no TLS; a plain device logs in with its knock's one-time credential (dynsec password).",
          `listener ${plain.port}${plain.bindAddress === undefined ? '' : ` ${plain.bindAddress}`}`,
          'protocol mqtt',
        ]),
    ...(options.user === undefined ? [] : [`user ${options.user}`]),
    '# The session signal: connect/disconnect notices on $SYS/broker/log/N, read only by the controller.',
    ...(options.stderrLog === false ? [] : ['log_dest stderr']),
    'log_dest topic',
    ...MOSQUITTO_LOG_TYPES.map((type) => `log_type ${type}`),
    ...(dynamicSecurity === undefined
      ? [`acl_file ${aclFile}`]
      : [`plugin ${dynamicSecurity.plugin}`, `plugin_opt_config_file ${dynamicSecurity.configFile}`]),
    '',
  ].join('\n');
}

export interface AclOptions {
  /** Common name of the controller's certificate. @default 'blackcloud-controller' */
  readonly controllerIdentity?: string;
}

/** The ACL file text (see the module contract). */
export function mosquittoAcl(options: AclOptions = {}): string {
  return [
    '# blackcloud ACL. Generated by blackcloud; %u is the client certificate common name (the device id).',
    '# The controller: publishes new SPA keys, reads acknowledgements and device data.',
    `user ${options.controllerIdentity ?? CONTROLLER_IDENTITY}`,
    `topic write ${KEY_TOPIC_ROOT}/+`,
    `topic read ${KEY_TOPIC_ROOT}/+/${KEY_ACK_LEVEL}`,
    `topic readwrite ${DEVICE_TOPIC_ROOT}/#`,
    '',
    '# Every device: reads only its own key topic, acknowledges only its own keys, uses only its own data tree.',
    `pattern read ${KEY_TOPIC_ROOT}/%u`,
    `pattern write ${KEY_TOPIC_ROOT}/%u/${KEY_ACK_LEVEL}`,
    `pattern readwrite ${DEVICE_TOPIC_ROOT}/%u/#`,
    '',
  ].join('\n');
}

export interface DynamicSecurityConfigOptions {
  /** @default 'blackcloud-controller' */
  readonly controllerIdentity?: string;
  /** Devices known at the start (a disabled one gets its client, disabled and without its role). */
  readonly devices?: readonly { readonly id: string; readonly enabled: boolean }[];
}

/** The dynamic-security plugin's initial JSON file (see the module contract). */
export function dynamicSecurityConfig(options: DynamicSecurityConfigOptions = {}): string {
  const controller = options.controllerIdentity ?? CONTROLLER_IDENTITY;
  const devices = (options.devices ?? []).filter((device) => device.id !== controller);
  const roles = [controllerRole(controller), ...devices.map((device) => deviceRole(device.id))];
  const clients = [
    { username: controller, textname: 'blackcloud controller', roles: [{ rolename: controller }] },
    ...devices.map((device) => ({
      username: device.id,
      ...(device.enabled ? { roles: [{ rolename: deviceRole(device.id).rolename }] } : { disabled: true }),
    })),
  ];
  return `${JSON.stringify({ clients, roles, groups: [], defaultACLAccess: DEFAULT_ACL_ACCESS }, null, 2)}\n`;
}
