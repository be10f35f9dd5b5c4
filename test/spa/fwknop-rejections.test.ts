/**
 * The table of wrong inputs decodeFwknop must reject, each with its reason (docs/protocol-fwknop.md rules).
 * The deeper cases are crafted here with node:crypto only (no code of ours): hand-built plaintexts and blobs,
 * encrypted with EVP_BytesToKey(MD5) + AES-256-CBC and given a correct HMAC, so the checks after the HMAC are
 * the ones that fire.
 */
import { createCipheriv, createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodeFwknop, encodeFwknop, type FwknopKeys, type FwknopReason } from '../../spa/fwknop.ts';
import type { FwknopHashType } from '../../spa/types.ts';
import { malformedShapes } from './fwknop-shapes.ts';

const KEYS: FwknopKeys = {
  encryptionKey: new Uint8Array(Buffer.from('Rox2EqLiWsW9kSHmMxk0irHh7Q+CIP5RuaqZSxCg080=', 'base64')),
  hmacKey: new Uint8Array(
    Buffer.from(
      '93XokbOhrX4CE2MnWrD9QcNEvKLu26QzEIZ4lzGlGsSuZLSUjM8ocyS82y5YF2j8W7BQQsgSxbC+s3k7u/+IUA==',
      'base64',
    ),
  ),
  hmacType: 'sha256',
};
const SALT = Buffer.from('0102030405060708', 'hex');
const b64 = (data: Buffer | string) => Buffer.from(data).toString('base64').replace(/=+$/, '');
const bytes = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));

function evpKeyIv(key: Uint8Array, salt: Buffer): { key: Buffer; iv: Buffer } {
  const d1 = createHash('md5')
    .update(Buffer.concat([key, salt]))
    .digest();
  const d2 = createHash('md5')
    .update(Buffer.concat([d1, key, salt]))
    .digest();
  const d3 = createHash('md5')
    .update(Buffer.concat([d2, key, salt]))
    .digest();
  return { key: Buffer.concat([d1, d2]), iv: d3 };
}

/** The wire for a blob's base64 text (must begin 'U2FsdGVkX1'), with a correct HMAC over that text. */
function wrapText(
  text: string,
  hmacKey: Uint8Array = KEYS.hmacKey,
  hmacType: FwknopHashType = 'sha256',
): string {
  if (!text.startsWith('U2FsdGVkX1')) throw new Error('test bug: the blob text must start with U2FsdGVkX1');
  return text.slice(10) + b64(createHmac(hmacType, hmacKey).update(text).digest());
}

/** Encrypt already-padded bytes (no automatic padding) under `key` and wrap them. */
function sealPadded(padded: Buffer, key: Uint8Array = KEYS.encryptionKey, magic = 'Salted__'): string {
  const { key: aesKey, iv } = evpKeyIv(key, SALT);
  const cipher = createCipheriv('aes-256-cbc', aesKey, iv).setAutoPadding(false);
  const ciphertext = Buffer.concat([cipher.update(padded), cipher.final()]);
  return wrapText(b64(Buffer.concat([Buffer.from(magic, 'latin1'), SALT, ciphertext])));
}

function pkcs7(data: Buffer): Buffer {
  const pad = 16 - (data.length % 16);
  return Buffer.concat([data, Buffer.alloc(pad, pad)]);
}

/** Seal a hand-built plaintext (string), PKCS#7-padded, with a correct HMAC. */
const sealPlaintext = (plaintext: string) => sealPadded(pkcs7(Buffer.from(plaintext, 'latin1')));

/** A plaintext from raw fields with the right digest (or the digest given) appended. */
function plaintextOf(fields: readonly string[], digestType = 'sha256', digest?: string): string {
  const covered = fields.join(':');
  return `${covered}:${digest ?? b64(createHash(digestType).update(covered, 'latin1').digest())}`;
}

