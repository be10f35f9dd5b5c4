/**
 * A device bundle for a deployed black cloud: what is copied onto one device. Pure building (`bundleFiles`) and
 * one write (`writeBundle`).
 *
 * Contract:
 * - `bundleFiles` returns the files (device.json with the SPA keys, client.crt, client.key, ca.crt, and for fwknop
 *   devices fwknoprc) and, for fwknop devices, the knock hints (command line, stanza) the operator is shown.
 *   A plain device (`broker.plainPort` given, the plain profile) gets device.json alone, whose mqtt is
 *   `{ transport: "plain", url: "mqtt://<broker>:<plain port>" }`: no certificate, key or CA.
 * - `writeBundle(dir, files, tag)` writes every file 0600 into `<dir>.tmp-<tag>/` (0700) and renames it over
 *   `dir`: a reader sees the whole bundle or none; a failure removes the temporary directory.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatAccessSpec } from '../../functions/core/access-spec.ts';
import { type DeviceConfigFile, serializeDeviceConfig } from '../../functions/core/device-config.ts';
import type { FwknopSettings } from '../../functions/core/interfaces.ts';
import { fwknopCommandLine, fwknoprcStanza } from '../../functions/local/fwknop-hints.ts';
import type { Pem } from '../../functions/pki/certificate-authority.ts';
import type { AccessEntry } from '../../spa/types.ts';
import type { DeviceFormat, EnrolledDevice } from './fleet.ts';

export interface BundleInput {
  readonly deviceId: string;
  readonly format: DeviceFormat;
  readonly access: readonly AccessEntry[];
  readonly keyId: number;
  readonly nativeKey: Uint8Array;
  readonly fwknop?: FwknopSettings | undefined;
  readonly receiver: { readonly host: string; readonly port: number };
  readonly broker: { readonly host: string; readonly port: number; readonly servername: string };
  /** The device's client certificate and key, and the CA; absent for a plain device. */
  readonly tls?: { readonly client: Pem; readonly caCert: string };
  /** A plain device: the broker's plain listener port (then `tls` is absent). */
  readonly plainPort?: number;
}

export interface Bundle {
  readonly files: readonly (readonly [name: string, text: string])[];
  /** For fwknop devices: how to knock with the fwknop client (rcFile relative to the bundle). */
  readonly fwknop?: Omit<NonNullable<EnrolledDevice['fwknop']>, 'rcFile'>;
}

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');

export function bundleFiles(input: BundleInput): Bundle {
  const { fwknop } = input;
  const common = {
    version: 1 as const,
    deviceId: input.deviceId,
    spa: {
      host: input.receiver.host,
      port: input.receiver.port,
      format: input.format,
      durationSeconds: 0,
      native: { keyId: input.keyId, key: base64(input.nativeKey) },
      ...(fwknop === undefined
        ? {}
        : {
            fwknop: {
              username: fwknop.username,
              encryptionKey: base64(fwknop.encryptionKey),
              hmacKey: base64(fwknop.hmacKey),
              hmacType: fwknop.hmacType,
            },
          }),
    },
    access: input.access.map(formatAccessSpec),
  };
  const config: DeviceConfigFile =
    input.plainPort === undefined
      ? {
          ...common,
          mqtt: {
            url: `mqtts://${hostInUrl(input.broker.host)}:${input.broker.port}`,
            servername: input.broker.servername,
            ca: 'ca.crt',
            cert: 'client.crt',
            key: 'client.key',
          },
        }
      : {
          ...common,
          mqtt: { transport: 'plain', url: `mqtt://${hostInUrl(input.broker.host)}:${input.plainPort}` },
        };
  const { tls } = input;
  if ((tls === undefined) === (input.plainPort === undefined)) {
    throw new TypeError('bundleFiles needs exactly one of tls (a TLS device) and plainPort (a plain device)');
  }
  const files: [string, string][] = [
    ['device.json', serializeDeviceConfig(config)],
    ...(tls === undefined
      ? []
      : ([
          ['client.crt', tls.client.cert],
          ['client.key', tls.client.key],
          ['ca.crt', tls.caCert],
        ] as [string, string][])),
  ];
  if (fwknop === undefined) return { files };
  const hint = {
    stanza: `blackcloud-${input.deviceId}`,
    username: fwknop.username,
    server: input.receiver.host,
    spaPort: input.receiver.port,
    access: input.access,
    keyBase64: base64(fwknop.encryptionKey),
    hmacKeyBase64: base64(fwknop.hmacKey),
    hmacType: fwknop.hmacType,
  };
  const stanza = fwknoprcStanza(hint);
  files.push(['fwknoprc', `${stanza}\n`]);
  return {
    files,
    fwknop: {
      username: fwknop.username,
      keyBase64: hint.keyBase64,
      hmacKeyBase64: hint.hmacKeyBase64,
      hmacType: fwknop.hmacType,
      commandLine: fwknopCommandLine(hint),
      stanza,
    },
  };
}

/** An IPv6 literal in brackets, as URLs write it. */
function hostInUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

export async function writeBundle(dir: string, files: Bundle['files'], tag: string): Promise<void> {
  const temporary = `${dir}.tmp-${tag}`;
  try {
    await mkdir(temporary, { recursive: true, mode: 0o700 });
    for (const [name, text] of files) await writeFile(join(temporary, name), text, { mode: 0o600 });
    await rm(dir, { recursive: true, force: true });
    await rename(temporary, dir);
  } catch (error) {
    await rm(temporary, { recursive: true, force: true });
    throw error;
  }
}
