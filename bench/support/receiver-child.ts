/**
 * blackcloud's receiver as a separate process for bench/receiver-vs-fwknopd.ts (run inside the bench's network
 * namespace: `node bench/support/receiver-child.ts KEYFILE [open]`). KEYFILE (JSON, 0600, written by
 * the bench) holds one device's BC1 key and fwknop keys; the device may open tcp/8883. In-memory nonce store,
 * system clock, a firewall that only counts (the bench measures the packet path, not a firewall), audit off.
 * `open` raises the per-source rate limit out of the way (one sender address stands for many devices).
 * Prints `{"port":N}` once bound to 127.0.0.1 port 0; then answers each `stats` line on stdin with the counters.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { StaticDeviceDirectory } from '../../functions/local/file-device-directory.ts';
import { MemoryNonceStore } from '../../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps } from '../../functions/receiver/receiver-deps.ts';
import { startReceiver } from '../../functions/receiver/udp-receiver.ts';

interface KeyFile {
  readonly bc1KeyId: number;
  readonly bc1Key: string;
  readonly fwknopKey: string;
  readonly fwknopHmacKey: string;
  /** The receiver's nonce store remembers from this instant (ms): packets made after it are fresh. */
  readonly since: number;
}

/** The largest per-device bounds the receiver accepts (receiver-deps.ts). */
const OPEN_DEVICE_BOUNDS = { maxAddressesPerDevice: 1000, knockBurst: 100_000, knocksPerMinute: 6_000_000 };

const [keyFile, mode] = process.argv.slice(2);
const keys = JSON.parse(readFileSync(keyFile ?? '', 'utf8')) as KeyFile;
let allowed = 0;
const deps = createReceiverDeps({
  directory: new StaticDeviceDirectory([
    {
      id: 'bench-device',
      enabled: true,
      allowedAccess: [{ protocol: 'tcp', port: 8883 }],
      maxOpenSeconds: 300,
      nativeKeys: [{ keyId: keys.bc1KeyId, key: new Uint8Array(Buffer.from(keys.bc1Key, 'base64')) }],
      fwknop: {
        username: 'bench',
        encryptionKey: new Uint8Array(Buffer.from(keys.fwknopKey, 'base64')),
        hmacKey: new Uint8Array(Buffer.from(keys.fwknopHmacKey, 'base64')),
        hmacType: 'sha256',
      },
    },
  ]),
  // Open mode: one bench device stands for many, so its per-device bounds [BC1-9] are lifted too.
  nonces: new MemoryNonceStore({
    clock: { now: () => keys.since },
    ...(mode === 'open' ? { maxEntriesPerOwner: 1_000_000 } : {}),
  }),
  firewall: {
    allow: async (grants) => {
      allowed += grants.length;
    },
    revoke: async () => undefined,
  },
  audit: { write: () => undefined },
  rejectAudit: false,
  ...(mode === 'open'
    ? { rateLimit: { burst: 1e9, ratePerSecond: 1e9 }, deviceBounds: OPEN_DEVICE_BOUNDS }
    : {}),
});
const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps, maxInFlight: 65_536 });
process.stdout.write(`${JSON.stringify({ port: receiver.address.port })}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === 'stats')
    process.stdout.write(`${JSON.stringify({ counters: receiver.counters(), allowed })}\n`);
});
process.stdin.on('end', () => process.exit(0));
