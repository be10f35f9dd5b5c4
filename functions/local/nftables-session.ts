/**
 * One long-lived `nft -i` process that applies ruleset changes without a process per change.
 *
 * Contract:
 * - `apply(line)` sends one line to nft; nft parses and commits each input line as one transaction (all or
 *   nothing; several commands are joined with `; `). It resolves once nft has processed the line, rejects with
 *   `NftablesCommandError` carrying nft's own error text when nft refused it. Lines are pipelined: nft handles
 *   them in order, one at a time.
 * - Acknowledgement: after every line a sentinel `bcack N` (N a sequence number) is sent. It is a syntax error,
 *   so nft writes an error naming that exact line to stderr without touching the kernel; everything nft wrote to
 *   stderr between two sentinels belongs to the line between them (stderr is one ordered stream; stdout, where
 *   nft writes nothing for add/delete, is drained and ignored).
 * - The process dying (killed, crashed) is recovered: a new one is started and the lines not yet acknowledged are
 *   sent again in order (callers' lines must be idempotent, as the firewall's add/delete/add and add/delete are).
 *   At most `maxRestarts` restarts per `restartWindowMs`; beyond that the session gives up: pending and later
 *   `apply` calls reject with `NftablesSessionError` (the firewall then runs one `nft -f -` per batch). Each
 *   restart and the giving up are reported through `onEvent`.
 * - A line must not contain a newline (refused with `TypeError`); the text itself comes from nftables-ruleset.ts,
 *   which builds it from validated values only.
 * - The process starts at once (the first grant does not pay for the spawn).
 * - `close()` ends stdin (nft exits at end of input), waits for the exit, and kills the process after
 *   `closeTimeoutMs`; pending lines reject with `NftablesSessionError`.
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { NftablesCommandError, NftablesUnavailableError } from './nftables-errors.ts';

export type NftSessionEvent =
  | { readonly type: 'restarted'; readonly restarts: number; readonly reason: string }
  | { readonly type: 'gave-up'; readonly restarts: number; readonly reason: string };

export interface NftSession {
  apply(line: string): Promise<void>;
  close(): Promise<void>;
  /** The running nft's process id (none after close, or once given up). */
  readonly pid: number | undefined;
}

export interface NftSessionOptions {
  /** The command, e.g. ['nft'] or ['ip', 'netns', 'exec', 'NS', 'nft']; `-i` is appended. @default ['nft'] */
  readonly prefix?: readonly string[];
  readonly onEvent?: (event: NftSessionEvent) => void;
  /** @default 5 */
  readonly maxRestarts?: number;
  /** @default 60_000 */
  readonly restartWindowMs?: number;
  /** @default 2_000 */
  readonly closeTimeoutMs?: number;
}

/** The session is closed, or gave up restarting nft. */
export class NftablesSessionError extends Error {
  override readonly name: string = 'NftablesSessionError';
}

interface Pending {
  readonly seq: number;
  readonly line: string;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

const SENTINEL = /^bcack (\d+)$/;
const ARGS = ['-i'];

export function startNftSession(opts: NftSessionOptions = {}): NftSession {
  const [command, ...prefixArgs] = opts.prefix ?? ['nft'];
  if (command === undefined) throw new TypeError('startNftSession needs a command, e.g. ["nft"]');
  const maxRestarts = opts.maxRestarts ?? 5;
  const windowMs = opts.restartWindowMs ?? 60_000;
  const closeTimeoutMs = opts.closeTimeoutMs ?? 2_000;

  const pending: Pending[] = [];
  const restartTimes: number[] = [];
  let seq = 0;
  let child: ChildProcessWithoutNullStreams | undefined;
  let failure: NftablesSessionError | undefined;
  let closing = false;

  function failAll(error: Error) {
    for (const p of pending.splice(0)) p.reject(error);
  }

  function spawnChild(): ChildProcessWithoutNullStreams {
    const proc = spawn(command as string, [...prefixArgs, ...ARGS], { stdio: ['pipe', 'pipe', 'pipe'] });
    let buffered = '';
    let errorText: string[] = [];
    let skipCaret = false;
    proc.stdout.resume(); // nothing we need is written there; keep the pipe from filling
    proc.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      buffered += chunk;
      let newline = buffered.indexOf('\n');
      while (newline !== -1) {
        const text = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        newline = buffered.indexOf('\n');
        if (skipCaret) {
          skipCaret = false; // the `^^^` line under the sentinel
          continue;
        }
        const match = SENTINEL.exec(text);
        if (match === null) {
          errorText.push(text);
          continue;
        }
        // The sentinel's own error is the header line just before its echo.
        if (errorText.at(-1)?.startsWith('Error:')) errorText.pop();
        skipCaret = true;
        const acked = Number(match[1]);
        const head = pending[0];
        if (head === undefined || head.seq !== acked) continue; // an ack for a line resent after a restart
        pending.shift();
        const message = errorText.join('\n').trim();
        errorText = [];
        if (message === '') head.resolve();
        else head.reject(new NftablesCommandError(ARGS, 1, `${message}\n`));
      }
    });
    proc.stdin.on('error', () => undefined); // the exit reports the failure
    proc.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') {
        failure = new NftablesSessionError(`nft session: ${command} not found`, { cause: error });
        failAll(new NftablesUnavailableError(`${command} not found`, { cause: error }));
      }
    });
    proc.on('close', (code, signal) => {
      if (child !== proc) return;
      child = undefined;
      if (closing || failure !== undefined) return;
      const reason = `nft exited (${signal ?? `code ${code}`})`;
      const now = Date.now();
      while (restartTimes.length > 0 && now - (restartTimes[0] as number) > windowMs) restartTimes.shift();
      if (restartTimes.length >= maxRestarts) {
        failure = new NftablesSessionError(
          `nft session gave up after ${restartTimes.length} restarts within ${windowMs} ms: ${reason}`,
        );
        opts.onEvent?.({ type: 'gave-up', restarts: restartTimes.length, reason });
        failAll(failure);
        return;
      }
      restartTimes.push(now);
      child = spawnChild();
      for (const p of pending) write(child, p);
      opts.onEvent?.({ type: 'restarted', restarts: restartTimes.length, reason });
    });
    return proc;
  }

  function write(proc: ChildProcessWithoutNullStreams, p: Pending) {
    proc.stdin.write(`${p.line}\nbcack ${p.seq}\n`);
  }

  child = spawnChild();
  return {
    get pid() {
      return child?.pid;
    },
    apply(line) {
      if (line.includes('\n')) return Promise.reject(new TypeError('an nft session line has no newline'));
      if (failure !== undefined) return Promise.reject(failure);
      if (closing) return Promise.reject(new NftablesSessionError('nft session is closed'));
      child ??= spawnChild();
      const proc = child;
      return new Promise<void>((resolve, reject) => {
        seq += 1;
        const p: Pending = { seq, line, resolve, reject };
        pending.push(p);
        write(proc, p);
      });
    },
    async close() {
      if (closing) return;
      closing = true;
      failAll(new NftablesSessionError('nft session is closed'));
      const proc = child;
      child = undefined;
      if (proc === undefined || proc.exitCode !== null || proc.signalCode !== null) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => proc.kill('SIGKILL'), closeTimeoutMs);
        proc.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        proc.stdin.end();
      });
    },
  };
}
