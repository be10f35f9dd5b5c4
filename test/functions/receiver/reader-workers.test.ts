/**
 * The receiver on reader worker threads (reader-workers.ts) over real UDP on 127.0.0.1, port 0: junk of every
 * shape is counted across workers (summed) and crashes nothing; a reader thread that ends is replaced and counted,
 * its counts kept, and knocks still accepted; a device added after start is known to the workers once the owner
 * calls devicesChanged(); no key material reaches an audit event; a busy port is refused with no thread left.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Device } from '../../../functions/core/interfaces.ts';
import { UdpPortInUseError } from '../../../functions/receiver/errors.ts';
import { type RunningReaderWorkers, startReaderWorkers } from '../../../functions/receiver/reader-workers.ts';
import { BC1_MAGIC } from '../../../spa/limits.ts';
import {
  BC1_KEY,
  bc1Packet,
  bytesFrom,
  FWKNOP_HMAC_KEY,
  fwknopPacket,
  type Harness,
  harness,
  makeDevice,
  T0,
} from './helpers.ts';

const TIMEOUT = 30_000;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function openSender(): Promise<Socket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => socket.close(() => resolve())));
  return socket;
}

const send = (socket: Socket, bytes: Uint8Array, port: number): Promise<void> =>
  new Promise((resolve, reject) =>
    socket.send(bytes, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  );

async function start(h: Harness, devices: () => readonly Device[] = () => h.directory.devices()) {
  const receiver = await startReaderWorkers({
    host: '127.0.0.1',
    port: 0,
    readers: 2,
    deps: h.deps,
    devices,
    rejectAudit: false,
    rateLimit: { burst: 100_000, ratePerSecond: 100_000 },
  });
  cleanups.push(async () => {
    await receiver.close();
    await h.deps.grants.close();
  });
  return receiver;
}

const waitCounters = (receiver: RunningReaderWorkers, expected: Record<string, number>) =>
  vi.waitFor(() => expect(receiver.counters()).toMatchObject(expected), { timeout: 10_000, interval: 10 });

/** Junk of every shape the frame step knows, `count` datagrams in all. */
function junk(count: number): Uint8Array[] {
  const shapes = [
    (i: number) => bytesFrom(`random ${i}`, 1 + (i % 300)), // random bytes, any length
    (i: number) => Uint8Array.of(BC1_MAGIC, ...bytesFrom(`short ${i}`, 5)), // BC1 too short
    (i: number) => Uint8Array.of(BC1_MAGIC, ...bytesFrom(`forged ${i}`, 80)), // BC1, unknown key
    (i: number) => new TextEncoder().encode(`${'A'.repeat(120)}${i}`), // base64-shaped, fails every HMAC
    () => new Uint8Array(0), // empty
  ];
  return Array.from({ length: count }, (_, i) => shapes[i % shapes.length]!(i));
}

