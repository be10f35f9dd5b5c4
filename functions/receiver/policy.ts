/**
 * The receiver's policy decisions, pure ([BC1-3], [BC1-6], [BC1-7], [BC1-9] in docs/protocol.md):
 * - a native key is active while the device is enabled and `now` is not past the key's `notAfter` [BC1-3];
 * - a timestamp is fresh when |now - timestamp| <= window [BC1-6];
 * - every requested access entry must be in the device's allowedAccess [BC1-7];
 * - the grant lasts the requested seconds, or the default when 0 was requested, capped by the device's
 *   maxOpenSeconds [BC1-9].
 */
import type { AccessEntry } from '../../spa/types.ts';
import type { DeviceKey } from '../core/interfaces.ts';

export function isKeyActive(key: DeviceKey, now: number): boolean {
  return key.notAfter === undefined || now <= key.notAfter;
}

export function withinClockWindow(timestampMs: number, now: number, windowMs: number): boolean {
  return Math.abs(now - timestampMs) <= windowMs;
}

export function accessAllowed(requested: readonly AccessEntry[], allowed: readonly AccessEntry[]): boolean {
  return requested.every((want) =>
    allowed.some((have) => have.protocol === want.protocol && have.port === want.port),
  );
}

export function grantSeconds(requested: number, maxOpenSeconds: number, defaultSeconds: number): number {
  const wanted = requested > 0 ? requested : defaultSeconds;
  return Math.max(1, Math.min(wanted, maxOpenSeconds));
}

/** Canonical access set: sorted (tcp before udp, then by port), duplicates removed. */
export function canonicalAccess(access: readonly AccessEntry[]): AccessEntry[] {
  const seen = new Set<string>();
  const out: AccessEntry[] = [];
  for (const entry of access) {
    const key = `${entry.protocol}/${entry.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ protocol: entry.protocol, port: entry.port });
  }
  return out.sort((a, b) => (a.protocol === b.protocol ? a.port - b.port : a.protocol < b.protocol ? -1 : 1));
}

export function formatAccess(access: readonly AccessEntry[]): string {
  return access.map((entry) => `${entry.protocol}/${entry.port}`).join(',');
}
