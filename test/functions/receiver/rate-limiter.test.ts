import { describe, expect, it } from 'vitest';
import { canonicalAccess, grantSeconds, withinClockWindow } from '../../../functions/receiver/policy.ts';
import { RateLimiterConfigError, TokenBucketRateLimiter } from '../../../functions/receiver/rate-limiter.ts';
import { canonicalSource, rateLimitKey, sameAddress } from '../../../functions/receiver/source-address.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { T0 } from './helpers.ts';

describe('TokenBucketRateLimiter (burst 3, 1 per second)', () => {
  // Each row: advance the clock by `after` ms, then take for `key`; `allowed` is the expected answer.
  const TABLE: readonly { n: number; after: number; key: string; allowed: boolean; why: string }[] = [
    { n: 1, after: 0, key: 'a', allowed: true, why: 'a new source starts with a full bucket (3)' },
    { n: 2, after: 0, key: 'a', allowed: true, why: '2 left' },
    { n: 3, after: 0, key: 'a', allowed: true, why: '1 left' },
    { n: 4, after: 0, key: 'a', allowed: false, why: 'empty' },
    { n: 5, after: 0, key: 'b', allowed: true, why: 'another source has its own bucket' },
    { n: 6, after: 999, key: 'a', allowed: false, why: '0.999 tokens refilled: not yet one' },
    { n: 7, after: 1, key: 'a', allowed: true, why: 'one full token after 1 s' },
    { n: 8, after: 0, key: 'a', allowed: false, why: 'spent again' },
    { n: 9, after: 60_000, key: 'a', allowed: true, why: 'refill caps at the burst...' },
    { n: 10, after: 0, key: 'a', allowed: true, why: '...' },
    { n: 11, after: 0, key: 'a', allowed: true, why: '...3 tokens' },
    { n: 12, after: 0, key: 'a', allowed: false, why: '...not 60' },
  ];

  it('follows the table', async () => {
    const time = new VirtualTime(T0);
    const limiter = new TokenBucketRateLimiter({ clock: time, burst: 3, ratePerSecond: 1 });
    for (const row of TABLE) {
      await time.advance(row.after);
      expect(limiter.take(row.key), `#${row.n} ${row.why}`).toBe(row.allowed);
    }
  });

  it('tracks at most maxSources buckets, forgetting the least recently used', () => {
    const time = new VirtualTime(T0);
    const limiter = new TokenBucketRateLimiter({ clock: time, burst: 1, ratePerSecond: 1, maxSources: 2 });
    expect(limiter.take('a')).toBe(true);
    expect(limiter.take('b')).toBe(true);
    expect(limiter.take('a')).toBe(false); // a is now the most recent
    expect(limiter.take('c')).toBe(true); // evicts b (least recently used)
    expect(limiter.size).toBe(2);
    expect(limiter.take('a')).toBe(false); // a was kept: still limited
    for (let i = 0; i < 10_000; i++) limiter.take(`spoofed-${i}`);
    expect(limiter.size).toBe(2);
  });

  it('a clock going backwards refills nothing', () => {
    let now = T0;
    const limiter = new TokenBucketRateLimiter({ clock: { now: () => now }, burst: 1, ratePerSecond: 1 });
    expect(limiter.take('a')).toBe(true);
    now = T0 - 10_000;
    expect(limiter.take('a')).toBe(false);
    now = T0 + 500;
    expect(limiter.take('a')).toBe(false);
    now = T0 + 1000;
    expect(limiter.take('a')).toBe(true);
  });

  it.each([
    [{ burst: 0 }, /burst: received 0/],
    [{ burst: 1.5 }, /burst: received 1.5/],
    [{ ratePerSecond: -1 }, /ratePerSecond: received -1/],
    [{ maxSources: Number.NaN }, /maxSources: received NaN/],
  ])('rejects bad options %o with a named field', (options, message) => {
    expect(() => new TokenBucketRateLimiter({ clock: { now: () => 0 }, ...options })).toThrow(message);
    expect(() => new TokenBucketRateLimiter({ clock: { now: () => 0 }, ...options })).toThrow(
      RateLimiterConfigError,
    );
  });
});

describe('source addresses', () => {
  it.each([
    ['192.0.2.1', 4, '192.0.2.1', 4],
    ['::ffff:192.0.2.1', 6, '192.0.2.1', 4],
    ['2001:DB8:0:0:0:0:0:1', 6, '2001:db8::1', 6],
    ['fe80::1%eth0', 6, 'fe80::1', 6],
  ] as const)('canonicalSource(%s/%i) = %s/%i', (address, family, wantAddress, wantFamily) => {
    expect(canonicalSource({ address, family, port: 9 })).toEqual({
      address: wantAddress,
      family: wantFamily,
      port: 9,
    });
  });

  it('rate limits IPv4 per address and IPv6 per /64', () => {
    expect(rateLimitKey({ family: 4, address: '192.0.2.1' })).toBe('192.0.2.1');
    expect(rateLimitKey({ family: 6, address: '2001:db8:1:2:aaaa::1' })).toBe('2001:db8:1:2::/64');
    expect(rateLimitKey({ family: 6, address: '2001:db8:1:2:bbbb::9' })).toBe('2001:db8:1:2::/64');
    expect(rateLimitKey({ family: 6, address: '2001:db8:1:3::1' })).toBe('2001:db8:1:3::/64');
  });

  it('compares addresses by bytes and family', () => {
    expect(sameAddress({ family: 6, address: '::1' }, { family: 6, address: '0:0:0:0:0:0:0:1' })).toBe(true);
    expect(sameAddress({ family: 4, address: '10.0.0.1' }, { family: 4, address: '10.0.0.2' })).toBe(false);
    expect(sameAddress({ family: 4, address: '0.0.0.1' }, { family: 6, address: '::1' })).toBe(false);
  });
});

describe('policy', () => {
  it.each([
    [0, 300, 30, 30],
    [0, 10, 30, 10],
    [45, 300, 30, 45],
    [301, 300, 30, 300],
  ])('grantSeconds(requested %i, max %i, default %i) = %i', (requested, max, fallback, want) => {
    expect(grantSeconds(requested, max, fallback)).toBe(want);
  });

  it('clock window is inclusive at exactly the window', () => {
    expect(withinClockWindow(T0 - 60_000, T0, 60_000)).toBe(true);
    expect(withinClockWindow(T0 - 60_001, T0, 60_000)).toBe(false);
    expect(withinClockWindow(T0 + 60_001, T0, 60_000)).toBe(false);
  });

  it('canonical access sorts and dedupes', () => {
    expect(
      canonicalAccess([
        { protocol: 'udp', port: 1 },
        { protocol: 'tcp', port: 9 },
        { protocol: 'tcp', port: 2 },
        { protocol: 'tcp', port: 9 },
      ]),
    ).toEqual([
      { protocol: 'tcp', port: 2 },
      { protocol: 'tcp', port: 9 },
      { protocol: 'udp', port: 1 },
    ]);
  });
});
