/**
 * The AWS device registry's record formats, parsed and produced (pure).
 *
 * AWS IoT thing (name = device id) in the fleet thing group, attributes (no key material, ever):
 *   enabled         "true" | "false"                       missing = disabled (fail safe)
 *   allowedAccess   comma-separated "proto/port" entries,    e.g. "tcp/8883" or "tcp/8883,udp/5683"; missing = none
 *   maxOpenSeconds  integer 1..65535                        missing = the receiver's default grant seconds
 *   grantPrefix     comma-separated ipv4=N, ipv6=N, range=CIDR, e.g. "ipv4=24,ipv6=64" or "range=198.51.100.0/22";
 *                   missing = single-address grants (prefix grants for carrier NAT, functions/core/grant-prefix.ts)
 *   transport       "tls" | "plain"                         missing = "tls" (functions/core/transport.ts; a plain
 *                   device logs in on the broker's plain listener with its knock's one-time credential)
 *
 * DynamoDB devices/keys table (partition key `pk`, S), two item kinds:
 *   device#<deviceId>  { deviceId S, keyIds NS (the device's current native key ids; a key not listed here is
 *                        refused even if its item still exists), fwknopUsername S, fwknopEncryptionKey B,
 *                        fwknopHmacKey B, fwknopHmacType S }   (fwknop* all present or all absent)
 *   key#<keyId>        { deviceId S, keyId N (u32), key B (32 bytes), notAfter N (epoch ms, optional) }
 * A native packet's key id is a direct GetItem on `key#<keyId>`: no index needed.
 * The table also holds the controller lease, `lease#<name>` (functions/aws/controller-lease.ts): neither
 * prefix, so it is never read as a device or key item.
 */
import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import { FWKNOP_HASH_TYPES } from '../../spa/fwknop-crypto.ts';
import { BC1_KEY_LENGTH } from '../../spa/limits.ts';
import type { AccessEntry, FwknopHashType } from '../../spa/types.ts';
import { formatAccessSpec, parseAccessSpec } from '../core/access-spec.ts';
import {
  checkGrantPrefixPolicy,
  type GrantPrefixPolicy,
  parseGrantPrefixPolicy,
} from '../core/grant-prefix.ts';
import type { DeviceKey, FwknopSettings } from '../core/interfaces.ts';
import { DEVICE_TRANSPORTS, type DeviceTransport } from '../core/transport.ts';
import { DeviceRecordError } from './errors.ts';

export const DEVICE_ITEM_PREFIX = 'device#';
export const KEY_ITEM_PREFIX = 'key#';
export const MAX_OPEN_SECONDS_LIMIT = 65_535;

export const deviceItemKey = (deviceId: string): string => `${DEVICE_ITEM_PREFIX}${deviceId}`;
export const keyItemKey = (keyId: number): string => `${KEY_ITEM_PREFIX}${keyId}`;

export interface ThingPolicy {
  readonly enabled: boolean;
  readonly allowedAccess: readonly AccessEntry[];
  readonly maxOpenSeconds: number;
  readonly grantPrefix?: GrantPrefixPolicy;
  /** Set only for a non-default transport (`plain`); undefined = `tls`. */
  readonly transport?: DeviceTransport;
}

export type Item = Record<string, AttributeValue>;

/** "tcp/8883,udp/5683" → entries, or undefined when any entry is malformed. Empty text = no entries. */
export function parseAccessList(text: string): AccessEntry[] | undefined {
  const entries: AccessEntry[] = [];
  for (const part of text.split(',')) {
    const trimmed = part.trim();
    if (trimmed === '') continue;
    const entry = parseAccessSpec(trimmed);
    if (entry === undefined) return undefined;
    entries.push(entry);
  }
  return entries;
}

export function formatAccessList(entries: readonly AccessEntry[]): string {
  return entries.map(formatAccessSpec).join(',');
}

