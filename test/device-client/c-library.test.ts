/**
 * The C device library (device-client/c/): compiled here with the host cc (C99, -Wall -Wextra -Werror -pedantic)
 * against Debian's libmbedtls-dev, once plain and once under AddressSanitizer + UndefinedBehaviorSanitizer, and
 * driven through its test program (device-client/c/test/bc_test.c, one command per stdin line). Every check is
 * made against the TypeScript reference: the golden vectors byte for byte, decodeBc1 on knocks built in C,
 * encodeBc1 on the same inputs, openKeyOffer (and the Python-computed golden vectors of
 * test/fixtures/key-offer-vectors.json) for every sealed key offer, ackProof for the proof, connectCredential
 * (and its golden vector) for the plain profile's connect credential.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectCredential } from '../../functions/core/connect-credential.ts';
import { ackProof, parseKeyAck, verifyAckProof } from '../../functions/core/key-messages.ts';
import { type KeyOfferReason, openKeyOffer, sealKeyOffer } from '../../functions/core/sealed-key-offer.ts';
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

/** The C library's code for each openKeyOffer reason (include/blackcloud.h). */
const REASON_CODE: Record<KeyOfferReason, string> = {
  'bad-length': 'err -20',
  'bad-magic': 'err -21',
  'bad-version': 'err -22',
  'unknown-sealing-key': 'err -23',
  unauthentic: 'err -24',
  'bad-time': 'err -25',
};

interface OfferVector {
  readonly name: string;
  readonly deviceId: string;
  readonly packet: string;
  readonly expect: 'ok' | KeyOfferReason;
  readonly offer?: { keyId: number; key: string; oldKeyNotAfter: number };
}
const OFFERS = JSON.parse(
  readFileSync(new URL('../fixtures/key-offer-vectors.json', import.meta.url), 'utf8'),
) as {
  readonly sealingKeyId: number;
  readonly sealingKey: string;
  readonly vectors: readonly OfferVector[];
};
const SEALING = { keyId: OFFERS.sealingKeyId, key: new Uint8Array(Buffer.from(OFFERS.sealingKey, 'hex')) };
const NEW_KEY = new Uint8Array(32).map((_, i) => (i * 37 + 11) & 0xff);

/** The driver's command opening `packet` as `deviceId` holding the key `sealing`. */
const offerCommand = (
  sealing: { keyId: number; key: Uint8Array },
  deviceId: string,
  packet: Uint8Array,
): string =>
  `offer ${sealing.keyId} ${hex(sealing.key)} ${deviceId} ${packet.length === 0 ? '-' : hex(packet)}`;

