/**
 * The live one-time connect credentials of the plain profile (docs/threat-model.md, "The plain profile";
 * docs/protocol.md, "Plain profile: the connect credential"): at most one per device, bound to the address the knock
 * came from and to the end of that knock's window. The receiver installs one when it accepts a BC1 knock from a
 * plain device; the broker's CONNECT check asks `consume`. Pure, synchronous, no clock of its own (callers pass
 * `now`).
 *
 * Contract:
 * - `install(entry)` makes `entry` the device's live credential; the one it replaces (the previous knock's) is dead
 *   at once and is returned, so an installer can overwrite it at the broker.
 * - `consume(deviceId, presented, address, now)` is the CONNECT check: 'accepted' exactly when the device has a live
 *   credential (`now < expiresAt`), `address` is the one it is bound to (canonical text) and `presented` matches in
 *   constant time (connect-credential.ts `credentialMatches`). An accepted credential is removed (one session per
 *   knock). A refusal changes nothing, except that an expired credential is dropped.
 * - `invalidate(deviceId)` drops the device's credential (the session was established elsewhere, the device was
 *   disabled); `invalidateAt(address)` drops every credential bound to that address (its grant closed),
 *   `invalidateWhere(match)` those `match` selects, and `expire(now)` every expired one; each returns the dropped
 *   entries.
 * - `boundAddress(deviceId)` is the address the device's credential is bound to (a broker's session signal checks a
 *   session against it).
 * - `nextExpiry()` is the earliest `expiresAt` held (undefined when empty), for an installer's timer.
 * - The credential text is never part of anything this module returns to be logged: refusals are reason codes.
 */
import { credentialMatches } from '../core/connect-credential.ts';

export interface LiveCredential {
  readonly deviceId: string;
  /** The one-time password (connect-credential.ts). Never logged. */
  readonly credential: string;
  /** The knock's observed source address, canonical text: the only address the credential is good from. */
  readonly address: string;
  /** Milliseconds since the Unix epoch: the end of the knock's window. */
  readonly expiresAt: number;
}

export type CredentialCheck = 'accepted' | 'no-credential' | 'expired' | 'wrong-address' | 'wrong-credential';

export class PlainCredentialBook {
  readonly #byDevice = new Map<string, LiveCredential>();

  install(entry: LiveCredential): LiveCredential | undefined {
    const previous = this.#byDevice.get(entry.deviceId);
    this.#byDevice.set(entry.deviceId, Object.freeze({ ...entry }));
    return previous;
  }

  consume(
    deviceId: string,
    presented: string | Uint8Array | undefined,
    address: string,
    now: number,
  ): CredentialCheck {
    const live = this.#byDevice.get(deviceId);
    if (live === undefined) return 'no-credential';
    if (now >= live.expiresAt) {
      this.#byDevice.delete(deviceId);
      return 'expired';
    }
    if (address !== live.address) return 'wrong-address';
    if (!credentialMatches(live.credential, presented)) return 'wrong-credential';
    this.#byDevice.delete(deviceId);
    return 'accepted';
  }

  /** Whether the device holds a live credential (for tests and status; never the credential itself). */
  has(deviceId: string, now: number): boolean {
    const live = this.#byDevice.get(deviceId);
    return live !== undefined && now < live.expiresAt;
  }

  /** The address the device's credential is bound to (expired or not), or undefined; never the credential. */
  boundAddress(deviceId: string): string | undefined {
    return this.#byDevice.get(deviceId)?.address;
  }

  invalidate(deviceId: string): LiveCredential | undefined {
    const live = this.#byDevice.get(deviceId);
    this.#byDevice.delete(deviceId);
    return live;
  }

  invalidateAt(address: string): LiveCredential[] {
    return this.#dropWhere((entry) => entry.address === address);
  }

  /** Drops every credential whose binding `match` selects (e.g. the addresses of a closed prefix grant). */
  invalidateWhere(match: (entry: LiveCredential) => boolean): LiveCredential[] {
    return this.#dropWhere(match);
  }

  expire(now: number): LiveCredential[] {
    return this.#dropWhere((entry) => now >= entry.expiresAt);
  }

  nextExpiry(): number | undefined {
    let next: number | undefined;
    for (const entry of this.#byDevice.values()) {
      if (next === undefined || entry.expiresAt < next) next = entry.expiresAt;
    }
    return next;
  }

  get size(): number {
    return this.#byDevice.size;
  }

  #dropWhere(match: (entry: LiveCredential) => boolean): LiveCredential[] {
    const dropped: LiveCredential[] = [];
    for (const [deviceId, entry] of this.#byDevice) {
      if (!match(entry)) continue;
      this.#byDevice.delete(deviceId);
      dropped.push(entry);
    }
    return dropped;
  }
}
