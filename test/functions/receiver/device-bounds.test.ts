/**
 * Per-device bounds (docs/threat-model.md, "Stolen device key" and "Off-path attacker"): each attack of the audit
 * reproduced, and the legitimate device still gets in.
 * (a) one stolen key knocking from 60 spoofed addresses cannot fill a firewall's 60 rule slots: the grant manager
 *     keeps at most `maxAddressesPerDevice` (4) addresses per device, releasing the oldest;
 * (b) one stolen key knocking without end cannot fill the nonce store (memory and file): its share is bounded;
 *     and it cannot take more than its accepted-knock budget per minute;
 * (c) spoofed junk "from" a device's address (or its IPv6 /64) at 10/s does not rate-limit the device's knocks:
 *     the per-source bucket is spent only by packets that fail authentication, keyed by the key id they name.
 * Real in-memory adapters under the virtual clock; no mocks of our own code.
 */
import { describe, expect, it } from 'vitest';
import type { Device, Firewall, Grant } from '../../../functions/core/interfaces.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { GrantManager } from '../../../functions/receiver/grant-manager.ts';
import { handleDatagram } from '../../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../../../functions/receiver/memory-nonce-store.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import {
  bc1Packet,
  bytesFrom,
  fwknopPacket,
  harness,
  makeDevice,
  RecordingExpiryScheduler,
  T0,
  TCP_8883,
} from './helpers.ts';

const STOLEN_KEY = bytesFrom('stolen device key', 32);
const STOLEN_KEY_ID = 0x0bad_0001;
const stolenDevice: Device = makeDevice({
  id: 'stolen-device',
  nativeKeys: [{ keyId: STOLEN_KEY_ID, key: STOLEN_KEY }],
});
const legitDevice: Device = makeDevice(); // demo-device, BC1_KEY_ID

/**
 * A firewall with a fixed number of rule slots, one per address (as a security group's rules-per-group quota):
 * an allow for a new address when every slot is taken fails, as the EC2 firewall does after waiting for a slot.
 */
class SlotFirewall implements Firewall {
  readonly open = new Map<string, Grant>();
  readonly slots: number;
  constructor(slots: number) {
    this.slots = slots;
  }

  async allow(grants: readonly Grant[]): Promise<void> {
    for (const grant of grants) {
      if (!this.open.has(grant.address) && this.open.size >= this.slots) {
        throw new Error('expired while waiting for a free rule slot');
      }
      this.open.set(grant.address, grant);
    }
  }

  async revoke(grants: readonly Grant[]): Promise<void> {
    for (const grant of grants) this.open.delete(grant.address);
  }
}

const spoofed = (i: number) => ({ address: `203.0.113.${i}`, family: 4 as const });
const LEGIT_SOURCE = { address: '198.51.100.7', family: 4 as const };

describe('(a) one stolen key cannot fill the rule slots', () => {
  function manager(firewall: Firewall, time: VirtualTime): GrantManager {
    return new GrantManager({
      firewall,
      expiry: new RecordingExpiryScheduler(),
      audit: new MemoryAuditSink(),
      clock: time,
      timers: time,
    });
  }

  it('60 knocks from 60 spoofed addresses with one key hold 4 slots; the legitimate device gets in', async () => {
    const time = new VirtualTime(T0);
    const firewall = new SlotFirewall(60);
    const grants = manager(firewall, time);
    // All 60 at once (the knocks arrive together), then again: re-knocking keeps at most 4 open.
    for (let round = 0; round < 2; round++) {
      await Promise.all(
        Array.from({ length: 60 }, (_, i) => grants.open('stolen-device', spoofed(i), [TCP_8883], 300)),
      );
      await time.advance(1000);
    }
    const stolenOpen = [...firewall.open.values()].filter((grant) => grant.deviceId === 'stolen-device');
    expect(stolenOpen.length).toBeLessThanOrEqual(4);
    expect(grants.addressesOf('stolen-device')).toEqual([56, 57, 58, 59].map((i) => spoofed(i).address));
    const legit = await grants.open('demo-device', LEGIT_SOURCE, [TCP_8883], 30);
    expect(legit.ok).toBe(true);
    expect(firewall.open.has(LEGIT_SOURCE.address)).toBe(true);
    await grants.close();
  });

  it('beyond the cap the oldest address is released (revoked at once); a re-knock makes an address newest', async () => {
    const time = new VirtualTime(T0);
    const firewall = new SlotFirewall(100);
    const grants = manager(firewall, time);
    for (const i of [1, 2, 3, 4]) await grants.open('stolen-device', spoofed(i), [TCP_8883], 300);
    await grants.open('stolen-device', spoofed(1), [TCP_8883], 300); // 1 is the newest now
    await grants.open('stolen-device', spoofed(5), [TCP_8883], 300); // releases 2
    await time.advance(0);
    expect([...firewall.open.keys()].sort()).toEqual([1, 3, 4, 5].map((i) => spoofed(i).address).sort());
    expect(grants.addressesOf('stolen-device')).toEqual([3, 4, 1, 5].map((i) => spoofed(i).address));
    // Another device's grants never count against this one's cap.
    for (const i of [10, 11, 12, 13]) await grants.open('demo-device', spoofed(i), [TCP_8883], 300);
    expect(grants.active()).toHaveLength(8);
    // Expired grants leave the count: after expiry the device starts afresh.
    await time.advance(301_000);
    expect(grants.addressesOf('stolen-device')).toEqual([]);
    expect(grants.active()).toHaveLength(0);
    await grants.close();
  });

  it('through handleDatagram: the knocks of a stolen key beyond its addresses release the oldest', async () => {
    const h = harness({ devices: [stolenDevice, legitDevice], deviceBounds: { knockBurst: 1000 } });
    for (let i = 0; i < 60; i++) {
      const outcome = await handleDatagram(
        bc1Packet({ timestampMs: h.time.now(), keyId: STOLEN_KEY_ID, key: STOLEN_KEY }),
        { ...spoofed(i), port: 40_000 },
        h.deps,
      );
      expect(outcome.ok).toBe(true);
    }
    await h.time.advance(0);
    expect(h.deps.grants.active().filter((grant) => grant.deviceId === 'stolen-device')).toHaveLength(4);
    const legit = await handleDatagram(
      bc1Packet({ timestampMs: h.time.now() }),
      { ...LEGIT_SOURCE, port: 40_001 },
      h.deps,
    );
    expect(legit).toMatchObject({ ok: true, value: { deviceId: 'demo-device', status: 'opened' } });
    await h.deps.grants.close();
  });
});

