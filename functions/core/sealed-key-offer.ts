/**
 * The sealed key offer BKO1 (docs/protocol.md, "Sealed key offer (BKO1)", rules [KO-1]..[KO-8]): the controller's
 * offer of a new native key, sealed under the device's current key so that no key ever crosses the wire readable,
 * with or without TLS. Pure; the nonce is the caller's randomness.
 *
 * Offer, controller → device on `blackcloud/keys/<id>` (binary, exactly 80 bytes, QoS 1, never retained):
 *   header (20) = "BKO" | version 0x01 | sealing key id u32 BE | nonce (12)
 *   then ChaCha20-Poly1305(sealing key, nonce, AAD) of the 44-byte plaintext
 *     new key id u32 BE | new key (32) | oldKeyNotAfter u64 BE (ms since the epoch)
 *   then the 16-byte tag.
 *   AAD = "blackcloud-key-offer-v1" | 0x00 | device id (ASCII) | 0x00 | header
 *
 * Contract:
 * - `sealKeyOffer` takes trusted inputs and throws a RangeError naming the field on an impossible one (a key not
 *   32 bytes, a nonce not 12, an id outside u32, a device id outside DEVICE_ID_PATTERN, a time outside 0..2^53-1).
 * - `openKeyOffer` takes untrusted bytes and never throws: a result with a reason, checked in this order:
 *   'bad-length' (not 80 bytes), 'bad-magic', 'bad-version', 'unknown-sealing-key' (no key of `keys` has the
 *   header's sealing key id), 'unauthentic' (the tag does not verify: wrong key, wrong device id, any changed
 *   byte), 'bad-time' (authentic, but oldKeyNotAfter above 2^53-1).
 * - Nothing here logs; key material is returned to the caller only.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { BC1_KEY_LENGTH, BC1_NONCE_LENGTH, BC1_TAG_LENGTH } from '../../spa/limits.ts';
import { ok, type Result, reject } from '../../spa/result.ts';
import { DEVICE_ID_PATTERN } from './device-id.ts';

/** "BKO": the first three bytes of every sealed offer ([KO-1]). */
export const KEY_OFFER_MAGIC = Uint8Array.of(0x42, 0x4b, 0x4f);
export const KEY_OFFER_VERSION = 0x01;
export const KEY_OFFER_HEADER_LENGTH = 20;
export const KEY_OFFER_PLAINTEXT_LENGTH = 44;
/** Header + ciphertext + tag: the only length an offer has ([KO-2]). */
export const KEY_OFFER_LENGTH = KEY_OFFER_HEADER_LENGTH + KEY_OFFER_PLAINTEXT_LENGTH + BC1_TAG_LENGTH;
export const KEY_OFFER_NONCE_LENGTH = BC1_NONCE_LENGTH;
const AAD_LABEL = Buffer.from('blackcloud-key-offer-v1\u0000', 'latin1');
const AEAD = 'chacha20-poly1305';
const U32_MAX = 0xffff_ffff;

/** One native key a device holds (its current key). Never logged. */
export interface SealingKey {
  readonly keyId: number;
  readonly key: Uint8Array;
}

export interface KeyOffer {
  readonly keyId: number;
  /** 32-byte ChaCha20-Poly1305 key. Never logged. */
  readonly key: Uint8Array;
  /** The earliest time (ms) the old key stops working; the controller starts the grace period at the ack. */
  readonly oldKeyNotAfter: number;
}

export interface OpenedKeyOffer extends KeyOffer {
  /** The key id the offer was sealed under (the device's current key). */
  readonly sealingKeyId: number;
}

export type KeyOfferReason =
  | 'bad-length'
  | 'bad-magic'
  | 'bad-version'
  | 'unknown-sealing-key'
  | 'unauthentic'
  | 'bad-time';

function check(condition: boolean, field: string, expected: string): void {
  if (!condition) throw new RangeError(`sealed key offer ${field}: expected ${expected}`);
}

function aad(deviceId: string, header: Uint8Array): Buffer {
  return Buffer.concat([AAD_LABEL, Buffer.from(deviceId, 'latin1'), Buffer.of(0), header]);
}