/** The policy attributes of a fleet thing. Throws DeviceRecordError naming the attribute, value and fix. */
export function parseThingAttributes(
  thingName: string,
  attributes: Readonly<Record<string, string>> | undefined,
  defaultMaxOpenSeconds: number,
): ThingPolicy {
  const attrs = attributes ?? {};
  const bad = (attribute: string, value: string, fix: string) =>
    new DeviceRecordError(
      `thing ${JSON.stringify(thingName)} attribute ${attribute}=${JSON.stringify(value)}: ${fix}`,
    );

  const enabledText = attrs.enabled;
  if (enabledText !== undefined && enabledText !== 'true' && enabledText !== 'false') {
    throw bad('enabled', enabledText, 'set it to "true" or "false"');
  }
  const accessText = attrs.allowedAccess ?? '';
  const allowedAccess = parseAccessList(accessText);
  if (allowedAccess === undefined) {
    throw bad('allowedAccess', accessText, 'use comma-separated proto/port entries, e.g. "tcp/8883"');
  }
  let maxOpenSeconds = defaultMaxOpenSeconds;
  const maxText = attrs.maxOpenSeconds;
  if (maxText !== undefined) {
    maxOpenSeconds = Number(maxText);
    if (!/^\d+$/.test(maxText) || maxOpenSeconds < 1 || maxOpenSeconds > MAX_OPEN_SECONDS_LIMIT) {
      throw bad(
        'maxOpenSeconds',
        maxText,
        `use an integer 1..${MAX_OPEN_SECONDS_LIMIT} (seconds), e.g. "30"`,
      );
    }
  }
  const transportText = attrs.transport;
  if (transportText !== undefined && !(DEVICE_TRANSPORTS as readonly string[]).includes(transportText)) {
    throw bad('transport', transportText, `set it to one of ${DEVICE_TRANSPORTS.join(', ')} (missing = tls)`);
  }
  const transport =
    transportText === 'plain' ? { transport: 'plain' as const satisfies DeviceTransport } : {};
  const prefixText = attrs.grantPrefix;
  if (prefixText === undefined) {
    return { enabled: enabledText === 'true', allowedAccess, maxOpenSeconds, ...transport };
  }
  const fix = 'use comma-separated ipv4=N, ipv6=N, range=CIDR entries, e.g. "ipv4=24,ipv6=64"';
  const policy: { ipv4?: unknown; ipv6?: unknown; ranges?: string[] } = {};
  for (const part of prefixText.split(',')) {
    const [key, value, ...rest] = part.trim().split('=');
    if (value === undefined || rest.length > 0) throw bad('grantPrefix', prefixText, fix);
    if (key === 'ipv4' || key === 'ipv6') policy[key] = /^\d+$/.test(value) ? Number(value) : value;
    else if (key === 'range') policy.ranges = [...(policy.ranges ?? []), value];
    else throw bad('grantPrefix', prefixText, fix);
  }
  const problems = checkGrantPrefixPolicy(policy);
  if (problems.length > 0) throw bad('grantPrefix', prefixText, problems.join('; '));
  return {
    enabled: enabledText === 'true',
    allowedAccess,
    maxOpenSeconds,
    grantPrefix: parseGrantPrefixPolicy(policy, `thing ${thingName}`),
    ...transport,
  };
}

export interface DeviceItem {
  readonly keyIds: readonly number[];
  readonly fwknop?: FwknopSettings;
}

const isU32 = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffff_ffff;

