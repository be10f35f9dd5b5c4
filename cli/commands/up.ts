/**
 * `blackcloud up`: start the local black cloud (functions/local/local-cloud.ts), print what listens where and how
 * to connect the demo device, then run until SIGINT/SIGTERM/SIGHUP (or an uncaught error) and shut down cleanly
 * (revoke grants, remove the nftables table and the control socket, release the data directory), also when the
 * signal comes during the start-up (cli/exit-paths.ts). With --json, every line on stdout is JSON: one `ready` record, then the audit events.
 */

import type { Command } from 'commander';
import type { AuditEvent } from '../../functions/core/interfaces.ts';
import { describeKeyEvent } from '../../functions/key-rotation/describe-key-event.ts';
import { formatAuditEvent } from '../../functions/local/audit.ts';
import { DEMO_DEVICE_ID } from '../../functions/local/data-dir.ts';
import { type LocalCloud, startLocalCloud } from '../../functions/local/local-cloud.ts';
import { LocalCloudStoppedError } from '../../functions/local/local-errors.ts';
import { displayPath } from '../../functions/local/provision-device.ts';
import {
  loadUpConfig,
  loadUpConfigFile,
  printableUpConfig,
  type UpFlags,
} from '../../functions/local/up-config.ts';
import type { CliIo } from '../cli-io.ts';
import { exitPaths, StoppedBySignal } from '../exit-paths.ts';

interface UpOptions extends UpFlags {
  readonly config?: string;
  readonly json?: boolean;
  readonly printConfig?: boolean;
}

/** `host:port`, with IPv6 hosts in brackets. */
function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

