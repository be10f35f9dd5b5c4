/**
 * The plain profile's credentials at a Mosquitto broker with the dynamic-security plugin (docs/fleet.md, "Plain
 * devices on AWS"): the broker's side of the receiver's credential keeper (functions/receiver/
 * plain-credential-keeper.ts `CredentialInstaller`), as dynsec passwords of the device's client.
 *
 * Contract:
 * - `install(deviceId, credential)` sets the device client's password to the knock's one-time credential
 *   (connect-credential.ts), so the plain listener admits `username = deviceId` with it.
 * - `withdraw(deviceId)` overwrites it with a fresh random 32-byte value (hex) that nobody ever learns: the
 *   credential is refused from then on. Nothing can clear a dynsec password in 2.0.11; an unknown one is as good.
 * - Either rejects with the admin session's error (no session, the plugin refused: e.g. the device is not yet
 *   enrolled at the broker), except that `withdraw` of a client the plugin no longer has (`Client not found`: the
 *   device was removed, which ended its session) resolves: there is no password left to withdraw. Errors never carry the password: the command text is never part of a message.
 * - Mosquitto 2.0.11 disconnects the client's open sessions on every password change, so installing a credential
 *   ends the device's previous session, and withdrawing it ends the session that used it.
 */
import { randomBytes } from 'node:crypto';
import type { DynsecCommand, DynsecResponse } from './dynsec-commands.ts';
import { setClientPassword } from './dynsec-commands.ts';

export interface DynsecSender {
  send(commands: readonly DynsecCommand[]): Promise<readonly DynsecResponse[]>;
}

/** Bytes of the withdrawn password's random value. */
export const WITHDRAWN_PASSWORD_BYTES = 32;

export interface DynsecCredentialInstaller {
  install(deviceId: string, credential: string): Promise<void>;
  withdraw(deviceId: string): Promise<void>;
}

export function dynsecCredentialInstaller(admin: DynsecSender): DynsecCredentialInstaller {
  return Object.freeze({
    async install(deviceId: string, credential: string): Promise<void> {
      await admin.send([setClientPassword(deviceId, credential)]);
    },
    async withdraw(deviceId: string): Promise<void> {
      try {
        await admin.send([
          setClientPassword(deviceId, randomBytes(WITHDRAWN_PASSWORD_BYTES).toString('hex')),
        ]);
      } catch (error) {
        if (!clientGone(error)) throw error;
      }
    },
  });
}

/** The plugin's answer for a client it does not have (dynsec-admin.ts `DynsecError.failures`). */
const CLIENT_NOT_FOUND = 'Client not found';

function clientGone(error: unknown): boolean {
  const failures = (error as { failures?: readonly { error: string }[] } | undefined)?.failures;
  return failures !== undefined && failures.length > 0 && failures.every((f) => f.error === CLIENT_NOT_FOUND);
}
