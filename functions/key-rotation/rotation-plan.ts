/**
 * The key-rotation state machine, pure: given one device's key generations, the time and an event, what changes.
 * The controller (key-rotation-controller.ts) runs the I/O; docs/key-lifecycle.md draws the states.
 *
 * Phases of a device: 'no-key' (no native key: nothing to rotate), 'stable' (current keys only), 'offered' (a
 * pending key exists: sent, not yet acknowledged), 'retiring' (an older key still works until its notAfter).
 *
 * Contract:
 * - Offering never ends the old key: a lost offer can never lock a device out. The pending key is accepted for
 *   knocks at once (a device that stored it but whose ack was lost can knock with it).
 * - Confirmation (a valid ack, or the first accepted knock with the pending key) makes the pending key current
 *   and ends every other key: at `now + grace` after an ack; at once after a knock with the new key (the device
 *   demonstrably holds it).
 * - A knock with a current key retires every older generation at once.
 * - Expiry removes keys past their notAfter, never the newest current key and never a pending one.
 * - At most one pending key per device; a new rotation while one is pending re-sends the same offer.
 */
import type { DeviceKeys, KeyChange, KeyGeneration } from '../core/key-rotation-interfaces.ts';

export interface RotationTimers {
  /** Rotate a device whose newest current key is this old. @default 24 h */
  readonly periodMs: number;
  /** How long the old key keeps working after the ack. @default 1 h */
  readonly graceMs: number;
}

export type Phase = 'no-key' | 'stable' | 'offered' | 'retiring';

export function pendingKey(device: DeviceKeys): KeyGeneration | undefined {
  return device.keys.find((key) => key.state === 'pending');
}

/** The newest current generation (the one the device should knock with once no key is pending). */
export function newestCurrent(device: DeviceKeys): KeyGeneration | undefined {
  let newest: KeyGeneration | undefined;
  for (const key of device.keys) {
    if (key.state === 'current' && (newest === undefined || key.generation > newest.generation)) newest = key;
  }
  return newest;
}

export function phaseOf(device: DeviceKeys): Phase {
  if (device.keys.length === 0) return 'no-key';
  if (pendingKey(device) !== undefined) return 'offered';
  return device.keys.length > 1 ? 'retiring' : 'stable';
}

export function nextGeneration(device: DeviceKeys): number {
  return device.keys.reduce((max, key) => Math.max(max, key.generation), 0) + 1;
}

export type RotationDecision =
  | { readonly action: 'offer'; readonly generation: number }
  | { readonly action: 'resend'; readonly keyId: number }
  | { readonly action: 'skip'; readonly reason: 'disabled' | 'no-native-key' | 'not-due' };

/** Whether (and how) to rotate now. `force` = on demand (CLI): rotate even when not due. */
export function planRotation(
  device: DeviceKeys,
  now: number,
  timers: RotationTimers,
  force: boolean,
  /** Age origin of a key whose creation time is unknown (keys from before rotation): e.g. the controller start. */
  unknownAgeSince: number = now,
): RotationDecision {
  if (!device.enabled) return { action: 'skip', reason: 'disabled' };
  const pending = pendingKey(device);
  if (pending !== undefined) return { action: 'resend', keyId: pending.keyId };
  const current = newestCurrent(device);
  if (current === undefined) return { action: 'skip', reason: 'no-native-key' };
  const due = now - (current.createdAt ?? unknownAgeSince) >= timers.periodMs;
  return force || due
    ? { action: 'offer', generation: nextGeneration(device) }
    : { action: 'skip', reason: 'not-due' };
}

export type AckRejection = 'unknown-key' | 'not-pending' | 'bad-proof' | 'replay';

/**
 * The first checks on an ack, before its proof is verified: the key must be this device's pending key (so a
 * replayed ack of an earlier rotation, or one for another device's key, changes nothing).
 */
export function checkAckTarget(device: DeviceKeys, keyId: number): AckRejection | undefined {
  const key = device.keys.find((candidate) => candidate.keyId === keyId);
  if (key === undefined) return 'unknown-key';
  return key.state === 'pending' ? undefined : 'not-pending';
}

/** The change a verified, fresh ack makes: the pending key becomes current; the others end after the grace. */
export function planAck(keyId: number, now: number, timers: RotationTimers): KeyChange {
  return { type: 'confirm', keyId, othersNotAfter: now + timers.graceMs };
}

/** The change an accepted knock with `keyId` makes, if any. */
export function planKeyUsed(device: DeviceKeys, keyId: number, now: number): KeyChange | undefined {
  const used = device.keys.find((key) => key.keyId === keyId);
  if (used === undefined) return undefined;
  if (used.state === 'pending') return { type: 'confirm', keyId, othersNotAfter: now };
  const older = device.keys
    .filter((key) => key.generation < used.generation && key.state === 'current')
    .map((key) => key.keyId);
  return older.length === 0 ? undefined : { type: 'remove', keyIds: older };
}

/** Keys past their notAfter, to remove (never the newest current key, never a pending key). */
export function planExpiry(device: DeviceKeys, now: number): KeyChange | undefined {
  const keep = newestCurrent(device);
  const expired = device.keys
    .filter(
      (key) => key.state === 'current' && key !== keep && key.notAfter !== undefined && key.notAfter < now,
    )
    .map((key) => key.keyId);
  return expired.length === 0 ? undefined : { type: 'remove', keyIds: expired };
}

/** `change` applied to a list of generations (the stores share it). Pure. */
export function applyToGenerations<T extends KeyGeneration>(
  keys: readonly T[],
  change: Exclude<KeyChange, { type: 'add-pending' }>,
  update: (key: T, fields: Partial<KeyGeneration>) => T,
): T[] {
  if (change.type === 'remove') return keys.filter((key) => !change.keyIds.includes(key.keyId));
  return keys.map((key) => {
    if (key.keyId === change.keyId) return update(key, { state: 'current' });
    const notAfter =
      key.notAfter === undefined ? change.othersNotAfter : Math.min(key.notAfter, change.othersNotAfter);
    return update(key, { notAfter });
  });
}
