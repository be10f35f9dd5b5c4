/**
 * BC1 codec: golden vectors (checked independently with node:crypto and Buffer, not only by round trip), the table
 * of wrong inputs every entry point must reject with its reason, and encoder misuse.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  BC1_REASONS,
  type Bc1Payload,
  type Bc1Reason,
  Bc1UsageError,
  bc1EncodingLength,
  bc1ReplayId,
  decodeBc1,
  encodeBc1,
  isBc1,
  readBc1Header,
} from '../../spa/bc1.ts';

interface Vector {
  readonly name: string;
  readonly keyId: number;
  readonly nonce: string;
  readonly payload: Bc1Payload;
  readonly plaintext: string;
  readonly packet: string;
  readonly length: number;
  readonly layout: readonly string[];
  readonly plaintextLayout: readonly string[];
}
interface VectorFile {
  readonly key: string;
  readonly vectors: readonly Vector[];
}

const fixture = JSON.parse(
  readFileSync(new URL('../fixtures/bc1-vectors.json', import.meta.url), 'utf8'),
) as VectorFile;
const KEY = Buffer.from(fixture.key, 'hex');
const hex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));
const vector = (name: string): Vector => {
  const found = fixture.vectors.find((v) => v.name === name);
  if (found === undefined) throw new Error(`fixture has no vector ${name}`);
  return found;
};

/** Independent AEAD seal with node:crypto: header (AAD) || ChaCha20-Poly1305(plaintext) || tag. */
function seal(
  plaintext: Uint8Array,
  keyId = 1,
  nonce = hex('000102030405060708090a0b'),
  key = KEY,
): Uint8Array {
  const header = Buffer.alloc(17);
  header[0] = 0xb1;
  header.writeUInt32BE(keyId, 1);
  header.set(nonce, 5);
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  cipher.setAAD(header, { plaintextLength: plaintext.length });
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return new Uint8Array(Buffer.concat([header, body, cipher.getAuthTag()]));
}

/** Independent AEAD open with node:crypto (throws if the tag does not verify). */
function open(packet: Uint8Array, key = KEY): Buffer {
  const n = packet.length - 17 - 16;
  const decipher = createDecipheriv('chacha20-poly1305', key, packet.subarray(5, 17), { authTagLength: 16 });
  decipher.setAAD(packet.subarray(0, 17), { plaintextLength: n });
  decipher.setAuthTag(packet.subarray(17 + n));
  return Buffer.concat([decipher.update(packet.subarray(17, 17 + n)), decipher.final()]);
}

/** Expands IPv6 text without an embedded dotted quad ("2001:db8::7") to its 16 bytes. */
function ipv6Bytes(text: string): Buffer {
  const [head = '', tail] = text.split('::');
  const groups = (part: string | undefined): string[] => (part ? part.split(':') : []);
  const all =
    tail === undefined
      ? groups(head)
      : [
          ...groups(head),
          ...Array<string>(8 - groups(head).length - groups(tail).length).fill('0'),
          ...groups(tail),
        ];
  return Buffer.from(all.map((g) => g.padStart(4, '0')).join(''), 'hex');
}

/** Independent plaintext serializer with the Buffer API (not spa/bytes.ts), from the layout in docs/protocol.md. */
function plaintextOf(p: Bc1Payload): Buffer {
  const claim =
    p.claimedSource === undefined
      ? Buffer.alloc(0)
      : p.claimedSource.family === 4
        ? Buffer.from(p.claimedSource.address.split('.').map(Number))
        : ipv6Bytes(p.claimedSource.address);
  const out = Buffer.alloc(12 + 3 * p.access.length);
  out.writeBigUInt64BE(BigInt(p.timestampMs), 0);
  out.writeUInt16BE(p.durationSeconds, 8);
  out[10] = p.claimedSource === undefined ? 0 : p.claimedSource.family === 4 ? 1 : 3;
  out[11] = p.access.length;
  p.access.forEach((e, i) => {
    out[12 + 3 * i] = e.protocol === 'tcp' ? 6 : 17;
    out.writeUInt16BE(e.port, 13 + 3 * i);
  });
  return Buffer.concat([out, claim]);
}

