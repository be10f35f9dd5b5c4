/**
 * The receiver over real UDP on loopback (port 0, read back): knocks open grants, replays do not, junk and
 * floods get no byte back and do not stop it, a busy port is a clear error.
 */
import { createSocket, type Socket } from 'node:dgram';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { UdpPortInUseError } from '../../../functions/receiver/errors.ts';
import { type RunningReceiver, startReceiver } from '../../../functions/receiver/udp-receiver.ts';
import { bc1Packet, bytesFrom, fwknopPacket, type Harness, harness, makeDevice, T0 } from './helpers.ts';

interface Sender {
  readonly replies: Buffer[];
  send(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function openSender(from: string, to: { address: string; port: number }): Promise<Sender> {
  const socket: Socket = createSocket('udp4');
  const replies: Buffer[] = [];
  socket.on('message', (message) => replies.push(message)); // the receiver must never answer
  await new Promise<void>((resolve) => socket.bind(0, from, resolve));
  let closed = false;
  const sender: Sender = {
    replies,
    send: (bytes) =>
      new Promise((resolve, reject) =>
        socket.send(bytes, to.port, to.address, (error) => (error ? reject(error) : resolve())),
      ),
    close: () =>
      closed
        ? Promise.resolve()
        : new Promise((resolve) => {
            closed = true;
            socket.close(() => resolve());
          }),
  };
  cleanups.push(sender.close);
  return sender;
}

async function start(h: Harness): Promise<RunningReceiver> {
  const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps: h.deps });
  cleanups.push(async () => {
    await receiver.close();
    await h.deps.grants.close();
  });
  return receiver;
}

/** Listens a little longer for any reply that might still be on its way. */
async function expectSilence(...senders: Sender[]): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, 300));
  for (const sender of senders) expect(sender.replies).toEqual([]);
}

describe('startReceiver over real UDP on 127.0.0.1', () => {
  it('a valid BC1 knock opens a grant for the sender; the same packet again is a replay; nothing is answered', async () => {
    const h = harness();
    const receiver = await start(h);
    expect(receiver.address).toMatchObject({ address: '127.0.0.1', family: 'IPv4' });
    expect(receiver.address.port).toBeGreaterThan(0);
    const device = await openSender('127.0.0.1', receiver.address);

    const knock = bc1Packet({ timestampMs: T0 });
    await device.send(knock);
    await vi.waitFor(() => expect(receiver.counters().accepted).toBe(1), { timeout: 5000, interval: 10 });
    expect(h.firewall.calls).toEqual([
      {
        op: 'allow',
        grants: [
          {
            deviceId: 'demo-device',
            address: '127.0.0.1',
            family: 4,
            access: [{ protocol: 'tcp', port: 8883 }],
            openedAt: T0,
            expiresAt: T0 + 30_000,
          },
        ],
      },
    ]);

    await device.send(knock);
    await vi.waitFor(() => expect(receiver.counters()['rejected.replay']).toBe(1), {
      timeout: 5000,
      interval: 10,
    });
    expect(h.firewall.calls).toHaveLength(1);

    await device.send(fwknopPacket({ timestampSeconds: Math.floor(T0 / 1000), message: '0.0.0.0,udp/5683' }));
    await vi.waitFor(() => expect(receiver.counters()['accepted.fwknop']).toBe(1), {
      timeout: 5000,
      interval: 10,
    });
    await expectSilence(device);
  });

  it('junk, oversize, empty and a flood get no byte back; a valid knock still gets in afterwards', async () => {
    // The device on 127.0.0.2 is another device than the flood's valid knocks (those spend demo-device's budget).
    const second = { keyId: 0x0200_0002, key: bytesFrom('second device key', 32) };
    const h = harness({ devices: [makeDevice(), makeDevice({ id: 'second-device', nativeKeys: [second] })] });
    const receiver = await start(h);
    const attacker = await openSender('127.0.0.1', receiver.address);

    const junk: Uint8Array[] = [
      new Uint8Array(0),
      new Uint8Array([0xb1]),
      new Uint8Array(100).fill(0xb1),
      new Uint8Array(9000).fill(0x41),
      new TextEncoder().encode('A'.repeat(1500)),
      new TextEncoder().encode(`U2FsdGVkX1${'B'.repeat(200)}`),
      bc1Packet({ timestampMs: T0, key: bytesFrom('not the key', 32) }),
    ];
    for (const bytes of junk) await attacker.send(bytes);
    await vi.waitFor(() => expect(receiver.counters().received).toBe(junk.length), {
      timeout: 5000,
      interval: 10,
    });
    expect(receiver.counters()).toMatchObject({
      'rejected.too-short': 2,
      'rejected.too-long': 3,
      'rejected.bad-magic': 1,
      'rejected.auth-failed': 1,
    });

    // A flood: a few thousand datagrams of every kind, from one source.
    const FLOOD = 3000;
    for (let i = 0; i < FLOOD; i++) {
      const kind = i % 3;
      const bytes =
        kind === 0
          ? bytesFrom(`junk ${i}`, 1 + (i % 200))
          : kind === 1
            ? bc1Packet({ timestampMs: T0, key: bytesFrom('not the key', 32) }) // one key id: its failure bucket
            : bc1Packet({ timestampMs: T0 });
      await attacker.send(bytes);
      if (i % 100 === 99) await new Promise((resolve) => setImmediate(resolve));
    }
    await vi.waitFor(() => expect(receiver.counters()['rejected.rate-limited'] ?? 0).toBeGreaterThan(0), {
      timeout: 5000,
      interval: 10,
    });

    // The flooding source is rate limited; a device on another address still gets in (retry: UDP may drop).
    const device = await openSender('127.0.0.2', receiver.address);
    const acceptedBefore = receiver.counters().accepted ?? 0;
    await vi.waitFor(
      async () => {
        await device.send(bc1Packet({ timestampMs: T0, ...second }));
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect(h.firewall.isOpen('127.0.0.2', 'tcp/8883')).toBe(true);
      },
      { timeout: 10_000, interval: 50 },
    );
    expect(receiver.counters().accepted).toBeGreaterThan(acceptedBefore);
    // The flood opened at most the burst's worth of (valid) knocks for 127.0.0.1, one grant extended.
    expect(h.deps.grants.active().filter((grant) => grant.address === '127.0.0.1')).toHaveLength(1);
    await expectSilence(attacker, device);
  });

  it('a busy port is a clear typed error', async () => {
    const holder = createSocket('udp4');
    await new Promise<void>((resolve) => holder.bind(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => holder.close(() => resolve())));
    const port = holder.address().port;
    const failure = await startReceiver({ host: '127.0.0.1', port, deps: harness().deps }).catch(
      (error) => error,
    );
    expect(failure).toBeInstanceOf(UdpPortInUseError);
    expect(failure.message).toBe(
      `UDP port ${port} on 127.0.0.1 is already in use: stop the other process or choose another port with --spa-port`,
    );
    expect(failure).toMatchObject({ name: 'UdpPortInUseError', code: 'EADDRINUSE', host: '127.0.0.1', port });
  });

  it('close() is idempotent and frees the port', async () => {
    const h = harness();
    const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps: h.deps });
    const { port } = receiver.address;
    await Promise.all([receiver.close(), receiver.close()]);
    const again = await startReceiver({ host: '127.0.0.1', port, deps: h.deps });
    expect(again.address.port).toBe(port);
    await again.close();
  });
});
