/**
 * Trusted directories (trusted-dir.ts) on the real file system, as root in CI: a data directory or pki/ owned by
 * another user, writable by group or others, or a symbolic link is refused with the fix; `blackcloud up` on such a
 * directory writes nothing into it.
 */
import { chmod, chown, mkdir, readdir, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { DataDirError } from '../../../functions/local/local-errors.ts';
import { assertTrustedDirectory, openTrustedDataDir } from '../../../functions/local/trusted-dir.ts';
import { resolveUpConfig } from '../../../functions/local/up-config.ts';
import { removeDir, tempDir } from './helpers.ts';

const OTHER_UID = 4242;
let base: string | undefined;

beforeEach(async () => {
  base = await tempDir('bc-trust');
});
afterEach(async () => {
  await removeDir(base);
});

describe('assertTrustedDirectory / openTrustedDataDir', () => {
  it('creates a missing data directory 0700 and accepts it, and a 0755 one of our own', async () => {
    const root = join(base!, 'data');
    await openTrustedDataDir(root, { create: true });
    await assertTrustedDirectory(root, 'data directory');
    await mkdir(join(base!, 'readable'), { mode: 0o755 });
    await chmod(join(base!, 'readable'), 0o755);
    await expect(openTrustedDataDir(join(base!, 'readable'), { create: false })).resolves.toBeUndefined();
  });

  it('refuses a directory writable by group or others, naming the mode and the chmod', async () => {
    const root = join(base!, 'open');
    await mkdir(root);
    await chmod(root, 0o777);
    const error = await openTrustedDataDir(root, { create: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataDirError);
    expect((error as Error).message).toBe(
      `data directory ${root}: is writable by group or others (mode 0777): anyone who can write it could ` +
        `replace its CA, keys or replay records; fix: "chmod 700 ${root}" (or use a directory of your own)`,
    );
    await chmod(root, 0o720);
    await expect(openTrustedDataDir(root, { create: false })).rejects.toThrow(/mode 0720/);
  });

  it("refuses a directory owned by another user, and a data directory whose pki/ is another user's", async () => {
    expect(process.getuid?.()).toBe(0); // chown to another user needs root (CI runs as root)
    const root = join(base!, 'planted');
    await mkdir(root, { mode: 0o700 });
    await chown(root, OTHER_UID, OTHER_UID);
    await expect(openTrustedDataDir(root, { create: true })).rejects.toThrow(
      `data directory ${root}: belongs to uid ${OTHER_UID}, not to you (uid 0): its owner could have planted a CA ` +
        `or keys in it; fix: use a directory of your own (e.g. --data-dir ./.blackcloud), or, if you trust every ` +
        `file in it, "chown -R 0 ${root}"`,
    );
    const ours = join(base!, 'ours');
    await mkdir(join(ours, 'pki'), { recursive: true, mode: 0o700 });
    await chown(join(ours, 'pki'), OTHER_UID, OTHER_UID);
    await expect(openTrustedDataDir(ours, { create: false })).rejects.toThrow(
      new RegExp(`^data directory ${join(ours, 'pki')}: \\(the PKI directory\\) belongs to uid ${OTHER_UID}`),
    );
  });

  it('refuses a symbolic link as data directory', async () => {
    const real = join(base!, 'real');
    await mkdir(real, { mode: 0o700 });
    await symlink(real, join(base!, 'link'));
    await expect(assertTrustedDirectory(join(base!, 'link'), 'data directory')).rejects.toThrow(
      /is a symbolic link/,
    );
  });

  it('blackcloud up on a data directory planted by another user refuses before writing anything', async () => {
    const root = join(base!, 'bc');
    await mkdir(root, { mode: 0o700 });
    await chown(root, OTHER_UID, OTHER_UID);
    await expect(
      startLocalCloud(resolveUpConfig({ dataDir: root, spaPort: '0', mqttPort: '0' }), {
        keyRotation: false,
      }),
    ).rejects.toBeInstanceOf(DataDirError);
    expect(await readdir(root)).toEqual([]);
  });
});
