/**
 * The grant manager: turns accepted knocks into firewall grants and takes them away again [BC1-9].
 *
 * Contract:
 * - One grant per (source address, access set). `open` for a pair that is already open extends it: the new
 *   expiry is max(current expiry, now + seconds), `Firewall.allow` is called again with the extended grant (the
 *   firewall treats that as an extension) and the result is 'extended' — never a duplicate grant. The grant then
 *   carries the id of the device that knocked last.
 * - Every opened or extended grant gets an in-process timer (injected `Timers`) and is handed to
 *   `ExpiryScheduler.schedule` (the durable backstop on AWS). At expiry the grant is revoked with
 *   `Firewall.revoke`; entries still covered by another live grant of the same address are left open.
 *   A failed revoke is audited ('grant.failed') and retried every `revokeRetryMs`, at most `maxRevokeAttempts`
 *   times (then the sweeper / nftables element timeout are the backstop).
 * - Firewall errors on open are audited as 'grant.failed' and returned as `{ ok: false, reason: 'grant-failed' }`;
 *   a failing ExpiryScheduler is audited as 'grant.failed' but the grant stays open (the local timer still
 *   revokes it). `open` never throws.
 * - Operations on one (address, access set) run one at a time, in call order. A knock that comes while an open of
 *   its grant still waits for its turn joins that open: one `Firewall.allow` until the latest expiry any of them
 *   asked, the grant carrying the last knocking device, each knock answered and audited on its own. So a busy NAT
 *   address or prefix holds at most one queued open, not one per knock (docs/scaling.md "Prefix grants").
 * - `revokeWhere(match)` revokes at once the open grants `match` selects (an operator's revoke, a disabled device),
 *   each in its grant's operation order; it resolves with the grants it closed (a failed revoke is audited and
 *   the grant stays open under its timer).
 * - `revokeAll()` revokes everything currently open (one coalesced `Firewall.revoke`, per grant on failure);
 *   `close()` stops accepting opens ('grant-failed'), waits for operations in flight, then revokes everything.
 *   `release()` stops accepting opens and waits for operations in flight like `close()`, but revokes nothing: it
 *   forgets its grants and their timers, handing them to the durable backstop (a receiver replaced behind a load
 *   balancer: the revoke queue and the sweeper close them at their expiry). Returns the grants it handed over.
 * - Per-device address cap: one device holds grants for at most `maxAddressesPerDevice` source addresses at once
 *   (default 4, DEFAULT_MAX_ADDRESSES_PER_DEVICE). An `open` from a new address beyond the cap releases the
 *   grants of the device's least recently knocked address (revoked at once, audited 'grant.revoked'; an open of
 *   that address still queued is refused as 'grant-failed', audited 'superseded'), so one stolen key cannot fill
 *   the firewall's rule slots for the fleet. Counted when `open` is called, so concurrent knocks count too. A
 *   grant extended by another device (shared NAT) moves to that device's count.
 * - Closed on connect (docs/scaling.md, "A rule lives until the session is established"): every `open` records the
 *   knocking device's claim on the address until the end of that knock's window (connect-claims.ts; recorded when
 *   `open` is called, so a queued open counts as waiting). `sessionEstablished(deviceId, address)` (the broker
 *   accepted an MQTT session of that device from that address) releases that device's claim only; when no device
 *   that knocked for the address is still waiting, every grant of the address is revoked at once (in each grant's
 *   operation order, re-checked there: a knock queued meanwhile keeps it open), audited 'grant.revoked' with
 *   reason 'connected'. A release by a device without a live claim there changes nothing, so a device can never
 *   shorten another device's grant. A failed revoke is audited and the grant stays under its timer.
 *   A session reported while that device's own open of the address is still under way (it connected through the
 *   rule of an earlier knock) releases that knock's claim too: the grant closes as soon as it is open.
 * - The claims live in a `ConnectClaimStore` (functions/core/interfaces.ts): this process's by default; receivers
 *   behind a load balancer share one (the grants table, functions/aws/dynamo-connect-claims.ts) and every one of
 *   them is told of every session. A manager releases only the targets it holds grants of (or the device is
 *   opening), so a release always comes from a holder; each holder told of the session closes its own grants
 *   when the store says `revoke` (the firewall's revokes are idempotent, and on AWS a rule another receiver
 *   extended is left to that receiver, which is told of the same session). A store that cannot record a claim is
 *   audited 'grant.failed' and the open goes on; one that cannot answer a release closes nothing (the window
 *   still does).
 * - Prefix grants (grant-prefix.ts): a `source` with `prefixLength` is keyed, claimed and capped by its prefix
 *   (`network/length`), so every device knocking from one prefix shares its grant. `sessionEstablished` releases the
 *   device's claims on the session's host address and on each prefix held here that contains that address.
 * - Audits 'grant.opened' | 'grant.extended' | 'grant.revoked' (with its GrantRevokeReason) | 'grant.failed';
 *   events carry no key material.
 */

