/**
 * The fwknop SPA packet (FKO protocol 3.0.0, Rijndael + HMAC), for interoperability with the standard fwknop
 * client and fwknopd 2.6.10. docs/protocol-fwknop.md is the normative text; rules are cited where enforced.
 *
 *   wire = base64('Salted__' | salt | AES-256-CBC(plaintext)) without '=' and without its first 10 characters
 *          ('U2FsdGVkX1'), then base64(HMAC) without '=' (its length fixed by the configured HMAC type)
 *   HMAC = HMAC-<type>(hmacKey, ASCII('U2FsdGVkX1' | body)), i.e. over the base64 text, prefix included
 *   AES key and IV = EVP_BytesToKey(MD5, encryptionKey, salt); plaintext fields: spa/fwknop-fields.ts
 *
 * Contract:
 * - `decodeFwknop` and `verifyFwknopHmac` never throw on any bytes. Decode runs the checks in cost order:
 *   shape [FKO-1]..[FKO-3], HMAC in constant time before anything is decoded [FKO-4], blob [FKO-5], decryption
 *   with strict padding [FKO-6] [FKO-7], every field [FKO-8]..[FKO-11], digest [FKO-12].
 *   A failed HMAC says only 'auth-failed'.
 * - The same decode in two pieces, for a trial over candidate keys [FKO-15]: `readFwknopFrame` does the shape
 *   checks once per datagram (never throws), `decodeFwknopFrame` does one HMAC and the rest per candidate.
 *   `decodeFwknop` is exactly the two in sequence.
 * - `decodeFwknop` and `encodeFwknop` throw `FwknopUsageError` when the keys are misconfigured (an encryption key
 *   of 0 or more than 32 bytes, an HMAC key of 0 or more than 128 bytes, an unknown HMAC type): configuration,
 *   not input. `verifyFwknopHmac` returns false instead.
 * - `encodeFwknop` takes its randomness as a parameter, throws `FwknopUsageError` on misuse, and never produces a
 *   packet `decodeFwknop` (or fwknopd) would reject [FKO-16].
 * - The codec does not check the clock, the replay cache or policy: that is the receiver's [FKO-13] [FKO-14].
 * Pure: node:crypto only; no clock, no randomness.
 */
import { createHash } from 'node:crypto';
import {
  asciiToBytes,
  bytesToAscii,
  decodeBase64,
  encodeBase64,
  isBase64Byte,
  isBase64Bytes,
} from './fwknop-base64.ts';
import {
  aes256CbcDecryptStrict,
  aes256CbcEncrypt,
  concatBytes,
  constantTimeEqualTextBytes,
  evpBytesToKeyMd5,
  FWKNOP_HASH_B64_LENGTH,
  FWKNOP_HASH_TYPES,
  hmacBase64,
  isFwknopHashType,
} from './fwknop-crypto.ts';
import { describeFwknopValue, FwknopUsageError } from './fwknop-error.ts';
import {
  FKO_MAX_FIELD_TEXT_LENGTH,
  hasClientTimeout,
  hasNatAccess,
  isValidClientTimeout,
  isValidCommandMessage,
  isValidNatHost,
  isValidServerAuth,
  isValidUsername,
  parseAccessMessage,
  parseFwknopPlaintext,
  serializeFwknopPlaintext,
} from './fwknop-fields.ts';
import type {
  FwknopFrameReason,
  FwknopKeys,
  FwknopMessage,
  FwknopMessageInput,
  FwknopMessageType,
  FwknopRandomness,
  FwknopReason,
} from './fwknop-types.ts';
import {
  FKO_AES_BLOCK_LENGTH,
  FKO_GPG_MIN_LENGTH,
  FKO_MAX_HMAC_KEY_LENGTH,
  FKO_MAX_MESSAGE_TYPE,
  FKO_MAX_RIJNDAEL_KEY_LENGTH,
  FKO_MAX_TIMESTAMP,
  FKO_MAX_WIRE_LENGTH,
  FKO_MIN_WIRE_LENGTH,
  FKO_RANDOM_DIGITS,
  FKO_SALT_LENGTH,
  FKO_SALTED_MAGIC,
  FKO_SALTED_PREFIX_B64,
  PORT_MAX,
  PORT_MIN,
} from './limits.ts';
import { ok, type Result, reject } from './result.ts';
import type { FwknopHashType } from './types.ts';

