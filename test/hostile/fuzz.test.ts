/**
 * Fuzzing the receiver: at least 1,000,000 hostile datagrams (mutated from valid BC1 and fwknop packets, and
 * random) through `handleDatagram` in-process, the function the receiver runs per datagram; then a smaller run
 * over real UDP asserting that not one byte comes back and that a valid knock still gets in.
 *
 * Properties: no exception escapes, no 'internal-error', every datagram is counted exactly once, nothing but a
 * byte-identical valid original is ever accepted (and each one at most once), the nonce store only holds
 * accepted packets, and memory stays bounded (heap before/after printed). `FUZZ_PACKETS=N` runs more on demand;
 * `FUZZ_SEED=S` replays a run.
 */
import { createSocket } from 'node:dgram';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { RemoteEndpoint } from '../../functions/core/interfaces.ts';
import { handleDatagram, screenDatagram } from '../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps } from '../../functions/receiver/receiver-deps.ts';
import { startReceiver } from '../../functions/receiver/udp-receiver.ts';
import { BC1_KEY_ID, bc1Packet, fwknopPacket, harness, T0 } from '../functions/receiver/helpers.ts';
import { PacketFuzzer, sameBytes, Xorshift } from './fuzz-support.ts';

const PACKETS = Number(process.env.FUZZ_PACKETS ?? 1_000_000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const CONCURRENCY = 64;
const HEAP_GROWTH_LIMIT = 32 * 1024 * 1024;

/** Source addresses as a socket could report them, including forms canonicalSource must normalise. */
const SOURCES: RemoteEndpoint[] = [
  ...Array.from({ length: 200 }, (_, i) => ({
    address: `198.51.100.${i}`,
    family: 4 as const,
    port: 40000 + i,
  })),
  { address: '::ffff:203.0.113.7', family: 6, port: 1 },
  { address: 'fe80::1%eth0', family: 6, port: 2 },
  { address: '2001:db8::1', family: 6, port: 3 },
  { address: '2001:0db8:0000:0000:0000:0000:0000:0002', family: 6, port: 4 },
  { address: 'not-an-address', family: 6, port: 5 },
  { address: '', family: 4, port: 0 },
];

function validPackets(): Uint8Array[] {
  const seconds = Math.floor(T0 / 1000);
  return [
    ...Array.from({ length: 32 }, () => bc1Packet({ timestampMs: T0 })),
    ...Array.from({ length: 8 }, () =>
      bc1Packet({ timestampMs: T0, access: [{ protocol: 'udp', port: 5683 }], durationSeconds: 60 }),
    ),
    ...Array.from({ length: 32 }, () => fwknopPacket({ timestampSeconds: seconds })),
  ];
}

// A real collection before each heap reading, so the figures are live memory, not garbage not yet collected.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

function heapUsed(): number {
  collectGarbage();
  return process.memoryUsage().heapUsed;
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;
const report: string[] = [];
afterAll(() => {
  for (const line of report) console.log(line);
});

describe('fuzzing handleDatagram', () => {
  it(
    `${PACKETS.toLocaleString('en-US')} hostile datagrams: nothing escapes, nothing forged is accepted, memory bounded`,
    async () => {
      // The rate limiter is wide open here so that the fuzz reaches the deep steps (it is tested in rate-limit.test.ts).
      // Every event is audited, into a sink that counts them (keeping a million events would measure the test).
      const base = harness();
      const auditCounts = new Map<string, number>();
      const h = {
        ...base,
        deps: createReceiverDeps({
          directory: base.directory,
          nonces: base.nonces,
          firewall: base.firewall,
          audit: { write: (event) => auditCounts.set(event.type, (auditCounts.get(event.type) ?? 0) + 1) },
          clock: base.time,
          timers: base.time,
          rejectAudit: false,
          rateLimit: { burst: 1_000_000_000, ratePerSecond: 1_000_000_000 },
          // Likewise the per-device knock budget: the fuzzer re-sends the device's own authentic packets, and a
          // budget (or address cap) spent on them would hide the deep steps (both tested in device-bounds.test.ts).
          deviceBounds: { knockBurst: 100_000, knocksPerMinute: 6_000_000, maxAddressesPerDevice: 1000 },
        }),
      };
      const nonces = h.nonces;
      expect(nonces).toBeInstanceOf(MemoryNonceStore);
      const valid = validPackets();
      const fuzzer = new PacketFuzzer(SEED, valid, BC1_KEY_ID);
      const rng = new Xorshift(SEED ^ 0x5bd1e995);
      const acceptedOriginals = new Set<number>();
      const byMutation = new Map<string, number>();
      let escaped = 0;
      let forged = 0;

      const heapBefore = heapUsed();
      const started = performance.now();
      for (let done = 0; done < PACKETS; done += CONCURRENCY) {
        const batch = Math.min(CONCURRENCY, PACKETS - done);
        const inFlight: Promise<void>[] = [];
        for (let j = 0; j < batch; j++) {
          const { mutation, bytes } = fuzzer.next();
          byMutation.set(mutation, (byMutation.get(mutation) ?? 0) + 1);
          const source = SOURCES[rng.below(SOURCES.length)]!;
          inFlight.push(
            handleDatagram(bytes, source, h.deps).then(
              (outcome) => {
                if (!outcome.ok) return;
                const original = valid.findIndex((packet) => sameBytes(packet, bytes));
                if (original < 0 || acceptedOriginals.has(original)) forged++;
                else acceptedOriginals.add(original);
              },
              () => {
                escaped++;
              },
            ),
          );
        }
        await Promise.all(inFlight);
        // Time moves on a little (1 ms per batch), as it would under a flood; the packets stay inside the window.
        if (done % (CONCURRENCY * 64) === 0) await h.time.advance(1);
      }
      const seconds = (performance.now() - started) / 1000;
      const heapAfter = heapUsed();

      const counters = h.deps.counters.snapshot();
      report.push(
        `fuzz: ${PACKETS.toLocaleString('en-US')} datagrams (seed ${SEED}) in ${seconds.toFixed(1)} s; ` +
          `heap before ${mb(heapBefore)}, after ${mb(heapAfter)}; accepted ${counters.accepted ?? 0}; ` +
          `mutations ${JSON.stringify(Object.fromEntries(byMutation))}`,
        `fuzz: rejections ${JSON.stringify(
          Object.fromEntries(Object.entries(counters).filter(([name]) => name.startsWith('rejected.'))),
        )}`,
      );
      expect(auditCounts.get('packet.rejected')).toBe(counters.rejected);
      expect(escaped).toBe(0);
      expect(forged).toBe(0);
      expect(counters.received).toBe(PACKETS);
      expect((counters.accepted ?? 0) + (counters.rejected ?? 0)).toBe(PACKETS);
      expect(counters['rejected.internal-error']).toBeUndefined();
      // The fuzzer reached every stage: framing, key lookup, AEAD / HMAC, replay.
      for (const reason of ['too-short', 'bad-magic', 'unknown-key', 'auth-failed', 'replay']) {
        expect(counters[`rejected.${reason}`], reason).toBeGreaterThan(0);
      }
      expect(acceptedOriginals.size).toBe(counters.accepted);
      expect((nonces as MemoryNonceStore).size).toBe(counters.accepted);
      expect(h.firewall.calls.every((call) => call.op === 'allow')).toBe(true);
      expect(heapAfter - heapBefore).toBeLessThan(HEAP_GROWTH_LIMIT);
      await h.deps.grants.close();
    },
    Math.max(240_000, PACKETS * 0.25),
  );
});

describe('the synchronous screen (what the socket loop runs first)', () => {
  it('rejects exactly what handleDatagram rejects at the frame and rate-limit steps, without a promise', async () => {
    // One set of deps, as the socket loop has: the per-source budget is spent by authentication failures, which
    // only the full pipeline sees, so the screen must read the state that the pipeline wrote.
    const h = harness();
    const fuzzer = new PacketFuzzer(SEED, validPackets(), BC1_KEY_ID);
    let screenedOut = 0;
    for (let i = 0; i < 20_000; i++) {
      const { bytes } = fuzzer.next();
      const source = SOURCES[i % 3]!; // few sources: the rate limit engages
      const screened = screenDatagram(bytes, source, h.deps);
      // A screen rejection spends nothing, so the pipeline on the same deps must reach the same outcome.
      const full = await handleDatagram(bytes, source, h.deps);
      if (!screened.pass) {
        screenedOut++;
        expect(screened.outcome).not.toBeInstanceOf(Promise);
        expect(screened.outcome).toEqual(full);
      } else {
        expect(['too-short', 'too-long', 'bad-magic', 'rate-limited']).not.toContain(
          full.ok ? '' : full.reason,
        );
      }
    }
    expect(screenedOut).toBeGreaterThan(10_000);
    await h.deps.grants.close();
  });
});

describe('fuzzing the receiver over real UDP', () => {
  it('20,000 hostile datagrams from two sockets: not one byte back, no ICMP error, a valid knock still gets in', async () => {
    // The fuzzer re-sends the device's own authentic packets: without a wide per-device budget, those (not the junk)
    // would spend the device's knocks before its own (device-bounds.test.ts tests the budget).
    const h = harness({ deviceBounds: { knockBurst: 100_000, knocksPerMinute: 6_000_000 } });
    const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps: h.deps });
    const replies: Buffer[] = [];
    const errors: Error[] = [];
    const sockets = await Promise.all(
      ['127.0.0.1', '127.0.0.2'].map(async (from) => {
        const socket = createSocket('udp4');
        socket.on('message', (message) => replies.push(message));
        socket.on('error', (error) => errors.push(error));
        await new Promise<void>((resolve) => socket.bind(0, from, resolve));
        // Connected: an ICMP port-unreachable (or any error the kernel reports) would surface as an 'error'.
        await new Promise<void>((resolve) => socket.connect(receiver.address.port, '127.0.0.1', resolve));
        return socket;
      }),
    );
    try {
      const fuzzer = new PacketFuzzer(SEED, validPackets(), BC1_KEY_ID);
      const TOTAL = 20_000;
      for (let i = 0; i < TOTAL; i++) {
        const bytes = fuzzer.next().bytes;
        // Oversized datagrams (> 65507 B) cannot exist; everything the fuzzer makes is at most ~1.7 kB.
        sockets[i % 2]!.send(bytes);
        // Paced so that the receiver (same process, same event loop) gets to read: this part checks silence, not speed.
        if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 1));
      }
      await vi.waitFor(
        () =>
          expect(
            (receiver.counters().received ?? 0) + (receiver.counters()['dropped.overload'] ?? 0),
          ).toBeGreaterThan(TOTAL / 2),
        { timeout: 20_000, interval: 50 },
      );
      const device = createSocket('udp4');
      device.on('message', (message) => replies.push(message));
      await new Promise<void>((resolve) => device.bind(0, '127.0.0.3', resolve));
      await vi.waitFor(
        async () => {
          await new Promise<void>((resolve, reject) =>
            device.send(bc1Packet({ timestampMs: T0 }), receiver.address.port, '127.0.0.1', (error) =>
              error ? reject(error) : resolve(),
            ),
          );
          await new Promise((resolve) => setTimeout(resolve, 20));
          expect(h.firewall.isOpen('127.0.0.3', 'tcp/8883')).toBe(true);
        },
        { timeout: 10_000, interval: 50 },
      );
      // Anything the receiver might (wrongly) send would be on its way by now; listen a little longer.
      await new Promise((resolve) => setTimeout(resolve, 300));
      device.close();
      expect(replies).toEqual([]);
      expect(errors).toEqual([]);
      expect(receiver.counters()['rejected.internal-error']).toBeUndefined();
      report.push(`fuzz over UDP: ${JSON.stringify(receiver.counters())}`);
    } finally {
      for (const socket of sockets) socket.close();
      await receiver.close();
      await h.deps.grants.close();
    }
  }, 60_000);
});
