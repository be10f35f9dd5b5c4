/**
 * The plain profile's credential keeper (functions/receiver/plain-credential-keeper.ts) with a recording installer
 * on the virtual clock: without `holdWhileSessionLives` (the embedded broker) the session signal changes nothing
 * and the credential dies at grant close and window end as before; with it (Mosquitto 2.0.11) a session opened
 * from the credential's address holds the credential past both, until the session ends, a second session comes
 * up, the device knocks again or is invalidated.
 */
import { describe, expect, it } from 'vitest';
import type { Grant } from '../../../functions/core/interfaces.ts';
import {
  type CredentialInstaller,
  PlainCredentialKeeper,
} from '../../../functions/receiver/plain-credential-keeper.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { T0, TCP_1883 } from './helpers.ts';

const WINDOW_MS = 30_000;

function setup(holdWhileSessionLives: boolean) {
  const time = new VirtualTime(T0);
  const calls: string[] = [];
  const installer: CredentialInstaller = {
    install: async (deviceId) => void calls.push(`install ${deviceId}`),
    withdraw: async (deviceId) => void calls.push(`withdraw ${deviceId}`),
  };
  const keeper = new PlainCredentialKeeper({ installer, clock: time, timers: time, holdWhileSessionLives });
  const knock = (address = '203.0.113.7', deviceId = 'plain-1') =>
    keeper.knockAccepted({
      deviceId,
      credential: 'c'.repeat(64),
      address,
      expiresAt: time.now() + WINDOW_MS,
    });
  const grant = (address = '203.0.113.7'): Grant => ({
    deviceId: 'plain-1',
    address,
    family: 4,
    access: [TCP_1883],
    openedAt: time.now(),
    expiresAt: time.now() + WINDOW_MS,
  });
  const session = (clientId = 'cid-1', address = '203.0.113.7') => ({
    clientId,
    username: 'plain-1',
    address,
  });
  return { time, calls, keeper, knock, grant, session };
}

describe('PlainCredentialKeeper without holdWhileSessionLives (the embedded broker)', () => {
  it('GIVEN a session signal WHEN the grant closes THEN the credential is withdrawn as before', async () => {
    const { calls, keeper, knock, grant, session } = setup(false);
    await knock();
    expect(keeper.sessionConnected(session())).toBe('ignored');
    keeper.grantsClosed([grant()]);
    await keeper.close();
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
    expect(keeper.isHeld('plain-1')).toBe(false);
  });
});

describe('PlainCredentialKeeper: which grant closes a credential', () => {
  it('GIVEN a knock after the grant was last extended WHEN that older grant closes THEN the new credential lives; its own grant closing withdraws it', async () => {
    const { time, calls, keeper, knock, grant } = setup(false);
    const older = grant(); // ends at T0 + 30 s
    await time.advance(1000);
    await knock(); // its window ends at T0 + 31 s: the knock's own grant will end then too
    keeper.grantsClosed([older]); // a close under way when the device knocked again (closed on connect)
    await time.advance(0);
    expect(calls).toEqual(['install plain-1']);
    expect(keeper.has('plain-1')).toBe(true);
    keeper.grantsClosed([grant()]);
    await keeper.close();
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
    expect(keeper.has('plain-1')).toBe(false);
  });
});

