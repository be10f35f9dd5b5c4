/**
 * The C device library (device-client/c/): compiled here with the host cc (C99, -Wall -Wextra -Werror -pedantic)
 * against Debian's libmbedtls-dev, once plain and once under AddressSanitizer + UndefinedBehaviorSanitizer, and
 * driven through its test program (device-client/c/test/bc_test.c, one command per stdin line). Every check is
 * made against the TypeScript reference: the golden vectors byte for byte, decodeBc1 on knocks built in C,
 * encodeBc1 on the same inputs, parseKeyOffer's reason for every malformed offer, ackProof for the proof.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ackProof,
  encodeKeyOffer,
  type KeyMessageReason,
  parseKeyAck,
  parseKeyOffer,
  verifyAckProof,
} from '../../functions/core/key-messages.ts';
import { type Bc1Payload, decodeBc1, encodeBc1 } from '../../spa/bc1.ts';
import { parseIpv4, parseIpv6 } from '../../spa/bc1-address.ts';
import { C_ROOT, compileC, SANITIZE } from '../support/c-build.ts';

interface Vector {
  readonly name: string;
  readonly keyId: number;
  readonly nonce: string;
  readonly payload: Bc1Payload;
  readonly packet: string;
}
const FIXTURE = JSON.parse(
  readFileSync(new URL('../fixtures/bc1-vectors.json', import.meta.url), 'utf8'),
) as { readonly key: string; readonly vectors: readonly Vector[] };
const KEY_HEX = FIXTURE.key;
const KEY = new Uint8Array(Buffer.from(KEY_HEX, 'hex'));

let dir = '';
const binaries: Record<string, string> = {};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'blackcloud-c-'));
  binaries.plain = join(dir, 'bc_test');
  binaries.sanitized = join(dir, 'bc_test_asan');
  const driver = { program: [`${C_ROOT}test/bc_test.c`], libraries: ['mbedcrypto'] };
  await Promise.all([
    compileC({ ...driver, output: binaries.plain }),
    compileC({ ...driver, output: binaries.sanitized, extra: SANITIZE }),
  ]);
}, 240_000);

afterAll(() => {
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

/** Runs the commands through one binary; returns one answer line per command. */
function run(binary: string, commands: readonly string[]): string[] {
  const result = spawnSync(binary, [], {
    input: `${commands.join('\n')}\n`,
    encoding: 'utf8',
    maxBuffer: 16 * 1024 * 1024,
    timeout: 60_000,
    env: {
      ...process.env,
      ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0',
      UBSAN_OPTIONS: 'print_stacktrace=1',
    },
  });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  const lines = result.stdout.split('\n').filter((line) => line !== '');
  expect(lines).toHaveLength(commands.length);
  return lines;
}

function claimArgs(payload: Bc1Payload): string {
  const claim = payload.claimedSource;
  if (claim === undefined) return '0 -';
  const bytes = claim.family === 4 ? parseIpv4(claim.address) : parseIpv6(claim.address);
  if (bytes === undefined) throw new Error(`bad test address ${claim.address}`);
  return `${claim.family} ${Buffer.from(bytes).toString('hex')}`;
}

function knockCommand(keyId: number, nonceHex: string, payload: Bc1Payload, capacity = 128): string {
  const entries = payload.access.map((e) => `${e.protocol === 'tcp' ? 6 : 17}:${e.port}`).join(' ');
  return `knock ${capacity} ${keyId} ${KEY_HEX} ${nonceHex} ${payload.timestampMs} ${payload.durationSeconds} ${claimArgs(payload)} ${entries}`;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const COUNTER_NONCE = '404142434445464748494a4b'; // what the test program's random callback yields first

/** A small deterministic generator (xorshift32): the same knocks on every run. */
function generator(seed: number): () => number {
  let state = seed;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) / 0x1_0000_0000;
  };
}

