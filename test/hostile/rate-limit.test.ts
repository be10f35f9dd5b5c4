/**
 * Per-source rate limiting under a flood [BC1-2]: one source flooding cannot starve valid knocks from others.
 * 1. In-process, deterministic (virtual clock, the receiver's default limits: 20 burst, 5/s per source): 200,000
 *    framed junk datagrams from one source interleaved with knocks from 200 other devices: every knock accepted.
 * 2. Over real UDP: a flooding child process blasts junk at the receiver while 50 devices on other loopback
 *    addresses knock; measured while the flood runs (its rate-limited count keeps growing): every device gets in,
 *    and the first-try success rate is printed.
 */
import { spawn } from 'node:child_process';
import { createSocket, type Socket } from 'node:dgram';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { handleDatagram } from '../../functions/receiver/handle-datagram.ts';
import { startReceiver } from '../../functions/receiver/udp-receiver.ts';
import {
  bc1Packet,
  bytesFrom,
  fwknopPacket,
  harness,
  makeDevice,
  T0,
} from '../functions/receiver/helpers.ts';

/** Device d: its own key and key id (per-device bounds apply to each device, so the devices are really many). */
const deviceKey = (d: number) => ({ keyId: 0x2000_0000 + d, key: bytesFrom(`device ${d} key`, 32) });
const fleet = (count: number) =>
  Array.from({ length: count }, (_, d) => makeDevice({ id: `device-${d}`, nativeKeys: [deviceKey(d)] }));

const report: string[] = [];
afterAll(() => {
  for (const line of report) console.log(line);
});

describe('one source flooding, in-process', () => {
  it('200,000 framed junk datagrams from one source do not stop 200 devices on other sources', async () => {
    const h = harness({ devices: fleet(200) }); // default limits: 20 burst, 5 per second per failure bucket
    const attacker = { address: '203.0.113.66', family: 4 as const, port: 5555 };
    const bc1Junk = Uint8Array.from([0xb1, ...bytesFrom('flood bc1', 60)]);
    const fwknopJunk = fwknopPacket(
      { timestampSeconds: Math.floor(T0 / 1000) },
      { hmacKey: bytesFrom('x', 64) },
    );
    const FLOOD = 200_000;
    const DEVICES = 200;
    let accepted = 0;
    for (let i = 0; i < FLOOD; i++) {
      await handleDatagram(i % 2 === 0 ? bc1Junk : fwknopJunk, attacker, h.deps);
      if (i % 1000 === 999) {
        const device = (i - 999) / 1000;
        const outcome = await handleDatagram(
          bc1Packet({ timestampMs: h.time.now(), ...deviceKey(device) }),
          { address: `198.51.100.${device}`, family: 4, port: 40_000 },
          h.deps,
        );
        if (outcome.ok) accepted++;
        await h.time.advance(10); // the flood runs at 100,000 datagrams per second of virtual time
      }
    }
    const counters = h.deps.counters.snapshot();
    report.push(`rate limit in-process: ${JSON.stringify(counters)}`);
    expect(accepted).toBe(DEVICES);
    // The attacker got, in each of its two failure buckets (the BC1 junk's key id, fwknop), its burst plus 5/s
    // over the 2 s of virtual time; everything else was dropped before crypto.
    expect(counters['rejected.rate-limited']).toBeGreaterThanOrEqual(FLOOD - 2 * (20 + 5 * 2) - 1);
    await h.deps.grants.close();
  }, 120_000);
});

/** A child process that sends junk to 127.0.0.1:port from 127.0.0.2 as fast as it can until killed. */
const FLOODER = `
const dgram = require('node:dgram');
const port = Number(process.argv[1]);
const s = dgram.createSocket('udp4');
const junk = [Buffer.alloc(60, 0xb1), Buffer.from('A'.repeat(200)), Buffer.alloc(30, 7)];
s.bind(0, '127.0.0.2', () => {
  s.connect(port, '127.0.0.1', () => {
    let i = 0;
    const burst = () => { for (let j = 0; j < 200; j++) s.send(junk[i++ % 3]); setImmediate(burst); };
    process.stdout.write('flooding\\n');
    burst();
  });
});
`;

function send(socket: Socket, bytes: Uint8Array, port: number): Promise<void> {
  return new Promise((resolve, reject) =>
    socket.send(bytes, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  );
}

describe('one source flooding, over real UDP', () => {
  it('50 devices on other addresses get in while a child process floods from 127.0.0.2', async () => {
    const h = harness({ devices: fleet(50) });
    // Deps on the frozen virtual clock: the flooding source never refills, each device starts with a full bucket.
    const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps: h.deps });
    const flooder = spawn(process.execPath, ['-e', FLOODER, String(receiver.address.port)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const devices: Socket[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        flooder.stdout.once('data', () => resolve());
        flooder.once('exit', (code) => reject(new Error(`flooder exited early (${String(code)})`)));
      });
      await vi.waitFor(
        () => expect(receiver.counters()['rejected.rate-limited'] ?? 0).toBeGreaterThan(1000),
        {
          timeout: 10_000,
          interval: 20,
        },
      );
      const floodBefore = receiver.counters()['rejected.rate-limited'] ?? 0;
      let firstTry = 0;
      const DEVICES = 50;
      for (let d = 0; d < DEVICES; d++) {
        const socket = createSocket('udp4');
        devices.push(socket);
        const address = `127.0.1.${d + 1}`;
        await new Promise<void>((resolve) => socket.bind(0, address, resolve));
        let tries = 0;
        await vi.waitFor(
          async () => {
            tries++;
            await send(
              socket,
              bc1Packet({ timestampMs: h.time.now(), ...deviceKey(d) }),
              receiver.address.port,
            );
            await new Promise((resolve) => setTimeout(resolve, 5));
            expect(h.firewall.isOpen(address, 'tcp/8883')).toBe(true);
          },
          { timeout: 10_000, interval: 20 },
        );
        if (tries === 1) firstTry++;
      }
      const floodDuring = (receiver.counters()['rejected.rate-limited'] ?? 0) - floodBefore;
      report.push(
        `rate limit over UDP: ${DEVICES}/${DEVICES} devices in, ${firstTry} on the first try, while ` +
          `${floodDuring.toLocaleString('en-US')} flood datagrams were rate-limited; counters ${JSON.stringify(receiver.counters())}`,
      );
      // The flood really ran during the knocks.
      expect(floodDuring).toBeGreaterThan(1000);
      expect(h.deps.grants.active().filter((g) => g.address.startsWith('127.0.1.'))).toHaveLength(DEVICES);
    } finally {
      flooder.kill('SIGKILL');
      for (const socket of devices) socket.close();
      await receiver.close();
      await h.deps.grants.close();
    }
  }, 60_000);
});