/** Checks "first-last: b1 b2 ...  meaning" annotation lines against the bytes they describe. */
function checkLayout(bytes: Uint8Array, lines: readonly string[]): void {
  let next = 0;
  for (const line of lines) {
    const match = /^(\d+)(?:-(\d+))?: ((?:[0-9a-f]{2} )*[0-9a-f]{2}) {2}\S/.exec(line);
    expect(match, line).not.toBeNull();
    const first = Number(match![1]);
    const last = match![2] === undefined ? first : Number(match![2]);
    expect(first, `${line} starts where the previous field ended`).toBe(next);
    expect(Buffer.from(bytes.subarray(first, last + 1)).toString('hex'), line).toBe(
      match![3]!.replaceAll(' ', ''),
    );
    next = last + 1;
  }
  expect(next, 'the layout covers every byte').toBe(bytes.length);
}

describe('node:crypto chacha20-poly1305 is the RFC 8439 AEAD', () => {
  it('reproduces RFC 8439 §2.8.2', () => {
    const plaintext = Buffer.from(
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
    );
    const cipher = createCipheriv('chacha20-poly1305', KEY, hex('070000004041424344454647'), {
      authTagLength: 16,
    });
    cipher.setAAD(hex('50515253c0c1c2c3c4c5c6c7'), { plaintextLength: plaintext.length });
    const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    expect(ciphertext.toString('hex')).toBe(
      'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b' +
        '1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc' +
        '3ff4def08e4b7a9de576d26586cec64b6116',
    );
    expect(cipher.getAuthTag().toString('hex')).toBe('1ae10b594f09e26a7e902ecbd0600691');
  });
});

describe('BC1 golden vectors (test/fixtures/bc1-vectors.json)', () => {
  it('cover one port, eight ports, IPv4 and IPv6 claims, max duration, udp, min and max length', () => {
    const vs = fixture.vectors;
    expect(vs.some((v) => v.payload.access.length === 1 && v.length === 48)).toBe(true);
    expect(vs.some((v) => v.payload.access.length === 8)).toBe(true);
    expect(vs.some((v) => v.payload.claimedSource?.family === 4)).toBe(true);
    expect(vs.some((v) => v.payload.claimedSource?.family === 6)).toBe(true);
    expect(vs.some((v) => v.payload.durationSeconds === 65_535)).toBe(true);
    expect(vs.some((v) => v.payload.access.some((e) => e.protocol === 'udp'))).toBe(true);
    expect(vs.some((v) => v.length === 85)).toBe(true);
  });

  for (const v of fixture.vectors) {
    describe(v.name, () => {
      const packet = hex(v.packet);

      it('encodes to the exact packet bytes', () => {
        const encoded = encodeBc1(v.payload, { keyId: v.keyId, key: KEY, nonce: hex(v.nonce) });
        expect(Buffer.from(encoded).toString('hex')).toBe(v.packet);
        expect(encoded.length).toBe(v.length);
        expect(bc1EncodingLength(v.payload)).toBe(v.length);
      });

      it('decodes to the payload, key id and nonce', () => {
        const result = decodeBc1(packet, KEY);
        expect(result).toEqual({
          ok: true,
          value: { keyId: v.keyId, nonce: hex(v.nonce), payload: v.payload },
        });
      });

      it('opens with node:crypto directly to the independently serialized plaintext', () => {
        const plaintext = open(packet);
        expect(plaintext.toString('hex')).toBe(v.plaintext);
        expect(plaintext.toString('hex')).toBe(plaintextOf(v.payload).toString('hex'));
      });

      it('has a header of magic 0xB1, the key id (u32 BE) and the nonce', () => {
        expect(packet[0]).toBe(0xb1);
        expect(Buffer.from(packet).readUInt32BE(1)).toBe(v.keyId);
        expect(Buffer.from(packet.subarray(5, 17)).toString('hex')).toBe(v.nonce);
        expect(readBc1Header(packet)).toEqual({ ok: true, value: { keyId: v.keyId, nonce: hex(v.nonce) } });
      });

      it('matches its field-by-field annotation', () => {
        checkLayout(packet, v.layout);
        checkLayout(hex(v.plaintext), v.plaintextLayout);
      });
    });
  }

  it('one-port: the plaintext, checked byte by byte by hand', () => {
    // 2026-01-01T00:00:00.000Z = 1767225600000 ms = 0x0000019b76daa800.
    expect(Date.UTC(2026, 0, 1)).toBe(1_767_225_600_000);
    expect((1_767_225_600_000).toString(16)).toBe('19b76daa800');
    // biome-ignore format: one field per line
    const expected = [
      0x00, 0x00, 0x01, 0x9b, 0x76, 0xda, 0xa8, 0x00, // 00-07 timestamp, u64 BE
      0x00, 0x00, //                                     08-09 duration 0 s
      0x00, //                                           10    flags: no claim
      0x01, //                                           11    N = 1
      0x06, 0x22, 0xb3, //                               12-14 tcp (6), port 8883 = 0x22b3
    ];
    expect([...open(hex(vector('one-port').packet))]).toEqual(expected);
    expect(0x22b3).toBe(8883);
  });

  it('ipv6-claim: the claim bytes are 2001:0db8:0000:...:0007 and decode to RFC 5952 text', () => {
    const plaintext = open(hex(vector('ipv6-claim').packet));
    expect(plaintext[10]).toBe(0b11);
    expect([...plaintext.subarray(18)]).toEqual([
      0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
    ]);
  });

  it('bc1ReplayId is hex(key id u32 BE || nonce), 32 lowercase characters', () => {
    for (const v of fixture.vectors) {
      const packet = hex(v.packet);
      const id = bc1ReplayId(v.keyId, hex(v.nonce));
      expect(id).toBe(Buffer.from(packet.subarray(1, 17)).toString('hex'));
      expect(id).toMatch(/^[0-9a-f]{32}$/);
    }
    expect(bc1ReplayId(1, hex('000102030405060708090a0b'))).toBe('00000001000102030405060708090a0b');
    expect(bc1ReplayId(0xffff_ffff, new Uint8Array(12))).toBe(`ffffffff${'0'.repeat(24)}`);
  });
});

