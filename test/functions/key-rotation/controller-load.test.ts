/**
 * The key-rotation controller under fleet load (issue 19): the real devices-file store over a 1,000-device file,
 * a session that holds publishes until told, virtual time for the buckets. Pending offers go out a bounded number
 * at once; a tick parses the file once; forged acks are rate-limited before the store; the rejection audit is capped.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeKeyAck, makeKeyAck } from '../../../functions/core/key-messages.ts';
import type { KeyGenerationStore } from '../../../functions/core/key-rotation-interfaces.ts';
import { systemRandom } from '../../../functions/core/system.ts';
import { keyAckTopic } from '../../../functions/core/topics.ts';
import {
  ACK_LIMIT_DEFAULTS,
  ACK_REJECT_AUDIT_DEFAULTS,
  controllerCounterName,
  DEFAULT_ROTATION_CONCURRENCY,
  KeyRotationController,
} from '../../../functions/key-rotation/key-rotation-controller.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { DeviceFileKeyStore } from '../../../functions/local/device-file-key-store.ts';
import { type FleetDevice, writeFleetFile } from '../../support/fleet-file.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { removeDir, tempDir, waitFor } from '../local/helpers.ts';

const T0 = Date.UTC(2026, 10, 30, 12);
const FLEET = 1000;

let dir: string | undefined;
let fleet: FleetDevice[];

beforeEach(async () => {
  dir = await tempDir('bc-controller-load');
  fleet = await writeFleetFile(dir, FLEET, { pending: true, createdAt: T0 });
});

afterEach(async () => {
  await removeDir(dir);
});

/** Publishes are held until `release()`; counts what is in flight. */
function heldSession() {
  let open: () => void = () => undefined;
  let gate = new Promise<void>((done) => {
    open = done;
  });
  const state = { inFlight: 0, maxInFlight: 0, published: 0 };
  return {
    state,
    release() {
      open();
      gate = Promise.resolve();
    },
    async publish(_topic: string, _payload: string): Promise<void> {
      state.inFlight += 1;
      state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
      await gate;
      state.inFlight -= 1;
      state.published += 1;
    },
  };
}

/** The store, counting every call that reaches it. */
function counted(store: DeviceFileKeyStore) {
  const calls = { list: 0, get: 0, keyMaterial: 0, apply: 0 };
  const wrapped: KeyGenerationStore = {
    list: () => (calls.list++, store.list()),
    get: (id) => (calls.get++, store.get(id)),
    keyMaterial: (id, keyId) => (calls.keyMaterial++, store.keyMaterial(id, keyId)),
    apply: (id, change) => (calls.apply++, store.apply(id, change)),
  };
  return { calls, wrapped };
}

function setup() {
  const time = new VirtualTime(T0 + 1000);
  const store = new DeviceFileKeyStore(join(dir!, 'devices.yaml'));
  const { calls, wrapped } = counted(store);
  const session = heldSession();
  const audit = new MemoryAuditSink();
  const controller = new KeyRotationController({
    store: wrapped,
    session,
    audit,
    clock: time,
    random: systemRandom,
    timers: time,
  });
  return { time, store, calls, session, audit, controller };
}

describe('the key-rotation controller with 1,000 pending offers', () => {
  it(`start() returns at once; the offers go out ${DEFAULT_ROTATION_CONCURRENCY} at a time; the file is parsed once`, async () => {
    const { controller, session, store, audit } = setup();
    const first = controller.start(); // not awaited: what `up` does
    await waitFor(
      () => (session.state.inFlight === DEFAULT_ROTATION_CONCURRENCY ? true : undefined),
      `${DEFAULT_ROTATION_CONCURRENCY} offers in flight`,
      20_000,
    );
    // Held: nothing more starts than the bound, nothing completed.
    await new Promise((done) => setTimeout(done, 50));
    expect(session.state).toEqual({
      inFlight: DEFAULT_ROTATION_CONCURRENCY,
      maxInFlight: DEFAULT_ROTATION_CONCURRENCY,
      published: 0,
    });
    session.release();
    await first;
    expect(session.state.published).toBe(FLEET);
    expect(session.state.maxInFlight).toBe(DEFAULT_ROTATION_CONCURRENCY);
    const resent = audit.events.filter((event) => event.type === 'key.resent');
    expect(new Set(resent.map((event) => event.deviceId)).size).toBe(FLEET);
    expect(store.parses).toBe(1);
    // An idle tick (every offer sent just now): one stat, no parse, nothing published.
    expect(await controller.tick()).toEqual([]);
    expect(store.parses).toBe(1);
    expect(session.state.published).toBe(FLEET);
    controller.stop();
  }, 120_000);
});

