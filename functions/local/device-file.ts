/**
 * The local device file (YAML, or JSON which is YAML too): its schema, loading into `Device` objects, and atomic
 * writes for `blackcloud devices add`.
 *
 * ```yaml
 * devices:
 *   - id: demo-device                # [A-Za-z0-9][A-Za-z0-9._-]{0,63}: the certificate CN
 *     enabled: true                  # default true
 *     allowedAccess: [tcp/8883]      # "tcp/PORT" | "udp/PORT", at least one
 *     maxOpenSeconds: 300            # default 300, 1..86400
 *     certificateSerial: 1F2E...     # optional: the serial of this enrolment's client certificate (hex); the
 *                                    # embedded broker refuses any other certificate with this CN (a name reused
 *                                    # after `devices remove` does not revive the old certificate)
 *     transport: plain               # optional, default tls: the plain profile for a device that cannot do TLS
 *                                    # (functions/core/transport.ts, docs/threat-model.md "The plain profile");
 *                                    # it needs nativeKeys (its one-time connect password derives from a BC1 knock)
 *     grantPrefix: { ipv4: 24, ipv6: 64 }   # optional, off by default: prefix grants for carrier-grade NAT
 *                                    # (ipv4 16..32, ipv6 32..128, and/or ranges: ["198.51.100.0/22"]; see
 *                                    # functions/core/grant-prefix.ts and docs/scaling.md "Prefix grants")
 *     nativeKeys:                    # 0..n
 *       - keyId: 305419896           # u32
 *         key: { file: keys/demo-device.bc1 }   # or { base64: "..." }; files relative to this file; 32 bytes
 *         notAfter: 2026-12-01T00:00:00Z        # optional
 *         generation: 3                  # optional, key rotation: 0 = before rotation
 *         state: current                 # optional, key rotation: pending (offered, not yet acked) | current
 *         createdAt: 2026-11-30T00:00:00Z          # optional, key rotation
 *     fwknop:                        # optional
 *       username: demo
 *       encryptionKey: { file: keys/demo-device.fwknop-key }   # or { base64: ... }; 1..32 bytes
 *       hmacKey: { file: keys/demo-device.fwknop-hmac }         # or { base64: ... }; 1..128 bytes
 *       hmacType: sha256             # default sha256
 * ```
 *
 * Contract:
 * - `loadDeviceFile` validates once, at the edge, and returns frozen `Device` objects. Problems are reported in
 *   ONE `DeviceFileError` (all schema problems together; once the schema is valid, all duplicate and key-file
 *   problems together), each issue naming the field path, the value received (key material always redacted)
 *   and the fix.
 * - Device ids, native key ids and fwknop HMAC keys must be unique across the file.
 * - Key files hold base64 (padded or not) of the key bytes, and must not be readable by group or others
 *   (mode 0600), unless `checkKeyFileMode: false`; a file with inline `base64` keys must be 0600 too.
 * - `writeDeviceFile` / `addDeviceEntry` validate the structure (not the key files, which may be written later),
 *   then replace the file atomically (temp file + rename), mode 0600; `addDeviceEntry` keeps comments.
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import { isSeq, parseDocument, stringify } from 'yaml';
import { z } from 'zod';
import { FWKNOP_HASH_TYPES } from '../../spa/fwknop-crypto.ts';
import { BC1_KEY_LENGTH } from '../../spa/limits.ts';
import type { AccessEntry, FwknopHashType, Protocol } from '../../spa/types.ts';
import { ACCESS_SPEC_PATTERN } from '../core/access-spec.ts';
import { DEVICE_ID_PATTERN } from '../core/device-id.ts';
import { checkGrantPrefixPolicy, parseGrantPrefixPolicy } from '../core/grant-prefix.ts';
import type { Device, DeviceKey, FwknopSettings } from '../core/interfaces.ts';
import { DEVICE_TRANSPORTS } from '../core/transport.ts';
import { withDevicesFileLock } from './devices-file-lock.ts';
import { replaceFile } from './replace-file.ts';

// ------------------------------------------------------------------------------------------------
// Schema (the file form). Messages say what is expected and how to fix it.
// ------------------------------------------------------------------------------------------------

export const DEFAULT_MAX_OPEN_SECONDS = 300;
export const MAX_OPEN_SECONDS_LIMIT = 86_400;
const U32_MAX = 0xffff_ffff;
const FWKNOP_ENCRYPTION_KEY_MAX = 32;
const FWKNOP_HMAC_KEY_MAX = 128;

const accessSchema = z
  .string({ error: 'expected a string "tcp/PORT" or "udp/PORT", e.g. "tcp/8883"' })
  .regex(ACCESS_SPEC_PATTERN, {
    error: 'expected "tcp/PORT" or "udp/PORT" with PORT in 1..65535, e.g. "tcp/8883"',
  })
  .refine((text) => Number(text.split('/')[1]) <= 65_535, {
    error: 'PORT must be in 1..65535, e.g. "tcp/8883"',
  });

export const keyRefSchema = z
  .strictObject(
    {
      file: z.string({ error: 'expected a path (relative to the devices file)' }).min(1).optional(),
      base64: z.string({ error: 'expected base64 text' }).min(1).optional(),
    },
    { error: 'expected { file: PATH } or { base64: "..." }' },
  )
  .refine((ref) => (ref.file === undefined) !== (ref.base64 === undefined), {
    error: 'expected exactly one of { file: PATH } or { base64: "..." }',
  });

const NOT_AFTER_EXPECTED = 'expected an ISO 8601 date-time with a time zone, e.g. 2026-12-01T00:00:00Z';
const notAfterSchema = z.union([z.iso.datetime({ offset: true, error: NOT_AFTER_EXPECTED }), z.date()], {
  error: NOT_AFTER_EXPECTED,
});

export const nativeKeySchema = z.strictObject({
  keyId: z
    .number({ error: 'expected an integer 0..4294967295 (u32), e.g. 305419896' })
    .int({ error: 'expected an integer 0..4294967295 (u32)' })
    .min(0, { error: 'expected an integer 0..4294967295 (u32)' })
    .max(U32_MAX, { error: 'expected an integer 0..4294967295 (u32)' }),
  key: keyRefSchema,
  notAfter: notAfterSchema.optional(),
  // Key rotation (functions/key-rotation/): the generation, whether it awaits the device's ack, when it was made.
  generation: z.number({ error: 'expected an integer >= 0' }).int().min(0).optional(),
  state: z.enum(['pending', 'current'], { error: 'expected "pending" or "current"' }).optional(),
  createdAt: notAfterSchema.optional(),
});

export const fwknopSettingsSchema = z.strictObject({
  username: z
    .string({ error: "expected the fwknop username (the client's -U, default its OS user)" })
    .min(1, { error: 'expected a non-empty username' })
    .max(48, { error: 'expected at most 48 characters' }),
  encryptionKey: keyRefSchema,
  hmacKey: keyRefSchema,
  hmacType: z
    .enum(FWKNOP_HASH_TYPES, { error: `expected one of ${FWKNOP_HASH_TYPES.join(', ')}` })
    .default('sha256'),
});

export const deviceEntrySchema = z.strictObject({
  id: z
    .string({
      error: 'expected a device id: 1..64 characters of a-z A-Z 0-9 . _ -, starting with a letter or digit',
    })
    .regex(DEVICE_ID_PATTERN, {
      error:
        'expected 1..64 characters of a-z A-Z 0-9 . _ -, starting with a letter or digit (e.g. "demo-device")',
    }),
  enabled: z.boolean({ error: 'expected true or false' }).default(true),
  allowedAccess: z
    .array(accessSchema, { error: 'expected a list such as [tcp/8883]' })
    .min(1, { error: 'expected at least one entry, e.g. [tcp/8883]' }),
  maxOpenSeconds: z
    .number({ error: `expected an integer 1..${MAX_OPEN_SECONDS_LIMIT} (seconds)` })
    .int({ error: `expected an integer 1..${MAX_OPEN_SECONDS_LIMIT} (seconds)` })
    .min(1, { error: `expected an integer 1..${MAX_OPEN_SECONDS_LIMIT} (seconds)` })
    .max(MAX_OPEN_SECONDS_LIMIT, { error: `expected an integer 1..${MAX_OPEN_SECONDS_LIMIT} (seconds)` })
    .default(DEFAULT_MAX_OPEN_SECONDS),
  nativeKeys: z.array(nativeKeySchema, { error: 'expected a list of { keyId, key } entries' }).default([]),
  fwknop: fwknopSettingsSchema.optional(),
  certificateSerial: z
    .string({ error: 'expected the hexadecimal serial of the client certificate' })
    .regex(/^[0-9A-Fa-f]{1,64}$/, { error: 'expected the hexadecimal serial of the client certificate' })
    .optional(),
  transport: z
    .enum(DEVICE_TRANSPORTS, {
      error:
        'expected "tls" (the default: mutual TLS) or "plain" (a device that cannot do TLS; docs/threat-model.md)',
    })
    .optional(),
  grantPrefix: z
    .unknown()
    .superRefine((value, ctx) => {
      for (const problem of checkGrantPrefixPolicy(value)) ctx.addIssue({ code: 'custom', message: problem });
    })
    .optional(),
});

export const deviceFileSchema = z.strictObject(
  { devices: z.array(deviceEntrySchema, { error: 'expected a list of devices under "devices:"' }) },
  { error: 'expected a mapping with a "devices:" list at the top level' },
);

/** One device as written in the file (defaults may be omitted). */
export type DeviceFileEntry = z.input<typeof deviceEntrySchema>;
/** One device as validated (defaults filled in, keys still references). */
export type ParsedDeviceEntry = z.output<typeof deviceEntrySchema>;
export type KeyRef = z.output<typeof keyRefSchema>;

