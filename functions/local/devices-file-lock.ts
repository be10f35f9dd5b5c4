/**
 * The cross-process lock of the local devices file. Every writer of `devices.yaml` (the running `blackcloud up`'s
 * key-rotation controller, `blackcloud keys rotate`, `blackcloud devices add|disable|enable|remove`) takes it for
 * its read-modify-write, so no writer loses another's change.
 *
 * Contract:
 * - The lock is the file `<devices file>.lock`, created exclusively (mode 0600) and holding the holder's pid;
 *   `withDevicesFileLock` runs `fn` while holding it and always removes it afterwards.
 * - A lock older than `staleMs` is taken over: its holder died mid-change (changes take milliseconds).
 * - Waiting longer than `timeoutMs` rejects with `DevicesFileLockError`, naming the lock file and the fix.
 * - Not re-entrant: `fn` must not take the same lock again.
 */
import { open, rm, stat } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';

export class DevicesFileLockError extends Error {
  override readonly name = 'DevicesFileLockError';
}

export interface DevicesFileLockOptions {
  /** A lock file older than this is taken over. @default 10000 */
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
  const lockFile = devicesFileLockPath(devicesFile);
  const staleMs = options.staleMs ?? 10_000;
  const timeoutMs = options.timeoutMs ?? 15_000;
  const started = Date.now();
  for (;;) {
    try {
      const handle = await open(lockFile, 'wx', 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const info = await stat(lockFile).catch(() => undefined);
      if (info !== undefined && Date.now() - info.mtimeMs > staleMs) {
        await rm(lockFile, { force: true }); // its holder died mid-change
        continue;
      }
      if (Date.now() - started > timeoutMs) {
        throw new DevicesFileLockError(
          `${lockFile} is held by another process for over ${timeoutMs} ms: if no blackcloud process is running, delete it`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, LOCK_RETRY_MS));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockFile, { force: true });
  }
}