import { ok, type Result, reject } from '../../spa/result.ts';
import type { AccessEntry, AddressFamily } from '../../spa/types.ts';
import { DEFAULT_MAX_ADDRESSES_PER_DEVICE } from '../core/deployment.ts';
import { grantTarget, prefixContains, prefixOf } from '../core/grant-prefix.ts';
import type {
  AuditSink,
  Clock,
  ConnectClaimRelease,
  ConnectClaimStore,
  ExpiryScheduler,
  Firewall,
  Grant,
  GrantRevokeReason,
  Timers,
} from '../core/interfaces.ts';
import { InMemoryConnectClaimStore } from './connect-claims.ts';
import { canonicalAccess, formatAccess } from './policy.ts';
import { canonicalSource } from './source-address.ts';

export type GrantOpenStatus = 'opened' | 'extended';

export interface GrantOpened {
  readonly status: GrantOpenStatus;
  readonly grant: Grant;
}

export type GrantOpenResult = Result<GrantOpened, 'grant-failed'>;

/** The observed source address a grant is for, or (a prefix grant, grant-prefix.ts) the prefix containing it. */
export interface GrantSource {
  readonly address: string;
  readonly family: AddressFamily;
  /** Set for a prefix grant: `address` is then the canonical network address. */
  readonly prefixLength?: number;
}

/** What the packet pipeline needs from the grant manager. */
export interface GrantOpener {
  open(
    deviceId: string,
    source: GrantSource,
    access: readonly AccessEntry[],
    seconds: number,
  ): Promise<GrantOpenResult>;
}

export interface GrantManagerOptions {
  readonly firewall: Firewall;
  readonly expiry: ExpiryScheduler;
  readonly audit: AuditSink;
  readonly clock: Clock;
  readonly timers: Timers;
  /** Delay between revoke attempts after a failure. @default 5000 */
  readonly revokeRetryMs?: number;
  /** Revoke attempts per grant before giving up to the backstops. @default 5 */
  readonly maxRevokeAttempts?: number;
  /** Source addresses one device may hold grants for at once (the oldest released beyond). @default 4 */
  readonly maxAddressesPerDevice?: number;
  /**
   * Where the connect claims live (closed on connect). @default this process only (InMemoryConnectClaimStore);
   * receivers behind a load balancer share them (the grants table, functions/aws/dynamo-connect-claims.ts).
   */
  readonly connectClaims?: ConnectClaimStore;
}

/** One device's claim on one source address: the grant keys it opened there, and its opens still queued. */
interface AddressClaim {
  readonly address: string;
  readonly keys: Set<string>;
  pending: number;
  /** Released by the address cap: queued opens are refused, its grants revoked. */
  released: boolean;
  /** When a session of the device from this target was last reported (closed on connect). */
  sessionAt?: number;
}

interface Entry {
  grant: Grant;
  timer: unknown;
  revokeAttempts: number;
}

/** One `open` call: a knock for a grant key, answered when the open it is part of has run. */
interface OpenRequest {
  readonly deviceId: string;
  readonly source: GrantSource;
  readonly seconds: number;
  readonly claim: AddressClaim;
  readonly knockedAt: number;
  /** The device's connect claim, recorded when `open` was called. */
  readonly knocked: Promise<void>;
  readonly resolve: (result: GrantOpenResult) => void;
}

const ERROR_TEXT_MAX = 500;

function errorText(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return text.length > ERROR_TEXT_MAX ? `${text.slice(0, ERROR_TEXT_MAX)}…` : text;
}

function grantKey(address: string, access: readonly AccessEntry[]): string {
  return `${address}|${formatAccess(access)}`;
}