// ------------------------------------------------------------------------------------------------
// The one error.
// ------------------------------------------------------------------------------------------------

export interface DeviceFileIssue {
  /** Field path in the file, e.g. `devices[0].allowedAccess[1]`; '' for the whole file. */
  readonly path: string;
  /** The value received, rendered for humans; key material is '<redacted>'. */
  readonly value: string;
  /** What was expected and how to fix it. */
  readonly message: string;
}

export class DeviceFileError extends Error {
  override readonly name = 'DeviceFileError';
  readonly file: string;
  readonly issues: readonly DeviceFileIssue[];

  constructor(file: string, issues: readonly DeviceFileIssue[], options?: { cause?: unknown }) {
    const lines = issues.map(
      (issue) => `  - ${issue.path === '' ? '(file)' : issue.path}: got ${issue.value}; ${issue.message}`,
    );
    super(
      `devices file ${file} is invalid (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n${lines.join('\n')}`,
      options,
    );
    this.file = file;
    this.issues = issues;
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

const SECRET_FIELDS = new Set(['base64']);

/** Human rendering of a received value; never prints key material or nested objects' contents. */
export function describeFileValue(value: unknown, path: readonly PropertyKey[] = []): string {
  const last = path[path.length - 1];
  if (typeof last === 'string' && SECRET_FIELDS.has(last) && value !== undefined) return '<redacted>';
  if (value === undefined) return 'nothing';
  if (value === null) return 'null';
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (typeof value === 'object') {
    const keys = Object.keys(value);
    return keys.length === 0 ? 'an empty mapping' : `a mapping with ${keys.join(', ')}`;
  }
  if (typeof value === 'string') {
    return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  }
  return String(value);
}

function issuesFromZod(error: z.ZodError): DeviceFileIssue[] {
  return error.issues.map((issue) => {
    const input = (issue as { input?: unknown }).input;
    let message = issue.message;
    if (issue.code === 'unrecognized_keys') {
      message = `unknown field${issue.keys.length === 1 ? '' : 's'} ${issue.keys.map((k) => `"${k}"`).join(', ')}: remove or correct the spelling`;
    } else if (issue.code === 'invalid_type' && input === undefined) {
      message = `missing: ${message}`;
    }
    return { path: formatPath(issue.path), value: describeFileValue(input, issue.path), message };
  });
}

// ------------------------------------------------------------------------------------------------
// Loading.
// ------------------------------------------------------------------------------------------------

export interface LoadDeviceFileOptions {
  /** Refuse key files (and files with inline keys) readable by group or others. @default true (not on Windows) */
  readonly checkKeyFileMode?: boolean;
}

const BASE64_TEXT = /^[A-Za-z0-9+/]+={0,2}$/;

function decodeBase64Strict(text: string): Uint8Array | undefined {
  const trimmed = text.trim();
  if (!BASE64_TEXT.test(trimmed)) return undefined;
  const bytes = Buffer.from(trimmed, 'base64');
  if (bytes.toString('base64').replace(/=+$/, '') !== trimmed.replace(/=+$/, '')) return undefined;
  return new Uint8Array(bytes);
}

function isGroupOrWorldReadable(mode: number): boolean {
  return (mode & 0o077) !== 0;
}

interface KeyContext {
  readonly baseDir: string;
  readonly checkMode: boolean;
  readonly issues: DeviceFileIssue[];
}

async function resolveKey(
  ref: KeyRef,
  path: string,
  length: { min: number; max: number; what: string },
  context: KeyContext,
): Promise<Uint8Array | undefined> {
  const sizeText = length.min === length.max ? `${length.min} bytes` : `${length.min}..${length.max} bytes`;
  if (ref.base64 !== undefined) {
    const bytes = decodeBase64Strict(ref.base64);
    if (bytes === undefined || bytes.length < length.min || bytes.length > length.max) {
      context.issues.push({
        path: `${path}.base64`,
        value: '<redacted>',
        message: `expected base64 of ${sizeText} (${length.what})${bytes === undefined ? '' : `, got ${bytes.length} bytes`}`,
      });
      return undefined;
    }
    return bytes;
  }
  const file = resolvePath(context.baseDir, ref.file!);
  let text: string;
  try {
    if (context.checkMode) {
      const info = await stat(file);
      if (isGroupOrWorldReadable(info.mode)) {
        context.issues.push({
          path: `${path}.file`,
          value: JSON.stringify(ref.file),
          message: `key file ${file} has mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}: run "chmod 600 ${file}"`,
        });
        return undefined;
      }
    }
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    context.issues.push({
      path: `${path}.file`,
      value: JSON.stringify(ref.file),
      message:
        code === 'ENOENT'
          ? `key file ${file} does not exist: create it (base64 of ${sizeText}) or correct the path (relative to the devices file)`
          : `key file ${file} cannot be read (${code ?? String(error)}): check its permissions`,
    });
    return undefined;
  }
  const bytes = decodeBase64Strict(text);
  if (bytes === undefined || bytes.length < length.min || bytes.length > length.max) {
    context.issues.push({
      path: `${path}.file`,
      value: JSON.stringify(ref.file),
      message: `key file ${file} must hold base64 of ${sizeText} (${length.what})${bytes === undefined ? ', found something else' : `, found ${bytes.length} bytes`}`,
    });
    return undefined;
  }
  return bytes;
}

const NATIVE_KEY = { min: BC1_KEY_LENGTH, max: BC1_KEY_LENGTH, what: 'a BC1 ChaCha20-Poly1305 key' };

function parseAccess(text: string): AccessEntry {
  const [protocol, port] = text.split('/') as [Protocol, string];
  return Object.freeze({ protocol, port: Number(port) });
}

function notAfterMs(value: string | Date | undefined): number | undefined {
  if (value === undefined) return undefined;
  return value instanceof Date ? value.getTime() : Date.parse(value);
}

/** Duplicate device ids and native key ids across the file, as issues. */
export function findDuplicates(
  entries: readonly { id: string; nativeKeys?: readonly { keyId: number }[] }[],
): DeviceFileIssue[] {
  const issues: DeviceFileIssue[] = [];
  const ids = new Map<string, number>();
  const keyIds = new Map<number, string>();
  entries.forEach((entry, i) => {
    const first = ids.get(entry.id);
    if (first !== undefined) {
      issues.push({
        path: `devices[${i}].id`,
        value: JSON.stringify(entry.id),
        message: `duplicate device id (also devices[${first}].id): give every device its own id`,
      });
    } else ids.set(entry.id, i);
    (entry.nativeKeys ?? []).forEach((key, j) => {
      const here = `devices[${i}].nativeKeys[${j}].keyId`;
      const other = keyIds.get(key.keyId);
      if (other !== undefined) {
        issues.push({
          path: here,
          value: String(key.keyId),
          message: `duplicate key id (also ${other}): every native key needs its own id (blackcloud devices add generates one)`,
        });
      } else keyIds.set(key.keyId, here);
    });
  });
  return issues;
}

/** Validates the parsed document; returns entries or throws DeviceFileError. */
export function validateDeviceDocument(file: string, document: unknown): ParsedDeviceEntry[] {
  const parsed = deviceFileSchema.safeParse(document ?? {}, { reportInput: true });
  if (!parsed.success) throw new DeviceFileError(file, issuesFromZod(parsed.error));
  const duplicates = findDuplicates(parsed.data.devices);
  if (duplicates.length > 0) throw new DeviceFileError(file, duplicates);
  return parsed.data.devices;
}

/** The devices file parsed, comments and layout kept (yaml's Document). */
export type DeviceFileDocument = ReturnType<typeof parseDocument>;

/**
 * The devices file as a YAML document (comments kept, for edits): the one way every reader opens it, so a missing,
 * unreadable or corrupt file is the same `DeviceFileError` everywhere (`up`, the device commands, key rotation).
 */
export async function readDeviceFileDocument(file: string): Promise<DeviceFileDocument> {
  return parseDeviceFileText(file, await readDeviceFileText(file));
}

/** The devices file's text; a missing or unreadable file is the same `DeviceFileError` as in readDeviceFileDocument. */
export async function readDeviceFileText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new DeviceFileError(
      file,
      [
        {
          path: '',
          value: code ?? String(error),
          message:
            code === 'ENOENT'
              ? 'the file does not exist: create it (blackcloud devices add) or pass the right path'
              : 'the file cannot be read: check its permissions',
        },
      ],
      { cause: error },
    );
  }
}

