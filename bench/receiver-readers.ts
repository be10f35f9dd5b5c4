/**
 * Readers per port: valid BC1 knocks per second over real UDP on 127.0.0.1 with `readers: 1` against `readers: N`
 * (SO_REUSEPORT, one process; docs/scaling.md, "Readers"). The sender runs in the same process (16 sockets, a
 * window of 64 unread datagrams so loopback never drops), so sender and readers share one event loop: the figure
 * says what several sockets on one loop buy, not what several cores would.
 * Run: `npm run bench -- receiver-readers [--knocks N] [--readers N]` (defaults 20,000 knocks, 2 readers).
 * Prints one line per reader count: knocks/s, and how the kernel spread the datagrams over the readers.
 */
import { createSocket, type Socket } from 'node:dgram';
import { MemoryNonceStore } from '../functions/receiver/memory-nonce-store.ts';
import { startReceiver } from '../functions/receiver/udp-receiver.ts';
import { bc1Packet, harness, T0 } from '../test/functions/receiver/helpers.ts';
import { numberOption } from './support/table.ts';

const SENDERS = 16;
const WINDOW = 64;
/** The largest per-device bounds the receiver accepts (as bench/support/receiver-child.ts). */
const OPEN_DEVICE_BOUNDS = { maxAddressesPerDevice: 1000, knockBurst: 100_000, knocksPerMinute: 6_000_000 };

async function run(readers: number, knocks: number): Promise<{ perSecond: number; perReader: number[] }> {
  const h = harness({
    nonces: new MemoryNonceStore({ clock: { now: () => T0 - 3_600_000 }, maxEntriesPerOwner: 10_000_000 }),
    rateLimit: { burst: 1e9, ratePerSecond: 1e9 },
    deviceBounds: OPEN_DEVICE_BOUNDS,
  });
  const packets = Array.from({ length: knocks }, () => bc1Packet({ timestampMs: T0 }));
  const receiver = await startReceiver({
    host: '127.0.0.1',
    port: 0,
    deps: h.deps,
    readers,
    maxInFlight: 65_536,
  });
  const senders: Socket[] = await Promise.all(
    Array.from(
      { length: SENDERS },
      () =>
        new Promise<Socket>((resolve) => {
          const socket = createSocket('udp4');
          socket.bind(0, '127.0.0.1', () =>
            socket.connect(receiver.address.port, '127.0.0.1', () => resolve(socket)),
          );
        }),
    ),
  );
  const read = (): number => receiver.datagramsPerReader().reduce((a, b) => a + b, 0);
  const started = performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (sent < knocks && sent - read() < WINDOW) {
        senders[sent % SENDERS]!.send(packets[sent]!);
        sent++;
      }
      const decided = (receiver.counters().accepted ?? 0) + (receiver.counters().rejected ?? 0);
      if (decided >= knocks || performance.now() - started > 60_000) resolve();
      else setImmediate(pump);
    };
    pump();
  });
  const seconds = (performance.now() - started) / 1000;
  const perReader = receiver.datagramsPerReader();
  const counters = receiver.counters();
  if (counters.accepted !== knocks) console.log(`not all accepted: ${JSON.stringify(counters)}`);
  await Promise.all(senders.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
  await receiver.close();
  await h.deps.grants.close();
  return { perSecond: knocks / seconds, perReader };
}

export async function main(args: readonly string[] = []): Promise<void> {
  const knocks = numberOption(args, 'knocks', 20_000, 1, 10_000_000);
  const readersMax = numberOption(args, 'readers', 2, 1, 64);
  for (const readers of [1, readersMax, 1, readersMax]) {
    const { perSecond, perReader } = await run(readers, knocks);
    console.log(
      `readers ${readers}: ${Math.round(perSecond).toLocaleString('en-US')} valid BC1 knocks/s (read per reader: ${perReader.join(', ')})`,
    );
  }
}