export { FWKNOP_HASH_B64_LENGTH, FWKNOP_HASH_TYPES } from './fwknop-crypto.ts';
export { FwknopUsageError } from './fwknop-error.ts';
export { formatAccessMessage as formatFwknopAccess } from './fwknop-fields.ts';
export type {
  FwknopAccess,
  FwknopFrameReason,
  FwknopKeys,
  FwknopMessage,
  FwknopMessageInput,
  FwknopMessageType,
  FwknopNatAccess,
  FwknopRandomness,
  FwknopReason,
} from './fwknop-types.ts';
export { FWKNOP_REASONS } from './fwknop-types.ts';

const PREFIX_BYTES = asciiToBytes(FKO_SALTED_PREFIX_B64);
const MAGIC_BYTES = asciiToBytes(FKO_SALTED_MAGIC);
const HEADER_LENGTH = MAGIC_BYTES.length + FKO_SALT_LENGTH;
const RANDOM_FIELD = new RegExp(`^[0-9]{${FKO_RANDOM_DIGITS}}$`);

/**
 * Whether `bytes` may be an fwknop packet: its first byte is a base64 character (a BC1 packet starts with 0xB1,
 * which is not). A routing hint only; `readFwknopFrame` does the shape checking.
 */
export function looksLikeFwknop(bytes: Uint8Array): boolean {
  return bytes.length > 0 && isBase64Byte(bytes[0]!);
}

/**
 * A wire that passed the shape rules [FKO-1] [FKO-2] [FKO-3], ready for the HMAC of any number of candidate keys.
 * Only `readFwknopFrame` makes one (`decodeFwknopFrame` refuses anything else), so a frame's shape is never checked
 * twice. Its bytes are a private copy of the datagram, so changing the caller's buffer afterwards changes nothing.
 */
export interface FwknopFrame {
  /** The wire's length in characters, 140..399 [FKO-1]. */
  readonly length: number;
}

/**
 * The frame's text: 'U2FsdGVkX1' | wire, ASCII, one copy per datagram. Every split of it into HMAC data and HMAC
 * [FKO-4] is a view into this, so no candidate copies or concatenates anything. Kept under a module-private
 * symbol: code outside the codec neither reads it nor makes a frame by accident.
 */
const FRAME_TEXT = Symbol('fwknop frame text');

interface FrameWithText extends FwknopFrame {
  readonly [FRAME_TEXT]: Uint8Array;
}

/**
 * [FKO-1] [FKO-2] [FKO-3] The cheap shape checks every wire passes before any cryptography, done once per
 * datagram: length (too short, too long, GnuPG-sized), the base64 alphabet, no 'U2FsdGVkX1' prefix. Returns the
 * frame or the first rule that failed. No crypto; one copy of the wire. Never throws on any bytes.
 *
 * Where the HMAC starts is not on the wire: it follows from the candidate's configured HMAC type [FKO-4], so the
 * split into body and HMAC is made per key by `decodeFwknopFrame` (a view, not a check).
 */
