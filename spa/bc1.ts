/**
 * The native SPA packet "BC1" (docs/protocol.md is the normative text):
 *
 *   0    1   magic/version 0xB1
 *   1    4   key id (u32 BE)
 *   5    12  nonce
 *   17   n   ChaCha20-Poly1305 ciphertext of the payload (spa/bc1-payload.ts), AAD = bytes 0..16
 *   17+n 16  tag
 *
 * Contract:
 * - `decodeBc1` never throws on any bytes: it checks length and magic [BC1-1], opens the AEAD [BC1-4] before it
 *   reads a single payload byte, then parses strictly [BC1-5]. A failed open says only 'auth-failed'.
 *   It throws `Bc1UsageError` only when the caller's key is not 32 bytes (configuration, not input).
 * - `encodeBc1` throws `Bc1UsageError` on misuse and never produces a packet `decodeBc1` would reject.
 * - The codec enforces [BC1-1], [BC1-4], [BC1-5] only. Rate limit, key lookup, clock window, policy, replay and
 *   the grant ([BC1-2], [BC1-3], [BC1-6]..[BC1-9]) are the receiver's.
 * Pure: node:crypto only; no clock, no randomness (the nonce is the caller's).
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { Bc1UsageError, describeValue } from './bc1-error.ts';
import {
  type Bc1Payload,
  type Bc1PayloadReason,
  bc1PayloadLength,
  parseBc1Payload,
  serializeBc1Payload,
} from './bc1-payload.ts';
import { readU32BE, toHex, u32Hex, writeU32BE } from './bytes.ts';
import {
  BC1_HEADER_LENGTH,
  BC1_KEY_LENGTH,
  BC1_MAGIC,
  BC1_MAX_PACKET_LENGTH,
  BC1_MIN_PACKET_LENGTH,
  BC1_NONCE_LENGTH,
  BC1_OFFSET_CIPHERTEXT,
  BC1_OFFSET_KEY_ID,
  BC1_OFFSET_MAGIC,
  BC1_OFFSET_NONCE,
  BC1_TAG_LENGTH,
} from './limits.ts';
import { ok, type Result, reject } from './result.ts';

export { Bc1UsageError } from './bc1-error.ts';
export type { Bc1Payload } from './bc1-payload.ts';

export interface Bc1Header {
  readonly keyId: number;
  /** A copy of the 12 nonce bytes (never a view into the packet). */
  readonly nonce: Uint8Array;
}

export interface Bc1Packet extends Bc1Header {
  readonly payload: Bc1Payload;
}

export type Bc1HeaderReason = 'too-short' | 'too-long' | 'bad-magic';
export type Bc1Reason = Bc1HeaderReason | 'auth-failed' | Bc1PayloadReason;

/** Every reason `decodeBc1` can return, in the order the checks run. */
export const BC1_REASONS: readonly Bc1Reason[] = Object.freeze([
  'too-short',
  'too-long',
  'bad-magic',
  'auth-failed',
  'bad-flags',
  'bad-entry-count',
  'bad-length',
  'bad-timestamp',
  'bad-protocol',
  'bad-port',
  'bad-address',
] as const);

const AEAD = 'chacha20-poly1305';
const AEAD_OPTIONS = { authTagLength: BC1_TAG_LENGTH } as const;
const KEY_ID_MAX = 0xffff_ffff;

/** Whether `bytes` claims to be BC1 (first byte 0xB1); fwknop packets start with a base64 character. */
export function isBc1(bytes: Uint8Array): boolean {
  return bytes.length > 0 && bytes[BC1_OFFSET_MAGIC] === BC1_MAGIC;
}

/** Total packet length for `payload`: 17 + 12 + 3N (+4 or +16 with a claim) + 16. Does not validate. */
export function bc1EncodingLength(payload: Bc1Payload): number {
  return BC1_HEADER_LENGTH + bc1PayloadLength(payload) + BC1_TAG_LENGTH;
}

function checkKey(field: string, key: unknown): asserts key is Uint8Array {
  if (!(key instanceof Uint8Array) || key.length !== BC1_KEY_LENGTH) {
    throw new Bc1UsageError(
      field,
      `must be a Uint8Array of ${BC1_KEY_LENGTH} bytes (the device's SPA key); received ${describeValue(key)}. ` +
        'Check the key material in the device directory or key store.',
    );
  }
}

function checkNonce(field: string, nonce: unknown): asserts nonce is Uint8Array {
  if (!(nonce instanceof Uint8Array) || nonce.length !== BC1_NONCE_LENGTH) {
    throw new Bc1UsageError(
      field,
      `must be a Uint8Array of ${BC1_NONCE_LENGTH} bytes; received ${describeValue(nonce)}. ` +
        `Use ${BC1_NONCE_LENGTH} fresh bytes from a CSPRNG for every packet.`,
    );
  }
}

function checkKeyId(field: string, keyId: unknown): asserts keyId is number {
  if (typeof keyId !== 'number' || !Number.isInteger(keyId) || keyId < 0 || keyId > KEY_ID_MAX) {
    throw new Bc1UsageError(
      field,
      `must be an integer in 0..${KEY_ID_MAX} (u32); received ${describeValue(keyId)}.`,
    );
  }
}

