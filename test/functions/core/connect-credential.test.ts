/** The plain profile's one-time connect credential (functions/core/connect-credential.ts). */
import { describe, expect, it } from 'vitest';
import { connectCredential, credentialMatches } from '../../../functions/core/connect-credential.ts';

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const NONCE = Uint8Array.from({ length: 12 }, (_, i) => 0xa0 + i);
const KNOCK = { deviceId: 'meter-1', keyId: 0x12345678, nonce: NONCE };

describe('connectCredential', () => {
  it('matches the golden vector (computed independently with openssl dgst -sha256 -mac HMAC)', () => {
    // (printf 'blackcloud-connect-v1\0meter-1\0'; printf '\x12\x34\x56\x78'; printf '\xa0...\xab') |
    //   openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f
    expect(connectCredential(KEY, KNOCK)).toBe(
      '15d81025ad131fa5dda717b4c3a25e6d0fb1a499120cfbc440ea4e4e5d0d29d9',
    );
  });

  it('changes with the device id, the key id, the nonce and the key', () => {
    const base = connectCredential(KEY, KNOCK);
    expect(connectCredential(KEY, { ...KNOCK, deviceId: 'meter-2' })).not.toBe(base);
    expect(connectCredential(KEY, { ...KNOCK, keyId: 0x12345679 })).not.toBe(base);
    expect(connectCredential(KEY, { ...KNOCK, nonce: NONCE.map((b, i) => (i === 11 ? b ^ 1 : b)) })).not.toBe(
      base,
    );
    expect(
      connectCredential(
        KEY.map((b, i) => (i === 0 ? 1 : b)),
        KNOCK,
      ),
    ).not.toBe(base);
  });

  it('refuses a key, nonce or key id of the wrong size', () => {
    expect(() => connectCredential(KEY.subarray(1), KNOCK)).toThrow(RangeError);
    expect(() => connectCredential(KEY, { ...KNOCK, nonce: NONCE.subarray(1) })).toThrow(RangeError);
    expect(() => connectCredential(KEY, { ...KNOCK, keyId: -1 })).toThrow(RangeError);
  });
});

describe('credentialMatches', () => {
  const credential = connectCredential(KEY, KNOCK);
  it('is true for the same credential (string or bytes) and false otherwise', () => {
    expect(credentialMatches(credential, credential)).toBe(true);
    expect(credentialMatches(credential, Buffer.from(credential))).toBe(true);
    expect(credentialMatches(credential, `${credential.slice(0, 63)}0`)).toBe(false); // the vector ends in 9
    expect(credentialMatches(credential, credential.slice(1))).toBe(false);
    expect(credentialMatches(credential, '')).toBe(false);
    expect(credentialMatches(credential, undefined)).toBe(false);
  });
});
