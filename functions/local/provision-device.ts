/**
 * Provisions one device in the local data directory (`blackcloud devices add`, and the demo device of
 * `blackcloud up`): keys, client certificate, device config file, then the entry in the device directory.
 *
 * Contract:
 * - The name must be a valid broker identity (1..64 of A-Z a-z 0-9 . _ -, starting with a letter or digit; not
 *   the reserved controller identity) and not already in the directory: `DeviceNameError` otherwise.
 * - Native SPA key: 32 random bytes; key id: a random u32 not used by any device in the directory.
 * - fwknop format: additionally a 32-byte Rijndael key and a 64-byte HMAC key (as `fwknop --key-gen`), HMAC
 *   SHA-256, username = the device id; the device file's default knock format is then fwknop.
 * - Files: keys/<id>.* (0600), devices/<id>/client.key and device.json (0600), client.crt and ca.crt (0644).
 * - The plain profile (`transport: 'plain'`, docs/threat-model.md "The plain profile"): no client certificate, no
 *   CA copy; device.json's `mqtt` is `{ transport: "plain", url: mqtt://host:<plain port> }`, the entry records
 *   `transport: plain`. Its knocks must be native (the connect credential derives from the BC1 knock), so the
 *   fwknop format is refused (`PlainFormatError`, naming the options and the fix).
 * - The directory entry is appended LAST (atomic rename), so a receiver watching the directory never sees a device
 *   whose key files are not written yet.
 * - Randomness comes in as a parameter.
 */
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdir, readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { BC1_KEY_LENGTH } from '../../spa/limits.ts';
import type { AccessEntry, FwknopHashType } from '../../spa/types.ts';
import { formatAccessSpec } from '../core/access-spec.ts';
import {
  type DeviceConfigFile,
  FWKNOP_PROVISIONED_HMAC_KEY_LENGTH,
  FWKNOP_PROVISIONED_KEY_LENGTH,
  serializeDeviceConfig,
} from '../core/device-config.ts';
import { DEVICE_ID_PATTERN } from '../core/device-id.ts';
import type { RandomSource } from '../core/interfaces.ts';
import { CONTROLLER_IDENTITY } from '../core/topics.ts';
import type { DeviceTransport } from '../core/transport.ts';
import { issueCertificate, type Pem, writePemFiles } from '../pki/local-ca.ts';
import type { DataDirLayout } from './data-dir.ts';
import {
  addDeviceEntry,
  type DeviceFileEntry,
  normaliseSerial,
  parseDeviceFileText,
  writeFileAtomic,
} from './device-file.ts';
import { deviceEndpointFields, type Endpoints } from './endpoints.ts';
import { DeviceNameError, PlainFormatError } from './local-errors.ts';

export type DeviceFormat = 'native' | 'fwknop';

export interface ProvisionDeviceOptions {
  readonly layout: DataDirLayout;
  readonly deviceId: string;
  readonly format: DeviceFormat;
  readonly access: readonly AccessEntry[];
  /** Upper bound of this device's grants, seconds. @default 300 */
  readonly maxOpenSeconds?: number;
  /** Where the device knocks and connects (written into its device file). */
  readonly endpoints: Endpoints;
  /** The local CA (cert + key PEM) that signs the client certificate. */
  readonly ca: Pem;
  readonly caFile: string;
  readonly random: RandomSource;
  /** @default 'tls' */
  readonly transport?: DeviceTransport;
}

export interface ProvisionedFwknop {
  readonly username: string;
  readonly keyBase64: string;
  readonly hmacKeyBase64: string;
  readonly hmacType: FwknopHashType;
}

export interface ProvisionedDevice {
  readonly deviceId: string;
  readonly format: DeviceFormat;
  readonly transport: DeviceTransport;
  readonly deviceFile: string;
  readonly keyId: number;
  readonly access: readonly AccessEntry[];
  readonly fwknop?: ProvisionedFwknop;
}

export function checkDeviceName(deviceId: string): void {
  if (!DEVICE_ID_PATTERN.test(deviceId)) {
    throw new DeviceNameError(
      deviceId,
      'must be 1..64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit (it becomes the ' +
        'certificate CN and a topic level); fix: choose a name like "sensor-12"',
    );
  }
  if (deviceId === CONTROLLER_IDENTITY) {
    throw new DeviceNameError(
      deviceId,
      "is reserved for the receiver's own broker session; fix: choose another name",
    );
  }
}

