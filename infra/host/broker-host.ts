/**
 * What the broker instance (Debian 12 arm64) runs at first boot, as pure text builders: the Mosquitto 2
 * configuration (TLS on the broker port, client certificates required, the certificate's common name as the
 * username, no anonymous access, the dynamic-security plugin of Debian's mosquitto package), the plugin's initial
 * JSON (the controller as its one admin client; the receivers enrol, disable and remove devices at run time,
 * docs/fleet.md), and the boot script that installs Mosquitto, fetches the TLS material from Secrets Manager and
 * starts the broker. The plugin's file is written only when absent: the plugin keeps its state there.
 *
 * TLS material never passes through the template, its parameters or the user data: the script only knows the
 * secret's NAME; the instance role may read that one secret. The secret is a JSON object created by the operator
 * (docs/deploy.md): { "caCertificate": PEM, "certificate": PEM, "privateKey": PEM, "crl"?: PEM }.
 * Values may contain CloudFormation tokens (they are resolved by CloudFormation, before the instance sees them).
 */

import {
  debianDynsecPlugin,
  dynamicSecurityConfig,
  MOSQUITTO_TLS_FILES,
  mosquittoConf as sharedMosquittoConf,
} from '../../functions/broker/mosquitto-config.ts';

export const BROKER_TLS_DIR = '/etc/mosquitto/blackcloud';
export const BROKER_CONF_FILE = '/etc/mosquitto/conf.d/blackcloud.conf';
/** Debian 12's mosquitto package (2.0.11) ships the plugin; the broker host is arm64 (infra/constructs/broker.ts). */
export const BROKER_DYNSEC_PLUGIN = debianDynsecPlugin('aarch64-linux-gnu');
/** The plugin's state, rewritten by the broker on every change: in Mosquitto's own data directory. */
export const BROKER_DYNSEC_FILE = '/var/lib/mosquitto/dynamic-security.json';

/** Topic roots and the Mosquitto text builders: one module shared with the tests (functions/broker/). */
export { DEVICE_TOPIC_ROOT, KEY_TOPIC_ROOT } from '../../functions/core/topics.ts';

/** JSON fields of the broker TLS secret and the files they become. */
export const BROKER_SECRET_FILES = MOSQUITTO_TLS_FILES;

/** mosquitto.conf fragment (included from Debian's /etc/mosquitto/mosquitto.conf via conf.d). */
export function mosquittoConf(options: {
  readonly port: number;
  /** The plain profile's listener port (no TLS; dynsec passwords). @default none */
  readonly plainPort?: number;
  readonly tlsDir?: string;
  readonly plugin?: string;
  readonly dynsecFile?: string;
}): string {
  return sharedMosquittoConf({
    port: options.port,
    tlsDir: options.tlsDir ?? BROKER_TLS_DIR,
    dynamicSecurity: {
      plugin: options.plugin ?? BROKER_DYNSEC_PLUGIN,
      configFile: options.dynsecFile ?? BROKER_DYNSEC_FILE,
    },
    ...(options.plainPort === undefined ? {} : { plainListener: { port: options.plainPort } }),
    // Debian's main mosquitto.conf already logs to /var/log/mosquitto/mosquitto.log; the fragment adds the topic.
    stderrLog: false,
  });
}

export interface BrokerBootOptions {
  readonly port: number;
  /** The plain listener's port (docs/deploy.md, "Devices without TLS"). @default none: TLS only */
  readonly plainPort?: number;
  readonly controllerIdentity: string;
  /** Name of the Secrets Manager secret holding the broker's TLS material. */
  readonly tlsSecretName: string;
  readonly region: string;
}

export const BROKER_TLS_FETCH_SCRIPT = '/usr/local/libexec/blackcloud-broker-tls';
export const BROKER_TLS_SERVICE = 'blackcloud-broker-tls';
/**
 * Mosquitto's descriptor limit on the broker host: one descriptor per session, and systemd's default of 1,024 held
 * 1,015 sessions in bench/broker-sessions (docs/scaling.md, "The broker tier"). Far above any one broker's fleet.
 */
export const BROKER_FILE_LIMIT = 1_048_576;
const CRL_CONF_FILE = '/etc/mosquitto/conf.d/blackcloud-crl.conf';

/** Python (Debian's python3) that writes the secret's PEM fields into files 0640 (group set by the caller). */
const WRITE_TLS_FILES = `
import json, os, sys
source, target = sys.argv[1], sys.argv[2]
with open(source) as handle:
    material = json.load(handle)
files = ${JSON.stringify(BROKER_SECRET_FILES)}
if isinstance(material.get('crl'), str):
    files['crl'] = 'crl.pem'
elif os.path.exists(os.path.join(target, 'crl.pem')):
    os.remove(os.path.join(target, 'crl.pem'))
for field, name in files.items():
    value = material.get(field)
    if not isinstance(value, str) or '-----BEGIN' not in value:
        sys.exit('blackcloud: secret field %s is missing or not PEM' % field)
    path = os.path.join(target, name)
    with open(path, 'w') as out:
        out.write(value if value.endswith('\\n') else value + '\\n')
    os.chmod(path, 0o640)
`.trim();