function randomPayload(next: () => number): Bc1Payload {
  const count = 1 + Math.floor(next() * 8);
  const access = Array.from({ length: count }, () => ({
    protocol: next() < 0.5 ? ('tcp' as const) : ('udp' as const),
    port: 1 + Math.floor(next() * 65535),
  }));
  const timestampMs = Math.floor(next() * Number.MAX_SAFE_INTEGER);
  const durationSeconds = Math.floor(next() * 65536);
  const pick = next();
  if (pick < 0.33) return { timestampMs, durationSeconds, access };
  if (pick < 0.66) {
    const address = `${1 + Math.floor(next() * 254)}.${Math.floor(next() * 256)}.${Math.floor(next() * 256)}.1`;
    return { timestampMs, durationSeconds, access, claimedSource: { family: 4, address } };
  }
  const address = `2001:db8:${Math.floor(next() * 65536).toString(16)}::${Math.floor(next() * 65536).toString(16)}`;
  return { timestampMs, durationSeconds, access, claimedSource: { family: 6, address } };
}

const REASON_CODE: Record<KeyMessageReason, string> = {
  'too-long': 'err -20',
  'not-json': 'err -21',
  'bad-version': 'err -22',
  'bad-shape': 'err -23',
};

const NEW_KEY = new Uint8Array(32).map((_, i) => (i * 37 + 11) & 0xff);
const GOOD = {
  v: 1,
  keyId: 7,
  key: Buffer.from(NEW_KEY).toString('base64'),
  oldKeyNotAfter: '2026-01-01T00:00:00.123Z',
};
const good = (change: Record<string, unknown>): string => JSON.stringify({ ...GOOD, ...change });
const without = (field: string): string =>
  JSON.stringify(Object.fromEntries(Object.entries(GOOD).filter(([name]) => name !== field)));
const nested = (depth: number): string => '['.repeat(depth) + ']'.repeat(depth);

/** Offers the TypeScript parser accepts; the C parser must return the same key id, key and time. */
const VALID_OFFERS: readonly [string, string][] = [
  ['encodeKeyOffer output', encodeKeyOffer({ keyId: 7, key: NEW_KEY, oldKeyNotAfter: 1767225600123 })],
  ['key id 0', good({ keyId: 0 })],
  ['key id 2^32-1', good({ keyId: 0xffff_ffff })],
  [
    'whitespace everywhere',
    ` {\n\t"v" : 1 ,\r\n "keyId":7, "key" : "${GOOD.key}","oldKeyNotAfter":"${GOOD.oldKeyNotAfter}" }\n`,
  ],
  [
    'members in another order',
    JSON.stringify({ oldKeyNotAfter: GOOD.oldKeyNotAfter, key: GOOD.key, keyId: 9, v: 1 }),
  ],
  ['v and keyId as 1.0 and 7e0', good({}).replace('"v":1', '"v":1.0').replace('"keyId":7', '"keyId":7e0')],
  ['keyId as 0.7E+1', good({}).replace('"keyId":7', '"keyId":0.7E+1')],
  ['keyId as 4294967295.000', good({}).replace('"keyId":7', '"keyId":4294967295.000')],
  ['keyId as 42949672950e-1', good({}).replace('"keyId":7', '"keyId":42949672950e-1')],
  ['keyId as 10000000000e-1 (trailing zeros)', good({}).replace('"keyId":7', '"keyId":10000000000e-1')],
  ['keyId as 0.00000000001e11', good({}).replace('"keyId":7', '"keyId":0.00000000001e11')],
  ['keyId as -0', good({}).replace('"keyId":7', '"keyId":-0')],
  ['v as 100e-2', good({}).replace('"v":1', '"v":100e-2')],
  ['key without padding', good({ key: GOOD.key.replace(/=+$/, '') })],
  ['key with two pad characters', good({ key: `${GOOD.key.replace(/=+$/, '')}==` })],
  [
    'escaped member names and key characters',
    good({}).replace('"keyId"', '"\\u006beyId"').replace('"v"', '"\\u0076"'),
  ],
  ['escaped solidus in the key', good({ key: `////${GOOD.key.slice(4)}` }).replaceAll('/', '\\/')],
  ['duplicate member: the last wins', good({}).replace('{"v":1,', '{"v":2,"keyId":"x","v":1,')],
  ['offset +05:30', good({ oldKeyNotAfter: '2026-01-01T05:30:00+05:30' })],
  ['offset -23:59', good({ oldKeyNotAfter: '2024-02-29T23:59:59.9999-23:59' })],
  ['one fractional digit', good({ oldKeyNotAfter: '2026-01-01T00:00:00.5Z' })],
  ['many fractional digits', good({ oldKeyNotAfter: '2026-01-01T00:00:00.123456789Z' })],
  ['200 fractional digits', good({ oldKeyNotAfter: `2026-01-01T00:00:00.987${'9'.repeat(197)}+01:00` })],
  ['no fraction', good({ oldKeyNotAfter: '2030-06-15T12:34:56Z' })],
  ['year 0000', good({ oldKeyNotAfter: '0000-01-01T00:00:00Z' })],
  ['leap day 2000', good({ oldKeyNotAfter: '2000-02-29T00:00:00Z' })],
  ['exactly 1024 bytes', good({}).padEnd(1024, ' ')],
];

