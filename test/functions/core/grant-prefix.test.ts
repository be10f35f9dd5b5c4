/**
 * Prefix grants for carrier-grade NAT (functions/core/grant-prefix.ts, docs/scaling.md "Prefix grants"): the pure
 * computation of where a grant opens, and the policy's validation.
 */
import { describe, expect, it } from 'vitest';
import {
  checkGrantPrefixPolicy,
  GrantPrefixError,
  grantCidr,
  grantPrefixFor,
  grantTarget,
  parseGrantPrefixPolicy,
  prefixContains,
  prefixOf,
} from '../../../functions/core/grant-prefix.ts';

describe('grantPrefixFor', () => {
  it('without a policy grants the single host, canonical', () => {
    expect(grantPrefixFor('::ffff:203.0.113.7', undefined)).toEqual({ address: '203.0.113.7', family: 4 });
    expect(grantPrefixFor('2001:DB8:0:0::7', undefined)).toEqual({ address: '2001:db8::7', family: 6 });
  });

  it('IPv4 /24: the /24 containing the source', () => {
    const scope = grantPrefixFor('203.0.113.77', { ipv4: 24 });
    expect(scope).toEqual({ address: '203.0.113.0', family: 4, prefixLength: 24 });
    expect(grantTarget(scope)).toBe('203.0.113.0/24');
    expect(grantCidr(scope)).toBe('203.0.113.0/24');
    // Two devices of one prefix get one scope (so one rule).
    expect(grantPrefixFor('203.0.113.200', { ipv4: 24 })).toEqual(scope);
  });

  it('IPv6 /64: the /64 containing the source, in RFC 5952 text', () => {
    expect(grantPrefixFor('2001:db8:aa:bb:1:2:3:4', { ipv6: 64 })).toEqual({
      address: '2001:db8:aa:bb::',
      family: 6,
      prefixLength: 64,
    });
    // An IPv4 length does not widen an IPv6 source, nor the reverse.
    expect(grantPrefixFor('2001:db8::1', { ipv4: 24 })).toEqual({ address: '2001:db8::1', family: 6 });
    expect(grantPrefixFor('198.51.100.9', { ipv6: 64 })).toEqual({ address: '198.51.100.9', family: 4 });
  });

  it('a configured carrier range: the whole range for a source inside it, the host for one outside', () => {
    const policy = parseGrantPrefixPolicy({ ranges: ['198.51.100.0/22', '2001:db8:40::/48'] }, 'device d');
    expect(grantPrefixFor('198.51.103.250', policy)).toEqual({
      address: '198.51.100.0',
      family: 4,
      prefixLength: 22,
    });
    expect(grantPrefixFor('2001:db8:40:ffff::1', policy)).toEqual({
      address: '2001:db8:40::',
      family: 6,
      prefixLength: 48,
    });
    expect(grantPrefixFor('198.51.104.1', policy)).toEqual({ address: '198.51.104.1', family: 4 });
    expect(grantCidr(grantPrefixFor('198.51.104.1', policy))).toBe('198.51.104.1/32');
    expect(grantCidr(grantPrefixFor('2001:db8:41::1', policy))).toBe('2001:db8:41::1/128');
  });

  it('a range wins over the length; a length of 32 is a host grant', () => {
    const policy = parseGrantPrefixPolicy({ ipv4: 24, ranges: ['198.51.100.0/22'] }, 'device d');
    expect(grantTarget(grantPrefixFor('198.51.101.1', policy))).toBe('198.51.100.0/22');
    expect(grantTarget(grantPrefixFor('192.0.2.1', policy))).toBe('192.0.2.0/24');
    expect(grantPrefixFor('192.0.2.1', { ipv4: 32 })).toEqual({ address: '192.0.2.1', family: 4 });
  });

  it('prefixContains and prefixOf agree with the computed scope', () => {
    expect(prefixContains('203.0.113.0', 24, '203.0.113.255')).toBe(true);
    expect(prefixContains('203.0.113.0', 24, '203.0.114.0')).toBe(false);
    expect(prefixContains('203.0.113.0', 24, '::ffff:203.0.113.5')).toBe(true);
    expect(prefixContains('2001:db8:aa:bb::', 64, '2001:db8:aa:bc::1')).toBe(false);
    expect(prefixContains('203.0.113.0', 24, 'not-an-address')).toBe(false);
    expect(prefixOf('2001:db8:aa:bb:1::9', 64)).toBe('2001:db8:aa:bb::/64');
    expect(prefixOf('192.0.2.1', 33)).toBeUndefined();
  });
});

describe('the grantPrefix policy refused with the field and the fix', () => {
  it.each([
    [{ ipv4: 8 }, /grantPrefix\.ipv4: received 8; expected an integer 16\.\.32 \(e\.g\. 24\)/],
    [{ ipv6: 24.5 }, /grantPrefix\.ipv6: received 24\.5; expected an integer 32\.\.128 \(e\.g\. 64\)/],
    [{ ipv4: '24' }, /grantPrefix\.ipv4: received "24"/],
    [
      { ranges: ['198.51.100.7/22'] },
      /grantPrefix\.ranges\[0\]: .* has host bits set: write 198\.51\.100\.0\/22/,
    ],
    [{ ranges: ['10.0.0.0/8'] }, /grantPrefix\.ranges\[0\]: .*must be \/16\.\.32.*split it/],
    [
      { ranges: ['198.51.100.0'] },
      /grantPrefix\.ranges\[0\]: .* has no prefix length: write it as NETWORK\/LENGTH/,
    ],
    [{ ranges: [] }, /grantPrefix\.ranges: received 0 ranges; expected 1\.\.16/],
    [{ prefix: 24 }, /grantPrefix\.prefix is not a field: use ipv4, ipv6 or ranges/],
    [24, /expected a mapping such as \{ ipv4: 24, ipv6: 64 \}/],
  ])('%j', (value, message) => {
    expect(checkGrantPrefixPolicy(value).join('; ')).toMatch(message);
    expect(() => parseGrantPrefixPolicy(value, 'device cell-1')).toThrow(GrantPrefixError);
    expect(() => parseGrantPrefixPolicy(value, 'device cell-1')).toThrow(
      /^device cell-1: invalid grantPrefix: /,
    );
  });

  it('accepts a valid policy and canonicalises its ranges', () => {
    expect(checkGrantPrefixPolicy({ ipv4: 24, ipv6: 64 })).toEqual([]);
    expect(parseGrantPrefixPolicy({ ranges: ['2001:DB8:40:0::/48'] }, 'd')).toEqual({
      ranges: ['2001:db8:40::/48'],
    });
  });
});