/** Parses the text of the devices file; YAML errors are a `DeviceFileError` naming line, column and the fix. */
export function parseDeviceFileText(file: string, text: string): DeviceFileDocument {
  const document = parseDocument(text, { prettyErrors: true });
  if (document.errors.length > 0) {
    throw new DeviceFileError(
      file,
      document.errors.map((error) => ({
        path: '',
        value: `YAML error at line ${error.linePos?.[0]?.line ?? '?'}, column ${error.linePos?.[0]?.col ?? '?'}`,
        message: `${(error.message.split('\n')[0] ?? '').replace(/:$/, '')}: fix the YAML syntax`,
      })),
    );
  }
  return document;
}

/** The devices file read and validated (no key files read): what the device commands list and edit. */
export async function readDeviceEntries(file: string): Promise<ParsedDeviceEntry[]> {
  return validateDeviceDocument(file, (await readDeviceFileDocument(file)).toJS());
}

/** A devices file holding inline keys must not be readable by group or others. */
async function checkInlineKeyFileMode(file: string, context: KeyContext): Promise<void> {
  const info = await stat(file);
  if (isGroupOrWorldReadable(info.mode)) {
    context.issues.push({
      path: '',
      value: `mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}`,
      message: `the file holds inline base64 keys: run "chmod 600 ${file}" or move the keys to key files`,
    });
  }
}