export class GrantManager implements GrantOpener {
  readonly #firewall: Firewall;
  readonly #expiry: ExpiryScheduler;
  readonly #audit: AuditSink;
  readonly #clock: Clock;
  readonly #timers: Timers;
  readonly #revokeRetryMs: number;
  readonly #maxRevokeAttempts: number;
  readonly #maxAddressesPerDevice: number;
  readonly #entries = new Map<string, Entry>();
  /** Grant keys by address (coverage checks at expiry look at one address, never at every grant). */
  readonly #byAddress = new Map<string, Set<string>>();
  /** Prefix length → how many prefix targets of #byAddress have it (a session's prefixes, without a scan). */
  readonly #prefixLengths = new Map<number, number>();
  /** Device → its address claims, least recently knocked first (the address cap). */
  readonly #devices = new Map<string, Map<string, AddressClaim>>();
  /** Tail of the operation chain per grant key: serializes open/extend/expire of one grant. */
  readonly #chains = new Map<string, Promise<void>>();
  /** Per grant key, the open still waiting for its turn in the chain: later knocks for the key join it. */
  readonly #queuedOpens = new Map<string, OpenRequest[]>();
  /** Devices that knocked for an address and have not connected yet (closed on connect). */
  readonly #connect: ConnectClaimStore;
  #closed = false;

  constructor(options: GrantManagerOptions) {
    this.#firewall = options.firewall;
    this.#expiry = options.expiry;
    this.#audit = options.audit;
    this.#clock = options.clock;
    this.#timers = options.timers;
    this.#connect = options.connectClaims ?? new InMemoryConnectClaimStore();
    this.#revokeRetryMs = options.revokeRetryMs ?? 5000;
    this.#maxRevokeAttempts = options.maxRevokeAttempts ?? 5;
    const cap = options.maxAddressesPerDevice ?? DEFAULT_MAX_ADDRESSES_PER_DEVICE;
    if (!Number.isInteger(cap) || cap < 1) {
      throw new RangeError(
        `grant manager maxAddressesPerDevice: received ${String(cap)}; expected an integer ≥ 1.`,
      );
    }
    this.#maxAddressesPerDevice = cap;
  }

