/**
 * The junk flood at the machine's limit, for bench/receiver-vs-fwknopd.ts: two network namespaces joined by a veth
 * pair (test/support/netns.ts), one `sendmmsg` sender per core in the client namespace (sendmmsg-flood.c, compiled
 * here with gcc into a temporary folder) sending junk to the server end for `seconds`, while one node blaster
 * (udp-blaster.ts) sends `validCount` fresh fwknop knocks from a second client address, paced over the flood.
 *
 * Rows, one after the other in one run, with the same junk and the same method:
 * - `kernel only`: no process, a netdev-ingress nftables rule dropping every datagram to the port (the kernel's
 *   drop rate alone: the reference for "junk absorbed");
 * - `empty handler`: a Node socket whose handler only counts (empty-reader.ts: the physical read limit of one
 *   process);
 * - `blackcloud, 1 reader` and `blackcloud, N reader threads`, each behind the kernel pre-filter
 *   (spa-prefilter.ts), per-source failure limit at its default, per-device bounds lifted (one bench device
 *   stands for the knockers);
 * - `fwknopd` (2.6.10, UDP server, `-t`), which has no pre-filter.
 * Each row reports: offered (sum of the senders), dropped in the kernel (the pre-filter's or the drop rule's
 * counters), dropped at the socket queue (/proc/net/udp), read by the process, valid knocks accepted / sent,
 * the process's CPU per offered datagram, and junk absorbed per second (dropped in the kernel by rule, or read
 * and rejected by the process: not lost at a full socket queue).
 */
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { promisify } from 'node:util';
import { NetworkNamespace } from '../../test/support/fwknop-tools.ts';
import { createNetnsPair, type NetnsPair } from '../../test/support/netns.ts';
import {
  blast,
  cpuSeconds,
  type Peer,
  startFwknopdPeer,
  startReceiverPeer,
  udpDrops,
  writePacketFile,
} from './spa-peers.ts';
import { thousands } from './table.ts';

const execFileAsync = promisify(execFile);
const ROOT = resolvePath(import.meta.dirname, '../..');
const KERNEL_TABLE = 'bcbench_kernel';
const KERNEL_PORT = 62_201;

export interface LimitRow {
  readonly server: string;
  readonly offered: number;
  readonly seconds: number;
  readonly kernelDropped: number;
  readonly socketDrops: number;
  /** Datagrams the process read (undefined: the process cannot say; fwknopd). */
  readonly read: number | undefined;
  readonly validSent: number;
  readonly validAccepted: number;
  readonly cpu: number;
  readonly absorbedPerSecond: number;
  readonly note: string;
}

export interface AtLimitOptions {
  readonly ip: string;
  readonly fwknopd: string;
  readonly dir: string;
  readonly keyFile: string;
  readonly fwknopKeys: { readonly key: Uint8Array; readonly hmacKey: Uint8Array };
  readonly junk: readonly Uint8Array[];
  /** Fresh valid fwknop knocks, made right before each row. */
  readonly validKnocks: (count: number) => Uint8Array[];
  readonly seconds: number;
  readonly readers: number;
  readonly validCount: number;
  readonly senders?: number;
}

/** Compiles sendmmsg-flood.c with gcc into `dir`; an error names gcc and its Debian package. */
async function compileSender(dir: string): Promise<string> {
  const binary = join(dir, 'sendmmsg-flood');
  try {
    await execFileAsync('gcc', ['-O2', '-o', binary, join(ROOT, 'bench/support/sendmmsg-flood.c')]);
  } catch (error) {
    throw new Error(
      `gcc could not build bench/support/sendmmsg-flood.c (apt-get install gcc): ${String(error)}`,
    );
  }
  return binary;
}

interface Flood {
  readonly offered: number;
  readonly seconds: number;
  readonly validSent: number;
}

async function flood(
  pair: NetnsPair,
  client: NetworkNamespace,
  binary: string,
  files: { junk: string; valid: string },
  port: number,
  options: AtLimitOptions,
  knocker: string,
): Promise<Flood> {
  const senders = options.senders ?? cpus().length;
  const [reports, valid] = await Promise.all([
    Promise.all(
      Array.from({ length: senders }, () =>
        pair.exec(pair.client.name, [
          binary,
          files.junk,
          pair.client.ipv4,
          pair.server.ipv4,
          String(port),
          String(options.seconds),
        ]),
      ),
    ),
    blast(client, files.valid, port, [knocker], 0, options.validCount / options.seconds, pair.server.ipv4),
  ]);
  const parsed = reports.map((line) => JSON.parse(line.trim()) as { sent: number; seconds: number });
  return {
    offered: parsed.reduce((sum, report) => sum + report.sent, 0),
    seconds: Math.max(...parsed.map((report) => report.seconds)),
    validSent: valid.sent,
  };
}

async function settle(peer: Peer): Promise<number> {
  let accepted = await peer.accepted();
  for (let i = 0; i < 40; i++) {
    await new Promise((resolve) => setTimeout(resolve, 25));
    const now = await peer.accepted();
    if (now === accepted && i > 4) break;
    accepted = now;
  }
  return accepted;
}

async function kernelCounter(pair: NetnsPair): Promise<number> {
  const text = await pair.exec(pair.server.name, [
    'nft',
    'list',
    'counter',
    'netdev',
    KERNEL_TABLE,
    'dropped',
  ]);
  return Number(/packets (\d+)/.exec(text)?.[1] ?? Number.NaN);
}

