/**
 * What the receiver instance (Amazon Linux 2023 arm64) runs at first boot, as pure text builders:
 * - Node 24 (`nodejs24`, binary `/usr/bin/node-24`), the CloudWatch agent and logrotate from the distribution;
 * - the bundled receiver (one ES module file, a CDK asset) in /opt/blackcloud/receiver;
 * - its configuration as an environment file (names and addresses only: no secrets);
 * - the controller's client certificate and key from Secrets Manager (optional: without it the receiver runs,
 *   key rotation cannot reach the broker), files 0640 root:blackcloud;
 * - a hardened systemd unit: an unprivileged system user, no capabilities (the SPA port is above 1023; below it
 *   only CAP_NET_BIND_SERVICE is added), read-only system, restart on failure; stdout (JSON lines) appended to
 *   a log file that the CloudWatch agent ships to the audit log group;
 * - a heartbeat timer writing one JSON line a minute while the receiver service is active (the "receiver silent"
 *   alarm watches it);
 * - the kernel pre-filter of the SPA port (functions/local/prefilter-ruleset.ts, rendered here at synth time for
 *   the inet input hook: the receiver binds the wildcard address): installed by the unit's `ExecStartPre=+nft`
 *   and removed by its `ExecStopPost=+nft` (the `+` runs only those two lines as root; the receiver itself keeps
 *   no capability). Both are `-`: without nftables the receiver runs as before;
 * - a root timer that reads the pre-filter's counters once a minute (`nft -j`) and appends their increase as one
 *   JSON line (`receiver.prefilter`) to a log the CloudWatch agent ships to the audit log group, where a metric
 *   filter makes `PrefilterDropped` of it (infra/constructs/audit.ts). Why a timer and not the receiver: reading
 *   nftables needs CAP_NET_ADMIN, and a helper the receiver could call would be one more privileged surface; the
 *   timer has no input at all (docs/operations-aws.md, "Kernel pre-filter").
 * Values may contain CloudFormation tokens, resolved before the instance sees them.
 */
import { gzipSync } from 'node:zlib';
import { deletePrefilterText, prefilterTableText } from '../../functions/local/prefilter-ruleset.ts';

export const RECEIVER_USER = 'blackcloud';
export const RECEIVER_DIR = '/opt/blackcloud/receiver';
export const RECEIVER_FILE = `${RECEIVER_DIR}/receiver.mjs`;
export const RECEIVER_ENV_FILE = '/etc/blackcloud/receiver.env';
export const CONTROLLER_TLS_DIR = '/etc/blackcloud/controller';
export const RECEIVER_LOG_DIR = '/var/log/blackcloud';
export const RECEIVER_LOG_FILE = `${RECEIVER_LOG_DIR}/receiver.log`;
export const HEARTBEAT_LOG_FILE = `${RECEIVER_LOG_DIR}/heartbeat.log`;
export const RECEIVER_SERVICE = 'blackcloud-receiver';
export const NODE_BINARY = '/usr/bin/node-24';
export const CLOUDWATCH_AGENT_CONFIG = '/opt/aws/amazon-cloudwatch-agent/etc/blackcloud.json';
/** The heartbeat line's `type`, matched by the audit's metric filter. */
export const HEARTBEAT_EVENT_TYPE = 'receiver.heartbeat';

/** The pre-filter's nftables table on the receiver host, and its files (root-owned, read by nft only). */
export const PREFILTER_TABLE = 'blackcloud_spa';
export const PREFILTER_RULES_FILE = '/etc/blackcloud/prefilter.nft';
export const PREFILTER_REMOVE_FILE = '/etc/blackcloud/prefilter-remove.nft';
export const PREFILTER_LOG_FILE = `${RECEIVER_LOG_DIR}/prefilter.log`;
export const PREFILTER_COUNTS_SCRIPT = '/usr/local/libexec/blackcloud-prefilter-counts';
/** The pre-filter counts line's `type`, matched by the audit's metric filter. */
export const PREFILTER_EVENT_TYPE = 'receiver.prefilter';
const NFT_BINARY = '/usr/sbin/nft';

/** The pre-filter table for the receiver's port (inet input: the receiver binds 0.0.0.0), and its removal (safe when absent). */
export function prefilterFiles(options: { readonly spaPort: number }): { rules: string; remove: string } {
  return {
    rules: prefilterTableText({
      table: PREFILTER_TABLE,
      port: options.spaPort,
      hook: { kind: 'inet-input' },
    }),
    remove: deletePrefilterText(PREFILTER_TABLE),
  };
}

