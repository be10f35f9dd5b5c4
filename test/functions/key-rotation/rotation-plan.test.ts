/** The pure key-rotation state machine and the ack proof, as case tables under fixed times. */
import { describe, expect, it } from 'vitest';
import {
  ackProof,
  encodeKeyAck,
  makeKeyAck,
  parseKeyAck,
  verifyAckProof,
} from '../../../functions/core/key-messages.ts';
import type { DeviceKeys, KeyGeneration } from '../../../functions/core/key-rotation-interfaces.ts';
import { describeKeyEvent } from '../../../functions/key-rotation/describe-key-event.ts';
import {
  KeyRotationConfigError,
  keyRotationConfig,
} from '../../../functions/key-rotation/key-rotation-controller.ts';
import {
  applyToGenerations,
  checkAckTarget,
  phaseOf,
  planAck,
  planExpiry,
  planKeyUsed,
  planRotation,
} from '../../../functions/key-rotation/rotation-plan.ts';

const HOUR = 3_600_000;
const T = Date.UTC(2026, 10, 30, 12);
const timers = { periodMs: 24 * HOUR, graceMs: HOUR };

function device(keys: KeyGeneration[], enabled = true): DeviceKeys {
  return { deviceId: 'dev-1', enabled, keys };
}
const current = (keyId: number, generation: number, extra: Partial<KeyGeneration> = {}): KeyGeneration => ({
  keyId,
  generation,
  state: 'current',
  ...extra,
});
const pending = (keyId: number, generation: number): KeyGeneration => ({
  keyId,
  generation,
  state: 'pending',
  createdAt: T,
});

describe('planRotation', () => {
  it.each([
    [
      'disabled device',
      device([current(1, 1, { createdAt: T - 30 * HOUR })], false),
      false,
      { action: 'skip', reason: 'disabled' },
    ],
    ['no native key', device([]), true, { action: 'skip', reason: 'no-native-key' }],
    [
      'fresh key, scheduled',
      device([current(1, 1, { createdAt: T - HOUR })]),
      false,
      { action: 'skip', reason: 'not-due' },
    ],
    [
      'fresh key, on demand',
      device([current(1, 1, { createdAt: T - HOUR })]),
      true,
      { action: 'offer', generation: 2 },
    ],
    [
      '24 h old key, scheduled',
      device([current(1, 1, { createdAt: T - 24 * HOUR })]),
      false,
      { action: 'offer', generation: 2 },
    ],
    [
      'key of unknown age, controller started now',
      device([current(1, 0)]),
      false,
      { action: 'skip', reason: 'not-due' },
    ],
    [
      'pending key: same offer again',
      device([current(1, 1), pending(2, 2)]),
      true,
      { action: 'resend', keyId: 2 },
    ],
    [
      'retiring old key, newest is fresh',
      device([current(1, 1, { notAfter: T + HOUR }), current(2, 2, { createdAt: T })]),
      false,
      { action: 'skip', reason: 'not-due' },
    ],
  ])('%s', (_name, input, force, expected) => {
    expect(planRotation(input, T, timers, force)).toEqual(expected);
  });

  it('rotates a key of unknown age one period after the controller started', () => {
    const legacy = device([current(1, 0)]);
    expect(planRotation(legacy, T, timers, false, T - 24 * HOUR)).toEqual({ action: 'offer', generation: 1 });
    expect(planRotation(legacy, T, timers, false, T - 23 * HOUR)).toEqual({
      action: 'skip',
      reason: 'not-due',
    });
  });
});

describe('phases', () => {
  it.each([
    [device([]), 'no-key'],
    [device([current(1, 1)]), 'stable'],
    [device([current(1, 1), pending(2, 2)]), 'offered'],
    [device([current(1, 1, { notAfter: T }), current(2, 2)]), 'retiring'],
  ])('%j is %s', (input, phase) => {
    expect(phaseOf(input)).toBe(phase);
  });
});

describe('acks', () => {
  const offered = device([current(1, 1), pending(2, 2)]);
  it.each([
    [2, undefined],
    [1, 'not-pending'],
    [99, 'unknown-key'],
  ])('ack for key %d: %s', (keyId, expected) => {
    expect(checkAckTarget(offered, keyId)).toBe(expected);
  });

  it('a valid ack makes the pending key current and ends the others after the grace period', () => {
    const change = planAck(2, T, timers);
    expect(change).toEqual({ type: 'confirm', keyId: 2, othersNotAfter: T + HOUR });
    const after = applyToGenerations(offered.keys, change as never, (key, fields) => ({ ...key, ...fields }));
    expect(after).toEqual([current(1, 1, { notAfter: T + HOUR }), { ...pending(2, 2), state: 'current' }]);
  });

  it('confirmation never extends a key that already ends earlier', () => {
    const keys = [current(1, 1, { notAfter: T + 60_000 }), pending(2, 2)];
    const after = applyToGenerations(keys, planAck(2, T, timers) as never, (key, fields) => ({
      ...key,
      ...fields,
    }));
    expect(after[0]?.notAfter).toBe(T + 60_000);
  });
});

