/**
 * blackcloud's receiver side by side with the real fwknopd 2.6.10, over real UDP on loopback inside a private
 * network namespace (root), one after the other in one run, with the same datagrams:
 *
 * 1. valid stream: distinct, fresh fwknop packets (blackcloud's encoder, which fwknopd accepts), sent once each,
 *    paced at `--rate` per second (default 20,000) for `--stream-seconds` (default 2) by one sender process:
 *    accepted per second (first send to last acceptance; a server slower than the offered rate drops the rest at
 *    its socket), socket drops, CPU per datagram (the server process's user + system time from /proc);
 * 2. junk flood: `--seconds` of junk (a third random bytes, a third fwknop-shaped base64 that fails the HMAC, a
 *    third BC1-framed with unknown key ids) from 64 source addresses at full speed, while 300 devices (one
 *    address each) knock with valid fwknop packets at 100/s: junk absorbed per second, valid knocks lost;
 * 3. native BC1 knocks per second, blackcloud alone (the same method as 1, offered at `--bc1-rate`, default 60,000).
 * 4. the flood at the machine's limit (bench/support/flood-at-limit.ts): one C `sendmmsg` sender per core over a
 *    veth pair for `--limit-seconds` (default 3) with 150 valid knocks from another address, against the kernel's
 *    drop rule alone, an empty-handler reader, blackcloud with 1 reader and with `--readers` threads (default: the
 *    core count, at least 2), both behind the kernel pre-filter, and fwknopd: offered, dropped in the kernel,
 *    dropped at the socket, read, valid accepted, CPU per offered datagram, junk absorbed per second.
 *    `--only limit` runs this part alone.
 * Each server first gets a warm-up of 2,000 datagrams (not measured).
 * Then the same pipeline in-process (handleDatagram, no sockets), which shows the receiver's own ceiling.
 *
 * Settings: fwknopd in UDP server mode with `-t` (no firewall change; in this mode it keeps no digest cache) and
 * no verbose logging; blackcloud with its in-memory nonce store (it does record every replay id) and a firewall
 * that only counts. For rows 1 and 3 blackcloud's per-source rate limit is raised (one sender address stands for
 * many devices; fwknopd has none); for row 2 it runs with its defaults (20 burst, 5/s per source).
 * Senders and servers share this machine's cores with each other (and with whatever else runs).
 * Run: `npm run bench -- receiver-vs-fwknopd [--rate N] [--bc1-rate N] [--stream-seconds S] [--seconds S]
 * [--limit-seconds S] [--readers N] [--only limit] [--profile DIR]`; `--profile` writes the receivers' V8 CPU profiles (DIR/valid, DIR/flood; open them as flame
 * graphs in Chrome DevTools or speedscope).
 */
import { randomBytes, randomInt } from 'node:crypto';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { randomDigits } from '../device-client/knock.ts';
import { StaticDeviceDirectory } from '../functions/local/file-device-directory.ts';
import { handleDatagram } from '../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps } from '../functions/receiver/receiver-deps.ts';
import { encodeBc1 } from '../spa/bc1.ts';
import { encodeFwknop } from '../spa/fwknop.ts';
import { makeTempDir, NetworkNamespace, requireTools } from '../test/support/fwknop-tools.ts';
import { type LimitRow, measureAtLimit } from './support/flood-at-limit.ts';
import {
  blast,
  cpuSeconds,
  type Peer,
  startFwknopdPeer,
  startReceiverPeer,
  udpDrops,
  writePacketFile,
} from './support/spa-peers.ts';
import { numberOption, printTable, thousands } from './support/table.ts';

interface Keys {
  readonly fwknopKey: Uint8Array;
  readonly fwknopHmacKey: Uint8Array;
  readonly bc1Key: Uint8Array;
  readonly bc1KeyId: number;
}

