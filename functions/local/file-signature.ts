/**
 * What identifies one version of a file without reading it: device, inode, size, and modification and change
 * times in nanoseconds. A write by rename (every writer of the data directory, replace-file.ts) gives a new inode
 * and ctime, a write in place a new size or mtime.
 *
 * Contract: `fileSignature(path)` is one `stat`; equal signatures mean "not changed, as far as stat can tell" (two
 * writes within one timestamp tick that keep the size and reuse the inode number look alike: callers that must
 * not act on a stale version compare the content). Rejects with the fs error (ENOENT, ...).
 */
import { stat } from 'node:fs/promises';

export type FileSignature = string;

export async function fileSignature(path: string): Promise<FileSignature> {
  const info = await stat(path, { bigint: true });
  return `${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`;
}
