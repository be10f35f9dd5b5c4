/**
 * The one-time MQTT credential of the plain profile (docs/protocol.md, "Plain profile: the connect credential"):
 * a device that cannot do TLS connects with `username = device id` and this password, derived from the BC1 knock
 * that just opened its grant, so no reusable secret crosses the wire. Pure.
 *
 *   credential = lowercase hex( HMAC-SHA256( native key that sealed the knock,
 *                  "blackcloud-connect-v1" || 0x00 || device id (ASCII) || 0x00 || key id (u32 BE) || nonce (12) ) )
 *
 * Contract:
 * - `connectCredential` is deterministic: the device computes it from the knock it sent, the receiver from the
 *   knock it accepted (the same key id, nonce and key); 64 lowercase hex characters.
 * - `credentialMatches` compares in constant time and says only true/false (a wrong length is false).
 * - The credential is a secret for its window: it is never logged, audited or put in an event.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { BC1_KEY_LENGTH, BC1_NONCE_LENGTH } from '../../spa/limits.ts';

export const CONNECT_CREDENTIAL_LABEL = 'blackcloud-connect-v1';
export const CONNECT_CREDENTIAL_LENGTH = 64;

export interface KnockIdentity {
  readonly deviceId: string;
  readonly keyId: number;
  readonly nonce: Uint8Array;
}

export function connectCredential(key: Uint8Array, knock: KnockIdentity): string {
  if (key.length !== BC1_KEY_LENGTH) throw new RangeError(`key must be ${BC1_KEY_LENGTH} bytes`);
  if (knock.nonce.length !== BC1_NONCE_LENGTH)
    throw new RangeError(`nonce must be ${BC1_NONCE_LENGTH} bytes`);
  if (!Number.isInteger(knock.keyId) || knock.keyId < 0 || knock.keyId > 0xffff_ffff) {
    throw new RangeError('keyId must be a u32');
  }
  const keyId = Buffer.alloc(4);
  keyId.writeUInt32BE(knock.keyId);
  return createHmac('sha256', key)
    .update(Buffer.from(`${CONNECT_CREDENTIAL_LABEL}\u0000${knock.deviceId}\u0000`, 'latin1'))
    .update(keyId)
    .update(knock.nonce)
    .digest('hex');
}

export function credentialMatches(expected: string, presented: string | Uint8Array | undefined): boolean {
  if (presented === undefined) return false;
  const a = Buffer.from(expected, 'latin1');
  const b = typeof presented === 'string' ? Buffer.from(presented, 'latin1') : Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}