/**
 * Builds a packet. `opts.nonce` must be fresh random bytes for every packet (a repeated nonce under one key
 * breaks ChaCha20-Poly1305 and is a replay). Throws `Bc1UsageError` on misuse.
 */
export function encodeBc1(
  payload: Bc1Payload,
  opts: { keyId: number; key: Uint8Array; nonce: Uint8Array },
): Uint8Array {
  checkKeyId('opts.keyId', opts.keyId);
  checkKey('opts.key', opts.key);
  checkNonce('opts.nonce', opts.nonce);
  const plaintext = serializeBc1Payload(payload);
  const packet = new Uint8Array(BC1_HEADER_LENGTH + plaintext.length + BC1_TAG_LENGTH);
  packet[BC1_OFFSET_MAGIC] = BC1_MAGIC;
  writeU32BE(packet, BC1_OFFSET_KEY_ID, opts.keyId);
  packet.set(opts.nonce, BC1_OFFSET_NONCE);
  const cipher = createCipheriv(AEAD, opts.key, opts.nonce, AEAD_OPTIONS);
  cipher.setAAD(packet.subarray(0, BC1_HEADER_LENGTH), { plaintextLength: plaintext.length });
  const ciphertext = cipher.update(plaintext);
  const rest = cipher.final();
  packet.set(ciphertext, BC1_OFFSET_CIPHERTEXT);
  packet.set(rest, BC1_OFFSET_CIPHERTEXT + ciphertext.length);
  packet.set(cipher.getAuthTag(), BC1_HEADER_LENGTH + plaintext.length);
  return packet;
}

/** [BC1-1] Length and magic, then the key id and nonce. Cheap: no crypto, one 12-byte copy. Never throws. */
export function readBc1Header(bytes: Uint8Array): Result<Bc1Header, Bc1HeaderReason> {
  // [BC1-1] total length within [48, 85], then the first byte 0xB1.
  if (bytes.length < BC1_MIN_PACKET_LENGTH) return reject('too-short');
  if (bytes.length > BC1_MAX_PACKET_LENGTH) return reject('too-long');
  if (bytes[BC1_OFFSET_MAGIC] !== BC1_MAGIC) return reject('bad-magic');
  const nonce = new Uint8Array(BC1_NONCE_LENGTH);
  nonce.set(bytes.subarray(BC1_OFFSET_NONCE, BC1_OFFSET_NONCE + BC1_NONCE_LENGTH));
  return ok({ keyId: readU32BE(bytes, BC1_OFFSET_KEY_ID), nonce });
}

/**
 * [BC1-4] Opens the AEAD: returns the plaintext, or undefined when the tag does not verify. Any throw from
 * node:crypto becomes undefined. The plaintext is not looked at here.
 */
function openBc1(bytes: Uint8Array, key: Uint8Array): Uint8Array | undefined {
  const tagOffset = bytes.length - BC1_TAG_LENGTH;
  // node:crypto reports a bad tag by throwing; capturing that error's stack trace is most of the cost of rejecting
  // a forged packet, so traces are off for this synchronous call (restored before it returns).
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    const decipher = createDecipheriv(
      AEAD,
      key,
      bytes.subarray(BC1_OFFSET_NONCE, BC1_OFFSET_NONCE + BC1_NONCE_LENGTH),
      AEAD_OPTIONS,
    );
    decipher.setAAD(bytes.subarray(0, BC1_HEADER_LENGTH), {
      plaintextLength: tagOffset - BC1_OFFSET_CIPHERTEXT,
    });
    decipher.setAuthTag(bytes.subarray(tagOffset));
    const plaintext = decipher.update(bytes.subarray(BC1_OFFSET_CIPHERTEXT, tagOffset));
    decipher.final(); // Throws unless the Poly1305 tag verifies (constant-time comparison inside OpenSSL).
    return plaintext;
  } catch {
    return undefined;
  } finally {
    Error.stackTraceLimit = stackTraceLimit;
  }
}

/**
 * Decodes and authenticates a packet under `key` (the key the header's key id names). Never throws on `bytes`;
 * throws `Bc1UsageError` if `key` is not a 32-byte Uint8Array.
 */
export function decodeBc1(bytes: Uint8Array, key: Uint8Array): Result<Bc1Packet, Bc1Reason> {
  checkKey('key', key);
  const header = readBc1Header(bytes); // [BC1-1]
  if (!header.ok) return header;
  // [BC1-4] AEAD opens before anything is parsed; a failure reveals nothing but 'auth-failed'.
  const plaintext = openBc1(bytes, key);
  if (plaintext === undefined) return reject('auth-failed');
  const payload = parseBc1Payload(plaintext); // [BC1-5]
  if (!payload.ok) return payload;
  return ok({ keyId: header.value.keyId, nonce: header.value.nonce, payload: payload.value });
}

/**
 * [BC1-8] The replay id: lowercase hex of key id (u32 BE) || nonce, 32 characters. Unique per packet as long as
 * nonces are random; the receiver records it until timestamp + clock window.
 */
export function bc1ReplayId(keyId: number, nonce: Uint8Array): string {
  checkKeyId('keyId', keyId);
  checkNonce('nonce', nonce);
  return u32Hex(keyId) + toHex(nonce);
}
