/**
 * The decrypted fwknop plaintext ("encoded SPA data"): colon-separated fields, the last one a digest of the rest
 * (docs/protocol-fwknop.md [FKO-8]..[FKO-12]):
 *
 *   random : base64(username) : timestamp : 3.0.0 : type : base64(message)
 *     [: base64(nat host,port)]   types 2, 4, 5, 6
 *     [: base64(server_auth)]     optional
 *     [: client timeout]          types 3, 4, 6
 *     : base64(digest of everything before this colon)
 *
 * Contract:
 * - `parseFwknopPlaintext` never throws on any bytes; it checks every field, each against one strict grammar,
 *   and returns the first failing rule's reason. It accepts exactly what `serializeFwknopPlaintext` can produce.
 * - The validators (`parseAccessMessage`, `isValidUsername`, ...) are shared with the encoder, so the encoder never
 *   emits a plaintext the parser would reject.
 * Pure: node:crypto (digests) only.
 */
import { asciiToBytes, bytesToAscii, decodeBase64, encodeBase64, isPrintableAscii } from './fwknop-base64.ts';
import { constantTimeEqualText, digestBase64, digestTypesOfLength } from './fwknop-crypto.ts';
import type {
  FwknopAccess,
  FwknopFieldReason,
  FwknopMessage,
  FwknopMessageType,
  FwknopNatAccess,
} from './fwknop-types.ts';
import {
  FKO_MAX_CLIENT_TIMEOUT,
  FKO_MAX_FIELD_B64_LENGTH,
  FKO_MAX_FIELDS,
  FKO_MAX_MESSAGE_TYPE,
  FKO_MAX_SERVER_AUTH_LENGTH,
  FKO_MAX_TIMESTAMP,
  FKO_MAX_TIMESTAMP_DIGITS,
  FKO_MAX_USERNAME_B64_LENGTH,
  FKO_MAX_USERNAME_LENGTH,
  FKO_MIN_CLIENT_TIMEOUT,
  FKO_MIN_FIELDS,
  FKO_MIN_MESSAGE_TYPE,
  FKO_PROTOCOL_VERSION,
  FKO_RANDOM_DIGITS,
  PORT_MAX,
  PORT_MIN,
} from './limits.ts';
import { ok, type Result, reject } from './result.ts';
import type { AccessEntry, FwknopHashType, Protocol } from './types.ts';

// Message types (lib/fko.h fko_message_type_t).
export const FKO_COMMAND_MSG = 0;
export const FKO_ACCESS_MSG = 1;
export const FKO_NAT_ACCESS_MSG = 2;
export const FKO_CLIENT_TIMEOUT_ACCESS_MSG = 3;
export const FKO_CLIENT_TIMEOUT_NAT_ACCESS_MSG = 4;
export const FKO_LOCAL_NAT_ACCESS_MSG = 5;
export const FKO_CLIENT_TIMEOUT_LOCAL_NAT_ACCESS_MSG = 6;

const FIELD_SEPARATOR = ':';
/** [FKO-8] the only bytes a plaintext may hold: base64 fields, decimal fields, the version's dots, colons. */
const PLAINTEXT_CHARS = /^[A-Za-z0-9+/.:]+$/;
const RANDOM_FIELD = new RegExp(`^[0-9]{${FKO_RANDOM_DIGITS}}$`);
/** Canonical unsigned decimal: no sign, no leading zero (except "0"). */
const DECIMAL = /^(?:0|[1-9][0-9]*)$/;
const MESSAGE_TYPE_FIELD = new RegExp(`^[${FKO_MIN_MESSAGE_TYPE}-${FKO_MAX_MESSAGE_TYPE}]$`);
/** Characters libfko's validate_username refuses besides controls and non-ASCII: " / \ [ ] : ; | = , + * ? < > */
const USERNAME_FORBIDDEN = new Set('"/\\[]:;|=,+*?<>');
const HOSTNAME_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const MAX_HOSTNAME_LENGTH = 253;
/** Decoded size that still fits a base64 field of FKO_MAX_FIELD_B64_LENGTH characters. */
export const FKO_MAX_FIELD_TEXT_LENGTH = (FKO_MAX_FIELD_B64_LENGTH / 4) * 3;