describe('first use and expiry', () => {
  it.each([
    [
      'pending key used: confirmed, others end now',
      device([current(1, 1), pending(2, 2)]),
      2,
      { type: 'confirm', keyId: 2, othersNotAfter: T },
    ],
    [
      'new current key used: older keys removed',
      device([current(1, 1, { notAfter: T + HOUR }), current(2, 2)]),
      2,
      { type: 'remove', keyIds: [1] },
    ],
    [
      'old key used during grace: nothing changes',
      device([current(1, 1, { notAfter: T + HOUR }), current(2, 2)]),
      1,
      undefined,
    ],
    ['only key used: nothing changes', device([current(1, 1)]), 1, undefined],
    ['unknown key: nothing changes', device([current(1, 1)]), 7, undefined],
  ])('%s', (_name, input, keyId, expected) => {
    expect(planKeyUsed(input, keyId, T)).toEqual(expected);
  });

  it.each([
    [
      'grace over: old key removed',
      device([current(1, 1, { notAfter: T - 1 }), current(2, 2)]),
      { type: 'remove', keyIds: [1] },
    ],
    ['grace not over', device([current(1, 1, { notAfter: T + 1 }), current(2, 2)]), undefined],
    ['the newest current key is never removed', device([current(1, 1, { notAfter: T - 1 })]), undefined],
    [
      'a pending key is never removed, nor the old key without an end',
      device([current(1, 1), pending(2, 2)]),
      undefined,
    ],
  ])('%s', (_name, input, expected) => {
    expect(planExpiry(input, T)).toEqual(expected);
  });
});

describe('key messages', () => {
  const key = new Uint8Array(32).fill(7);
  const nonce = new Uint8Array(16).fill(1);

  it('round-trips an ack', () => {
    const ack = makeKeyAck(key, 42, nonce);
    expect(parseKeyAck(encodeKeyAck(ack))).toEqual({ ok: true, value: ack });
  });

  it('pins the proof: HMAC-SHA256(key, "blackcloud-key-ack-v1\\0" | u32 key id | nonce) (computed with openssl)', () => {
    expect(Buffer.from(ackProof(key, 42, nonce)).toString('hex')).toBe(
      '3a2cdcd273944fcdd7b61e5d155a8f657b3e1b29298141a3e43417b49011588e',
    );
  });

  it.each([
    ['right key', key, 42, true],
    ['wrong key', new Uint8Array(32).fill(8), 42, false],
    ['other key id', key, 43, false],
  ])('verifyAckProof with %s', (_name, verifyKey, keyId, expected) => {
    const ack = makeKeyAck(key, 42, nonce);
    expect(verifyAckProof(verifyKey, { ...ack, keyId })).toBe(expected);
  });

  it('rejects a truncated proof without throwing', () => {
    const ack = makeKeyAck(key, 42, nonce);
    expect(verifyAckProof(key, { ...ack, proof: ack.proof.slice(0, 31) })).toBe(false);
  });

  const goodAck = JSON.parse(encodeKeyAck(makeKeyAck(key, 42, nonce))) as Record<string, unknown>;
  it.each([
    ['not JSON', 'nope', 'not-json'],
    ['too long', `{"v":1,"pad":"${'x'.repeat(1100)}"}`, 'too-long'],
    ['version 2', JSON.stringify({ ...goodAck, v: 2 }), 'bad-version'],
    ['missing proof', JSON.stringify({ ...goodAck, proof: undefined }), 'bad-shape'],
    ['short nonce', JSON.stringify({ ...goodAck, nonce: 'AAAA' }), 'bad-shape'],
    ['key id over u32', JSON.stringify({ ...goodAck, keyId: 2 ** 32 }), 'bad-shape'],
    ['extra field', JSON.stringify({ ...goodAck, extra: 1 }), 'bad-shape'],
    ['an array', '[1]', 'bad-version'],
  ])('parseKeyAck refuses %s', (_name, payload, reason) => {
    expect(parseKeyAck(payload)).toEqual({ ok: false, reason });
  });
});

describe('console lines for key events', () => {
  it.each([
    [
      { type: 'key.offered', time: T, deviceId: 'd', keyId: 7, generation: 2, oldKeyNotAfter: T },
      'new SPA key 7 (generation 2) offered to d',
    ],
    [
      { type: 'key.resent', time: T, deviceId: 'd', keyId: 7, generation: 2, oldKeyNotAfter: T },
      'pending SPA key 7 sent to d (again until acknowledged)',
    ],
    [
      { type: 'key.confirmed', time: T, deviceId: 'd', keyId: 7, by: 'ack', oldKeysNotAfter: T },
      'SPA key 7 of d confirmed (acknowledged); older keys end 2026-11-30T12:00:00.000Z',
    ],
    [
      { type: 'key.retired', time: T, deviceId: 'd', keyIds: [1, 2], reason: 'grace-ended' },
      'SPA key(s) 1, 2 of d retired (grace-ended)',
    ],
    [
      { type: 'key.ack-rejected', time: T, deviceId: 'd', keyId: 7, reason: 'bad-proof' },
      'key acknowledgement from d refused: bad-proof (key 7)',
    ],
    [
      { type: 'key.rotation-failed', time: T, deviceId: 'd', error: 'EACCES' },
      'key rotation of d failed: EACCES',
    ],
  ] as const)('%j', (event, line) => {
    expect(describeKeyEvent(event)).toBe(line);
  });
});

describe('controller timers', () => {
  it('defaults to a 24 h period, 1 h grace, 5 min re-send, 60 s tick', () => {
    expect(keyRotationConfig()).toEqual({
      periodMs: 86_400_000,
      graceMs: 3_600_000,
      resendMs: 300_000,
      tickMs: 60_000,
    });
  });

  it.each([
    [{ graceMs: 0 }, 'graceMs'],
    [{ periodMs: 1.5 }, 'periodMs'],
    [{ tickMs: 400 * 86_400_000 }, 'tickMs'],
  ])('refuses %j naming the field, the value and the range', (partial, field) => {
    expect(() => keyRotationConfig(partial)).toThrow(KeyRotationConfigError);
    expect(() => keyRotationConfig(partial)).toThrow(
      new RegExp(`^key rotation ${field}: received [0-9.]+; expected an integer`),
    );
  });
});
