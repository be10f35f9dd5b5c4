import { beforeEach, describe, expect, it, vi } from 'vitest';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { GrantManager } from '../../../functions/receiver/grant-manager.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { RecordingExpiryScheduler, RecordingFirewall, T0, TCP_1883, TCP_8883, UDP_5683 } from './helpers.ts';

const SOURCE = { address: '192.0.2.10', family: 4 as const };

/** A RecordingFirewall whose allows wait until `release()`, counted as they start. */
class GatedFirewall extends RecordingFirewall {
  started = 0;
  #open: () => void = () => {};
  readonly #gate = new Promise<void>((resolve) => {
    this.#open = resolve;
  });
  override async allow(grants: Parameters<RecordingFirewall['allow']>[0]): Promise<void> {
    this.started += 1;
    await this.#gate;
    return super.allow(grants);
  }
  release(): void {
    this.#open();
  }
}

describe('GrantManager under a virtual clock', () => {
  let time: VirtualTime;
  let firewall: RecordingFirewall;
  let expiry: RecordingExpiryScheduler;
  let audit: MemoryAuditSink;
  let manager: GrantManager;

  beforeEach(() => {
    time = new VirtualTime(T0);
    firewall = new RecordingFirewall();
    expiry = new RecordingExpiryScheduler();
    audit = new MemoryAuditSink();
    manager = new GrantManager({
      firewall,
      expiry,
      audit,
      clock: time,
      timers: time,
      revokeRetryMs: 1000,
      maxRevokeAttempts: 3,
    });
  });

  it('1. opens a grant: firewall allow, expiry scheduled, audited', async () => {
    const result = await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    expect(result).toMatchObject({ ok: true, value: { status: 'opened' } });
    const grant = { deviceId: 'dev-a', ...SOURCE, access: [TCP_8883], openedAt: T0, expiresAt: T0 + 30_000 };
    expect(firewall.calls).toEqual([{ op: 'allow', grants: [grant] }]);
    expect(expiry.scheduled).toEqual([grant]);
    expect(manager.active()).toEqual([grant]);
    expect(audit.events).toEqual([
      {
        type: 'grant.opened',
        time: T0,
        deviceId: 'dev-a',
        source: SOURCE.address,
        access: [TCP_8883],
        expiresAt: T0 + 30_000,
      },
    ]);
  });

  it('2. a new knock for the same address and ports extends, never duplicates', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await time.advance(10_000);
    const result = await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    expect(result).toMatchObject({
      ok: true,
      value: { status: 'extended', grant: { openedAt: T0, expiresAt: T0 + 40_000 } },
    });
    expect(manager.active()).toHaveLength(1);
    expect(firewall.calls.map((call) => call.op)).toEqual(['allow', 'allow']);
    expect(audit.events.map((event) => event.type)).toEqual(['grant.opened', 'grant.extended']);
    // The first timer (T0 + 30 s) must not revoke the extended grant.
    await time.advance(25_000);
    expect(manager.active()).toHaveLength(1);
    expect(firewall.calls.filter((call) => call.op === 'revoke')).toHaveLength(0);
    await time.advance(5_000);
    expect(manager.active()).toHaveLength(0);
    expect(firewall.calls.at(-1)).toMatchObject({ op: 'revoke', grants: [{ expiresAt: T0 + 40_000 }] });
  });

  it('3. a shorter request never shortens an open grant', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 300);
    const result = await manager.open('dev-a', SOURCE, [TCP_8883], 5);
    expect(result).toMatchObject({
      ok: true,
      value: { status: 'extended', grant: { expiresAt: T0 + 300_000 } },
    });
  });

  it('4. revokes on expiry, audited, and forgets the grant', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await time.advance(29_999);
    expect(firewall.isOpen(SOURCE.address, 'tcp/8883')).toBe(true);
    await time.advance(1);
    expect(firewall.isOpen(SOURCE.address, 'tcp/8883')).toBe(false);
    expect(manager.active()).toEqual([]);
    expect(audit.events.at(-1)).toMatchObject({
      type: 'grant.revoked',
      time: T0 + 30_000,
      source: SOURCE.address,
    });
    expect(time.pendingTimers).toBe(0);
  });

  it('5. port order and duplicates do not make a different grant', async () => {
    await manager.open('dev-a', SOURCE, [UDP_5683, TCP_8883], 30);
    const again = await manager.open('dev-a', SOURCE, [TCP_8883, UDP_5683, TCP_8883], 30);
    expect(again).toMatchObject({
      ok: true,
      value: { status: 'extended', grant: { access: [TCP_8883, UDP_5683] } },
    });
    expect(manager.active()).toHaveLength(1);
  });

  it('6. another address or another port set is another grant', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await manager.open('dev-b', { address: '192.0.2.11', family: 4 }, [TCP_8883], 30);
    await manager.open('dev-a', SOURCE, [TCP_8883, TCP_1883], 30);
    expect(manager.active()).toHaveLength(3);
  });

  it('7. an expiring grant leaves open the ports another live grant of the same address still needs', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await manager.open('dev-a', SOURCE, [TCP_8883, TCP_1883], 60);
    await time.advance(30_000);
    // The first grant expired; tcp/8883 is still covered by the second one: nothing to revoke at the firewall.
    expect(firewall.calls.filter((call) => call.op === 'revoke')).toHaveLength(0);
    expect(firewall.isOpen(SOURCE.address, 'tcp/8883')).toBe(true);
    expect(audit.events.filter((event) => event.type === 'grant.revoked')).toHaveLength(1);
    await time.advance(30_000);
    expect(firewall.isOpen(SOURCE.address, 'tcp/8883')).toBe(false);
    expect(firewall.isOpen(SOURCE.address, 'tcp/1883')).toBe(false);
  });

  it('8. a firewall failure on open is audited as grant.failed and returned as grant-failed', async () => {
    firewall.failAllow = new Error('RequestLimitExceeded');
    const result = await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    expect(result).toEqual({ ok: false, reason: 'grant-failed' });
    expect(manager.active()).toEqual([]);
    expect(expiry.scheduled).toEqual([]);
    expect(audit.events).toEqual([
      {
        type: 'grant.failed',
        time: T0,
        deviceId: 'dev-a',
        source: SOURCE.address,
        error: 'allow failed: Error: RequestLimitExceeded',
      },
    ]);
  });

  it('9. a failed revoke is audited and retried, then succeeds', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    firewall.failRevoke = new Error('RequestLimitExceeded');
    await time.advance(30_000);
    expect(audit.events.at(-1)).toMatchObject({
      type: 'grant.failed',
      error: expect.stringContaining('attempt 1 of 3'),
    });
    expect(manager.active()).toHaveLength(1);
    firewall.failRevoke = undefined;
    await time.advance(1000);
    expect(audit.events.at(-1)).toMatchObject({ type: 'grant.revoked' });
    expect(manager.active()).toEqual([]);
  });

  it('10. after maxRevokeAttempts the manager gives up to the backstops (sweeper / element timeout)', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    firewall.failRevoke = new Error('boom');
    await time.advance(30_000 + 2 * 1000);
    const failures = audit.events.filter((event) => event.type === 'grant.failed');
    expect(failures).toHaveLength(3);
    expect(failures.at(-1)).toMatchObject({ error: expect.stringContaining('giving up') });
    expect(manager.active()).toEqual([]);
    expect(time.pendingTimers).toBe(0);
  });

  it('11. an ExpiryScheduler failure is audited but the grant stays open (the local timer still revokes it)', async () => {
    expiry.fail = new Error('SQS: AccessDenied');
    const result = await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    expect(result).toMatchObject({ ok: true, value: { status: 'opened' } });
    expect(audit.events.map((event) => event.type)).toEqual(['grant.opened', 'grant.failed']);
    await time.advance(30_000);
    expect(firewall.isOpen(SOURCE.address, 'tcp/8883')).toBe(false);
  });

  it('12. close() revokes everything it opened in one call, then refuses new grants', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await manager.open('dev-b', { address: '2001:db8::7', family: 6 }, [UDP_5683], 300);
    await manager.close();
    const revokes = firewall.calls.filter((call) => call.op === 'revoke');
    expect(revokes).toHaveLength(1);
    expect(revokes[0]!.grants.map((grant) => grant.address).sort()).toEqual(['192.0.2.10', '2001:db8::7']);
    expect(firewall.open.size).toBe(0);
    expect(manager.active()).toEqual([]);
    expect(time.pendingTimers).toBe(0);
    expect(audit.events.filter((event) => event.type === 'grant.revoked')).toHaveLength(2);
    expect(await manager.open('dev-a', SOURCE, [TCP_8883], 30)).toEqual({
      ok: false,
      reason: 'grant-failed',
    });
  });

  it('13. revokeAll falls back to one call per grant when the coalesced call fails', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await manager.open('dev-b', { address: '192.0.2.11', family: 4 }, [TCP_8883], 30);
    let calls = 0;
    const original = firewall.revoke.bind(firewall);
    firewall.revoke = async (grants) => {
      calls += 1;
      if (grants.length > 1) throw new Error('InvalidPermission.NotFound');
      return original(grants);
    };
    await manager.revokeAll();
    expect(calls).toBe(3);
    expect(firewall.open.size).toBe(0);
  });

  it('14. concurrent knocks for one grant are serialized: one opened, the rest extended', async () => {
    const results = await Promise.all([1, 2, 3].map(() => manager.open('dev-a', SOURCE, [TCP_8883], 30)));
    expect(results.map((result) => (result.ok ? result.value.status : result.reason))).toEqual([
      'opened',
      'extended',
      'extended',
    ]);
    expect(manager.active()).toHaveLength(1);
  });

  it('14b. knocks that come while their grant is being opened join one open: one allow for all of them, each answered and audited', async () => {
    const gated = new GatedFirewall();
    manager = new GrantManager({ firewall: gated, expiry, audit, clock: time, timers: time });
    const first = manager.open('dev-a', SOURCE, [TCP_8883], 30);
    await vi.waitFor(() => expect(gated.started).toBe(1));
    // Behind a busy NAT address or prefix, knock after knock while the first open waits on the firewall.
    const later = (
      [
        ['dev-b', 30],
        ['dev-c', 60],
        ['dev-d', 10],
      ] as const
    ).map(([device, seconds]) => manager.open(device, SOURCE, [TCP_8883], seconds));
    gated.release();
    const results = await Promise.all([first, ...later]);
    expect(results.map((r) => (r.ok ? [r.value.status, r.value.grant.deviceId] : r.reason))).toEqual([
      ['opened', 'dev-a'],
      ['extended', 'dev-d'],
      ['extended', 'dev-d'],
      ['extended', 'dev-d'],
    ]);
    // Two firewall calls, not four: the second until the latest expiry asked (dev-c's 60 s), carrying the last device.
    expect(gated.started).toBe(2);
    expect(gated.calls[1]!.grants).toEqual([
      expect.objectContaining({ deviceId: 'dev-d', expiresAt: T0 + 60_000 }),
    ]);
    expect(audit.events.map((e) => [e.type, 'deviceId' in e ? e.deviceId : undefined])).toEqual([
      ['grant.opened', 'dev-a'],
      ['grant.extended', 'dev-b'],
      ['grant.extended', 'dev-c'],
      ['grant.extended', 'dev-d'],
    ]);
    expect(manager.active()).toHaveLength(1);
  });

  it('14c. an unexpected error inside an open refuses its knocks instead of leaving them waiting', async () => {
    const broken = {
      setTimeout: () => {
        throw new Error('timer broke');
      },
      clearTimeout: () => {},
    };
    manager = new GrantManager({ firewall, expiry, audit, clock: time, timers: broken });
    const results = await Promise.all([
      manager.open('dev-a', SOURCE, [TCP_8883], 30),
      manager.open('dev-b', SOURCE, [TCP_8883], 30),
    ]);
    expect(results).toEqual([
      { ok: false, reason: 'grant-failed' },
      { ok: false, reason: 'grant-failed' },
    ]);
    expect(audit.events.at(-1)).toMatchObject({
      type: 'grant.failed',
      error: 'open failed: Error: timer broke',
    });
  });

  it('15. release() hands open grants to the backstop: no revoke, no timer left, no new opens', async () => {
    await manager.open('dev-a', SOURCE, [TCP_8883], 30);
    const handed = await manager.release();
    expect(handed.map((grant) => grant.expiresAt)).toEqual([T0 + 30_000]);
    expect(manager.active()).toEqual([]);
    await time.advance(60_000);
    expect(firewall.calls.map((call) => call.op)).toEqual(['allow']);
    expect(await manager.open('dev-b', SOURCE, [TCP_8883], 30)).toEqual({
      ok: false,
      reason: 'grant-failed',
    });
  });
});