/** Whether the type carries a NAT access field (2, 4, 5, 6). */
export function hasNatAccess(type: FwknopMessageType): boolean {
  return (
    type === FKO_NAT_ACCESS_MSG ||
    type === FKO_CLIENT_TIMEOUT_NAT_ACCESS_MSG ||
    type === FKO_LOCAL_NAT_ACCESS_MSG ||
    type === FKO_CLIENT_TIMEOUT_LOCAL_NAT_ACCESS_MSG
  );
}

/** Whether the type carries a client timeout field (3, 4, 6). */
export function hasClientTimeout(type: FwknopMessageType): boolean {
  return (
    type === FKO_CLIENT_TIMEOUT_ACCESS_MSG ||
    type === FKO_CLIENT_TIMEOUT_NAT_ACCESS_MSG ||
    type === FKO_CLIENT_TIMEOUT_LOCAL_NAT_ACCESS_MSG
  );
}

/** Canonical decimal `text` as a number within [min, max], else undefined. */
function parseDecimal(text: string, maxDigits: number, min: number, max: number): number | undefined {
  if (text.length > maxDigits || !DECIMAL.test(text)) return undefined;
  const value = Number(text);
  return value >= min && value <= max ? value : undefined;
}

/** A strict dotted quad: four canonical decimals 0..255. */
export function isValidIpv4(text: string): boolean {
  const octets = text.split('.');
  return octets.length === 4 && octets.every((octet) => parseDecimal(octet, 3, 0, 255) !== undefined);
}

function parsePort(text: string): number | undefined {
  return parseDecimal(text, 5, PORT_MIN, PORT_MAX);
}

/** [FKO-10] 1..48 bytes of printable ASCII without libfko's forbidden characters (its base64 fits 64). */
export function isValidUsername(username: string): boolean {
  if (username.length < 1 || username.length > FKO_MAX_USERNAME_LENGTH) return false;
  if (!isPrintableAscii(username)) return false;
  for (const char of username) if (USERNAME_FORBIDDEN.has(char)) return false;
  return true;
}

/** [FKO-11] `IPv4,(tcp|udp)/port[,(tcp|udp)/port...]`; undefined if the text is anything else. */
export function parseAccessMessage(text: string): FwknopAccess | undefined {
  const parts = text.split(',');
  const allowIp = parts[0];
  if (allowIp === undefined || !isValidIpv4(allowIp) || parts.length < 2) return undefined;
  const entries: AccessEntry[] = [];
  for (const spec of parts.slice(1)) {
    const slash = spec.indexOf('/');
    const protocol = spec.slice(0, slash);
    if (slash < 0 || (protocol !== 'tcp' && protocol !== 'udp')) return undefined;
    const port = parsePort(spec.slice(slash + 1));
    if (port === undefined) return undefined;
    entries.push(Object.freeze({ protocol: protocol as Protocol, port }));
  }
  return Object.freeze({ allowIp, entries: Object.freeze(entries) });
}

/** The access message text of `access` (inverse of `parseAccessMessage`). */
export function formatAccessMessage(access: FwknopAccess): string {
  return [access.allowIp, ...access.entries.map((entry) => `${entry.protocol}/${entry.port}`)].join(',');
}

/** [FKO-11] a command message `IPv4,<command>`: the command is 1+ printable ASCII characters. */
export function isValidCommandMessage(text: string): boolean {
  const comma = text.indexOf(',');
  return comma > 0 && isValidIpv4(text.slice(0, comma)) && comma + 1 < text.length && isPrintableAscii(text);
}