export function readFwknopFrame(wire: Uint8Array): Result<FwknopFrame, FwknopFrameReason> {
  if (!(wire instanceof Uint8Array)) return reject('bad-base64'); // not bytes at all, so not base64 text
  // [FKO-1] 140..399 characters: fewer is not a packet, 400+ is GnuPG to fwknopd (not accepted), over 1500 never.
  if (wire.length < FKO_MIN_WIRE_LENGTH) return reject('too-short');
  if (wire.length > FKO_MAX_WIRE_LENGTH) return reject('too-long');
  if (wire.length >= FKO_GPG_MIN_LENGTH) return reject('gpg-not-supported');
  // [FKO-2] base64 text only: no '=', whitespace, URL-safe characters or non-ASCII.
  if (!isBase64Bytes(wire)) return reject('bad-base64');
  // [FKO-3] never the blob's 'U2FsdGVkX1' prefix: the sender strips it (an attacker prepending it gets a new id).
  if (startsWith(wire, PREFIX_BYTES)) return reject('bad-prefix');
  const text = new Uint8Array(PREFIX_BYTES.length + wire.length);
  text.set(PREFIX_BYTES);
  text.set(wire, PREFIX_BYTES.length);
  const frame: FrameWithText = Object.freeze({ length: wire.length, [FRAME_TEXT]: text });
  return ok(frame);
}

