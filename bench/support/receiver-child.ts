/**
 * blackcloud's receiver as a separate process for bench/receiver-vs-fwknopd.ts (run inside the bench's network
 * namespace: `node bench/support/receiver-child.ts KEYFILE MODE [HOST [READERS [prefilter]]]`). KEYFILE (JSON,
 * 0600, written by the bench) holds one device's BC1 key and fwknop keys; the device may open tcp/8883. In-memory
 * nonce store, system clock, a firewall that only counts (the bench measures the packet path, not a firewall),
 * audit off. MODE `open` raises the per-source rate limit and the per-device bounds out of the way (one sender
 * address stands for many devices); `flood` lifts only the per-device bounds (one bench device stands for the
 * flood's many knockers) and keeps the per-source failure limit; `default` keeps both.
 * HOST (default 127.0.0.1) is bound at port 0; READERS > 1 runs reader worker threads (reader-workers.ts);
 * `prefilter` installs the kernel pre-filter on the bound port (spa-prefilter.ts; root in the namespace).
 * Prints `{"port":N}` once bound; then answers each `stats` line on stdin with the counters (the pre-filter's
 * as `prefilter.<name>`).
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { StaticDeviceDirectory } from '../../functions/local/file-device-directory.ts';
import { type SpaPrefilter, startSpaPrefilter } from '../../functions/local/spa-prefilter.ts';
import { MemoryNonceStore } from '../../functions/receiver/memory-nonce-store.ts';
import { startReaderWorkers } from '../../functions/receiver/reader-workers.ts';
import { createReceiverDeps } from '../../functions/receiver/receiver-deps.ts';
import { type RunningReceiver, startReceiver } from '../../functions/receiver/udp-receiver.ts';

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

const [keyFile, mode, hostArg, readersArg, prefilterArg] = process.argv.slice(2);
const host = hostArg ?? '127.0.0.1';
const readers = Number(readersArg ?? 1);
const keys = JSON.parse(readFileSync(keyFile ?? '', 'utf8')) as KeyFile;
let allowed = 0;
const directory = new StaticDeviceDirectory([
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
]);
const deps = createReceiverDeps({
  directory,
  // Open mode: one bench device stands for many, so its per-device bounds [BC1-9] are lifted too.
  nonces: new MemoryNonceStore({
    clock: { now: () => keys.since },
    ...(mode === 'open' || mode === 'flood' ? { maxEntriesPerOwner: 1_000_000 } : {}),
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
    : mode === 'flood'
      ? { deviceBounds: OPEN_DEVICE_BOUNDS }
      : {}),
});
const OPEN_RATE = { burst: 1e9, ratePerSecond: 1e9 };
const receiver: RunningReceiver =
  readers > 1
    ? await startReaderWorkers({
        host,
        port: 0,
        readers,
        deps,
        devices: () => directory.devices(),
        maxInFlight: 65_536,
        rejectAudit: false,
        ...(mode === 'open' ? { rateLimit: OPEN_RATE } : {}),
      })
    : await startReceiver({ host, port: 0, deps, maxInFlight: 65_536 });
const prefilter: SpaPrefilter | undefined =
  prefilterArg === 'prefilter'
    ? await startSpaPrefilter({ table: 'bcbench_spa', port: receiver.address.port, host })
    : undefined;
process.stdout.write(`${JSON.stringify({ port: receiver.address.port })}\n`);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stats') return;
  void (async () => {
    const kernel = prefilter === undefined ? {} : await prefilter.counts();
    const counters: Record<string, number> = { ...receiver.counters() };
    for (const [name, value] of Object.entries(kernel)) counters[`prefilter.${name}`] = value as number;
    process.stdout.write(`${JSON.stringify({ counters, allowed })}\n`);
  })();
});
process.stdin.on('end', () => {
  void (async () => {
    await prefilter?.close().catch(() => undefined);
    await receiver.close();
    process.exit(0);
  })();
});
