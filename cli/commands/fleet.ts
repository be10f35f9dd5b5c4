/**
 * The operator's fleet commands, thin over the Fleet (cli/fleet/): `devices add|list|show|disable|
 * enable|remove`, `grants list|revoke`, `audit`. Each parses its flags, calls one fleet method and prints: a table
 * for people, or JSON (one object per line) with --json. Local by default (`--data-dir`); `--aws` / `--stack`
 * work on the deployed stack.
 */
import type { Command } from 'commander';
import { formatAccessSpec, parseAccessSpec } from '../../functions/core/access-spec.ts';
import { canonicalAddress } from '../../functions/core/ip-address.ts';
import { DEVICE_TRANSPORTS, type DeviceTransport } from '../../functions/core/transport.ts';
import { displayPath } from '../../functions/local/provision-device.ts';
import type { AccessEntry } from '../../spa/types.ts';
import type { CliIo } from '../cli-io.ts';
import { exitPaths } from '../exit-paths.ts';
import {
  AUDIT_COLUMN_WIDTHS,
  AUDIT_TABLE_HEADER,
  auditRow,
  formatRow,
  parseSince,
} from '../fleet/audit-query.ts';
import { enrolAll, expandNames, progressReporter } from '../fleet/enrol.ts';
import type {
  CutOffResult,
  DeviceFormat,
  DeviceSummary,
  EnrolledDevice,
  EnrolRequest,
  Fleet,
  FleetGrant,
} from '../fleet/fleet.ts';
import { FleetError, plainKnockProblem } from '../fleet/fleet.ts';
import type { FleetFlags } from '../fleet/fleet-flags.ts';
import { openFleet } from '../fleet/open-fleet.ts';
import { UsageError } from '../usage-error.ts';

/** Adds the backend flags (local data directory or the AWS stack) to a command. */
export function withFleetFlags(command: Command): Command {
  return command
    .option('--data-dir <dir>', 'local: data directory of "blackcloud up" (default .blackcloud)')
    .option('--aws', 'work on the deployed stack on AWS (standard credential chain and region)')
    .option('--stack <name>', 'AWS: CloudFormation stack name (default Blackcloud; implies --aws)')
    .option('--region <region>', 'AWS: region (default: AWS_REGION or your AWS config; implies --aws)')
    .option('--out <dir>', 'AWS: the directory of device bundles (default ./blackcloud-devices)');
}

export function parsePorts(text: string): AccessEntry[] {
  const parts = text.split(',').map((part) => part.trim());
  const entries = parts.map(parseAccessSpec);
  if (parts.length === 0 || parts.length > 8 || entries.some((entry) => entry === undefined)) {
    throw new UsageError(
      '--ports',
      `must be 1..8 comma-separated entries like tcp/8883 or udp/5683; received ${JSON.stringify(text)}`,
    );
  }
  return entries as AccessEntry[];
}

