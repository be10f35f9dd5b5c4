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
 * - Operations on one (address, access set) run one at a time, in call order.
 * - `revokeWhere(match)` revokes at once the open grants `match` selects (an operator's revoke, a disabled device),
 *   each in its grant's operation order; it resolves with the grants it closed (a failed revoke is audited and
 *   the grant stays open under its timer).
 * - `revokeAll()` revokes everything currently open (one coalesced `Firewall.revoke`, per grant on failure);
 *   `close()` stops accepting opens ('grant-failed'), waits for operations in flight, then revokes everything.
 *   `release()` stops accepting opens and waits for operations in flight like `close()`, but revokes nothing: it
 *   forgets its grants and their timers, handing them to the durable backstop (a receiver replaced behind a load
 *   balancer: the revoke queue and the sweeper close them at their expiry). Returns the grants it handed over.
 * - Audits 'grant.opened' | 'grant.extended' | 'grant.revoked' | 'grant.failed'; events carry no key material.
 */

import { ok, type Result, reject } from '../../spa/result.ts';
import type { AccessEntry, AddressFamily } from '../../spa/types.ts';
import type { AuditSink, Clock, ExpiryScheduler, Firewall, Grant, Timers } from '../core/interfaces.ts';
import { canonicalAccess, formatAccess } from './policy.ts';

export type GrantOpenStatus = 'opened' | 'extended';

export interface GrantOpened {
  readonly status: GrantOpenStatus;
  readonly grant: Grant;
}

export type GrantOpenResult = Result<GrantOpened, 'grant-failed'>;

/** The observed source address a grant is for. */
export interface GrantSource {
  readonly address: string;
  readonly family: AddressFamily;
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
}

interface Entry {
  grant: Grant;
  timer: unknown;
  revokeAttempts: number;
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
  readonly #entries = new Map<string, Entry>();
  /** Tail of the operation chain per grant key: serializes open/extend/expire of one grant. */
  readonly #chains = new Map<string, Promise<void>>();
  #closed = false;

  constructor(options: GrantManagerOptions) {
    this.#firewall = options.firewall;
    this.#expiry = options.expiry;
    this.#audit = options.audit;
    this.#clock = options.clock;
    this.#timers = options.timers;
    this.#revokeRetryMs = options.revokeRetryMs ?? 5000;
    this.#maxRevokeAttempts = options.maxRevokeAttempts ?? 5;
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
    const key = grantKey(source.address, canonical);
    return this.#serialize(key, () => this.#openNow(key, deviceId, source, canonical, seconds));
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
          this.#entries.delete(key);
          this.#auditGrant('grant.revoked', entry.grant);
          revoked.push(entry.grant);
        }),
      ),
    );
    return revoked;
  }

  async revokeAll(): Promise<void> {
    await Promise.all([...this.#chains.values()]);
    const entries = [...this.#entries.entries()];
    for (const [key, entry] of entries) {
      this.#timers.clearTimeout(entry.timer);
      this.#entries.delete(key);
    }
    if (entries.length === 0) return;
    const grants = entries.map(([, entry]) => entry.grant);
    try {
      await this.#firewall.revoke(grants);
      for (const grant of grants) this.#auditGrant('grant.revoked', grant);
    } catch {
      // One coalesced call failed: try each grant alone so one bad rule does not keep the others open.
      for (const grant of grants) {
        try {
          await this.#firewall.revoke([grant]);
          this.#auditGrant('grant.revoked', grant);
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
    for (const [key, entry] of this.#entries) {
      this.#timers.clearTimeout(entry.timer);
      this.#entries.delete(key);
      grants.push(entry.grant);
    }
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

  async #openNow(
    key: string,
    deviceId: string,
    source: GrantSource,
    access: readonly AccessEntry[],
    seconds: number,
  ): Promise<GrantOpenResult> {
    if (this.#closed) {
      this.#auditFailure(deviceId, source.address, 'grant manager is closed (receiver shutting down)');
      return reject('grant-failed');
    }
    const now = this.#clock.now();
    const existing = this.#entries.get(key);
    const expiresAt = Math.max(existing?.grant.expiresAt ?? 0, now + seconds * 1000);
    const grant: Grant = Object.freeze({
      deviceId,
      address: source.address,
      family: source.family,
      access: Object.freeze(access.map((entry) => Object.freeze({ ...entry }))),
      openedAt: existing?.grant.openedAt ?? now,
      expiresAt,
    });
    try {
      await this.#firewall.allow([grant]);
    } catch (error) {
      this.#auditFailure(deviceId, source.address, `allow failed: ${errorText(error)}`);
      return reject('grant-failed');
    }
    if (existing !== undefined) this.#timers.clearTimeout(existing.timer);
    this.#entries.set(key, { grant, timer: this.#arm(key, expiresAt - now), revokeAttempts: 0 });
    const status: GrantOpenStatus = existing === undefined ? 'opened' : 'extended';
    this.#auditGrant(status === 'opened' ? 'grant.opened' : 'grant.extended', grant);
    try {
      await this.#expiry.schedule(grant);
    } catch (error) {
      this.#auditFailure(deviceId, source.address, `expiry scheduling failed: ${errorText(error)}`);
    }
    return ok({ status, grant });
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
    const stillCovered = new Set<string>();
    for (const [otherKey, other] of this.#entries) {
      if (otherKey === key || other.grant.address !== grant.address || other.grant.expiresAt <= now) continue;
      for (const item of other.grant.access) stillCovered.add(`${item.protocol}/${item.port}`);
    }
    const toRevoke = grant.access.filter((item) => !stillCovered.has(`${item.protocol}/${item.port}`));
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
      if (giveUp) this.#entries.delete(key);
      else entry.timer = this.#arm(key, this.#revokeRetryMs);
      return;
    }
    this.#entries.delete(key);
    this.#auditGrant('grant.revoked', grant);
  }

  #auditGrant(type: 'grant.opened' | 'grant.extended' | 'grant.revoked', grant: Grant): void {
    this.#write({
      type,
      time: this.#clock.now(),
      deviceId: grant.deviceId,
      source: grant.address,
      access: grant.access,
      expiresAt: grant.expiresAt,
    });
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