describe('reader worker threads', () => {
  it(
    'junk of every shape from 20 sockets over 2 workers: every datagram counted once in the summed counters, the valid knock among it accepted, no worker restarted',
    async () => {
      const h = harness();
      const receiver = await start(h);
      const senders = await Promise.all(Array.from({ length: 20 }, openSender));
      const datagrams = junk(1000);
      for (let i = 0; i < datagrams.length; i += senders.length) {
        await Promise.all(
          senders.map((socket, j) =>
            datagrams[i + j] === undefined
              ? undefined
              : send(socket, datagrams[i + j]!, receiver.address.port),
          ),
        );
        await vi.waitFor(
          () => expect(receiver.datagramsPerReader().reduce((a, b) => a + b, 0)).toBe(i + senders.length),
          { timeout: 10_000, interval: 5 },
        );
      }
      await send(senders[0]!, bc1Packet({ timestampMs: T0 }), receiver.address.port);
      await waitCounters(receiver, { received: 1001, accepted: 1, rejected: 1000 });
      const counters = receiver.counters();
      const reasons = Object.entries(counters)
        .filter(([name]) => name.startsWith('rejected.'))
        .reduce((sum, [, value]) => sum + value, 0);
      expect(reasons).toBe(1000);
      expect(counters['rejected.unknown-key']).toBeGreaterThan(0);
      expect(counters['rejected.too-short']).toBeGreaterThan(0);
      expect(counters['rejected.bad-magic']).toBeGreaterThan(0);
      expect(counters['readers.restarted']).toBeUndefined();
      for (const read of receiver.datagramsPerReader()) expect(read).toBeGreaterThan(0);
      expect(receiver.workers()).toHaveLength(2);
    },
    TIMEOUT,
  );

  it(
    'a reader thread that ends is replaced on the same port and counted; its counts are kept and knocks are still accepted',
    async () => {
      const h = harness();
      const receiver = await start(h);
      const sender = await openSender();
      await send(sender, bytesFrom('junk before', 40), receiver.address.port);
      await waitCounters(receiver, { received: 1 });
      const [first, second] = receiver.workers();
      const exited = new Promise((resolve) => first!.once('exit', resolve));
      await first!.terminate();
      await exited;
      await vi.waitFor(
        () => {
          expect(receiver.workers()).toHaveLength(2);
          expect(receiver.workers()[0]).not.toBe(first);
          expect(receiver.workers()[0]!.threadId).toBeGreaterThan(0);
        },
        { timeout: 10_000, interval: 10 },
      );
      expect(receiver.workers()[1]).toBe(second);
      expect(receiver.counters()).toMatchObject({ 'readers.restarted': 1, received: 1 });
      // Knocks from many source ports reach both readers, the replacement among them.
      const senders = await Promise.all(Array.from({ length: 10 }, openSender));
      await Promise.all(
        senders.map((socket) => send(socket, bc1Packet({ timestampMs: T0 }), receiver.address.port)),
      );
      await waitCounters(receiver, { received: 11, accepted: 10 });
    },
    TIMEOUT,
  );

  it(
    'a device added after start is unknown to the workers until devicesChanged(), then accepted',
    async () => {
      const h = harness();
      const added = makeDevice({
        id: 'late-device',
        nativeKeys: [{ keyId: 0x0bad_cafe, key: bytesFrom('late key', 32) }],
        fwknop: undefined,
      });
      let devices: readonly Device[] = h.directory.devices();
      const receiver = await start(h, () => devices);
      const sender = await openSender();
      const knock = () => bc1Packet({ timestampMs: T0, keyId: 0x0bad_cafe, key: added.nativeKeys[0]!.key });
      await send(sender, knock(), receiver.address.port);
      await waitCounters(receiver, { 'rejected.unknown-key': 1 });
      devices = [...devices, added];
      receiver.devicesChanged();
      await vi.waitFor(
        async () => {
          await send(sender, knock(), receiver.address.port);
          expect(receiver.counters().accepted).toBe(1);
        },
        { timeout: 10_000, interval: 50 },
      );
      expect(h.firewall.calls.filter((call) => call.op === 'allow')[0]?.grants[0]?.deviceId).toBe(
        'late-device',
      );
    },
    TIMEOUT,
  );

  it(
    'audit events from the workers carry no key material',
    async () => {
      const h = harness();
      const receiver = await start(h);
      const sender = await openSender();
      const forged = fwknopPacket(
        { timestampSeconds: Math.floor(T0 / 1000) },
        { hmacKey: bytesFrom('wrong', 64) },
      );
      for (const packet of [bc1Packet({ timestampMs: T0 }), forged, bytesFrom('junk', 33)]) {
        await send(sender, packet, receiver.address.port);
      }
      await waitCounters(receiver, { received: 3, accepted: 1, 'rejected.auth-failed': 1 });
      await vi.waitFor(() => expect(h.audit.events.length).toBeGreaterThanOrEqual(3), { timeout: 5000 });
      const text = JSON.stringify(h.audit.events);
      for (const key of [BC1_KEY, FWKNOP_HMAC_KEY]) {
        expect(text).not.toContain(Buffer.from(key).toString('hex'));
        expect(text).not.toContain(Buffer.from(key).toString('base64'));
      }
      expect(h.audit.ofType('packet.rejected').map((event) => event.reason)).toEqual(
        expect.arrayContaining(['auth-failed', 'bad-magic']),
      );
    },
    TIMEOUT,
  );

  it('a busy port is refused with UdpPortInUseError and no reader thread left', async () => {
    const holder = createSocket({ type: 'udp4', reuseAddr: false });
    await new Promise<void>((resolve) =>
      holder.bind({ address: '127.0.0.1', port: 0, exclusive: true }, resolve),
    );
    cleanups.push(() => new Promise((resolve) => holder.close(() => resolve())));
    const h = harness();
    await expect(
      startReaderWorkers({
        host: '127.0.0.1',
        port: holder.address().port,
        readers: 2,
        deps: h.deps,
        devices: () => h.directory.devices(),
      }),
    ).rejects.toBeInstanceOf(UdpPortInUseError);
    await h.deps.grants.close();
  });
});