/**
 * The script run at every boot before Mosquitto (a oneshot unit): fetch the TLS secret (waiting until the operator
 * has created it), write the PEM files, and include the CRL when the secret has one. Rotating the broker
 * certificate or publishing a new CRL = update the secret, then reboot the broker.
 */
export function brokerTlsFetchScript(options: BrokerBootOptions): string {
  return [
    '#!/bin/bash',
    '# blackcloud: fetch the broker TLS material from Secrets Manager (by name; only this instance may read it).',
    'set -euo pipefail',
    'umask 077',
    `until aws secretsmanager get-secret-value --region '${options.region}' --secret-id '${options.tlsSecretName}' --query SecretString --output text > /run/blackcloud-tls.json; do`,
    `  echo "blackcloud: waiting for secret ${options.tlsSecretName} (docs/deploy.md, step 2)"`,
    '  sleep 30',
    'done',
    `python3 - /run/blackcloud-tls.json ${BROKER_TLS_DIR} <<'PYTHON'`,
    WRITE_TLS_FILES,
    'PYTHON',
    'rm -f /run/blackcloud-tls.json',
    `chown root:mosquitto ${BROKER_TLS_DIR}/*.crt ${BROKER_TLS_DIR}/*.key ${BROKER_TLS_DIR}/*.pem 2>/dev/null || true`,
    `if [ -f ${BROKER_TLS_DIR}/crl.pem ]; then echo 'crlfile ${BROKER_TLS_DIR}/crl.pem' > ${CRL_CONF_FILE}; else rm -f ${CRL_CONF_FILE}; fi`,
    '',
  ].join('\n');
}

/** The oneshot unit running the fetch script before Mosquitto at every boot. */
export function brokerTlsUnit(): string {
  return [
    '[Unit]',
    'Description=blackcloud: broker TLS material from Secrets Manager',
    'Wants=network-online.target',
    'After=network-online.target',
    'Before=mosquitto.service',
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=${BROKER_TLS_FETCH_SCRIPT}`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** The boot script's commands (UserData adds the shebang). */
export function brokerBootCommands(options: BrokerBootOptions): string[] {
  return [
    'set -euo pipefail',
    'export DEBIAN_FRONTEND=noninteractive',
    '# 1. Mosquitto 2 (Debian 12 ships 2.0.x), the AWS CLI to read the TLS secret.',
    'for attempt in $(seq 1 30); do',
    '  apt-get update && apt-get install -y --no-install-recommends mosquitto awscli python3 ca-certificates && break',
    '  sleep 10',
    'done',
    'command -v mosquitto',
    'systemctl stop mosquitto || true',
    '# 2. TLS material: fetched by name from Secrets Manager at every boot, before Mosquitto starts.',
    `install -d -o root -g mosquitto -m 0750 ${BROKER_TLS_DIR}`,
    'install -d -m 0755 /usr/local/libexec',
    `cat > ${BROKER_TLS_FETCH_SCRIPT} <<'SCRIPT'`,
    brokerTlsFetchScript(options).trimEnd(),
    'SCRIPT',
    `chmod 0700 ${BROKER_TLS_FETCH_SCRIPT}`,
    `cat > /etc/systemd/system/${BROKER_TLS_SERVICE}.service <<'UNIT'`,
    brokerTlsUnit().trimEnd(),
    'UNIT',
    '# 3. Configuration and the dynamic-security plugin (its state file only when absent: the plugin keeps it).',
    `test -f ${BROKER_DYNSEC_PLUGIN} || { echo 'blackcloud: ${BROKER_DYNSEC_PLUGIN} missing from the mosquitto package' >&2; exit 1; }`,
    `cat > ${BROKER_CONF_FILE} <<'CONF'`,
    mosquittoConf({
      port: options.port,
      ...(options.plainPort === undefined ? {} : { plainPort: options.plainPort }),
    }).trimEnd(),
    'CONF',
    'install -d -o mosquitto -g mosquitto -m 0700 /var/lib/mosquitto',
    `if [ ! -f ${BROKER_DYNSEC_FILE} ]; then`,
    `cat > ${BROKER_DYNSEC_FILE} <<'DYNSEC'`,
    dynamicSecurityConfig({ controllerIdentity: options.controllerIdentity }).trimEnd(),
    'DYNSEC',
    'fi',
    `chown mosquitto:mosquitto ${BROKER_DYNSEC_FILE} && chmod 0600 ${BROKER_DYNSEC_FILE}`,
    '# 4. Mosquitto needs the TLS unit, restarts on failure, and may hold a descriptor per device session.',
    'mkdir -p /etc/systemd/system/mosquitto.service.d',
    `printf '[Unit]\\nRequires=${BROKER_TLS_SERVICE}.service\\nAfter=${BROKER_TLS_SERVICE}.service\\n\\n[Service]\\nRestart=on-failure\\nRestartSec=2\\nLimitNOFILE=${BROKER_FILE_LIMIT}\\n' > /etc/systemd/system/mosquitto.service.d/blackcloud.conf`,
    'systemctl daemon-reload',
    `systemctl enable ${BROKER_TLS_SERVICE}.service mosquitto.service`,
    `systemctl start ${BROKER_TLS_SERVICE}.service`,
    'systemctl restart mosquitto',
  ];
}