/** What the C driver must answer for what openKeyOffer says. */
function expectedAnswer(
  sealing: { keyId: number; key: Uint8Array },
  deviceId: string,
  packet: Uint8Array,
): string {
  const opened = openKeyOffer([sealing], deviceId, packet);
  if (!opened.ok) return REASON_CODE[opened.reason];
  const { keyId, key, oldKeyNotAfter } = opened.value;
  return `ok ${keyId} ${hex(key)} ${oldKeyNotAfter}`;
}

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
    // NULL entries; offer: NULL message, NULL offer, a backend without aead_open, NULL key, NULL, empty and
    // 65-character device id; proof: NULL backend, empty backend, NULL key; ack: failing random, no nonce source,
    // NULL out.
    // credential: NULL backend, a backend without hmac_sha256, NULL key, NULL, empty and 65-character device id,
    // NULL nonce, NULL out, a 63-byte buffer.
    expect(run(exe(), ['nulls'])).toEqual([
      'ok -8 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -8 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -2',
    ]);
  });

  it('opens every golden sealed offer (Python cryptography) as the fixture says, refusals with their codes', () => {
    expect(new Set(OFFERS.vectors.map((v) => v.expect)).size).toBe(7); // ok and the six reasons
    const answers = run(
      exe(),
      OFFERS.vectors.map((v) => offerCommand(SEALING, v.deviceId, Buffer.from(v.packet, 'hex'))),
    );
    OFFERS.vectors.forEach((vector, i) => {
      const offer = vector.offer;
      const expected =
        vector.expect === 'ok' && offer !== undefined
          ? `ok ${offer.keyId} ${offer.key} ${offer.oldKeyNotAfter}`
          : REASON_CODE[vector.expect as KeyOfferReason];
      expect(answers[i], vector.name).toBe(expected);
    });
  });

  it('opens 200 offers sealKeyOffer made (varied devices, keys, times) exactly as openKeyOffer does', () => {
    const next = generator(0x0ffe_0001);
    const byte = (): number => Math.floor(next() * 256);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-';
    const cases = Array.from({ length: 200 }, (_, i) => {
      const length = 1 + Math.floor(next() * 64);
      const deviceId = `d${Array.from({ length: length - 1 }, () => alphabet[Math.floor(next() * alphabet.length)]).join('')}`;
      const sealing = { keyId: Math.floor(next() * 0x1_0000_0000), key: new Uint8Array(32).map(byte) };
      const offer = {
        keyId: i === 0 ? 0 : i === 1 ? 0xffff_ffff : Math.floor(next() * 0x1_0000_0000),
        key: new Uint8Array(32).map(byte),
        oldKeyNotAfter: i === 2 ? Number.MAX_SAFE_INTEGER : Math.floor(next() * Number.MAX_SAFE_INTEGER),
      };
      const packet = sealKeyOffer(sealing, deviceId, offer, new Uint8Array(12).map(byte));
      return { deviceId, sealing, offer, packet };
    });
    const answers = run(
      exe(),
      cases.map((c) => offerCommand(c.sealing, c.deviceId, c.packet)),
    );
    cases.forEach((c, i) => {
      expect(answers[i]).toBe(`ok ${c.offer.keyId} ${hex(c.offer.key)} ${c.offer.oldKeyNotAfter}`);
      expect(answers[i]).toBe(expectedAnswer(c.sealing, c.deviceId, c.packet));
    });
  });

  it("refuses every single-bit flip, every length but 80, another device's and another key's offer, as openKeyOffer does", () => {
    const base = new Uint8Array(Buffer.from(OFFERS.vectors[0]!.packet, 'hex'));
    const device = OFFERS.vectors[0]!.deviceId;
    const cases: [string, { keyId: number; key: Uint8Array }, string, Uint8Array][] = [];
    for (let bit = 0; bit < base.length * 8; bit++) {
      const flipped = base.slice();
      flipped[bit >> 3]! ^= 1 << (bit & 7);
      cases.push([`bit ${bit}`, SEALING, device, flipped]);
    }
    for (const length of [0, 1, 3, 4, 20, 64, 79, 81, 96, 1024]) {
      const packet = new Uint8Array(length);
      packet.set(base.subarray(0, Math.min(length, base.length)));
      cases.push([`${length} bytes`, SEALING, device, packet]);
    }
    cases.push(['another device id', SEALING, 'other-device', base]);
    cases.push(['a device id one character longer', SEALING, `${device}x`, base]);
    cases.push([
      'the current key id with other key bytes',
      { keyId: SEALING.keyId, key: NEW_KEY },
      device,
      base,
    ]);
    cases.push([
      'another current key id [KO-8]',
      { keyId: SEALING.keyId + 1, key: SEALING.key },
      device,
      base,
    ]);
    const answers = run(
      exe(),
      cases.map(([, sealing, id, packet]) => offerCommand(sealing, id, packet)),
    );
    cases.forEach(([name, sealing, id, packet], i) => {
      const expected = expectedAnswer(sealing, id, packet);
      expect(expected.startsWith('err '), `TypeScript refuses ${name}`).toBe(true);
      expect(answers[i], name).toBe(expected);
    });
    expect(answers.at(-1)).toBe(REASON_CODE['unknown-sealing-key']);
    expect(answers.at(-3)).toBe(REASON_CODE.unauthentic);
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

  it('computes the connect credential of the golden vector, with a NUL only when there is room for it', () => {
    const goldenKey = hex(Uint8Array.from({ length: 32 }, (_, i) => i));
    const golden = '15d81025ad131fa5dda717b4c3a25e6d0fb1a499120cfbc440ea4e4e5d0d29d9';
    const args = `${goldenKey} meter-1 ${0x12345678} a0a1a2a3a4a5a6a7a8a9aaab`;
    // Each buffer is a heap block of exactly that size: under ASan a NUL written past 64 bytes would abort.
    expect(run(exe(), [`credential 65 ${args}`, `credential 64 ${args}`, `credential 63 ${args}`])).toEqual([
      `ok 64 ${golden} nul`,
      `ok 64 ${golden} -`,
      'err -2',
    ]);
  });

  it('computes 200 connect credentials (varied keys, device ids, key ids, nonces) exactly as connectCredential', () => {
    const next = generator(0xc0_22ec7);
    const byte = (): number => Math.floor(next() * 256);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-';
    const cases = Array.from({ length: 200 }, (_, i) => {
      const length = i === 0 ? 64 : i === 1 ? 1 : 1 + Math.floor(next() * 64);
      const deviceId = `d${Array.from({ length: length - 1 }, () => alphabet[Math.floor(next() * alphabet.length)]).join('')}`;
      return {
        key: new Uint8Array(32).map(byte),
        deviceId,
        keyId: i === 2 ? 0 : i === 3 ? 0xffff_ffff : Math.floor(next() * 0x1_0000_0000),
        nonce: new Uint8Array(12).map(byte),
      };
    });
    const answers = run(
      exe(),
      cases.map((c) => `credential 65 ${hex(c.key)} ${c.deviceId} ${c.keyId} ${hex(c.nonce)}`),
    );
    cases.forEach((c, i) => {
      expect(answers[i], c.deviceId).toBe(`ok 64 ${connectCredential(c.key, c)} nul`);
    });
  });

  it('derives the credential from the nonce the knock drew (packet + BC_KNOCK_NONCE_OFFSET), as the receiver does', () => {
    const next = generator(0x9_1a17);
    const cases = Array.from({ length: 20 }, (_, i) => ({
      key: new Uint8Array(32).map(() => Math.floor(next() * 256)),
      deviceId: `plain-${i}`,
      keyId: Math.floor(next() * 0x1_0000_0000),
    }));
    const answers = run(
      exe(),
      cases.map((c) => `plain ${hex(c.key)} ${c.deviceId} ${c.keyId}`),
    );
    cases.forEach((c, i) => {
      const [status, packetHex, credential] = answers[i]!.split(' ');
      expect(status).toBe('ok');
      const decoded = decodeBc1(new Uint8Array(Buffer.from(packetHex!, 'hex')), c.key);
      expect(decoded.ok).toBe(true);
      if (!decoded.ok) return;
      expect(hex(decoded.value.nonce)).toBe(COUNTER_NONCE);
      expect(decoded.value.keyId).toBe(c.keyId);
      expect(credential).toBe(
        connectCredential(c.key, {
          deviceId: c.deviceId,
          keyId: decoded.value.keyId,
          nonce: decoded.value.nonce,
        }),
      );
    });
  });
});