  /** Source addresses `deviceId` currently holds (or is opening) grants for, least recently knocked first. */
  addressesOf(deviceId: string): string[] {
    return [...(this.#devices.get(deviceId)?.keys() ?? [])];
  }

  /** Grants this manager believes open at the firewall (including expired ones whose revoke is being retried). */
  active(): Grant[] {
    return [...this.#entries.values()].map((entry) => entry.grant);
  }

  open(
    deviceId: string,
    source: GrantSource,
    access: readonly AccessEntry[],
    seconds: number,
  ): Promise<GrantOpenResult> {
    const canonical = canonicalAccess(access);
    const target = grantTarget(source);
    const key = grantKey(target, canonical);
    const claim = this.#claim(deviceId, target, key);
    claim.pending += 1;
    const knockedAt = this.#clock.now();
    const knocked = this.#knock(deviceId, target, knockedAt + seconds * 1000);
    let resolve: (result: GrantOpenResult) => void = () => {};
    const promise = new Promise<GrantOpenResult>((settle) => {
      resolve = settle;
    });
    const request: OpenRequest = { deviceId, source, seconds, claim, knockedAt, knocked, resolve };
    const queued = this.#queuedOpens.get(key);
    if (queued !== undefined) {
      // An open of this key still waits for its turn: this knock joins it (one firewall call for all), so the
      // knocks of a busy NAT address or prefix never pile up one operation each behind the firewall.
      queued.push(request);
      return promise;
    }
    const requests = [request];
    this.#queuedOpens.set(key, requests);
    void this.#serialize(key, async () => {
      if (this.#queuedOpens.get(key) === requests) this.#queuedOpens.delete(key);
      try {
        await Promise.all(requests.map((r) => r.knocked));
        await this.#openNow(key, canonical, requests);
      } catch (error) {
        // Not expected (#openNow audits and answers every failure it knows), but no knock may wait forever:
        // those not answered yet are refused (a second resolve of an answered one changes nothing).
        for (const r of requests) r.resolve(reject('grant-failed'));
        this.#auditFailure(deviceId, target, `open failed: ${errorText(error)}`);
      } finally {
        for (const r of requests) {
          r.claim.pending -= 1;
          this.#forgetIfIdle(r.deviceId, r.claim);
        }
      }
    });
    return promise;
  }

  /**
   * The broker accepted an MQTT session of `deviceId` from `address`: releases that device's claim there and, when
   * no device that knocked for the address still waits, revokes the address's grants. Resolves with the grants it
   * closed (none when others still wait, or the device held no claim there). Never throws.
   */
  async sessionEstablished(deviceId: string, address: string): Promise<Grant[]> {
    const canonical = canonicalSource({
      address,
      family: address.includes(':') ? 6 : 4,
      port: 0,
    }).address;
    // The targets the session's address falls in that this manager holds grants of (or the device is opening):
    // the host itself, or a prefix. Only holders release: a shared claim store then always tells a holder.
    const own = this.#devices.get(deviceId);
    const targets = new Set<string>();
    if (this.#byAddress.has(canonical) || own?.has(canonical) === true) targets.add(canonical);
    for (const length of this.#prefixLengths.keys()) {
      const prefix = prefixOf(canonical, length);
      if (prefix !== undefined && this.#byAddress.has(prefix)) targets.add(prefix);
    }
    for (const target of own?.keys() ?? []) {
      const slash = target.indexOf('/');
      if (slash < 0) continue;
      if (prefixContains(target.slice(0, slash), Number(target.slice(slash + 1)), canonical))
        targets.add(target);
    }
    const closed: Grant[] = [];
    for (const target of targets) closed.push(...(await this.#releaseTarget(deviceId, target)));
    return closed;
  }

  /** `deviceId` connected from within `target`: drop its claim there; revoke the target's grants when none waits. */
  async #releaseTarget(deviceId: string, target: string): Promise<Grant[]> {
    const own = this.#devices.get(deviceId)?.get(target);
    if (own !== undefined) own.sessionAt = this.#clock.now();
    let released: ConnectClaimRelease;
    try {
      released = await this.#connect.release(deviceId, target, this.#clock.now());
    } catch (error) {
      this.#auditFailure(deviceId, target, `close on connect failed: ${errorText(error)}`);
      return [];
    }
    if (!released.revoke) return [];
    const closed: Grant[] = [];
    // The target's grants, and the device's own opens there still under way (a session may come before its own
    // knock's rule is reported open, e.g. through the rule of an earlier knock): each closes in its turn.
    const keys = new Set([
      ...(this.#byAddress.get(target) ?? []),
      ...(this.#devices.get(deviceId)?.get(target)?.keys ?? []),
    ]);
    await Promise.all(
      [...keys].map((key) =>
        this.#serialize(key, async () => {
          const entry = this.#entries.get(key);
          if (entry === undefined) return;
          try {
            if ((await this.#connect.waiting(target, this.#clock.now())).length > 0) return; // knocked meanwhile
            await this.#firewall.revoke([entry.grant]);
          } catch (error) {
            this.#auditFailure(deviceId, target, `close on connect failed: ${errorText(error)}`);
            return;
          }
          this.#timers.clearTimeout(entry.timer);
          this.#deleteEntry(key, entry);
          this.#auditGrant('grant.revoked', entry.grant, 'connected');
          closed.push(entry.grant);
        }),
      ),
    );
    return closed;
  }

  async revokeWhere(match: (grant: Grant) => boolean): Promise<Grant[]> {
    const keys = [...this.#entries].filter(([, entry]) => match(entry.grant)).map(([key]) => key);
    const revoked: Grant[] = [];
    await Promise.all(
      keys.map((key) =>
        this.#serialize(key, async () => {
          const entry = this.#entries.get(key);
          if (entry === undefined || !match(entry.grant)) return;
          try {
            await this.#firewall.revoke([entry.grant]);
          } catch (error) {
            this.#auditFailure(
              entry.grant.deviceId,
              entry.grant.address,
              `revoke failed: ${errorText(error)}`,
            );
            return;
          }
          this.#timers.clearTimeout(entry.timer);
          this.#deleteEntry(key, entry);
          this.#auditGrant('grant.revoked', entry.grant, 'operator');
          revoked.push(entry.grant);
        }),
      ),
    );
    return revoked;
  }

  async revokeAll(): Promise<void> {
    await Promise.all([...this.#chains.values()]);
    const entries = [...this.#entries.entries()];
    for (const [, entry] of entries) this.#timers.clearTimeout(entry.timer);
    this.#forgetAll();
    if (entries.length === 0) return;
    const grants = entries.map(([, entry]) => entry.grant);
    try {
      await this.#firewall.revoke(grants);
      for (const grant of grants) this.#auditGrant('grant.revoked', grant, 'shutdown');
    } catch {
      // One coalesced call failed: try each grant alone so one bad rule does not keep the others open.
      for (const grant of grants) {
        try {
          await this.#firewall.revoke([grant]);
          this.#auditGrant('grant.revoked', grant, 'shutdown');
        } catch (error) {
          this.#auditFailure(grant.deviceId, grant.address, `revoke failed: ${errorText(error)}`);
        }
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.revokeAll();
  }

  async release(): Promise<Grant[]> {
    this.#closed = true;
    await Promise.all([...this.#chains.values()]);
    const grants: Grant[] = [];
    for (const entry of this.#entries.values()) {
      this.#timers.clearTimeout(entry.timer);
      grants.push(entry.grant);
    }
    this.#forgetAll();
    return grants;
  }

  #serialize<T>(key: string, operation: () => Promise<T>): Promise<T> {
    const previous = this.#chains.get(key) ?? Promise.resolve();
    const run = previous.then(operation);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.#chains.set(key, tail);
    void tail.then(() => {
      if (this.#chains.get(key) === tail) this.#chains.delete(key);
    });
    return run;
  }

  /**
   * Opens (or extends) the key's grant for the knocks of `requests` (one, or several that joined while it queued):
   * one `Firewall.allow` until the latest expiry any of them asks for, the grant carrying the last knocking device;
   * each knock is answered and audited on its own.
   */
  async #openNow(
    key: string,
    access: readonly AccessEntry[],
    requests: readonly OpenRequest[],
  ): Promise<void> {
    const live: OpenRequest[] = [];
    for (const request of requests) {
      const target = grantTarget(request.source);
      if (this.#closed) {
        this.#auditFailure(request.deviceId, target, 'grant manager is closed (receiver shutting down)');
        request.resolve(reject('grant-failed'));
      } else if (request.claim.released) {
        this.#auditFailure(
          request.deviceId,
          target,
          `superseded: the device knocked from ${this.#maxAddressesPerDevice} newer addresses since ` +
            `(maxAddressesPerDevice ${this.#maxAddressesPerDevice})`,
        );
        request.resolve(reject('grant-failed'));
      } else {
        live.push(request);
      }
    }
    const last = live.at(-1);
    if (last === undefined) return;
    const { deviceId, source } = last;
    const seconds = Math.max(...live.map((r) => r.seconds));
    const now = this.#clock.now();
    const existing = this.#entries.get(key);
    const expiresAt = Math.max(existing?.grant.expiresAt ?? 0, now + seconds * 1000);
    const target = grantTarget(source);
    const grant: Grant = Object.freeze({
      deviceId,
      address: source.address,
      family: source.family,
      ...(source.prefixLength === undefined ? {} : { prefixLength: source.prefixLength }),
      access: Object.freeze(access.map((entry) => Object.freeze({ ...entry }))),
      openedAt: existing?.grant.openedAt ?? now,
      expiresAt,
    });
    try {
      await this.#firewall.allow([grant]);
    } catch (error) {
      for (const request of live) {
        this.#auditFailure(request.deviceId, target, `allow failed: ${errorText(error)}`);
        request.resolve(reject('grant-failed'));
      }
      return;
    }
    if (existing !== undefined) this.#timers.clearTimeout(existing.timer);
    this.#setEntry(key, { grant, timer: this.#arm(key, expiresAt - now), revokeAttempts: 0 });
    // Again once open: another grant of the address may have closed (and dropped its claims) while this one queued;
    // unless the device's session was reported since its knock (it connected meanwhile: the claim is released).
    await Promise.all(
      live
        .filter(({ claim, knockedAt }) => claim.sessionAt === undefined || claim.sessionAt < knockedAt)
        .map((r) => this.#knock(r.deviceId, target, now + r.seconds * 1000)),
    );
    if (existing !== undefined && existing.grant.deviceId !== deviceId) {
      // Another device knocked last from this address (a shared NAT): the grant now counts against its cap.
      const previous = this.#devices.get(existing.grant.deviceId)?.get(target);
      if (previous !== undefined) this.#forgetIfIdle(existing.grant.deviceId, previous);
    }
    const statusOf = (i: number): GrantOpenStatus =>
      existing === undefined && i === 0 ? 'opened' : 'extended';
    live.forEach((request, i) => {
      this.#auditGrant(
        statusOf(i) === 'opened' ? 'grant.opened' : 'grant.extended',
        request === last ? grant : { ...grant, deviceId: request.deviceId },
      );
    });
    try {
      await this.#expiry.schedule(grant);
    } catch (error) {
      this.#auditFailure(deviceId, target, `expiry scheduling failed: ${errorText(error)}`);
    }
    live.forEach((request, i) => {
      request.resolve(ok({ status: statusOf(i), grant }));
    });
  }

  #arm(key: string, delayMs: number): unknown {
    return this.#timers.setTimeout(
      () => {
        void this.#serialize(key, () => this.#expire(key));
      },
      Math.max(0, delayMs),
    );
  }

  async #expire(key: string): Promise<void> {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    const now = this.#clock.now();
    if (entry.grant.expiresAt > now) {
      // Extended after this timer was armed (or the timer fired early): wait for the new expiry.
      this.#timers.clearTimeout(entry.timer);
      entry.timer = this.#arm(key, entry.grant.expiresAt - now);
      return;
    }
    const grant = entry.grant;
    const toRevoke = this.#uncovered(key, grant, now);
    try {
      if (toRevoke.length > 0) await this.#firewall.revoke([{ ...grant, access: toRevoke }]);
    } catch (error) {
      entry.revokeAttempts += 1;
      const giveUp = entry.revokeAttempts >= this.#maxRevokeAttempts;
      this.#auditFailure(
        grant.deviceId,
        grant.address,
        `revoke failed (attempt ${entry.revokeAttempts} of ${this.#maxRevokeAttempts}` +
          `${giveUp ? ', giving up to the expiry backstop' : ''}): ${errorText(error)}`,
      );
      if (giveUp) this.#deleteEntry(key, entry);
      else entry.timer = this.#arm(key, this.#revokeRetryMs);
      return;
    }
    this.#deleteEntry(key, entry);
    this.#auditGrant('grant.revoked', grant, 'expired');
  }

  /** The entries of `grant` that no other live, still claimed grant of the same address covers. */
  #uncovered(key: string, grant: Grant, now: number): AccessEntry[] {
    const stillCovered = new Set<string>();
    const target = grantTarget(grant);
    for (const otherKey of this.#byAddress.get(target) ?? []) {
      const other = this.#entries.get(otherKey);
      if (otherKey === key || other === undefined || other.grant.expiresAt <= now) continue;
      if (this.#devices.get(other.grant.deviceId)?.has(target) !== true) continue; // being released
      for (const item of other.grant.access) stillCovered.add(`${item.protocol}/${item.port}`);
    }
    return grant.access.filter((item) => !stillCovered.has(`${item.protocol}/${item.port}`));
  }

  /**
   * Notes that `deviceId` knocks from `address` now (most recent); beyond the cap, releases the device's least
   * recently knocked address: its queued opens are refused and its grants revoked, each in its grant's order.
   */
  #claim(deviceId: string, address: string, key: string): AddressClaim {
    let claims = this.#devices.get(deviceId);
    if (claims === undefined) {
      claims = new Map();
      this.#devices.set(deviceId, claims);
    }
    let claim = claims.get(address);
    if (claim === undefined) claim = { address, keys: new Set(), pending: 0, released: false };
    else claims.delete(address);
    claims.set(address, claim);
    claim.keys.add(key);
    while (claims.size > this.#maxAddressesPerDevice) {
      const oldest = claims.values().next().value!;
      claims.delete(oldest.address);
      oldest.released = true;
      for (const oldKey of oldest.keys) {
        void this.#serialize(oldKey, () => this.#releaseNow(oldKey, deviceId));
      }
    }
    return claim;
  }

  /** The address cap released this grant's address: revoke it now (unless the device knocked from it again). */
  async #releaseNow(key: string, deviceId: string): Promise<void> {
    const entry = this.#entries.get(key);
    if (entry === undefined || entry.grant.deviceId !== deviceId) return;
    if (this.#devices.get(deviceId)?.has(grantTarget(entry.grant)) === true) return; // claimed again since
    const now = this.#clock.now();
    const toRevoke = this.#uncovered(key, entry.grant, now);
    try {
      if (toRevoke.length > 0) await this.#firewall.revoke([{ ...entry.grant, access: toRevoke }]);
    } catch (error) {
      // The grant stays under its own timer (and the backstops).
      this.#auditFailure(deviceId, entry.grant.address, `release failed: ${errorText(error)}`);
      return;
    }
    this.#timers.clearTimeout(entry.timer);
    this.#deleteEntry(key, entry);
    this.#auditGrant('grant.revoked', entry.grant, 'address-cap');
  }

  #setEntry(key: string, entry: Entry): void {
    this.#entries.set(key, entry);
    const target = grantTarget(entry.grant);
    let keys = this.#byAddress.get(target);
    if (keys === undefined) {
      keys = new Set();
      this.#byAddress.set(target, keys);
      const length = entry.grant.prefixLength;
      if (length !== undefined) this.#prefixLengths.set(length, (this.#prefixLengths.get(length) ?? 0) + 1);
    }
    keys.add(key);
  }

  #deleteEntry(key: string, entry: Entry): void {
    if (this.#entries.get(key) !== entry) return;
    this.#entries.delete(key);
    const target = grantTarget(entry.grant);
    const keys = this.#byAddress.get(target);
    keys?.delete(key);
    if (keys?.size === 0) {
      this.#byAddress.delete(target);
      const length = entry.grant.prefixLength;
      const count = length === undefined ? 0 : (this.#prefixLengths.get(length) ?? 0) - 1;
      if (length !== undefined && count > 0) this.#prefixLengths.set(length, count);
      else if (length !== undefined) this.#prefixLengths.delete(length);
      // No grant left at the address: nothing to close on connect (a queued open records its claim again).
      this.#connect.forget(target);
    }
    const claim = this.#devices.get(entry.grant.deviceId)?.get(target);
    if (claim !== undefined) this.#forgetIfIdle(entry.grant.deviceId, claim);
  }

  /** Drops a claim with no queued open and no grant of its device left at its address. */
  #forgetIfIdle(deviceId: string, claim: AddressClaim): void {
    if (claim.pending > 0) return;
    for (const key of claim.keys) {
      const entry = this.#entries.get(key);
      if (entry !== undefined && entry.grant.deviceId === deviceId) return;
    }
    const claims = this.#devices.get(deviceId);
    if (claims?.get(claim.address) !== claim) return;
    claims.delete(claim.address);
    if (claims.size === 0) this.#devices.delete(deviceId);
  }

  #forgetAll(): void {
    const targets = new Set(this.#byAddress.keys());
    for (const claims of this.#devices.values()) for (const target of claims.keys()) targets.add(target);
    for (const target of targets) this.#connect.forget(target);
    this.#entries.clear();
    this.#byAddress.clear();
    this.#prefixLengths.clear();
    this.#devices.clear();
  }

  /** Records the device's connect claim; a store that cannot record it is audited and the open goes on. */
  async #knock(deviceId: string, target: string, until: number): Promise<void> {
    try {
      await this.#connect.knock(deviceId, target, until);
    } catch (error) {
      this.#auditFailure(deviceId, target, `connect claim not recorded: ${errorText(error)}`);
    }
  }

  #auditGrant(type: 'grant.opened' | 'grant.extended', grant: Grant): void;
  #auditGrant(type: 'grant.revoked', grant: Grant, reason: GrantRevokeReason): void;
  #auditGrant(
    type: 'grant.opened' | 'grant.extended' | 'grant.revoked',
    grant: Grant,
    reason?: GrantRevokeReason,
  ): void {
    const fields = {
      time: this.#clock.now(),
      deviceId: grant.deviceId,
      source: grantTarget(grant),
      access: grant.access,
      expiresAt: grant.expiresAt,
    };
    this.#write(
      type === 'grant.revoked' ? { type, ...fields, reason: reason ?? 'expired' } : { type, ...fields },
    );
  }

  #auditFailure(deviceId: string, source: string, error: string): void {
    this.#write({ type: 'grant.failed', time: this.#clock.now(), deviceId, source, error });
  }

  #write(event: Parameters<AuditSink['write']>[0]): void {
    try {
      this.#audit.write(event);
    } catch {
      // An audit sink that throws must not break grant bookkeeping.
    }
  }
}