describe('GrantManager: prefix grants (docs/scaling.md "Prefix grants")', () => {
  let time: VirtualTime;
  let firewall: RecordingFirewall;
  let audit: MemoryAuditSink;
  let manager: GrantManager;
  const PREFIX = { address: '203.0.113.0', family: 4 as const, prefixLength: 24 };

  beforeEach(() => {
    time = new VirtualTime(T0);
    firewall = new RecordingFirewall();
    audit = new MemoryAuditSink();
    manager = new GrantManager({
      firewall,
      expiry: new RecordingExpiryScheduler(),
      audit,
      clock: time,
      timers: time,
    });
  });

  it('several devices of one prefix share one grant; it closes when the last of them connects', async () => {
    const a = await manager.open('dev-a', PREFIX, [TCP_8883], 30);
    const b = await manager.open('dev-b', PREFIX, [TCP_8883], 30);
    expect(a).toMatchObject({ ok: true, value: { status: 'opened', grant: { prefixLength: 24 } } });
    expect(b).toMatchObject({ ok: true, value: { status: 'extended' } });
    expect(manager.active()).toHaveLength(1);
    expect(audit.events[0]).toMatchObject({ type: 'grant.opened', source: '203.0.113.0/24' });
    // dev-a's session comes from another address of the prefix: it releases its own claim only.
    expect(await manager.sessionEstablished('dev-a', '203.0.113.9')).toEqual([]);
    // A device that never knocked from the prefix, or a session from outside it, changes nothing.
    expect(await manager.sessionEstablished('dev-x', '203.0.113.10')).toEqual([]);
    expect(await manager.sessionEstablished('dev-b', '203.0.114.10')).toEqual([]);
    expect(manager.active()).toHaveLength(1);
    const closed = await manager.sessionEstablished('dev-b', '203.0.113.200');
    expect(closed).toMatchObject([{ address: '203.0.113.0', prefixLength: 24 }]);
    expect(manager.active()).toHaveLength(0);
    expect(firewall.calls.at(-1)).toMatchObject({ op: 'revoke', grants: [{ prefixLength: 24 }] });
    expect(audit.events.at(-1)).toMatchObject({ type: 'grant.revoked', reason: 'connected' });
  });

  it('a prefix grant and a host grant of an address inside it are separate grants', async () => {
    await manager.open('dev-a', PREFIX, [TCP_8883], 30);
    await manager.open('dev-h', { address: '203.0.113.0', family: 4 }, [TCP_8883], 30);
    expect(manager.active()).toHaveLength(2);
    await time.advance(30_000);
    expect(manager.active()).toHaveLength(0);
    expect(audit.events.filter((e) => e.type === 'grant.revoked')).toHaveLength(2);
  });
});
