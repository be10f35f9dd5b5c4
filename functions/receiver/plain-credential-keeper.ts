/**
 * Keeps the plain profile's one-time connect credentials live for exactly as long as they may be used
 * (docs/threat-model.md, "The plain profile"): the pure book (plain-credentials.ts) plus the one I/O step, the
 * broker's copy (`CredentialInstaller`: nothing for the embedded broker, which asks `consume` at CONNECT; a dynsec
 * password on Mosquitto).
 *
 * Contract:
 * - `knockAccepted(entry)` (the receiver accepted a BC1 knock of a plain device, before its grant opens) makes the
 *   entry the device's live credential, replacing the previous knock's, and installs it at the broker.
 * - The credential dies, and is withdrawn at the broker, at the first of: `consume` accepting it (the first CONNECT
 *   that uses it), `grantsClosed` for its address (any grant of that address closed: expiry, operator, closed on
 *   connect, address cap, shutdown; not one whose expiry is before the credential's window end: that grant closed
 *   before the credential's knock extended it), the end of its window (a timer at the book's next expiry), `invalidate`, the
 *   next knock of the device (replaced), `close()`.
 * - `withdraw` says why (`WithdrawReason`): an installer whose broker cannot withdraw without harm (Mosquitto
 *   2.0.11 closes every session of a client whose password changes) may skip some; the book forgets the credential
 *   whatever the installer does, so `consume` never accepts a dead one.
 * - `holdWhileSessionLives` (Mosquitto 2.0.11, which ends a client's open sessions on every password change, so a
 *   withdraw would end the session the credential opened; docs/threat-model.md, "The plain profile"): the broker's
 *   session signal (functions/broker/mosquitto-session-watcher.ts) enters through `sessionConnected` and
 *   `sessionEnded`. A connect of the device (username = device id) from the address its live credential is bound
 *   to, once that credential's install has succeeded, holds the credential: it leaves the book (so `grantsClosed`,
 *   the window's timer and `consume` no longer touch it) and lives until the first of: `sessionEnded` of that
 *   session's client id, a second session of the device (a credential opens one session: both end), the device's
 *   next knock (the new credential replaces it), `invalidate` (disabled, removed), `close()`. Without the option (the
 *   embedded broker, which consumes at CONNECT) both calls do nothing. A connect from another address, or before the
 *   install was confirmed (a session of the previous credential, which the install ends), holds nothing.
 * - Broker calls for one device run one at a time, in call order, so a withdraw never overtakes the next install.
 *   A failing installer is reported through `onError` (device id and message, never the credential) and never
 *   throws out of this module.
 * - Nothing here logs, audits or emits the credential.
 */
import { prefixContains } from '../core/grant-prefix.ts';
import type { Clock, Firewall, Grant, Timers } from '../core/interfaces.ts';
import { type CredentialCheck, type LiveCredential, PlainCredentialBook } from './plain-credentials.ts';
import { canonicalSource } from './source-address.ts';

/** Why a credential died (an installer may act on some only: see the Mosquitto one, broker-dynsec.ts). */
export type WithdrawReason =
  | 'consumed'
  | 'grant-closed'
  | 'expired'
  | 'invalidated'
  | 'shutdown'
  /** The session that held it ended (holdWhileSessionLives), or a second session used it. */
  | 'session-ended';

/** The broker's side of a credential. */
export interface CredentialInstaller {
  /** From now on the broker accepts `credential` as the device's CONNECT password (the previous one dies). */
  install(deviceId: string, credential: string): Promise<void>;
  /** The device's credential is dead: the broker must refuse it (e.g. overwrite the password with a random one). */
  withdraw(deviceId: string, reason: WithdrawReason): Promise<void>;
}

const MAX_TIMER_MS = 2_147_483_647;

/** The embedded broker's installer: its CONNECT hook asks the book itself. */
export const inBookOnly: CredentialInstaller = Object.freeze({
  install: async () => undefined,
  withdraw: async () => undefined,
});

