/**
 * The session signal's entry (functions/receiver/session-signal.ts) with the real credential keeper on the virtual
 * clock and a grant manager stand-in that records its calls: the keeper hears a connect before the grant manager
 * (so the grant's close that follows finds the credential held), a disconnect reaches the keeper only, and a
 * failing `sessionEstablished` is reported, never thrown.
 */
import { describe, expect, it } from 'vitest';
import { PlainCredentialKeeper } from '../../../functions/receiver/plain-credential-keeper.ts';
import { sessionSignalHandler } from '../../../functions/receiver/session-signal.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { T0 } from './helpers.ts';

describe('sessionSignalHandler', () => {
  it('GIVEN a connect WHEN handled THEN the keeper holds the credential before the grant manager is told; a disconnect withdraws it', async () => {
    const time = new VirtualTime(T0);
    const calls: string[] = [];
    const keeper = new PlainCredentialKeeper({
      installer: {
        install: async (deviceId) => void calls.push(`install ${deviceId}`),
        withdraw: async (deviceId) => void calls.push(`withdraw ${deviceId}`),
      },
      clock: time,
      timers: time,
      holdWhileSessionLives: true,
    });
    await keeper.knockAccepted({
      deviceId: 'plain-1',
      credential: 'c'.repeat(64),
      address: '2001:db8::7',
      expiresAt: T0 + 30_000,
    });
    const onEvent = sessionSignalHandler({
      grants: {
        sessionEstablished: async (deviceId, address) => {
          calls.push(`established ${deviceId} ${address} held=${keeper.isHeld(deviceId)}`);
          return [];
        },
      },
      keeper,
    });
    onEvent({ kind: 'connected', clientId: 'c1', username: 'plain-1', address: '2001:db8:0::7' });
    onEvent({ kind: 'disconnected', clientId: 'c1', username: 'plain-1' });
    await time.advance(1);
    expect(calls).toEqual([
      'install plain-1',
      'established plain-1 2001:db8:0::7 held=true',
      'withdraw plain-1',
    ]);
  });

  it('GIVEN a failing grant manager WHEN a connect is handled THEN the failure is reported, not thrown', async () => {
    const errors: string[] = [];
    const onEvent = sessionSignalHandler({
      grants: {
        sessionEstablished: async () => {
          throw new Error('grants table down');
        },
      },
      onError: (deviceId, error) => errors.push(`${deviceId}: ${error.message}`),
    });
    expect(() =>
      onEvent({ kind: 'connected', clientId: 'c1', username: 'dev-1', address: '203.0.113.7' }),
    ).not.toThrow();
    onEvent({ kind: 'disconnected', clientId: 'c1' });
    await new Promise((resolve) => setImmediate(resolve));
    expect(errors).toEqual(['dev-1: grants table down']);
  });
});
