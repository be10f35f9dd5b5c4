/**
 * The two SPA servers of bench/receiver-vs-fwknopd.ts as processes in one private network namespace (root), and
 * what the bench reads from the kernel about them:
 * - `startFwknopdPeer`: the real fwknopd 2.6.10 in UDP server mode, test mode (`-t`: no firewall change, which
 *   also means no digest cache), not verbose; an accepted packet logs "skipping firewall manipulation", which is
 *   what `accepted()` counts;
 * - `startReceiverPeer`: blackcloud's receiver (bench/support/receiver-child.ts), `accepted()` from its counters;
 * - `cpuSeconds(pid)`: user + system CPU time of a process from /proc/PID/stat (all threads);
 * - `udpDrops(ns, port)`: the kernel's drop counters of the UDP sockets bound to `port` (/proc/net/udp
 *   read inside the namespace): datagrams lost because the server did not read fast enough;
 * - `blast`: runs bench/support/udp-blaster.ts inside the namespace and resolves with its report.
 * Every process is started with `ip netns exec`, which execs in place: the child's pid is the server's pid.
 */
import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { NetworkNamespace } from '../../test/support/fwknop-tools.ts';

const execFileAsync = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const CLOCK_TICKS_PER_SECOND = 100;

export interface Peer {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  /** Accepted (valid, granted) packets so far. */
  accepted(): Promise<number>;
  /** Extra detail for the report (e.g. rejection reasons), if the peer can say. */
  detail(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
}

export async function udpDrops(ns: NetworkNamespace, port: number): Promise<number> {
  const table = await ns.exec('cat', ['/proc/net/udp']);
  // fwknopd binds 0.0.0.0, the receiver its host: match the port (the namespace holds nothing else), and sum
  // over every socket on it (reader threads each have one, SO_REUSEPORT).
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let drops: number | undefined;
  for (const line of table.split('\n').slice(1)) {
    const columns = line.trim().split(/\s+/);
    if (columns[1]?.endsWith(suffix)) drops = (drops ?? 0) + Number(columns[columns.length - 1]);
  }
  if (drops === undefined)
    throw new Error(`no UDP socket on port ${port} in namespace ${ns.name}:\n${table}`);
  return drops;
}

function stopChild(child: ChildProcessWithoutNullStreams): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const gone = new Promise<void>((done) => child.once('exit', () => done()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  return gone.finally(() => clearTimeout(timer));
}

export interface FwknopdKeys {
  readonly key: Uint8Array;
  readonly hmacKey: Uint8Array;
}

export async function startFwknopdPeer(
  ns: NetworkNamespace,
  fwknopd: string,
  dir: string,
  keys: FwknopdKeys,
): Promise<Peer> {
  const port = await ns.freeUdpPort();
  const conf = join(dir, 'fwknopd.conf');
  const access = join(dir, 'access.conf');
  await writeFile(conf, ['PCAP_INTF lo', 'ENABLE_UDP_SERVER Y', `UDPSERV_PORT ${port}`, ''].join('\n'));
  await writeFile(
    access,
    [
      'SOURCE ANY',
      `KEY_BASE64 ${Buffer.from(keys.key).toString('base64')}`,
      `HMAC_KEY_BASE64 ${Buffer.from(keys.hmacKey).toString('base64')}`,
      'HMAC_DIGEST_TYPE sha256',
      'OPEN_PORTS tcp/8883',
      'FW_ACCESS_TIMEOUT 30',
      '',
    ].join('\n'),
  );
  await chmod(conf, 0o600);
  await chmod(access, 0o600);
  const child = spawn(
    ns.ip,
    [
      'netns',
      'exec',
      ns.name,
      fwknopd,
      '-c',
      conf,
      '-a',
      access,
      '-f',
      '-t',
      '-d',
      join(dir, 'digest.cache'),
      '--pid-file',
      join(dir, 'fwknopd.pid'),
      '-r',
      dir,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let accepted = 0;
  let log = '';
  const onLine = (line: string): void => {
    if (line.includes('skipping firewall manipulation')) accepted++;
    else if (log.length < 10_000) log += `${line}\n`;
  };
  createInterface({ input: child.stdout }).on('line', onLine);
  createInterface({ input: child.stderr }).on('line', onLine);
  const started = Date.now();
  while (!log.includes(`Kicking off UDP server to listen on port ${port}`)) {
    if (child.exitCode !== null) throw new Error(`fwknopd exited at start: ${log}`);
    if (Date.now() - started > 10_000) throw new Error(`fwknopd did not start within 10 s: ${log}`);
    await new Promise((done) => setTimeout(done, 20));
  }
  return {
    name: 'fwknopd',
    pid: child.pid ?? 0,
    port,
    accepted: async () => accepted,
    detail: async () => ({}),
    stop: () => stopChild(child),
  };
}

export interface ReceiverPeerOptions {
  /** Bound address (default 127.0.0.1). */
  readonly host?: string;
  /** Reader worker threads (default 1: one socket). */
  readonly readers?: number;
  /** Install the kernel pre-filter on the port (its counters appear as `prefilter.<name>`). */
  readonly prefilter?: boolean;
  /** Run this script instead of receiver-child.ts (same stdin/stdout protocol), e.g. empty-reader.ts. */
  readonly script?: string;
  readonly name?: string;
}

export async function startReceiverPeer(
  ns: NetworkNamespace,
  keyFile: string,
  rateLimit: 'default' | 'open' | 'flood',
  /** Write a V8 CPU profile (`.cpuprofile`: Chrome DevTools or speedscope show it as a flame graph) here. */
  profileDir?: string,
  options: ReceiverPeerOptions = {},
): Promise<Peer> {
  const child = spawn(
    ns.ip,
    [
      'netns',
      'exec',
      ns.name,
      process.execPath,
      ...(profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`]),
      join(ROOT, options.script ?? 'bench/support/receiver-child.ts'),
      keyFile,
      rateLimit,
      options.host ?? '127.0.0.1',
      String(options.readers ?? 1),
      options.prefilter === true ? 'prefilter' : 'no-prefilter',
    ],
    { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      const parsed = JSON.parse(line) as Record<string, unknown>;
      waiting.shift()?.(parsed);
    } catch {
      // not a JSON line
    }
  });
  const next = (): Promise<Record<string, unknown>> =>
    new Promise((done, fail) => {
      const timer = setTimeout(() => fail(new Error(`receiver child did not answer: ${stderr}`)), 30_000);
      waiting.push((line) => {
        clearTimeout(timer);
        done(line);
      });
    });
  const { port } = (await next()) as { port: number };
  const stats = async (): Promise<Record<string, number>> => {
    const answer = next();
    child.stdin.write('stats\n');
    return ((await answer) as { counters: Record<string, number> }).counters;
  };
  return {
    name: options.name ?? 'blackcloud',
    pid: child.pid ?? 0,
    port,
    accepted: async () => (await stats()).accepted ?? 0,
    detail: stats,
    stop: async () => {
      // Closing stdin makes the child exit by itself (and write its CPU profile, if asked); SIGTERM after 5 s.
      const exited = new Promise<void>((done) => child.once('exit', () => done()));
      child.stdin.end();
      if (child.exitCode === null && child.signalCode === null) {
        await Promise.race([exited, new Promise((done) => setTimeout(done, 5000).unref())]);
      }
      await stopChild(child);
    },
  };
}

export interface BlastReport {
  readonly sent: number;
  readonly seconds: number;
  readonly errors: number;
}

/** Writes `packets` length-prefixed into `file` (the blaster's input). */
export async function writePacketFile(file: string, packets: readonly Uint8Array[]): Promise<void> {
  const parts: Buffer[] = [];
  for (const packet of packets) {
    const length = Buffer.alloc(2);
    length.writeUInt16BE(packet.length);
    parts.push(length, Buffer.from(packet));
  }
  await writeFile(file, Buffer.concat(parts));
}

export function blast(
  ns: NetworkNamespace,
  file: string,
  port: number,
  sources: readonly string[],
  seconds: number,
  rate: number,
  /** Destination address (default 127.0.0.1). */
  host?: string,
): Promise<BlastReport> {
  return execFileAsync(
    ns.ip,
    [
      'netns',
      'exec',
      ns.name,
      process.execPath,
      join(ROOT, 'bench/support/udp-blaster.ts'),
      file,
      String(port),
      sources.join(','),
      String(seconds),
      String(rate),
      ...(host === undefined ? [] : [host]),
    ],
    { cwd: ROOT, timeout: 300_000, maxBuffer: 1 << 20 },
  ).then(({ stdout }) => JSON.parse(stdout.trim().split('\n').pop() ?? '{}') as BlastReport);
}