const RANDOM = '1234567890123456';
const USER = b64('device-1');
const TS = '1767225600';
const MSG = b64('198.51.100.7,tcp/8883');
const fields = (
  overrides: Partial<Record<0 | 1 | 2 | 3 | 4 | 5, string>> = {},
  extra: readonly string[] = [],
) => {
  const base = [RANDOM, USER, TS, '3.0.0', '1', MSG];
  for (const [index, value] of Object.entries(overrides)) base[Number(index)] = value;
  return [...base, ...extra];
};

const VALID = sealPlaintext(plaintextOf(fields()));

describe('the crafting helpers', () => {
  it('produce a packet decodeFwknop accepts (so every rejection below is caused by its one change)', () => {
    const decoded = decodeFwknop(bytes(VALID), KEYS);
    expect(decoded.ok && decoded.value).toMatchObject({
      random: RANDOM,
      username: 'device-1',
      timestamp: 1767225600,
    });
  });
});

type Case = readonly [name: string, wire: string | Uint8Array, reason: FwknopReason, keys?: FwknopKeys];

const shapeCases: readonly Case[] = malformedShapes(VALID);

const hmacCases: readonly Case[] = [
  ['[FKO-4] wrong HMAC key', VALID, 'auth-failed', { ...KEYS, hmacKey: new Uint8Array(64).fill(7) }],
  ['[FKO-4] HMAC type configured md5 (wrong length cut)', VALID, 'auth-failed', { ...KEYS, hmacType: 'md5' }],
  ['[FKO-4] HMAC type configured sha512', VALID, 'auth-failed', { ...KEYS, hmacType: 'sha512' }],
  [
    '[FKO-4] HMAC type sha3-256 (same length, other hash)',
    VALID,
    'auth-failed',
    { ...KEYS, hmacType: 'sha3-256' },
  ],
  [
    '[FKO-4] last HMAC character changed',
    VALID.slice(0, -1) + (VALID.endsWith('A') ? 'B' : 'A'),
    'auth-failed',
  ],
  ['[FKO-4] HMAC removed (no --use-hmac)', VALID.slice(0, -43), 'auth-failed'],
  [
    '[FKO-4] body character changed',
    `${VALID.slice(0, 20)}${VALID[20] === 'A' ? 'B' : 'A'}${VALID.slice(21)}`,
    'auth-failed',
  ],
  [
    '[FKO-4] HMAC over the text without the U2FsdGVkX1 prefix',
    (() => {
      const body = VALID.slice(0, -43);
      return body + b64(createHmac('sha256', KEYS.hmacKey).update(body).digest());
    })(),
    'auth-failed',
  ],
  [
    '[FKO-4] HMAC over the decoded bytes instead of the text',
    (() => {
      const body = VALID.slice(0, -43);
      const blob = Buffer.from(`U2FsdGVkX1${body}`, 'base64');
      return body + b64(createHmac('sha256', KEYS.hmacKey).update(blob).digest());
    })(),
    'auth-failed',
  ],
];

