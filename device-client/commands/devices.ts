/**
 * `blackcloud devices add|list`: manage the local device directory (the data directory of `blackcloud up`).
 * A running `up` picks up added devices by itself (it watches the devices file).
 */
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';
import { writeFileAtomic } from '../../functions/adapters/local/device-file.ts';
import { DEFAULT_DATA_DIR, dataDirLayout } from '../../functions/local/data-dir.ts';
import { readEndpoints } from '../../functions/local/endpoints.ts';
import { fwknopCommandLine, fwknoprcStanza } from '../../functions/local/fwknop-hints.ts';
import { displayPath, provisionDevice } from '../../functions/local/provision-device.ts';
import { DEFAULT_HOST, DEFAULT_MQTT_PORT } from '../../functions/local/up-config.ts';
import { ensureLocalPki, loadPem } from '../../functions/pki/local-ca.ts';
import { DEFAULT_SPA_PORT } from '../../spa/limits.ts';
import type { AccessEntry } from '../../spa/types.ts';
import { formatAccessSpec, parseAccessSpec } from '../access-spec.ts';
import type { CliIo } from '../cli-io.ts';
import { UsageError } from '../errors.ts';

interface AddOptions {
  readonly format?: string;
  readonly dataDir?: string;
  readonly ports?: string;
  readonly maxOpenSeconds?: string;
  readonly json?: boolean;
}

function parsePorts(text: string): AccessEntry[] {
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

function parseMaxOpen(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 86_400) {
    throw new UsageError(
      '--max-open-seconds',
      `must be an integer 1..86400; received ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

async function requireDataDir(dir: string): Promise<void> {
  const layout = dataDirLayout(dir);
  try {
    await stat(layout.devicesFile);
  } catch {
    throw new UsageError(
      '--data-dir',
      `${displayPath(layout.root)} has no devices file (${displayPath(layout.devicesFile)}); fix: run "blackcloud up` +
        `${dir === DEFAULT_DATA_DIR ? '' : ` --data-dir ${dir}`}" once first, or pass the data directory it uses`,
    );
  }
}