describe('(b) one stolen key cannot fill the nonce store or knock without bound', () => {
  it('a million records from one device stop at its share; another device still records', async () => {
    const store = new MemoryNonceStore({ clock: new VirtualTime(T0) }); // 1,000,000 entries, 4096 per device
    let fresh = 0;
    let full = 0;
    for (let i = 0; i < 1_000_000; i++) {
      const result = await store.record(`stolen-${i}`, T0 + 60_000, 'stolen-device');
      if (result === 'fresh') fresh++;
      else if (result === 'share-full') full++;
    }
    expect({ fresh, full, size: store.size }).toEqual({ fresh: 4096, full: 1_000_000 - 4096, size: 4096 });
    expect(await store.record('legit-1', T0 + 60_000, 'demo-device')).toBe('fresh');
  }, 60_000);

  it('the share frees as records expire', async () => {
    const time = new VirtualTime(T0);
    const store = new MemoryNonceStore({ clock: time, maxEntriesPerOwner: 2 });
    expect(await store.record('a', T0 + 1000, 'd')).toBe('fresh');
    expect(await store.record('b', T0 + 1000, 'd')).toBe('fresh');
    expect(await store.record('c', T0 + 1000, 'd')).toBe('share-full');
    expect(await store.record('a', T0 + 1000, 'd')).toBe('replay'); // a replay is still a replay
    time.jump(2000);
    expect(await store.record('c', T0 + 60_000, 'd')).toBe('fresh');
    expect(store.ownedBy('d')).toBe(1);
  });

  it('through handleDatagram: the stolen key is refused once its share is full, the legitimate device gets in', async () => {
    const ref: { time?: VirtualTime } = {};
    const nonces = new MemoryNonceStore({
      clock: { now: () => ref.time?.now() ?? T0 - 3_600_000 },
      maxEntries: 1000,
      maxEntriesPerOwner: 100,
    });
    const h = harness({
      devices: [stolenDevice, legitDevice],
      nonces,
      deviceBounds: { knockBurst: 100_000 },
    });
    ref.time = h.time;
    const reasons = new Map<string, number>();
    for (let i = 0; i < 2000; i++) {
      const outcome = await handleDatagram(
        bc1Packet({ timestampMs: h.time.now(), keyId: STOLEN_KEY_ID, key: STOLEN_KEY }),
        { address: '203.0.113.9', family: 4, port: 40_000 },
        h.deps,
      );
      const reason = outcome.ok ? 'accepted' : outcome.reason;
      reasons.set(reason, (reasons.get(reason) ?? 0) + 1);
    }
    expect(Object.fromEntries(reasons)).toEqual({ accepted: 100, 'nonce-share-full': 1900 });
    const legit = await handleDatagram(
      bc1Packet({ timestampMs: h.time.now() }),
      { ...LEGIT_SOURCE, port: 40_001 },
      h.deps,
    );
    expect(legit).toMatchObject({ ok: true, value: { deviceId: 'demo-device' } });
    await h.deps.grants.close();
  });

  it('accepted knocks per device: beyond its burst a device is refused (device-rate-limited), others are not', async () => {
    const h = harness({ devices: [stolenDevice, legitDevice] }); // default: 20 burst, 60 per minute
    const outcomes: string[] = [];
    for (let i = 0; i < 100; i++) {
      const outcome = await handleDatagram(
        bc1Packet({ timestampMs: h.time.now(), keyId: STOLEN_KEY_ID, key: STOLEN_KEY }),
        { address: '203.0.113.9', family: 4, port: 40_000 },
        h.deps,
      );
      outcomes.push(outcome.ok ? 'accepted' : outcome.reason);
    }
    expect(outcomes.filter((o) => o === 'accepted')).toHaveLength(20);
    expect(outcomes.filter((o) => o === 'device-rate-limited')).toHaveLength(80);
    const legit = await handleDatagram(
      bc1Packet({ timestampMs: h.time.now() }),
      { ...LEGIT_SOURCE, port: 40_001 },
      h.deps,
    );
    expect(legit.ok).toBe(true);
    // One a second refills: after 10 s, 10 more of the stolen key's knocks get in.
    await h.time.advance(10_000);
    let later = 0;
    for (let i = 0; i < 20; i++) {
      const outcome = await handleDatagram(
        bc1Packet({ timestampMs: h.time.now(), keyId: STOLEN_KEY_ID, key: STOLEN_KEY }),
        { address: '203.0.113.9', family: 4, port: 40_000 },
        h.deps,
      );
      if (outcome.ok) later++;
    }
    expect(later).toBe(10);
    await h.deps.grants.close();
  });
});

