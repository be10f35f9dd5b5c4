/**
 * The cryptographic pieces of the fwknop format (docs/protocol-fwknop.md):
 * - the hash types fwknop offers for its HMAC and its inner digest, with the length of their unpadded base64
 *   [FKO-4] [FKO-12];
 * - HMAC and digest as unpadded base64 text, and a constant-time comparison of such texts [FKO-4];
 * - OpenSSL's EVP_BytesToKey (MD5, one round) that turns the Rijndael key and the salt into the AES-256 key and
 *   IV [FKO-6];
 * - AES-256-CBC with strict PKCS#7 padding [FKO-7].
 *
 * Contract: pure functions over node:crypto. `aes256CbcDecryptStrict` returns `undefined` for bad padding and
 * never throws on ciphertext bytes; the other functions expect arguments the callers have already validated.
 *
 * Cost: node:crypto turns a raw key (Uint8Array) into a key object on every createHmac / createCipheriv call,
 * which costs several times the HMAC itself. So an HMAC key becomes a `KeyObject` once (cached per key array,
 * checked against a copy of its bytes, so a key changed in place is never used stale), and the AES key, new per
 * packet (it depends on the salt), is handed over as a `KeyObject` too, which node:crypto takes without the
 * slow path.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  createSecretKey,
  type KeyObject,
  timingSafeEqual,
} from 'node:crypto';
import { asciiToBytes, encodeBase64 } from './fwknop-base64.ts';
import { FKO_AES_BLOCK_LENGTH } from './limits.ts';
import type { FwknopHashType } from './types.ts';

/** Every HMAC and digest type the fwknop client offers (`--hmac-digest-type`, `--digest-type`), node names. */
export const FWKNOP_HASH_TYPES = Object.freeze([
  'md5',
  'sha1',
  'sha256',
  'sha384',
  'sha512',
  'sha3-256',
  'sha3-512',
] as const) satisfies readonly FwknopHashType[];

/** Characters of the unpadded base64 of each hash: what the receiver cuts off the wire [FKO-4]. */
export const FWKNOP_HASH_B64_LENGTH: Readonly<Record<FwknopHashType, number>> = Object.freeze({
  md5: 22,
  sha1: 27,
  sha256: 43,
  sha384: 64,
  sha512: 86,
  'sha3-256': 43,
  'sha3-512': 86,
});

/**
 * Digest types a digest field of `length` characters may be, in the order libfko tries them [FKO-12]:
 * SHA-2 before SHA-3 where the lengths collide (43: SHA-256 / SHA3-256; 86: SHA-512 / SHA3-512).
 */
export function digestTypesOfLength(length: number): readonly FwknopHashType[] {
  return FWKNOP_HASH_TYPES.filter((type) => FWKNOP_HASH_B64_LENGTH[type] === length);
}

export function isFwknopHashType(value: unknown): value is FwknopHashType {
  return typeof value === 'string' && (FWKNOP_HASH_TYPES as readonly string[]).includes(value);
}

/** Unpadded base64 of the `type` hash of `data`. */
export function digestBase64(type: FwknopHashType, data: Uint8Array): string {
  return encodeBase64(createHash(type).update(data).digest());
}

interface CachedKey {
  readonly bytes: Uint8Array;
  readonly key: KeyObject;
}

/** One KeyObject per HMAC key array (a device's key: made once, not per packet). */
const hmacKeys = new WeakMap<Uint8Array, CachedKey>();

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function hmacKeyObject(key: Uint8Array): KeyObject {
  const cached = hmacKeys.get(key);
  if (cached !== undefined && sameBytes(cached.bytes, key)) return cached.key;
  const bytes = key.slice();
  const made = createSecretKey(bytes);
  hmacKeys.set(key, { bytes, key: made });
  return made;
}

/** Unpadded base64 of HMAC-`type`(key, data) (RFC 2104). */
export function hmacBase64(type: FwknopHashType, key: Uint8Array, data: Uint8Array): string {
  return encodeBase64(createHmac(type, hmacKeyObject(key)).update(data).digest());
}

/**
 * Constant-time equality of an ASCII `text` (e.g. an HMAC's base64) and ASCII bytes (e.g. a view into the wire),
 * as text [FKO-4]: no string is made of the bytes. False (early) when the lengths differ.
 */
export function constantTimeEqualTextBytes(text: string, bytes: Uint8Array): boolean {
  if (text.length !== bytes.length) return false;
  return timingSafeEqual(asciiToBytes(text), bytes);
}

/** Constant-time equality of two ASCII texts of the same length; false (early) when lengths differ. */
export function constantTimeEqualText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(asciiToBytes(a), asciiToBytes(b));
}

export interface AesKeyIv {
  readonly key: Uint8Array;
  readonly iv: Uint8Array;
}

const MD5_LENGTH = 16;
const AES256_KEY_LENGTH = 32;

/**
 * OpenSSL EVP_BytesToKey(MD5, count 1) as libfko's rij_salt_and_iv does it [FKO-6]:
 * D1 = MD5(P | salt), Di = MD5(Di-1 | P | salt); key = D1 | D2, IV = D3.
 */
export function evpBytesToKeyMd5(password: Uint8Array, salt: Uint8Array): AesKeyIv {
  const material = new Uint8Array(AES256_KEY_LENGTH + FKO_AES_BLOCK_LENGTH);
  let previous: Uint8Array = new Uint8Array(0);
  for (let filled = 0; filled < material.length; filled += MD5_LENGTH) {
    previous = createHash('md5').update(previous).update(password).update(salt).digest();
    material.set(previous, filled);
  }
  return {
    key: material.subarray(0, AES256_KEY_LENGTH),
    iv: material.subarray(AES256_KEY_LENGTH),
  };
}

/** AES-256-CBC of `plaintext` with PKCS#7 padding (1..16 bytes, always present). */
export function aes256CbcEncrypt(keyIv: AesKeyIv, plaintext: Uint8Array): Uint8Array {
  const cipher = createCipheriv('aes-256-cbc', createSecretKey(keyIv.key), keyIv.iv);
  return concatBytes([cipher.update(plaintext), cipher.final()]);
}

/**
 * AES-256-CBC decryption with strict PKCS#7 removal [FKO-7]: the last byte p must be 1..16 and the last p bytes
 * must all equal p; otherwise `undefined`. The caller has checked the length is a positive multiple of 16.
 * Runs only after the HMAC verified (encrypt-then-MAC), so no padding oracle is exposed.
 */
export function aes256CbcDecryptStrict(keyIv: AesKeyIv, ciphertext: Uint8Array): Uint8Array | undefined {
  const decipher = createDecipheriv('aes-256-cbc', createSecretKey(keyIv.key), keyIv.iv);
  decipher.setAutoPadding(false);
  const padded = concatBytes([decipher.update(ciphertext), decipher.final()]);
  const pad = padded[padded.length - 1];
  if (pad === undefined || pad < 1 || pad > FKO_AES_BLOCK_LENGTH) return undefined;
  for (let i = padded.length - pad; i < padded.length; i++) if (padded[i] !== pad) return undefined;
  return padded.subarray(0, padded.length - pad);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
