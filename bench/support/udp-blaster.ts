/**
 * A UDP load generator for bench/receiver-vs-fwknopd.ts, run as its own process (inside the bench's namespace):
 *   node bench/support/udp-blaster.ts PACKETFILE PORT SOURCES SECONDS RATE [HOST]
 * PACKETFILE holds length-prefixed datagrams (u16 big-endian length, bytes), sent in order, cycling when SECONDS >
 * 0. SOURCES is a comma-separated list of local addresses (one socket each, used round-robin). SECONDS = 0: send
 * every datagram once, as fast as possible; otherwise keep sending for that long. RATE = 0: as fast as the socket
 * takes them; else at most RATE datagrams per second. Prints one JSON line when done:
 * `{"sent":N,"seconds":S,"errors":E}`. Sends only to HOST (default 127.0.0.1).
 */
import { createSocket, type Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';

const [file, portText, sourcesText, secondsText, rateText, hostText] = process.argv.slice(2);
const host = hostText ?? '127.0.0.1';
const port = Number(portText);
const seconds = Number(secondsText);
const rate = Number(rateText);
const raw = readFileSync(file ?? '');
const packets: Buffer[] = [];
for (let at = 0; at + 2 <= raw.length; ) {
  const length = raw.readUInt16BE(at);
  packets.push(raw.subarray(at + 2, at + 2 + length));
  at += 2 + length;
}
const sockets: Socket[] = await Promise.all(
  (sourcesText ?? '127.0.0.1').split(',').map(
    (source) =>
      new Promise<Socket>((resolve) => {
        const socket = createSocket('udp4');
        socket.on('error', () => undefined);
        socket.bind(0, source, () => socket.connect(port, host, () => resolve(socket)));
      }),
  ),
);
let sent = 0;
let errors = 0;
let inFlight = 0;
const started = performance.now();
const total = seconds > 0 ? Number.POSITIVE_INFINITY : packets.length;
const BATCH = 64;
const MAX_IN_FLIGHT = 512;
await new Promise<void>((resolve) => {
  const pump = (): void => {
    const elapsed = (performance.now() - started) / 1000;
    if ((seconds > 0 && elapsed >= seconds) || sent >= total) {
      if (inFlight === 0) resolve();
      else setImmediate(pump);
      return;
    }
    const allowed = rate > 0 ? Math.min(BATCH, Math.floor(elapsed * rate) + 1 - sent) : BATCH;
    for (let i = 0; i < allowed && inFlight < MAX_IN_FLIGHT && sent < total; i++) {
      const packet = packets[sent % packets.length]!;
      const socket = sockets[sent % sockets.length]!;
      inFlight++;
      sent++;
      socket.send(packet, (error) => {
        inFlight--;
        if (error) errors++;
      });
    }
    if (rate > 0 && allowed <= 0) setTimeout(pump, 1);
    else setImmediate(pump);
  };
  pump();
});
const elapsed = (performance.now() - started) / 1000;
for (const socket of sockets) socket.close();
process.stdout.write(`${JSON.stringify({ sent, seconds: elapsed, errors })}\n`);
