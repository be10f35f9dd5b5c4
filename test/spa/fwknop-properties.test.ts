/**
 * Properties of the fwknop codec (fast-check): every valid input round-trips; decodeFwknop and verifyFwknopHmac
 * never throw on arbitrary bytes or strings; any single-character change of a valid wire is rejected; the strict
 * base64 codec has exactly one text per byte string.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeFwknop, FWKNOP_REASONS, type FwknopKeys, verifyFwknopHmac } from '../../spa/fwknop.ts';
import { decodeBase64, encodeBase64 } from '../../spa/fwknop-base64.ts';
import { BASE64_CHARS, encodeOrDiscard, inputArb, keysArb, randArb } from './fwknop-arbitraries.ts';

describe('fwknop properties', () => {
  it('round-trips every valid input under every key and hash type', () => {
    fc.assert(
      fc.property(inputArb, keysArb, randArb, (input, keys, rand) => {
        const wire = encodeOrDiscard(input, keys, rand);
        expect(wire.length).toBeGreaterThanOrEqual(140);
        expect(wire.length).toBeLessThan(400);
        expect(verifyFwknopHmac(wire, keys.hmacKey, keys.hmacType)).toBe(true);
        const decoded = decodeFwknop(wire, keys);
        expect(decoded.ok).toBe(true);
        if (!decoded.ok) return;
        expect(decoded.value).toMatchObject({ ...input, random: rand.random, version: '3.0.0' });
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on arbitrary bytes, and every rejection is a listed reason', () => {
    const keys: FwknopKeys = {
      encryptionKey: new Uint8Array(32),
      hmacKey: new Uint8Array(64),
      hmacType: 'sha256',
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1600 }), (bytes) => {
        const decoded = decodeFwknop(bytes, keys);
        expect(decoded.ok).toBe(false);
        if (!decoded.ok) expect(FWKNOP_REASONS).toContain(decoded.reason);
        expect(verifyFwknopHmac(bytes, keys.hmacKey, 'sha512')).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws on arbitrary strings of base64 characters of plausible length', () => {
    const keys: FwknopKeys = {
      encryptionKey: new Uint8Array(16),
      hmacKey: new Uint8Array(32),
      hmacType: 'md5',
    };
    const text = fc
      .array(fc.constantFrom(...BASE64_CHARS), { minLength: 130, maxLength: 420 })
      .map((chars) => chars.join(''));
    fc.assert(
      fc.property(text, (s) => {
        const decoded = decodeFwknop(new TextEncoder().encode(s), keys);
        expect(decoded.ok).toBe(false);
        if (!decoded.ok) expect(FWKNOP_REASONS).toContain(decoded.reason);
      }),
      { numRuns: 500 },
    );
  });

  it('never throws on arbitrary unicode strings (as UTF-8)', () => {
    const keys: FwknopKeys = {
      encryptionKey: new Uint8Array(1),
      hmacKey: new Uint8Array(1),
      hmacType: 'sha1',
    };
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 500 }), (s) => {
        const decoded = decodeFwknop(new TextEncoder().encode(s), keys);
        expect(decoded.ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('rejects any single-character change of a valid wire', () => {
    fc.assert(
      fc.property(
        inputArb,
        keysArb,
        randArb,
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (input, keys, rand, at, byte) => {
          const wire = encodeOrDiscard(input, keys, rand);
          const index = at % wire.length;
          fc.pre(wire[index] !== byte);
          const changed = wire.slice();
          changed[index] = byte;
          expect(decodeFwknop(changed, keys).ok).toBe(false);
          expect(verifyFwknopHmac(changed, keys.hmacKey, keys.hmacType)).toBe(false);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rejects a valid wire changed to another base64 character at any position, with auth-failed', () => {
    fc.assert(
      fc.property(
        inputArb,
        keysArb,
        randArb,
        fc.nat(),
        fc.constantFrom(...BASE64_CHARS),
        (i, k, r, at, c) => {
          const wire = encodeOrDiscard(i, k, r);
          const index = at % wire.length;
          const code = c.charCodeAt(0);
          fc.pre(wire[index] !== code);
          const changed = wire.slice();
          changed[index] = code;
          // One change could complete a leading 'U2FsdGVkX1' (rejected earlier, as bad-prefix).
          fc.pre(Buffer.from(changed.subarray(0, 10)).toString() !== 'U2FsdGVkX1');
          expect(decodeFwknop(changed, k)).toEqual({ ok: false, reason: 'auth-failed' });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('strict base64: decode(encode(b)) = b and every accepted text is the canonical one', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
        const text = encodeBase64(bytes);
        expect(text).toBe(Buffer.from(bytes).toString('base64').replace(/=+$/, ''));
        expect(decodeBase64(text)).toEqual(bytes);
      }),
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), (text) => {
        const decoded = decodeBase64(text);
        if (decoded !== undefined) expect(encodeBase64(decoded)).toBe(text);
      }),
      { numRuns: 1000 },
    );
  });
});