const ciphertext100 = Buffer.alloc(100, 0x33);
const envelopeCases: readonly Case[] = [
  [
    '[FKO-5] blob text of impossible length (4n+1) under a valid HMAC',
    wrapText(`${b64(Buffer.concat([Buffer.from('Salted__'), SALT, Buffer.alloc(128, 1)]))}A`),
    'bad-base64',
  ],
  [
    '[FKO-5] blob text with non-zero unused bits under a valid HMAC',
    (() => {
      const text = b64(Buffer.concat([Buffer.from('Salted__'), SALT, Buffer.alloc(129, 1)])); // 145 bytes: the last character has 4 unused bits
      const last = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'.indexOf(text.at(-1)!);
      return wrapText(
        text.slice(0, -1) + 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'[last | 1],
      );
    })(),
    'bad-base64',
  ],
  [
    "[FKO-5] magic 'Salted_P' (still begins U2FsdGVkX1)",
    wrapText(b64(Buffer.concat([Buffer.from('Salted_P'), SALT, Buffer.alloc(128, 1)]))),
    'bad-salt-header',
  ],
  [
    '[FKO-5] ciphertext of 100 bytes (not a multiple of 16)',
    wrapText(b64(Buffer.concat([Buffer.from('Salted__'), SALT, ciphertext100]))),
    'bad-ciphertext-length',
  ],
  [
    '[FKO-7] padding byte 0',
    sealPadded(Buffer.concat([Buffer.alloc(95, 0x41), Buffer.from([0])])),
    'bad-padding',
  ],
  [
    '[FKO-7] padding byte 17',
    sealPadded(Buffer.concat([Buffer.alloc(95, 0x41), Buffer.from([17])])),
    'bad-padding',
  ],
  [
    '[FKO-7] inconsistent padding bytes (02 03 03 → 3)',
    sealPadded(Buffer.concat([Buffer.alloc(93, 0x41), Buffer.from([2, 3, 3])])),
    'bad-padding',
  ],
  [
    '[FKO-7] padding 16 but one of its bytes 15',
    sealPadded(Buffer.concat([Buffer.alloc(80, 0x41), Buffer.alloc(1, 15), Buffer.alloc(15, 16)])),
    'bad-padding',
  ],
  [
    '[FKO-7] wrong encryption key, right HMAC (garbage plaintext)',
    sealPadded(pkcs7(Buffer.from(plaintextOf(fields()), 'latin1')), new Uint8Array(32).fill(9)),
    'bad-padding',
  ],
];