/** Device ids and native key ids already in the directory file (missing file = none). Cheap: no key files read. */
export async function directoryIds(devicesFile: string): Promise<{ ids: Set<string>; keyIds: Set<number> }> {
  const ids = new Set<string>();
  const keyIds = new Set<number>();
  let text: string;
  try {
    text = await readFile(devicesFile, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ids, keyIds };
    throw error;
  }
  const document = (parseDeviceFileText(devicesFile, text).toJS() ?? {}) as {
    devices?: { id?: unknown; nativeKeys?: { keyId?: unknown }[] }[];
  };
  for (const device of Array.isArray(document.devices) ? document.devices : []) {
    if (typeof device?.id === 'string') ids.add(device.id);
    for (const key of Array.isArray(device?.nativeKeys) ? device.nativeKeys : []) {
      if (typeof key?.keyId === 'number') keyIds.add(key.keyId);
    }
  }
  return { ids, keyIds };
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

function freshKeyId(random: RandomSource, taken: ReadonlySet<number>): number {
  for (;;) {
    const keyId = Buffer.from(random.randomBytes(4)).readUInt32BE(0);
    if (!taken.has(keyId)) return keyId;
  }
}

/** The plain profile knocks natively only: the refusal of any other format, as one line naming the options. */
export function checkTransportFormat(transport: DeviceTransport, format: DeviceFormat): void {
  if (transport === 'plain' && format !== 'native') {
    throw new PlainFormatError(
      '--transport plain needs native (BC1) knocks: its one-time connect password derives from the BC1 knock, ' +
        'and fwknop knocks carry no key id and nonce to derive it from; fix: drop --format fwknop, or keep TLS',
    );
  }
}

export async function provisionDevice(options: ProvisionDeviceOptions): Promise<ProvisionedDevice> {
  const { layout, deviceId, random } = options;
  const transport = options.transport ?? 'tls';
  checkDeviceName(deviceId);
  checkTransportFormat(transport, options.format);
  const existing = await directoryIds(layout.devicesFile);
  if (existing.ids.has(deviceId)) {
    throw new DeviceNameError(
      deviceId,
      `already exists in ${layout.devicesFile}; fix: choose another name, or remove its entry first`,
    );
  }
  await mkdir(layout.keysDir, { recursive: true, mode: 0o700 });
  const deviceDir = layout.deviceDir(deviceId);
  await mkdir(deviceDir, { recursive: true, mode: 0o700 });

  // Native SPA key.
  const keyId = freshKeyId(random, existing.keyIds);
  const nativeKey = base64(random.randomBytes(BC1_KEY_LENGTH));
  const nativeRef = layout.keyFileRef(deviceId, 'bc1');
  await writeFileAtomic(`${layout.root}/${nativeRef}`, `${nativeKey}\n`);

  // fwknop keys, for devices that knock with the standard fwknop client.
  let fwknop: ProvisionedFwknop | undefined;
  if (options.format === 'fwknop') {
    fwknop = {
      username: deviceId,
      keyBase64: base64(random.randomBytes(FWKNOP_PROVISIONED_KEY_LENGTH)),
      hmacKeyBase64: base64(random.randomBytes(FWKNOP_PROVISIONED_HMAC_KEY_LENGTH)),
      hmacType: 'sha256',
    };
    await writeFileAtomic(
      `${layout.root}/${layout.keyFileRef(deviceId, 'fwknop-key')}`,
      `${fwknop.keyBase64}\n`,
    );
    await writeFileAtomic(
      `${layout.root}/${layout.keyFileRef(deviceId, 'fwknop-hmac')}`,
      `${fwknop.hmacKeyBase64}\n`,
    );
  }

  // Client certificate: CN = device id = the broker identity. A plain device has none (nothing to steal).
  let certificateSerial: string | undefined;
  if (transport === 'tls') {
    const client = await issueCertificate(options.ca, { commonName: deviceId, kind: 'client' });
    await writePemFiles(`${deviceDir}/client.crt`, `${deviceDir}/client.key`, client);
    await copyFile(options.caFile, `${deviceDir}/ca.crt`);
    certificateSerial = normaliseSerial(new X509Certificate(client.cert).serialNumber);
  }

  // Device config file.
  const endpointFields = deviceEndpointFields(options.endpoints, transport);
  const common = {
    version: 1 as const,
    deviceId,
    spa: {
      ...endpointFields.spa,
      format: options.format,
      durationSeconds: 0,
      native: { keyId, key: nativeKey },
      ...(fwknop === undefined
        ? {}
        : {
            fwknop: {
              username: fwknop.username,
              encryptionKey: fwknop.keyBase64,
              hmacKey: fwknop.hmacKeyBase64,
              hmacType: fwknop.hmacType,
            },
          }),
    },
    access: options.access.map(formatAccessSpec),
  };
  const deviceConfig: DeviceConfigFile =
    transport === 'plain'
      ? { ...common, mqtt: { transport: 'plain', url: endpointFields.mqttUrl } }
      : {
          ...common,
          mqtt: { url: endpointFields.mqttUrl, ca: 'ca.crt', cert: 'client.crt', key: 'client.key' },
        };
  const deviceFile = layout.deviceFile(deviceId);
  await writeFileAtomic(deviceFile, serializeDeviceConfig(deviceConfig));

  // Directory entry last: the receiver may pick it up at once.
  const entry: DeviceFileEntry = {
    id: deviceId,
    enabled: true,
    allowedAccess: options.access.map(formatAccessSpec),
    ...(options.maxOpenSeconds === undefined ? {} : { maxOpenSeconds: options.maxOpenSeconds }),
    nativeKeys: [{ keyId, key: { file: nativeRef } }],
    // This enrolment's certificate only: a later device of the same name never revives it.
    ...(certificateSerial === undefined ? {} : { certificateSerial }),
    ...(transport === 'plain' ? { transport } : {}),
    ...(fwknop === undefined
      ? {}
      : {
          fwknop: {
            username: fwknop.username,
            encryptionKey: { file: layout.keyFileRef(deviceId, 'fwknop-key') },
            hmacKey: { file: layout.keyFileRef(deviceId, 'fwknop-hmac') },
            hmacType: fwknop.hmacType,
          },
        }),
  };
  await addDeviceEntry(layout.devicesFile, entry);
  return Object.freeze({
    deviceId,
    format: options.format,
    transport,
    deviceFile,
    keyId,
    access: options.access,
    ...(fwknop === undefined ? {} : { fwknop }),
  });
}

/** Path of a device file relative to the working directory, for printed commands. */
export function displayPath(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel.startsWith('..') || rel === '' ? path : rel;
}
