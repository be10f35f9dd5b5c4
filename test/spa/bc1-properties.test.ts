/**
 * BC1 codec properties (fast-check): round trip for every valid payload, every single-bit flip rejected, decode
 * total (never throws) on arbitrary bytes and on arbitrary authenticated plaintexts, and one encoding per payload.
 */
import { createCipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BC1_REASONS,
  bc1EncodingLength,
  bc1ReplayId,
  decodeBc1,
  encodeBc1,
  readBc1Header,
} from '../../spa/bc1.ts';
import { key, keyId, nonce, payload } from './bc1-arbitraries.ts';

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/bc1-vectors.json', import.meta.url), 'utf8'),
) as {
  key: string;
  vectors: { name: string; packet: string }[];
};
const VECTOR_KEY = new Uint8Array(Buffer.from(fixture.key, 'hex'));

/** Seals arbitrary plaintext with node:crypto, so the decoder's parser sees authenticated junk. */
function seal(plaintext: Uint8Array, id: number, k: Uint8Array, n: Uint8Array): Uint8Array {
  const header = Buffer.alloc(17);
  header[0] = 0xb1;
  header.writeUInt32BE(id, 1);
  header.set(n, 5);
  const cipher = createCipheriv('chacha20-poly1305', k, n, { authTagLength: 16 });
  cipher.setAAD(header, { plaintextLength: plaintext.length });
  return new Uint8Array(
    Buffer.concat([header, cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]),
  );
}

describe('BC1 properties', () => {
  it('round trip: decode(encode(p)) = p, with the key id, nonce and predicted length', () => {
    fc.assert(
      fc.property(payload, keyId, key, nonce, (p, id, k, n) => {
        const packet = encodeBc1(p, { keyId: id, key: k, nonce: n });
        expect(packet.length).toBe(bc1EncodingLength(p));
        expect(packet.length).toBeGreaterThanOrEqual(48);
        expect(packet.length).toBeLessThanOrEqual(85);
        const result = decodeBc1(packet, k);
        expect(result).toEqual({ ok: true, value: { keyId: id, nonce: n, payload: p } });
        expect(readBc1Header(packet)).toEqual({ ok: true, value: { keyId: id, nonce: n } });
        expect(bc1ReplayId(id, n)).toBe(Buffer.from(packet.subarray(1, 17)).toString('hex'));
      }),
      { numRuns: 500 },
    );
  });

  it('every single-bit flip of every golden vector is rejected (magic → bad-magic, else auth-failed)', () => {
    let flips = 0;
    for (const v of fixture.vectors) {
      const packet = new Uint8Array(Buffer.from(v.packet, 'hex'));
      expect(decodeBc1(packet, VECTOR_KEY).ok).toBe(true);
      for (let bit = 0; bit < packet.length * 8; bit++) {
        const copy = packet.slice();
        copy[bit >> 3] = copy[bit >> 3]! ^ (1 << (bit & 7));
        const reason = bit < 8 ? 'bad-magic' : 'auth-failed';
        expect(decodeBc1(copy, VECTOR_KEY), `${v.name} bit ${bit}`).toEqual({ ok: false, reason });
        flips++;
      }
    }
    expect(flips).toBe(fixture.vectors.reduce((sum, v) => sum + (v.packet.length / 2) * 8, 0));
  });

  it('a single-bit flip anywhere in an arbitrary valid packet is rejected', () => {
    fc.assert(
      fc.property(payload, keyId, key, nonce, fc.nat(), (p, id, k, n, at) => {
        const packet = encodeBc1(p, { keyId: id, key: k, nonce: n });
        const bit = at % (packet.length * 8);
        packet[bit >> 3] = packet[bit >> 3]! ^ (1 << (bit & 7));
        expect(decodeBc1(packet, k)).toEqual({ ok: false, reason: bit < 8 ? 'bad-magic' : 'auth-failed' });
      }),
      { numRuns: 500 },
    );
  });

  it('never throws on arbitrary bytes, and rejects them with a listed reason', () => {
    const junk = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      // Right magic and a length in range, so the AEAD is actually tried.
      fc.uint8Array({ minLength: 47, maxLength: 84 }).map((rest) => new Uint8Array([0xb1, ...rest])),
    );
    fc.assert(
      fc.property(junk, key, (bytes, k) => {
        const result = decodeBc1(bytes, k);
        expect(result.ok).toBe(false);
        if (!result.ok) expect(BC1_REASONS).toContain(result.reason);
        expect(readBc1Header(bytes).ok).toBe(bytes.length >= 48 && bytes.length <= 85 && bytes[0] === 0xb1);
      }),
      { numRuns: 2000 },
    );
  });

  it('authenticated arbitrary plaintexts never throw; when accepted, re-encoding gives the same bytes', () => {
    const plausible = fc
      .record({
        flags: fc.constantFrom(0, 1, 3, 2, 4, 0x80),
        count: fc.integer({ min: 0, max: 9 }),
        body: fc.uint8Array({ minLength: 52, maxLength: 52 }),
        slack: fc.integer({ min: -1, max: 1 }),
        protocolBias: fc.boolean(),
      })
      .map(({ flags, count, body, slack, protocolBias }) => {
        const claimLength = flags & 1 ? (flags & 2 ? 16 : 4) : 0;
        const length = Math.min(52, Math.max(15, 12 + 3 * count + claimLength + slack));
        const out = body.slice(0, length);
        out[0] = 0;
        out[10] = flags;
        out[11] = count;
        if (protocolBias)
          for (let i = 0; i < count && 12 + 3 * i < length; i++) out[12 + 3 * i] = i % 2 ? 6 : 17;
        return out;
      });
    const plaintexts = fc.oneof(fc.uint8Array({ minLength: 15, maxLength: 52 }), plausible);
    let accepted = 0;
    fc.assert(
      fc.property(plaintexts, keyId, key, nonce, (plaintext, id, k, n) => {
        const packet = seal(plaintext, id, k, n);
        const result = decodeBc1(packet, k);
        if (result.ok) {
          accepted++;
          const again = encodeBc1(result.value.payload, { keyId: id, key: k, nonce: n });
          expect(Buffer.from(again).toString('hex')).toBe(Buffer.from(packet).toString('hex'));
        } else {
          expect(BC1_REASONS).toContain(result.reason);
          expect(['too-short', 'too-long', 'bad-magic', 'auth-failed']).not.toContain(result.reason);
        }
      }),
      { numRuns: 3000 },
    );
    expect(accepted).toBeGreaterThan(0);
  });
});