const plaintextCases: readonly Case[] = [
  ['[FKO-8] a space in the plaintext', sealPlaintext(plaintextOf(fields({ 3: '3.0 0' }))), 'bad-plaintext'],
  ['[FKO-8] a NUL in the plaintext', sealPlaintext(`${plaintextOf(fields())}\0`), 'bad-plaintext'],
  [
    '[FKO-8] a "=" padded base64 field',
    sealPlaintext(plaintextOf(fields({ 1: `${USER}=` }))),
    'bad-plaintext',
  ],
  ['[FKO-9] 6 fields', sealPlaintext(fields().join(':')), 'bad-fields'],
  ['[FKO-9] 11 fields', sealPlaintext(plaintextOf(fields({}, ['a', 'b', 'c', 'd']))), 'bad-fields'],
  [
    '[FKO-9] type 1 with two extra fields',
    sealPlaintext(plaintextOf(fields({}, ['YQ', 'Yg']))),
    'bad-fields',
  ],
  ['[FKO-9] type 2 without its NAT field', sealPlaintext(plaintextOf(fields({ 4: '2' }))), 'bad-fields'],
  [
    '[FKO-9] type 4 with only one extra field',
    sealPlaintext(plaintextOf(fields({ 4: '4' }, ['30']))),
    'bad-fields',
  ],
  [
    '[FKO-10] random of 15 digits',
    sealPlaintext(plaintextOf(fields({ 0: '123456789012345' }))),
    'bad-random',
  ],
  [
    '[FKO-10] random of 17 digits',
    sealPlaintext(plaintextOf(fields({ 0: '12345678901234567' }))),
    'bad-random',
  ],
  [
    '[FKO-10] random with a letter',
    sealPlaintext(plaintextOf(fields({ 0: '123456789012345a' }))),
    'bad-random',
  ],
  ['[FKO-10] empty username', sealPlaintext(plaintextOf(fields({ 1: '' }))), 'bad-username'],
  [
    '[FKO-10] username not canonical base64',
    sealPlaintext(plaintextOf(fields({ 1: 'ZGV2aWNlLTF' }))),
    'bad-username',
  ],
  ['[FKO-10] username with "/"', sealPlaintext(plaintextOf(fields({ 1: b64('a/b') }))), 'bad-username'],
  [
    '[FKO-10] username with a control byte',
    sealPlaintext(plaintextOf(fields({ 1: b64('a\tb') }))),
    'bad-username',
  ],
  [
    '[FKO-10] username of 49 bytes',
    sealPlaintext(plaintextOf(fields({ 1: b64('u'.repeat(49)) }))),
    'bad-username',
  ],
  [
    '[FKO-10] timestamp not decimal',
    sealPlaintext(plaintextOf(fields({ 2: '17x7225600' }))),
    'bad-timestamp',
  ],
  [
    '[FKO-10] timestamp with a leading zero',
    sealPlaintext(plaintextOf(fields({ 2: '01767225600' }))),
    'bad-timestamp',
  ],
  ['[FKO-10] timestamp 2^32', sealPlaintext(plaintextOf(fields({ 2: '4294967296' }))), 'bad-timestamp'],
  [
    '[FKO-10] timestamp of 13 digits',
    sealPlaintext(plaintextOf(fields({ 2: '1000000000000' }))),
    'bad-timestamp',
  ],
  ['[FKO-10] empty timestamp', sealPlaintext(plaintextOf(fields({ 2: '' }))), 'bad-timestamp'],
  ['[FKO-10] version 2.0.0', sealPlaintext(plaintextOf(fields({ 3: '2.0.0' }))), 'bad-version'],
  ['[FKO-10] version 3.0.0.0', sealPlaintext(plaintextOf(fields({ 3: '3.0.0.0' }))), 'bad-version'],
  ['[FKO-10] message type 7', sealPlaintext(plaintextOf(fields({ 4: '7' }))), 'bad-message-type'],
  ['[FKO-10] message type 01', sealPlaintext(plaintextOf(fields({ 4: '01' }))), 'bad-message-type'],
  ['[FKO-10] empty message type', sealPlaintext(plaintextOf(fields({ 4: '' }))), 'bad-message-type'],
  ...(
    [
      ['no port list', '198.51.100.7'],
      ['a trailing comma', '198.51.100.7,tcp/22,'],
      ['proto icmp', '198.51.100.7,icmp/0'],
      ['port 0', '198.51.100.7,tcp/0'],
      ['port 65536', '198.51.100.7,tcp/65536'],
      ['port with a leading zero', '198.51.100.7,tcp/022'],
      ['IPv4 of three parts', '198.51.100,tcp/22'],
      ['IPv4 octet 256', '256.51.100.7,tcp/22'],
      ['IPv4 octet with a leading zero', '198.051.100.7,tcp/22'],
      ['IPv6 allow address', '::1,tcp/22'],
      ['uppercase proto', '198.51.100.7,TCP/22'],
      ['a space', '198.51.100.7, tcp/22'],
    ] as const
  ).map(
    ([name, message]): Case => [
      `[FKO-11] access message with ${name}`,
      sealPlaintext(plaintextOf(fields({ 5: b64(message) }))),
      'bad-message',
    ],
  ),
  ['[FKO-11] empty message field', sealPlaintext(plaintextOf(fields({ 5: '' }))), 'bad-message'],
  [
    '[FKO-11] message not canonical base64',
    sealPlaintext(plaintextOf(fields({ 5: `${MSG}B` }))),
    'bad-message',
  ],
  [
    '[FKO-11] command message without a command',
    sealPlaintext(plaintextOf(fields({ 4: '0', 5: b64('198.51.100.7,') }))),
    'bad-message',
  ],
  [
    '[FKO-11] command message with a newline',
    sealPlaintext(plaintextOf(fields({ 4: '0', 5: b64('198.51.100.7,ls\nrm') }))),
    'bad-message',
  ],
  ...(
    [
      ['no port', 'host'],
      ['port 0', 'host,0'],
      ['two commas', 'host,22,23'],
      ['a space in the host', 'a b,22'],
      ['a bad IPv4 host', '192.168.1,22'],
      ['a label ending in "-"', 'bad-.example,22'],
    ] as const
  ).map(
    ([name, nat]): Case => [
      `[FKO-11] NAT access with ${name}`,
      sealPlaintext(plaintextOf(fields({ 4: '2' }, [b64(nat)]))),
      'bad-nat-access',
    ],
  ),
  [
    '[FKO-11] server_auth with a control byte',
    sealPlaintext(plaintextOf(fields({}, [b64('pass\x01')]))),
    'bad-server-auth',
  ],
  [
    '[FKO-11] server_auth of 64 characters',
    sealPlaintext(plaintextOf(fields({}, [b64('x'.repeat(64))]))),
    'bad-server-auth',
  ],
  ['[FKO-11] empty server_auth', sealPlaintext(plaintextOf(fields({}, ['']))), 'bad-server-auth'],
  ...(['0', '65536', '030', '', '1e3'] as const).map(
    (timeout): Case => [
      `[FKO-11] client timeout "${timeout}"`,
      sealPlaintext(plaintextOf(fields({ 4: '3' }, [timeout]))),
      'bad-client-timeout',
    ],
  ),
  [
    '[FKO-12] wrong digest value',
    sealPlaintext(plaintextOf(fields(), 'sha256', b64(createHash('sha256').update('other').digest()))),
    'bad-digest',
  ],
  ['[FKO-12] digest of 42 characters', sealPlaintext(plaintextOf(fields()).slice(0, -1)), 'bad-digest'],
  [
    '[FKO-12] digest over the fields without the last colon removed',
    sealPlaintext(
      plaintextOf(
        fields(),
        'sha256',
        b64(
          createHash('sha256')
            .update(`${fields().join(':')}:`)
            .digest(),
        ),
      ),
    ),
    'bad-digest',
  ],
  [
    '[FKO-12] SHA-224 digest (28 bytes, 38 characters)',
    sealPlaintext(plaintextOf(fields(), 'sha224')),
    'bad-digest',
  ],
];

