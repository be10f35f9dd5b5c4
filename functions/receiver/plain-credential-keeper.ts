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
 *   connect, address cap, shutdown), the end of its window (a timer at the book's next expiry), `invalidate`, the
 *   next knock of the device (replaced), `close()`.
 * - `withdraw` says why (`WithdrawReason`): an installer whose broker cannot withdraw without harm (Mosquitto
 *   2.0.11 closes every session of a client whose password changes) may skip some; the book forgets the credential
 *   whatever the installer does, so `consume` never accepts a dead one.
 * - Broker calls for one device run one at a time, in call order, so a withdraw never overtakes the next install.
 *   A failing installer is reported through `onError` (device id and message, never the credential) and never
 *   throws out of this module.
 * - Nothing here logs, audits or emits the credential.
 */
import { prefixContains } from '../core/grant-prefix.ts';
import type { Clock, Firewall, Grant, Timers } from '../core/interfaces.ts';
import { type CredentialCheck, type LiveCredential, PlainCredentialBook } from './plain-credentials.ts';

/** Why a credential died (an installer may act on some only: see the Mosquitto one, broker-dynsec.ts). */
export type WithdrawReason = 'consumed' | 'grant-closed' | 'expired' | 'invalidated' | 'shutdown';

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
}

export class PlainCredentialKeeper {
  readonly #book = new PlainCredentialBook();
  readonly #options: PlainCredentialKeeperOptions;
  readonly #chains = new Map<string, Promise<void>>();
  #timer: unknown;
  #timerAt: number | undefined;

  constructor(options: PlainCredentialKeeperOptions) {
    this.#options = options;
  }

  async knockAccepted(entry: LiveCredential): Promise<void> {
    this.#book.install(entry);
    this.#rearm();
    await this.#broker(entry.deviceId, (installer) => installer.install(entry.deviceId, entry.credential));
  }

  /** The CONNECT check (see plain-credentials.ts `consume`); an accepted credential is withdrawn at once. */
  consume(deviceId: string, presented: string | Uint8Array | undefined, address: string): CredentialCheck {
    const result = this.#book.consume(deviceId, presented, address, this.#options.clock.now());
    if (result === 'accepted') this.#withdraw([deviceId], 'consumed');
    if (result === 'expired') this.#withdraw([deviceId], 'expired');
    return result;
  }

  /** Grants closed: every credential bound to an address they covered dies. */
  grantsClosed(grants: readonly Grant[]): void {
    const dropped: string[] = [];
    for (const grant of grants) {
      const { prefixLength } = grant;
      const closed =
        prefixLength === undefined
          ? this.#book.invalidateAt(grant.address)
          : this.#book.invalidateWhere((entry) => prefixContains(grant.address, prefixLength, entry.address));
      dropped.push(...closed.map((entry) => entry.deviceId));
    }
    this.#withdraw(dropped, 'grant-closed');
  }

  invalidate(deviceId: string): void {
    if (this.#book.invalidate(deviceId) !== undefined) this.#withdraw([deviceId], 'invalidated');
  }

  has(deviceId: string): boolean {
    return this.#book.has(deviceId, this.#options.clock.now());
  }

  /** Withdraws every live credential and stops the timer; resolves when the broker calls are done. */
  async close(): Promise<void> {
    if (this.#timer !== undefined) this.#options.timers.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#withdraw(
      this.#book.expire(Number.POSITIVE_INFINITY).map((entry) => entry.deviceId),
      'shutdown',
    );
    await Promise.all([...this.#chains.values()]);
  }

  #withdraw(deviceIds: readonly string[], reason: WithdrawReason): void {
    for (const deviceId of deviceIds) {
      void this.#broker(deviceId, (installer) => installer.withdraw(deviceId, reason));
    }
    this.#rearm();
  }

  #broker(deviceId: string, call: (installer: CredentialInstaller) => Promise<void>): Promise<void> {
    const previous = this.#chains.get(deviceId) ?? Promise.resolve();
    const run = previous.then(() =>
      call(this.#options.installer).catch((error: unknown) => {
        this.#options.onError?.(deviceId, error instanceof Error ? error : new Error(String(error)));
      }),
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
