/**
 * Every way the `blackcloud` process ends, in one place (docs/local.md, "Stopping"). The launcher installs it
 * before anything else loads, so it covers the first line of a start-up to the last of a shutdown.
 *
 * Contract:
 * - A command that opened something registers `hold(stop)` and calls the release it returns once it has closed
 *   everything. SIGINT, SIGTERM, SIGHUP, an uncaught exception or an unhandled rejection then call every `stop`
 *   once, with the reason (`SIGINT`, ...); a repeated signal only says the shutdown is under way. With no hold,
 *   the process exits at once (a signal: 128 + its number; an uncaught error: 1), as nothing needs closing.
 * - The shutdown is bounded: `deadlineMs` after the first stop, the process exits with 1 and says so. Once the
 *   last hold is released during a shutdown, the process exits within `graceMs` (with `process.exitCode`) even if
 *   a stray handle would keep it alive.
 * - An uncaught error is printed as one line (`blackcloud: ...`; its stack with BLACKCLOUD_DEBUG=1), exit code 1.
 * - An error on stdout or stderr (EPIPE: the reader went away, as `| head` does) is swallowed: nothing more is
 *   written to that stream (`processIo` checks `writable`), the command runs on, and holds registered with
 *   `stopWhenStdoutCloses` are stopped when it is stdout (`sub`, `audit --follow`: their output is their point).
 *   `up` keeps running: its audit file still records everything.
 */
import type { EventEmitter } from 'node:events';
import { constants } from 'node:os';
import { errorLine } from './cli-io.ts';

/** The part of `process` used here (a test passes an EventEmitter with these). */
export interface ExitProcess extends Pick<EventEmitter, 'on'> {
  readonly stdout: Pick<EventEmitter, 'on'>;
  readonly stderr: Pick<EventEmitter, 'on'> & { readonly writable: boolean; write(text: string): unknown };
  readonly env: NodeJS.ProcessEnv;
  exitCode?: number | string | null | undefined;
  exit(code?: number): never;
}

export interface HoldOptions {
  /** Stop this hold when stdout goes away (EPIPE). @default false */
  readonly stopWhenStdoutCloses?: boolean;
}

export interface ExitPaths {
  install(): void;
  hold(stop: (reason: string) => void, options?: HoldOptions): () => void;
  /** Why the shutdown began (`SIGINT`, `uncaught error`, ...), or undefined while none began. */
  readonly stopReason: string | undefined;
}

/** A start-up ended by a signal: the CLI exits with 128 + the signal's number, the convention. */
export class StoppedBySignal extends Error {
  override readonly name = 'StoppedBySignal';
  readonly exitCode: number;

  constructor(message: string, reason: string, options?: { cause?: unknown }) {
    super(message, options);
    this.exitCode = signalExitCode(reason) ?? 1;
  }
}

export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
/** How long a shutdown may take before the process exits anyway. */
export const SHUTDOWN_DEADLINE_MS = 20_000;

export function signalExitCode(reason: string): number | undefined {
  const number = (constants.signals as Record<string, number | undefined>)[reason];
  return number === undefined ? undefined : 128 + number;
}

interface Hold {
  readonly stop: (reason: string) => void;
  readonly options: HoldOptions;
  stopped: boolean;
}

export function createExitPaths(
  proc: ExitProcess,
  timing: { deadlineMs?: number; graceMs?: number } = {},
): ExitPaths {
  const deadlineMs = timing.deadlineMs ?? SHUTDOWN_DEADLINE_MS;
  const graceMs = timing.graceMs ?? 1_000;
  const holds = new Set<Hold>();
  let stopReason: string | undefined;
  let installed = false;

  const say = (line: string) => {
    try {
      if (proc.stderr.writable) proc.stderr.write(`blackcloud: ${line}\n`);
    } catch {
      // stderr is gone: nothing to tell.
    }
  };

  const stopHold = (hold: Hold, reason: string) => {
    if (hold.stopped) return;
    hold.stopped = true;
    try {
      hold.stop(reason);
    } catch (error) {
      say(`while stopping: ${errorLine(error).replace(/^blackcloud: /, '')}`);
    }
  };

  const beginShutdown = (reason: string, codeWithoutHolds: number) => {
    if (stopReason !== undefined) {
      say(`${reason}: already stopping (${stopReason}), at most ${Math.round(deadlineMs / 1000)} s`);
      return;
    }
    stopReason = reason;
    if (holds.size === 0) proc.exit(codeWithoutHolds);
    const deadline = setTimeout(() => {
      say(`shutdown did not finish within ${Math.round(deadlineMs / 1000)} s: exiting anyway`);
      proc.exit(1);
    }, deadlineMs);
    deadline.unref();
    for (const hold of [...holds]) stopHold(hold, reason);
  };

  const uncaught = (error: unknown) => {
    say(errorLine(error).replace(/^blackcloud: /, 'uncaught error: '));
    if (proc.env.BLACKCLOUD_DEBUG === '1' && error instanceof Error) say(String(error.stack));
    proc.exitCode = 1;
    beginShutdown('uncaught error', 1);
  };

  return {
    get stopReason() {
      return stopReason;
    },
    install() {
      if (installed) return;
      installed = true;
      for (const signal of STOP_SIGNALS) {
        proc.on(signal, () => beginShutdown(signal, signalExitCode(signal) ?? 1));
      }
      proc.on('uncaughtException', uncaught);
      proc.on('unhandledRejection', uncaught);
      proc.stdout.on('error', () => {
        for (const hold of [...holds]) if (hold.options.stopWhenStdoutCloses) stopHold(hold, 'stdout closed');
      });
      proc.stderr.on('error', () => undefined);
    },
    hold(stop, options = {}) {
      const hold: Hold = { stop, options, stopped: false };
      holds.add(hold);
      if (stopReason !== undefined) stopHold(hold, stopReason);
      return () => {
        if (!holds.delete(hold)) return;
        if (stopReason !== undefined && holds.size === 0) setTimeout(() => proc.exit(), graceMs).unref();
      };
    },
  };
}

/** The process's own exit paths; `cli/bin/blackcloud.js` installs them first thing. */
export const exitPaths: ExitPaths = createExitPaths(process);