export function parseMaxOpen(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 86_400) {
    throw new UsageError(
      '--max-open-seconds',
      `must be an integer 1..86400; received ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

function parseCount(text: string | undefined, flag: string, max: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[1-9][0-9]*$/.test(text) || Number(text) > max) {
    throw new UsageError(flag, `must be an integer 1..${max}; received ${JSON.stringify(text)}`);
  }
  return Number(text);
}

/** Left-aligned columns, two spaces apart. */
export function table(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  return rows.map((row) => formatRow(row, widths));
}

function seconds(ms: number): string {
  return `${Math.max(0, Math.round(ms / 1000))} s`;
}

interface AddOptions extends FleetFlags {
  readonly format?: string;
  readonly transport?: string;
  readonly ports?: string;
  readonly maxOpenSeconds?: string;
  readonly count?: string;
  readonly prefix?: string;
  readonly concurrency?: string;
  readonly json?: boolean;
}

/** `--transport tls|plain` (functions/core/transport.ts); a UsageError names the values. */
function parseTransport(text: string | undefined): DeviceTransport | undefined {
  if (text === undefined) return undefined;
  if (!(DEVICE_TRANSPORTS as readonly string[]).includes(text)) {
    throw new UsageError(
      '--transport',
      `must be "tls" (mutual TLS, the default) or "plain" (a device that cannot do TLS); received ${JSON.stringify(text)}`,
    );
  }
  return text as DeviceTransport;
}

function printSingle(io: CliIo, device: EnrolledDevice): void {
  const file = displayPath(device.deviceFile);
  io.out(
    `added device ${device.deviceId} (${device.format}${device.transport === 'plain' ? ', plain MQTT' : ''}, may open ${device.access.map(formatAccessSpec).join(',')}): ${file}`,
  );
  io.out(`  knock and publish:  npx blackcloud pub --device ${file} -t hello -m hi`);
  if (device.fwknop !== undefined) {
    const rc = displayPath(device.fwknop.rcFile);
    io.out('');
    io.out('Knock with the standard fwknop client (keys below are secrets):');
    io.out(`  ${device.fwknop.commandLine}`);
    io.out('');
    io.out(`or add this stanza to ~/.fwknoprc and run "fwknop -n blackcloud-${device.deviceId}"`);
    io.out(`(saved as ${rc}: fwknop --rc-file ${rc} -n blackcloud-${device.deviceId}):`);
    io.out(device.fwknop.stanza);
  }
}

function enrolledJson(device: EnrolledDevice): string {
  return JSON.stringify({
    deviceId: device.deviceId,
    format: device.format,
    transport: device.transport ?? 'tls',
    deviceFile: device.deviceFile,
    bundleDir: device.bundleDir,
    keyId: device.keyId,
    access: device.access.map(formatAccessSpec),
    ...(device.fwknop === undefined ? {} : { fwknop: device.fwknop }),
  });
}

/** `devices add NAME... [--count N --prefix P]`: one device prints its details; several print a progress bar. */
export async function addDevices(names: readonly string[], options: AddOptions, io: CliIo): Promise<void> {
  const format = options.format ?? 'native';
  if (format !== 'native' && format !== 'fwknop') {
    throw new UsageError('--format', `must be "native" or "fwknop"; received ${JSON.stringify(format)}`);
  }
  const maxOpenSeconds = parseMaxOpen(options.maxOpenSeconds);
  const access = options.ports === undefined ? undefined : parsePorts(options.ports);
  const count = parseCount(options.count, '--count', 100_000);
  const concurrency = parseCount(options.concurrency, '--concurrency', 64);
  const transport = parseTransport(options.transport);
  const plainProblem = plainKnockProblem(transport, format);
  if (plainProblem !== undefined) {
    throw new UsageError(
      '--transport',
      `plain: ${plainProblem}; fix: drop --format fwknop, or keep --transport tls`,
    );
  }
  const ids = expandNames(names, count, options.prefix);
  const fleet = await openFleet(options);
  const requests: EnrolRequest[] = ids.map((deviceId) => ({
    deviceId,
    format: format as DeviceFormat,
    ...(transport === 'plain' ? { transport } : {}),
    ...(access === undefined ? {} : { access }),
    ...(maxOpenSeconds === undefined ? {} : { maxOpenSeconds }),
  }));

  if (ids.length === 1 && count === undefined) {
    // One named device: it must not exist yet (a typo must not silently "succeed").
    const device = await fleet.enrol(requests[0]!);
    if (options.json) io.out(enrolledJson(device));
    else printSingle(io, device);
    return;
  }

  const progress = progressReporter();
  const report = await enrolAll({
    fleet,
    requests,
    ...(concurrency === undefined ? {} : { concurrency }),
    onProgress: (step) => {
      const line = progress(step);
      if (line !== undefined) io.err(line);
    },
  });
  if (options.json) for (const device of report.created) io.out(enrolledJson(device));
  else {
    io.out(
      `${fleet.description}: created ${report.created.length}, skipped ${report.skipped.length} (already there)` +
        `${report.failed.length === 0 ? '' : `, failed ${report.failed.length}, not started ${report.notStarted.length}`}`,
    );
    const first = report.created[0];
    if (first !== undefined)
      io.out(`bundles: ${displayPath(first.bundleDir)} and the like (copy one onto each device)`);
  }
  const failure = report.failed[0];
  if (failure !== undefined) {
    const reason = failure.error instanceof Error ? failure.error.message : String(failure.error);
    throw new FleetError(
      `enrolment stopped at ${failure.deviceId}: ${reason}; fix the cause and run the same command again ` +
        '(devices already created are skipped)',
    );
  }
}

function summaryJson(device: DeviceSummary): Record<string, unknown> {
  return {
    id: device.id,
    enabled: device.enabled,
    allowedAccess: device.allowedAccess,
    formats: device.formats,
    maxOpenSeconds: device.maxOpenSeconds,
    keyIds: device.keyIds,
    ...(device.transport === undefined ? {} : { transport: device.transport }),
    ...(device.bundleDir === undefined
      ? {}
      : { bundleDir: device.bundleDir, deviceFile: `${device.bundleDir}/device.json` }),
  };
}

export async function listDevices(options: FleetFlags & { json?: boolean }, io: CliIo): Promise<void> {
  const fleet = await openFleet(options);
  const devices = await fleet.list();
  if (options.json) {
    for (const device of devices) io.out(JSON.stringify(summaryJson(device)));
    return;
  }
  const rows = devices.map((device) => [
    device.id,
    device.enabled ? 'enabled' : 'disabled',
    device.allowedAccess.join(','),
    device.formats.join('+'),
  ]);
  for (const line of table([['ID', 'STATE', 'ACCESS', 'FORMATS'], ...rows])) io.out(line);
  io.err(`${devices.length} device(s) in ${fleet.description}`);
}

function grantRows(grants: readonly FleetGrant[], now: number): string[][] {
  return grants.map((grant) => [
    grant.address,
    grant.deviceId,
    grant.access.join(','),
    new Date(grant.expiresAt).toISOString(),
    seconds(grant.expiresAt - now),
  ]);
}

const GRANT_HEADER = ['ADDRESS', 'DEVICE', 'ACCESS', 'UNTIL', 'LEFT'];

async function requireDevice(fleet: Fleet, id: string): Promise<DeviceSummary> {
  const device = await fleet.show(id);
  if (device === undefined) {
    throw new FleetError(
      `device ${JSON.stringify(id)} is not in ${fleet.description}; fix: check the id with "blackcloud devices list"`,
    );
  }
  return device;
}

function printCutOff(io: CliIo, verb: string, id: string, result: CutOffResult): void {
  const parts = [`${result.revoked.length} grant(s) revoked`];
  if (result.disconnected !== undefined) parts.push(`${result.disconnected} broker session(s) closed`);
  io.out(`${verb} ${id}${result.changed ? '' : ' (it already was)'}: ${parts.join(', ')}`);
  for (const note of result.notes) io.err(`blackcloud: ${note}`);
}

export function registerDeviceFleetCommands(devices: Command, io: CliIo): void {
  withFleetFlags(
    devices
      .command('show')
      .summary('show one device: state, access, key ids, open grants')
      .argument('<id>', 'device id')
      .option('--json', 'print one JSON object'),
  ).action(async (id: string, options: FleetFlags & { json?: boolean }) => {
    const fleet = await openFleet(options);
    const device = await requireDevice(fleet, id);
    const grants = (await fleet.grants()).filter((grant) => grant.deviceId === id);
    if (options.json) {
      io.out(JSON.stringify({ ...summaryJson(device), grants }));
      return;
    }
    io.out(`device        ${device.id}`);
    io.out(`state         ${device.enabled ? 'enabled' : 'disabled'}`);
    io.out(`may open      ${device.allowedAccess.join(',')} (grants up to ${device.maxOpenSeconds} s)`);
    io.out(`formats       ${device.formats.join(', ')}`);
    io.out(`key ids       ${device.keyIds.join(', ')}`);
    if (device.bundleDir !== undefined) io.out(`bundle        ${displayPath(device.bundleDir)}`);
    io.out(`open grants   ${grants.length === 0 ? 'none' : String(grants.length)}`);
    if (grants.length > 0)
      for (const line of table([GRANT_HEADER, ...grantRows(grants, Date.now())])) io.out(`  ${line}`);
  });

  withFleetFlags(
    devices
      .command('disable')
      .summary('cut a device off at once: refuse its knocks, revoke its grants, close its broker sessions')
      .argument('<id>', 'device id'),
  ).action(async (id: string, options: FleetFlags) => {
    const fleet = await openFleet(options);
    printCutOff(io, 'disabled', id, await fleet.setEnabled(id, false));
  });

  withFleetFlags(
    devices.command('enable').summary('let a disabled device knock again').argument('<id>', 'device id'),
  ).action(async (id: string, options: FleetFlags) => {
    const fleet = await openFleet(options);
    const result = await fleet.setEnabled(id, true);
    io.out(`enabled ${id}${result.changed ? '' : ' (it already was)'}`);
  });

  withFleetFlags(
    devices
      .command('remove')
      .summary('remove a device: keys deleted, grants and sessions closed, certificate no longer accepted')
      .argument('<id>', 'device id')
      .option(
        '--ca <dir>',
        'AWS: your CA directory, whose crl.pem gets the certificate (default ~/.blackcloud/ca)',
      ),
  ).action(async (id: string, options: FleetFlags) => {
    const fleet = await openFleet(options);
    printCutOff(io, 'removed', id, await fleet.remove(id));
  });
}

export function registerGrants(program: Command, io: CliIo): void {
  const grants = program
    .command('grants')
    .summary('what the firewall has open now, for whom, until when')
    .description('List or revoke the open grants (firewall openings made by accepted knocks).')
    .addHelpText(
      'after',
      '\nExamples:\n  blackcloud grants list\n  blackcloud grants revoke 127.0.0.1\n  blackcloud grants revoke sensor-042\n' +
        '  blackcloud grants list --aws --json',
    );

  withFleetFlags(
    grants.command('list').summary('list the open grants').option('--json', 'one JSON object per grant'),
  ).action(async (options: FleetFlags & { json?: boolean }) => {
    const fleet = await openFleet(options);
    const open = await fleet.grants();
    if (options.json) {
      for (const grant of open) io.out(JSON.stringify(grant));
      return;
    }
    if (open.length === 0) {
      io.out(`no open grants (${fleet.description})`);
      return;
    }
    for (const line of table([GRANT_HEADER, ...grantRows(open, Date.now())])) io.out(line);
  });

  withFleetFlags(
    grants
      .command('revoke')
      .summary('close the grants of one source address or one device now')
      .argument('<address-or-device>', 'an IPv4/IPv6 source address, or a device id'),
  ).action(async (target: string, options: FleetFlags) => {
    const fleet = await openFleet(options);
    const address = canonicalAddress(target);
    const revoked = await fleet.revokeGrants(address === undefined ? { deviceId: target } : { address });
    if (address === undefined && revoked.length === 0 && (await fleet.show(target)) === undefined) {
      throw new UsageError(
        '<address-or-device>',
        `${JSON.stringify(target)} is neither an IP address nor a device of ${fleet.description}; fix: pass a ` +
          'source address from "blackcloud grants list" or a device id from "blackcloud devices list"',
      );
    }
    io.out(`revoked ${revoked.length} grant(s) for ${address ?? target}`);
    for (const grant of revoked) io.out(`  ${grant.address}  ${grant.deviceId}  ${grant.access.join(',')}`);
  });
}

export function registerAudit(program: Command, io: CliIo): void {
  withFleetFlags(
    program
      .command('audit')
      .summary('who knocked from where, when: accepted and rejected knocks, grants, operator actions')
      .description(
        'Read the audit trail: the local audit.jsonl, or the audit log group on AWS (CloudWatch Logs).\n' +
          'Shows validated packets, rejections, grants, and operator actions (device.added/disabled/...).',
      )
      .option('--since <when>', 'only from this time on: 90s, 15m, 1h, 2d or an ISO 8601 time')
      .option('--device <id>', 'only records about this device')
      .option('--follow', 'keep printing new records until Ctrl-C')
      .option('--json', 'JSON lines (one record per line) instead of a table')
      .addHelpText(
        'after',
        '\nExamples:\n  blackcloud audit --since 1h\n  blackcloud audit --device sensor-042 --json\n' +
          '  blackcloud audit --follow\n  blackcloud audit --aws --since 30m',
      ),
  ).action(
    async (options: FleetFlags & { since?: string; device?: string; follow?: boolean; json?: boolean }) => {
      const since = options.since === undefined ? undefined : parseSince(options.since, Date.now());
      const fleet = await openFleet(options);
      const controller = new AbortController();
      const device = options.device;
      const unknownDevice = async () =>
        device !== undefined &&
        (await fleet.show(device)) === undefined &&
        new UsageError(
          '--device',
          `no device ${JSON.stringify(device)} in ${fleet.description} and no audit record names it; fix: check ` +
            'the id ("blackcloud devices list")',
        );
      // Following a device that does not exist would wait forever for nothing: refused before the first line.
      if (options.follow) {
        const refusal = await unknownDevice();
        if (refusal) throw refusal;
      }
      let matched = 0;
      // --follow ends on Ctrl-C, SIGTERM/SIGHUP or a closed stdout (`| head`) (cli/exit-paths.ts).
      const release = options.follow
        ? exitPaths.hold(() => controller.abort(), { stopWhenStdoutCloses: true })
        : () => undefined;
      try {
        if (!options.json) io.out(formatRow(AUDIT_TABLE_HEADER, AUDIT_COLUMN_WIDTHS));
        for await (const record of fleet.audit({
          ...(since === undefined ? {} : { since }),
          ...(options.device === undefined ? {} : { deviceId: options.device }),
          follow: options.follow === true,
          signal: controller.signal,
        })) {
          matched += 1;
          io.out(options.json ? JSON.stringify(record) : formatRow(auditRow(record), AUDIT_COLUMN_WIDTHS));
        }
      } finally {
        release();
      }
      // A removed device still has its records; an id that never was one is a mistake worth naming.
      if (matched === 0) {
        const refusal = await unknownDevice();
        if (refusal) throw refusal;
      }
    },
  );
}