export async function measureAtLimit(options: AtLimitOptions): Promise<LimitRow[]> {
  const binary = await compileSender(options.dir);
  const pair = await createNetnsPair('bcf');
  const rows: LimitRow[] = [];
  const peers: Peer[] = [];
  try {
    const client = NetworkNamespace.adopt(options.ip, pair.client.name);
    const server = NetworkNamespace.adopt(options.ip, pair.server.name);
    // The valid knocks come from their own address: the pre-filter's per-source meter sees the flood's apart.
    const knocker = pair.client.ipv4.replace(/\.2$/, '.3');
    await pair.exec(pair.client.name, ['ip', 'addr', 'add', `${knocker}/24`, 'dev', pair.client.iface]);
    const files = { junk: join(options.dir, 'limit-junk.bin'), valid: join(options.dir, 'limit-valid.bin') };
    await writePacketFile(files.junk, options.junk);

    // The kernel's drop rate alone.
    await pair.exec(
      pair.server.name,
      ['nft', '-f', '-'],
      `table netdev ${KERNEL_TABLE} {\n counter dropped {}\n chain ingress {\n  type filter hook ingress device "${pair.server.iface}" priority -500;\n  ip daddr ${pair.server.ipv4} udp dport ${KERNEL_PORT} counter name "dropped" drop\n }\n}\n`,
    );
    await writePacketFile(files.valid, options.validKnocks(options.validCount));
    const kernel = await flood(pair, client, binary, files, KERNEL_PORT, options, knocker);
    const kernelDropped = await kernelCounter(pair);
    await pair.exec(pair.server.name, ['nft', 'delete', 'table', 'netdev', KERNEL_TABLE]);
    rows.push({
      server: 'kernel only',
      offered: kernel.offered,
      seconds: kernel.seconds,
      kernelDropped,
      socketDrops: 0,
      read: 0,
      validSent: kernel.validSent,
      validAccepted: 0,
      cpu: 0,
      absorbedPerSecond: (kernelDropped - kernel.validSent) / kernel.seconds,
      note: 'netdev ingress drop rule, no process (the valid knocks are dropped too)',
    });

    const row = async (name: string, peer: Peer, prefiltered: boolean, note: string): Promise<void> => {
      peers.push(peer);
      await writePacketFile(files.valid, options.validKnocks(options.validCount));
      const before = await peer.detail();
      const drops0 = await udpDrops(server, peer.port);
      const cpu0 = await cpuSeconds(peer.pid);
      const accepted0 = await peer.accepted();
      const measured = await flood(pair, client, binary, files, peer.port, options, knocker);
      const accepted = (await settle(peer)) - accepted0;
      const after = await peer.detail();
      const drops = (await udpDrops(server, peer.port)) - drops0;
      const cpu = (await cpuSeconds(peer.pid)) - cpu0;
      const delta = (counter: string) => (after[counter] ?? 0) - (before[counter] ?? 0);
      const kernelDrops = prefiltered ? delta('prefilter.dropped') : 0;
      const read = name === 'fwknopd' ? undefined : delta('received');
      const readOrInferred = read ?? measured.offered + measured.validSent - drops - kernelDrops;
      await peer.stop();
      rows.push({
        server: name,
        offered: measured.offered,
        seconds: measured.seconds,
        kernelDropped: kernelDrops,
        socketDrops: drops,
        read,
        validSent: measured.validSent,
        validAccepted: accepted,
        cpu,
        absorbedPerSecond: (kernelDrops + readOrInferred - accepted) / measured.seconds,
        note:
          note +
          (prefiltered
            ? `; pre-filter: length ${thousands(delta('prefilter.length'))}, bc1 magic ${thousands(delta('prefilter.bc1_magic'))}, base64 ${thousands(delta('prefilter.fwknop_base64'))}, rate ${thousands(delta('prefilter.rate'))}`
            : ''),
      });
    };
    const host = { host: pair.server.ipv4 };
    await row(
      'empty handler',
      await startReceiverPeer(server, options.keyFile, 'flood', undefined, {
        ...host,
        script: 'bench/support/empty-reader.ts',
        name: 'empty handler',
      }),
      false,
      'a Node socket that only counts: the read limit of one process',
    );
    await row(
      'blackcloud, 1 reader',
      await startReceiverPeer(server, options.keyFile, 'flood', undefined, { ...host, prefilter: true }),
      true,
      'pre-filter on',
    );
    await row(
      `blackcloud, ${options.readers} reader threads`,
      await startReceiverPeer(server, options.keyFile, 'flood', undefined, {
        ...host,
        prefilter: true,
        readers: options.readers,
      }),
      true,
      'pre-filter on',
    );
    await row(
      'fwknopd',
      // Its own folder: the pid file of the fwknopd of the earlier rows must not stop this one.
      await startFwknopdPeer(
        server,
        options.fwknopd,
        await mkdir(join(options.dir, 'limit-fwknopd'), { recursive: true }).then(() =>
          join(options.dir, 'limit-fwknopd'),
        ),
        options.fwknopKeys,
      ),
      false,
      'no pre-filter: read = offered - socket drops',
    );
  } finally {
    for (const peer of peers) await peer.stop().catch(() => undefined);
    await pair.destroy();
  }
  return rows;
}