describe('isBc1 and readBc1Header', () => {
  it('isBc1 looks at the first byte only', () => {
    expect(isBc1(new Uint8Array([0xb1]))).toBe(true);
    expect(isBc1(hex(vector('one-port').packet))).toBe(true);
    expect(isBc1(new Uint8Array())).toBe(false);
    expect(isBc1(Buffer.from('9YQ7LwI3hcJ0rL5ivu7tj8QdNtxq...'))).toBe(false);
    expect(isBc1(new Uint8Array([0xb2, 0xb1]))).toBe(false);
  });

  it('the header nonce is a copy, not a view into the packet', () => {
    const packet = hex(vector('one-port').packet);
    const header = readBc1Header(packet);
    packet.fill(0xee, 5, 17);
    expect(header).toEqual({ ok: true, value: { keyId: 1, nonce: hex('000102030405060708090a0b') } });
  });

  it('rejects by length before magic and never looks at the crypto', () => {
    expect(readBc1Header(new Uint8Array(47).fill(0xb1))).toEqual({ ok: false, reason: 'too-short' });
    expect(readBc1Header(new Uint8Array(86).fill(0xb1))).toEqual({ ok: false, reason: 'too-long' });
    expect(readBc1Header(new Uint8Array(48))).toEqual({ ok: false, reason: 'bad-magic' });
    expect(readBc1Header(new Uint8Array(48).fill(0xb1)).ok).toBe(true);
    expect(readBc1Header(new Uint8Array(85).fill(0xb1)).ok).toBe(true);
  });
});

/** Builds a plaintext from parts: timestamp (bigint), duration, flags, count, then raw tail bytes. */
function craft(parts: {
  ts?: bigint;
  duration?: number;
  flags?: number;
  count: number;
  tail: number[];
}): Uint8Array {
  const head = Buffer.alloc(12);
  head.writeBigUInt64BE(parts.ts ?? 1_767_225_600_000n, 0);
  head.writeUInt16BE(parts.duration ?? 0, 8);
  head[10] = parts.flags ?? 0;
  head[11] = parts.count;
  return new Uint8Array(Buffer.concat([head, Buffer.from(parts.tail)]));
}
const TCP_8883 = [6, 0x22, 0xb3];

