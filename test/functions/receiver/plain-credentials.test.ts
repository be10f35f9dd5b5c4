/**
 * The plain profile's credential book (functions/receiver/plain-credentials.ts) and its keeper
 * (plain-credential-keeper.ts): one live credential per device, good once, from its address, within its window;
 * dead when replaced, consumed, its grant closed or its window ended; the broker told in call order.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Grant } from '../../../functions/core/interfaces.ts';
import {
  type CredentialInstaller,
  closingCredentials,
  PlainCredentialKeeper,
  type WithdrawReason,
} from '../../../functions/receiver/plain-credential-keeper.ts';
import { PlainCredentialBook } from '../../../functions/receiver/plain-credentials.ts';
import { globalTimers } from '../../support/timers.ts';

const CRED_A = 'a'.repeat(64);
const CRED_B = 'b'.repeat(64);

describe('PlainCredentialBook', () => {
  const entry = (credential = CRED_A, address = '192.0.2.1', expiresAt = 10_000) => ({
    deviceId: 'tiny-1',
    credential,
    address,
    expiresAt,
  });

  it('accepts the live credential once, from its address, before its expiry', () => {
    const book = new PlainCredentialBook();
    book.install(entry());
    expect(book.consume('tiny-1', CRED_A, '192.0.2.1', 5_000)).toBe('accepted');
    expect(book.consume('tiny-1', CRED_A, '192.0.2.1', 5_001)).toBe('no-credential');
  });

  it('refuses another address, a wrong or missing password, another device, without consuming', () => {
    const book = new PlainCredentialBook();
    book.install(entry());
    expect(book.consume('tiny-1', CRED_A, '192.0.2.2', 1)).toBe('wrong-address');
    expect(book.consume('tiny-1', CRED_B, '192.0.2.1', 1)).toBe('wrong-credential');
    expect(book.consume('tiny-1', undefined, '192.0.2.1', 1)).toBe('wrong-credential');
    expect(book.consume('tiny-1', CRED_A.slice(1), '192.0.2.1', 1)).toBe('wrong-credential');
    expect(book.consume('other', CRED_A, '192.0.2.1', 1)).toBe('no-credential');
    expect(book.consume('tiny-1', Buffer.from(CRED_A), '192.0.2.1', 1)).toBe('accepted');
  });

  it('refuses at and after the expiry and forgets the expired credential', () => {
    const book = new PlainCredentialBook();
    book.install(entry());
    expect(book.consume('tiny-1', CRED_A, '192.0.2.1', 10_000)).toBe('expired');
    expect(book.size).toBe(0);
  });

  it('the next knock replaces the credential: the old one is dead at once and returned', () => {
    const book = new PlainCredentialBook();
    book.install(entry(CRED_A));
    expect(book.install(entry(CRED_B, '192.0.2.9'))?.credential).toBe(CRED_A);
    expect(book.consume('tiny-1', CRED_A, '192.0.2.1', 1)).toBe('wrong-address');
    expect(book.consume('tiny-1', CRED_A, '192.0.2.9', 1)).toBe('wrong-credential');
    expect(book.consume('tiny-1', CRED_B, '192.0.2.9', 1)).toBe('accepted');
  });

  it('drops by address, by predicate, by expiry, by device; nextExpiry is the earliest held', () => {
    const book = new PlainCredentialBook();
    book.install({ deviceId: 'a', credential: CRED_A, address: '192.0.2.1', expiresAt: 300 });
    book.install({ deviceId: 'b', credential: CRED_A, address: '192.0.2.1', expiresAt: 100 });
    book.install({ deviceId: 'c', credential: CRED_A, address: '198.51.100.7', expiresAt: 200 });
    book.install({ deviceId: 'd', credential: CRED_A, address: '203.0.113.5', expiresAt: 400 });
    expect(book.nextExpiry()).toBe(100);
    expect(book.invalidateAt('192.0.2.1').map((e) => e.deviceId)).toEqual(['a', 'b']);
    expect(book.nextExpiry()).toBe(200);
    expect(book.expire(200).map((e) => e.deviceId)).toEqual(['c']);
    expect(book.invalidateWhere((e) => e.address.startsWith('203.')).map((e) => e.deviceId)).toEqual(['d']);
    expect(book.nextExpiry()).toBeUndefined();
    book.install({ deviceId: 'e', credential: CRED_A, address: '192.0.2.1', expiresAt: 100 });
    expect(book.has('e', 99)).toBe(true);
    expect(book.has('e', 100)).toBe(false);
    expect(book.invalidate('e')?.deviceId).toBe('e');
    expect(book.invalidate('e')).toBeUndefined();
  });
});

describe('PlainCredentialKeeper', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  function recording(): { installer: CredentialInstaller; calls: string[] } {
    const calls: string[] = [];
    return {
      calls,
      installer: {
        install: async (id, credential) => {
          calls.push(`install ${id} ${credential.slice(0, 1)}`);
        },
        withdraw: async (id, reason: WithdrawReason) => {
          calls.push(`withdraw ${id} ${reason}`);
        },
      },
    };
  }

  const grant = (address: string, prefixLength?: number): Grant => ({
    deviceId: 'tiny-1',
    address,
    family: 4,
    ...(prefixLength === undefined ? {} : { prefixLength }),
    access: [{ protocol: 'tcp', port: 1883 }],
    openedAt: 0,
    expiresAt: 30_000,
  });

  it('installs at the knock, withdraws when consumed, then refuses the same credential', async () => {
    const { installer, calls } = recording();
    const keeper = new PlainCredentialKeeper({ installer, clock: { now: () => 1 }, timers: globalTimers });
    await keeper.knockAccepted({
      deviceId: 'tiny-1',
      credential: CRED_A,
      address: '192.0.2.1',
      expiresAt: 30_000,
    });
    expect(keeper.has('tiny-1')).toBe(true);
    expect(keeper.consume('tiny-1', CRED_A, '192.0.2.1')).toBe('accepted');
    expect(keeper.consume('tiny-1', CRED_A, '192.0.2.1')).toBe('no-credential');
    await keeper.close();
    expect(calls).toEqual(['install tiny-1 a', 'withdraw tiny-1 consumed']);
  });

  it('a grant closing (host or prefix) kills the credentials of its addresses through the firewall wrapper', async () => {
    const { installer, calls } = recording();
    const keeper = new PlainCredentialKeeper({ installer, clock: { now: () => 1 }, timers: globalTimers });
    const revoked: Grant[][] = [];
    const firewall = closingCredentials(
      {
        allow: async () => undefined,
        revoke: async (grants) => void revoked.push([...grants]),
        close: async () => undefined,
      },
      keeper,
    );
    await keeper.knockAccepted({
      deviceId: 'tiny-1',
      credential: CRED_A,
      address: '192.0.2.1',
      expiresAt: 30_000,
    });
    await keeper.knockAccepted({
      deviceId: 'tiny-2',
      credential: CRED_B,
      address: '198.51.100.7',
      expiresAt: 30_000,
    });
    await firewall.revoke([grant('192.0.2.1')]);
    expect(keeper.consume('tiny-1', CRED_A, '192.0.2.1')).toBe('no-credential');
    await firewall.revoke([grant('198.51.100.0', 24)]);
    expect(keeper.consume('tiny-2', CRED_B, '198.51.100.7')).toBe('no-credential');
    await keeper.close();
    expect(revoked).toHaveLength(2);
    expect(calls).toEqual([
      'install tiny-1 a',
      'install tiny-2 b',
      'withdraw tiny-1 grant-closed',
      'withdraw tiny-2 grant-closed',
    ]);
  });

  it('the window ending withdraws the credential by its own timer', async () => {
    vi.useFakeTimers({ now: 0 });
    const { installer, calls } = recording();
    const keeper = new PlainCredentialKeeper({
      installer,
      clock: { now: () => Date.now() },
      timers: globalTimers,
    });
    await keeper.knockAccepted({
      deviceId: 'tiny-1',
      credential: CRED_A,
      address: '192.0.2.1',
      expiresAt: 5_000,
    });
    await vi.advanceTimersByTimeAsync(4_999);
    expect(keeper.has('tiny-1')).toBe(true);
    await vi.advanceTimersByTimeAsync(1);
    expect(keeper.has('tiny-1')).toBe(false);
    expect(calls).toEqual(['install tiny-1 a', 'withdraw tiny-1 expired']);
    await keeper.close();
  });

  it('broker calls of one device run in call order even when an install is slow; failures are reported', async () => {
    const calls: string[] = [];
    const errors: string[] = [];
    let release: () => void = () => undefined;
    const slow = new Promise<void>((resolve) => {
      release = resolve;
    });
    const keeper = new PlainCredentialKeeper({
      installer: {
        install: async (id) => {
          await slow;
          calls.push(`install ${id}`);
          throw new Error('broker unreachable');
        },
        withdraw: async (id, reason) => {
          calls.push(`withdraw ${id} ${reason}`);
        },
      },
      clock: { now: () => 1 },
      timers: globalTimers,
      onError: (id, error) => errors.push(`${id}: ${error.message}`),
    });
    const installing = keeper.knockAccepted({
      deviceId: 'tiny-1',
      credential: CRED_A,
      address: '192.0.2.1',
      expiresAt: 9e15,
    });
    keeper.invalidate('tiny-1');
    release();
    await installing;
    await keeper.close();
    expect(calls).toEqual(['install tiny-1', 'withdraw tiny-1 invalidated']);
    expect(errors).toEqual(['tiny-1: broker unreachable']);
    expect(errors.join('')).not.toContain(CRED_A);
  });
});