function clockTime(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

function access(list: readonly { protocol: string; port: number }[]): string {
  return list.map((entry) => `${entry.protocol}/${entry.port}`).join(',');
}

/** One human line per audit event. */
export function describeAuditEvent(event: AuditEvent): string {
  const at = `[${clockTime(event.time)}]`;
  switch (event.type) {
    case 'packet.accepted':
      return `${at} knock accepted: ${event.deviceId} from ${event.source} (${event.format}), ${access(event.access)} for ${event.grantSeconds} s`;
    case 'packet.rejected':
      return `${at} knock dropped from ${event.source}: ${event.reason}${event.detail === undefined ? '' : ` (${event.detail})`}${event.deviceId === undefined ? '' : ` [${event.deviceId}]`}`;
    case 'grant.opened':
    case 'grant.extended':
      return `${at} ${event.type.replace('.', ' ')}: ${event.source} → ${access(event.access)} (${event.deviceId}) until ${clockTime(event.expiresAt)}`;
    case 'grant.revoked':
      return `${at} grant revoked: ${event.source} → ${access(event.access)} (${event.deviceId}), ${event.reason}`;
    case 'grant.failed':
      return `${at} grant failed for ${event.deviceId} from ${event.source}: ${event.error}`;
    default:
      return `${at} ${describeKeyEvent(event)}`;
  }
}

export function readyRecord(cloud: LocalCloud): Record<string, unknown> {
  return {
    event: 'ready',
    dataDir: cloud.layout.root,
    spa: { host: cloud.spa.host, port: cloud.spa.port, protocol: 'udp' },
    mqtt: { host: cloud.mqtt.host, port: cloud.mqtt.port, url: cloud.mqtt.url },
    ...(cloud.plain === undefined
      ? {}
      : { plain: { host: cloud.plain.host, port: cloud.plain.port, url: cloud.plain.url } }),
    broker: cloud.broker,
    firewall: cloud.config.firewall,
    ...(cloud.config.firewall === 'nftables' ? { nftTable: cloud.config.nftTable } : {}),
    prefilter:
      cloud.prefilter === undefined ? false : { table: cloud.prefilter.table, hook: cloud.prefilter.hook },
    devicesFile: cloud.layout.devicesFile,
    devices: cloud.directory.devices().map((device) => device.id),
    demoDeviceFile: cloud.layout.deviceFile(DEMO_DEVICE_ID),
    auditFile: cloud.layout.auditFile,
    grantSeconds: cloud.config.grantSeconds,
    publicAddresses: cloud.config.publicAddresses,
  };
}

export function banner(cloud: LocalCloud): string[] {
  const { config } = cloud;
  const demo = displayPath(cloud.layout.deviceFile(DEMO_DEVICE_ID));
  const hasDemo = cloud.directory.byId(DEMO_DEVICE_ID) !== undefined;
  const brokerText =
    config.broker !== undefined
      ? `external broker ${config.broker.url}`
      : cloud.broker.inProcess
        ? 'embedded broker (aedes, mutual TLS), in process: no socket of its own, reachable only through the gate'
        : `embedded broker (aedes, mutual TLS) on ${hostPort(cloud.broker.host, cloud.broker.port)}`;
  const front =
    config.firewall === 'gate'
      ? `gate (userspace) → ${brokerText}`
      : `nftables table inet ${config.nftTable} guarding tcp/${cloud.mqtt.port} → ${brokerText}`;
  const lines = [
    `blackcloud is up (data directory ${displayPath(cloud.layout.root)})`,
    `  SPA receiver   udp ${hostPort(cloud.spa.host, cloud.spa.port)}   (never answers)`,
    `  MQTT           tcp ${hostPort(cloud.mqtt.host, cloud.mqtt.port)}   ${front}`,
    ...(cloud.plain === undefined
      ? []
      : [
          `  MQTT (plain)   tcp ${hostPort(cloud.plain.host, cloud.plain.port)}   dark like the TLS port; plain devices only, ` +
            `one-time password per knock; NOT encrypted (docs/threat-model.md "The plain profile")`,
        ]),
    `  devices        ${cloud.directory.devices().length} in ${displayPath(cloud.layout.devicesFile)} (reloaded on change)`,
    `  grants         ${config.grantSeconds} s by default, capped per device; nothing reaches the broker without a knock`,
    `  audit          ${displayPath(cloud.layout.auditFile)}`,
  ];
  if (cloud.prefilter !== undefined) {
    const { hook, table } = cloud.prefilter;
    const where =
      hook.kind === 'netdev-ingress' ? `netdev ${table}, ingress of ${hook.device}` : `inet ${table}, input`;
    lines.push(
      `  pre-filter     nftables table ${where}: junk to udp/${cloud.spa.port} is dropped in the kernel`,
    );
  }
  if (config.publicAddresses.length > 0) {
    lines.push(
      `  public address ${config.publicAddresses.join(', ')}   (in device files and the broker certificate; ` +
        `open udp/${cloud.spa.port} and tcp/${cloud.mqtt.port} to it)`,
    );
  }
  if (cloud.demoDevice !== undefined)
    lines.push('', `Created the demo device: ${demo} (keys and certificate next to it, 0600)`);
  if (hasDemo) {
    lines.push(
      '',
      'Connect as the demo device, in another terminal:',
      `  npx blackcloud sub --device ${demo} -t '#'`,
      `  npx blackcloud pub --device ${demo} -t hello -m 'hello from the demo device'`,
      `  npx blackcloud knock --device ${demo}      # only the knock`,
    );
  }
  lines.push(
    '',
    'Add a device: npx blackcloud devices add NAME [--format fwknop]. Ctrl-C stops (grants are revoked).',
  );
  return lines;
}

/** What the kernel pre-filter dropped during the run (read before close removes its table). */
async function reportPrefilter(cloud: LocalCloud, io: CliIo, json: boolean): Promise<void> {
  if (cloud.prefilter === undefined) return;
  try {
    const counts = await cloud.prefilter.counts();
    if (json) io.out(JSON.stringify({ event: 'prefilter', table: cloud.prefilter.table, ...counts }));
    else {
      io.err(
        `blackcloud: kernel pre-filter dropped ${counts.dropped} datagram(s) (length ${counts.length}, ` +
          `BC1 magic ${counts.bc1_magic}, fwknop base64 ${counts.fwknop_base64}, per-source rate ${counts.rate}); ` +
          `${counts.passed} passed to the receiver`,
      );
    }
  } catch (error) {
    io.err(`blackcloud: kernel pre-filter counters not read: ${(error as Error).message}`);
  }
}

export function registerUp(program: Command, io: CliIo): void {
  program
    .command('up')
    .summary('start the local black cloud (receiver, firewall, broker)')
    .description(
      'Start, in one process: the SPA receiver (UDP), an embedded MQTT broker (aedes, mutual TLS) and a firewall\n' +
        'in front of it: the userspace gate on the public MQTT port (default; works anywhere; the broker then has no\n' +
        'socket of its own, only the gate reaches it) or nftables (Linux, root). On first run it creates the data directory: a local CA, the broker\n' +
        'certificate and a demo device (SPA key, client certificate, device.json). Runs until Ctrl-C.',
    )
    .option('--firewall <kind>', 'gate (userspace TCP gate, default) | nftables (kernel, needs root)')
    .option('--broker <url>', 'front an external broker (mqtts://host:port) instead of the embedded one')
    .option('--data-dir <dir>', 'data directory (default ./.blackcloud)')
    .option(
      '--config <file>',
      'YAML or JSON config file (keys: host, publicAddress, spaPort, mqttPort, plainPort, firewall, broker, brokerPlain, dataDir, grantSeconds, clockWindowSeconds, nftTable, demoDevice, readers)',
    )
    .option('--host <ip>', 'address to listen on (default 127.0.0.1; 0.0.0.0 when a public address is set)')
    .option(
      '--public-address <host>',
      'host name or IP address devices on other machines dial: written into device files and the broker\n' +
        'certificate; repeat it or separate with commas for several (device files name the first); kept in the\n' +
        'data directory for the next runs',
      (value: string, previous: string[] | false | undefined) => [...(previous || []), value],
    )
    .option('--no-public-address', 'forget the public address the data directory keeps')
    .option('--spa-port <n>', 'UDP port of the SPA receiver (default 62201)')
    .option(
      '--readers <n>',
      'SPA reader threads on the one UDP port (SO_REUSEPORT each; they authenticate in parallel, the main thread decides; default 1; docs/scaling.md)',
    )
    .option('--mqtt-port <n>', 'public MQTT (TLS) port devices dial (default 8883)')
    .option(
      '--plain-port <n>',
      'open the plain-profile MQTT port for devices that cannot do TLS (off unless given, e.g. 1883): dark like\n' +
        'the TLS port, plain devices log in with a one-time password per knock, but their traffic is NOT\n' +
        'encrypted (docs/threat-model.md "The plain profile")',
    )
    .option(
      '--broker-plain <url>',
      "with --broker: that Mosquitto's plain listener (mqtt://host:port; dynsec passwords), for plain devices",
    )
    .option('--grant-seconds <n>', 'grant length when a knock asks for 0 s (default 30)')
    .option('--nft-table <name>', 'nftables table name (default blackcloud)')
    .option(
      '--prefilter',
      'drop datagrams to the SPA port that cannot be a knock in the kernel (nftables table <nft-table>_spa;\n' +
        'Linux, root; default with --firewall nftables)',
    )
    .option('--no-prefilter', 'no kernel pre-filter: the receiver screens every datagram itself')
    .option('--key-rotation-hours <n>', "rotate each device's SPA key this often (default 24)")
    .option('--print-config', 'print the resolved configuration and exit')
    .option('--json', 'JSON lines on stdout: a "ready" record, then every audit event')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  blackcloud up                                   # gate + embedded broker on 127.0.0.1\n' +
        '  blackcloud up --firewall nftables --host 10.0.0.1\n' +
        '  blackcloud up --public-address 192.168.1.20     # devices on the LAN (listens on 0.0.0.0; docs/local.md)\n' +
        '  blackcloud up --broker mqtts://127.0.0.1:8884   # front Mosquitto (see docs/local.md)\n' +
        '  blackcloud up --data-dir ~/blackcloud-lab --spa-port 40001 --mqtt-port 40002 --json',
    )
    .action(async (options: UpOptions) => {
      const file = options.config === undefined ? undefined : await loadUpConfigFile(options.config);
      const config = await loadUpConfig(options, file);
      if (options.printConfig) {
        io.out(JSON.stringify(printableUpConfig(config), null, 2));
        return;
      }
      const json = options.json === true;
      // One shutdown path (cli/exit-paths.ts): a signal or an uncaught error, during the start-up or after it,
      // aborts the cloud, which closes at once whatever it opened (grants, nftables table, control socket, lock).
      const stopping = new AbortController();
      const release = exitPaths.hold((reason) => {
        io.err(`blackcloud: ${reason}: stopping (revoking grants)…`);
        stopping.abort(reason);
      });
      try {
        let cloud: LocalCloud;
        try {
          cloud = await startLocalCloud(config, {
            onAudit: (event) => io.out(json ? formatAuditEvent(event) : describeAuditEvent(event)),
            onNote: (line) => io.err(`blackcloud: ${line}`),
            signal: stopping.signal,
          });
        } catch (error) {
          if (error instanceof LocalCloudStoppedError) {
            throw new StoppedBySignal(error.message, error.reason, { cause: error });
          }
          throw error;
        }
        if (json) io.out(JSON.stringify(readyRecord(cloud)));
        else for (const line of banner(cloud)) io.out(line);
        const lost = await Promise.race([
          cloud.lost,
          new Promise<undefined>((resolve) => {
            if (stopping.signal.aborted) resolve(undefined);
            stopping.signal.addEventListener('abort', () => resolve(undefined), { once: true });
          }),
        ]);
        await reportPrefilter(cloud, io, json);
        try {
          await cloud.close();
        } catch (error) {
          io.err(`blackcloud: shutdown problem: ${(error as Error).message}`);
        }
        io.err('blackcloud: stopped');
        if (lost !== undefined) throw new Error(lost);
      } finally {
        release();
      }
    });
}
