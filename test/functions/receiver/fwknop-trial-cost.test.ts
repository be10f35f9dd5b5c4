/**
 * The cost of an fwknop packet in the receiver [FKO-15]: with N candidate devices, one shape check per packet and
 * one HMAC per candidate tried — N for a packet no candidate signed or for the last candidate's packet, never N+1
 * (the HMAC of the matching candidate is not computed a second time to decrypt).
 *
 * How it counts: vi.mock wraps the codec's own crypto and base64 modules (spa/fwknop-crypto.ts,
 * spa/fwknop-base64.ts) with pass-through spies — the real functions run, nothing is replaced, and node:crypto is
 * not touched. `hmacBase64` is the only HMAC in the codec (checked below against the source of spa/), so every HMAC
 * the receiver computes is counted; `isBase64Bytes` is the shape rule [FKO-2] that only readFwknopFrame runs.
 */
import { createHmac } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { Device, RemoteEndpoint } from '../../../functions/core/interfaces.ts';
import { handleDatagram } from '../../../functions/receiver/handle-datagram.ts';
import { isBase64Bytes } from '../../../spa/fwknop-base64.ts';
import { hmacBase64 } from '../../../spa/fwknop-crypto.ts';
import { bytesFrom, FWKNOP_ENCRYPTION_KEY, fwknopPacket, harness, makeDevice, T0 } from './helpers.ts';

vi.mock('../../../spa/fwknop-crypto.ts', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../../../spa/fwknop-crypto.ts')>();
  return { ...actual, hmacBase64: vi.fn(actual.hmacBase64) };
});
vi.mock('../../../spa/fwknop-base64.ts', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../../../spa/fwknop-base64.ts')>();
  return { ...actual, isBase64Bytes: vi.fn(actual.isBase64Bytes) };
});

const hmacs = vi.mocked(hmacBase64);
const shapeChecks = vi.mocked(isBase64Bytes);
const REMOTE: RemoteEndpoint = { address: '192.0.2.10', family: 4, port: 40_000 };
const SECONDS = Math.floor(T0 / 1000);
const N = 5;

const hmacKeyOf = (i: number) => bytesFrom(`candidate ${i} hmac key`, 64);

/** N devices, all fwknop candidates for any source (StaticDeviceDirectory), each with its own HMAC key. */
function candidates(n: number): Device[] {
  return Array.from({ length: n }, (_, i) =>
    makeDevice({
      id: `device-${i + 1}`,
      nativeKeys: [],
      fwknop: {
        username: 'demo',
        encryptionKey: FWKNOP_ENCRYPTION_KEY,
        hmacKey: hmacKeyOf(i + 1),
        hmacType: 'sha256',
      },
    }),
  );
}

/** The HMACs and shape checks one datagram costs the receiver, and its outcome. */
async function costOf(wire: Uint8Array, devices: readonly Device[]) {
  const h = harness({ devices });
  hmacs.mockClear();
  shapeChecks.mockClear();
  const outcome = await handleDatagram(wire, REMOTE, h.deps);
  return { outcome, hmacs: hmacs.mock.calls.length, shapeChecks: shapeChecks.mock.calls.length };
}

describe(`fwknop trial over ${N} candidates: one shape check per packet, one HMAC per candidate`, () => {
  beforeEach(() => {
    hmacs.mockClear();
    shapeChecks.mockClear();
  });

  it('the spies observe the real functions, and the codec has no other HMAC', () => {
    const direct = createHmac('sha256', Buffer.from([1]))
      .update(Buffer.from([2]))
      .digest('base64');
    expect(hmacBase64('sha256', new Uint8Array([1]), new Uint8Array([2]))).toBe(direct.replace(/=+$/, ''));
    expect(hmacs).toHaveBeenCalledTimes(1);
    const spaDir = new URL('../../../spa/', import.meta.url);
    const usesHmac = readdirSync(spaDir).filter((file) =>
      /createHmac|subtle/.test(readFileSync(new URL(file, spaDir), 'utf8')),
    );
    expect(usesHmac).toEqual(['fwknop-crypto.ts']);
  });

  it("the last candidate's packet: N HMACs (not N+1), 1 shape check, accepted", async () => {
    const wire = fwknopPacket({ timestampSeconds: SECONDS }, { hmacKey: hmacKeyOf(N) });
    const cost = await costOf(wire, candidates(N));
    expect(cost.outcome).toMatchObject({ ok: true, value: { deviceId: `device-${N}`, format: 'fwknop' } });
    expect(cost.hmacs).toBe(N);
    expect(cost.shapeChecks).toBe(1);
  });

  it("the first candidate's packet: 1 HMAC (the trial stops at the match, decryption reuses it)", async () => {
    const wire = fwknopPacket({ timestampSeconds: SECONDS }, { hmacKey: hmacKeyOf(1) });
    const cost = await costOf(wire, candidates(N));
    expect(cost.outcome).toMatchObject({ ok: true, value: { deviceId: 'device-1' } });
    expect(cost.hmacs).toBe(1);
    expect(cost.shapeChecks).toBe(1);
  });

  it('a packet no candidate signed: N HMACs, 1 shape check, auth-failed', async () => {
    const wire = fwknopPacket({ timestampSeconds: SECONDS }, { hmacKey: hmacKeyOf(N + 1) });
    const cost = await costOf(wire, candidates(N));
    expect(cost.outcome).toEqual({ ok: false, reason: 'auth-failed' });
    expect(cost.hmacs).toBe(N);
    expect(cost.shapeChecks).toBe(1);
  });

  it("the last candidate's HMAC key with a wrong encryption key: N HMACs, then malformed", async () => {
    const wire = fwknopPacket(
      { timestampSeconds: SECONDS },
      { hmacKey: hmacKeyOf(N), encryptionKey: bytesFrom('other enc', 32) },
    );
    const cost = await costOf(wire, candidates(N));
    expect(cost.outcome).toEqual({ ok: false, reason: 'malformed' });
    expect(cost.hmacs).toBe(N);
    expect(cost.shapeChecks).toBe(1);
  });

  it('a malformed shape costs one shape check and no HMAC', async () => {
    const wire = fwknopPacket({ timestampSeconds: SECONDS }, { hmacKey: hmacKeyOf(1) });
    const cost = await costOf(wire.subarray(0, 139), candidates(N));
    expect(cost.outcome).toEqual({ ok: false, reason: 'too-short' });
    expect(cost.hmacs).toBe(0);
    const junk = Uint8Array.from(wire);
    junk[100] = 0x3d; // '='
    const junkCost = await costOf(junk, candidates(N));
    expect(junkCost.outcome).toEqual({ ok: false, reason: 'bad-magic' });
    expect(junkCost.hmacs).toBe(0);
    expect(junkCost.shapeChecks).toBe(1);
  });

  it('a candidate whose HMAC key cannot be valid is passed over without an HMAC, as before', async () => {
    const devices = candidates(N);
    const broken = makeDevice({
      id: 'device-broken',
      nativeKeys: [],
      fwknop: { ...devices[0]!.fwknop!, hmacKey: new Uint8Array(200) }, // over 128 bytes [FKO-6]
    });
    const wire = fwknopPacket({ timestampSeconds: SECONDS }, { hmacKey: hmacKeyOf(2) });
    const cost = await costOf(wire, [broken, ...devices]);
    expect(cost.outcome).toMatchObject({ ok: true, value: { deviceId: 'device-2' } });
    expect(cost.hmacs).toBe(2);
  });
});
