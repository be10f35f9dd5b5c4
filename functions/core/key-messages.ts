/**
 * The key-rotation acknowledgement (docs/key-lifecycle.md) and its proof of possession. Pure. The offer it answers
 * is the sealed binary BKO1 (sealed-key-offer.ts, docs/protocol.md).
 *
 * Ack, device → controller on `blackcloud/keys/<id>/ack` (JSON, QoS 1):
 *   { "v": 1, "keyId": u32, "nonce": base64 of 16 fresh random bytes, "proof": base64 of 32 bytes }
 *   proof = HMAC-SHA256(new key, "blackcloud-key-ack-v1" | 0x00 | keyId u32 big-endian | nonce)
 *
 * Contract:
 * - `parseKeyAck` takes untrusted bytes and never throws: a result value with a reason. It
 *   refuse payloads over `MAX_KEY_MESSAGE_BYTES`, non-JSON, unknown or missing fields, wrong sizes.
 * - `verifyAckProof` recomputes the HMAC and compares in constant time (`timingSafeEqual`); it says only
 *   true/false.
 * - Nothing here logs; `describe*` helpers never include key material.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { ok, type Result, reject } from '../../spa/result.ts';

export const KEY_MESSAGE_VERSION = 1;
export const ACK_NONCE_LENGTH = 16;
export const ACK_PROOF_LENGTH = 32;
export const MAX_KEY_MESSAGE_BYTES = 1024;
const ACK_LABEL = Buffer.from('blackcloud-key-ack-v1\u0000', 'latin1');
const U32_MAX = 0xffff_ffff;

export interface KeyAck {
  readonly keyId: number;
  readonly nonce: Uint8Array;
  readonly proof: Uint8Array;
}

export type KeyMessageReason = 'too-long' | 'not-json' | 'bad-shape' | 'bad-version';

const STRICT_BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function base64Bytes(length: number) {
  return z
    .string()
    .regex(STRICT_BASE64)
    .transform((text) => new Uint8Array(Buffer.from(text, 'base64')))
    .refine((bytes) => bytes.length === length);
}

const keyId = z.number().int().min(0).max(U32_MAX);

const ackSchema = z.strictObject({
  v: z.number(),
  keyId,
  nonce: base64Bytes(ACK_NONCE_LENGTH),
  proof: base64Bytes(ACK_PROOF_LENGTH),
});

function parseJson(payload: Uint8Array | string): Result<unknown, KeyMessageReason> {
  const length = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length;
  if (length > MAX_KEY_MESSAGE_BYTES) return reject('too-long');
  try {
    return ok(JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8')));
  } catch {
    return reject('not-json');
  }
}

function versionOf(value: unknown): unknown {
  return typeof value === 'object' && value !== null ? (value as { v?: unknown }).v : undefined;
}

export function encodeKeyAck(ack: KeyAck): string {
  return JSON.stringify({
    v: KEY_MESSAGE_VERSION,
    keyId: ack.keyId,
    nonce: Buffer.from(ack.nonce).toString('base64'),
    proof: Buffer.from(ack.proof).toString('base64'),
  });
}

export function parseKeyAck(payload: Uint8Array | string): Result<KeyAck, KeyMessageReason> {
  const json = parseJson(payload);
  if (!json.ok) return json;
  if (versionOf(json.value) !== KEY_MESSAGE_VERSION) return reject('bad-version');
  const parsed = ackSchema.safeParse(json.value);
  if (!parsed.success) return reject('bad-shape');
  return ok({ keyId: parsed.data.keyId, nonce: parsed.data.nonce, proof: parsed.data.proof });
}

/** HMAC-SHA256 under the new key over the label, the key id (u32 big-endian) and the nonce. */
export function ackProof(key: Uint8Array, keyIdValue: number, nonce: Uint8Array): Uint8Array {
  const id = Buffer.alloc(4);
  id.writeUInt32BE(keyIdValue);
  return new Uint8Array(createHmac('sha256', key).update(ACK_LABEL).update(id).update(nonce).digest());
}

/** The ack a device sends for `key`, with a fresh nonce from the caller's randomness. */
export function makeKeyAck(key: Uint8Array, keyIdValue: number, nonce: Uint8Array): KeyAck {
  return { keyId: keyIdValue, nonce, proof: ackProof(key, keyIdValue, nonce) };
}

/** Constant-time check of an ack's proof under `key`. */
export function verifyAckProof(key: Uint8Array, ack: KeyAck): boolean {
  const expected = ackProof(key, ack.keyId, ack.nonce);
  return ack.proof.length === expected.length && timingSafeEqual(ack.proof, expected);
}
