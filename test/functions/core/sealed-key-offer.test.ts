/**
 * The sealed key offer BKO1 (functions/core/sealed-key-offer.ts, docs/protocol.md [KO-1]..[KO-8]) against the
 * golden vectors of test/fixtures/key-offer-vectors.json, computed independently with Python's `cryptography`
 * (test/fixtures/key-offer-vectors.py): every vector opens to its offer or to its refusal reason, and sealing
 * reproduces each valid vector byte for byte. Then properties (fast-check): round trip, every single-bit flip
 * refused, never a throw on arbitrary bytes; and the sealer's refusals of impossible inputs.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  KEY_OFFER_LENGTH,
  type KeyOfferReason,
  openKeyOffer,
  sealKeyOffer,
} from '../../../functions/core/sealed-key-offer.ts';

interface Vector {
  readonly name: string;
  readonly deviceId: string;
  readonly packet: string;
  readonly expect: 'ok' | KeyOfferReason;
  readonly nonce?: string;
  readonly offer?: { sealingKeyId: number; keyId: number; key: string; oldKeyNotAfter: number };
}
const FIXTURE = JSON.parse(
  readFileSync(new URL('../../fixtures/key-offer-vectors.json', import.meta.url), 'utf8'),
) as { readonly sealingKeyId: number; readonly sealingKey: string; readonly vectors: readonly Vector[] };
const SEALING = { keyId: FIXTURE.sealingKeyId, key: new Uint8Array(Buffer.from(FIXTURE.sealingKey, 'hex')) };
const bytes = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex, 'hex'));
const EVERY_REASON: readonly KeyOfferReason[] = [
  'bad-length',
  'bad-magic',
  'bad-version',
  'unknown-sealing-key',
  'unauthentic',
  'bad-time',
];

describe('BKO1 golden vectors (Python cryptography)', () => {
  it('cover a valid offer and every refusal reason, including a wrong device id and a tampered tag', () => {
    const expected = new Set(FIXTURE.vectors.map((v) => v.expect));
    expect([...expected].sort()).toEqual(['ok', ...EVERY_REASON].sort());
    expect(FIXTURE.vectors.map((v) => v.name)).toEqual(
      expect.arrayContaining(['wrong-device', 'tampered-tag']),
    );
  });

  it.each(FIXTURE.vectors.map((v) => [v.name, v] as const))(
    '%s opens as the vector says',
    (_name, vector) => {
      const opened = openKeyOffer([SEALING], vector.deviceId, bytes(vector.packet));
      if (vector.expect === 'ok') {
        const offer = vector.offer!;
        expect(opened).toEqual({
          ok: true,
          value: {
            sealingKeyId: offer.sealingKeyId,
            keyId: offer.keyId,
            key: bytes(offer.key),
            oldKeyNotAfter: offer.oldKeyNotAfter,
          },
        });
      } else {
        expect(opened).toEqual({ ok: false, reason: vector.expect });
      }
    },
  );

  it.each(FIXTURE.vectors.filter((v) => v.expect === 'ok').map((v) => [v.name, v] as const))(
    'sealing %s reproduces it byte for byte',
    (_name, vector) => {
      const offer = vector.offer!;
      const sealed = sealKeyOffer(
        SEALING,
        vector.deviceId,
        { keyId: offer.keyId, key: bytes(offer.key), oldKeyNotAfter: offer.oldKeyNotAfter },
        bytes(vector.nonce!),
      );
      expect(Buffer.from(sealed).toString('hex')).toBe(vector.packet);
      expect(sealed).toHaveLength(KEY_OFFER_LENGTH);
    },
  );

  it('opens with the right key among several held, and refuses when the held key id has other bytes', () => {
    const packet = bytes(FIXTURE.vectors[0]!.packet);
    const other = { keyId: 1, key: new Uint8Array(32).fill(9) };
    expect(openKeyOffer([other, SEALING], 'demo-device', packet).ok).toBe(true);
    expect(openKeyOffer([other], 'demo-device', packet)).toEqual({
      ok: false,
      reason: 'unknown-sealing-key',
    });
    expect(openKeyOffer([], 'demo-device', packet)).toEqual({ ok: false, reason: 'unknown-sealing-key' });
    expect(openKeyOffer([{ keyId: SEALING.keyId, key: other.key }], 'demo-device', packet)).toEqual({
      ok: false,
      reason: 'unauthentic',
    });
  });
});

const key = fc.uint8Array({ minLength: 32, maxLength: 32 });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const deviceId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const offer = fc.record({
  keyId: u32,
  key,
  oldKeyNotAfter: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
});
const nonce = fc.uint8Array({ minLength: 12, maxLength: 12 });

describe('BKO1 properties', () => {
  it('round-trips every offer to every device id under every sealing key', () => {
    fc.assert(
      fc.property(key, u32, deviceId, offer, nonce, (sealingKey, sealingKeyId, id, value, n) => {
        const sealing = { keyId: sealingKeyId, key: sealingKey };
        const opened = openKeyOffer([sealing], id, sealKeyOffer(sealing, id, value, n));
        expect(opened).toEqual({ ok: true, value: { ...value, sealingKeyId } });
      }),
      { numRuns: 300 },
    );
  });

  it('refuses every single-bit flip of an offer (never opens it to anything)', () => {
    const packet = bytes(FIXTURE.vectors[0]!.packet);
    for (let bit = 0; bit < packet.length * 8; bit++) {
      const flipped = packet.slice();
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      const opened = openKeyOffer([SEALING], 'demo-device', flipped);
      expect(opened.ok, `bit ${bit}`).toBe(false);
    }
  });

  it('never throws on arbitrary bytes, and answers one of the documented reasons', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.boolean(), (random, framed) => {
        const input = framed
          ? Uint8Array.of(0x42, 0x4b, 0x4f, 0x01, 0x12, 0x34, 0x56, 0x78, ...random)
          : random;
        const opened = openKeyOffer([SEALING], 'demo-device', input);
        expect(opened.ok).toBe(false);
        if (!opened.ok) expect(EVERY_REASON).toContain(opened.reason);
      }),
      { numRuns: 500 },
    );
  });
});

describe('sealKeyOffer refuses impossible inputs, naming the field', () => {
  const good = { keyId: 1, key: new Uint8Array(32), oldKeyNotAfter: 0 };
  const n = new Uint8Array(12);
  it.each([
    ['sealing key', () => sealKeyOffer({ keyId: 1, key: new Uint8Array(31) }, 'd', good, n)],
    ['sealing key id', () => sealKeyOffer({ keyId: 2 ** 32, key: new Uint8Array(32) }, 'd', good, n)],
    ['device id', () => sealKeyOffer(SEALING, 'a/b', good, n)],
    ['new key', () => sealKeyOffer(SEALING, 'd', { ...good, key: new Uint8Array(33) }, n)],
    ['new key id', () => sealKeyOffer(SEALING, 'd', { ...good, keyId: -1 }, n)],
    ['oldKeyNotAfter', () => sealKeyOffer(SEALING, 'd', { ...good, oldKeyNotAfter: 2 ** 53 }, n)],
    ['nonce', () => sealKeyOffer(SEALING, 'd', good, new Uint8Array(16))],
  ])('%s', (field, seal) => {
    expect(seal).toThrow(new RegExp(`^sealed key offer ${field}: expected`));
  });
});
