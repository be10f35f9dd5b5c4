/**
 * The cross-process lock of the local devices file. Every writer of `devices.yaml` (the running `blackcloud up`'s
 * key-rotation controller, `blackcloud keys rotate`, `blackcloud devices add|disable|enable|remove`) takes it for
 * its read-modify-write, so no writer loses another's change.
 *
 * Contract:
 * - The lock is proper-lockfile's: the directory `<devices file>.lock`, created with mkdir (atomic, also on
 *   network file systems); `withDevicesFileLock` runs `fn` while holding it and always removes it afterwards.
 * - While held, its mtime is refreshed every `staleMs / 2` (heartbeat), so a long change is never taken for a
 *   dead holder. A lock not refreshed for `staleMs` (at least 2 s, proper-lockfile's floor) is taken over: its
 *   holder died mid-change.
 * - Waiting longer than `timeoutMs` rejects with `DevicesFileLockError`, naming the lock file and the fix.
 * - If the lock is lost while `fn` runs (its heartbeat failed for `staleMs`, another writer may have taken it
 *   over), `fn` still completes, then the call rejects with `DevicesFileLockError` saying so.
 * - Not re-entrant: `fn` must not take the same lock again.
 */
import { resolve as resolvePath } from 'node:path';
import { lock } from 'proper-lockfile';

export class DevicesFileLockError extends Error {
  override readonly name = 'DevicesFileLockError';
}

export interface DevicesFileLockOptions {
  /** A lock not refreshed for this long is taken over (at least 2000). @default 10000 */
  readonly staleMs?: number;
  /** Give up waiting for the lock after this long. @default 15000 */
  readonly timeoutMs?: number;
}

const LOCK_RETRY_MS = 10;

export function devicesFileLockPath(devicesFile: string): string {
  return `${resolvePath(devicesFile)}.lock`;
}

export async function withDevicesFileLock<T>(
  devicesFile: string,
  fn: () => Promise<T>,
  options: DevicesFileLockOptions = {},
): Promise<T> {
  const file = resolvePath(devicesFile);
  const lockFile = devicesFileLockPath(file);
  const timeoutMs = options.timeoutMs ?? 15_000;
  let lost: Error | undefined;
  let release: () => Promise<void>;
  try {
    release = await lock(file, {
      lockfilePath: lockFile,
      realpath: false, // the devices file may not exist yet
      stale: options.staleMs ?? 10_000,
      retries: {
        retries: Math.ceil(timeoutMs / LOCK_RETRY_MS),
        factor: 1,
        minTimeout: LOCK_RETRY_MS,
        maxTimeout: LOCK_RETRY_MS,
        maxRetryTime: timeoutMs,
      },
      onCompromised: (error) => {
        lost = error;
      },
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw error;
    throw new DevicesFileLockError(
      `${lockFile} is held by another process for over ${timeoutMs} ms: if no blackcloud process is running, delete it`,
      { cause: error },
    );
  }
  let result: T;
  try {
    result = await fn();
  } finally {
    if (lost === undefined) await release();
  }
  if (lost !== undefined) {
    throw new DevicesFileLockError(
      `${lockFile} was lost while held (${lost.message}): another writer may have changed ${file} meanwhile; ` +
        'check it and run the command again',
      { cause: lost },
    );
  }
  return result;
}
