/**
 * Replacing a file atomically: a temporary file beside it with a random name (`<file>.tmp-<16 hex digits>`),
 * created exclusively and without following a symbolic link (open-flags.ts `CREATE_NEW_FLAGS`: `wx` +
 * O_NOFOLLOW), written, given `mode`, fsynced, then renamed over the file. A reader, or a crash, sees the old file or
 * the new one, never a mix. Nothing planted at a guessable name is ever opened: a file or link already at the
 * temporary name makes the open fail (EEXIST) instead of writing through it. The new file belongs to the writer,
 * like any file it creates (no chown). A symbolic link at `path` itself is replaced by the new file, never
 * followed. Rejects with the fs error; the old file is then unchanged and the temporary file removed.
 * (write-file-atomic, used before, opens its predictable temporary name with `w`, following links.)
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { CREATE_NEW_FLAGS } from './open-flags.ts';

/** The temporary name beside `path` (exported for the cleaners of leftovers). */
export const TEMPORARY_INFIX = '.tmp-';

export async function replaceFile(path: string, data: string | Buffer, mode: number): Promise<void> {
  const temporary = `${path}${TEMPORARY_INFIX}${randomBytes(8).toString('hex')}`;
  // Opened first, outside the cleanup: a name that was taken (EEXIST) is not ours to remove.
  const handle = await open(temporary, CREATE_NEW_FLAGS, mode);
  try {
    try {
      await handle.writeFile(data);
      await handle.chmod(mode);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true }).catch(() => undefined);
    throw error;
  }
}
