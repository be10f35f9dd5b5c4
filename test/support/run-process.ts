/**
 * Runs a program to completion without blocking the test worker's event loop (test support).
 *
 * `spawnSync` of a long program (cdk synth, cfn-lint, a cross-compile) freezes the vitest worker: on a loaded
 * machine past 60 s its RPC to the runner times out ("Timeout calling onTaskUpdate") and the run fails although
 * every test passed. Contract: resolves with the exit status (null when killed: `signal` says why), the whole
 * stdout and stderr as UTF-8, and `error` when the program could not be started (ENOENT); never rejects. A run
 * longer than `timeoutMs` is killed with SIGKILL.
 */
import { spawn } from 'node:child_process';

export interface ProcessResult {
  readonly status: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly error?: Error;
}

export interface RunProcessOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  readonly input?: string;
  /** @default 120000 */
  readonly timeoutMs?: number;
}

export function runProcess(
  command: string,
  args: readonly string[],
  options: RunProcessOptions = {},
): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env ?? process.env,
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let startError: Error | undefined;
    child.stdout?.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', (error) => {
      startError = error;
    });
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({
        status,
        signal,
        stdout: Buffer.concat(stdout).toString('utf8'),
        stderr: Buffer.concat(stderr).toString('utf8'),
        ...(startError === undefined ? {} : { error: startError }),
      });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}
