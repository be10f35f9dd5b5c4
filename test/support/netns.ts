/**
 * Test support (root only): two network namespaces joined by a veth pair, and processes run inside them.
 *
 * - `createNetnsPair()` makes namespaces `<label><suffix>s` (server) and `<label><suffix>c` (client) with a random
 *   suffix, so parallel test files never collide. The veth pair is created inside the server namespace with its
 *   peer moved straight to the client namespace: the host's own interfaces and ruleset are never touched.
 *   Each end gets an IPv4 /24 and an IPv6 /64 (nodad, usable at once); loopback is up.
 * - `pair.spawn(ns, argv)` runs a process inside a namespace (`ip netns exec`) and reads its stdout as JSON lines;
 *   `pair.node(ns, code, args)` does so for an inline ES module run by this node binary.
 * - `pair.destroy()` kills every process spawned through the pair and deletes both namespaces (which deletes the
 *   veth pair). It is idempotent and never throws: call it in afterAll/afterEach. Should the process exit
 *   without it, an exit hook deletes the namespaces.
 * Fails with a message naming `ip` when iproute2 is missing.
 */
import { type ChildProcessWithoutNullStreams, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export interface NetnsEnd {
  /** The namespace name (for `ip netns exec`). */
  readonly name: string;
  readonly iface: string;
  readonly ipv4: string;
  readonly ipv6: string;
}

export interface JsonLineProcess {
  readonly child: ChildProcessWithoutNullStreams;
  /** Every JSON object printed so far, in order. */
  readonly lines: Record<string, unknown>[];
  /** Resolves with the first line (past or future) matching `predicate`; rejects after `timeoutMs` or on exit. */
  waitFor(
    predicate: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  /** Writes one line to the process's stdin. */
  send(line: string): void;
  kill(): void;
}

export interface NetnsPair {
  readonly suffix: string;
  readonly server: NetnsEnd;
  readonly client: NetnsEnd;
  /** Runs a command inside a namespace and resolves with its stdout (rejects on a non-zero exit). */
  exec(ns: string, argv: string[], stdin?: string): Promise<string>;
  spawn(ns: string, argv: string[]): JsonLineProcess;
  node(ns: string, code: string, args?: string[]): JsonLineProcess;
  destroy(): Promise<void>;
}

async function ip(args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ip', args);
    return stdout;
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT')
      throw new Error('the `ip` command (iproute2) is required for network-namespace tests');
    throw new Error(`ip ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: error });
  }
}

export async function createNetnsPair(label = 'bc'): Promise<NetnsPair> {
  const suffix = randomBytes(3).toString('hex');
  const octets = randomBytes(2);
  const v4 = `10.${octets[0]}.${octets[1]}`;
  // Hextets without leading zeros: the addresses are compared as text with what the kernel and nft print (RFC 5952).
  const hextet = (hex: string) => Number.parseInt(hex, 16).toString(16);
  const v6 = `fd00:bc:${hextet(suffix.slice(0, 4))}:${hextet(suffix.slice(4))}`;
  const server: NetnsEnd = {
    name: `${label}${suffix}s`,
    iface: `v${suffix}s`,
    ipv4: `${v4}.1`,
    ipv6: `${v6}::1`,
  };
  const client: NetnsEnd = {
    name: `${label}${suffix}c`,
    iface: `v${suffix}c`,
    ipv4: `${v4}.2`,
    ipv6: `${v6}::2`,
  };
  const processes = new Set<JsonLineProcess>();
  let destroyed: Promise<void> | undefined;

  // Last resort if the test process exits without afterAll (e.g. an interrupted run): delete synchronously.
  const onExit = () => {
    for (const end of [server, client]) {
      try {
        execFileSync('ip', ['netns', 'del', end.name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
  };
  process.once('exit', onExit);

  const destroy = () => {
    destroyed ??= (async () => {
      process.off('exit', onExit);
      for (const p of processes) p.kill();
      processes.clear();
      for (const end of [server, client]) await ip(['netns', 'del', end.name]).catch(() => undefined);
    })();
    return destroyed;
  };

  try {
    await ip(['netns', 'add', server.name]);
    await ip(['netns', 'add', client.name]);
    await ip([
      '-n',
      server.name,
      'link',
      'add',
      server.iface,
      'type',
      'veth',
      'peer',
      'name',
      client.iface,
      'netns',
      client.name,
    ]);
    for (const end of [server, client]) {
      await ip(['-n', end.name, 'link', 'set', 'lo', 'up']);
      await ip(['-n', end.name, 'addr', 'add', `${end.ipv4}/24`, 'dev', end.iface]);
      await ip(['-n', end.name, 'addr', 'add', `${end.ipv6}/64`, 'dev', end.iface, 'nodad']);
      await ip(['-n', end.name, 'link', 'set', end.iface, 'up']);
    }
  } catch (error) {
    await destroy();
    throw error;
  }

  const spawnIn = (ns: string, argv: string[]): JsonLineProcess => {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    const lines: Record<string, unknown>[] = [];
    const waiters = new Set<() => void>();
    let exited = false;
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    createInterface({ input: child.stdout }).on('line', (text) => {
      try {
        lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        lines.push({ text });
      }
      for (const wake of waiters) wake();
    });
    child.on('exit', () => {
      exited = true;
      for (const wake of waiters) wake();
    });
    child.stdin.on('error', () => undefined);
    const proc: JsonLineProcess = {
      child,
      lines,
      waitFor(predicate, timeoutMs = 10_000) {
        return new Promise((resolve, reject) => {
          const check = () => {
            const found = lines.find(predicate);
            if (found) {
              done();
              resolve(found);
            } else if (exited) {
              done();
              reject(new Error(`${argv.join(' ')} exited without the expected line; stderr: ${stderr}`));
            }
          };
          const timer = setTimeout(() => {
            done();
            reject(
              new Error(
                `no expected line from ${argv[0]} within ${timeoutMs} ms; got ${JSON.stringify(lines)}`,
              ),
            );
          }, timeoutMs);
          const done = () => {
            clearTimeout(timer);
            waiters.delete(check);
          };
          waiters.add(check);
          check();
        });
      },
      send(line) {
        child.stdin.write(`${line}\n`);
      },
      kill() {
        if (!exited) child.kill('SIGKILL');
        processes.delete(proc);
      },
    };
    processes.add(proc);
    return proc;
  };

  return {
    suffix,
    server,
    client,
    async exec(ns, argv, stdin) {
      return new Promise((resolve, reject) => {
        const child = execFile('ip', ['netns', 'exec', ns, ...argv], (error, stdout, stderr) =>
          error
            ? reject(new Error(`${argv.join(' ')} in ${ns} failed: ${stderr || error.message}`))
            : resolve(stdout),
        );
        child.stdin?.end(stdin ?? '');
      });
    },
    spawn: spawnIn,
    node: (ns, code, args = []) =>
      spawnIn(ns, [process.execPath, '--input-type=module', '-e', code, '--', ...args]),
    destroy,
  };
}

/** Whether a namespace of this name exists (for cleanup assertions). */
export async function netnsExists(name: string): Promise<boolean> {
  const list = await ip(['netns', 'list']);
  return list.split('\n').some((line) => line.split(' ')[0] === name);
}
