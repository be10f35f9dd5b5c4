/**
 * What the key-rotation controller publishes (docs/protocol.md [KO-6], [KO-8]): every offer, first or re-sent, is a
 * BKO1 sealed under the device's newest current key for that device id with a fresh nonce; after confirmation the
 * next rotation is sealed under the new key; an ack of the pending key, whatever prompted it, completes the
 * rotation; a current key without key material fails the rotation, naming the fix, and publishes nothing. Real
 * devices-file store on disk, a recording session, virtual time.
 */
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encodeKeyAck, makeKeyAck } from '../../../functions/core/key-messages.ts';
import type {
  ControllerSession,
  KeyGenerationStore,
} from '../../../functions/core/key-rotation-interfaces.ts';
import { KEY_OFFER_LENGTH, openKeyOffer } from '../../../functions/core/sealed-key-offer.ts';
import { systemRandom } from '../../../functions/core/system.ts';
import { keyAckTopic, keyTopic } from '../../../functions/core/topics.ts';
import { KeyRotationController } from '../../../functions/key-rotation/key-rotation-controller.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { DeviceFileKeyStore } from '../../../functions/local/device-file-key-store.ts';
import { type FleetDevice, writeFleetFile } from '../../support/fleet-file.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { removeDir, tempDir } from '../local/helpers.ts';

const T0 = Date.UTC(2026, 10, 30, 12);
const RESEND_MS = 5 * 60_000;

let dir: string | undefined;
let fleet: FleetDevice[];

beforeEach(async () => {
  dir = await tempDir('bc-sealed-offers');
  fleet = await writeFleetFile(dir, 2);
});

afterEach(async () => {
  await removeDir(dir);
});

class RecordingSession implements ControllerSession {
  readonly published: { topic: string; payload: Uint8Array }[] = [];
  async publish(topic: string, payload: string | Uint8Array): Promise<void> {
    this.published.push({ topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload });
  }
}

function setup(withoutMaterialOf?: number) {
  const time = new VirtualTime(T0);
  const file = new DeviceFileKeyStore(join(dir!, 'devices.yaml'));
  // A directory that lost one key's material (e.g. an AWS key item without its key attribute).
  const store: KeyGenerationStore = {
    list: () => file.list(),
    get: (id) => file.get(id),
    keyMaterial: (id, keyId) =>
      keyId === withoutMaterialOf ? Promise.resolve(undefined) : file.keyMaterial(id, keyId),
    apply: (id, change) => file.apply(id, change),
  };
  const session = new RecordingSession();
  const audit = new MemoryAuditSink();
  const controller = new KeyRotationController({
    store,
    session,
    audit,
    clock: time,
    random: systemRandom,
    timers: time,
    config: { resendMs: RESEND_MS },
  });
  return { time, store, session, audit, controller };
}

describe('the controller seals every key offer (BKO1)', () => {
  it('seals the offer and its re-send under the current key, for this device only, with fresh nonces', async () => {
    const { controller, session, time } = setup();
    const [device, other] = fleet as [FleetDevice, FleetDevice];
    const current = { keyId: device.keyId, key: device.key };
    const rotated = await controller.rotate(device.id);
    expect(rotated.status).toBe('offered');
    const keyId = (rotated as { keyId: number }).keyId;
    await time.advance(RESEND_MS);
    expect(await controller.tick()).toEqual([{ deviceId: device.id, status: 'resent', keyId }]);

    expect(session.published.map((p) => p.topic)).toEqual([keyTopic(device.id), keyTopic(device.id)]);
    const [first, resent] = session.published.map((p) => p.payload) as [Uint8Array, Uint8Array];
    for (const payload of [first, resent]) {
      expect(payload).toHaveLength(KEY_OFFER_LENGTH);
      const opened = openKeyOffer([current], device.id, payload);
      if (!opened.ok) throw new Error(opened.reason);
      expect(opened.value).toMatchObject({ sealingKeyId: device.keyId, keyId });
      expect(Buffer.from(payload).includes(Buffer.from(opened.value.key))).toBe(false);
      // Another device, even one holding the same key id and bytes, cannot open it: its id is in the AAD.
      expect(openKeyOffer([current], other.id, payload)).toEqual({ ok: false, reason: 'unauthentic' });
      expect(openKeyOffer([{ keyId: other.keyId, key: other.key }], other.id, payload)).toEqual({
        ok: false,
        reason: 'unknown-sealing-key',
      });
    }
    expect(Buffer.from(first.subarray(8, 20)).equals(Buffer.from(resent.subarray(8, 20)))).toBe(false);
  });

  it('completes on the ack of a device holding only the new key [KO-8], then seals the next rotation under it', async () => {
    const { controller, session, store } = setup();
    const device = fleet[0]!;
    const first = await controller.rotate(device.id);
    const keyId = (first as { keyId: number }).keyId;
    const opened = openKeyOffer(
      [{ keyId: device.keyId, key: device.key }],
      device.id,
      session.published[0]!.payload,
    );
    if (!opened.ok) throw new Error(opened.reason);
    const held = { keyId, key: opened.value.key };
    // What the device answers to an offer it cannot open (sealed under the key it replaced): an ack of `held`.
    const reack = makeKeyAck(held.key, held.keyId, systemRandom.randomBytes(16));
    expect(await controller.handleMessage(keyAckTopic(device.id), Buffer.from(encodeKeyAck(reack)))).toEqual({
      ok: true,
      deviceId: device.id,
      keyId,
    });
    expect((await store.get(device.id))?.keys.map((k) => [k.keyId, k.state])).toEqual([
      [device.keyId, 'current'],
      [keyId, 'current'],
    ]);

    const second = await controller.rotate(device.id);
    expect(second.status).toBe('offered');
    const next = openKeyOffer([held], device.id, session.published[1]!.payload);
    expect(next.ok && next.value.sealingKeyId).toBe(keyId);
    expect(
      openKeyOffer([{ keyId: device.keyId, key: device.key }], device.id, session.published[1]!.payload),
    ).toEqual({ ok: false, reason: 'unknown-sealing-key' });
  });

  it('fails the rotation, naming the fix, and changes and publishes nothing when the current key has no key material', async () => {
    const device = fleet[1]!;
    const { controller, session, audit, store } = setup(device.keyId);
    const before = await store.get(device.id);
    const outcome = await controller.rotate(device.id);
    expect(outcome).toMatchObject({
      status: 'failed',
      error: expect.stringMatching(new RegExp(`current key ${device.keyId} has no key material.*; fix: `)),
    });
    expect(session.published).toEqual([]);
    expect(await store.get(device.id)).toEqual(before); // no pending key recorded that could never be offered
    expect(audit.events.map((event) => event.type)).toContain('key.rotation-failed');
    expect(JSON.stringify(audit.events)).not.toContain(Buffer.from(device.key).toString('base64'));
  });
});
