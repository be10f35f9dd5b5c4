/**
 * @blackcloud/cli installs like any other CLI: packed (packaging/) with @blackcloud/device and @blackcloud/spa,
 * installed with `npm install -g --prefix <empty>` (docs/install.md), the installed `blackcloud` (JavaScript
 * only, nothing of the repository) prints its help, runs `up` on a private data directory and knocks it.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  complete,
  freePort,
  PROJECT_ROOT,
  removeDir,
  runCommand,
  stopAllCli,
  tempDir,
} from '../functions/local/helpers.ts';
import { INSTALL_FLAGS, npm, packAll, userEnv } from '../support/packages.ts';

let work: string | undefined;

beforeAll(async () => {
  work = await tempDir('bc-cli-pkg');
});

afterAll(async () => {
  await stopAllCli();
  await removeDir(work);
});

/** Every file under `dir`, relative to it. */
async function files(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true, withFileTypes: true }))
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(dir.length + 1));
}

describe('@blackcloud/cli from its tarball', () => {
  it('installs into an empty prefix; the installed blackcloud runs --help, up and knock from outside the repository', {
    timeout: 90_000,
  }, async () => {
    const packages = await packAll(join(work!, 'packed'));
    const cliPackage = packages.get('@blackcloud/cli')!;
    expect(cliPackage.dependencies).toMatchObject({
      '@blackcloud/device': '0.1.0',
      '@blackcloud/spa': '0.1.0',
    });
    for (const runtime of ['aedes', 'commander', '@aws-sdk/client-ec2', 'mqtt']) {
      expect(Object.keys(cliPackage.dependencies)).toContain(runtime);
    }

    const prefix = join(work!, 'prefix');
    const tarballs = ['@blackcloud/spa', '@blackcloud/device', '@blackcloud/cli'].map(
      (name) => packages.get(name)!.tarball,
    );
    await npm(['install', '-g', '--prefix', prefix, ...INSTALL_FLAGS, ...tarballs], work!);
    const listed = await npm(['ls', '-g', '--prefix', prefix, '--all', '--parseable'], work!);
    console.log(
      `@blackcloud/cli: npm pack ${cliPackage.size} bytes (${(cliPackage.size / 1024).toFixed(1)} kB, ${cliPackage.fileCount} files); ` +
        `installed with device and spa: npm ls -g --all --parseable | wc -l = ${listed.trim().split('\n').length}`,
    );

    // JavaScript only, and no path into this checkout.
    const installed = join(prefix, 'lib/node_modules/@blackcloud');
    for (const name of ['cli', 'device', 'spa']) {
      const own = (await files(join(installed, name))).filter((file) => !file.startsWith('node_modules/'));
      expect(own.filter((file) => /\.(ts|mts|cts)$/.test(file))).toEqual([]);
      for (const file of own.filter((path) => path.endsWith('.js'))) {
        expect(await readFile(join(installed, name, file), 'utf8')).not.toContain(PROJECT_ROOT);
      }
    }

    const blackcloud = join(prefix, 'bin/blackcloud');
    const run = (args: string[]) => runCommand([blackcloud, ...args], { cwd: work!, env: userEnv() });
    const help = await complete(run(['--help']));
    expect(help.code).toBe(0);
    for (const command of ['up', 'knock', 'pub', 'sub', 'devices']) expect(help.stdout).toContain(command);

    const dataDir = join(work!, 'cloud');
    const spaPort = await freePort();
    const up = run([
      'up',
      '--data-dir',
      dataDir,
      '--spa-port',
      String(spaPort),
      '--mqtt-port',
      String(await freePort()),
    ]);
    await up.waitForOutput(/Ctrl-C stops/, 'stdout', 40_000);
    const knock = await complete(
      run(['knock', '--device', join(dataDir, 'devices/demo-device/device.json'), '--json']),
    );
    expect(knock.code).toBe(0);
    expect(JSON.parse(knock.stdout)).toMatchObject({
      deviceId: 'demo-device',
      format: 'native',
      port: spaPort,
    });
    await up.waitForOutput(/knock accepted: demo-device from 127\.0\.0\.1 \(bc1\)/);
    expect(await up.stop()).toBe(0);
  });
});
