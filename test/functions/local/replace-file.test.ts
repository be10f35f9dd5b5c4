/** replaceFile: content, mode, ownership, no temporary file left behind, never writing through a symbolic link. */
import { watch } from 'node:fs';
import {
  chown,
  lstat,
  mkdtemp,
  open,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CREATE_NEW_FLAGS } from '../../../functions/local/open-flags.ts';
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

  it('replaces a symbolic link at the path with the file, leaving its target untouched', async () => {
    const victim = join(dir, 'victim');
    await writeFile(victim, 'root-owned content');
    const file = join(dir, 'nonces.log');
    await symlink(victim, file);
    await replaceFile(file, 'new\n', 0o600);
    expect(await readFile(victim, 'utf8')).toBe('root-owned content');
    expect((await lstat(file)).isSymbolicLink()).toBe(false);
    expect(await readFile(file, 'utf8')).toBe('new\n');
  });

  it('its temporary files are created exclusively, never through a link planted at the name', async () => {
    const victim = join(dir, 'victim');
    await writeFile(victim, 'keep');
    const planted = join(dir, 'nonces.log.tmp-0000000000000000');
    await symlink(victim, planted);
    await expect(open(planted, CREATE_NEW_FLAGS, 0o600)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(await readFile(victim, 'utf8')).toBe('keep');
  });

  it('names each temporary file at random (.tmp-<16 hex digits>), so no name can be planted in advance', async () => {
    const names = new Set<string>();
    const file = join(dir, 'devices.yaml');
    const watcher = watch(dir, (_event, name) => {
      if (name !== null && name.startsWith('devices.yaml.tmp-')) names.add(name);
    });
    try {
      for (let i = 0; i < 5; i += 1) await replaceFile(file, `v${i}`, 0o600);
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      watcher.close();
    }
    expect(names.size).toBe(5);
    for (const name of names) expect(name).toMatch(/^devices\.yaml\.tmp-[0-9a-f]{16}$/);
  });
});
