/**
 * The kernel pre-filter's shapes (functions/local/prefilter-ruleset.ts) against the codecs: every knock the real
 * encoders make (encodeBc1, encodeFwknop) and every packet of the real fwknop client passes the predicate; the
 * junk the receiver rejects at its first step is dropped with the right counter; and the nft text, read back by a
 * small interpreter of its own rules, decides exactly as the predicate on arbitrary datagrams.
 */
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { NftablesInputError } from '../../../functions/local/nftables-errors.ts';
import {
  KNOCK_SHAPES,
  type PrefilterVerdict,
  prefilterTableText,
  prefilterVerdict,
} from '../../../functions/local/prefilter-ruleset.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import {
  BC1_MAX_PACKET_LENGTH,
  BC1_MIN_PACKET_LENGTH,
  FKO_GPG_MIN_LENGTH,
  FKO_MIN_WIRE_LENGTH,
} from '../../../spa/limits.ts';
import { key, keyId, nonce, payload } from '../../spa/bc1-arbitraries.ts';
import { encodeOrDiscard, inputArb, keysArb, randArb } from '../../spa/fwknop-arbitraries.ts';

const fixture = JSON.parse(
  readFileSync(new URL('../../fixtures/fwknop-vectors.json', import.meta.url), 'utf8'),
) as { clientVectors: { wire: string }[]; encoderVectors: { wire: string }[] };
const ascii = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));

/** Decides a datagram by the rendered rules alone: `udp length` ranges and `@th,<bits>,8 != { ... }` lines. */
function interpret(text: string, datagram: Uint8Array): PrefilterVerdict {
  const udpLength = datagram.length + 8;
  const ranges = (list: string) =>
    list.split(', ').map((item) => {
      const [low, high = low] = item.split('-').map((n) => Number(n));
      return [low!, high!] as const;
    });
  const within = (value: number, list: string) =>
    ranges(list).some(([low, high]) => value >= low && value <= high);
  for (const line of text.split('\n').map((l) => l.trim())) {
    const lengthRule = /^udp length != \{ (.+) \} counter name "(\w+)" drop$/.exec(line);
    if (lengthRule !== null && !within(udpLength, lengthRule[1]!)) return lengthRule[2] as PrefilterVerdict;
    const byteRule = /^udp length (\d+)-(\d+) @th,(\d+),8 != \{ (.+) \} counter name "(\w+)" drop$/.exec(
      line,
    );
    if (byteRule !== null) {
      const [, low, high, bits, values, counter] = byteRule;
      if (udpLength < Number(low) || udpLength > Number(high)) continue;
      const byte = datagram[Number(bits) / 8 - 8]!;
      if (!within(byte, values!)) return counter as PrefilterVerdict;
    }
  }
  return 'pass';
}