describe('decodeFwknop rejects, with the rule that failed', () => {
  for (const [name, wire, reason, keys] of [
    ...shapeCases,
    ...hmacCases,
    ...envelopeCases,
    ...plaintextCases,
  ]) {
    it(`${name} → ${reason}`, () => {
      const input = typeof wire === 'string' ? bytes(wire) : wire;
      expect(decodeFwknop(input, keys ?? KEYS)).toEqual({ ok: false, reason });
    });
  }
});

describe('the order of the checks', () => {
  it('checks the HMAC before the blob: a broken blob under a wrong HMAC is only auth-failed', () => {
    const broken = wrapText(b64(Buffer.concat([Buffer.from('Salted__'), SALT, ciphertext100])));
    const wrongKeys = { ...KEYS, hmacKey: new Uint8Array(64).fill(1) };
    expect(decodeFwknop(bytes(broken), wrongKeys)).toEqual({ ok: false, reason: 'auth-failed' });
  });

  it('accepts what the crafted plaintexts accept when each field is right (the table changes one thing)', () => {
    const nat = sealPlaintext(plaintextOf(fields({ 4: '2' }, [b64('host.example,22')])));
    expect(decodeFwknop(bytes(nat), KEYS).ok).toBe(true);
    const timeout = sealPlaintext(plaintextOf(fields({ 4: '3' }, [b64('auth'), '30'])));
    expect(decodeFwknop(bytes(timeout), KEYS)).toMatchObject({
      ok: true,
      value: { serverAuth: 'auth', clientTimeout: 30 },
    });
    const sha3 = sealPlaintext(plaintextOf(fields(), 'sha3-512'));
    expect(decodeFwknop(bytes(sha3), KEYS)).toMatchObject({ ok: true, value: { digestType: 'sha3-512' } });
  });

  it('an encoder packet and a crafted one of the same plaintext and salt are the same wire', () => {
    const ours = encodeFwknop(
      { username: 'device-1', timestamp: 1767225600, messageType: 1, message: '198.51.100.7,tcp/8883' },
      KEYS,
      { salt: new Uint8Array(SALT), random: RANDOM },
    );
    expect(Buffer.from(ours).toString('latin1')).toBe(VALID);
  });
});
