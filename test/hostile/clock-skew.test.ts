/**
 * Clock skew at the window edges, exactly by the rule [BC1-6] |now - timestamp| <= window, under a frozen virtual
 * clock: ±1 ms around both edges for BC1 (millisecond timestamps), ±1 s for fwknop (second timestamps, compared
 * as seconds x 1000), the configured window as well as the default, and the memory store's start-time guard
 * (a packet stamped 1 ms before the store began is 'before-start').
 */
import { describe, expect, it } from 'vitest';
import { handleDatagram } from '../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps } from '../../functions/receiver/receiver-deps.ts';
import { bc1Packet, fwknopPacket, harness, T0 } from '../functions/receiver/helpers.ts';

const WINDOW = 60_000;
let port = 1;
const from = () => ({ address: '192.0.2.44', family: 4 as const, port: port++ });

async function verdict(packet: Uint8Array, h = harness()): Promise<string> {
  const outcome = await handleDatagram(packet, from(), h.deps);
  await h.deps.grants.close();
  return outcome.ok ? 'accepted' : outcome.reason;
}

describe('BC1 timestamps at the window edges (default window 60 s, now = T0)', () => {
  it.each([
    ['past edge - 1 ms', -WINDOW - 1, 'stale'],
    ['past edge', -WINDOW, 'accepted'],
    ['past edge + 1 ms', -WINDOW + 1, 'accepted'],
    ['now - 1 ms', -1, 'accepted'],
    ['now', 0, 'accepted'],
    ['now + 1 ms', 1, 'accepted'],
    ['future edge - 1 ms', WINDOW - 1, 'accepted'],
    ['future edge', WINDOW, 'accepted'],
    ['future edge + 1 ms', WINDOW + 1, 'stale'],
    ['an hour ahead', 3_600_000, 'stale'],
    ['the epoch', -T0, 'stale'],
  ])('%s (%i ms): %s', async (_name, offset, expected) => {
    expect(await verdict(bc1Packet({ timestampMs: T0 + offset }))).toBe(expected);
  });
});

describe('fwknop timestamps (seconds) at the window edges', () => {
  const seconds = T0 / 1000;
  it.each([
    ['past edge - 1 s', -61, 0, 'stale'],
    ['past edge', -60, 0, 'accepted'],
    ['future edge', 60, 0, 'accepted'],
    ['future edge + 1 s', 61, 0, 'stale'],
    // The receiver's clock 1 ms past a whole second: a packet stamped exactly 60 s earlier is 60.001 s old.
    ['past edge, clock at +1 ms', -60, 1, 'stale'],
    ['future edge, clock at -1 ms', 60, -1, 'stale'],
  ])('%s: %s', async (_name, offsetSeconds, clockOffsetMs, expected) => {
    const h = harness();
    await h.time.advance(Math.max(clockOffsetMs, 0));
    if (clockOffsetMs < 0) h.time.set(T0 + clockOffsetMs);
    expect(await verdict(fwknopPacket({ timestampSeconds: seconds + offsetSeconds }), h)).toBe(expected);
  });
});

describe('a configured window (5 s)', () => {
  it.each([
    [-5001, 'stale'],
    [-5000, 'accepted'],
    [5000, 'accepted'],
    [5001, 'stale'],
  ])('%i ms: %s', async (offset, expected) => {
    const h = harness();
    const deps = createReceiverDeps({
      directory: h.directory,
      nonces: h.nonces,
      firewall: h.firewall,
      audit: h.audit,
      clock: h.time,
      timers: h.time,
      config: { clockWindowMs: 5000 },
    });
    const outcome = await handleDatagram(bc1Packet({ timestampMs: T0 + offset }), from(), deps);
    await deps.grants.close();
    expect(outcome.ok ? 'accepted' : outcome.reason).toBe(expected);
  });
});

describe('the memory store start-time guard at its edge', () => {
  it('stamped 1 ms before the store began: before-start; at its start: accepted', async () => {
    const started = T0 - 10_000;
    const early = harness({ nonces: new MemoryNonceStore({ clock: { now: () => started } }) });
    expect(await verdict(bc1Packet({ timestampMs: started - 1 }), early)).toBe('before-start');
    const onTime = harness({ nonces: new MemoryNonceStore({ clock: { now: () => started } }) });
    expect(await verdict(bc1Packet({ timestampMs: started }), onTime)).toBe('accepted');
  });
});