describe('forged acks', () => {
  it(`are rate-limited per device before the store: 200 forged acks from one device touch it at most ${ACK_LIMIT_DEFAULTS.burst} times`, async () => {
    const { controller, calls, audit, time } = setup();
    const device = fleet[7]!;
    const forged = () =>
      encodeKeyAck(makeKeyAck(randomBytes(32), device.pendingKeyId!, new Uint8Array(randomBytes(16))));
    const outcomes = await Promise.all(
      Array.from({ length: 200 }, () =>
        controller.handleMessage(keyAckTopic(device.id), Buffer.from(forged())),
      ),
    );
    const reasons = outcomes.map((outcome) => (outcome.ok ? 'ok' : outcome.reason));
    expect(reasons.filter((reason) => reason === 'bad-proof')).toHaveLength(ACK_LIMIT_DEFAULTS.burst);
    expect(reasons.filter((reason) => reason === 'rate-limited')).toHaveLength(
      200 - ACK_LIMIT_DEFAULTS.burst,
    );
    // get + keyMaterial per ack that passed the bucket; never more, never an apply.
    expect(calls.get).toBe(ACK_LIMIT_DEFAULTS.burst);
    expect(calls.keyMaterial).toBe(ACK_LIMIT_DEFAULTS.burst);
    expect(calls.apply).toBe(0);
    expect(controller.counters()[controllerCounterName.acksRateLimited]).toBe(200 - ACK_LIMIT_DEFAULTS.burst);
    // The bucket refills: one more ack gets through a minute later.
    time.jump(60_000);
    expect(await controller.handleMessage(keyAckTopic(device.id), Buffer.from(forged()))).toEqual({
      ok: false,
      reason: 'bad-proof',
    });
    expect(calls.get).toBe(ACK_LIMIT_DEFAULTS.burst + 1);
    // Another device is not affected by the first one's bucket.
    const other = fleet[8]!;
    expect(
      await controller.handleMessage(
        keyAckTopic(other.id),
        Buffer.from(encodeKeyAck(makeKeyAck(randomBytes(32), other.pendingKeyId!, randomBytes(16)))),
      ),
    ).toEqual({ ok: false, reason: 'bad-proof' });
    // Audited within the cap: the first burst, then the two after the minute (the cap refilled meanwhile).
    expect(audit.ofType('key.ack-rejected')).toHaveLength(ACK_REJECT_AUDIT_DEFAULTS.burst + 2);
  }, 60_000);

  it(`the rejection audit is capped (${ACK_REJECT_AUDIT_DEFAULTS.burst} lines at once) and the rest counted`, async () => {
    const { controller, audit, time } = setup();
    const ackFrom = (device: FleetDevice) =>
      controller.handleMessage(
        keyAckTopic(device.id),
        Buffer.from(encodeKeyAck(makeKeyAck(randomBytes(32), device.pendingKeyId!, randomBytes(16)))),
      );
    const outcomes = await Promise.all(fleet.slice(0, 300).map(ackFrom));
    expect(outcomes.every((outcome) => !outcome.ok && outcome.reason === 'bad-proof')).toBe(true);
    expect(audit.ofType('key.ack-rejected')).toHaveLength(ACK_REJECT_AUDIT_DEFAULTS.burst);
    expect(controller.counters()[controllerCounterName.ackAuditSuppressed]).toBe(
      300 - ACK_REJECT_AUDIT_DEFAULTS.burst,
    );
    // The cap refills at its rate: 10 s later, 10 more lines (at 1 per second).
    time.jump(10_000);
    await Promise.all(fleet.slice(300, 320).map(ackFrom));
    expect(audit.ofType('key.ack-rejected')).toHaveLength(ACK_REJECT_AUDIT_DEFAULTS.burst + 10);
    expect(controller.counters()[controllerCounterName.ackAuditSuppressed]).toBe(300 - 20 + 10);
  }, 60_000);
});
