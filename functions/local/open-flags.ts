/**
 * How the local adapters open the files of a data directory, so a symbolic link planted where a file belongs is
 * never written through (docs/local.md, "The data directory"):
 * - `CREATE_NEW_FLAGS` (`wx` + O_NOFOLLOW): a file that must be new, such as a temporary file; fails with EEXIST
 *   when anything, a link included, is at the name.
 * - `APPEND_FLAGS` (`a` + O_NOFOLLOW): a log appended to (the audit log, the nonce log); fails with ELOOP when the
 *   name is a symbolic link, which `symlinkRefusal` turns into a message naming the file and the fix.
 * - `READ_FLAGS` (`r` + O_NOFOLLOW): a state file read back (the nonce log), likewise refused when a link.
 */
import { constants } from 'node:fs';

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW } = constants;

export const CREATE_NEW_FLAGS = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW;
export const APPEND_FLAGS = O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW;
export const READ_FLAGS = O_RDONLY | O_NOFOLLOW;

/** The message for an open refused because `path` is a symbolic link, or undefined for any other error. */
export function symlinkRefusal(path: string, error: unknown): string | undefined {
  if ((error as NodeJS.ErrnoException | undefined)?.code !== 'ELOOP') return undefined;
  return `${path} is a symbolic link, which is never written through; fix: remove it (rm ${path}) and start again`;
}
