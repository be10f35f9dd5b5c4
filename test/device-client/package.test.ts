/**
 * @blackcloud/device installs on its own: packed (packaging/), installed with `npm install <tarballs>` into an
 * empty folder outside the repository, its runtime dependencies are exactly mqtt, write-file-atomic, zod and
 * @blackcloud/spa, and the example program of docs/device-sdk.md (device-client/examples/meter.ts, the same file),
 * run from that folder against a running `blackcloud up`, knocks, connects, publishes a reading and obeys a
 * command. Prints the tarball size and the installed dependency count (docs/install.md quotes them).
 */
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectDevice, type DeviceClient } from '../../device-client/index.ts';
import {
  freePort,
  PROJECT_ROOT,
  removeDir,
  runCli,
  runCommand,
  stopAllCli,
  tempDir,
} from '../functions/local/helpers.ts';
import { emptyProject, INSTALL_FLAGS, installedCount, npm, packAll, userEnv } from '../support/packages.ts';

/** The device library's allowed runtime dependencies (issue: mqtt and what the protocol needs). */
const ALLOWED = ['@blackcloud/spa', 'mqtt', 'write-file-atomic', 'zod'];

let work: string | undefined;
let observer: DeviceClient | undefined;

beforeAll(async () => {
  work = await tempDir('bc-device-pkg');
});

afterAll(async () => {
  await observer?.endAsync();
  await stopAllCli();
  await removeDir(work);
});

describe('@blackcloud/device from its tarball', () => {
  it('docs/device-sdk.md shows device-client/examples/meter.ts verbatim', async () => {
    const docs = await readFile(join(PROJECT_ROOT, 'docs/device-sdk.md'), 'utf8');
    const section = docs.slice(docs.indexOf('### A complete example program'));
    const block = /```ts\n([\s\S]*?)```\n/.exec(section)?.[1];
    expect(block).toBe(await readFile(join(PROJECT_ROOT, 'device-client/examples/meter.ts'), 'utf8'));
  });

  it('installs into an empty folder with mqtt, write-file-atomic, zod and @blackcloud/spa only, and the docs example knocks, connects and publishes', {
    timeout: 90_000,
  }, async () => {
    const packages = await packAll(join(work!, 'packed'));
    const device = packages.get('@blackcloud/device')!;
    const spa = packages.get('@blackcloud/spa')!;
    expect(Object.keys(device.dependencies)).toEqual(ALLOWED);
    expect(Object.keys(spa.dependencies)).toEqual([]);

    const app = join(work!, 'app');
    await mkdir(app);
    await emptyProject(app);
    await npm(['install', ...INSTALL_FLAGS, spa.tarball, device.tarball], app);
    const installed = JSON.parse(
      await readFile(join(app, 'node_modules/@blackcloud/device/package.json'), 'utf8'),
    ) as { dependencies: Record<string, string> };
    expect(Object.keys(installed.dependencies).sort()).toEqual(ALLOWED);
    // No TypeScript and nothing of the CLI, the CDK, the AWS SDK or aedes in the installed tree.
    const top = await readdir(join(app, 'node_modules'));
    for (const forbidden of ['aedes', 'aws-cdk-lib', '@aws-sdk', 'commander', '@blackcloud/cli']) {
      expect(top).not.toContain(forbidden);
    }
    expect(await readdir(join(app, 'node_modules/@blackcloud'))).toEqual(['device', 'spa']);
    const count = await installedCount(app);
    console.log(
      `@blackcloud/device: npm pack ${device.size} bytes (${(device.size / 1024).toFixed(1)} kB, ${device.fileCount} files, ` +
        `${device.unpackedSize} bytes unpacked); @blackcloud/spa ${spa.size} bytes; installed with spa: ${count} packages ` +
        `(npm ls --all --parseable | wc -l = ${count + 1})`,
    );

    const dataDir = join(work!, 'cloud');
    const up = runCli([
      'up',
      '--data-dir',
      dataDir,
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
    ]);
    await up.waitForOutput(/Ctrl-C stops/, 'stdout', 40_000);
    const deviceFile = join(dataDir, 'devices/demo-device/device.json');

    // An observer (the same device identity, another client id) sees the reading and sends a command.
    const prefix = 'blackcloud/devices/demo-device/';
    observer = await connectDevice(deviceFile, { keyRotation: false, firstConnectDeadlineMs: 20_000 });
    const reading = new Promise<string>((done) => {
      observer!.on('message', (topic, payload) => {
        if (topic === `${prefix}readings`) done(payload.toString());
      });
    });
    await observer.subscribeAsync(`${prefix}readings`, { qos: 1 });

    await copyFile(join(PROJECT_ROOT, 'device-client/examples/meter.ts'), join(app, 'meter.ts'));
    const meter = runCommand([process.execPath, 'meter.ts', deviceFile], { cwd: app, env: userEnv() });
    await meter.waitForOutput(/blackcloud: \{"type":"knock"/, 'stderr', 20_000);
    await meter.waitForOutput(/blackcloud: \{"type":"connect".*"connection":1/, 'stderr', 20_000);
    expect(JSON.parse(await reading)).toMatchObject({ kWh: expect.any(Number) });
    await up.waitForOutput(/knock accepted: demo-device from 127\.0\.0\.1 \(bc1\)/);

    // Commands arrive once the example's subscription is made (it prints nothing for it): retry until seen.
    for (let attempt = 0; !/command /.test(meter.stdout()) && attempt < 50; attempt += 1) {
      await observer.publishAsync(`${prefix}commands/reset`, 'now', { qos: 1 });
      await new Promise((done) => setTimeout(done, 200));
    }
    expect(meter.stdout()).toContain(`command ${prefix}commands/reset: now`);
    expect(await meter.stop()).toBe(0);
    expect(meter.stderr()).not.toMatch(/not sent|Error/);
  });
});