/** [FKO-11] a NAT host: a dotted quad, or an RFC 1123 host name that is not all digits and dots. */
export function isValidNatHost(host: string): boolean {
  if (/^[0-9.]+$/.test(host)) return isValidIpv4(host);
  if (host.length < 1 || host.length > MAX_HOSTNAME_LENGTH) return false;
  return host.split('.').every((label) => HOSTNAME_LABEL.test(label));
}

/** [FKO-11] `host,port`; undefined if the text is anything else. */
export function parseNatAccess(text: string): FwknopNatAccess | undefined {
  const parts = text.split(',');
  if (parts.length !== 2) return undefined;
  const [host, portText] = parts as [string, string];
  const port = parsePort(portText);
  if (!isValidNatHost(host) || port === undefined) return undefined;
  return Object.freeze({ host, port });
}

/** [FKO-11] server_auth: 1..63 printable ASCII characters. */
export function isValidServerAuth(text: string): boolean {
  return text.length >= 1 && text.length <= FKO_MAX_SERVER_AUTH_LENGTH && isPrintableAscii(text);
}

export function isValidClientTimeout(value: number): boolean {
  return Number.isInteger(value) && value >= FKO_MIN_CLIENT_TIMEOUT && value <= FKO_MAX_CLIENT_TIMEOUT;
}

/** Printable ASCII text of a base64 field no longer than `maxB64`, else undefined. */
function decodeTextField(field: string, maxB64: number): string | undefined {
  if (field.length < 1 || field.length > maxB64) return undefined;
  const bytes = decodeBase64(field);
  if (bytes === undefined) return undefined;
  const text = bytesToAscii(bytes);
  return isPrintableAscii(text) ? text : undefined;
}

/**
 * Parse a decrypted plaintext (padding already removed). Rule order: [FKO-8] characters, [FKO-9] field count,
 * [FKO-10] fixed fields, [FKO-9] count for the type, [FKO-11] message and optional fields, [FKO-12] digest.
 */
