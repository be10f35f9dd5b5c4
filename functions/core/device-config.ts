/**
 * The device config file (`device.json`, mode 0600): everything one device needs to knock and to reach the broker.
 *
 *   {
 *     "version": 1,
 *     "deviceId": "demo-device",
 *     "spa": {
 *       "host": "127.0.0.1", "port": 62201,
 *       "format": "native",                         // which knock `blackcloud knock` sends by default
 *       "durationSeconds": 0,                       // 0 = the receiver's default window
 *       "native": { "keyId": 305419896, "key": "<base64 of 32 bytes>" },
 *       "fwknop": { "username": "demo", "encryptionKey": "<base64>", "hmacKey": "<base64>", "hmacType": "sha256" }
 *     },
 *     "access": ["tcp/8883"],
 *     "mqtt": { "url": "mqtts://127.0.0.1:8883", "ca": "ca.crt", "cert": "client.crt", "key": "client.key" }
 *   }
 *
 * The plain profile (docs/threat-model.md, "The plain profile"; transport.ts) for a device that cannot do TLS:
 *
 *     "mqtt": { "transport": "plain", "url": "mqtt://127.0.0.1:1883" }
 *
 * no ca/cert/key; username = device id, password = the one-time credential of each knock (connect-credential.ts),
 * so `spa.native` is required (the credential derives from the BC1 knock).
 *
 * `mqtt.ca|cert|key` are paths relative to the file. At least one of `spa.native` / `spa.fwknop` is required and
 * `spa.format` must name one that is present.
 *
 * Contract: `parseDeviceConfig` validates once, at the edge, and returns a frozen `DeviceConfig` with keys decoded
 * and paths absolute, or throws `DeviceConfigError` naming the field, the value received (keys hidden) and the fix.
 * `serializeDeviceConfig` is the inverse used when provisioning. Reading the file is the device library's
 * (device-client/load-device-config.ts): this module does no I/O.
 */
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { FWKNOP_HASH_TYPES } from '../../spa/fwknop-crypto.ts';
import { BC1_KEY_LENGTH, DEFAULT_SPA_PORT, FKO_MAX_RIJNDAEL_KEY_LENGTH } from '../../spa/limits.ts';
import type { AccessEntry, FwknopHashType } from '../../spa/types.ts';
import { parseAccessSpec } from './access-spec.ts';
import { DeviceConfigError } from './config-errors.ts';
import { describeIssue } from './config-issues.ts';
import { DEVICE_ID_PATTERN } from './device-id.ts';

export const DEVICE_CONFIG_VERSION = 1;
/** Key sizes the operator's tools generate for a new fwknop device (Rijndael key, HMAC key), in bytes. */
export const FWKNOP_PROVISIONED_KEY_LENGTH = 32;
export const FWKNOP_PROVISIONED_HMAC_KEY_LENGTH = 64;
const MAX_HMAC_KEY_LENGTH = 128;

export type KnockFormat = 'native' | 'fwknop';

export interface DeviceConfig {
  /** Absolute path of the file this came from. */
  readonly file: string;
  readonly deviceId: string;
  readonly spa: {
    readonly host: string;
    readonly port: number;
    readonly format: KnockFormat;
    readonly durationSeconds: number;
    readonly native?: { readonly keyId: number; readonly key: Uint8Array };
    readonly fwknop?: {
      readonly username: string;
      readonly encryptionKey: Uint8Array;
      readonly hmacKey: Uint8Array;
      readonly hmacType: FwknopHashType;
    };
  };
  readonly access: readonly AccessEntry[];
  readonly mqtt: TlsMqttConfig | PlainMqttConfig;
}

export interface TlsMqttConfig {
  readonly transport: 'tls';
  readonly url: string;
  /** Absolute paths. */
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** TLS server name to verify, when the URL's host is not in the broker certificate. */
  readonly servername?: string;
}

/** The plain profile: `mqtt://`, no TLS material; the password is each knock's one-time credential. */
export interface PlainMqttConfig {
  readonly transport: 'plain';
  readonly url: string;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2,3})?$/;

/** Strict base64 (padding optional, as fwknop prints keys either way); undefined when not base64. */
export function decodeBase64(text: string): Uint8Array | undefined {
  if (text === '' || !BASE64.test(text)) return undefined;
  return new Uint8Array(Buffer.from(text, 'base64'));
}

