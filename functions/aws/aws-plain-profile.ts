/**
 * The plain profile on the AWS receiver (docs/fleet.md, "Plain devices on AWS"; docs/threat-model.md, "The plain
 * profile"): the receiver's credential keeper (functions/receiver/plain-credential-keeper.ts) installing each plain
 * device's one-time connect credential as its dynamic-security password at the broker, over the admin session every
 * receiver already holds (broker-sync.ts), and the firewall seen by the grant manager, which tells the keeper when
 * grants close.
 *
 * Contract:
 * - `keeper.knockAccepted` (called by the receiver for an accepted BC1 knock of a plain device, before its grant
 *   opens) sets the password; it is replaced by a random value when the device's grant closes (window end, revoke,
 *   shutdown), when its knock's window ends, or when the device knocks again (the new credential replaces it).
 * - Mosquitto 2.0.11 ends a client's sessions whenever its password changes, so the keeper holds the credential
 *   while the session it opened lives (`holdWhileSessionLives`): the receiver feeds it the broker's session signal
 *   (receiver-main.ts, functions/broker/mosquitto-session-watcher.ts: `keeper.sessionConnected` before the grant
 *   manager's `sessionEstablished`, `keeper.sessionEnded`), and the password is replaced when that session ends,
 *   at the device's next knock, or when the device is disabled or removed (the broker ends the session, the signal
 *   reports it). A session that never comes up leaves the rules above as they were.
 * - `firewall(inner)` is `inner` whose `revoke` first tells the keeper (grantsClosed), then closes the rules.
 * - A failed password change is logged (`warn`, the device id and the reason, never the credential) and counted as
 *   `plain.credential.failed`; the grant still opens (the device then cannot log in: fail closed).
 * - Several receivers: each has its own keeper and admin session, and the broker has one client per device, so the
 *   last password set wins: a knock through another receiver replaces the credential, and the receiver that took an
 *   earlier knock overwrites it when that knock's window ends.
 * - `close()` withdraws every live credential and waits for the broker calls. Nothing here logs the credential.
 */
import type { DynsecSender } from '../broker/dynsec-credentials.ts';
import { dynsecCredentialInstaller } from '../broker/dynsec-credentials.ts';
import type { Clock, Firewall, Timers } from '../core/interfaces.ts';
import type { Counters } from '../receiver/counters.ts';
import { PlainCredentialKeeper } from '../receiver/plain-credential-keeper.ts';

/** The receiver counter of failed password changes (`RunningReceiver.counters()`; not an EMF metric). */
export const PLAIN_CREDENTIAL_FAILED_COUNTER = 'plain.credential.failed';

export interface AwsPlainProfileOptions {
  readonly admin: DynsecSender;
  readonly clock: Clock;
  readonly timers: Timers;
  readonly counters: Counters;
  readonly log: (level: 'info' | 'warn', message: string) => void;
}

export interface AwsPlainProfile {
  readonly keeper: PlainCredentialKeeper;
  firewall(inner: Firewall): Firewall;
  close(): Promise<void>;
}

export function startAwsPlainProfile(options: AwsPlainProfileOptions): AwsPlainProfile {
  const keeper = new PlainCredentialKeeper({
    installer: dynsecCredentialInstaller(options.admin),
    clock: options.clock,
    timers: options.timers,
    holdWhileSessionLives: true,
    onError: (deviceId, error) => {
      options.counters.increment(PLAIN_CREDENTIAL_FAILED_COUNTER);
      options.log(
        'warn',
        `plain device ${deviceId}: its broker password could not be changed (${error.message}); it cannot log ` +
          'in until a later knock succeeds',
      );
    },
  });
  return {
    keeper,
    firewall(inner) {
      return {
        allow: (grants) => inner.allow(grants),
        async revoke(grants) {
          keeper.grantsClosed(grants);
          await inner.revoke(grants);
        },
      };
    },
    close: () => keeper.close(),
  };
}
