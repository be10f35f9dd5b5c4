/**
 * Base64 as fwknop writes it: the standard alphabet `[A-Za-z0-9+/]`, trailing `=` removed, everywhere
 * (docs/protocol-fwknop.md [FKO-2]).
 *
 * Contract:
 * - `encodeBase64` emits the canonical form: no `=`, unused low bits of the last character zero.
 * - `decodeBase64` is strict where libfko's b64_decode is lenient: it returns `undefined` (never throws) for any
 *   character outside the alphabet (including `=`, whitespace, URL-safe `-_`), a length that no byte string
 *   encodes to (length mod 4 = 1), or non-zero unused bits in the last character. So every byte string has
 *   exactly one accepted text, and decode(encode(b)) = b.
 * - ASCII helpers convert between wire bytes and strings without TextDecoder's replacement characters.
 * Pure; no Buffer, no I/O.
 */

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Sextet value of each byte, or -1 outside the alphabet. */
const SEXTET: Int8Array = (() => {
  const table = new Int8Array(256).fill(-1);
  for (let i = 0; i < ALPHABET.length; i++) table[ALPHABET.charCodeAt(i)] = i;
  return table;
})();

/** Whether `byte` is one of the 64 base64 characters (no `=`). */
export function isBase64Byte(byte: number): boolean {
  return Number.isInteger(byte) && byte >= 0 && byte <= 0xff && SEXTET[byte]! >= 0;
}

/** Whether every byte of `bytes` is a base64 character (an empty array is). */
export function isBase64Bytes(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (SEXTET[bytes[i]!]! < 0) return false;
  return true;
}

/** Base64 of `bytes` without `=` padding. */
export function encodeBase64(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += ALPHABET[n >>> 18]! + ALPHABET[(n >>> 12) & 63]! + ALPHABET[(n >>> 6) & 63]! + ALPHABET[n & 63]!;
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i]! << 16;
    out += ALPHABET[n >>> 18]! + ALPHABET[(n >>> 12) & 63]!;
  } else if (rest === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += ALPHABET[n >>> 18]! + ALPHABET[(n >>> 12) & 63]! + ALPHABET[(n >>> 6) & 63]!;
  }
  return out;
}

/** The bytes of canonical unpadded base64 `text`, or `undefined` if `text` is not exactly that. */
export function decodeBase64(text: string): Uint8Array | undefined {
  const tail = text.length % 4;
  if (tail === 1) return undefined;
  const out = new Uint8Array(Math.floor(text.length / 4) * 3 + (tail === 0 ? 0 : tail - 1));
  let o = 0;
  let i = 0;
  const sextet = (index: number): number => {
    const code = text.charCodeAt(index);
    return code < 256 ? SEXTET[code]! : -1;
  };
  for (; i + 4 <= text.length; i += 4) {
    const a = sextet(i);
    const b = sextet(i + 1);
    const c = sextet(i + 2);
    const d = sextet(i + 3);
    if ((a | b | c | d) < 0) return undefined;
    const n = (a << 18) | (b << 12) | (c << 6) | d;
    out[o++] = n >>> 16;
    out[o++] = (n >>> 8) & 0xff;
    out[o++] = n & 0xff;
  }
  if (tail === 2) {
    const a = sextet(i);
    const b = sextet(i + 1);
    if ((a | b) < 0 || (b & 0x0f) !== 0) return undefined;
    out[o] = (a << 2) | (b >>> 4);
  } else if (tail === 3) {
    const a = sextet(i);
    const b = sextet(i + 1);
    const c = sextet(i + 2);
    if ((a | b | c) < 0 || (c & 0x03) !== 0) return undefined;
    const n = (a << 18) | (b << 12) | (c << 6);
    out[o++] = n >>> 16;
    out[o] = (n >>> 8) & 0xff;
  }
  return out;
}

/** The string whose char codes are `bytes` (Latin-1); callers check the bytes are ASCII where it matters. */
export function bytesToAscii(bytes: Uint8Array): string {
  // The receiver runs this several times per fwknop datagram. Bytes below 0x80 (what callers pass): one native
  // decode, for which WHATWG 'latin1' (windows-1252) is the identity (~0.1 µs for 230 bytes, against ~7 µs for
  // a spread into String.fromCharCode). Any other byte takes the exact Latin-1 path.
  for (let i = 0; i < bytes.length; i++) if (bytes[i]! >= 0x80) return latin1Exact(bytes);
  return ASCII_DECODER.decode(bytes);
}

function latin1Exact(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  }
  return out;
}

const ASCII_DECODER = new TextDecoder('latin1');

/** The bytes of an ASCII `text` (each char code must be below 128; callers guarantee it). */
export function asciiToBytes(text: string): Uint8Array {
  // UTF-8 of ASCII is ASCII: one native encode instead of a loop over char codes (it runs per candidate HMAC).
  // Any other char (callers never pass one) keeps the exact low-byte result of the loop.
  const out = new Uint8Array(text.length);
  const { read, written } = ASCII_ENCODER.encodeInto(text, out);
  if (read === text.length && written === text.length) return out;
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

const ASCII_ENCODER = new TextEncoder();

/** Whether every char of `text` is printable ASCII (0x20..0x7e). */
export function isPrintableAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code > 0x7e) return false;
  }
  return true;
}