/** Offers the TypeScript parser rejects; the C parser must give the same reason. */
const BAD_OFFERS: readonly [string, string, KeyMessageReason][] = [
  ['1025 bytes', good({}).padEnd(1025, ' '), 'too-long'],
  ['empty', '', 'not-json'],
  ['only whitespace', '  \n', 'not-json'],
  ['unterminated object', '{"v":1', 'not-json'],
  ['trailing comma', good({}).replace('}', ',}'), 'not-json'],
  ['single quotes', "{'v':1}", 'not-json'],
  ['text after the object', `${good({})} x`, 'not-json'],
  ['two objects', `${good({})}${good({})}`, 'not-json'],
  ['byte order mark', `\ufeff${good({})}`, 'not-json'],
  ['raw newline in a string', good({ oldKeyNotAfter: 'a\nb' }).replace('\\n', '\n'), 'not-json'],
  ['leading zero', good({}).replace('"keyId":7', '"keyId":07'), 'not-json'],
  ['number ending in a dot', good({}).replace('"keyId":7', '"keyId":7.'), 'not-json'],
  ['exponent without digits', good({}).replace('"keyId":7', '"keyId":7e'), 'not-json'],
  ['lone minus', good({}).replace('"keyId":7', '"keyId":-'), 'not-json'],
  ['plus sign', good({}).replace('"keyId":7', '"keyId":+7'), 'not-json'],
  ['bad escape', good({}).replace('"key"', '"k\\ey"'), 'not-json'],
  ['short unicode escape', '{"v\\u07":1}', 'not-json'],
  ['bad literal', good({ extra: true }).replace('true', 'tru'), 'not-json'],
  ['broken nested array', good({ extra: [1, { a: 2 }] }).replace('2}]', '2]]'), 'not-json'],
  ['missing colon', '{"v" 1}', 'not-json'],
  ['NUL byte', `${good({})}\u0000`, 'not-json'],
  ['an array', '[]', 'bad-version'],
  ['a string', '"offer"', 'bad-version'],
  ['a number', '1', 'bad-version'],
  ['null', 'null', 'bad-version'],
  ['deeply nested array', nested(100), 'bad-version'],
  ['empty object', '{}', 'bad-version'],
  ['v 2', good({ v: 2 }), 'bad-version'],
  ['v "1"', good({ v: '1' }), 'bad-version'],
  ['v true', good({ v: true }), 'bad-version'],
  ['v 1e400', good({}).replace('"v":1', '"v":1e400'), 'bad-version'],
  ['v 1.0000000001', good({}).replace('"v":1', '"v":1.0000000001'), 'bad-version'],
  ['no v', without('v'), 'bad-version'],
  ['no keyId', without('keyId'), 'bad-shape'],
  ['no key', without('key'), 'bad-shape'],
  ['no oldKeyNotAfter', without('oldKeyNotAfter'), 'bad-shape'],
  ['unknown member', good({ extra: 1 }), 'bad-shape'],
  ['unknown member, nested', good({ extra: { a: [1, 'x', null, false] } }), 'bad-shape'],
  ['unknown member nested 100 deep', good({}).replace('}', `,"x":${nested(100)}}`), 'bad-shape'],
  ['keyId -1', good({ keyId: -1 }), 'bad-shape'],
  ['keyId 2^32', good({ keyId: 0x1_0000_0000 }), 'bad-shape'],
  ['keyId 1.5', good({ keyId: 1.5 }), 'bad-shape'],
  ['keyId 1e10', good({}).replace('"keyId":7', '"keyId":1e10'), 'bad-shape'],
  ['keyId 4294967296e0', good({}).replace('"keyId":7', '"keyId":4294967296e0'), 'bad-shape'],
  ['keyId 12345678901e-1', good({}).replace('"keyId":7', '"keyId":12345678901e-1'), 'bad-shape'],
  ['keyId 70000000001e-10', good({}).replace('"keyId":7', '"keyId":70000000001e-10'), 'bad-shape'],
  ['unknown member holding every escape', good({ extra: '"\\/\b\f\n\r\t' }), 'bad-shape'],
  ['keyId "7"', good({ keyId: '7' }), 'bad-shape'],
  ['keyId null', good({ keyId: null }), 'bad-shape'],
  ['key of 31 bytes', good({ key: Buffer.alloc(31, 1).toString('base64') }), 'bad-shape'],
  ['key of 33 bytes', good({ key: Buffer.alloc(33, 1).toString('base64') }), 'bad-shape'],
  ['key empty', good({ key: '' }), 'bad-shape'],
  ['key in base64url', good({ key: Buffer.alloc(32, 0xfb).toString('base64url') }), 'bad-shape'],
  ['key with three pad characters', good({ key: `${GOOD.key.replace(/=+$/, '')}===` }), 'bad-shape'],
  ['key with padding inside', good({ key: `AAAA=${GOOD.key.slice(5)}` }), 'bad-shape'],
  ['key with a space', good({ key: ` ${GOOD.key.slice(1)}` }), 'bad-shape'],
  ['key as hex', good({ key: hex(NEW_KEY) }), 'bad-shape'],
  ['key as an array', good({ key: [1, 2, 3] }), 'bad-shape'],
  ['time without offset', good({ oldKeyNotAfter: '2026-01-01T00:00:00' }), 'bad-shape'],
  ['time without seconds', good({ oldKeyNotAfter: '2026-01-01T00:00+01:00' }), 'bad-shape'],
  ['time offset without colon', good({ oldKeyNotAfter: '2026-01-01T00:00:00+0100' }), 'bad-shape'],
  ['time offset +24:00', good({ oldKeyNotAfter: '2026-01-01T00:00:00+24:00' }), 'bad-shape'],
  ['time hour 24', good({ oldKeyNotAfter: '2026-01-01T24:00:00Z' }), 'bad-shape'],
  ['time second 60', good({ oldKeyNotAfter: '2026-01-01T00:00:60Z' }), 'bad-shape'],
  ['time February 29 of 2026', good({ oldKeyNotAfter: '2026-02-29T00:00:00Z' }), 'bad-shape'],
  ['time February 29 of 1900', good({ oldKeyNotAfter: '1900-02-29T00:00:00Z' }), 'bad-shape'],
  ['time April 31', good({ oldKeyNotAfter: '2026-04-31T00:00:00Z' }), 'bad-shape'],
  ['time lowercase z', good({ oldKeyNotAfter: '2026-01-01T00:00:00z' }), 'bad-shape'],
  ['time with a space', good({ oldKeyNotAfter: '2026-01-01 00:00:00Z' }), 'bad-shape'],
  ['time empty fraction', good({ oldKeyNotAfter: '2026-01-01T00:00:00.Z' }), 'bad-shape'],
  ['time as a number', good({ oldKeyNotAfter: 1767225600123 }), 'bad-shape'],
  [
    'time with junk after the zone',
    good({ oldKeyNotAfter: `2026-01-01T00:00:00.123Z${'0'.repeat(40)}` }),
    'bad-shape',
  ],
  [
    'time with 2 fractional digits then junk',
    good({ oldKeyNotAfter: '2026-01-01T00:00:00.12xZ' }),
    'bad-shape',
  ],
  ['non-ASCII in a string', good({ oldKeyNotAfter: '2026-01-01T00:00:00Z\u00e9' }), 'bad-shape'],
];

