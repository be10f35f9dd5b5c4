/** replaceFile (write-file-atomic): content, mode, ownership, no temporary file left behind. */
import { chown, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { replaceFile } from '../../../functions/local/replace-file.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bc-replace-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('replaceFile', () => {
  it('replaces the content with the given mode, whatever the old mode, and leaves no temporary file', async () => {
    const file = join(dir, 'key');
    await writeFile(file, 'old', { mode: 0o644 });
    await replaceFile(file, 'new\n', 0o600);
    expect(await readFile(file, 'utf8')).toBe('new\n');
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    await replaceFile(join(dir, 'cert'), 'pem\n', 0o644);
    expect((await stat(join(dir, 'cert'))).mode & 0o777).toBe(0o644);
    expect((await readdir(dir)).sort()).toEqual(['cert', 'key']);
  });

  it('the new file belongs to the writer, not to the old file owner', async () => {
    const file = join(dir, 'devices.yaml');
    await writeFile(file, 'old', { mode: 0o600 });
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    if (uid === 0) await chown(file, 4242, 4242); // as root: an old file owned by someone else
    await replaceFile(file, 'new', 0o600);
    const info = await stat(file);
    expect([info.uid, info.gid]).toEqual([uid, gid]);
  });

  it('rejects when the directory is missing, leaving nothing behind', async () => {
    await expect(replaceFile(join(dir, 'missing', 'file'), 'x', 0o600)).rejects.toMatchObject({
      code: 'ENOENT',
    });
    expect(await readdir(dir)).toEqual([]);
  });
});