/** JSON fields of the controller TLS secret and the files they become. */
export const CONTROLLER_SECRET_FILES = Object.freeze({
  caCertificate: 'ca.crt',
  certificate: 'controller.crt',
  privateKey: 'controller.key',
});

const ENV_NAME = /^[A-Z][A-Z0-9_]*$/;

/** An environment file: one NAME=value per line, sorted. Values are names, numbers, ARNs and URLs. */
export function environmentFile(environment: Readonly<Record<string, string>>): string {
  return `${Object.keys(environment)
    .sort()
    .map((name) => {
      if (!ENV_NAME.test(name)) throw new Error(`blackcloud: invalid environment variable name ${name}`);
      return `${name}=${environment[name]}`;
    })
    .join('\n')}\n`;
}

/** The systemd unit of the receiver. */
export function receiverUnit(options: { readonly spaPort: number }): string {
  const privilegedPort = options.spaPort < 1024;
  return [
    '[Unit]',
    'Description=blackcloud SPA receiver (never answers on the SPA port)',
    `Wants=network-online.target ${CONTROLLER_TLS_SERVICE}.service`,
    `After=network-online.target ${CONTROLLER_TLS_SERVICE}.service`,
    '',
    '[Service]',
    'Type=simple',
    `User=${RECEIVER_USER}`,
    `Group=${RECEIVER_USER}`,
    `EnvironmentFile=${RECEIVER_ENV_FILE}`,
    // '+': only these two lines run as root (nft needs CAP_NET_ADMIN); '-': without nftables the receiver runs.
    `ExecStartPre=-+${NFT_BINARY} -f ${PREFILTER_RULES_FILE}`,
    `ExecStart=${NODE_BINARY} ${RECEIVER_FILE}`,
    `ExecStopPost=-+${NFT_BINARY} -f ${PREFILTER_REMOVE_FILE}`,
    'Restart=on-failure',
    'RestartSec=2',
    `StandardOutput=append:${RECEIVER_LOG_FILE}`,
    'StandardError=journal',
    'StateDirectory=blackcloud',
    'UMask=0077',
    privilegedPort ? 'AmbientCapabilities=CAP_NET_BIND_SERVICE' : 'AmbientCapabilities=',
    privilegedPort ? 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' : 'CapabilityBoundingSet=',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectKernelLogs=yes',
    'ProtectControlGroups=yes',
    'ProtectClock=yes',
    'ProtectHostname=yes',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK',
    'RestrictNamespaces=yes',
    'RestrictRealtime=yes',
    'RestrictSUIDSGID=yes',
    'LockPersonality=yes',
    'SystemCallArchitectures=native',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** The heartbeat: a oneshot service run by a one-minute timer. `logFile` is for tests. */
export function heartbeatUnits(logFile: string = HEARTBEAT_LOG_FILE): {
  service: string;
  timer: string;
  script: string;
} {
  const script = [
    '#!/bin/sh',
    `# Writes one ${HEARTBEAT_EVENT_TYPE} line while ${RECEIVER_SERVICE} is active (the "receiver silent" alarm).`,
    `systemctl is-active --quiet ${RECEIVER_SERVICE} || exit 0`,
    `printf '{"type":"${HEARTBEAT_EVENT_TYPE}","time":%s000}\\n' "$(date +%s)" >> ${logFile}`,
    '',
  ].join('\n');
  const service = [
    '[Unit]',
    'Description=blackcloud receiver heartbeat',
    '',
    '[Service]',
    'Type=oneshot',
    'ExecStart=/usr/local/libexec/blackcloud-heartbeat',
    '',
  ].join('\n');
  const timer = everyMinuteTimer('blackcloud receiver heartbeat, every minute');
  return { service, timer, script };
}

/**
 * The pre-filter counts: a root oneshot run by a one-minute timer. Its Python reads the table's named counters
 * (`nft -j list table inet blackcloud_spa`), appends one line with their increase since the last run
 * (`{"type":"receiver.prefilter","time":ms,"dropped":n,"length":n,...,"passed":n}`; a table recreated by a
 * restart counts from zero) and keeps the totals in `stateFile`. No table (nftables missing, receiver stopped):
 * no line. `logFile`, `stateFile` and `nft` are for tests.
 */
export function prefilterCountsUnits(options: { logFile?: string; stateFile?: string; nft?: string } = {}): {
  service: string;
  timer: string;
  script: string;
} {
  const script = [
    '#!/usr/bin/python3',
    `# Appends the increase of the ${PREFILTER_TABLE} counters as one ${PREFILTER_EVENT_TYPE} line (the PrefilterDropped metric).`,
    'import json, os, subprocess, sys, time',
    `LOG, STATE, NFT = ${JSON.stringify(options.logFile ?? PREFILTER_LOG_FILE)}, ${JSON.stringify(options.stateFile ?? '/run/blackcloud-prefilter.json')}, ${JSON.stringify(options.nft ?? NFT_BINARY)}`,
    'try:',
    `    listed = subprocess.run([NFT, '-j', 'list', 'table', 'inet', ${JSON.stringify(PREFILTER_TABLE)}], capture_output=True, check=True, text=True).stdout`,
    'except (OSError, subprocess.CalledProcessError):',
    '    sys.exit(0)',
    'totals = {}',
    "for item in json.loads(listed).get('nftables', []):",
    "    counter = item.get('counter')",
    `    if counter and counter.get('table') == ${JSON.stringify(PREFILTER_TABLE)}:`,
    "        totals[counter['name']] = int(counter['packets'])",
    'try:',
    '    with open(STATE) as handle:',
    '        previous = json.load(handle)',
    'except (OSError, ValueError):',
    '    previous = {}',
    'delta = {name: value - previous.get(name, 0) if value >= previous.get(name, 0) else value for name, value in totals.items()}',
    "line = {'type': " + JSON.stringify(PREFILTER_EVENT_TYPE) + ", 'time': int(time.time() * 1000)}",
    "line['dropped'] = sum(value for name, value in delta.items() if name != 'passed')",
    'line.update(sorted(delta.items()))',
    "with open(LOG, 'a') as out:",
    "    out.write(json.dumps(line) + '\\n')",
    "with open(STATE + '.tmp', 'w') as handle:",
    '    json.dump(totals, handle)',
    "os.replace(STATE + '.tmp', STATE)",
    '',
  ].join('\n');
  const service = [
    '[Unit]',
    'Description=blackcloud receiver: kernel pre-filter counters to the audit log',
    '',
    '[Service]',
    'Type=oneshot',
    `ExecStart=${PREFILTER_COUNTS_SCRIPT}`,
    '',
  ].join('\n');
  const timer = everyMinuteTimer('blackcloud receiver: kernel pre-filter counters, every minute');
  return { service, timer, script };
}

/** CloudWatch agent configuration: ship the receiver's JSON lines and the heartbeat to the audit log group. */
export function cloudWatchAgentConfig(options: { readonly logGroupName: string }): string {
  const config = {
    agent: { run_as_user: 'root' },
    logs: {
      logs_collected: {
        files: {
          collect_list: [
            {
              file_path: RECEIVER_LOG_FILE,
              log_group_name: options.logGroupName,
              log_stream_name: '{instance_id}/receiver',
              timezone: 'UTC',
            },
            {
              file_path: HEARTBEAT_LOG_FILE,
              log_group_name: options.logGroupName,
              log_stream_name: '{instance_id}/heartbeat',
              timezone: 'UTC',
            },
            {
              file_path: PREFILTER_LOG_FILE,
              log_group_name: options.logGroupName,
              log_stream_name: '{instance_id}/prefilter',
              timezone: 'UTC',
            },
          ],
        },
      },
    },
  };
  return JSON.stringify(config, null, 2);
}

/** logrotate rules: the receiver's stdout file is opened in append mode, so copytruncate is safe. */
export function logrotateConfig(): string {
  return [
    `${RECEIVER_LOG_DIR}/*.log {`,
    '  daily',
    '  rotate 3',
    '  maxsize 50M',
    '  compress',
    '  missingok',
    '  notifempty',
    '  copytruncate',
    '}',
    '',
  ].join('\n');
}

/** Python that writes the controller secret's PEM fields into files 0640 (group set by the caller). */
const WRITE_TLS_FILES = `
import json, os, sys
source, target = sys.argv[1], sys.argv[2]
with open(source) as handle:
    material = json.load(handle)
for field, name in ${JSON.stringify(CONTROLLER_SECRET_FILES)}.items():
    value = material.get(field)
    if not isinstance(value, str) or '-----BEGIN' not in value:
        sys.exit('blackcloud: secret field %s is missing or not PEM' % field)
    path = os.path.join(target, name)
    with open(path, 'w') as out:
        out.write(value if value.endswith('\\n') else value + '\\n')
    os.chmod(path, 0o640)
`.trim();

export const CONTROLLER_TLS_FETCH_SCRIPT = '/usr/local/libexec/blackcloud-controller-tls';
export const CONTROLLER_TLS_SERVICE = 'blackcloud-controller-tls';

/**
 * The script run at every boot before the receiver: fetch the controller's certificate and key (by secret name).
 * Optional: after 20 attempts it gives up and the receiver runs without the controller session (knocks work, key
 * rotation cannot reach the broker). Rotating the controller certificate = update the secret, reboot.
 */
export function controllerTlsFetchScript(options: {
  readonly secretName: string;
  readonly region: string;
}): string {
  return [
    '#!/bin/bash',
    '# blackcloud: fetch the controller TLS material from Secrets Manager (by name; only this instance may read it).',
    'set -uo pipefail',
    'umask 077',
    'for attempt in $(seq 1 20); do',
    `  if aws secretsmanager get-secret-value --region '${options.region}' --secret-id '${options.secretName}' --query SecretString --output text > /run/blackcloud-controller.json; then`,
    `    if python3 - /run/blackcloud-controller.json ${CONTROLLER_TLS_DIR} <<'PYTHON'`,
    WRITE_TLS_FILES,
    'PYTHON',
    '    then',
    '      rm -f /run/blackcloud-controller.json',
    `      chown root:${RECEIVER_USER} ${CONTROLLER_TLS_DIR}/*`,
    '      exit 0',
    '    fi',
    '  fi',
    `  echo "blackcloud: waiting for secret ${options.secretName} (docs/deploy.md, step 2)"`,
    '  sleep 15',
    'done',
    'rm -f /run/blackcloud-controller.json',
    `echo "blackcloud: no controller TLS material; the receiver runs without the controller session"`,
    'exit 0',
    '',
  ].join('\n');
}

/** The oneshot unit running the controller fetch script before the receiver at every boot. */
export function controllerTlsUnit(): string {
  return [
    '[Unit]',
    'Description=blackcloud: controller TLS material from Secrets Manager',
    'Wants=network-online.target',
    'After=network-online.target',
    `Before=${RECEIVER_SERVICE}.service`,
    '',
    '[Service]',
    'Type=oneshot',
    'RemainAfterExit=yes',
    `ExecStart=${CONTROLLER_TLS_FETCH_SCRIPT}`,
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

export interface ReceiverBootOptions {
  readonly spaPort: number;
  /** Where the asset download put the bundle (from UserData.addS3DownloadCommand). */
  readonly downloadedBundle: string;
  readonly environment: Readonly<Record<string, string>>;
  readonly controllerTlsSecretName: string;
  readonly logGroupName: string;
  readonly region: string;
}

/** Commands that run after the asset download (UserData adds the shebang and the download itself). */
export function receiverBootCommands(options: ReceiverBootOptions): string[] {
  const heartbeat = heartbeatUnits();
  const prefilter = prefilterFiles({ spaPort: options.spaPort });
  const counts = prefilterCountsUnits();
  return [
    '# 2. The receiver program and its unprivileged user.',
    `id ${RECEIVER_USER} >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/blackcloud --shell /sbin/nologin ${RECEIVER_USER}`,
    `install -d -m 0755 ${RECEIVER_DIR}`,
    `install -m 0644 '${options.downloadedBundle}' ${RECEIVER_FILE}`,
    `install -d -m 0750 -o root -g ${RECEIVER_USER} /etc/blackcloud ${CONTROLLER_TLS_DIR}`,
    `install -d -m 0750 -o root -g root ${RECEIVER_LOG_DIR}`,
    'install -d -m 0755 /usr/local/libexec',
    '# 3. Configuration: names and addresses only.',
    `cat > ${RECEIVER_ENV_FILE} <<'ENV'`,
    environmentFile(options.environment).trimEnd(),
    'ENV',
    `chown root:${RECEIVER_USER} ${RECEIVER_ENV_FILE} && chmod 0640 ${RECEIVER_ENV_FILE}`,
    '# 4. Controller TLS material: fetched by name at every boot, before the receiver (optional).',
    `cat > ${CONTROLLER_TLS_FETCH_SCRIPT} <<'SCRIPT'`,
    controllerTlsFetchScript({
      secretName: options.controllerTlsSecretName,
      region: options.region,
    }).trimEnd(),
    'SCRIPT',
    `chmod 0700 ${CONTROLLER_TLS_FETCH_SCRIPT}`,
    `cat > /etc/systemd/system/${CONTROLLER_TLS_SERVICE}.service <<'UNIT'`,
    controllerTlsUnit().trimEnd(),
    'UNIT',
    '# 5. Units: the kernel pre-filter (applied and removed by the receiver unit), the receiver, the heartbeat,',
    '#    the pre-filter counts, log rotation.',
    // gzip + base64: the table is repetitive and user data has a 16 KB limit (stack.test.ts keeps a margin).
    `echo '${gzipSync(prefilter.rules, { level: 9 }).toString('base64')}' | base64 -d | gunzip > ${PREFILTER_RULES_FILE}`,
    `cat > ${PREFILTER_REMOVE_FILE} <<'NFT'`,
    prefilter.remove.trimEnd(),
    'NFT',
    `chmod 0600 ${PREFILTER_RULES_FILE} ${PREFILTER_REMOVE_FILE}`,
    `cat > ${PREFILTER_COUNTS_SCRIPT} <<'SCRIPT'`,
    counts.script.trimEnd(),
    'SCRIPT',
    `chmod 0700 ${PREFILTER_COUNTS_SCRIPT}`,
    "cat > /etc/systemd/system/blackcloud-prefilter-counts.service <<'UNIT'",
    counts.service.trimEnd(),
    'UNIT',
    "cat > /etc/systemd/system/blackcloud-prefilter-counts.timer <<'UNIT'",
    counts.timer.trimEnd(),
    'UNIT',
    `cat > /etc/systemd/system/${RECEIVER_SERVICE}.service <<'UNIT'`,
    receiverUnit({ spaPort: options.spaPort }).trimEnd(),
    'UNIT',
    "cat > /usr/local/libexec/blackcloud-heartbeat <<'SCRIPT'",
    heartbeat.script.trimEnd(),
    'SCRIPT',
    'chmod 0755 /usr/local/libexec/blackcloud-heartbeat',
    "cat > /etc/systemd/system/blackcloud-heartbeat.service <<'UNIT'",
    heartbeat.service.trimEnd(),
    'UNIT',
    "cat > /etc/systemd/system/blackcloud-heartbeat.timer <<'UNIT'",
    heartbeat.timer.trimEnd(),
    'UNIT',
    "cat > /etc/logrotate.d/blackcloud <<'ROTATE'",
    logrotateConfig().trimEnd(),
    'ROTATE',
    'systemctl daemon-reload',
    `systemctl enable ${CONTROLLER_TLS_SERVICE}.service`,
    `systemctl start ${CONTROLLER_TLS_SERVICE}.service`,
    `systemctl enable --now ${RECEIVER_SERVICE}.service blackcloud-heartbeat.timer blackcloud-prefilter-counts.timer`,
    '# 6. CloudWatch agent: ship the JSON lines to the audit log group.',
    `cat > ${CLOUDWATCH_AGENT_CONFIG} <<'AGENT'`,
    cloudWatchAgentConfig({ logGroupName: options.logGroupName }),
    'AGENT',
    `/opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -c file:${CLOUDWATCH_AGENT_CONFIG} -s`,
  ];
}

/** Commands that run before the asset download: packages. */
export function receiverPackageCommands(): string[] {
  return [
    'set -euo pipefail',
    '# 1. Node 24, the CloudWatch agent, logrotate, python3 (TLS secret, pre-filter counts), nftables (pre-filter).',
    'for attempt in $(seq 1 30); do',
    '  dnf install -y nodejs24 amazon-cloudwatch-agent logrotate python3 nftables && break',
    '  sleep 10',
    'done',
    `test -x ${NODE_BINARY}`,
  ];
}

/** A systemd timer that starts its service a minute after boot, then every minute. */
function everyMinuteTimer(description: string): string {
  return [
    '[Unit]',
    `Description=${description}`,
    '',
    '[Timer]',
    'OnBootSec=60',
    'OnUnitActiveSec=60',
    'AccuracySec=5',
    '',
    '[Install]',
    'WantedBy=timers.target',
    '',
  ].join('\n');
}
