/**
 * readFwknopFrame / decodeFwknopFrame: the fwknop decode in its two pieces (docs/protocol-fwknop.md).
 * - readFwknopFrame rejects every malformed shape [FKO-1]..[FKO-3] with the reason decodeFwknop gives it (a table
 *   of wrong inputs, and arbitrary bytes), and accepts exactly what passes the shape rules;
 * - decodeFwknopFrame on a frame gives what decodeFwknop gives on the wire (every HMAC type, arbitrary bytes);
 * - the frame is a private copy that only readFwknopFrame makes; keys are checked where they are used.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeFwknop,
  decodeFwknopFrame,
  encodeFwknop,
  FWKNOP_HASH_TYPES,
  FWKNOP_REASONS,
  type FwknopFrame,
  type FwknopKeys,
  type FwknopReason,
  FwknopUsageError,
  readFwknopFrame,
} from '../../spa/fwknop.ts';
import type { FwknopHashType } from '../../spa/types.ts';
import { malformedShapes, type ShapeCase } from './fwknop-shapes.ts';

const ascii = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));
const KEYS: FwknopKeys = {
  encryptionKey: new Uint8Array(32).fill(0x5a),
  hmacKey: new Uint8Array(64).fill(0xa5),
  hmacType: 'sha256',
};
const RAND = { salt: new Uint8Array([0, 1, 2, 3, 4, 5, 6, 7]), random: '1234567890123456' };
const INPUT = {
  username: 'device-1',
  timestamp: 1767225600,
  messageType: 1,
  message: '198.51.100.7,tcp/8883',
} as const;
const VALID_BYTES = encodeFwknop(INPUT, KEYS, RAND);
const VALID = Buffer.from(VALID_BYTES).toString('latin1');

/** The reasons only the shape rules give, i.e. the ones readFwknopFrame may return. */
const FRAME_REASONS: readonly FwknopReason[] = [
  'too-short',
  'too-long',
  'gpg-not-supported',
  'bad-base64',
  'bad-prefix',
];

/** Every malformed shape decodeFwknop rejects before the HMAC (the table of fwknop-rejections.test.ts), and more. */
const SHAPE_CASES: readonly ShapeCase[] = [
  ...malformedShapes(VALID),
  ['[FKO-1] one base64 character', 'A', 'too-short'],
  ['[FKO-1] a valid packet truncated to 139 characters', VALID.slice(0, 139), 'too-short'],
  ['[FKO-1] 139 characters with a bad byte (length first)', `${'A'.repeat(138)}=`, 'too-short'],
  ['[FKO-1] 1501 bytes of junk (length first)', '\0'.repeat(1501), 'too-long'],
  ['[FKO-1] 400 bytes of junk (length first)', ' '.repeat(400), 'gpg-not-supported'],
  ['[FKO-2] "=" padding at the end', `${VALID.slice(0, -1)}=`, 'bad-base64'],
  ['[FKO-2] URL-safe "_"', `${VALID.slice(0, 50)}_${VALID.slice(51)}`, 'bad-base64'],
  ['[FKO-2] a first byte outside the alphabet', `.${VALID.slice(1)}`, 'bad-base64'],
  ['[FKO-2] a BC1 magic byte first', new Uint8Array([0xb1, ...ascii(VALID.slice(1))]), 'bad-base64'],
  ['[FKO-3] only the prefix then junk', `U2FsdGVkX1${'A'.repeat(140)}`, 'bad-prefix'],
];

const bytesOf = (wire: string | Uint8Array) => (typeof wire === 'string' ? ascii(wire) : wire);