describe('PlainCredentialKeeper with holdWhileSessionLives (Mosquitto)', () => {
  it('GIVEN a session from the bound address WHEN the grant closes and the window ends THEN nothing is withdrawn until the session ends', async () => {
    const { time, calls, keeper, knock, grant, session } = setup(true);
    await knock();
    expect(keeper.sessionConnected(session())).toBe('held');
    keeper.grantsClosed([grant()]);
    await time.advance(WINDOW_MS * 10);
    expect(calls).toEqual(['install plain-1']);
    expect(keeper.has('plain-1')).toBe(true);
    keeper.sessionEnded('another-client', 'plain-1');
    expect(keeper.isHeld('plain-1')).toBe(true);
    keeper.sessionEnded('cid-1', 'plain-1');
    await time.advance(1);
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
    expect(keeper.has('plain-1')).toBe(false);
  });

  it('GIVEN no session WHEN the window ends THEN the credential is withdrawn at the window end as today', async () => {
    const { time, calls, keeper, knock } = setup(true);
    await knock();
    await time.advance(WINDOW_MS - 1);
    expect(calls).toEqual(['install plain-1']);
    await time.advance(1);
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
    // A session reported after the credential died holds nothing.
    expect(keeper.sessionConnected({ clientId: 'late', username: 'plain-1', address: '203.0.113.7' })).toBe(
      'ignored',
    );
  });

  it('GIVEN a session from another address, or of another device WHEN reported THEN it holds nothing', async () => {
    const { calls, keeper, knock, grant, session } = setup(true);
    await knock();
    expect(keeper.sessionConnected(session('cid-x', '198.51.100.9'))).toBe('ignored');
    expect(keeper.sessionConnected({ clientId: 'cid-y', username: 'plain-2', address: '203.0.113.7' })).toBe(
      'ignored',
    );
    keeper.grantsClosed([grant()]);
    await keeper.close();
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
  });

  it('GIVEN a held credential WHEN a second session of the device comes up THEN the credential is withdrawn (one session per credential)', async () => {
    const { time, calls, keeper, knock, session } = setup(true);
    await knock();
    expect(keeper.sessionConnected(session('cid-1'))).toBe('held');
    expect(keeper.sessionConnected(session('cid-1'))).toBe('held');
    expect(keeper.sessionConnected(session('cid-2'))).toBe('ended-second-session');
    await time.advance(1);
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
    expect(keeper.isHeld('plain-1')).toBe(false);
  });

  it('GIVEN a held credential WHEN the device knocks again THEN the new credential replaces it and the old session no longer holds', async () => {
    const { time, calls, keeper, knock, grant, session } = setup(true);
    await knock();
    keeper.sessionConnected(session('cid-1'));
    await knock();
    expect(keeper.isHeld('plain-1')).toBe(false);
    keeper.sessionEnded('cid-1', 'plain-1'); // the install ended the old session: nothing to withdraw for it
    keeper.grantsClosed([grant()]);
    await time.advance(1);
    expect(calls).toEqual(['install plain-1', 'install plain-1', 'withdraw plain-1']);
  });

  it('GIVEN a held credential WHEN the device is invalidated or the keeper closes THEN it is withdrawn', async () => {
    const { time, calls, keeper, knock, session } = setup(true);
    await knock();
    keeper.sessionConnected(session());
    keeper.invalidate('plain-1');
    await time.advance(1);
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1']);
    await knock();
    keeper.sessionConnected(session('cid-3'));
    await keeper.close();
    expect(calls).toEqual(['install plain-1', 'withdraw plain-1', 'install plain-1', 'withdraw plain-1']);
  });

  it('GIVEN an install that failed WHEN a session is reported THEN it holds nothing', async () => {
    const time = new VirtualTime(T0);
    const errors: string[] = [];
    const keeper = new PlainCredentialKeeper({
      installer: {
        install: async () => {
          throw new Error('no session');
        },
        withdraw: async () => undefined,
      },
      clock: time,
      timers: time,
      holdWhileSessionLives: true,
      onError: (deviceId, error) => errors.push(`${deviceId}: ${error.message}`),
    });
    await keeper.knockAccepted({
      deviceId: 'plain-1',
      credential: 'c'.repeat(64),
      address: '203.0.113.7',
      expiresAt: T0 + WINDOW_MS,
    });
    expect(errors).toEqual(['plain-1: no session']);
    expect(keeper.sessionConnected({ clientId: 'c', username: 'plain-1', address: '203.0.113.7' })).toBe(
      'ignored',
    );
    await keeper.close();
  });
});