interface Measured {
  readonly server: string;
  readonly workload: string;
  readonly sent: number;
  readonly accepted: number;
  readonly drops: number;
  readonly seconds: number;
  readonly cpu: number;
  /** Datagrams per second the row is about (accepted knocks, or junk absorbed). */
  readonly perSecond: number;
  readonly note: string;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

function fwknopPackets(keys: Keys, count: number): Uint8Array[] {
  const timestamp = Math.floor(Date.now() / 1000);
  return Array.from({ length: count }, () =>
    encodeFwknop(
      { username: 'bench', timestamp, messageType: 1, message: '0.0.0.0,tcp/8883' },
      { encryptionKey: keys.fwknopKey, hmacKey: keys.fwknopHmacKey, hmacType: 'sha256' },
      {
        salt: new Uint8Array(randomBytes(8)),
        random: randomDigits((n) => new Uint8Array(randomBytes(n)), 16),
      },
    ),
  );
}

function bc1Packets(keys: Keys, count: number): Uint8Array[] {
  const timestampMs = Date.now();
  return Array.from({ length: count }, () =>
    encodeBc1(
      { timestampMs, durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
      { keyId: keys.bc1KeyId, key: keys.bc1Key, nonce: new Uint8Array(randomBytes(12)) },
    ),
  );
}

function junkPackets(count: number): Uint8Array[] {
  return Array.from({ length: count }, (_, i) => {
    switch (i % 3) {
      case 0: {
        const bytes = new Uint8Array(randomBytes(1 + randomInt(300)));
        if (bytes[0] === 0xb1) bytes[0] = 0;
        return bytes;
      }
      case 1: {
        // fwknop-shaped: base64 text of a plausible length that fails the HMAC.
        const length = 180 + randomInt(120);
        let text = '';
        for (let j = 0; j < length; j++) text += B64[randomInt(64)];
        return new TextEncoder().encode(text.startsWith('U2FsdGVkX1') ? `A${text.slice(1)}` : text);
      }
      default: {
        const bytes = new Uint8Array(randomBytes(17 + 15 + randomInt(40)));
        bytes[0] = 0xb1; // BC1 frame, an unknown key id (random)
        return bytes;
      }
    }
  });
}

const addresses = (block: string, count: number): string[] =>
  Array.from({ length: count }, (_, i) => `127.${block}.${Math.floor(i / 250)}.${(i % 250) + 1}`);

/** Sends `file` with one blaster and waits until the peer's accepted count has settled. */
async function measureStream(
  ns: NetworkNamespace,
  peer: Peer,
  file: string,
  sources: readonly string[],
  workload: string,
  rate: number,
): Promise<Measured> {
  const drops0 = await udpDrops(ns, peer.port);
  const cpu0 = await cpuSeconds(peer.pid);
  const accepted0 = await peer.accepted();
  const started = performance.now();
  let done = false;
  const report = blast(ns, file, peer.port, sources, 0, rate).finally(() => {
    done = true;
  });
  let last = accepted0;
  let lastChange = started;
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    const now = performance.now();
    const accepted = await peer.accepted();
    if (accepted !== last) {
      last = accepted;
      lastChange = now;
    }
    if (done && now - lastChange > 500) break;
    if (now - started > 120_000) break;
  }
  const { sent } = await report;
  const accepted = last - accepted0;
  const seconds = (lastChange - started) / 1000;
  const drops = (await udpDrops(ns, peer.port)) - drops0;
  const cpu = (await cpuSeconds(peer.pid)) - cpu0;
  return {
    server: peer.name,
    workload,
    sent,
    accepted,
    drops,
    seconds,
    cpu,
    perSecond: accepted / seconds,
    note: `offered ${thousands(rate)}/s; ${thousands(sent - accepted - drops)} read but not accepted`,
  };
}

/** 1,000 junk and 1,000 valid (distinct) datagrams at 5,000/s, so that a JIT has compiled the hot paths. */
async function warmUp(ns: NetworkNamespace, peer: Peer, dir: string, keys: Keys, sources: readonly string[]) {
  const file = join(dir, 'warm-up.bin');
  const junk = junkPackets(1000);
  const valid = fwknopPackets(keys, 500);
  const bc1 = bc1Packets(keys, 500);
  await writePacketFile(file, [...junk, ...valid, ...bc1]);
  await blast(ns, file, peer.port, sources, 0, 5000);
  await new Promise((resolve) => setTimeout(resolve, 300));
}

/** A junk flood (all sources, full speed, `seconds`) with valid knocks from other sources at 100/s. */
async function measureFlood(
  ns: NetworkNamespace,
  peer: Peer,
  junkFile: string,
  validFile: string,
  validSources: readonly string[],
  seconds: number,
): Promise<Measured> {
  const drops0 = await udpDrops(ns, peer.port);
  const cpu0 = await cpuSeconds(peer.pid);
  const accepted0 = await peer.accepted();
  const before = await peer.detail();
  const [junk, valid] = await Promise.all([
    blast(ns, junkFile, peer.port, addresses('10', 64), seconds, 0),
    blast(ns, validFile, peer.port, validSources, 0, validSources.length / seconds),
  ]);
  // Let the server finish what it has read.
  let accepted = await peer.accepted();
  for (let i = 0; i < 40; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    const now = await peer.accepted();
    if (now === accepted && i > 4) break;
    accepted = now;
  }
  const drops = (await udpDrops(ns, peer.port)) - drops0;
  const cpu = (await cpuSeconds(peer.pid)) - cpu0;
  const after = await peer.detail();
  const reasons = Object.entries(after)
    .filter(([name]) => name.startsWith('rejected.'))
    .map(([name, n]) => [name.slice('rejected.'.length), n - (before[name] ?? 0)] as const)
    .filter(([, n]) => n > 0)
    .map(([name, n]) => `${name} ${thousands(n)}`)
    .join(', ');
  const validAccepted = accepted - accepted0;
  const junkRead = junk.sent + valid.sent - drops - validAccepted;
  return {
    server: peer.name,
    workload: 'junk flood + 300 knocks',
    sent: junk.sent + valid.sent,
    accepted: validAccepted,
    drops,
    seconds: junk.seconds,
    cpu,
    perSecond: junkRead / junk.seconds,
    note:
      `offered ${thousands(junk.sent / junk.seconds)}/s; valid knocks ${validAccepted}/${valid.sent} accepted` +
      (reasons === '' ? '' : `; ${reasons}`),
  };
}

/** The pipeline without sockets: handleDatagram over pre-made packets, one core. */
async function inProcess(keys: Keys, workload: string, packets: readonly Uint8Array[], open: boolean) {
  const deps = createReceiverDeps({
    directory: new StaticDeviceDirectory([
      {
        id: 'bench-device',
        enabled: true,
        allowedAccess: [{ protocol: 'tcp', port: 8883 }],
        maxOpenSeconds: 300,
        nativeKeys: [{ keyId: keys.bc1KeyId, key: keys.bc1Key }],
        fwknop: {
          username: 'bench',
          encryptionKey: keys.fwknopKey,
          hmacKey: keys.fwknopHmacKey,
          hmacType: 'sha256',
        },
      },
    ]),
    // Open: one bench device stands for many, so its per-device bounds [BC1-9] are lifted too.
    nonces: new MemoryNonceStore({
      clock: { now: () => Date.now() - 60_000 },
      ...(open ? { maxEntriesPerOwner: 1_000_000 } : {}),
    }),
    firewall: { allow: async () => undefined, revoke: async () => undefined },
    audit: { write: () => undefined },
    rejectAudit: false,
    ...(open
      ? {
          rateLimit: { burst: 1e9, ratePerSecond: 1e9 },
          deviceBounds: { maxAddressesPerDevice: 1000, knockBurst: 100_000, knocksPerMinute: 6_000_000 },
        }
      : {}),
  });
  const sources = addresses('30', 64).map((address, i) => ({ address, family: 4 as const, port: 1000 + i }));
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  let accepted = 0;
  for (let i = 0; i < packets.length; i += 64) {
    const batch = packets.slice(i, i + 64);
    const outcomes = await Promise.all(batch.map((p, j) => handleDatagram(p, sources[(i + j) % 64]!, deps)));
    for (const outcome of outcomes) if (outcome.ok) accepted++;
  }
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  await deps.grants.close();
  return {
    server: 'blackcloud',
    workload,
    sent: packets.length,
    accepted,
    drops: 0,
    seconds,
    cpu: (cpu.user + cpu.system) / 1e6,
    perSecond: packets.length / seconds,
    note: 'in-process handleDatagram, no sockets',
  } satisfies Measured;
}

export async function main(args: readonly string[] = []): Promise<void> {
  const rate = numberOption(args, 'rate', 20_000, 100, 1_000_000);
  const bc1Rate = numberOption(args, 'bc1-rate', 60_000, 100, 1_000_000);
  const streamSeconds = numberOption(args, 'stream-seconds', 2, 0.5, 60);
  const floodSeconds = numberOption(args, 'seconds', 3, 1, 60);
  const limitSeconds = numberOption(args, 'limit-seconds', 3, 1, 60);
  const readers = numberOption(args, 'readers', Math.max(2, cpus().length), 2, 64);
  const onlyLimit = args.includes('--only') && args[args.indexOf('--only') + 1] === 'limit';
  const profileAt = args.indexOf('--profile');
  const profileDir = profileAt < 0 ? undefined : resolvePath(args[profileAt + 1] ?? 'bench-profiles');
  const validCount = Math.round(rate * streamSeconds);
  const { fwknopd, ip } = (await requireTools('fwknopd', 'ip')) as { fwknopd: string; ip: string };
  const keys: Keys = {
    fwknopKey: new Uint8Array(randomBytes(32)),
    fwknopHmacKey: new Uint8Array(randomBytes(64)),
    bc1Key: new Uint8Array(randomBytes(32)),
    bc1KeyId: 0x0b1b_e4c8,
  };
  const dir = await makeTempDir('bc8-bench');
  const ns = await NetworkNamespace.create(ip, '8bench');
  const keyFile = join(dir, 'keys.json');
  await writeFile(
    keyFile,
    JSON.stringify({
      bc1KeyId: keys.bc1KeyId,
      bc1Key: Buffer.from(keys.bc1Key).toString('base64'),
      fwknopKey: Buffer.from(keys.fwknopKey).toString('base64'),
      fwknopHmacKey: Buffer.from(keys.fwknopHmacKey).toString('base64'),
      since: Date.now() - 1000,
    }),
    { mode: 0o600 },
  );
  await chmod(keyFile, 0o600);
  const limitPhase = () =>
    measureAtLimit({
      ip,
      fwknopd,
      dir,
      keyFile,
      fwknopKeys: { key: keys.fwknopKey, hmacKey: keys.fwknopHmacKey },
      junk: junkPackets(3000),
      validKnocks: (count) => fwknopPackets(keys, count),
      seconds: limitSeconds,
      readers,
      validCount: 150,
    });
  const rows: Measured[] = [];
  const limitRows: LimitRow[] = [];
  const peers: Peer[] = [];
  try {
    if (onlyLimit) {
      limitRows.push(...(await limitPhase()));
      return;
    }
    const junkFile = join(dir, 'junk.bin');
    await writePacketFile(junkFile, junkPackets(3000));
    const validSources = addresses('20', 300);

    // 1. the valid stream, the same bytes to both (fresh: generated right before).
    const streamFile = join(dir, 'valid.bin');
    const sender = addresses('40', 1);
    await writePacketFile(streamFile, fwknopPackets(keys, validCount));
    const openReceiver = await startReceiverPeer(
      ns,
      keyFile,
      'open',
      profileDir && join(profileDir, 'valid'),
    );
    peers.push(openReceiver);
    await warmUp(ns, openReceiver, dir, keys, sender);
    rows.push(await measureStream(ns, openReceiver, streamFile, sender, 'valid fwknop stream', rate));
    const fwknopdPeer = await startFwknopdPeer(ns, fwknopd, dir, {
      key: keys.fwknopKey,
      hmacKey: keys.fwknopHmacKey,
    });
    peers.push(fwknopdPeer);
    await warmUp(ns, fwknopdPeer, dir, keys, sender);
    rows.push(await measureStream(ns, fwknopdPeer, streamFile, sender, 'valid fwknop stream', rate));

    // 2. the junk flood with valid knocks from 300 other addresses (fresh packets for each server).
    const defaultReceiver = await startReceiverPeer(
      ns,
      keyFile,
      'default',
      profileDir && join(profileDir, 'flood'),
    );
    peers.push(defaultReceiver);
    await warmUp(ns, defaultReceiver, dir, keys, addresses('50', 200));
    const floodValid = join(dir, 'flood-valid.bin');
    await writePacketFile(floodValid, fwknopPackets(keys, validSources.length));
    rows.push(await measureFlood(ns, defaultReceiver, junkFile, floodValid, validSources, floodSeconds));
    await writePacketFile(floodValid, fwknopPackets(keys, validSources.length));
    rows.push(await measureFlood(ns, fwknopdPeer, junkFile, floodValid, validSources, floodSeconds));

    // 3. native BC1, blackcloud alone.
    const bc1File = join(dir, 'bc1.bin');
    await writePacketFile(bc1File, bc1Packets(keys, Math.round(bc1Rate * streamSeconds)));
    rows.push(await measureStream(ns, openReceiver, bc1File, sender, 'valid BC1 stream', bc1Rate));

    // 3b. both streams against reader threads, from 8 source addresses (SO_REUSEPORT spreads flows, not packets).
    const threadedName = `blackcloud x${readers} threads`;
    const threaded = await startReceiverPeer(ns, keyFile, 'open', undefined, { readers, name: threadedName });
    peers.push(threaded);
    const senders = addresses('40', 8);
    await warmUp(ns, threaded, dir, keys, senders);
    await writePacketFile(streamFile, fwknopPackets(keys, validCount));
    rows.push(await measureStream(ns, threaded, streamFile, senders, 'valid fwknop stream', rate));
    await writePacketFile(bc1File, bc1Packets(keys, Math.round(bc1Rate * streamSeconds)));
    rows.push(await measureStream(ns, threaded, bc1File, senders, 'valid BC1 stream', bc1Rate));

    // In-process ceilings.
    rows.push(await inProcess(keys, 'valid BC1 (in-process)', bc1Packets(keys, validCount), true));
    rows.push(await inProcess(keys, 'valid fwknop (in-process)', fwknopPackets(keys, validCount), true));
    const junk = junkPackets(3000);
    rows.push(
      await inProcess(
        keys,
        'junk, default limits (in-process)',
        Array.from({ length: 100_000 }, (_, i) => junk[i % junk.length]!),
        false,
      ),
    );
    try {
      limitRows.push(...(await limitPhase()));
    } catch (error) {
      console.error(`the flood at the limit failed (the rows above stand): ${String(error)}`);
    }
  } finally {
    for (const peer of peers) await peer.stop().catch(() => undefined);
    await ns.remove().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
    printLimit(limitRows, rows);
  }

  if (onlyLimit) return;
  console.log(
    `blackcloud receiver vs fwknopd ${'2.6.10'} over UDP on loopback in a network namespace, one after the other ` +
      `(node ${process.version}, ${cpus().length} x ${cpus()[0]?.model.trim() ?? 'unknown CPU'}, load average ` +
      `${loadavg()[0]!.toFixed(2)} at the end)\n`,
  );
  printTable(
    [
      'server',
      'workload',
      'sent',
      'accepted',
      'socket drops',
      'seconds',
      'per second',
      'CPU s',
      'CPU µs/datagram',
      'note',
    ],
    rows.map((r) => [
      r.server,
      r.workload,
      thousands(r.sent),
      thousands(r.accepted),
      thousands(r.drops),
      r.seconds.toFixed(2),
      thousands(r.perSecond),
      r.cpu.toFixed(2),
      ((r.cpu / Math.max(1, r.sent - r.drops)) * 1e6).toFixed(1),
      r.note,
    ]),
  );
  const find = (server: string, workload: string) =>
    rows.find((r) => r.server === server && r.workload === workload);
  const validBc = find('blackcloud', 'valid fwknop stream');
  const validFk = find('fwknopd', 'valid fwknop stream');
  const floodBc = find('blackcloud', 'junk flood + 300 knocks');
  const floodFk = find('fwknopd', 'junk flood + 300 knocks');
  const cpuPer = (r: Measured | undefined) =>
    r === undefined ? Number.NaN : r.cpu / Math.max(1, r.sent - r.drops);
  const ratio = (a: number | undefined, b: number | undefined) =>
    a === undefined || b === undefined ? 'n/a' : `${(a / b).toFixed(2)}x`;
  console.log(
    `\nsummary: valid fwknop knocks/s blackcloud ${thousands(validBc?.perSecond ?? 0)} vs fwknopd ` +
      `${thousands(validFk?.perSecond ?? 0)} (${ratio(validBc?.perSecond, validFk?.perSecond)}); junk absorbed/s ` +
      `${thousands(floodBc?.perSecond ?? 0)} vs ${thousands(floodFk?.perSecond ?? 0)} ` +
      `(${ratio(floodBc?.perSecond, floodFk?.perSecond)}), CPU per flood datagram ` +
      `${(cpuPer(floodBc) * 1e6).toFixed(1)} vs ${(cpuPer(floodFk) * 1e6).toFixed(1)} µs ` +
      `(${ratio(cpuPer(floodFk), cpuPer(floodBc))} cheaper); native BC1 ` +
      `${thousands(find('blackcloud', 'valid BC1 stream')?.perSecond ?? 0)}/s over UDP, ` +
      `${thousands(find('blackcloud', 'valid BC1 (in-process)')?.perSecond ?? 0)}/s in-process`,
  );
}

/** The flood-at-limit table and the targets of issue 18 that it decides (docs/benchmarks.md). */
function printLimit(limitRows: readonly LimitRow[], rows: readonly Measured[]): void {
  if (limitRows.length === 0) return;
  console.log(
    `\nthe junk flood at the machine's limit: ${cpus().length} sendmmsg sender(s) over a veth pair, 150 valid ` +
      `fwknop knocks from another address during it (load average ${loadavg()
        .map((n) => n.toFixed(2))
        .join(' ')})\n`,
  );
  printTable(
    [
      'server',
      'offered',
      'offered/s',
      'kernel dropped',
      'socket drops',
      'read by process',
      'valid accepted',
      'CPU µs/offered',
      'junk absorbed/s',
      'note',
    ],
    limitRows.map((r) => [
      r.server,
      thousands(r.offered),
      thousands(r.offered / r.seconds),
      thousands(r.kernelDropped),
      thousands(r.socketDrops),
      r.read === undefined ? 'n/a' : thousands(r.read),
      r.server === 'kernel only' ? 'n/a' : `${r.validAccepted}/${r.validSent}`,
      ((r.cpu / Math.max(1, r.offered)) * 1e6).toFixed(3),
      thousands(r.absorbedPerSecond),
      r.note,
    ]),
  );
  const kernel = limitRows.find((r) => r.server === 'kernel only');
  const fwknopd = limitRows.find((r) => r.server === 'fwknopd');
  const ratio = (a: number, b: number | undefined) =>
    b === undefined || b <= 0 ? 'n/a' : `${(a / b).toFixed(2)}`;
  for (const r of limitRows.filter((row) => row.server.startsWith('blackcloud'))) {
    console.log(
      `target ${r.server}: junk absorbed ${thousands(r.absorbedPerSecond)}/s = ${ratio(r.absorbedPerSecond, kernel?.absorbedPerSecond)} ` +
        `of kernel only (>= 0.90), ${ratio(r.absorbedPerSecond, fwknopd?.absorbedPerSecond)}x fwknopd (>= 10), valid ` +
        `${r.validAccepted}/${r.validSent} (all), CPU ${((r.cpu / Math.max(1, r.offered)) * 1e6).toFixed(3)} µs per junk ` +
        'datagram (<= 0.1)',
    );
  }
  const validFk = rows.find((r) => r.server === 'fwknopd' && r.workload === 'valid fwknop stream');
  for (const server of [...new Set(rows.map((r) => r.server))].filter((name) =>
    name.startsWith('blackcloud'),
  )) {
    const validBc = rows.find((r) => r.server === server && r.workload === 'valid fwknop stream');
    const bc1 = rows.find((r) => r.server === server && r.workload === 'valid BC1 stream');
    if (validBc === undefined || validFk === undefined) continue;
    console.log(
      `target ${server}: valid fwknop ${ratio(validBc.perSecond, validFk.perSecond)}x fwknopd (>= 2); valid BC1 ` +
        `over UDP ${thousands(bc1?.perSecond ?? 0)}/s (>= 50,000)`,
    );
  }
}
