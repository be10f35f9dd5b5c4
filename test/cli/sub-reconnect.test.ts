/**
 * `blackcloud sub` left running, as users run it (child processes through the real launcher): `blackcloud up
 * --broker` (receiver + gate) in front of a real Mosquitto 2. The broker is killed and restarted, then `up` itself
 * (the receiver and its gate) is stopped and started again on the same ports; each time the running `sub` knocks
 * again, reconnects, subscribes again and prints a message `pub` sends after the restart, with no operator action.
 * (A disabled device's `sub` exiting is test/cli/fleet/operator-cli.test.ts.)
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dataDirLayout } from '../../functions/local/data-dir.ts';
import { ensureLocalPki } from '../../functions/pki/local-ca.ts';
import { cli, freePort, removeDir, runCli, stopAllCli, tempDir } from '../functions/local/helpers.ts';
import { type RunningMosquitto, startMosquitto } from '../support/mosquitto.ts';

let root: string | undefined;
let mosquitto: RunningMosquitto | undefined;

beforeAll(async () => {
  root = await tempDir('bc-sub-reconnect');
});

afterEach(async () => {
  await stopAllCli();
  await mosquitto?.stop();
  mosquitto = undefined;
});

afterAll(async () => {
  await removeDir(root);
});

function count(text: string, pattern: RegExp): number {
  return [...text.matchAll(new RegExp(pattern.source, 'g'))].length;
}

describe('blackcloud sub left running', () => {
  it('survives a broker restart and a receiver restart and prints a message published after each', async () => {
    const dataDir = join(root!, 'data');
    const pkiDir = dataDirLayout(dataDir).pkiDir;
    await ensureLocalPki(pkiDir);
    const work = join(root!, 'mosquitto');
    await mkdir(work, { recursive: true });
    mosquitto = await startMosquitto(pkiDir, work);
    const upArgs = [
      'up',
      '--data-dir',
      dataDir,
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
      '--broker',
      `mqtts://127.0.0.1:${mosquitto.port}`,
    ];
    let up = runCli(upArgs);
    await up.waitForOutput(/Ctrl-C stops/);
    const device = join(dataDir, 'devices/demo-device/device.json');
    const publish = async (message: string): Promise<void> => {
      const pub = await cli(['pub', '--device', device, '-t', 'news', '-m', message]);
      expect(pub).toMatchObject({ code: 0, stderr: '' });
    };

    const sub = runCli(['sub', '--device', device, '-t', '#']);
    await sub.waitForOutput(/subscribed to blackcloud\/devices\/demo-device\/# as demo-device/, 'stderr');
    await publish('before');
    await sub.waitForOutput(/blackcloud\/devices\/demo-device\/news before\n/);

    // 1. The broker dies and comes back on the same port; `up` keeps running.
    await mosquitto.kill();
    await sub.waitForOutput(/connection to the broker lost; knocking again and reconnecting/, 'stderr');
    await mosquitto.restart();
    await sub.waitForOutput(/reconnected after \d+ ms .*subscribed again/, 'stderr', 30_000);
    await publish('after the broker restart');
    await sub.waitForOutput(/news after the broker restart\n/, 'stdout', 15_000);

    // 2. The receiver and its gate stop and start again on the same ports; the broker keeps running.
    expect(await up.stop()).toBe(0);
    await waitForCount(sub.stderr, /connection to the broker lost/, 2);
    up = runCli(upArgs);
    await up.waitForOutput(/Ctrl-C stops/);
    await waitForCount(sub.stderr, /reconnected after \d+ ms/, 2, 30_000);
    await publish('after the receiver restart');
    await sub.waitForOutput(/news after the receiver restart\n/, 'stdout', 15_000);

    expect(sub.stdout()).toBe(
      [
        'blackcloud/devices/demo-device/news before',
        'blackcloud/devices/demo-device/news after the broker restart',
        'blackcloud/devices/demo-device/news after the receiver restart',
        '',
      ].join('\n'),
    );
    // The knock up accepted after each restart: the second `up` saw sub's re-knock (and pub's).
    await up.waitForOutput(/knock accepted: demo-device from 127\.0\.0\.1/);
    const times = [...sub.stderr().matchAll(/reconnected after (\d+) ms \((\d+) attempts in all\)/g)];
    expect(times).toHaveLength(2);
    console.log(
      `blackcloud sub reconnect times (offline -> CONNACK): broker restart ${times[0]![1]} ms, ` +
        `receiver restart ${times[1]![1]} ms (${times[1]![2]} attempts in all)`,
    );
    expect(await sub.stop()).toBe(0);
    expect(await up.stop()).toBe(0);
  }, 120_000); // two restarts, three pub processes and backoff: generous on a busy 2-core machine
});

describe('blackcloud pub and sub never hang on an unreachable black cloud', () => {
  it('--timeout bounds the first connection: one line naming the server and the fix, exit 1', async () => {
    const dataDir = join(root!, 'gone');
    const up = runCli([
      'up',
      '--data-dir',
      dataDir,
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
    ]);
    await up.waitForOutput(/Ctrl-C stops/);
    expect(await up.stop()).toBe(0); // the device file stays; nothing listens any more
    const device = join(dataDir, 'devices/demo-device/device.json');
    for (const args of [
      ['pub', '--device', device, '-t', 'x', '-m', 'y', '--timeout', '1.5'],
      ['sub', '--device', device, '-t', '#', '--timeout', '1.5'],
    ]) {
      const started = Date.now();
      const result = await cli(args);
      const tookMs = Date.now() - started;
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(
        /^blackcloud: could not connect to mqtts:\/\/127\.0\.0\.1:\d+ within 1\.5 s \(\d+ attempts\); fix: check that the knock reached the receiver/,
      );
      expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(tookMs).toBeLessThan(10_000); // 1.5 s plus a node start on a loaded machine
    }
    const bad = await cli(['sub', '--device', device, '-t', '#', '--give-up-after', 'soon']);
    expect(bad).toMatchObject({ code: 1 });
    expect(bad.stderr).toBe(
      'blackcloud: --give-up-after: must be a whole number of seconds in 0..86400 (0 = never give up); received "soon"\n',
    );
  }, 60_000);
});

async function waitForCount(
  text: () => string,
  pattern: RegExp,
  n: number,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (count(text(), pattern) < n) {
    if (Date.now() > deadline) {
      throw new Error(`waited ${timeoutMs} ms for ${n} x ${pattern}; output so far:\n${text()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