export function registerDevices(program: Command, io: CliIo): void {
  const devices = program
    .command('devices')
    .summary('manage the local device directory')
    .description('Add or list devices in the local data directory used by "blackcloud up".')
    .addHelpText(
      'after',
      '\nExamples:\n  blackcloud devices add sensor-1\n  blackcloud devices add legacy-1 --format fwknop\n  blackcloud devices list --json',
    );

  devices
    .command('add')
    .summary('add a device and write its config, keys and client certificate')
    .description(
      'Add a device to the local directory and write what it needs into <data-dir>/devices/NAME/:\n' +
        'device.json (0600: SPA key, receiver and broker addresses), client.crt/client.key (CN = NAME), ca.crt.\n' +
        'With --format fwknop it also gets a Rijndael key and an HMAC key (fwknop --key-gen sizes), and the\n' +
        'fwknop command line and ~/.fwknoprc stanza that knock this receiver are printed (and saved as\n' +
        'devices/NAME/fwknoprc). A running "blackcloud up" picks the device up without a restart.\n' +
        'NAME: 1..64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit.',
    )
    .argument('<name>', 'device id (becomes the certificate CN and the topic level blackcloud/devices/NAME/)')
    .option('--format <format>', 'native (BC1, default) | fwknop (the standard fwknop client)', 'native')
    .option('--data-dir <dir>', 'data directory of "blackcloud up"', DEFAULT_DATA_DIR)
    .option('--ports <list>', 'what the device may open, e.g. tcp/8883 (default: the broker port of "up")')
    .option('--max-open-seconds <n>', "upper bound of this device's grants (default 300)")
    .option('--json', 'print the result as one JSON object (includes the fwknop keys for --format fwknop)')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  blackcloud devices add sensor-1\n' +
        '  blackcloud devices add sensor-2 --ports tcp/8883 --max-open-seconds 60\n' +
        '  blackcloud devices add legacy-1 --format fwknop --data-dir /var/lib/blackcloud',
    )
    .action(async (name: string, options: AddOptions) => {
      const format = options.format ?? 'native';
      if (format !== 'native' && format !== 'fwknop') {
        throw new UsageError('--format', `must be "native" or "fwknop"; received ${JSON.stringify(format)}`);
      }
      const maxOpenSeconds = parseMaxOpen(options.maxOpenSeconds);
      const dir = options.dataDir ?? DEFAULT_DATA_DIR;
      await requireDataDir(dir);
      const layout = dataDirLayout(dir);
      const endpoints = (await readEndpoints(layout)) ?? {
        host: DEFAULT_HOST,
        spaPort: DEFAULT_SPA_PORT,
        mqttPort: DEFAULT_MQTT_PORT,
      };
      const access =
        options.ports === undefined
          ? [{ protocol: 'tcp' as const, port: endpoints.mqttPort }]
          : parsePorts(options.ports);
      const pki = await ensureLocalPki(layout.pkiDir, { extraIpAddresses: [endpoints.host] });
      const device = await provisionDevice({
        layout,
        deviceId: name,
        format,
        access,
        ...(maxOpenSeconds === undefined ? {} : { maxOpenSeconds }),
        endpoints,
        ca: await loadPem(pki.caCert, pki.caKey),
        caFile: pki.caCert,
        random: { randomBytes: (length) => new Uint8Array(randomBytes(length)) },
      });
      const file = displayPath(device.deviceFile);
      let fwknop: { commandLine: string; stanza: string; rcFile: string } | undefined;
      if (device.fwknop !== undefined) {
        const hint = {
          stanza: `blackcloud-${name}`,
          username: device.fwknop.username,
          server: endpoints.host,
          spaPort: endpoints.spaPort,
          access,
          keyBase64: device.fwknop.keyBase64,
          hmacKeyBase64: device.fwknop.hmacKeyBase64,
          hmacType: device.fwknop.hmacType,
        };
        const rcFile = `${layout.deviceDir(name)}/fwknoprc`;
        const stanza = fwknoprcStanza(hint);
        await writeFileAtomic(rcFile, `${stanza}\n`);
        fwknop = { commandLine: fwknopCommandLine(hint), stanza, rcFile };
      }
      if (options.json) {
        io.out(
          JSON.stringify({
            deviceId: device.deviceId,
            format: device.format,
            deviceFile: device.deviceFile,
            keyId: device.keyId,
            access: access.map(formatAccessSpec),
            ...(fwknop === undefined ? {} : { fwknop: { ...device.fwknop, ...fwknop } }),
          }),
        );
        return;
      }
      io.out(`added device ${name} (${format}, may open ${access.map(formatAccessSpec).join(',')}): ${file}`);
      io.out(`  knock and publish:  npx blackcloud pub --device ${file} -t hello -m hi`);
      if (fwknop !== undefined) {
        io.out('');
        io.out('Knock with the standard fwknop client (keys below are secrets):');
        io.out(`  ${fwknop.commandLine}`);
        io.out('');
        io.out(`or add this stanza to ~/.fwknoprc and run "fwknop -n blackcloud-${name}"`);
        io.out(
          `(saved as ${displayPath(fwknop.rcFile)}: fwknop --rc-file ${displayPath(fwknop.rcFile)} -n blackcloud-${name}):`,
        );
        io.out(fwknop.stanza);
      }
    });

  devices
    .command('list')
    .summary('list the devices of the local directory')
    .option('--data-dir <dir>', 'data directory of "blackcloud up"', DEFAULT_DATA_DIR)
    .option('--json', 'print one JSON object per device')
    .addHelpText(
      'after',
      '\nExamples:\n  blackcloud devices list\n  blackcloud devices list --data-dir /tmp/bc --json',
    )
    .action(async (options: { dataDir?: string; json?: boolean }) => {
      const dir = options.dataDir ?? DEFAULT_DATA_DIR;
      await requireDataDir(dir);
      const layout = dataDirLayout(dir);
      const document = (parseYaml(await readFile(layout.devicesFile, 'utf8')) ?? {}) as {
        devices?: {
          id?: string;
          enabled?: boolean;
          allowedAccess?: string[];
          fwknop?: unknown;
          maxOpenSeconds?: number;
        }[];
      };
      for (const device of document.devices ?? []) {
        const record = {
          id: device.id,
          enabled: device.enabled !== false,
          allowedAccess: device.allowedAccess ?? [],
          formats: device.fwknop === undefined ? ['native'] : ['native', 'fwknop'],
          maxOpenSeconds: device.maxOpenSeconds ?? 300,
          deviceFile: layout.deviceFile(String(device.id)),
        };
        io.out(
          options.json
            ? JSON.stringify(record)
            : `${record.id}\t${record.enabled ? 'enabled' : 'disabled'}\t${record.allowedAccess.join(',')}\t${record.formats.join('+')}`,
        );
      }
    });
}