const base64Key = (what: string, min: number, max: number) =>
  z.string({ error: `must be the ${what} as a base64 string` }).refine(
    (text) => {
      const bytes = decodeBase64(text);
      return bytes !== undefined && bytes.length >= min && bytes.length <= max;
    },
    {
      error:
        min === max
          ? `must be base64 of exactly ${min} bytes (the ${what}); fix: re-provision with "blackcloud devices add"`
          : `must be base64 of ${min}..${max} bytes (the ${what}); fix: use "fwknop --key-gen" output`,
    },
  );

const MQTTS_URL = /^mqtts:\/\/[^/:]+(:[0-9]{1,5})?\/?$|^mqtts:\/\/\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?\/?$/;
const MQTT_URL = /^mqtt:\/\/[^/:]+(:[0-9]{1,5})?\/?$|^mqtt:\/\/\[[0-9a-fA-F:.]+\](:[0-9]{1,5})?\/?$/;

const relativePath = (what: string) =>
  z
    .string({ error: `must be the path of the ${what} (relative to the device file)` })
    .min(1, { error: `must be the path of the ${what} (relative to the device file)` });

const TLS_MQTT = z.strictObject(
  {
    transport: z
      .literal('tls', { error: 'must be "tls" (the default) or "plain" (a device that cannot do TLS)' })
      .optional(),
    url: z.string({ error: 'must be the broker URL, mqtts://host:port' }).regex(MQTTS_URL, {
      error:
        'must be mqtts://host:port (TLS is required: the broker authenticates devices by certificate; a device that cannot do TLS sets mqtt.transport "plain")',
    }),
    ca: relativePath('CA certificate (PEM)'),
    cert: relativePath('client certificate (PEM)'),
    key: relativePath('client private key (PEM)'),
    servername: z.string({ error: 'must be a TLS server name' }).min(1).optional(),
  },
  { error: 'must be an object { url, ca, cert, key }' },
);

const PLAIN_MQTT = z.strictObject(
  {
    transport: z.literal('plain', {
      error: 'must be "tls" (the default) or "plain" (a device that cannot do TLS)',
    }),
    url: z.string({ error: 'must be the broker plain URL, mqtt://host:port' }).regex(MQTT_URL, {
      error:
        'must be mqtt://host:port (the broker plain listener); fix: take it from "blackcloud devices add --transport plain"',
    }),
  },
  {
    error:
      'must be an object { transport: "plain", url } (a plain device has no ca, cert or key); fix: re-provision with "blackcloud devices add --transport plain"',
  },
);

const schema = z.strictObject({
  version: z.literal(DEVICE_CONFIG_VERSION, {
    error: `must be ${DEVICE_CONFIG_VERSION}; fix: this client reads version ${DEVICE_CONFIG_VERSION} device files`,
  }),
  deviceId: z.string({ error: 'must be the device id (a string)' }).regex(DEVICE_ID_PATTERN, {
    error: 'must be 1..64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit',
  }),
  spa: z.strictObject(
    {
      host: z.string({ error: 'must be the receiver host name or IP address' }).min(1, {
        error: 'must be the receiver host name or IP address',
      }),
      port: z
        .int({ error: 'must be an integer UDP port 1..65535' })
        .min(1, { error: 'must be an integer UDP port 1..65535' })
        .max(65_535, { error: 'must be an integer UDP port 1..65535' })
        .default(DEFAULT_SPA_PORT),
      format: z.enum(['native', 'fwknop'], { error: 'must be "native" or "fwknop"' }).default('native'),
      durationSeconds: z
        .int({ error: 'must be an integer number of seconds 0..65535 (0 = receiver default)' })
        .min(0, { error: 'must be an integer number of seconds 0..65535 (0 = receiver default)' })
        .max(65_535, { error: 'must be an integer number of seconds 0..65535 (0 = receiver default)' })
        .default(0),
      native: z
        .strictObject(
          {
            keyId: z
              .int({ error: 'must be the key id, an integer 0..4294967295' })
              .min(0, { error: 'must be the key id, an integer 0..4294967295' })
              .max(0xffff_ffff, { error: 'must be the key id, an integer 0..4294967295' }),
            key: base64Key('native SPA key', BC1_KEY_LENGTH, BC1_KEY_LENGTH),
          },
          { error: 'must be an object { keyId, key }' },
        )
        .optional(),
      fwknop: z
        .strictObject(
          {
            username: z
              .string({ error: 'must be the fwknop username (-U)' })
              .min(1, { error: 'must be the fwknop username (-U)' }),
            encryptionKey: base64Key('fwknop Rijndael key', 1, FKO_MAX_RIJNDAEL_KEY_LENGTH),
            hmacKey: base64Key('fwknop HMAC key', 1, MAX_HMAC_KEY_LENGTH),
            hmacType: z
              .enum(FWKNOP_HASH_TYPES, { error: `must be one of ${FWKNOP_HASH_TYPES.join(', ')}` })
              .default('sha256'),
          },
          { error: 'must be an object { username, encryptionKey, hmacKey, hmacType }' },
        )
        .optional(),
    },
    { error: 'must be an object { host, port, native | fwknop }' },
  ),
  access: z
    .array(
      z
        .string({ error: 'must be a string like "tcp/8883"' })
        .refine((s) => parseAccessSpec(s) !== undefined, {
          error: 'must look like "tcp/8883" or "udp/5683" (port 1..65535)',
        }),
      { error: 'must be a list like ["tcp/8883"]' },
    )
    .min(1, { error: 'must list 1..8 entries like "tcp/8883"' })
    .max(8, { error: 'must list 1..8 entries like "tcp/8883"' }),
  mqtt: TLS_MQTT,
});