/**
 * Reads, validates and resolves the devices file into frozen `Device` objects. Throws `DeviceFileError` listing
 * every problem.
 */
export async function loadDeviceFile(path: string, options: LoadDeviceFileOptions = {}): Promise<Device[]> {
  const file = resolvePath(path);
  const entries = await readDeviceEntries(file);
  const checkMode = (options.checkKeyFileMode ?? true) && process.platform !== 'win32';
  const context: KeyContext = { baseDir: dirname(file), checkMode, issues: [] };

  if (checkMode && entries.some(hasInlineKey)) await checkInlineKeyFileMode(file, context);

  const devices: Device[] = [];
  for (const [i, entry] of entries.entries()) {
    if (entry.transport === 'plain' && entry.nativeKeys.length === 0) {
      context.issues.push({
        path: `devices[${i}].transport`,
        value: '"plain"',
        message:
          'a plain device logs in with a one-time credential derived from its native (BC1) knock, and this one has no nativeKeys; fix: add nativeKeys or remove "transport: plain"',
      });
    }
    const nativeKeys: DeviceKey[] = [];
    for (const [j, native] of entry.nativeKeys.entries()) {
      const key = await resolveKey(native.key, `devices[${i}].nativeKeys[${j}].key`, NATIVE_KEY, context);
      const notAfter = notAfterMs(native.notAfter);
      if (key !== undefined) {
        nativeKeys.push(
          Object.freeze({ keyId: native.keyId, key, ...(notAfter === undefined ? {} : { notAfter }) }),
        );
      }
    }
    let fwknop: FwknopSettings | undefined;
    if (entry.fwknop !== undefined) {
      const base = `devices[${i}].fwknop`;
      const encryptionKey = await resolveKey(
        entry.fwknop.encryptionKey,
        `${base}.encryptionKey`,
        { min: 1, max: FWKNOP_ENCRYPTION_KEY_MAX, what: 'fwknop KEY_BASE64' },
        context,
      );
      const hmacKey = await resolveKey(
        entry.fwknop.hmacKey,
        `${base}.hmacKey`,
        { min: 1, max: FWKNOP_HMAC_KEY_MAX, what: 'fwknop HMAC_KEY_BASE64' },
        context,
      );
      if (encryptionKey !== undefined && hmacKey !== undefined) {
        fwknop = Object.freeze({
          username: entry.fwknop.username,
          encryptionKey,
          hmacKey,
          hmacType: entry.fwknop.hmacType as FwknopHashType,
        });
      }
    }
    devices.push(
      Object.freeze({
        id: entry.id,
        enabled: entry.enabled,
        allowedAccess: Object.freeze(entry.allowedAccess.map(parseAccess)),
        maxOpenSeconds: entry.maxOpenSeconds,
        nativeKeys: Object.freeze(nativeKeys),
        ...(fwknop === undefined ? {} : { fwknop }),
        ...(entry.certificateSerial === undefined
          ? {}
          : { certificateSerial: normaliseSerial(entry.certificateSerial) }),
        ...(entry.grantPrefix === undefined
          ? {}
          : { grantPrefix: parseGrantPrefixPolicy(entry.grantPrefix, `device ${entry.id}`) }),
        ...(entry.transport === undefined ? {} : { transport: entry.transport }),
      }),
    );
  }
  context.issues.push(...duplicateHmacKeys(devices));
  if (context.issues.length > 0) throw new DeviceFileError(file, context.issues);
  return devices;
}

