/**
 * The configuration of `blackcloud up`: command-line flags over an optional config file (`--config FILE`, YAML
 * or JSON) over defaults. Validated once, here, into a frozen `UpConfig`.
 *
 * Config file keys (all optional): host, spaPort, mqttPort, firewall (gate | nftables), broker (mqtts://host:port),
 * dataDir (relative to the config file), grantSeconds, clockWindowSeconds, nftTable, demoDevice (true|false),
 * prefilter (true|false, default true with firewall nftables: the kernel pre-filter of the SPA port),
 * maxAddressesPerDevice (1..1000, default 4: source addresses one device may hold grants for at once),
 * publicAddress (a host or IP, or a list: what devices on other machines dial; public-address.ts), readers (1..64,
 * default 1: SPA reader threads on the one port, docs/scaling.md "Readers"), plainPort (the plain profile's
 * listener, off unless set; docs/local.md "Devices that cannot do TLS"), brokerPlain (mqtt://host:port: the plain
 * listener of the `broker`).
 *
 * The public address: `--public-address` (repeatable, or comma-separated) over the file's `publicAddress` over the
 * one the data directory remembers (public-address.json; `loadUpConfig` reads it); `--no-public-address` forgets
 * it. With a public address and no host given, `up` listens on every address (0.0.0.0, or :: (dual-stack) when
 * one of them is IPv6); a loopback host given with a public address that is not loopback is refused (devices elsewhere
 * could not reach it).
 *
 * Contract: `resolveUpConfig` returns the merged config or throws `LocalConfigError` naming the flag or config
 * field, the value received and the fix (one line). `loadUpConfigFile` reads and parses the file with the same
 * error type. Flags win over the file; the file wins over defaults. `loadUpConfig` = `resolveUpConfig` with the
 * public address the data directory remembers.
 */
import { readFile } from 'node:fs/promises';
import { isIP, isIPv6 } from 'node:net';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { DEFAULT_CLOCK_WINDOW_MS, DEFAULT_GRANT_SECONDS, DEFAULT_SPA_PORT } from '../../spa/limits.ts';
import { describeIssue } from '../core/config-issues.ts';
import { DEFAULT_MAX_ADDRESSES_PER_DEVICE, MAX_ADDRESSES_PER_DEVICE } from '../core/deployment.ts';
import { DEFAULT_PLAIN_PORT } from '../core/transport.ts';
import { MAX_READERS } from '../receiver/udp-receiver.ts';
import { DEFAULT_DATA_DIR, dataDirLayout } from './data-dir.ts';
import {
  checkPublicAddress,
  isLoopbackAddress,
  readPublicAddresses,
  splitPublicAddresses,
} from './public-address.ts';

export const DEFAULT_MQTT_PORT = 8883;
export { DEFAULT_PLAIN_PORT } from '../core/transport.ts';
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_KEY_ROTATION_HOURS = 24;

export class LocalConfigError extends Error {
  override readonly name = 'LocalConfigError';
  /** The flag (`--spa-port`) or config field (`config file x.yaml: spaPort`) at fault. */
  readonly field: string;

  constructor(field: string, message: string, options?: { cause?: unknown }) {
    super(`${field}: ${message}`, options);
    this.field = field;
  }
}

export type FirewallKind = 'gate' | 'nftables';

export interface ExternalBroker {
  readonly host: string;
  readonly port: number;
  readonly url: string;
}