describe('kernel pre-filter shapes', () => {
  it('are the codecs’ bounds from spa/limits.ts', () => {
    expect(KNOCK_SHAPES.map((s) => [s.format, s.minLength, s.maxLength])).toEqual([
      ['bc1', BC1_MIN_PACKET_LENGTH, BC1_MAX_PACKET_LENGTH],
      ['fwknop', FKO_MIN_WIRE_LENGTH, FKO_GPG_MIN_LENGTH - 1],
    ]);
    // The first fwknop character follows the stripped 'U2FsdGVkX1' of 'Salted__': only 8, 9, + or /.
    expect(KNOCK_SHAPES[1]!.bytes[0]).toEqual([
      [0x2b, 0x2b],
      [0x2f, 0x2f],
      [0x38, 0x39],
    ]);
  });

  it('pass every BC1 knock encodeBc1 makes', () => {
    fc.assert(
      fc.property(payload, keyId, key, nonce, (p, id, k, n) => {
        expect(prefilterVerdict(encodeBc1(p, { keyId: id, key: k, nonce: n }))).toBe('pass');
      }),
      { numRuns: 1000 },
    );
  });

  it('pass every fwknop knock encodeFwknop makes, under every key, hash and message type', () => {
    fc.assert(
      fc.property(inputArb, keysArb, randArb, (input, keys, rand) => {
        expect(prefilterVerdict(encodeOrDiscard(input, keys, rand))).toBe('pass');
      }),
      { numRuns: 500 },
    );
  });

  it('pass every packet captured from the real fwknop 2.6.10 client and every encoder vector', () => {
    const wires = [...fixture.clientVectors, ...fixture.encoderVectors].map((v) => ascii(v.wire));
    expect(wires.length).toBeGreaterThan(10);
    for (const wire of wires) expect(prefilterVerdict(wire)).toBe('pass');
  });

  it('drop junk the receiver rejects at its first step, each into its counter', () => {
    const base64 = 'A'.repeat(300);
    const cases: [Uint8Array, PrefilterVerdict][] = [
      [new Uint8Array(0), 'length'],
      [new Uint8Array(BC1_MIN_PACKET_LENGTH - 1).fill(0xb1), 'length'],
      [new Uint8Array(BC1_MAX_PACKET_LENGTH + 1).fill(0xb1), 'length'],
      [ascii(`8${base64}`.slice(0, FKO_MIN_WIRE_LENGTH - 1)), 'length'],
      [ascii(`8${'A'.repeat(FKO_GPG_MIN_LENGTH)}`), 'length'],
      [new Uint8Array(1500), 'length'],
      [new Uint8Array(BC1_MIN_PACKET_LENGTH).fill(0xb2), 'bc1_magic'],
      [new Uint8Array(BC1_MAX_PACKET_LENGTH), 'bc1_magic'],
      [ascii(`U2FsdGVkX1${base64}`.slice(0, 200)), 'fwknop_base64'],
      [ascii(base64.slice(0, 200)), 'fwknop_base64'],
      [ascii(`8=${base64}`.slice(0, 200)), 'fwknop_base64'],
      [ascii(`8AAAAAAAAAAAAA\n${base64}`.slice(0, 200)), 'fwknop_base64'],
      [new Uint8Array(200).fill(0xb1), 'fwknop_base64'],
      [ascii(`8${base64}`.slice(0, 200)), 'pass'],
      [new Uint8Array(BC1_MIN_PACKET_LENGTH).fill(0xb1), 'pass'],
    ];
    for (const [datagram, verdict] of cases)
      expect([datagram.length, prefilterVerdict(datagram)]).toEqual([datagram.length, verdict]);
  });

  it('render nft rules that decide exactly as the predicate', () => {
    const text = prefilterTableText({ table: 'bc_spa', port: 62201, hook: { kind: 'inet-input' } });
    const shaped = fc.oneof(
      fc.uint8Array({ maxLength: 500 }),
      fc.integer({ min: 40, max: 410 }).chain((length) =>
        fc
          .array(fc.constantFrom(...'89+/AZaz09=-_ \n\u00b1'.split('').map((c) => c.charCodeAt(0)), 0xb1), {
            minLength: length,
            maxLength: length,
          })
          .map((bytes) => new Uint8Array(bytes)),
      ),
    );
    const seen = new Set<PrefilterVerdict>();
    fc.assert(
      fc.property(shaped, (datagram) => {
        const verdict = prefilterVerdict(datagram);
        seen.add(verdict);
        expect(interpret(text, datagram)).toBe(verdict);
      }),
      { numRuns: 3000 },
    );
    expect([...seen].sort()).toEqual(['bc1_magic', 'fwknop_base64', 'length', 'pass']);
  });

  it('render the hook: netdev ingress for the bound address only, or inet input', () => {
    const netdev = prefilterTableText({
      table: 'bc_spa',
      port: 40001,
      hook: { kind: 'netdev-ingress', device: 'eth0', address: '10.0.0.1' },
    });
    expect(netdev).toContain('table netdev bc_spa {');
    expect(netdev).toContain('type filter hook ingress device "eth0" priority -500; policy accept;');
    expect(netdev).toContain('ip daddr 10.0.0.1 udp dport 40001 jump spa');
    const inet6 = prefilterTableText({
      table: 'bc_spa',
      port: 40001,
      hook: { kind: 'inet-input', address: '::1' },
    });
    expect(inet6).toContain('type filter hook input priority raw; policy accept;');
    expect(inet6).toContain('ip6 daddr ::1 udp dport 40001 jump spa');
    const any = prefilterTableText({
      table: 'bc_spa',
      port: 40001,
      hook: { kind: 'inet-input', address: '0.0.0.0' },
      rate: { packetsPerSecond: 7, burst: 9, maxSources: 1000, timeoutSeconds: 5 },
    });
    expect(any).toMatch(/^ {4}udp dport 40001 jump spa$/m);
    expect(any).toContain(
      'update @rate4 { ip saddr limit rate over 7/second burst 9 packets } counter name "rate" drop',
    );
    expect(any).toContain('ip6 saddr & ffff:ffff:ffff:ffff:: limit rate over 7/second');
    expect(any).toContain('set rate4 { type ipv4_addr; size 1000; flags dynamic,timeout; timeout 5s; }');
  });

  it('refuse values that are not what they claim before any text is built', () => {
    const bad = [
      { table: 'bad name', port: 1, hook: { kind: 'inet-input' } },
      { table: 'ok', port: 0, hook: { kind: 'inet-input' } },
      { table: 'ok', port: 1, hook: { kind: 'inet-input', address: '1.2.3.4; flush ruleset' } },
      { table: 'ok', port: 1, hook: { kind: 'netdev-ingress', device: 'eth0"; flush', address: '10.0.0.1' } },
      { table: 'ok', port: 1, hook: { kind: 'netdev-ingress', device: 'eth0', address: '0.0.0.0' } },
      { table: 'ok', port: 1, hook: { kind: 'inet-input' }, rate: { burst: 0 } },
    ];
    for (const spec of bad) expect(() => prefilterTableText(spec as never)).toThrow(NftablesInputError);
  });
});
