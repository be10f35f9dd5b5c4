/**
 * The packaging scheme (packaging/build-packages.ts) on this repository and on a synthetic one: dependencies are
 * derived from the bundles' imports (versions from the root package.json), a module another package exports is
 * imported from it, never bundled twice, and a build that would ship a file twice, ship a file outside the
 * package's sources or depend on an unlisted npm package fails naming the fix.
 */
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPackages, npmName } from '../../packaging/build-packages.ts';
import type { PackageSpec } from '../../packaging/packages.ts';
import { PROJECT_ROOT, removeDir, tempDir } from '../functions/local/helpers.ts';

let work: string | undefined;

beforeAll(async () => {
  work = await tempDir('bc-packaging');
});

afterAll(async () => {
  await removeDir(work);
});

async function writeFiles(root: string, files: Record<string, string>): Promise<void> {
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, path)), { recursive: true });
    await writeFile(join(root, path), text);
  }
}

const manifest = (name: string) =>
  JSON.stringify({ name, version: '1.2.3', type: 'module', scripts: { x: 'y' } });

describe('buildPackages on this repository', () => {
  it('derives each package’s dependencies and ships the device vocabulary once, in @blackcloud/device', async () => {
    const built = await buildPackages(PROJECT_ROOT, join(work!, 'repo'));
    const [spa, device, cli] = built;
    expect(built.map((item) => item.name)).toEqual([
      '@blackcloud/spa',
      '@blackcloud/device',
      '@blackcloud/cli',
    ]);
    const root = JSON.parse(await readFile(join(PROJECT_ROOT, 'package.json'), 'utf8')) as {
      dependencies: Record<string, string>;
    };
    expect(spa!.dependencies).toEqual({});
    expect(device!.dependencies).toEqual({
      '@blackcloud/spa': '0.1.0',
      mqtt: root.dependencies.mqtt,
      'write-file-atomic': root.dependencies['write-file-atomic'],
      zod: root.dependencies.zod,
    });
    expect(device!.exports.get('device-client/index.ts')).toBe('@blackcloud/device');
    expect(device!.exports.get('functions/core/topics.ts')).toBe('@blackcloud/device/core/topics');
    // The CLI bundles none of what its dependencies ship.
    for (const file of [...spa!.bundled, ...device!.bundled]) expect(cli!.bundled.has(file)).toBe(false);
    expect(cli!.bundled.has('functions/local/local-cloud.ts')).toBe(true);

    const staged = JSON.parse(await readFile(join(cli!.stageDir, 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(staged.scripts).toBeUndefined();
    expect(staged.bin).toEqual({ blackcloud: 'dist/blackcloud.js' });
    const bin = await readFile(join(cli!.stageDir, 'dist/blackcloud.js'), 'utf8');
    expect(bin.startsWith('#!/usr/bin/env node\n')).toBe(true);
    // The command's entry (cli/launch.ts) loads the command line lazily, after the exit paths: esbuild puts that
    // in chunks beside it, so the imports are looked for in the entry and its chunks together.
    const chunksDir = join(cli!.stageDir, 'dist/chunks');
    const chunks = await readdir(chunksDir).catch(() => [] as string[]);
    const code = [
      bin,
      ...(await Promise.all(chunks.map((name) => readFile(join(chunksDir, name), 'utf8')))),
    ].join('\n');
    expect(code).toContain('from "@blackcloud/device"');
    expect(code).toContain('from "@blackcloud/device/core/topics"');
  });
});

describe('buildPackages on a synthetic repository', () => {
  const lib: PackageSpec = { dir: 'lib', entries: { index: 'lib/index.ts' }, sources: ['lib/', 'shared/'] };
  const app = (entry: string): PackageSpec => ({ dir: 'app', entries: { main: entry }, sources: ['app/'] });

  async function repo(name: string, files: Record<string, string>): Promise<string> {
    const root = join(work!, name);
    await writeFiles(root, {
      'package.json': JSON.stringify({
        name: 'x',
        version: '0.0.0',
        dependencies: { 'left-pad': '1.3.0' },
        devDependencies: { vitest: '3' },
      }),
      'lib/package.json': manifest('@x/lib'),
      'lib/index.ts': "export { pad } from './pad.ts';\n",
      'lib/pad.ts':
        "import leftPad from 'left-pad/index.js';\nexport const pad = (s: string): string => leftPad(s, 4);\n",
      'shared/words.ts': 'export const WORD = 1;\n',
      'app/package.json': manifest('@x/app'),
      ...files,
    });
    return root;
  }

  it('maps an import of another package’s entry to that package and lists both dependencies', async () => {
    const root = await repo('ok', {
      'app/main.ts': "import { pad } from '../lib/index.ts';\nconsole.log(pad('1'));\n",
    });
    const [, built] = await buildPackages(root, join(root, 'out'), [lib, app('app/main.ts')]);
    expect(built!.dependencies).toEqual({ '@x/lib': '1.2.3' });
    const [libBuilt] = await buildPackages(root, join(root, 'out'), [lib]);
    expect(libBuilt!.dependencies).toEqual({ 'left-pad': '1.3.0' });
    expect(await readFile(join(built!.stageDir, 'dist/main.js'), 'utf8')).toContain('from "@x/lib"');
  });

  it('refuses to bundle a second copy of a module a dependency bundles but does not export', async () => {
    const root = await repo('twice', {
      'app/main.ts': "import { pad } from '../lib/pad.ts';\nconsole.log(pad('1'));\n",
    });
    await expect(buildPackages(root, join(root, 'out'), [lib, app('app/main.ts')])).rejects.toThrow(
      /app\/main\.ts imports lib\/pad\.ts, which @x\/lib bundles but does not export; fix: import it through lib\/index\.ts/,
    );
  });

  it('refuses a file outside the package’s sources and an npm package the root does not list at run time', async () => {
    const outside = await repo('outside', {
      'app/main.ts': "import { WORD } from '../shared/words.ts';\nconsole.log(WORD);\n",
    });
    await expect(buildPackages(outside, join(outside, 'out'), [lib, app('app/main.ts')])).rejects.toThrow(
      /app\/main\.ts imports shared\/words\.ts, outside the sources of app\//,
    );
    const dev = await repo('dev', { 'app/main.ts': "import { it } from 'vitest';\nconsole.log(it);\n" });
    await expect(buildPackages(dev, join(dev, 'out'), [app('app/main.ts')])).rejects.toThrow(
      /@x\/app imports vitest, which the root package\.json lists as a devDependency; fix: add it to the root package\.json "dependencies"/,
    );
  });

  it('names npm packages by their package, not their subpath', () => {
    expect(npmName('@aws-sdk/client-ec2')).toBe('@aws-sdk/client-ec2');
    expect(npmName('@scope/name/deep/file.js')).toBe('@scope/name');
    expect(npmName('left-pad/index.js')).toBe('left-pad');
  });
});