export interface UpConfig {
  readonly dataDir: string;
  /** Address the receiver and the public MQTT port bind to. */
  readonly host: string;
  /** Host written into device files: the first public address, else `host`, or loopback when `host` is a wildcard. */
  readonly advertisedHost: string;
  /** What devices on other machines dial (device files name the first; the broker certificate all). [] = none. */
  readonly publicAddresses: readonly string[];
  /** 0 = any free port. */
  readonly spaPort: number;
  /** 0 = any free port. With an external broker and nftables, the broker's own port. */
  readonly mqttPort: number;
  readonly firewall: FirewallKind;
  readonly broker?: ExternalBroker;
  /**
   * The plain profile's public port (docs/threat-model.md, "The plain profile"): devices that cannot do TLS connect
   * here, dark like the TLS port. 0 = any free port. Undefined (the default) = no plain listener: an extra port is
   * only opened when the operator asks for it. With an external broker and nftables, `brokerPlain`'s own port.
   */
  readonly plainPort?: number;
  /** The external broker's plain listener (`--broker-plain mqtt://host:port`; Mosquitto with dynsec passwords). */
  readonly brokerPlain?: ExternalBroker;
  readonly grantSeconds: number;
  readonly clockWindowMs: number;
  /** nftables table name. @default `blackcloud` */
  readonly nftTable: string;
  /** Install the kernel pre-filter of the SPA port (spa-prefilter.ts). @default firewall === 'nftables' */
  readonly prefilter: boolean;
  /** Provision `demo-device` on first run. @default true */
  readonly demoDevice: boolean;
  /** How often the controller rotates each device's SPA key (docs/key-lifecycle.md). @default 24 */
  readonly keyRotationHours: number;
  /** Source addresses one device may hold grants for at once; the oldest is released beyond. @default 4 */
  readonly maxAddressesPerDevice: number;
  /** SPA reader threads on the one port (reader-workers.ts; 1 = one socket, udp-receiver.ts). @default 1 */
  readonly readers: number;
}

/** What the command line gave, as strings or absent (commander hands over strings). */
export interface UpFlags {
  readonly dataDir?: string;
  readonly host?: string;
  readonly spaPort?: string;
  readonly mqttPort?: string;
  readonly firewall?: string;
  readonly broker?: string;
  readonly plainPort?: string;
  readonly brokerPlain?: string;
  readonly grantSeconds?: string;
  readonly nftTable?: string;
  /** `--prefilter` / `--no-prefilter`. */
  readonly prefilter?: boolean;
  readonly keyRotationHours?: string;
  readonly readers?: string;
  /** `--public-address` values (each may be comma-separated); `false` = `--no-public-address`. */
  readonly publicAddress?: readonly string[] | false;
}

const port = (what: string) =>
  z
    .int({ error: `must be an integer ${what} port 0..65535 (0 = any free port)` })
    .min(0, { error: `must be an integer ${what} port 0..65535 (0 = any free port)` })
    .max(65_535, { error: `must be an integer ${what} port 0..65535 (0 = any free port)` });

const BROKER_URL = /^mqtts:\/\/(\[[0-9a-fA-F:.]+\]|[^/:[\]]+):([0-9]{1,5})\/?$/;
const BROKER_PLAIN_URL = /^mqtt:\/\/(\[[0-9a-fA-F:.]+\]|[^/:[\]]+):([0-9]{1,5})\/?$/;

const fileSchema = z.strictObject({
  host: z
    .string({ error: 'must be an IP address of this machine, e.g. 127.0.0.1' })
    .refine((s) => isIP(s) !== 0, { error: 'must be an IP address of this machine, e.g. 127.0.0.1' })
    .optional(),
  spaPort: port('UDP').optional(),
  mqttPort: port('TCP').optional(),
  firewall: z.enum(['gate', 'nftables'], { error: 'must be "gate" or "nftables"' }).optional(),
  broker: z
    .string({ error: 'must be mqtts://host:port' })
    .regex(BROKER_URL, { error: 'must be mqtts://host:port (an external TLS broker)' })
    .optional(),
  plainPort: port('TCP').optional(),
  brokerPlain: z
    .string({ error: 'must be mqtt://host:port' })
    .regex(BROKER_PLAIN_URL, { error: "must be mqtt://host:port (the external broker's plain listener)" })
    .optional(),
  dataDir: z
    .string({ error: 'must be a directory path' })
    .min(1, { error: 'must be a directory path' })
    .optional(),
  grantSeconds: z
    .int({ error: 'must be an integer number of seconds 1..86400' })
    .min(1, { error: 'must be an integer number of seconds 1..86400' })
    .max(86_400, { error: 'must be an integer number of seconds 1..86400' })
    .optional(),
  clockWindowSeconds: z
    .int({ error: 'must be an integer number of seconds 1..3600' })
    .min(1, { error: 'must be an integer number of seconds 1..3600' })
    .max(3600, { error: 'must be an integer number of seconds 1..3600' })
    .optional(),
  nftTable: z
    .string({ error: 'must be an nftables table name' })
    .regex(/^[A-Za-z][A-Za-z0-9_]{0,31}$/, {
      error: 'must be 1..32 characters of A-Z a-z 0-9 _ starting with a letter',
    })
    .optional(),
  demoDevice: z.boolean({ error: 'must be true or false' }).optional(),
  prefilter: z.boolean({ error: 'must be true or false' }).optional(),
  readers: z
    .int({ error: `must be an integer 1..${MAX_READERS}` })
    .min(1, { error: `must be an integer 1..${MAX_READERS}` })
    .max(MAX_READERS, { error: `must be an integer 1..${MAX_READERS}` })
    .optional(),
  keyRotationHours: z
    .int({ error: 'must be an integer number of hours 1..8784' })
    .min(1, { error: 'must be an integer number of hours 1..8784' })
    .max(8784, { error: 'must be an integer number of hours 1..8784' })
    .optional(),
  publicAddress: z
    .union([z.string(), z.array(z.string()).min(1)], {
      error: 'must be a host name or IP address devices dial, or a list of them',
    })
    .optional(),
  maxAddressesPerDevice: z
    .int({ error: `must be an integer 1..${MAX_ADDRESSES_PER_DEVICE}` })
    .min(1, { error: `must be an integer 1..${MAX_ADDRESSES_PER_DEVICE}` })
    .max(MAX_ADDRESSES_PER_DEVICE, { error: `must be an integer 1..${MAX_ADDRESSES_PER_DEVICE}` })
    .optional(),
});

