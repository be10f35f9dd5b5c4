/**
 * Connect claims (functions/receiver/connect-claims.ts) and the grant manager's close on connect: examples, then
 * properties (fast-check) over random sequences of knocks, connects and time: no connect by another device ever
 * closes an address while a device that knocked for it still waits inside its window, and a rule closes as soon as
 * the last waiting device connected.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { ConnectClaimRelease, ConnectClaimStore } from '../../../functions/core/interfaces.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { ConnectClaims, InMemoryConnectClaimStore } from '../../../functions/receiver/connect-claims.ts';
import { GrantManager } from '../../../functions/receiver/grant-manager.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { RecordingExpiryScheduler, RecordingFirewall, T0, TCP_8883 } from './helpers.ts';

const A = '198.51.100.7';
const B = '198.51.100.8';

describe('ConnectClaims', () => {
  it('revokes when the only device that knocked connects', () => {
    const claims = new ConnectClaims();
    claims.knock('dev-a', A, T0 + 30_000);
    expect(claims.release('dev-a', A, T0 + 1000)).toEqual({ revoke: true, claimed: true, waiting: [] });
    expect(claims.size).toBe(0);
  });

  it('keeps the address while another device that knocked still waits, revokes when both connected', () => {
    const claims = new ConnectClaims();
    claims.knock('dev-a', A, T0 + 30_000);
    claims.knock('dev-b', A, T0 + 30_000);
    expect(claims.release('dev-a', A, T0 + 1000)).toEqual({
      revoke: false,
      claimed: true,
      waiting: ['dev-b'],
    });
    expect(claims.release('dev-b', A, T0 + 2000)).toEqual({ revoke: true, claimed: true, waiting: [] });
  });

  it('a device without a claim there changes nothing: it never knocked, already connected, or knocked elsewhere', () => {
    const claims = new ConnectClaims();
    claims.knock('dev-a', A, T0 + 30_000);
    claims.knock('dev-b', B, T0 + 30_000);
    expect(claims.release('dev-x', A, T0)).toEqual({ revoke: false, claimed: false, waiting: ['dev-a'] });
    expect(claims.release('dev-b', A, T0)).toEqual({ revoke: false, claimed: false, waiting: ['dev-a'] });
    expect(claims.release('dev-b', B, T0).revoke).toBe(true);
    expect(claims.release('dev-b', B, T0)).toEqual({ revoke: false, claimed: false, waiting: [] });
    expect(claims.waiting(A, T0)).toEqual(['dev-a']);
  });

  it('a claim ends with its window: a late connect revokes nothing, and it no longer holds the address', () => {
    const claims = new ConnectClaims();
    claims.knock('dev-a', A, T0 + 10_000);
    claims.knock('dev-b', A, T0 + 30_000);
    expect(claims.waiting(A, T0 + 10_000)).toEqual(['dev-b']);
    expect(claims.release('dev-a', A, T0 + 10_000).claimed).toBe(false);
    expect(claims.release('dev-b', A, T0 + 20_000).revoke).toBe(true);
    claims.knock('dev-c', B, T0 + 5000);
    claims.expire(T0 + 5000);
    expect(claims.size).toBe(0);
  });

  it('a later knock extends a claim, a shorter one never shortens it', () => {
    const claims = new ConnectClaims();
    claims.knock('dev-a', A, T0 + 30_000);
    claims.knock('dev-a', A, T0 + 5000);
    expect(claims.waiting(A, T0 + 20_000)).toEqual(['dev-a']);
  });

  it('property: no sequence of connects revokes an address while a device that knocked still waits in its window', () => {
    const devices = ['d0', 'd1', 'd2', 'd3'];
    const addresses = [A, B];
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('knock' as const),
        device: fc.constantFrom(...devices),
        address: fc.constantFrom(...addresses),
        seconds: fc.integer({ min: 1, max: 60 }),
      }),
      fc.record({
        kind: fc.constant('connect' as const),
        device: fc.constantFrom(...devices),
        address: fc.constantFrom(...addresses),
      }),
      fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 20_000 }) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const claims = new ConnectClaims();
        /** The model: (device, address) → window end, for devices that knocked and have not connected. */
        const model = new Map<string, number>();
        let now = T0;
        for (const step of ops) {
          if (step.kind === 'wait') {
            now += step.ms;
            continue;
          }
          const key = `${step.device} ${step.address}`;
          if (step.kind === 'knock') {
            const until = now + step.seconds * 1000;
            claims.knock(step.device, step.address, until);
            model.set(key, Math.max(model.get(key) ?? 0, until));
            continue;
          }
          const held = (model.get(key) ?? 0) > now;
          model.delete(key);
          const stillWaiting = [...model]
            .filter(([k, until]) => k.endsWith(` ${step.address}`) && until > now)
            .map(([k]) => k.split(' ')[0]);
          const result = claims.release(step.device, step.address, now);
          expect(result.claimed).toBe(held);
          expect(result.revoke).toBe(held && stillWaiting.length === 0);
          expect([...result.waiting].sort()).toEqual([...stillWaiting].sort());
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('GrantManager: closed on connect', () => {
  const setup = () => {
    const time = new VirtualTime(T0);
    const firewall = new RecordingFirewall();
    const audit = new MemoryAuditSink();
    const manager = new GrantManager({
      firewall,
      expiry: new RecordingExpiryScheduler(),
      audit,
      clock: time,
      timers: time,
    });
    return { time, firewall, audit, manager };
  };
  const source = (address: string) => ({ address, family: 4 as const });

  it('revokes the rule when the device that knocked connects, audited with reason connected', async () => {
    const { time, firewall, audit, manager } = setup();
    await manager.open('dev-a', source(A), [TCP_8883], 30);
    await time.advance(1500);
    const closed = await manager.sessionEstablished('dev-a', `::ffff:${A}`); // a dual-stack socket's view
    expect(closed).toHaveLength(1);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(false);
    expect(manager.active()).toEqual([]);
    expect(audit.events.at(-1)).toMatchObject({
      type: 'grant.revoked',
      deviceId: 'dev-a',
      source: A,
      reason: 'connected',
      time: T0 + 1500,
    });
    // The window's timer finds nothing left: one revoke in all, no 'expired' line.
    await time.advance(60_000);
    expect(firewall.calls.filter((call) => call.op === 'revoke')).toHaveLength(1);
    expect(audit.events.filter((event) => event.type === 'grant.revoked')).toHaveLength(1);
  });

  it('two devices from one address: the rule stays until both connected', async () => {
    const { firewall, audit, manager } = setup();
    await manager.open('dev-a', source(A), [TCP_8883], 30);
    await manager.open('dev-b', source(A), [TCP_8883], 30);
    expect(await manager.sessionEstablished('dev-a', A)).toEqual([]);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(true);
    expect(await manager.sessionEstablished('dev-b', A)).toHaveLength(1);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(false);
    expect(audit.events.filter((event) => event.type === 'grant.revoked')).toMatchObject([
      { reason: 'connected' },
    ]);
  });

  it('two devices from one address, one never connects: the rule closes at the end of the window, reason expired', async () => {
    const { time, firewall, audit, manager } = setup();
    await manager.open('dev-a', source(A), [TCP_8883], 30);
    await manager.open('dev-b', source(A), [TCP_8883], 30);
    await manager.sessionEstablished('dev-a', A);
    await time.advance(29_999);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(true);
    await time.advance(1);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(false);
    expect(audit.events.at(-1)).toMatchObject({ type: 'grant.revoked', reason: 'expired' });
  });

  it('a device that did not knock for the address, or connects twice, cannot close it for another', async () => {
    const { firewall, manager } = setup();
    await manager.open('dev-a', source(A), [TCP_8883], 30);
    await manager.open('dev-b', source(B), [TCP_8883], 30);
    expect(await manager.sessionEstablished('dev-b', A)).toEqual([]);
    expect(await manager.sessionEstablished('dev-x', A)).toEqual([]);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(true);
    await manager.open('dev-c', source(B), [TCP_8883], 30);
    expect(await manager.sessionEstablished('dev-b', B)).toEqual([]);
    expect(await manager.sessionEstablished('dev-b', B)).toEqual([]); // a second session of dev-b
    expect(firewall.isOpen(B, 'tcp/8883')).toBe(true);
  });

  it('a knock queued while a connect closes the address keeps it open', async () => {
    const { firewall, manager } = setup();
    await manager.open('dev-a', source(A), [TCP_8883], 30);
    const knock = manager.open('dev-b', source(A), [TCP_8883], 30); // recorded now, runs after
    const closing = manager.sessionEstablished('dev-a', A);
    await Promise.all([knock, closing]);
    expect(await closing).toEqual([]);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(true);
  });

  it("a session before the device's own open completes closes that grant once it is open", async () => {
    const { firewall, audit, manager } = setup();
    let release: () => void = () => undefined;
    const slowAllow = firewall.allow.bind(firewall);
    firewall.allow = (grants) =>
      new Promise<void>((done) => {
        release = () => void slowAllow(grants).then(done);
      });
    const knock = manager.open('dev-a', source(A), [TCP_8883], 30); // its rule call is still under way
    await new Promise((resolve) => setTimeout(resolve, 0));
    const closing = manager.sessionEstablished('dev-a', A); // connected through an earlier rule of the address
    await new Promise((resolve) => setTimeout(resolve, 0));
    release();
    expect(await knock).toMatchObject({ ok: true });
    expect(await closing).toHaveLength(1);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(false);
    expect(audit.events.at(-1)).toMatchObject({ type: 'grant.revoked', reason: 'connected' });
  });

  it('a failed revoke on connect is audited and the grant stays under its timer', async () => {
    const { time, firewall, audit, manager } = setup();
    await manager.open('dev-a', source(A), [TCP_8883], 30);
    firewall.failRevoke = new Error('boom');
    expect(await manager.sessionEstablished('dev-a', A)).toEqual([]);
    expect(audit.events.at(-1)).toMatchObject({
      type: 'grant.failed',
      error: 'close on connect failed: Error: boom',
    });
    firewall.failRevoke = undefined;
    await time.advance(30_000);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(false);
    expect(audit.events.at(-1)).toMatchObject({ type: 'grant.revoked', reason: 'expired' });
  });

  it('property: the firewall never closes an address while a device that knocked there waits in its window', async () => {
    const devices = ['d0', 'd1', 'd2'];
    const addresses = [A, B];
    const op = fc.oneof(
      fc.record({
        kind: fc.constant('knock' as const),
        device: fc.constantFrom(...devices),
        address: fc.constantFrom(...addresses),
        seconds: fc.integer({ min: 1, max: 40 }),
      }),
      fc.record({
        kind: fc.constant('connect' as const),
        device: fc.constantFrom(...devices),
        address: fc.constantFrom(...addresses),
      }),
      fc.record({ kind: fc.constant('wait' as const), ms: fc.integer({ min: 0, max: 15_000 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 30 }), async (ops) => {
        const { time, firewall, manager } = setup();
        const waiting = new Map<string, number>(); // device address → window end, until it connects
        const check = () => {
          for (const [key, until] of waiting) {
            const address = key.split(' ')[1]!;
            if (until > time.now()) expect(firewall.isOpen(address, 'tcp/8883')).toBe(true);
          }
        };
        for (const step of ops) {
          if (step.kind === 'wait') await time.advance(step.ms);
          else if (step.kind === 'knock') {
            const key = `${step.device} ${step.address}`;
            await manager.open(step.device, source(step.address), [TCP_8883], step.seconds);
            waiting.set(key, Math.max(waiting.get(key) ?? 0, time.now() + step.seconds * 1000));
          } else {
            const before = firewall.isOpen(step.address, 'tcp/8883');
            const key = `${step.device} ${step.address}`;
            const held = (waiting.get(key) ?? 0) > time.now();
            waiting.delete(key);
            const closed = await manager.sessionEstablished(step.device, step.address);
            const others = [...waiting].some(
              ([k, until]) => k.endsWith(` ${step.address}`) && until > time.now(),
            );
            // Closes exactly when this device waited there and nobody else still does.
            expect(closed.length > 0).toBe(before && held && !others);
          }
          check();
        }
        await manager.close();
      }),
      { numRuns: 150 },
    );
  });
});

/** A claim store over the in-process one that records each call and can be made to fail. */
class RecordingClaimStore implements ConnectClaimStore {
  readonly calls: string[] = [];
  readonly #inner = new InMemoryConnectClaimStore();
  fail: Error | undefined;

  async knock(deviceId: string, target: string, until: number): Promise<void> {
    this.calls.push(`knock ${deviceId} ${target}`);
    if (this.fail !== undefined) throw this.fail;
    await this.#inner.knock(deviceId, target, until);
  }

  async release(deviceId: string, target: string, now: number): Promise<ConnectClaimRelease> {
    this.calls.push(`release ${deviceId} ${target}`);
    if (this.fail !== undefined) throw this.fail;
    return this.#inner.release(deviceId, target, now);
  }

  async waiting(target: string, now: number): Promise<readonly string[]> {
    if (this.fail !== undefined) throw this.fail;
    return this.#inner.waiting(target, now);
  }

  forget(target: string): void {
    this.#inner.forget(target);
  }
}

describe('GrantManager: the claim store it is given', () => {
  const setup = () => {
    const time = new VirtualTime(T0);
    const firewall = new RecordingFirewall();
    const audit = new MemoryAuditSink();
    const claims = new RecordingClaimStore();
    const manager = new GrantManager({
      firewall,
      expiry: new RecordingExpiryScheduler(),
      audit,
      clock: time,
      timers: time,
      connectClaims: claims,
    });
    return { time, firewall, audit, claims, manager };
  };

  it('releases only the targets it holds: the host, and its prefixes containing the session address', async () => {
    const { claims, manager, firewall } = setup();
    await manager.open('dev-a', { address: A, family: 4 }, [TCP_8883], 30);
    await manager.open('dev-b', { address: '203.0.113.0', family: 4, prefixLength: 24 }, [TCP_8883], 30);
    claims.calls.length = 0;
    // Nothing held at 192.0.2.1 (and no prefix of it): the store is not asked.
    expect(await manager.sessionEstablished('dev-a', '192.0.2.1')).toEqual([]);
    expect(await manager.sessionEstablished('dev-b', '203.0.114.9')).toEqual([]);
    expect(claims.calls).toEqual([]);
    // A device that knocked elsewhere connecting from inside the held /24 is asked about, and changes nothing.
    expect(await manager.sessionEstablished('dev-a', '203.0.113.77')).toEqual([]);
    expect(claims.calls).toEqual(['release dev-a 203.0.113.0/24']);
    expect((await manager.sessionEstablished('dev-b', '203.0.113.9')).map((g) => g.address)).toEqual([
      '203.0.113.0',
    ]);
    expect(firewall.isOpen('203.0.113.0', 'tcp/8883')).toBe(false);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(true);
  });

  it('GIVEN the store cannot record a claim THEN the open goes on, audited; GIVEN it cannot release THEN nothing closes', async () => {
    const { claims, manager, audit, firewall } = setup();
    claims.fail = new Error('ProvisionedThroughputExceededException');
    expect((await manager.open('dev-a', { address: A, family: 4 }, [TCP_8883], 30)).ok).toBe(true);
    expect(audit.events.filter((e) => e.type === 'grant.failed').map((e) => e.error)).toEqual([
      'connect claim not recorded: Error: ProvisionedThroughputExceededException',
      'connect claim not recorded: Error: ProvisionedThroughputExceededException',
    ]);
    expect(await manager.sessionEstablished('dev-a', A)).toEqual([]);
    expect(firewall.isOpen(A, 'tcp/8883')).toBe(true);
    expect(audit.events.at(-1)).toMatchObject({
      type: 'grant.failed',
      error: 'close on connect failed: Error: ProvisionedThroughputExceededException',
    });
    claims.fail = undefined;
    await manager.open('dev-a', { address: A, family: 4 }, [TCP_8883], 30);
    expect((await manager.sessionEstablished('dev-a', A)).map((g) => g.address)).toEqual([A]);
  });
});
