/**
 * What the broker-sessions bench reads from /proc about a process and the machine (Linux only):
 * `residentBytes` (VmRSS of /proc/PID/status), `openDescriptors` (entries of /proc/PID/fd: for Mosquitto, its
 * listener, its files and one socket per session), `openFileLimits` ("Max open files" of
 * /proc/PID/limits, soft and hard), `loadAverage` (/proc/loadavg as is), `listenOverflows` (TcpExt ListenOverflows of
 * /proc/net/netstat: connections the kernel dropped because a listener's accept queue was full, for this network
 * namespace) and `machine()` (cores, CPU model, memory, kernel, Node). CPU time is `cpuSeconds` of
 * bench/support/spa-peers.ts.
 */
import { readdir, readFile } from 'node:fs/promises';
import { cpus, freemem, release, totalmem } from 'node:os';

export { cpuSeconds } from '../support/spa-peers.ts';

export async function residentBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (match === null) throw new Error(`/proc/${pid}/status has no VmRSS line (is ${pid} a zombie?)`);
  return Number(match[1]) * 1024;
}

export async function openDescriptors(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

export interface FileLimits {
  readonly soft: number;
  readonly hard: number;
}

/** RLIMIT_NOFILE of a process ('self' for this one); `unlimited` reads as Infinity. */
export async function openFileLimits(pid: number | 'self'): Promise<FileLimits> {
  const limits = await readFile(`/proc/${pid}/limits`, 'utf8');
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(limits);
  if (match === null) throw new Error(`/proc/${pid}/limits has no "Max open files" line`);
  const value = (text: string): number => (text === 'unlimited' ? Number.POSITIVE_INFINITY : Number(text));
  return { soft: value(match[1]!), hard: value(match[2]!) };
}

export async function loadAverage(): Promise<string> {
  return (await readFile('/proc/loadavg', 'utf8')).trim();
}

export async function listenOverflows(): Promise<number> {
  const lines = (await readFile('/proc/net/netstat', 'utf8')).split('\n');
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const names = lines[i]!.split(' ');
    const values = lines[i + 1]!.split(' ');
    if (names[0] !== 'TcpExt:') continue;
    const at = names.indexOf('ListenOverflows');
    if (at > 0) return Number(values[at]);
  }
  return Number.NaN;
}

export interface Machine {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly freeGiB: number;
  readonly kernel: string;
  readonly node: string;
}

export function machine(): Machine {
  return {
    cores: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown CPU',
    memoryGiB: totalmem() / 2 ** 30,
    freeGiB: freemem() / 2 ** 30,
    kernel: release(),
    node: process.version,
  };
}