export type UpConfigFile = z.output<typeof fileSchema> & { readonly source: string };

/** Reads a YAML or JSON config file and validates it; relative `dataDir` is resolved against the file. */
export async function loadUpConfigFile(path: string): Promise<UpConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new LocalConfigError(
      '--config',
      `cannot read ${path} (${code}); fix: pass an existing YAML or JSON file`,
      {
        cause: error,
      },
    );
  }
  let input: unknown;
  try {
    input = parseYaml(text); // YAML is a superset of JSON: one parser for both.
  } catch (error) {
    throw new LocalConfigError(
      `config file ${path}`,
      `is not valid YAML/JSON (${(error as Error).message.split('\n')[0]}); fix the syntax`,
      { cause: error },
    );
  }
  const parsed = fileSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const line = describeIssue(parsed.error.issues[0]!, input);
    throw new LocalConfigError(`config file ${path}: field "${line.field}"`, line.message, {
      cause: parsed.error,
    });
  }
  const value = parsed.data;
  return {
    ...value,
    ...(value.dataDir === undefined ? {} : { dataDir: resolve(dirname(path), value.dataDir) }),
    source: path,
  };
}

function flagPort(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) > 65_535) {
    throw new LocalConfigError(
      flag,
      `must be a port number 0..65535 (0 = any free port); received ${JSON.stringify(text)}`,
    );
  }
  return Number(text);
}

export function parseBrokerUrl(flag: string, url: string): ExternalBroker {
  const match = BROKER_URL.exec(url);
  const port = match === null ? 0 : Number(match[2]);
  if (match === null || port < 1 || port > 65_535) {
    throw new LocalConfigError(
      flag,
      `must be mqtts://host:port, e.g. mqtts://127.0.0.1:8884 (an external broker with TLS); received ${JSON.stringify(url)}`,
    );
  }
  const host = match[1]!.replace(/^\[|\]$/g, '');
  return Object.freeze({ host, port, url });
}

/** `--broker-plain mqtt://host:port`: the external broker's plain listener (the plain profile). */
export function parseBrokerPlainUrl(flag: string, url: string): ExternalBroker {
  const match = BROKER_PLAIN_URL.exec(url);
  const port = match === null ? 0 : Number(match[2]);
  if (match === null || port < 1 || port > 65_535) {
    throw new LocalConfigError(
      flag,
      `must be mqtt://host:port, e.g. mqtt://127.0.0.1:1884 (the plain listener of the --broker Mosquitto); received ${JSON.stringify(url)}`,
    );
  }
  const host = match[1]!.replace(/^\[|\]$/g, '');
  return Object.freeze({ host, port, url });
}

