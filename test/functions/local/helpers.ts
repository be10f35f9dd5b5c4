/**
 * Helpers for the local black cloud tests (test/functions/local, test/e2e): free ports, temp dirs, bounded polling (never
 * a fixed sleep where a condition can be awaited), the CLI as a child process, and raw UDP probes.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { constants } from 'node:fs';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';

export const PROJECT_ROOT = resolve(import.meta.dirname, '../../..');
export const CLI = join(PROJECT_ROOT, 'cli/bin/blackcloud.js');

/** Absolute path of a required system tool, or a failure naming it and its Debian package (never a skip). */
export async function requireTool(tool: string, debianPackage: string): Promise<string> {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin']) {
    if (dir === '') continue;
    try {
      await access(join(dir, tool), constants.X_OK);
      return join(dir, tool);
    } catch {
      // next directory
    }
  }
  throw new Error(`required tool '${tool}' is not installed: apt-get install ${debianPackage}`);
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `${prefix}-`));
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}

/** A port free for both TCP and UDP on 127.0.0.1 right now (the OS picks it; we only read it back). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((done, fail) => {
      const server = createServer();
      server.once('error', fail);
      server.listen(0, host, () => {
        const address = server.address();
        server.close(() => done(typeof address === 'object' && address !== null ? address.port : 0));
      });
    });
    const udpFree = await new Promise<boolean>((done) => {
      const socket = createSocket('udp4');
      socket.once('error', () => done(false));
      socket.bind(port, host, () => socket.close(() => done(true)));
    });
    if (udpFree) return port;
  }
}

/** Polls `probe` every 20 ms until it returns something other than undefined; fails after `timeoutMs`. */
export async function waitFor<T>(
  probe: () => T | undefined | Promise<T | undefined>,
  what: string,
  timeoutMs = 10_000,
): Promise<T> {
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() - started > timeoutMs)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 20));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((done) => setTimeout(done, ms));
}

/**
 * Sends each datagram from one connected UDP socket and listens for `listenMs` afterwards; returns how many bytes
 * came back and whether an ICMP error (ECONNREFUSED) surfaced. A black receiver answers with nothing at all.
 */
export async function sendAndListen(
  host: string,
  port: number,
  datagrams: readonly Uint8Array[],
  listenMs: number,
): Promise<{ bytesBack: number; icmpError: boolean }> {
  const socket = createSocket('udp4');
  let bytesBack = 0;
  let icmpError = false;
  socket.on('message', (message) => {
    bytesBack += message.length;
  });
  socket.on('error', () => {
    icmpError = true;
  });
  await new Promise<void>((done) => socket.connect(port, host, () => done()));
  for (const datagram of datagrams) {
    await new Promise<void>((done) => socket.send(datagram, () => done()));
  }
  await sleep(listenMs);
  await new Promise<void>((done) => socket.close(() => done()));
  return { bytesBack, icmpError };
}

export interface CliRun {
  readonly child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** Resolves when stdout (or stderr) matches. */
  waitForOutput(pattern: RegExp, stream?: 'stdout' | 'stderr', timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Writes one line to the process's stdin. */
  send(line: string): void;
  /** Resolves with the exit code (or -1 for a signal). */
  exited: Promise<number>;
  /** SIGTERM, then SIGKILL after 5 s; resolves with the exit code. Idempotent. */
  stop(): Promise<number>;
}

const running = new Set<CliRun>();

/** Runs `blackcloud <args>` through the real launcher (cli/bin/blackcloud.js). */
export function runCli(
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): CliRun {
  return runCommand([process.execPath, CLI, ...args], options);
}

/** Runs any command (e.g. `ip netns exec NS node ...`) with the same output capture and cleanup as `runCli`. */
export function runCommand(
  argv: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): CliRun {
  const args = argv.slice(1);
  const child = spawn(argv[0]!, args, {
    cwd: options.cwd ?? PROJECT_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    out += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    err += chunk;
  });
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number>((done) => child.on('close', (code) => done(code ?? -1)));
  let exitCode: number | undefined;
  void exited.then((code) => {
    exitCode = code;
  });
  const run: CliRun = {
    child,
    stdout: () => out,
    stderr: () => err,
    async waitForOutput(pattern, stream = 'stdout', timeoutMs = 20_000) {
      return waitFor(
        () => {
          const match = (stream === 'stdout' ? out : err).match(pattern);
          if (match !== null) return match;
          if (exitCode !== undefined) {
            throw new Error(
              `${argv.join(' ')} exited (${exitCode}) before printing ${pattern}; stdout: ${out}; stderr: ${err}`,
            );
          }
          return undefined;
        },
        `${pattern} from ${argv.join(' ')} (stdout: ${out}; stderr: ${err})`,
        timeoutMs,
      );
    },
    send(line) {
      child.stdin.write(`${line}\n`);
    },
    exited,
    async stop() {
      running.delete(run);
      if (exitCode !== undefined) return exitCode;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  running.add(run);
  return run;
}

/** Stops every CLI process still running (afterEach/afterAll). */
export async function stopAllCli(): Promise<void> {
  await Promise.all([...running].map((run) => run.stop()));
}

/** Runs the CLI to completion. */
export async function cli(
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return complete(runCli(args, options));
}

/** Waits for a run to finish and returns its exit code and output. */
export async function complete(run: CliRun): Promise<{ code: number; stdout: string; stderr: string }> {
  const code = await run.exited;
  running.delete(run);
  return { code, stdout: run.stdout(), stderr: run.stderr() };
}
