/**
 * The gate's expiry index (functions/local/expiry-index.ts) and the gate holding 60,000 grants: the work per
 * allow is measured in index steps (heap moves and visits), not time, and stays logarithmic; the audit's scan of
 * every open grant on each allow (60k grants: 20.1 s per 60k knocks) is gone. Real sockets on port 0.
 */
import { createServer, type Server, connect as tcpConnect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { ExpiryIndex } from '../../../functions/local/expiry-index.ts';
import { type GateFirewall, startGateFirewall } from '../../../functions/local/gate-firewall.ts';

const T0 = Date.UTC(2030, 0, 1);
const N = 60_000;

const addressOf = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

describe('ExpiryIndex', () => {
  it('expires keys in expiry order, skips replaced and deleted expiries', () => {
    const index = new ExpiryIndex<string>();
    index.set('a', 30);
    index.set('b', 10);
    index.set('c', 20);
    index.set('b', 40); // extended
    index.delete('c');
    expect(index.expire(25)).toEqual([]);
    expect(index.expire(30)).toEqual(['a']);
    expect(index.get('b')).toBe(40);
    expect(index.expire(100)).toEqual(['b']);
    expect(index.size).toBe(0);
  });

  it('extend sets a later expiry only, never an earlier one', () => {
    const index = new ExpiryIndex<string>();
    expect(index.extend('a', 300)).toBe(true);
    expect(index.extend('a', 100)).toBe(false);
    expect(index.get('a')).toBe(300);
    expect(index.expire(200)).toEqual([]);
    expect(index.extend('a', 400)).toBe(true);
    expect(index.expire(400)).toEqual(['a']);
    expect(index.extend('a', 50)).toBe(true); // gone: a new expiry of any time
  });

  it('60,000 keys: each set costs O(log n) steps, expiring k keys O(k log n), extensions stay bounded', () => {
    const index = new ExpiryIndex<string>();
    for (let i = 0; i < N; i++) index.set(addressOf(i), T0 + 1000 + ((i * 7919) % N));
    const perSet = index.steps / N;
    // log2(60,000) ≈ 16: a push moves a node at most 16 levels (plus the push itself).
    expect(perSet).toBeLessThanOrEqual(17);
    // Extending every key once (a re-knock) leaves stale nodes; the heap is rebuilt before it doubles.
    for (let i = 0; i < N; i++) index.set(addressOf(i), T0 + 100_000 + i);
    const beforeExpire = index.steps;
    expect(index.expire(T0 + 100_000 + 99)).toHaveLength(100);
    // 100 expiries, plus at most the stale nodes of the first round (each popped once): far from a scan per call.
    expect(index.steps - beforeExpire).toBeLessThan((100 + N) * 17);
    const quiet = index.steps;
    expect(index.expire(T0 + 100_000 + 99)).toEqual([]);
    expect(index.steps - quiet).toBe(0); // nothing due: no work at all
  });
});

describe('the gate with 60,000 grants', () => {
  let gate: GateFirewall | undefined;
  let upstream: Server | undefined;
  afterEach(async () => {
    await gate?.close();
    await new Promise<void>((resolve) => (upstream ? upstream.close(() => resolve()) : resolve()));
    gate = undefined;
    upstream = undefined;
  });

  it('an allow costs index steps logarithmic in the table, and a granted connection is piped', async () => {
    upstream = createServer((socket) => socket.end('hello'));
    await new Promise<void>((resolve) => upstream!.listen(0, '127.0.0.1', resolve));
    const upstreamPort = (upstream.address() as { port: number }).port;
    let now = T0;
    gate = await startGateFirewall({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: { host: '127.0.0.1', port: upstreamPort },
      clock: { now: () => now },
    });
    const port = gate.address().port;
    const grant = (address: string, expiresAt: number): Grant => ({
      deviceId: 'device-1',
      address,
      family: 4,
      access: [{ protocol: 'tcp', port }],
      openedAt: T0,
      expiresAt,
    });
    for (let i = 0; i < N; i++) await gate.allow([grant(addressOf(i), T0 + 60_000 + i)]);
    const afterFill = gate.stats();
    expect(afterFill.grants).toBe(N);
    // Grants arrive in expiry order (a knock storm): each push is one step, no scan of the 60k open ones.
    expect(afterFill.indexSteps / N).toBeLessThanOrEqual(17);
    // 10,000 more knocks (extensions of open grants) with 60k open: still logarithmic per knock.
    const before = gate.stats().indexSteps;
    for (let i = 0; i < 10_000; i++) await gate.allow([grant(addressOf(i), T0 + 120_000 + i)]);
    expect((gate.stats().indexSteps - before) / 10_000).toBeLessThanOrEqual(17 * 2);
    await gate.allow([grant('127.0.0.1', T0 + 200_000)]);
    const greeting = await new Promise<string>((resolve, reject) => {
      const socket = tcpConnect({ port, host: '127.0.0.1' });
      let text = '';
      socket.on('data', (data) => {
        text += data.toString();
      });
      socket.on('error', reject);
      socket.on('close', () => resolve(text));
    });
    expect(greeting).toBe('hello');
    // Past every expiry but the last: one allow purges the 60k expired entries.
    now = T0 + 150_000;
    await gate.allow([grant('192.0.2.1', T0 + 300_000)]);
    expect(gate.stats().grants).toBe(2);
  }, 120_000);
});