function frameText(frame: FwknopFrame): Uint8Array {
  const text = (frame as Partial<FrameWithText> | null)?.[FRAME_TEXT];
  if (!(text instanceof Uint8Array)) {
    throw new FwknopUsageError('frame', `must come from readFwknopFrame, got ${describeFwknopValue(frame)}`);
  }
  return text;
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  if (bytes.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

function isUsableHmacKey(hmacKey: unknown, hmacType: unknown): hmacType is FwknopHashType {
  return (
    hmacKey instanceof Uint8Array &&
    hmacKey.length >= 1 &&
    hmacKey.length <= FKO_MAX_HMAC_KEY_LENGTH &&
    isFwknopHashType(hmacType)
  );
}

/**
 * [FKO-4] The one HMAC of a frame under one key: HMAC-`hmacType` over 'U2FsdGVkX1' | body (the ASCII text),
 * compared in constant time with the last FWKNOP_HASH_B64_LENGTH[hmacType] characters as text, so a packet has
 * exactly one accepted wire form. Returns the signed text (prefix | body, a view) when it verifies.
 */
function authenticate(
  text: Uint8Array,
  hmacKey: Uint8Array,
  hmacType: FwknopHashType,
): Uint8Array | undefined {
  // [FKO-4] the configured type says how many trailing characters are the HMAC. The frame is at least 140
  // characters [FKO-1] and an HMAC at most 86, so the body is never empty.
  const signedLength = text.length - FWKNOP_HASH_B64_LENGTH[hmacType];
  const signed = text.subarray(0, signedLength);
  const expected = hmacBase64(hmacType, hmacKey, signed);
  return constantTimeEqualTextBytes(expected, text.subarray(signedLength)) ? signed : undefined;
}

/**
 * Whether the wire's HMAC is right for this key and type: shape checks, then a constant-time comparison.
 * False for anything malformed or a misconfigured key or type; never throws. (The receiver's candidate trial
 * [FKO-15] uses `readFwknopFrame` and `decodeFwknopFrame` instead, so it reads the shape once.)
 */
export function verifyFwknopHmac(wire: Uint8Array, hmacKey: Uint8Array, hmacType: FwknopHashType): boolean {
  try {
    if (!isUsableHmacKey(hmacKey, hmacType)) return false;
    const frame = readFwknopFrame(wire);
    return frame.ok && authenticate(frameText(frame.value), hmacKey, hmacType) !== undefined;
  } catch {
    return false;
  }
}

/**
 * Authenticate and decode a frame with one candidate's keys: exactly one HMAC (constant time) [FKO-4], then, only
 * if it verifies, blob → decrypt (strict PKCS#7) → every field → digest [FKO-5]..[FKO-12]. The shape is not
 * checked again: `readFwknopFrame` did it. The receiver calls this once per candidate [FKO-15]; a failed HMAC
 * says only 'auth-failed', anything after it names the rule.
 *
 * Keys are checked where they are used, so a trial over candidates behaves as `verifyFwknopHmac` then
 * `decodeFwknop` did: an HMAC key that is not 1..128 bytes, or an unknown HMAC type, authenticates nothing
 * ('auth-failed', as `verifyFwknopHmac` says false); an encryption key that is not 1..32 bytes throws
 * `FwknopUsageError` once the HMAC verified (configuration, not input). A frame not made by `readFwknopFrame`
 * throws `FwknopUsageError`. Never throws otherwise.
 */
export function decodeFwknopFrame(frame: FwknopFrame, keys: FwknopKeys): Result<FwknopMessage, FwknopReason> {
  const text = frameText(frame);
  const hmacKey = keys?.hmacKey;
  const hmacType = keys?.hmacType;
  if (!isUsableHmacKey(hmacKey, hmacType)) return reject('auth-failed');
  // [FKO-4] nothing is decoded before the HMAC verifies.
  const signed = authenticate(text, hmacKey, hmacType);
  if (signed === undefined) return reject('auth-failed');
  assertEncryptionKey(keys.encryptionKey);

  // [FKO-5] the blob: 'Salted__' | 8-byte salt | ciphertext, a positive multiple of 16 bytes; the signed text is
  // its canonical base64.
  const blob = decodeBase64(bytesToAscii(signed));
  if (blob === undefined) return reject('bad-base64');
  if (blob.length < HEADER_LENGTH || !startsWith(blob, MAGIC_BYTES)) return reject('bad-salt-header');
  const ciphertext = blob.subarray(HEADER_LENGTH);
  if (ciphertext.length === 0 || ciphertext.length % FKO_AES_BLOCK_LENGTH !== 0) {
    return reject('bad-ciphertext-length');
  }

  // [FKO-6] [FKO-7] key and IV from EVP_BytesToKey(MD5); AES-256-CBC; strict PKCS#7.
  const salt = blob.subarray(MAGIC_BYTES.length, HEADER_LENGTH);
  const plaintext = aes256CbcDecryptStrict(evpBytesToKeyMd5(keys.encryptionKey, salt), ciphertext);
  if (plaintext === undefined) return reject('bad-padding');

  // [FKO-8]..[FKO-12]
  return parseFwknopPlaintext(plaintext);
}

/**
 * Decode and authenticate one wire payload with one device's keys:
 * shape (`readFwknopFrame`) → HMAC (constant time) → blob → decrypt (strict PKCS#7) → every field → digest
 * (`decodeFwknopFrame`). Throws `FwknopUsageError` for misconfigured keys before looking at the wire.
 */
export function decodeFwknop(wire: Uint8Array, keys: FwknopKeys): Result<FwknopMessage, FwknopReason> {
  assertKeys(keys);
  const frame = readFwknopFrame(wire); // [FKO-1] [FKO-2] [FKO-3]
  if (!frame.ok) return frame;
  return decodeFwknopFrame(frame.value, keys); // [FKO-4]..[FKO-12]
}

/**
 * [FKO-13] The replay id: lowercase hex SHA-256 of the wire payload exactly as received (what fwknopd keeps, in
 * base64, in its digest cache). Sound because [FKO-4] admits one wire form per authentic packet.
 */
export function fwknopReplayId(wire: Uint8Array): string {
  return createHash('sha256').update(wire).digest('hex');
}

/**
 * Build one fwknop packet (the UDP payload) [FKO-16]. `rand.salt` (8 bytes) and `rand.random` (16 decimal
 * digits) must come from a CSPRNG. Throws `FwknopUsageError` naming the field on misuse.
 */
export function encodeFwknop(
  input: FwknopMessageInput,
  keys: FwknopKeys,
  rand: FwknopRandomness,
): Uint8Array {
  assertKeys(keys);
  assertRandomness(rand);
  const digestType = input.digestType ?? 'sha256';
  assertInput(input, digestType);

  const plaintext = serializeFwknopPlaintext({
    random: rand.random,
    username: input.username,
    timestamp: input.timestamp,
    messageType: input.messageType,
    message: input.message,
    digestType,
    ...(input.natAccess === undefined ? {} : { natAccess: input.natAccess }),
    ...(input.serverAuth === undefined ? {} : { serverAuth: input.serverAuth }),
    ...(input.clientTimeout === undefined ? {} : { clientTimeout: input.clientTimeout }),
  });
  const plaintextBytes = asciiToBytes(plaintext);
  // Self-check: the encoder shares its validators with the parser; this catches any drift between them.
  const reparsed = parseFwknopPlaintext(plaintextBytes);
  if (!reparsed.ok) {
    throw new FwknopUsageError('input', `builds a plaintext the decoder rejects (${reparsed.reason})`);
  }

  const ciphertext = aes256CbcEncrypt(evpBytesToKeyMd5(keys.encryptionKey, rand.salt), plaintextBytes);
  const blobText = encodeBase64(concatBytes([MAGIC_BYTES, rand.salt, ciphertext]));
  const body = blobText.slice(FKO_SALTED_PREFIX_B64.length);
  const mac = hmacBase64(keys.hmacType, keys.hmacKey, asciiToBytes(blobText));
  const wire = asciiToBytes(body + mac);
  if (wire.length >= FKO_GPG_MIN_LENGTH) {
    throw new FwknopUsageError(
      'input',
      `makes a ${wire.length}-character packet; fwknopd takes ${FKO_GPG_MIN_LENGTH} or more as GnuPG. ` +
        'Shorten the message, username or server_auth, or choose shorter digest/HMAC types.',
    );
  }
  if (wire.length < FKO_MIN_WIRE_LENGTH) {
    throw new FwknopUsageError(
      'input',
      `makes a ${wire.length}-character packet, below ${FKO_MIN_WIRE_LENGTH}`,
    );
  }
  return wire;
}

function assertKeys(keys: FwknopKeys): void {
  if (typeof keys !== 'object' || keys === null) {
    throw new FwknopUsageError('keys', `must be an object, got ${describeFwknopValue(keys)}`);
  }
  const { encryptionKey, hmacKey, hmacType } = keys;
  assertEncryptionKey(encryptionKey);
  if (!(hmacKey instanceof Uint8Array) || hmacKey.length < 1 || hmacKey.length > FKO_MAX_HMAC_KEY_LENGTH) {
    throw new FwknopUsageError(
      'keys.hmacKey',
      `must be 1..${FKO_MAX_HMAC_KEY_LENGTH} bytes (HMAC_KEY_BASE64), got ${describeFwknopValue(hmacKey)}`,
    );
  }
  if (!isFwknopHashType(hmacType)) {
    throw new FwknopUsageError(
      'keys.hmacType',
      `must be one of ${FWKNOP_HASH_TYPES.join(', ')}, got ${describeFwknopValue(hmacType)}`,
    );
  }
}

/** [FKO-6] The Rijndael key material is 1..32 bytes. */
function assertEncryptionKey(encryptionKey: unknown): void {
  if (
    !(encryptionKey instanceof Uint8Array) ||
    encryptionKey.length < 1 ||
    encryptionKey.length > FKO_MAX_RIJNDAEL_KEY_LENGTH
  ) {
    throw new FwknopUsageError(
      'keys.encryptionKey',
      `must be 1..${FKO_MAX_RIJNDAEL_KEY_LENGTH} bytes (KEY_BASE64, as fwknop --key-gen prints), ` +
        `got ${describeFwknopValue(encryptionKey)}`,
    );
  }
}

function assertRandomness(rand: FwknopRandomness): void {
  if (!(rand?.salt instanceof Uint8Array) || rand.salt.length !== FKO_SALT_LENGTH) {
    throw new FwknopUsageError(
      'rand.salt',
      `must be ${FKO_SALT_LENGTH} random bytes, got ${describeFwknopValue(rand?.salt)}`,
    );
  }
  if (typeof rand.random !== 'string' || !RANDOM_FIELD.test(rand.random)) {
    throw new FwknopUsageError(
      'rand.random',
      `must be ${FKO_RANDOM_DIGITS} random decimal digits, got ${describeFwknopValue(rand.random)}`,
    );
  }
}

function assertInput(input: FwknopMessageInput, digestType: FwknopHashType): void {
  const fail = (field: string, value: unknown, expected: string): never => {
    throw new FwknopUsageError(`input.${field}`, `${expected}, got ${describeFwknopValue(value)}`);
  };
  if (typeof input.username !== 'string' || !isValidUsername(input.username)) {
    fail(
      'username',
      input.username,
      'must be 1..48 printable ASCII characters without " / \\ [ ] : ; | = , + * ? < >',
    );
  }
  if (!Number.isInteger(input.timestamp) || input.timestamp < 0 || input.timestamp > FKO_MAX_TIMESTAMP) {
    fail('timestamp', input.timestamp, `must be Unix seconds, an integer in 0..${FKO_MAX_TIMESTAMP}`);
  }
  const type = input.messageType;
  if (!Number.isInteger(type) || type < 0 || type > FKO_MAX_MESSAGE_TYPE) {
    fail('messageType', type, `must be an integer 0..${FKO_MAX_MESSAGE_TYPE}`);
  }
  checkMessage(input.message, type, fail);
  checkOptionalFields(input, type, fail);
  if (!isFwknopHashType(digestType)) {
    fail('digestType', digestType, `must be one of ${FWKNOP_HASH_TYPES.join(', ')}`);
  }
}

type Fail = (field: string, value: unknown, expected: string) => never;

function checkMessage(message: unknown, type: FwknopMessageType, fail: Fail): void {
  if (typeof message !== 'string' || message.length > FKO_MAX_FIELD_TEXT_LENGTH) {
    fail('message', message, `must be a string of at most ${FKO_MAX_FIELD_TEXT_LENGTH} characters`);
  }
  const text = message as string;
  if (type === 0) {
    if (!isValidCommandMessage(text)) fail('message', text, "must be 'IPv4,<command>' for type 0 (command)");
  } else if (parseAccessMessage(text) === undefined) {
    fail(
      'message',
      text,
      "must be 'IPv4,proto/port[,proto/port...]' with proto tcp or udp, port 1..65535 " +
        "(IPv4 '0.0.0.0' = the packet's source); formatFwknopAccess builds it",
    );
  }
}

function checkOptionalFields(input: FwknopMessageInput, type: FwknopMessageType, fail: Fail): void {
  const { natAccess, clientTimeout, serverAuth } = input;
  if (hasNatAccess(type)) {
    if (natAccess === undefined) fail('natAccess', natAccess, `is required for message type ${type}`);
    const nat = natAccess!;
    if (typeof nat.host !== 'string' || !isValidNatHost(nat.host)) {
      fail('natAccess.host', nat.host, 'must be a dotted-quad IPv4 address or a host name');
    }
    if (!Number.isInteger(nat.port) || nat.port < PORT_MIN || nat.port > PORT_MAX) {
      fail('natAccess.port', nat.port, `must be an integer ${PORT_MIN}..${PORT_MAX}`);
    }
  } else if (natAccess !== undefined) {
    fail('natAccess', natAccess, `must be absent for message type ${type} (only 2, 4, 5, 6 carry it)`);
  }
  if (hasClientTimeout(type)) {
    if (typeof clientTimeout !== 'number' || !isValidClientTimeout(clientTimeout)) {
      fail('clientTimeout', clientTimeout, `must be an integer 1..65535 seconds for message type ${type}`);
    }
  } else if (clientTimeout !== undefined) {
    fail('clientTimeout', clientTimeout, `must be absent for message type ${type} (only 3, 4, 6 carry it)`);
  }
  if (serverAuth !== undefined && (typeof serverAuth !== 'string' || !isValidServerAuth(serverAuth))) {
    fail('serverAuth', serverAuth, 'must be 1..63 printable ASCII characters when present');
  }
}
