/**
 * BC1 claimed-source addresses: RFC 5952 rendering checked against the WHATWG URL serializer (an independent
 * implementation), parsing of every textual form, and the claimability rule [BC1-5].
 */
import { isIPv4, isIPv6 } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatIpv4, formatIpv6, isClaimableAddress, parseIpv4, parseIpv6 } from '../../spa/bc1-address.ts';

const bytesOf = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex.replaceAll(/[: ]/g, ''), 'hex'));
const urlForm = (bytes: Uint8Array): string =>
  new URL(`http://[${Buffer.from(bytes).toString('hex').match(/.{4}/g)!.join(':')}]/`).hostname.slice(1, -1);
const ipv6Bytes = fc
  .array(fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
    minLength: 8,
    maxLength: 8,
  })
  .map((groups) => {
    const out = Buffer.alloc(16);
    groups.forEach((g, i) => {
      out.writeUInt16BE(g, 2 * i);
    });
    return new Uint8Array(out);
  });

describe('formatIpv6 (RFC 5952)', () => {
  it.each([
    ['20010db8000000000000000000000001', '2001:db8::1'],
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'], // first of two equal runs
    ['20010db8000000010000000000000001', '2001:db8:0:1::1'], // longest run wins
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['00000000000000000000000000000000', '::'],
    ['00000000000000000000000000000001', '::1'],
    ['fe800000000000000000000000000000', 'fe80::'],
    ['00010000000000000000000000000000', '1::'],
    ['20010DB8ABCDEF010000000000000000', '2001:db8:abcd:ef01::'],
    ['00000000000000000000ffffc0000201', '::ffff:c000:201'],
  ])('%s → %s', (hex, text) => {
    expect(formatIpv6(bytesOf(hex))).toBe(text);
  });

  it('agrees with the WHATWG URL serializer on arbitrary addresses', () => {
    fc.assert(
      fc.property(ipv6Bytes, (bytes) => {
        expect(formatIpv6(bytes)).toBe(urlForm(bytes));
      }),
      { numRuns: 2000 },
    );
  });

  it('reads at an offset', () => {
    const buffer = new Uint8Array(20);
    buffer.set(bytesOf('20010db8000000000000000000000007'), 4);
    expect(formatIpv6(buffer, 4)).toBe('2001:db8::7');
    expect(formatIpv4(new Uint8Array([9, 203, 0, 113, 7]), 1)).toBe('203.0.113.7');
  });
});

describe('parseIpv6', () => {
  it('inverts formatIpv6 and accepts uncompressed, upper-case and dotted-tail forms', () => {
    fc.assert(
      fc.property(ipv6Bytes, fc.boolean(), (bytes, upper) => {
        expect(parseIpv6(formatIpv6(bytes))).toEqual(bytes);
        const full = Buffer.from(bytes).toString('hex').match(/.{4}/g)!.join(':');
        expect(parseIpv6(upper ? full.toUpperCase() : full)).toEqual(bytes);
        const dotted = `${full.slice(0, 30)}${[...bytes.subarray(12)].join('.')}`;
        expect(parseIpv6(dotted)).toEqual(bytes);
      }),
      { numRuns: 1000 },
    );
    expect(parseIpv6('::ffff:192.0.2.1')).toEqual(bytesOf('00000000000000000000ffffc0000201'));
    expect(parseIpv6('1::2:3:4:5:6:7')).toEqual(bytesOf('00010000000200030004000500060007'));
  });

  it.each([
    '',
    ':',
    ':::',
    '1::2::3',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '1:2:3:4:5:6:7::8',
    ':1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:',
    'g::',
    '12345::',
    '::1.2.3',
    '::1.2.3.256',
    '1.2.3.4',
    'fe80::1%eth0',
    '2001:db8::/32',
    ' ::1',
    '::1.2.3.4:5',
  ])('rejects %j (as node:net does)', (text) => {
    expect(parseIpv6(text)).toBeUndefined();
    if (!text.includes('%')) expect(isIPv6(text)).toBe(false);
  });
});

describe('parseIpv4', () => {
  it('accepts dotted quads and inverts formatIpv4', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), (bytes) => {
        const text = formatIpv4(bytes);
        expect(text).toBe([...bytes].join('.'));
        expect(isIPv4(text)).toBe(true);
        expect(parseIpv4(text)).toEqual(bytes);
      }),
    );
  });

  it.each([
    '',
    '1.2.3',
    '1.2.3.4.5',
    '256.1.1.1',
    '01.2.3.4',
    '1.2.3.-4',
    '1e1.1.1.1',
    ' 1.2.3.4',
    '1.2.3.4 ',
    '0x1.2.3.4',
  ])('rejects %j', (text) => {
    expect(parseIpv4(text)).toBeUndefined();
    expect(isIPv4(text)).toBe(false);
  });
});

describe('isClaimableAddress [BC1-5]', () => {
  it.each([
    ['0.0.0.0', '00000000', false],
    ['0.0.0.1', '00000001', true],
    ['203.0.113.7', 'cb007107', true],
    ['::', '00000000000000000000000000000000', false],
    ['::1', '00000000000000000000000000000001', true],
    ['::ffff:192.0.2.1 (IPv4-mapped)', '00000000000000000000ffffc0000201', false],
    ['::ffff:0.0.0.0 (IPv4-mapped)', '00000000000000000000ffff00000000', false],
    ['::fffe:c000:201', '00000000000000000000fffec0000201', true],
    ['::1:ffff:c000:201', '00000000000000000001ffffc0000201', true],
    ['2001:db8::7', '20010db8000000000000000000000007', true],
  ])('%s → %s', (_name, hex, expected) => {
    const bytes = bytesOf(hex);
    expect(isClaimableAddress(bytes, 0, bytes.length)).toBe(expected);
  });
});