export function parseFwknopPlaintext(plaintext: Uint8Array): Result<FwknopMessage, FwknopFieldReason> {
  const text = bytesToAscii(plaintext);
  // [FKO-8] nothing but base64, digits, dots and colons.
  if (!PLAINTEXT_CHARS.test(text)) return reject('bad-plaintext');
  // [FKO-9] 7..10 colon-separated fields.
  const fields = text.split(FIELD_SEPARATOR);
  if (fields.length < FKO_MIN_FIELDS || fields.length > FKO_MAX_FIELDS) return reject('bad-fields');
  const [randomField, usernameField, timestampField, version, typeField, messageField] = fields as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const digestField = fields[fields.length - 1]!;
  const optional = fields.slice(6, -1);

  // [FKO-10] fixed fields.
  if (!RANDOM_FIELD.test(randomField)) return reject('bad-random');
  const username = decodeTextField(usernameField, FKO_MAX_USERNAME_B64_LENGTH);
  if (username === undefined || !isValidUsername(username)) return reject('bad-username');
  const timestamp = parseDecimal(timestampField, FKO_MAX_TIMESTAMP_DIGITS, 0, FKO_MAX_TIMESTAMP);
  if (timestamp === undefined) return reject('bad-timestamp');
  if (version !== FKO_PROTOCOL_VERSION) return reject('bad-version');
  if (!MESSAGE_TYPE_FIELD.test(typeField)) return reject('bad-message-type');
  const messageType = Number(typeField) as FwknopMessageType;

  // [FKO-9] the type fixes which optional fields exist; server_auth may add one more.
  const nat = hasNatAccess(messageType);
  const timeout = hasClientTimeout(messageType);
  const required = (nat ? 1 : 0) + (timeout ? 1 : 0);
  if (optional.length !== required && optional.length !== required + 1) return reject('bad-fields');
  const withServerAuth = optional.length === required + 1;

  // [FKO-11] message, then NAT access, server_auth, client timeout, in wire order.
  const message = decodeTextField(messageField, FKO_MAX_FIELD_B64_LENGTH);
  if (message === undefined) return reject('bad-message');
  let access: FwknopAccess | undefined;
  if (messageType === FKO_COMMAND_MSG) {
    if (!isValidCommandMessage(message)) return reject('bad-message');
  } else {
    access = parseAccessMessage(message);
    if (access === undefined) return reject('bad-message');
  }
  let index = 0;
  let natAccess: FwknopNatAccess | undefined;
  if (nat) {
    const natText = decodeTextField(optional[index++]!, FKO_MAX_FIELD_B64_LENGTH);
    natAccess = natText === undefined ? undefined : parseNatAccess(natText);
    if (natAccess === undefined) return reject('bad-nat-access');
  }
  let serverAuth: string | undefined;
  if (withServerAuth) {
    serverAuth = decodeTextField(optional[index++]!, FKO_MAX_FIELD_B64_LENGTH);
    if (serverAuth === undefined || !isValidServerAuth(serverAuth)) return reject('bad-server-auth');
  }
  let clientTimeout: number | undefined;
  if (timeout) {
    clientTimeout = parseDecimal(optional[index++]!, 5, FKO_MIN_CLIENT_TIMEOUT, FKO_MAX_CLIENT_TIMEOUT);
    if (clientTimeout === undefined) return reject('bad-client-timeout');
  }

  // [FKO-12] the digest covers every byte before the last colon.
  const digestType = matchDigest(text.slice(0, text.length - digestField.length - 1), digestField);
  if (digestType === undefined) return reject('bad-digest');

  const parsed: FwknopMessage = {
    random: randomField,
    username,
    timestamp,
    version,
    messageType,
    message,
    digestType,
    ...(access === undefined ? {} : { access }),
    ...(natAccess === undefined ? {} : { natAccess }),
    ...(serverAuth === undefined ? {} : { serverAuth }),
    ...(clientTimeout === undefined ? {} : { clientTimeout }),
  };
  return ok(Object.freeze(parsed));
}

/** [FKO-12] the digest type whose unpadded base64 over `covered` equals `digest` (SHA-2 tried before SHA-3). */
function matchDigest(covered: string, digest: string): FwknopHashType | undefined {
  const coveredBytes = asciiToBytes(covered);
  for (const type of digestTypesOfLength(digest.length)) {
    if (constantTimeEqualText(digestBase64(type, coveredBytes), digest)) return type;
  }
  return undefined;
}

/** Every field of a plaintext, already validated by the encoder. */
export interface PlaintextFields {
  readonly random: string;
  readonly username: string;
  readonly timestamp: number;
  readonly messageType: FwknopMessageType;
  readonly message: string;
  readonly natAccess?: FwknopNatAccess;
  readonly serverAuth?: string;
  readonly clientTimeout?: number;
  readonly digestType: FwknopHashType;
}

/** [FKO-9] the plaintext of validated fields, digest appended; the exact inverse of `parseFwknopPlaintext`. */
export function serializeFwknopPlaintext(fields: PlaintextFields): string {
  const parts = [
    fields.random,
    encodeBase64(asciiToBytes(fields.username)),
    String(fields.timestamp),
    FKO_PROTOCOL_VERSION,
    String(fields.messageType),
    encodeBase64(asciiToBytes(fields.message)),
  ];
  if (fields.natAccess !== undefined) {
    parts.push(encodeBase64(asciiToBytes(`${fields.natAccess.host},${fields.natAccess.port}`)));
  }
  if (fields.serverAuth !== undefined) parts.push(encodeBase64(asciiToBytes(fields.serverAuth)));
  if (fields.clientTimeout !== undefined) parts.push(String(fields.clientTimeout));
  const covered = parts.join(FIELD_SEPARATOR);
  return `${covered}${FIELD_SEPARATOR}${digestBase64(fields.digestType, asciiToBytes(covered))}`;
}