/** The same file with the plain profile's `mqtt` (chosen by `mqtt.transport`, so errors name the exact field). */
const plainSchema = schema.extend({ mqtt: PLAIN_MQTT });

export type DeviceConfigFile = z.input<typeof schema> | z.input<typeof plainSchema>;

const isSecret = (field: string): boolean => /(^|\.)(key|encryptionKey|hmacKey)$/.test(field);

/** Validates parsed JSON. `file` names the source in errors and anchors relative paths. */
export function parseDeviceConfig(input: unknown, file: string): DeviceConfig {
  const mqttInput = (input as { mqtt?: { transport?: unknown } } | null)?.mqtt;
  const plainFile = typeof mqttInput === 'object' && mqttInput !== null && mqttInput.transport === 'plain';
  const parsed = (plainFile ? plainSchema : schema).safeParse(input);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    const line = describeIssue(first, input, isSecret);
    throw new DeviceConfigError(file, line.field, line.message, { cause: parsed.error });
  }
  const value = parsed.data;
  const { native, fwknop } = value.spa;
  if (native === undefined && fwknop === undefined) {
    throw new DeviceConfigError(
      file,
      'spa',
      'has neither "native" nor "fwknop" keys; fix: add spa.native { keyId, key } or spa.fwknop { username, encryptionKey, hmacKey }',
    );
  }
  if (value.spa[value.spa.format] === undefined) {
    throw new DeviceConfigError(
      file,
      'spa.format',
      `is "${value.spa.format}" but spa.${value.spa.format} is missing; fix: set spa.format to the one present`,
    );
  }
  if (value.mqtt.transport === 'plain' && native === undefined) {
    throw new DeviceConfigError(
      file,
      'spa.native',
      'is missing but mqtt.transport is "plain": the one-time connect password derives from a native (BC1) knock; fix: add spa.native { keyId, key } or re-provision with "blackcloud devices add --transport plain"',
    );
  }
  const base = dirname(resolve(file));
  const mqtt = value.mqtt;
  return Object.freeze({
    file: resolve(file),
    deviceId: value.deviceId,
    spa: Object.freeze({
      host: value.spa.host,
      port: value.spa.port,
      format: value.spa.format,
      durationSeconds: value.spa.durationSeconds,
      ...(native === undefined
        ? {}
        : { native: Object.freeze({ keyId: native.keyId, key: decodeBase64(native.key)! }) }),
      ...(fwknop === undefined
        ? {}
        : {
            fwknop: Object.freeze({
              username: fwknop.username,
              encryptionKey: decodeBase64(fwknop.encryptionKey)!,
              hmacKey: decodeBase64(fwknop.hmacKey)!,
              hmacType: fwknop.hmacType,
            }),
          }),
    }),
    access: Object.freeze(value.access.map((spec) => Object.freeze(parseAccessSpec(spec)!))),
    mqtt: Object.freeze(
      mqtt.transport === 'plain'
        ? { transport: 'plain' as const, url: mqtt.url }
        : {
            transport: 'tls' as const,
            url: mqtt.url,
            caFile: resolve(base, mqtt.ca),
            certFile: resolve(base, mqtt.cert),
            keyFile: resolve(base, mqtt.key),
            ...(mqtt.servername === undefined ? {} : { servername: mqtt.servername }),
          },
    ),
  });
}

/** The JSON text of a device file (what provisioning writes, mode 0600). */
export function serializeDeviceConfig(file: DeviceConfigFile): string {
  return `${JSON.stringify({ ...file, access: [...file.access] }, null, 2)}\n`;
}