/** The validated public addresses (canonical, without duplicates) or a `LocalConfigError` naming `field`. */
export function parsePublicAddresses(field: string, values: readonly string[]): string[] {
  const addresses: string[] = [];
  for (const text of splitPublicAddresses(values)) {
    const checked = checkPublicAddress(text);
    if ('problem' in checked) {
      throw new LocalConfigError(field, `${JSON.stringify(text)} ${checked.problem}`);
    }
    if (!addresses.includes(checked.address)) addresses.push(checked.address);
  }
  return addresses;
}

function publicAddressesInForce(
  flags: UpFlags,
  file: UpConfigFile | undefined,
  remembered: readonly string[],
): string[] {
  if (flags.publicAddress === false) return [];
  if (flags.publicAddress !== undefined) return parsePublicAddresses('--public-address', flags.publicAddress);
  if (file?.publicAddress !== undefined) {
    const list = typeof file.publicAddress === 'string' ? [file.publicAddress] : file.publicAddress;
    return parsePublicAddresses(`config file ${file.source}: field "publicAddress"`, list);
  }
  return [...remembered];
}

/** The data directory the flags and the file name (absolute). */
export function upDataDir(flags: UpFlags, file?: UpConfigFile): string {
  return resolve(flags.dataDir ?? file?.dataDir ?? DEFAULT_DATA_DIR);
}

/** `resolveUpConfig` with the public address the data directory remembers (public-address.json). */
export async function loadUpConfig(flags: UpFlags, file?: UpConfigFile): Promise<UpConfig> {
  const remembered =
    flags.publicAddress === undefined && file?.publicAddress === undefined
      ? await readPublicAddresses(dataDirLayout(upDataDir(flags, file)))
      : undefined;
  return resolveUpConfig(flags, file, remembered);
}

/**
 * Merges flags, file and defaults. `remembered`: the public addresses the data directory keeps (used when neither
 * the flags nor the file name one).
 */