/** The device item (keyIds, fwknop settings). Missing item = no keys. Throws DeviceRecordError when malformed. */
export function parseDeviceItem(deviceId: string, item: Item | undefined): DeviceItem {
  if (item === undefined) return { keyIds: [] };
  const bad = (attribute: string, fix: string) =>
    new DeviceRecordError(
      `devices-table item ${JSON.stringify(deviceItemKey(deviceId))} attribute ${attribute} is invalid: ${fix}`,
    );
  const keyIds = (item.keyIds?.NS ?? []).map(Number);
  if (!keyIds.every(isU32)) throw bad('keyIds', 'use a number set of u32 key ids (0..4294967295)');
  const username = item.fwknopUsername?.S;
  const encryptionKey = item.fwknopEncryptionKey?.B;
  const hmacKey = item.fwknopHmacKey?.B;
  const hmacType = item.fwknopHmacType?.S;
  const present = [username, encryptionKey, hmacKey, hmacType].filter((v) => v !== undefined).length;
  if (present === 0) return { keyIds };
  if (present !== 4 || username === undefined || encryptionKey === undefined || hmacKey === undefined) {
    throw bad(
      'fwknop*',
      'set all of fwknopUsername (S), fwknopEncryptionKey (B), fwknopHmacKey (B), fwknopHmacType (S)',
    );
  }
  if (username === '') throw bad('fwknopUsername', 'use the username the fwknop client sends (-U)');
  if (encryptionKey.length < 1 || encryptionKey.length > 32) {
    throw bad('fwknopEncryptionKey', `use 1..32 bytes of Rijndael key (got ${encryptionKey.length})`);
  }
  if (hmacKey.length < 1) throw bad('fwknopHmacKey', 'use a non-empty HMAC key');
  if (!FWKNOP_HASH_TYPES.includes(hmacType as FwknopHashType)) {
    throw bad('fwknopHmacType', `use one of ${FWKNOP_HASH_TYPES.join(', ')}`);
  }
  return {
    keyIds,
    fwknop: {
      username,
      encryptionKey: Uint8Array.from(encryptionKey),
      hmacKey: Uint8Array.from(hmacKey),
      hmacType: hmacType as FwknopHashType,
    },
  };
}

/** A key item → its device id and key. Throws DeviceRecordError when malformed. */
export function parseKeyItem(item: Item): { deviceId: string; key: DeviceKey } {
  const pk = item.pk?.S ?? '(no pk)';
  const bad = (attribute: string, fix: string) =>
    new DeviceRecordError(
      `devices-table item ${JSON.stringify(pk)} attribute ${attribute} is invalid: ${fix}`,
    );
  const deviceId = item.deviceId?.S;
  if (deviceId === undefined || deviceId === '') throw bad('deviceId', 'set it to the owning thing name');
  const keyId = Number(item.keyId?.N);
  if (!isU32(keyId) || pk !== keyItemKey(keyId))
    throw bad('keyId', `use the u32 key id that the pk names (${pk})`);
  const key = item.key?.B;
  if (key === undefined || key.length !== BC1_KEY_LENGTH) {
    throw bad('key', `use exactly ${BC1_KEY_LENGTH} bytes (B) of ChaCha20-Poly1305 key`);
  }
  const notAfterText = item.notAfter?.N;
  const notAfter = notAfterText === undefined ? undefined : Number(notAfterText);
  if (notAfter !== undefined && !Number.isSafeInteger(notAfter))
    throw bad('notAfter', 'use epoch milliseconds (N)');
  return {
    deviceId,
    key: { keyId, key: Uint8Array.from(key), ...(notAfter === undefined ? {} : { notAfter }) },
  };
}

/** Provisioning helpers (fleet tooling, tests): the items this module parses. */
export function deviceItem(deviceId: string, keyIds: readonly number[], fwknop?: FwknopSettings): Item {
  return {
    pk: { S: deviceItemKey(deviceId) },
    deviceId: { S: deviceId },
    ...(keyIds.length === 0 ? {} : { keyIds: { NS: keyIds.map(String) } }),
    ...(fwknop === undefined
      ? {}
      : {
          fwknopUsername: { S: fwknop.username },
          fwknopEncryptionKey: { B: fwknop.encryptionKey },
          fwknopHmacKey: { B: fwknop.hmacKey },
          fwknopHmacType: { S: fwknop.hmacType },
        }),
  };
}

export function keyItem(deviceId: string, key: DeviceKey): Item {
  return {
    pk: { S: keyItemKey(key.keyId) },
    deviceId: { S: deviceId },
    keyId: { N: String(key.keyId) },
    key: { B: key.key },
    ...(key.notAfter === undefined ? {} : { notAfter: { N: String(key.notAfter) } }),
  };
}