export interface PlainCredentialKeeperOptions {
  readonly installer: CredentialInstaller;
  readonly clock: Clock;
  readonly timers: Timers;
  /** An installer call failed (device id, reason; never the credential). */
  readonly onError?: (deviceId: string, error: Error) => void;
  /** A session opened with the credential keeps it until that session ends (see the contract). @default false */
  readonly holdWhileSessionLives?: boolean;
}

/** A broker session as the session signal reports it (mosquitto-session-log.ts `SessionConnected`). */
export interface BrokerSession {
  readonly clientId: string;
  readonly username: string;
  readonly address: string;
}

export type SessionHold = 'held' | 'ended-second-session' | 'ignored';

export class PlainCredentialKeeper {
  readonly #book = new PlainCredentialBook();
  readonly #options: PlainCredentialKeeperOptions;
  readonly #chains = new Map<string, Promise<boolean>>();
  /** Devices whose live (book) credential is confirmed installed at the broker. */
  readonly #installed = new Set<string>();
  /** Held credentials: device id -> the client id of the session it opened. */
  readonly #held = new Map<string, string>();
  #timer: unknown;
  #timerAt: number | undefined;

  constructor(options: PlainCredentialKeeperOptions) {
    this.#options = options;
  }

  async knockAccepted(entry: LiveCredential): Promise<void> {
    const { deviceId } = entry;
    this.#book.install(entry);
    this.#installed.delete(deviceId);
    this.#held.delete(deviceId); // its session ends with the install (Mosquitto), the new credential replaces it
    this.#rearm();
    const installed = await this.#broker(deviceId, (installer) =>
      installer.install(deviceId, entry.credential),
    );
    // Confirmed only if this knock is still the device's live one (no later knock, withdraw or hold meanwhile).
    if (installed && this.#book.has(deviceId, Number.NEGATIVE_INFINITY) && !this.#chains.has(deviceId)) {
      this.#installed.add(deviceId);
    }
  }

  /** The broker accepted a session (see the contract, `holdWhileSessionLives`). */
  sessionConnected(session: BrokerSession): SessionHold {
    if (this.#options.holdWhileSessionLives !== true) return 'ignored';
    const deviceId = session.username;
    const heldBy = this.#held.get(deviceId);
    if (heldBy !== undefined) {
      if (heldBy === session.clientId) return 'held';
      this.#held.delete(deviceId);
      this.#withdraw([deviceId], 'session-ended');
      return 'ended-second-session';
    }
    if (!this.#installed.has(deviceId) || !this.#book.has(deviceId, this.#options.clock.now()))
      return 'ignored';
    const address = canonicalSource({
      address: session.address,
      family: session.address.includes(':') ? 6 : 4,
      port: 0,
    }).address;
    if (this.#book.boundAddress(deviceId) !== address) return 'ignored';
    this.#book.invalidate(deviceId);
    this.#installed.delete(deviceId);
    this.#held.set(deviceId, session.clientId);
    this.#rearm();
    return 'held';
  }

  /** The broker session `clientId` ended: a credential it held dies. */
  sessionEnded(clientId: string, username?: string): void {
    for (const [deviceId, heldBy] of this.#held) {
      if (heldBy !== clientId || (username !== undefined && username !== deviceId)) continue;
      this.#held.delete(deviceId);
      this.#withdraw([deviceId], 'session-ended');
    }
  }

  /** Whether the device's credential is held by a live session. */
  isHeld(deviceId: string): boolean {
    return this.#held.has(deviceId);
  }

  /** The CONNECT check (see plain-credentials.ts `consume`); an accepted credential is withdrawn at once. */
  consume(deviceId: string, presented: string | Uint8Array | undefined, address: string): CredentialCheck {
    const result = this.#book.consume(deviceId, presented, address, this.#options.clock.now());
    if (result === 'accepted') this.#withdraw([deviceId], 'consumed');
    if (result === 'expired') this.#withdraw([deviceId], 'expired');
    return result;
  }

  /**
   * Grants closed: every credential bound to an address they covered dies, unless its window ends after the
   * closed grant's: that credential's knock came after the grant's last extension (a close that was under way
   * when the device knocked again, e.g. closed on connect of its previous session), and its own grant follows.
   */
  grantsClosed(grants: readonly Grant[]): void {
    const dropped: string[] = [];
    for (const grant of grants) {
      const { prefixLength } = grant;
      const covered = (entry: LiveCredential) => entry.expiresAt <= grant.expiresAt;
      const closed =
        prefixLength === undefined
          ? this.#book.invalidateWhere((entry) => entry.address === grant.address && covered(entry))
          : this.#book.invalidateWhere(
              (entry) => prefixContains(grant.address, prefixLength, entry.address) && covered(entry),
            );
      dropped.push(...closed.map((entry) => entry.deviceId));
    }
    this.#withdraw(dropped, 'grant-closed');
  }

  invalidate(deviceId: string): void {
    const held = this.#held.delete(deviceId);
    if (this.#book.invalidate(deviceId) !== undefined || held) this.#withdraw([deviceId], 'invalidated');
  }

  /** A live credential: in the book, or held by its session. */
  has(deviceId: string): boolean {
    return this.#held.has(deviceId) || this.#book.has(deviceId, this.#options.clock.now());
  }

  /** Withdraws every live credential and stops the timer; resolves when the broker calls are done. */
  async close(): Promise<void> {
    if (this.#timer !== undefined) this.#options.timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    const held = [...this.#held.keys()];
    this.#held.clear();
    this.#withdraw(
      [...this.#book.expire(Number.POSITIVE_INFINITY).map((entry) => entry.deviceId), ...held],
      'shutdown',
    );
    await Promise.all([...this.#chains.values()]);
  }

  #withdraw(deviceIds: readonly string[], reason: WithdrawReason): void {
    for (const deviceId of deviceIds) {
      this.#installed.delete(deviceId);
      void this.#broker(deviceId, (installer) => installer.withdraw(deviceId, reason));
    }
    this.#rearm();
  }

  /** Resolves true when the call succeeded. */
  #broker(deviceId: string, call: (installer: CredentialInstaller) => Promise<void>): Promise<boolean> {
    const previous = this.#chains.get(deviceId) ?? Promise.resolve(true);
    const run = previous.then(() =>
      call(this.#options.installer).then(
        () => true,
        (error: unknown) => {
          this.#options.onError?.(deviceId, error instanceof Error ? error : new Error(String(error)));
          return false;
        },
      ),
    );
    this.#chains.set(deviceId, run);
    void run.then(() => {
      if (this.#chains.get(deviceId) === run) this.#chains.delete(deviceId);
    });
    return run;
  }

  /** One timer, at the book's next expiry. */
  #rearm(): void {
    const next = this.#book.nextExpiry();
    if (next === this.#timerAt) return;
    if (this.#timer !== undefined) this.#options.timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = next;
    if (next === undefined) return;
    this.#timer = this.#options.timers.setTimeout(
      () => {
        this.#timer = undefined;
        this.#timerAt = undefined;
        this.#withdraw(
          this.#book.expire(this.#options.clock.now()).map((entry) => entry.deviceId),
          'expired',
        );
      },
      // Node timers hold at most 2^31-1 ms; an earlier wake-up just re-arms (expire drops nothing yet).
      Math.min(MAX_TIMER_MS, Math.max(0, next - this.#options.clock.now())),
    );
  }
}

/**
 * `firewall` with every revoke also reported to the keeper (after the firewall closed the grants): the one place
 * every grant closing passes (expiry, operator, closed on connect, address cap, shutdown), so a credential never
 * outlives its grant.
 */
export function closingCredentials(
  firewall: Firewall & { close(): Promise<void> },
  keeper: PlainCredentialKeeper,
): Firewall & { close(): Promise<void> } {
  return Object.freeze({
    allow: (grants: readonly Grant[]) => firewall.allow(grants),
    async revoke(grants: readonly Grant[]) {
      try {
        await firewall.revoke(grants);
      } finally {
        keeper.grantsClosed(grants);
      }
    },
    close: () => firewall.close(),
  });
}
