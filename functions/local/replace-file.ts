/**
 * Replacing a file atomically with write-file-atomic: a temporary file beside it (`<file>.<number>`, removed on
 * failure and at process exit), written, fsynced, given `mode`, then renamed over the file. A reader, or a crash,
 * sees the old file or the new one, never a mix. The new file belongs to the writer, like any file it creates:
 * no chown (write-file-atomic would otherwise copy the old file's owner when run as root). Symbolic links are
 * followed: the file they point to is replaced. Rejects with the fs error; the old file is then unchanged.
 */
import writeFileAtomic from 'write-file-atomic';

export function replaceFile(path: string, data: string | Buffer, mode: number): Promise<void> {
  // `chown: false` (no chown at all) is honoured by write-file-atomic but missing from its @types (4.0.3).
  const options = { mode, chown: false };
  return writeFileAtomic(path, data, options as unknown as writeFileAtomic.Options);
}
