/**
 * The malformed shapes [FKO-1]..[FKO-3] of an fwknop wire, each with the reason it must be rejected for, built
 * around one valid wire. Shared by test/spa/fwknop-rejections.test.ts (decodeFwknop) and
 * test/spa/fwknop-frame.test.ts (readFwknopFrame), so both reject the very same table.
 */
import type { FwknopReason } from '../../spa/fwknop.ts';

export type ShapeCase = readonly [name: string, wire: string | Uint8Array, reason: FwknopReason];

const latin1 = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));

/** `valid` is the text of a packet the codec accepts (at least 151 characters, at most 399). */
export function malformedShapes(valid: string): readonly ShapeCase[] {
  return [
    ['[FKO-1] empty', '', 'too-short'],
    ['[FKO-1] 139 base64 characters', 'A'.repeat(139), 'too-short'],
    ['[FKO-1] truncated to 100 characters', valid.slice(0, 100), 'too-short'],
    ['[FKO-1] 1501 characters', 'A'.repeat(1501), 'too-long'],
    ['[FKO-1] 400 characters (GnuPG length)', 'A'.repeat(400), 'gpg-not-supported'],
    ['[FKO-1] 1500 characters', 'A'.repeat(1500), 'gpg-not-supported'],
    [
      '[FKO-1] a valid packet padded to 400 characters',
      valid + 'A'.repeat(400 - valid.length),
      'gpg-not-supported',
    ],
    ['[FKO-2] a "=" inside', `${valid.slice(0, 50)}=${valid.slice(51)}`, 'bad-base64'],
    ['[FKO-2] URL-safe "-"', `${valid.slice(0, 50)}-${valid.slice(51)}`, 'bad-base64'],
    ['[FKO-2] a trailing newline', `${valid}\n`, 'bad-base64'],
    ['[FKO-2] a space', `${valid.slice(0, 50)} ${valid.slice(51)}`, 'bad-base64'],
    ['[FKO-2] a byte above 0x7f', new Uint8Array([...latin1(valid.slice(0, 150)), 0xc3]), 'bad-base64'],
    ['[FKO-2] a NUL byte', new Uint8Array([...latin1(valid.slice(0, 150)), 0]), 'bad-base64'],
    ['[FKO-3] starts with U2FsdGVkX1 (prefix not stripped)', `U2FsdGVkX1${valid}`, 'bad-prefix'],
  ];
}