/**
 * Resolves ONE native key reference of the devices file at `path` (`where` is its field path, for the error), with
 * the checks `loadDeviceFile` applies to it: a key file must be 0600, an inline key needs the devices file 0600.
 * Reads nothing else, so looking up one key costs one key file whatever the fleet size. Throws DeviceFileError.
 */
export async function loadNativeKey(
  path: string,
  ref: KeyRef,
  where: string,
  options: LoadDeviceFileOptions = {},
): Promise<Uint8Array> {
  const file = resolvePath(path);
  const checkMode = (options.checkKeyFileMode ?? true) && process.platform !== 'win32';
  const context: KeyContext = { baseDir: dirname(file), checkMode, issues: [] };
  if (checkMode && ref.base64 !== undefined) await checkInlineKeyFileMode(file, context);
  const key = context.issues.length > 0 ? undefined : await resolveKey(ref, where, NATIVE_KEY, context);
  if (key === undefined) throw new DeviceFileError(file, context.issues);
  return key;
}

/** One text per certificate serial: upper-case hex without leading zeros (how Node's TLS reports it may vary). */
export function normaliseSerial(serial: string): string {
  return serial.toUpperCase().replace(/^0+(?=.)/, '');
}

function hasInlineKey(entry: ParsedDeviceEntry): boolean {
  return (
    entry.nativeKeys.some((native) => native.key.base64 !== undefined) ||
    entry.fwknop?.encryptionKey.base64 !== undefined ||
    entry.fwknop?.hmacKey.base64 !== undefined
  );
}

