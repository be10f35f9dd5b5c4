/**
 * fast-check arbitraries of valid BC1 payloads (every entry count, both claims, IPv6 biased to zero groups), keys,
 * key ids and nonces. Shared by the codec's properties and the kernel pre-filter's
 * (test/functions/local/prefilter-ruleset.test.ts).
 */
import fc from 'fast-check';
import type { Bc1Payload } from '../../spa/bc1.ts';
import type { IpAddress } from '../../spa/types.ts';

/** Canonical text of raw address bytes via independent oracles: join for IPv4, the WHATWG URL parser for IPv6. */
export function textOf(bytes: Uint8Array): IpAddress {
  if (bytes.length === 4) return { family: 4, address: [...bytes].join('.') };
  const full = Buffer.from(bytes).toString('hex').match(/.{4}/g)!.join(':');
  return { family: 6, address: new URL(`http://[${full}]/`).hostname.slice(1, -1) };
}

export const claimable = (bytes: Uint8Array): boolean =>
  bytes.some((b) => b !== 0) &&
  !(
    bytes.length === 16 &&
    bytes.subarray(0, 10).every((b) => b === 0) &&
    bytes[10] === 0xff &&
    bytes[11] === 0xff
  );

/** IPv6 bytes biased towards zero groups so that `::` compression is exercised. */
export const ipv6Bytes = fc
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
export const ipv4Bytes = fc.uint8Array({ minLength: 4, maxLength: 4 });
export const claim = fc.oneof(ipv4Bytes, ipv6Bytes).filter(claimable).map(textOf);

export const payload: fc.Arbitrary<Bc1Payload> = fc.record(
  {
    timestampMs: fc.oneof(fc.maxSafeNat(), fc.integer({ min: 1_600_000_000_000, max: 2_000_000_000_000 })),
    durationSeconds: fc.integer({ min: 0, max: 65_535 }),
    access: fc.array(
      fc.record({
        protocol: fc.constantFrom('tcp' as const, 'udp' as const),
        port: fc.integer({ min: 1, max: 65_535 }),
      }),
      { minLength: 1, maxLength: 8 },
    ),
    claimedSource: claim,
  },
  { requiredKeys: ['timestampMs', 'durationSeconds', 'access'] },
);
export const keyId = fc.integer({ min: 0, max: 0xffff_ffff });
export const key = fc.uint8Array({ minLength: 32, maxLength: 32 });
export const nonce = fc.uint8Array({ minLength: 12, maxLength: 12 });