describe('decodeBc1 rejects wrong inputs with their reason', () => {
  const one = hex(vector('one-port').packet);
  const longest = hex(vector('max-length').packet);
  const flip = (bytes: Uint8Array, index: number, mask = 0x01): Uint8Array => {
    const copy = bytes.slice();
    copy[index] = copy[index]! ^ mask;
    return copy;
  };
  const cases: ReadonlyArray<readonly [string, Uint8Array, Bc1Reason, Uint8Array?]> = [
    ['empty', new Uint8Array(), 'too-short'],
    ['one byte 0xB1', new Uint8Array([0xb1]), 'too-short'],
    ['truncated to 47 bytes', one.subarray(0, 47), 'too-short'],
    ['oversize: 86 bytes', new Uint8Array([...longest, 0]), 'too-long'],
    ['1500 bytes', new Uint8Array(1500).fill(0xb1), 'too-long'],
    ['wrong magic 0xB2', flip(one, 0, 0x03), 'bad-magic'],
    ['fwknop-like base64 text', Buffer.from('A'.repeat(60)), 'bad-magic'],
    ['tag tampered (last byte)', flip(one, 47), 'auth-failed'],
    ['tag tampered (first tag byte)', flip(one, 32, 0x80), 'auth-failed'],
    ['ciphertext tampered', flip(one, 17), 'auth-failed'],
    ['header tampered: key id (AAD only)', flip(one, 4), 'auth-failed'],
    ['header tampered: nonce', flip(one, 16), 'auth-failed'],
    ['wrong key', one, 'auth-failed', new Uint8Array(32).fill(7)],
    ['one trailing byte after the tag', new Uint8Array([...one, 0]), 'auth-failed'],
    ['zeroed tag', new Uint8Array([...one.subarray(0, 32), ...new Uint8Array(16)]), 'auth-failed'],
    ['flags: unknown bit 2', seal(craft({ flags: 0x04, count: 1, tail: TCP_8883 })), 'bad-flags'],
    ['flags: bit 7', seal(craft({ flags: 0x80, count: 1, tail: TCP_8883 })), 'bad-flags'],
    ['flags: IPv6 without claim', seal(craft({ flags: 0x02, count: 1, tail: TCP_8883 })), 'bad-flags'],
    ['N = 0', seal(craft({ count: 0, tail: [6, 0, 1] })), 'bad-entry-count'],
    ['N = 9', seal(craft({ count: 9, tail: Array(9).fill(TCP_8883).flat() })), 'bad-entry-count'],
    ['N = 255', seal(craft({ count: 255, tail: TCP_8883 })), 'bad-entry-count'],
    ['port 0', seal(craft({ count: 1, tail: [6, 0, 0] })), 'bad-port'],
    ['port 0 in the last of two', seal(craft({ count: 2, tail: [...TCP_8883, 17, 0, 0] })), 'bad-port'],
    ['protocol 1 (icmp)', seal(craft({ count: 1, tail: [1, 0x22, 0xb3] })), 'bad-protocol'],
    ['protocol 0', seal(craft({ count: 1, tail: [0, 0x22, 0xb3] })), 'bad-protocol'],
    ['protocol 132 (sctp)', seal(craft({ count: 1, tail: [132, 0x22, 0xb3] })), 'bad-protocol'],
    ['trailing byte inside the ciphertext', seal(craft({ count: 1, tail: [...TCP_8883, 0] })), 'bad-length'],
    [
      'N = 2 but one entry',
      seal(craft({ count: 2, tail: [...TCP_8883, 0, 0, 0, 0].slice(0, 5) })),
      'bad-length',
    ],
    ['claim flag, claim bytes missing', seal(craft({ flags: 0x01, count: 1, tail: TCP_8883 })), 'bad-length'],
    [
      'claim flag, 3 of 4 bytes',
      seal(craft({ flags: 0x01, count: 1, tail: [...TCP_8883, 10, 0, 0] })),
      'bad-length',
    ],
    [
      'IPv6 claim, only 4 bytes',
      seal(craft({ flags: 0x03, count: 1, tail: [...TCP_8883, 10, 0, 0, 1] })),
      'bad-length',
    ],
    [
      'IPv4 claim, 16 bytes',
      seal(craft({ flags: 0x01, count: 1, tail: [...TCP_8883, ...Array(16).fill(1)] })),
      'bad-length',
    ],
    [
      'timestamp 2^53 (> MAX_SAFE_INTEGER)',
      seal(craft({ ts: 2n ** 53n, count: 1, tail: TCP_8883 })),
      'bad-timestamp',
    ],
    ['timestamp 2^64 - 1', seal(craft({ ts: 2n ** 64n - 1n, count: 1, tail: TCP_8883 })), 'bad-timestamp'],
    [
      'claimed 0.0.0.0',
      seal(craft({ flags: 0x01, count: 1, tail: [...TCP_8883, 0, 0, 0, 0] })),
      'bad-address',
    ],
    [
      'claimed ::',
      seal(craft({ flags: 0x03, count: 1, tail: [...TCP_8883, ...Array(16).fill(0)] })),
      'bad-address',
    ],
    [
      'claimed ::ffff:192.0.2.1 (IPv4-mapped)',
      seal(
        craft({ flags: 0x03, count: 1, tail: [...TCP_8883, ...Array(10).fill(0), 0xff, 0xff, 192, 0, 2, 1] }),
      ),
      'bad-address',
    ],
  ];

  const rows = cases.map(([name, bytes, reason, key]) => ({ name, bytes, reason, key: key ?? KEY }));

  it.each(rows)('$name → $reason', ({ bytes, reason, key }) => {
    expect(decodeBc1(bytes, key)).toEqual({ ok: false, reason });
  });

  it('every reason in BC1_REASONS is produced by the table, and nothing else', () => {
    expect(new Set(cases.map((c) => c[2]))).toEqual(new Set(BC1_REASONS));
  });

  it('accepts the boundaries next to the rejected values', () => {
    const accept = (plaintext: Uint8Array): Bc1Payload => {
      const result = decodeBc1(seal(plaintext), KEY);
      if (!result.ok) throw new Error(`rejected: ${result.reason}`);
      return result.value.payload;
    };
    const max = accept(craft({ ts: BigInt(Number.MAX_SAFE_INTEGER), count: 1, tail: [17, 0, 1] }));
    expect(max).toEqual({
      timestampMs: Number.MAX_SAFE_INTEGER,
      durationSeconds: 0,
      access: [{ protocol: 'udp', port: 1 }],
    });
    expect(accept(craft({ ts: 0n, count: 1, tail: [6, 0xff, 0xff] })).timestampMs).toBe(0);
    expect(accept(craft({ count: 8, tail: Array(8).fill(TCP_8883).flat() })).access).toHaveLength(8);
    expect(accept(craft({ flags: 0x01, count: 1, tail: [...TCP_8883, 0, 0, 0, 1] })).claimedSource).toEqual({
      family: 4,
      address: '0.0.0.1',
    });
    expect(
      accept(craft({ flags: 0x03, count: 1, tail: [...TCP_8883, ...Array(15).fill(0), 1] })).claimedSource,
    ).toEqual({ family: 6, address: '::1' });
    // ::fffe:... and ::1:ffff:... are not IPv4-mapped.
    expect(
      accept(
        craft({ flags: 0x03, count: 1, tail: [...TCP_8883, ...Array(10).fill(0), 0xff, 0xfe, 1, 2, 3, 4] }),
      ).claimedSource,
    ).toEqual({ family: 6, address: '::fffe:102:304' });
  });

  it('leaves Error.stackTraceLimit as it found it after a forged packet', () => {
    const before = Error.stackTraceLimit;
    expect(decodeBc1(flip(one, 47), KEY)).toEqual({ ok: false, reason: 'auth-failed' });
    expect(Error.stackTraceLimit).toBe(before);
  });

  it('throws Bc1UsageError (not a result) when the caller passes a key that is not 32 bytes', () => {
    expect(() => decodeBc1(one, new Uint8Array(31))).toThrow(Bc1UsageError);
    expect(() => decodeBc1(one, new Uint8Array(31))).toThrow(
      /key: must be a Uint8Array of 32 bytes.*31 bytes/,
    );
  });
});

