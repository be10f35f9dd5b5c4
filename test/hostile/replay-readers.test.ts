/**
 * The replay storm of replay.test.ts against a multi-reader receiver over real UDP (`readers: 2`, SO_REUSEPORT on
 * 127.0.0.1, port 0), both as reader worker threads (reader-workers.ts: the workers authenticate, the main thread
 * decides) and as sockets in one process (udp-receiver.ts): the same valid knock sent from many sockets, which the
 * kernel spreads over both readers, is accepted exactly once (both formats); fresh knocks of several devices are
 * all accepted; closing the receiver leaves no socket on the port.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startReaderWorkers } from '../../functions/receiver/reader-workers.ts';
import { MAX_READERS, type RunningReceiver, startReceiver } from '../../functions/receiver/udp-receiver.ts';
import {
  BC1_KEY_ID,
  bc1Packet,
  bytesFrom,
  fwknopPacket,
  type Harness,
  harness,
  makeDevice,
  T0,
} from '../functions/receiver/helpers.ts';

const READERS = 2;
const SENDERS = 50;
const ROUNDS = 40; // 2,000 copies in all
const TIMEOUT = 60_000;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const closeSocket = (socket: Socket): Promise<void> =>
  new Promise((resolve) => socket.close(() => resolve()));

async function openSenders(count: number): Promise<Socket[]> {
  const sockets = await Promise.all(
    Array.from({ length: count }, async () => {
      const socket = createSocket('udp4');
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
      return socket;
    }),
  );
  cleanups.push(async () => {
    await Promise.all(sockets.map(closeSocket));
  });
  return sockets;
}

function send(socket: Socket, bytes: Uint8Array, port: number): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(bytes, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  );
}

type Mode = 'reader threads' | 'sockets in one process';
const MODES: readonly Mode[] = ['reader threads', 'sockets in one process'];

async function start(h: Harness, readers = READERS, mode: Mode = 'reader threads'): Promise<RunningReceiver> {
  const options = { host: '127.0.0.1', port: 0, deps: h.deps, readers, maxInFlight: 65_536 };
  const receiver =
    mode === 'reader threads'
      ? await startReaderWorkers({ ...options, devices: () => h.directory.devices(), rejectAudit: false })
      : await startReceiver(options);
  cleanups.push(async () => {
    await receiver.close();
    await h.deps.grants.close();
  });
  return receiver;
}

const totalRead = (receiver: RunningReceiver): number =>
  receiver.datagramsPerReader().reduce((a, b) => a + b, 0);

/** Whether a plain socket (no SO_REUSEPORT) can bind the port now: only when no reader is left on it. */
async function portIsFree(port: number): Promise<boolean> {
  const probe = createSocket({ type: 'udp4', reuseAddr: false });
  return new Promise((resolve) => {
    probe.once('error', () => {
      probe.close();
      resolve(false);
    });
    probe.bind({ address: '127.0.0.1', port, exclusive: true }, () => {
      probe.close(() => resolve(true));
    });
  });
}

/**
 * Sends `packet` SENDERS x ROUNDS times, one copy per sender per round, and waits after each round until the
 * receiver has read every copy sent so far (so loopback's buffer never overflows and every copy is decided).
 */
async function storm(receiver: RunningReceiver, packet: Uint8Array): Promise<void> {
  const senders = await openSenders(SENDERS);
  for (let round = 1; round <= ROUNDS; round++) {
    await Promise.all(senders.map((socket) => send(socket, packet, receiver.address.port)));
    await vi.waitFor(() => expect(totalRead(receiver)).toBe(round * SENDERS), {
      timeout: 10_000,
      interval: 5,
    });
  }
}

