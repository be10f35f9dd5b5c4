/**
 * The physical read limit of one Node process, for bench/support/flood-at-limit.ts: a UDP socket whose handler
 * only counts (no pipeline). Same command line and stdin/stdout protocol as receiver-child.ts
 * (`node bench/support/empty-reader.ts KEYFILE MODE HOST`; KEYFILE and MODE are ignored): prints `{"port":N}`
 * once bound to HOST port 0, answers each `stats` line with `{"counters":{"received":N,"accepted":0}}`, exits
 * when stdin ends.
 */
import { createSocket } from 'node:dgram';
import { createInterface } from 'node:readline';

const host = process.argv[4] ?? '127.0.0.1';
let received = 0;
const socket = createSocket('udp4');
socket.on('message', () => {
  received++;
});
await new Promise<void>((resolve) => socket.bind(0, host, resolve));
process.stdout.write(`${JSON.stringify({ port: socket.address().port })}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'stats')
    process.stdout.write(`${JSON.stringify({ counters: { received, accepted: 0 } })}\n`);
});
process.stdin.on('end', () => socket.close(() => process.exit(0)));