describe('encodeBc1 misuse throws Bc1UsageError naming the field', () => {
  const payload: Bc1Payload = {
    timestampMs: 1_767_225_600_000,
    durationSeconds: 0,
    access: [{ protocol: 'tcp', port: 8883 }],
  };
  const opts = { keyId: 1, key: KEY, nonce: new Uint8Array(12) };
  const tcp = (port: number) => ({ protocol: 'tcp' as const, port });
  type Case = readonly [string, Bc1Payload, typeof opts, string];
  const bad = (name: string, p: object, field: string, o: object = {}): Case => [
    name,
    { ...payload, ...p } as Bc1Payload,
    { ...opts, ...o } as typeof opts,
    field,
  ];
  const cases: readonly Case[] = [
    bad('no entries', { access: [] }, 'payload.access'),
    bad('nine entries', { access: Array(9).fill(tcp(1)) }, 'payload.access'),
    bad('port 0', { access: [tcp(0)] }, 'payload.access[0].port'),
    bad('port 65536', { access: [tcp(1), tcp(65_536)] }, 'payload.access[1].port'),
    bad('port 1.5', { access: [tcp(1.5)] }, 'payload.access[0].port'),
    bad('port as string', { access: [{ protocol: 'tcp', port: '8883' }] }, 'payload.access[0].port'),
    bad('protocol icmp', { access: [{ protocol: 'icmp', port: 1 }] }, 'payload.access[0].protocol'),
    bad('duration -1', { durationSeconds: -1 }, 'payload.durationSeconds'),
    bad('duration 65536', { durationSeconds: 65_536 }, 'payload.durationSeconds'),
    bad('timestamp -1', { timestampMs: -1 }, 'payload.timestampMs'),
    bad('timestamp NaN', { timestampMs: Number.NaN }, 'payload.timestampMs'),
    bad('timestamp 2^53', { timestampMs: 2 ** 53 }, 'payload.timestampMs'),
    bad('timestamp fractional', { timestampMs: 1.5 }, 'payload.timestampMs'),
    bad(
      'claim family 5',
      { claimedSource: { family: 5, address: '1.2.3.4' } },
      'payload.claimedSource.family',
    ),
    bad(
      'claim not an address',
      { claimedSource: { family: 4, address: 'example.com' } },
      'payload.claimedSource.address',
    ),
    bad(
      'claim IPv6 text as family 4',
      { claimedSource: { family: 4, address: '::1' } },
      'payload.claimedSource.address',
    ),
    bad(
      'claim IPv4 text as family 6',
      { claimedSource: { family: 6, address: '1.2.3.4' } },
      'payload.claimedSource.address',
    ),
    bad(
      'claim 0.0.0.0',
      { claimedSource: { family: 4, address: '0.0.0.0' } },
      'payload.claimedSource.address',
    ),
    bad('claim ::', { claimedSource: { family: 6, address: '::' } }, 'payload.claimedSource.address'),
    bad(
      'claim IPv4-mapped',
      { claimedSource: { family: 6, address: '::ffff:1.2.3.4' } },
      'payload.claimedSource.address',
    ),
    bad(
      'claim with a leading zero',
      { claimedSource: { family: 4, address: '01.2.3.4' } },
      'payload.claimedSource.address',
    ),
    bad(
      'claim with a zone id',
      { claimedSource: { family: 6, address: 'fe80::1%eth0' } },
      'payload.claimedSource.address',
    ),
    bad('key id -1', {}, 'opts.keyId', { keyId: -1 }),
    bad('key id 2^32', {}, 'opts.keyId', { keyId: 2 ** 32 }),
    bad('key id 1.5', {}, 'opts.keyId', { keyId: 1.5 }),
    bad('key of 31 bytes', {}, 'opts.key', { key: new Uint8Array(31) }),
    bad('key of 33 bytes', {}, 'opts.key', { key: new Uint8Array(33) }),
    bad('key as hex text', {}, 'opts.key', { key: fixture.key }),
    bad('nonce of 11 bytes', {}, 'opts.nonce', { nonce: new Uint8Array(11) }),
    bad('nonce of 13 bytes', {}, 'opts.nonce', { nonce: new Uint8Array(13) }),
  ];

  it.each(cases)('%s → %s', (_name, p, o, field) => {
    let thrown: unknown;
    try {
      encodeBc1(p, o);
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(Bc1UsageError);
    expect(thrown).toBeInstanceOf(RangeError);
    const error = thrown as Bc1UsageError;
    expect(error.name).toBe('Bc1UsageError');
    expect(error.field).toBe(field);
    expect(error.message.startsWith(`${field}: must`) || error.message.startsWith(`${field}: cannot`)).toBe(
      true,
    );
    expect(error.message).toMatch(/received /);
  });

  it('never puts key material in the message', () => {
    expect(() => encodeBc1(payload, { ...opts, key: KEY.subarray(0, 31) })).toThrow(
      /received Buffer of 31 bytes/,
    );
    try {
      encodeBc1(payload, { ...opts, key: KEY.subarray(0, 31) });
    } catch (error) {
      expect(String((error as Error).message)).not.toContain('8081');
    }
  });

  it('accepts any textual form of an address and decodes to the canonical one', () => {
    const packet = encodeBc1(
      { ...payload, claimedSource: { family: 6, address: '2001:0DB8:0000:0000:0000:0000:0000:0007' } },
      opts,
    );
    const result = decodeBc1(packet, KEY);
    expect(result.ok && result.value.payload.claimedSource).toEqual({ family: 6, address: '2001:db8::7' });
  });

  it('bc1ReplayId rejects a nonce that is not 12 bytes and a key id that is not u32', () => {
    expect(() => bc1ReplayId(1, new Uint8Array(11))).toThrow(Bc1UsageError);
    expect(() => bc1ReplayId(-1, new Uint8Array(12))).toThrow(Bc1UsageError);
  });
});