describe('readFwknopFrame rejects every malformed shape decodeFwknop rejects, with the same reason', () => {
  for (const [name, wire, reason] of SHAPE_CASES) {
    it(`${name} → ${reason}`, () => {
      const input = bytesOf(wire);
      expect(readFwknopFrame(input)).toEqual({ ok: false, reason });
      expect(decodeFwknop(input, KEYS)).toEqual({ ok: false, reason });
    });
  }

  it('the table covers every shape reason', () => {
    expect(new Set(SHAPE_CASES.map(([, , reason]) => reason))).toEqual(new Set(FRAME_REASONS));
    expect(FRAME_REASONS.every((reason) => FWKNOP_REASONS.includes(reason))).toBe(true);
  });

  it('on arbitrary bytes: a frame rejection is decodeFwknop’s rejection; a frame passes on to the HMAC', () => {
    const base64Char = fc.constantFrom(
      ...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.split(''),
    );
    const texts = fc.string({ unit: base64Char, minLength: 130, maxLength: 410 }).map(ascii);
    const anyBytes = fc.uint8Array({ minLength: 0, maxLength: 1600 });
    const mutated = fc
      .tuple(fc.nat(VALID_BYTES.length - 1), fc.integer({ min: 0, max: 255 }))
      .map(([at, byte]) => {
        const copy = Uint8Array.from(VALID_BYTES);
        copy[at] = byte;
        return copy;
      });
    fc.assert(
      fc.property(fc.oneof(texts, anyBytes, mutated), (wire) => {
        const frame = readFwknopFrame(wire);
        const decoded = decodeFwknop(wire, KEYS);
        if (!frame.ok) {
          expect(FRAME_REASONS).toContain(frame.reason);
          expect(decoded).toEqual(frame);
        } else {
          // Past the shape rules, the next rule is the HMAC; shape-only reasons cannot come back.
          expect(decoded.ok ? 'ok' : decoded.reason).not.toMatch(
            /^(too-short|too-long|gpg-not-supported|bad-prefix)$/,
          );
          expect(decodeFwknopFrame(frame.value, KEYS)).toEqual(decoded);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('accepts the shortest and longest Rijndael lengths (140 and 399 base64 characters)', () => {
    expect(readFwknopFrame(ascii('A'.repeat(140)))).toMatchObject({ ok: true, value: { length: 140 } });
    expect(readFwknopFrame(ascii('A'.repeat(399)))).toMatchObject({ ok: true, value: { length: 399 } });
  });

  it('never throws on what is not bytes', () => {
    for (const value of [null, undefined, 'A'.repeat(200), 42, {}, [65, 65]]) {
      expect(readFwknopFrame(value as unknown as Uint8Array).ok).toBe(false);
    }
  });
});

describe('decodeFwknopFrame', () => {
  it('decodes as decodeFwknop does, for every HMAC type', () => {
    for (const hmacType of FWKNOP_HASH_TYPES) {
      const keys = { ...KEYS, hmacType };
      const wire = encodeFwknop({ ...INPUT, messageType: 3, clientTimeout: 30 }, keys, RAND);
      const frame = readFwknopFrame(wire);
      if (!frame.ok) throw new Error(`test bug: the ${hmacType} packet must frame`);
      const decoded = decodeFwknopFrame(frame.value, keys);
      expect(decoded, hmacType).toMatchObject({
        ok: true,
        value: { clientTimeout: 30, username: 'device-1' },
      });
      expect(decoded).toEqual(decodeFwknop(wire, keys));
    }
  });

  it('one frame serves several candidates: wrong keys say auth-failed, the right one decodes', () => {
    const frame = readFwknopFrame(VALID_BYTES);
    if (!frame.ok) throw new Error('test bug: the encoder packet must frame');
    expect(decodeFwknopFrame(frame.value, { ...KEYS, hmacKey: new Uint8Array(64).fill(7) })).toEqual({
      ok: false,
      reason: 'auth-failed',
    });
    expect(decodeFwknopFrame(frame.value, { ...KEYS, hmacType: 'sha3-256' })).toEqual({
      ok: false,
      reason: 'auth-failed',
    });
    expect(decodeFwknopFrame(frame.value, KEYS)).toMatchObject({ ok: true, value: { username: 'device-1' } });
    // Under the right HMAC key, a wrong encryption key fails after the HMAC (padding or fields), never auth.
    const wrongEncryption = decodeFwknopFrame(frame.value, { ...KEYS, encryptionKey: new Uint8Array(32) });
    expect(wrongEncryption.ok).toBe(false);
    expect(wrongEncryption.ok || wrongEncryption.reason).not.toBe('auth-failed');
  });

  it('keeps a private copy: changing the datagram after reading the frame changes nothing', () => {
    const wire = Uint8Array.from(VALID_BYTES);
    const frame = readFwknopFrame(wire);
    if (!frame.ok) throw new Error('test bug: the encoder packet must frame');
    wire.fill(0);
    expect(decodeFwknopFrame(frame.value, KEYS).ok).toBe(true);
    expect(Object.isFrozen(frame.value)).toBe(true);
  });

  it('refuses a frame readFwknopFrame did not make (so the shape rules cannot be skipped)', () => {
    const forged = { length: VALID_BYTES.length } as FwknopFrame;
    expect(() => decodeFwknopFrame(forged, KEYS)).toThrow(FwknopUsageError);
    expect(() => decodeFwknopFrame(forged, KEYS)).toThrow(/^frame: must come from readFwknopFrame/);
  });

  it('checks keys where they are used: a bad HMAC key or type authenticates nothing; a bad encryption key throws only after the HMAC verified', () => {
    const frame = readFwknopFrame(VALID_BYTES);
    if (!frame.ok) throw new Error('test bug: the encoder packet must frame');
    const authFailed = { ok: false, reason: 'auth-failed' };
    expect(decodeFwknopFrame(frame.value, { ...KEYS, hmacKey: new Uint8Array() })).toEqual(authFailed);
    expect(decodeFwknopFrame(frame.value, { ...KEYS, hmacKey: new Uint8Array(129) })).toEqual(authFailed);
    expect(decodeFwknopFrame(frame.value, { ...KEYS, hmacType: 'sha224' as FwknopHashType })).toEqual(
      authFailed,
    );
    const badEncryption = { ...KEYS, encryptionKey: new Uint8Array(33) };
    expect(decodeFwknopFrame(frame.value, { ...badEncryption, hmacKey: new Uint8Array(64).fill(7) })).toEqual(
      authFailed,
    );
    expect(() => decodeFwknopFrame(frame.value, badEncryption)).toThrow(/^keys\.encryptionKey: /);
    // decodeFwknop keeps its contract: every misconfigured key throws, before the wire is looked at.
    expect(() => decodeFwknop(new Uint8Array(), { ...KEYS, hmacKey: new Uint8Array() })).toThrow(
      /^keys\.hmacKey: /,
    );
  });
});