/** The 80-byte offer of `offer` to `deviceId`, sealed under its current key `sealing`. */
export function sealKeyOffer(
  sealing: SealingKey,
  deviceId: string,
  offer: KeyOffer,
  nonce: Uint8Array,
): Uint8Array {
  check(sealing.key.length === BC1_KEY_LENGTH, 'sealing key', `${BC1_KEY_LENGTH} bytes`);
  check(
    Number.isInteger(sealing.keyId) && sealing.keyId >= 0 && sealing.keyId <= U32_MAX,
    'sealing key id',
    'a u32',
  );
  check(DEVICE_ID_PATTERN.test(deviceId), 'device id', `an id matching ${DEVICE_ID_PATTERN}`);
  check(offer.key.length === BC1_KEY_LENGTH, 'new key', `${BC1_KEY_LENGTH} bytes`);
  check(Number.isInteger(offer.keyId) && offer.keyId >= 0 && offer.keyId <= U32_MAX, 'new key id', 'a u32');
  check(
    Number.isSafeInteger(offer.oldKeyNotAfter) && offer.oldKeyNotAfter >= 0,
    'oldKeyNotAfter',
    'an integer of milliseconds in 0..2^53-1',
  );
  check(nonce.length === KEY_OFFER_NONCE_LENGTH, 'nonce', `${KEY_OFFER_NONCE_LENGTH} fresh random bytes`);
  const header = Buffer.alloc(KEY_OFFER_HEADER_LENGTH);
  header.set(KEY_OFFER_MAGIC, 0);
  header[3] = KEY_OFFER_VERSION;
  header.writeUInt32BE(sealing.keyId, 4);
  header.set(nonce, 8);
  const plaintext = Buffer.alloc(KEY_OFFER_PLAINTEXT_LENGTH);
  plaintext.writeUInt32BE(offer.keyId, 0);
  plaintext.set(offer.key, 4);
  plaintext.writeBigUInt64BE(BigInt(offer.oldKeyNotAfter), 36);
  const cipher = createCipheriv(AEAD, sealing.key, nonce, { authTagLength: BC1_TAG_LENGTH });
  cipher.setAAD(aad(deviceId, header), { plaintextLength: KEY_OFFER_PLAINTEXT_LENGTH });
  const sealed = Buffer.concat([header, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  plaintext.fill(0);
  return new Uint8Array(sealed);
}

/** Opens an offer received by `deviceId`, which holds `keys` (its current key). Never throws. */
export function openKeyOffer(
  keys: readonly SealingKey[],
  deviceId: string,
  bytes: Uint8Array,
): Result<OpenedKeyOffer, KeyOfferReason> {
  if (bytes.length !== KEY_OFFER_LENGTH) return reject('bad-length');
  if (bytes[0] !== KEY_OFFER_MAGIC[0] || bytes[1] !== KEY_OFFER_MAGIC[1] || bytes[2] !== KEY_OFFER_MAGIC[2]) {
    return reject('bad-magic');
  }
  if (bytes[3] !== KEY_OFFER_VERSION) return reject('bad-version');
  const packet = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const sealingKeyId = packet.readUInt32BE(4);
  const sealing = keys.find((key) => key.keyId === sealingKeyId);
  if (sealing === undefined || sealing.key.length !== BC1_KEY_LENGTH) return reject('unknown-sealing-key');
  const header = packet.subarray(0, KEY_OFFER_HEADER_LENGTH);
  const tagAt = KEY_OFFER_HEADER_LENGTH + KEY_OFFER_PLAINTEXT_LENGTH;
  let plaintext: Buffer;
  try {
    const decipher = createDecipheriv(AEAD, sealing.key, packet.subarray(8, KEY_OFFER_HEADER_LENGTH), {
      authTagLength: BC1_TAG_LENGTH,
    });
    decipher.setAAD(aad(deviceId, header), { plaintextLength: KEY_OFFER_PLAINTEXT_LENGTH });
    decipher.setAuthTag(packet.subarray(tagAt));
    plaintext = Buffer.concat([
      decipher.update(packet.subarray(KEY_OFFER_HEADER_LENGTH, tagAt)),
      decipher.final(),
    ]);
  } catch {
    return reject('unauthentic');
  }
  const notAfter = plaintext.readBigUInt64BE(36);
  const result =
    notAfter > BigInt(Number.MAX_SAFE_INTEGER)
      ? reject('bad-time' as const)
      : ok({
          sealingKeyId,
          keyId: plaintext.readUInt32BE(0),
          key: new Uint8Array(plaintext.subarray(4, 36)),
          oldKeyNotAfter: Number(notAfter),
        });
  plaintext.fill(0);
  return result;
}
