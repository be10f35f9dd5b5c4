/**
 * Runs `nft` (optionally behind a prefix such as `ip netns exec NS`), feeding a ruleset on stdin.
 * Resolves with stdout; rejects with `NftablesUnavailableError` when the command is missing or lacks privilege,
 * `NftablesCommandError` for any other failure (with nft's own message). The same command also opens a
 * long-lived `nft -i` session (nftables-session.ts) for changes that must not cost a process each.
 */
import { spawn } from 'node:child_process';
import { NftablesCommandError, NftablesUnavailableError } from './nftables-errors.ts';
import { type NftSession, type NftSessionOptions, startNftSession } from './nftables-session.ts';

export type NftRun = (args: string[], stdin?: string) => Promise<string>;

/** A runner that can also open a session of the same command (same prefix, e.g. the same namespace). */
export interface NftCommand extends NftRun {
  openSession(opts?: Omit<NftSessionOptions, 'prefix'>): NftSession;
}

const PRIVILEGE_ERROR = /Operation not permitted|Permission denied/i;
const MISSING_COMMAND = /exec of "?nft"? failed|No such file or directory.*nft|nft: not found/i;

/** A runner for `[...prefix, ...args]`; the default prefix is `['nft']`. */
export function nftCommand(prefix: readonly string[] = ['nft']): NftCommand {
  const [command, ...prefixArgs] = prefix;
  if (command === undefined) throw new TypeError('nftCommand needs a command, e.g. ["nft"]');
  const run: NftRun = (args, stdin) =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(command, [...prefixArgs, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
        stdout += chunk;
      });
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        stderr += chunk;
      });
      child.on('error', (error: NodeJS.ErrnoException) => {
        reject(
          error.code === 'ENOENT'
            ? new NftablesUnavailableError(`${command} not found`, { cause: error })
            : new NftablesCommandError(args, null, error.message, { cause: error }),
        );
      });
      child.on('close', (code) => {
        if (code === 0) return resolve(stdout);
        if (PRIVILEGE_ERROR.test(stderr)) return reject(new NftablesUnavailableError(stderr.trim()));
        if (MISSING_COMMAND.test(stderr)) return reject(new NftablesUnavailableError(stderr.trim()));
        reject(new NftablesCommandError(args, code, stderr));
      });
      child.stdin.on('error', () => undefined); // the exit code reports the failure
      child.stdin.end(stdin ?? '');
    });
  return Object.assign(run, {
    openSession: (opts: Omit<NftSessionOptions, 'prefix'> = {}) => startNftSession({ ...opts, prefix }),
  });
}
