/**
 * Trusted directories: the data directory and its `pki/` hold the CA, the SPA keys and the replay records, so a
 * directory someone else can write is never used (docs/local.md, "The data directory").
 *
 * Contract:
 * - `assertTrustedDirectory(path, role)` passes when `path` is a real directory (not a symbolic link) owned by the
 *   current user and not writable by group or others. Otherwise it throws `DataDirError` naming the owner or
 *   the mode found and the fix (a directory of one's own, or the chown/chmod that makes this one so).
 *   A missing directory is not checked here (the caller creates it 0700 and checks it then).
 * - `openTrustedDataDir(root, { create })` creates the data directory (0700) when `create` is set, then checks it
 *   and, when it exists, its `pki/`. Every command that reads or writes a data directory opens it through here.
 * - Where the platform has no user ids (`process.getuid` missing), the owner check is left out; the mode check
 *   still runs.
 */
import type { Stats } from 'node:fs';
import { lstat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DataDirError } from './local-errors.ts';

/** The role of a directory in messages: the data directory or its PKI. */
export type TrustedRole = 'data directory' | 'PKI directory';

const GROUP_OTHER_WRITE = 0o022;

function octal(mode: number): string {
  return `0${(mode & 0o777).toString(8)}`;
}

/** The problem with a directory's status, or undefined when it may be trusted. Pure. */
export function untrustedReason(
  info: Pick<Stats, 'uid' | 'mode' | 'isDirectory' | 'isSymbolicLink'>,
  uid: number | undefined,
  path: string,
): string | undefined {
  if (info.isSymbolicLink()) {
    return `is a symbolic link: its target could be changed by whoever owns the link; fix: pass the real directory (${path} resolved) or a directory of your own`;
  }
  if (!info.isDirectory()) return 'is not a directory; fix: pass a directory path';
  if (uid !== undefined && info.uid !== uid) {
    return (
      `belongs to uid ${info.uid}, not to you (uid ${uid}): its owner could have planted a CA or keys in it; ` +
      `fix: use a directory of your own (e.g. --data-dir ./.blackcloud), or, if you trust every file in it, ` +
      `"chown -R ${uid} ${path}"`
    );
  }
  if ((info.mode & GROUP_OTHER_WRITE) !== 0) {
    return (
      `is writable by group or others (mode ${octal(info.mode)}): anyone who can write it could replace its CA, ` +
      `keys or replay records; fix: "chmod 700 ${path}" (or use a directory of your own)`
    );
  }
  return undefined;
}

export async function assertTrustedDirectory(path: string, role: TrustedRole): Promise<void> {
  let info: Stats;
  try {
    info = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new DataDirError(path, `cannot be examined (${(error as NodeJS.ErrnoException).code ?? error})`, {
      cause: error,
    });
  }
  const reason = untrustedReason(info, process.getuid?.(), path);
  if (reason !== undefined) {
    throw new DataDirError(path, role === 'data directory' ? reason : `(the PKI directory) ${reason}`);
  }
}

/** Creates (optionally) and checks a data directory and its `pki/`. */
export async function openTrustedDataDir(root: string, options: { create: boolean }): Promise<void> {
  if (options.create) {
    try {
      await mkdir(root, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new DataDirError(
        root,
        `cannot be created (${(error as NodeJS.ErrnoException).code ?? String(error)}); fix: pass a writable --data-dir`,
        { cause: error },
      );
    }
  }
  await assertTrustedDirectory(root, 'data directory');
  await assertTrustedDirectory(join(root, 'pki'), 'PKI directory');
}