/** Two devices with one fwknop HMAC key cannot be told apart (fwknop carries no key id). */
function duplicateHmacKeys(devices: readonly Device[]): DeviceFileIssue[] {
  const issues: DeviceFileIssue[] = [];
  const seen = new Map<string, number>();
  devices.forEach((device, i) => {
    if (device.fwknop === undefined) return;
    const fingerprint = Buffer.from(device.fwknop.hmacKey).toString('base64');
    const first = seen.get(fingerprint);
    if (first !== undefined) {
      issues.push({
        path: `devices[${i}].fwknop.hmacKey`,
        value: '<redacted>',
        message: `same HMAC key as devices[${first}].fwknop.hmacKey: generate a key per device (fwknop --key-gen)`,
      });
    } else seen.set(fingerprint, i);
  });
  return issues;
}

// ------------------------------------------------------------------------------------------------
// Writing (for `blackcloud devices add`).
// ------------------------------------------------------------------------------------------------

const FILE_MODE = 0o600;

/** Writes `text` to `path` atomically (replace-file.ts), mode 0600, creating its directory (0700) if missing. */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const file = resolvePath(path);
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  await replaceFile(file, text, FILE_MODE);
}

/** Replaces the devices file with exactly these entries (validated first; throws DeviceFileError). Returns the text written. */
export async function writeDeviceFile(path: string, entries: readonly DeviceFileEntry[]): Promise<string> {
  const file = resolvePath(path);
  validateDeviceDocument(file, { devices: entries });
  const text = stringify({ devices: entries });
  await writeFileAtomic(file, text);
  return text;
}

/**
 * Appends one device to the file (created when missing), keeping the existing text and comments. Throws
 * DeviceFileError when the entry is invalid or its id / key ids are already taken.
 */
export async function addDeviceEntry(path: string, entry: DeviceFileEntry): Promise<void> {
  const file = resolvePath(path);
  await withDevicesFileLock(file, () => appendDeviceEntry(file, entry));
}

async function appendDeviceEntry(file: string, entry: DeviceFileEntry): Promise<void> {
  let existing: string | undefined;
  try {
    existing = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  if (existing === undefined || existing.trim() === '') {
    await writeDeviceFile(file, [entry]);
    return;
  }
  const document = parseDeviceFileText(file, existing);
  const current = validateDeviceDocument(file, document.toJS());
  validateDeviceDocument(file, { devices: [...current, entry] });
  const list = document.get('devices', true);
  if (isSeq(list)) list.add(document.createNode(entry));
  else document.set('devices', document.createNode([entry]));
  await writeFileAtomic(file, document.toString());
}