describe('(c) spoofed junk from a device address does not rate-limit the device', () => {
  const junk = (i: number): Uint8Array =>
    i % 3 === 0
      ? Uint8Array.from([0xb1, ...bytesFrom(`junk ${i}`, 60)]) // BC1-shaped, some key id
      : i % 3 === 1
        ? Uint8Array.from([0xb1, ...bytesFrom('same junk', 60)]) // BC1-shaped, one key id over and over
        : fwknopPacket({ timestampSeconds: Math.floor(T0 / 1000) }, { hmacKey: bytesFrom('wrong', 64) });

  async function trickle(
    device: { address: string; family: 4 | 6 },
    junkFrom: (i: number) => { address: string; family: 4 | 6 },
  ): Promise<string[]> {
    const h = harness();
    const outcomes: string[] = [];
    // 10 junk datagrams a second, for 10 s; the device knocks every 2 s (5 knocks).
    for (let tick = 0; tick < 100; tick++) {
      await handleDatagram(junk(tick), { ...junkFrom(tick), port: 9 }, h.deps);
      if (tick % 20 === 19) {
        const outcome = await handleDatagram(
          bc1Packet({ timestampMs: h.time.now() }),
          { ...device, port: 40_000 },
          h.deps,
        );
        outcomes.push(outcome.ok ? 'accepted' : outcome.reason);
      }
      await h.time.advance(100);
    }
    expect(h.deps.counters.snapshot().rejected).toBe(100); // every junk datagram dropped, no knock
    await h.deps.grants.close();
    return outcomes;
  }

  it('IPv4: junk at 10/s from the device address, all 5 knocks get in', async () => {
    const device = { address: '192.0.2.10', family: 4 as const };
    expect(await trickle(device, () => device)).toEqual(Array(5).fill('accepted'));
  });

  it('IPv6: junk at 10/s from other addresses of the device /64, all 5 knocks get in', async () => {
    const device = { address: '2001:db8:1:2::10', family: 6 as const };
    const outcomes = await trickle(device, (i) => ({
      address: `2001:db8:1:2:${(i + 1).toString(16)}::1`,
      family: 6,
    }));
    expect(outcomes).toEqual(Array(5).fill('accepted'));
  });

  it('the bucket still stops a source that keeps failing authentication with one key id', async () => {
    const h = harness({ devices: [stolenDevice, legitDevice] });
    const source = { address: '203.0.113.50', family: 4 as const, port: 9 };
    const reasons: string[] = [];
    for (let i = 0; i < 30; i++) {
      // The device's key id with a wrong key: auth-failed, spending the (source, key id) bucket.
      const outcome = await handleDatagram(
        bc1Packet({ timestampMs: h.time.now(), key: bytesFrom('not the key', 32) }),
        source,
        h.deps,
      );
      reasons.push(outcome.ok ? 'accepted' : outcome.reason);
    }
    expect(reasons.filter((r) => r === 'auth-failed')).toHaveLength(20);
    expect(reasons.filter((r) => r === 'rate-limited')).toHaveLength(10);
    // Another key id from the same source has its own bucket.
    const other = await handleDatagram(
      bc1Packet({ timestampMs: h.time.now(), keyId: STOLEN_KEY_ID, key: STOLEN_KEY }),
      source,
      h.deps,
    );
    expect(other.ok).toBe(true);
    await h.deps.grants.close();
  });
});