export function resolveUpConfig(
  flags: UpFlags,
  file?: UpConfigFile,
  remembered: readonly string[] = [],
): UpConfig {
  const publicAddresses = publicAddressesInForce(flags, file, remembered);
  const givenHost = flags.host ?? file?.host;
  const host =
    givenHost ??
    (publicAddresses.length === 0 ? DEFAULT_HOST : publicAddresses.some((a) => isIPv6(a)) ? '::' : '0.0.0.0');
  if (isIP(host) === 0) {
    throw new LocalConfigError(
      '--host',
      `must be an IP address of this machine (e.g. 127.0.0.1, 0.0.0.0, ::1); received ${JSON.stringify(host)}`,
    );
  }
  const firewallText = flags.firewall ?? file?.firewall ?? 'gate';
  if (firewallText !== 'gate' && firewallText !== 'nftables') {
    throw new LocalConfigError(
      '--firewall',
      `must be "gate" (userspace, works anywhere) or "nftables" (Linux, root); received ${JSON.stringify(firewallText)}`,
    );
  }
  const brokerText = flags.broker ?? file?.broker;
  const broker = brokerText === undefined ? undefined : parseBrokerUrl('--broker', brokerText);
  const brokerPlainText = flags.brokerPlain ?? file?.brokerPlain;
  const brokerPlain =
    brokerPlainText === undefined ? undefined : parseBrokerPlainUrl('--broker-plain', brokerPlainText);
  if (brokerPlain !== undefined && broker === undefined) {
    throw new LocalConfigError(
      '--broker-plain',
      'names the plain listener of an external broker, but no --broker is given; fix: add --broker mqtts://host:port, or drop --broker-plain (the embedded broker takes --plain-port)',
    );
  }
  const givenPlainPort = flagPort('--plain-port', flags.plainPort) ?? file?.plainPort;
  // With --broker-plain the plain profile is on; under nftables its guarded port is the broker's own.
  const plainPort =
    brokerPlain !== undefined && firewallText === 'nftables'
      ? brokerPlain.port
      : (givenPlainPort ?? (brokerPlain === undefined ? undefined : DEFAULT_PLAIN_PORT));
  if (broker !== undefined && brokerPlain === undefined && givenPlainPort !== undefined) {
    throw new LocalConfigError(
      '--plain-port',
      "with --broker the plain listener is the external broker's; fix: also give --broker-plain mqtt://host:port (docs/local.md, --broker)",
    );
  }
  let grantSeconds = file?.grantSeconds ?? DEFAULT_GRANT_SECONDS;
  if (flags.grantSeconds !== undefined) {
    if (
      !/^[0-9]{1,5}$/.test(flags.grantSeconds) ||
      Number(flags.grantSeconds) < 1 ||
      Number(flags.grantSeconds) > 86_400
    ) {
      throw new LocalConfigError(
        '--grant-seconds',
        `must be an integer 1..86400; received ${JSON.stringify(flags.grantSeconds)}`,
      );
    }
    grantSeconds = Number(flags.grantSeconds);
  }
  const nftTable = flags.nftTable ?? file?.nftTable ?? 'blackcloud';
  if (!/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(nftTable)) {
    throw new LocalConfigError(
      '--nft-table',
      `must be 1..32 characters of A-Z a-z 0-9 _ starting with a letter; received ${JSON.stringify(nftTable)}`,
    );
  }
  let keyRotationHours = file?.keyRotationHours ?? DEFAULT_KEY_ROTATION_HOURS;
  if (flags.keyRotationHours !== undefined) {
    const hours = Number(flags.keyRotationHours);
    if (!/^[0-9]{1,4}$/.test(flags.keyRotationHours) || hours < 1 || hours > 8784) {
      throw new LocalConfigError(
        '--key-rotation-hours',
        `must be an integer number of hours 1..8784; received ${JSON.stringify(flags.keyRotationHours)}`,
      );
    }
    keyRotationHours = hours;
  }
  let readers = file?.readers ?? 1;
  if (flags.readers !== undefined) {
    if (
      !/^[0-9]{1,2}$/.test(flags.readers) ||
      Number(flags.readers) < 1 ||
      Number(flags.readers) > MAX_READERS
    ) {
      throw new LocalConfigError(
        '--readers',
        `must be an integer 1..${MAX_READERS} (SPA reader threads on the one port); received ${JSON.stringify(flags.readers)}`,
      );
    }
    readers = Number(flags.readers);
  }
  const remote = publicAddresses.find((address) => !isLoopbackAddress(address));
  if (remote !== undefined && isLoopbackAddress(host)) {
    throw new LocalConfigError(
      flags.host === undefined ? `config file ${file?.source}: field "host"` : '--host',
      `${host} is a loopback address, which devices dialling the public address ${remote} cannot reach; fix: ` +
        'listen on every address (--host 0.0.0.0) or on the address of the interface they reach',
    );
  }
  const wildcard = host === '0.0.0.0' || host === '::';
  return Object.freeze({
    dataDir: upDataDir(flags, file),
    host,
    advertisedHost: publicAddresses[0] ?? (wildcard ? (host === '::' ? '::1' : '127.0.0.1') : host),
    publicAddresses: Object.freeze(publicAddresses),
    spaPort: flagPort('--spa-port', flags.spaPort) ?? file?.spaPort ?? DEFAULT_SPA_PORT,
    mqttPort: flagPort('--mqtt-port', flags.mqttPort) ?? file?.mqttPort ?? DEFAULT_MQTT_PORT,
    firewall: firewallText,
    ...(broker === undefined ? {} : { broker }),
    ...(plainPort === undefined ? {} : { plainPort }),
    ...(brokerPlain === undefined ? {} : { brokerPlain }),
    grantSeconds,
    clockWindowMs:
      file?.clockWindowSeconds === undefined ? DEFAULT_CLOCK_WINDOW_MS : file.clockWindowSeconds * 1000,
    nftTable,
    prefilter: flags.prefilter ?? file?.prefilter ?? firewallText === 'nftables',
    demoDevice: file?.demoDevice ?? true,
    keyRotationHours,
    maxAddressesPerDevice: file?.maxAddressesPerDevice ?? DEFAULT_MAX_ADDRESSES_PER_DEVICE,
    readers,
  });
}

/** The config as `up --print-config` shows it (nothing secret lives here, but keep the shape explicit). */
export function printableUpConfig(config: UpConfig): Record<string, unknown> {
  return { ...config, broker: config.broker?.url, brokerPlain: config.brokerPlain?.url };
}
