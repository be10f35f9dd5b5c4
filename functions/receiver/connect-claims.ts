/**
 * Connect claims: which devices that knocked for a source address are still waiting to connect from it, so a rule
 * can close as soon as the last of them has its MQTT session (docs/scaling.md, "A rule lives until the session is
 * established"). The grant manager (grant-manager.ts) keeps one of these for every firewall.
 *
 * Contract:
 * - `knock(deviceId, address, until)` records (or refreshes) the claim of that device on that address: it waits to
 *   connect until `until` (ms, the end of that knock's window). A later knock only moves `until` forward.
 * - `release(deviceId, address, now)` is "the broker accepted a session of `deviceId` from `address`": it drops that
 *   device's claim on that address only, and answers `revoke: true` exactly when the device held a live claim and no
 *   other live claim on the address is left. A device without a live claim on the address (it never knocked from
 *   it, it already connected, its window ended) changes nothing and gets `revoke: false`: a device can never
 *   shorten another device's grant.
 * - `waiting(address, now)` lists the devices with a live claim on the address; `expire(now)` drops every claim
 *   whose window ended (also done lazily per address by `release` and `waiting`); `forget(address)` drops the
 *   address's claims (its rule was closed by other means).
 * - A claim is live while `now < until`. Size: one entry per (device, address) with a live window.
 * Pure, synchronous, no clock of its own (callers pass `now`). `InMemoryConnectClaimStore` below is this process's
 * `ConnectClaimStore` (functions/core/interfaces.ts) over it: local firewalls and a single receiver. Receivers
 * behind a load balancer share theirs in the grants table (functions/aws/dynamo-connect-claims.ts).
 */
import type { ConnectClaimRelease, ConnectClaimStore } from '../core/interfaces.ts';

export type ReleaseResult = ConnectClaimRelease;

export class ConnectClaims {
  /** address → device id → end of that device's window (ms). */
  readonly #byAddress = new Map<string, Map<string, number>>();

  knock(deviceId: string, address: string, until: number): void {
    let devices = this.#byAddress.get(address);
    if (devices === undefined) {
      devices = new Map();
      this.#byAddress.set(address, devices);
    }
    devices.set(deviceId, Math.max(devices.get(deviceId) ?? Number.NEGATIVE_INFINITY, until));
  }

  release(deviceId: string, address: string, now: number): ReleaseResult {
    const devices = this.#live(address, now);
    if (devices === undefined || !devices.has(deviceId)) {
      return { revoke: false, claimed: false, waiting: devices === undefined ? [] : [...devices.keys()] };
    }
    devices.delete(deviceId);
    if (devices.size === 0) this.#byAddress.delete(address);
    return { revoke: devices.size === 0, claimed: true, waiting: [...devices.keys()] };
  }

  waiting(address: string, now: number): string[] {
    return [...(this.#live(address, now)?.keys() ?? [])];
  }

  expire(now: number): void {
    for (const address of [...this.#byAddress.keys()]) this.#live(address, now);
  }

  forget(address: string): void {
    this.#byAddress.delete(address);
  }

  clear(): void {
    this.#byAddress.clear();
  }

  /** Claims (device, address) held, live or not yet purged. */
  get size(): number {
    let size = 0;
    for (const devices of this.#byAddress.values()) size += devices.size;
    return size;
  }

  /** The address's claims after dropping those whose window ended; undefined when none is left. */
  #live(address: string, now: number): Map<string, number> | undefined {
    const devices = this.#byAddress.get(address);
    if (devices === undefined) return undefined;
    for (const [deviceId, until] of devices) {
      if (until > now) continue;
      devices.delete(deviceId);
    }
    if (devices.size > 0) return devices;
    this.#byAddress.delete(address);
    return undefined;
  }
}

/**
 * The in-process `ConnectClaimStore`: every method acts on `ConnectClaims` when called (synchronously) and
 * returns a settled promise, so the grant manager's ordering is the same as with direct calls.
 */
export class InMemoryConnectClaimStore implements ConnectClaimStore {
  readonly #claims: ConnectClaims;

  constructor(claims: ConnectClaims = new ConnectClaims()) {
    this.#claims = claims;
  }

  knock(deviceId: string, target: string, until: number): Promise<void> {
    this.#claims.knock(deviceId, target, until);
    return Promise.resolve();
  }

  release(deviceId: string, target: string, now: number): Promise<ConnectClaimRelease> {
    return Promise.resolve(this.#claims.release(deviceId, target, now));
  }

  waiting(target: string, now: number): Promise<readonly string[]> {
    return Promise.resolve(this.#claims.waiting(target, now));
  }

  forget(target: string): void {
    this.#claims.forget(target);
  }
}