describe.each([
  ['plain', 'plain'],
  ['under ASan + UBSan', 'sanitized'],
])('C library (%s)', (_label, build) => {
  const exe = (): string => binaries[build]!;

  it('reproduces every golden vector byte for byte, and decodeBc1 reads it back', () => {
    expect(FIXTURE.vectors.length).toBeGreaterThanOrEqual(6);
    const answers = run(
      exe(),
      FIXTURE.vectors.map((v) => knockCommand(v.keyId, v.nonce, v.payload)),
    );
    FIXTURE.vectors.forEach((vector, i) => {
      expect(answers[i], vector.name).toBe(`ok ${vector.packet}`);
      const decoded = decodeBc1(new Uint8Array(Buffer.from(answers[i]!.slice(3), 'hex')), KEY);
      expect(decoded.ok && decoded.value.payload).toEqual(vector.payload);
    });
  });

  it('builds 200 varied knocks (nonce from the random callback) that equal encodeBc1 and decode', () => {
    const next = generator(0x5eed_c0de);
    const payloads = Array.from({ length: 200 }, () => randomPayload(next));
    const keyIds = payloads.map(() => Math.floor(next() * 0x1_0000_0000));
    const answers = run(
      exe(),
      payloads.map((p, i) => knockCommand(keyIds[i]!, '-', p)),
    );
    const nonce = new Uint8Array(Buffer.from(COUNTER_NONCE, 'hex'));
    payloads.forEach((payload, i) => {
      const expected = encodeBc1(payload, { keyId: keyIds[i]!, key: KEY, nonce });
      expect(answers[i]).toBe(`ok ${hex(expected)}`);
      const decoded = decodeBc1(expected, KEY);
      expect(decoded.ok && decoded.value).toEqual({ keyId: keyIds[i], nonce, payload });
    });
  });

  it('refuses every knock the receiver would reject, and a short buffer', () => {
    const base: Bc1Payload = {
      timestampMs: 1767225600000,
      durationSeconds: 0,
      access: [{ protocol: 'tcp', port: 8883 }],
    };
    const n = COUNTER_NONCE;
    const cases: [string, string, string][] = [
      ['timestamp 2^53', knockCommand(1, n, { ...base, timestampMs: 2 ** 53 }), 'err -3'],
      [
        'timestamp 2^64-1',
        knockCommand(1, n, base).replace(' 1767225600000 ', ' 18446744073709551615 '),
        'err -3',
      ],
      ['no entries', knockCommand(1, n, { ...base, access: [] }), 'err -4'],
      ['nine entries', knockCommand(1, n, { ...base, access: Array(9).fill(base.access[0]) }), 'err -4'],
      ['protocol 1', knockCommand(1, n, base).replace(' 6:8883', ' 1:8883'), 'err -5'],
      ['protocol 0 in the last entry', `${knockCommand(1, n, base)} 0:80`, 'err -5'],
      ['port 0', knockCommand(1, n, base).replace(' 6:8883', ' 6:0'), 'err -6'],
      ['claim 0.0.0.0', knockCommand(1, n, base).replace(' 0 - ', ' 4 00000000 '), 'err -7'],
      ['claim ::', knockCommand(1, n, base).replace(' 0 - ', ` 6 ${'00'.repeat(16)} `), 'err -7'],
      [
        'claim ::ffff:192.0.2.1',
        knockCommand(1, n, base).replace(' 0 - ', ` 6 ${'00'.repeat(10)}ffffc0000201 `),
        'err -7',
      ],
      ['claim family 5', knockCommand(1, n, base).replace(' 0 - ', ' 5 c0000201 '), 'err -7'],
      ['buffer of 47 bytes for a 48-byte knock', knockCommand(1, n, base, 47), 'err -2'],
      ['buffer of 0 bytes', knockCommand(1, n, base, 0), 'err -2'],
    ];
    const accepted: [string, string, number][] = [
      ['timestamp 2^53-1', knockCommand(1, n, { ...base, timestampMs: Number.MAX_SAFE_INTEGER }), 48],
      ['exact buffer', knockCommand(1, n, base, 48), 48],
      ['claim ::1', knockCommand(1, n, { ...base, claimedSource: { family: 6, address: '::1' } }), 64],
      [
        'claim ::fffe:c000:201',
        knockCommand(1, n, { ...base, claimedSource: { family: 6, address: '::fffe:c000:201' } }),
        64,
      ],
      [
        'claim 0.0.0.1',
        knockCommand(1, n, { ...base, claimedSource: { family: 4, address: '0.0.0.1' } }),
        52,
      ],
      ['port 65535 udp', knockCommand(1, n, { ...base, access: [{ protocol: 'udp', port: 65535 }] }), 48],
    ];
    const answers = run(exe(), [...cases.map((c) => c[1]), ...accepted.map((c) => c[1])]);
    cases.forEach(([name, , expected], i) => {
      expect(answers[i], name).toBe(expected);
    });
    accepted.forEach(([name, , length], i) => {
      const answer = answers[cases.length + i]!;
      expect(answer.startsWith('ok '), name).toBe(true);
      expect((answer.length - 3) / 2, name).toBe(length);
      expect(decodeBc1(new Uint8Array(Buffer.from(answer.slice(3), 'hex')), KEY).ok, name).toBe(true);
    });
  });

  it('returns an error code, never crashes, on NULL pointers, an empty backend or a failing random source', () => {
    // knock: failing random, NULL backend, empty backend, NULL knock, NULL out, no nonce source, NULL key,
    // NULL entries; offer: NULL message, NULL offer; proof: NULL backend, empty backend, NULL key;
    // ack: failing random, no nonce source, NULL out.
    expect(run(exe(), ['nulls'])).toEqual(['ok -8 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -8 -1 -1']);
  });

  it('parses every offer parseKeyOffer accepts to the same key id, key and time', () => {
    const answers = run(
      exe(),
      VALID_OFFERS.map(([, message]) => `offer ${Buffer.from(message).toString('hex')}`),
    );
    VALID_OFFERS.forEach(([name, message], i) => {
      const ts = parseKeyOffer(message);
      expect(ts.ok, `TypeScript accepts: ${name}`).toBe(true);
      if (!ts.ok) return;
      const { keyId, key, oldKeyNotAfter } = ts.value;
      expect(answers[i], name).toBe(`ok ${keyId} ${hex(key)} ${oldKeyNotAfter}`);
    });
  });

  it(`rejects ${BAD_OFFERS.length} malformed offers with parseKeyOffer's reason`, () => {
    const answers = run(
      exe(),
      BAD_OFFERS.map(([, message]) => `offer ${message === '' ? '-' : Buffer.from(message).toString('hex')}`),
    );
    BAD_OFFERS.forEach(([name, message, reason], i) => {
      const ts = parseKeyOffer(message);
      expect(ts.ok ? 'accepted' : ts.reason, `TypeScript: ${name}`).toBe(reason);
      expect(answers[i], name).toBe(REASON_CODE[reason]);
    });
  });

  it('computes the ack proof exactly as ackProof, and an ack that parseKeyAck and verifyAckProof accept', () => {
    const next = generator(0xac4_0001);
    const inputs = Array.from({ length: 20 }, (_, i) => ({
      key: new Uint8Array(32).map(() => Math.floor(next() * 256)),
      keyId: i === 0 ? 0 : i === 1 ? 0xffff_ffff : Math.floor(next() * 0x1_0000_0000),
      nonce: new Uint8Array(16).map(() => Math.floor(next() * 256)),
    }));
    const answers = run(exe(), [
      ...inputs.map((x) => `proof ${hex(x.key)} ${x.keyId} ${hex(x.nonce)}`),
      ...inputs.map((x) => `ack 256 ${hex(x.key)} ${x.keyId} ${hex(x.nonce)}`),
      `ack 256 ${hex(NEW_KEY)} 42 -`,
      `ack 116 ${hex(NEW_KEY)} 4294967295 -`,
      `ack 115 ${hex(NEW_KEY)} 4294967295 -`,
    ]);
    inputs.forEach((x, i) => {
      expect(answers[i]).toBe(`ok ${hex(ackProof(x.key, x.keyId, x.nonce))}`);
      const ack = parseKeyAck(Buffer.from(answers[inputs.length + i]!.slice(3), 'hex'));
      expect(ack.ok && ack.value).toEqual({
        keyId: x.keyId,
        nonce: x.nonce,
        proof: ackProof(x.key, x.keyId, x.nonce),
      });
      expect(ack.ok && verifyAckProof(x.key, ack.value)).toBe(true);
    });
    const drawn = parseKeyAck(Buffer.from(answers[2 * inputs.length]!.slice(3), 'hex'));
    expect(drawn.ok && hex(drawn.value.nonce)).toBe('404142434445464748494a4b4c4d4e4f');
    expect(drawn.ok && verifyAckProof(NEW_KEY, drawn.value)).toBe(true);
    expect(drawn.ok && verifyAckProof(KEY, drawn.value)).toBe(false);
    expect(Buffer.from(answers[2 * inputs.length + 1]!.slice(3), 'hex')).toHaveLength(116);
    expect(answers[2 * inputs.length + 2]).toBe('err -2');
  });
});