describe(`replay storm over real UDP against ${READERS} readers on one port (SO_REUSEPORT)`, () => {
  const copies = SENDERS * ROUNDS;

  for (const mode of MODES)
    for (const format of ['BC1', 'fwknop'] as const) {
      it(
        `${mode}: a valid ${format} knock ${copies.toLocaleString('en-US')} times from ${SENDERS} sockets: both readers read copies, accepted exactly once`,
        async () => {
          const h = harness();
          const receiver = await start(h, READERS, mode);
          const packet =
            format === 'BC1'
              ? bc1Packet({ timestampMs: T0 })
              : fwknopPacket({ timestampSeconds: Math.floor(T0 / 1000) });
          await storm(receiver, packet);
          await vi.waitFor(() => expect(receiver.counters().received).toBe(copies), {
            timeout: 10_000,
            interval: 10,
          });
          const perReader = receiver.datagramsPerReader();
          expect(perReader).toHaveLength(READERS);
          // The kernel spread the 50 source ports over both readers, so "once" held across readers.
          for (const read of perReader) expect(read).toBeGreaterThan(0);
          expect(receiver.counters()).toMatchObject({
            received: copies,
            accepted: 1,
            rejected: copies - 1,
            'rejected.replay': copies - 1,
          });
          expect(h.firewall.calls.filter((call) => call.op === 'allow')).toHaveLength(1);
        },
        TIMEOUT,
      );
    }

  it(
    'reader threads: fresh BC1 knocks of 8 devices, each from its own socket, sent twice: all 8 accepted, the 8 copies replays',
    async () => {
      const devices = Array.from({ length: 8 }, (_, i) =>
        makeDevice({
          id: `device-${i}`,
          nativeKeys: [{ keyId: BC1_KEY_ID + 1 + i, key: bytesFrom(`reader key ${i}`, 32) }],
          fwknop: { ...makeDevice().fwknop!, username: `reader${i}` },
        }),
      );
      const h = harness({ devices });
      const receiver = await start(h);
      const senders = await openSenders(devices.length);
      const knocks = devices.map((device) =>
        bc1Packet({ timestampMs: T0, keyId: device.nativeKeys[0]!.keyId, key: device.nativeKeys[0]!.key }),
      );
      for (let pass = 0; pass < 2; pass++) {
        await Promise.all(senders.map((socket, i) => send(socket, knocks[i]!, receiver.address.port)));
      }
      await vi.waitFor(() => expect(totalRead(receiver)).toBe(16), { timeout: 10_000, interval: 10 });
      await vi.waitFor(
        () => expect(receiver.counters()).toMatchObject({ accepted: 8, rejected: 8, 'rejected.replay': 8 }),
        {
          timeout: 10_000,
          interval: 10,
        },
      );
      const granted = h.firewall.calls
        .filter((call) => call.op === 'allow')
        .flatMap((call) => call.grants.map((grant) => grant.deviceId));
      expect(granted.sort()).toEqual(devices.map((device) => device.id).sort());
    },
    TIMEOUT,
  );

  it(
    'closing the receiver closes every reader: the port is busy while it runs, free (no socket left) after close',
    async () => {
      const h = harness();
      const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps: h.deps, readers: 3 });
      const { port } = receiver.address;
      expect(receiver.datagramsPerReader()).toEqual([0, 0, 0]);
      expect(await portIsFree(port)).toBe(false);
      await receiver.close();
      await receiver.close(); // idempotent
      expect(await portIsFree(port)).toBe(true);
      await h.deps.grants.close();
    },
    TIMEOUT,
  );

  it('readers outside 1..MAX_READERS (or not an integer) are refused before anything is bound', async () => {
    for (const readers of [0, -1, 1.5, MAX_READERS + 1, Number.NaN]) {
      await expect(
        startReceiver({ host: '127.0.0.1', port: 0, deps: harness().deps, readers }),
      ).rejects.toThrow(/readers must be an integer from 1 to 64/);
    }
  });

  it('one reader (the default) has no SO_REUSEPORT: a second SO_REUSEPORT socket cannot join its port', async () => {
    const h = harness();
    const receiver = await start(h, 1);
    const intruder = createSocket({ type: 'udp4', reusePort: true });
    const joined = await new Promise<boolean>((resolve) => {
      intruder.once('error', () => resolve(false));
      intruder.bind({ address: '127.0.0.1', port: receiver.address.port }, () => resolve(true));
    });
    await closeSocket(intruder).catch(() => undefined);
    expect(joined).toBe(false);
    expect(receiver.datagramsPerReader()).toEqual([0]);
  });
});
