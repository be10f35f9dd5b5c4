/**
 * Every exit path of the real `blackcloud` process (cli/exit-paths.ts, cli/commands/up.ts): `up` killed with
 * SIGINT/SIGTERM/SIGHUP at several points of its start-up and after it leaves no control socket, no lock and no
 * open grant (the gate's grants are revoked in audit.jsonl; nftables: test/e2e/netns-up-signals.test.ts); a
 * second `up` on the same data directory is refused naming the first; a killed one's lock is taken over; a reader
 * that goes away (`| head`) ends a command quietly.
 */
import { spawn } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signalExitCode } from '../../cli/exit-paths.ts';
import { dataDirLayout } from '../../functions/local/data-dir.ts';
import {
  CLI,
  type CliRun,
  cli,
  freePort,
  PROJECT_ROOT,
  removeDir,
  runCli,
  stopAllCli,
  tempDir,
  waitFor,
} from '../functions/local/helpers.ts';

let root: string | undefined;
let dataDir = '';
let spaPort = 0;
let mqttPort = 0;

beforeAll(async () => {
  root = await tempDir('bc-exit');
  dataDir = join(root, 'data');
  spaPort = await freePort();
  mqttPort = await freePort();
});

afterEach(async () => {
  await stopAllCli();
});

afterAll(async () => {
  await removeDir(root);
});

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

function up(dir = dataDir, ports = { spa: spaPort, mqtt: mqttPort }): CliRun {
  return runCli([
    'up',
    '--json',
    '--data-dir',
    dir,
    '--spa-port',
    String(ports.spa),
    '--mqtt-port',
    String(ports.mqtt),
  ]);
}

/** A stack trace or Node's report of an unhandled error event. */
const TRACE = /Unhandled|\n\s+at |node:internal|EPIPE/;

async function auditTypes(dir: string): Promise<{ type: string; source?: string }[]> {
  const text = await readFile(dataDirLayout(dir).auditFile, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as { type: string; source?: string });
}

/** Knocks as the demo device and waits for up to report the grant; returns the number of grants opened so far. */
async function openGrant(run: CliRun): Promise<void> {
  const device = dataDirLayout(dataDir).deviceFile('demo-device');
  const knock = await cli(['knock', '--device', device]);
  expect(knock.code).toBe(0);
  await run.waitForOutput(/"type":"grant\.opened"/);
}

async function expectNothingLeft(dir: string): Promise<void> {
  const layout = dataDirLayout(dir);
  expect(await exists(join(layout.root, 'control.sock'))).toBe(false);
  expect(await exists(layout.ownerLock)).toBe(false);
  expect(await exists(layout.ownerRecord)).toBe(false);
}

const POINTS = [
  'right after spawn',
  'once it holds the lock',
  'once control.sock exists',
  'after ready',
] as const;
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

describe('blackcloud up stopped by a signal', () => {
  it('a first start creates the data directory (the cases below reuse it)', async () => {
    const run = up();
    await run.waitForOutput(/"event":"ready"/);
    expect(await run.stop()).toBe(0);
    await expectNothingLeft(dataDir);
  });

  const cases = POINTS.flatMap((point) => SIGNALS.map((signal) => [point, signal] as const));
  it.each(cases)(
    '%s, %s: no control socket, no lock, every grant revoked',
    async (point, signal) => {
      const layout = dataDirLayout(dataDir);
      const revokedBefore = (await auditTypes(dataDir)).filter(
        (record) => record.type === 'grant.revoked',
      ).length;
      const run = up();
      if (point === 'once it holds the lock') {
        await waitFor(
          async () => ((await exists(layout.ownerLock)) ? true : undefined),
          'owner.lock',
          20_000,
        );
      } else if (point === 'once control.sock exists') {
        const sock = join(layout.root, 'control.sock');
        await waitFor(async () => ((await exists(sock)) ? true : undefined), 'control.sock', 20_000);
      } else if (point === 'after ready') {
        await run.waitForOutput(/"event":"ready"/);
        await openGrant(run);
      }
      run.child.kill(signal);
      const code = await run.exited;
      // Killed before the exit paths were installed (-1: by the signal itself), stopped during the start-up
      // (128 + n), or after it (0): never a crash.
      const allowed =
        point === 'after ready'
          ? [0]
          : point === 'right after spawn'
            ? [-1, 0, signalExitCode(signal)]
            : [0, signalExitCode(signal)];
      expect(allowed).toContain(code);
      expect(run.stderr()).not.toMatch(TRACE);
      await expectNothingLeft(dataDir);
      if (point === 'after ready') {
        expect(run.stderr()).toContain(`blackcloud: ${signal}: stopping (revoking grants)`);
        const revoked = (await auditTypes(dataDir)).filter(
          (record) => record.type === 'grant.revoked',
        ).length;
        expect(revoked).toBe(revokedBefore + 1);
      }
      if (code === signalExitCode(signal)) {
        expect(run.stderr()).toContain(
          `blackcloud: ${signal} during start-up: stopped, everything opened so far was closed`,
        );
      }
    },
    60_000,
  );

  it('up | tee, then Ctrl-C to the process group: the closed pipe does not stop the shutdown', async () => {
    const child = spawn(
      process.execPath,
      [
        CLI,
        'up',
        '--json',
        '--data-dir',
        dataDir,
        '--spa-port',
        String(spaPort),
        '--mqtt-port',
        String(mqttPort),
      ],
      {
        cwd: PROJECT_ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true, // its own process group, like a shell pipeline's
      },
    );
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err += chunk;
    });
    const exited = new Promise<number | null>((done) => child.on('close', (code) => done(code)));
    try {
      await waitFor(() => (out.includes('"event":"ready"') ? true : undefined), 'ready', 20_000);
      const device = dataDirLayout(dataDir).deviceFile('demo-device');
      expect((await cli(['knock', '--device', device])).code).toBe(0);
      await waitFor(() => (out.includes('"type":"grant.opened"') ? true : undefined), 'grant.opened', 20_000);
      const revokedBefore = (await auditTypes(dataDir)).filter(
        (record) => record.type === 'grant.revoked',
      ).length;
      child.stdout.destroy(); // tee is gone: every later line up writes meets EPIPE
      process.kill(-child.pid!, 'SIGINT');
      expect(await exited).toBe(0);
      expect(err).not.toMatch(TRACE);
      expect(err).toContain('blackcloud: stopped');
      const revoked = (await auditTypes(dataDir)).filter((record) => record.type === 'grant.revoked').length;
      expect(revoked).toBe(revokedBefore + 1);
      await expectNothingLeft(dataDir);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  }, 60_000);
});

describe('one up per data directory', () => {
  it('a second up is refused naming the first one’s pid and ports, and changes nothing of it', async () => {
    const first = up();
    await first.waitForOutput(/"event":"ready"/);
    const layout = dataDirLayout(dataDir);
    const owner = await readFile(layout.ownerRecord, 'utf8');
    const deviceJson = await readFile(layout.deviceFile('demo-device'), 'utf8');
    const controlSocket = await stat(join(layout.root, 'control.sock'));
    const second = await cli([
      'up',
      '--data-dir',
      dataDir,
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
    ]);
    expect(second.code).toBe(1);
    expect(second.stderr).toContain(
      `blackcloud: data directory ${layout.root} is already used by blackcloud up (pid ${first.child.pid}, ` +
        `SPA udp 127.0.0.1:${spaPort}, MQTT tcp 127.0.0.1:${mqttPort}, since `,
    );
    expect(second.stderr).toContain(`kill ${first.child.pid}), or start this one with another --data-dir`);
    expect(await readFile(layout.ownerRecord, 'utf8')).toBe(owner);
    expect(await readFile(layout.deviceFile('demo-device'), 'utf8')).toBe(deviceJson);
    expect((await stat(join(layout.root, 'control.sock'))).ino).toBe(controlSocket.ino);
    const grants = await cli(['grants', 'list', '--data-dir', dataDir]);
    expect(grants.code).toBe(0);
    expect(await first.stop()).toBe(0);
  }, 60_000);

  it('the lock of a killed up (SIGKILL: no cleanup at all) is taken over by the next one', async () => {
    const killed = up();
    await killed.waitForOutput(/"event":"ready"/);
    killed.child.kill('SIGKILL');
    await killed.exited;
    const layout = dataDirLayout(dataDir);
    expect(await exists(layout.ownerLock)).toBe(true);
    const next = up();
    await next.waitForOutput(/"event":"ready"/);
    expect(next.stderr()).toContain(
      `blackcloud: took over the data directory from blackcloud up (pid ${killed.child.pid}, `,
    );
    expect(await next.stop()).toBe(0);
    await expectNothingLeft(dataDir);
  }, 60_000);
});

describe('a reader that goes away (| head)', () => {
  it.each([
    [['--help']],
    [['devices', 'list', '--data-dir', '<data>']],
    [['audit', '--json', '--data-dir', '<data>']],
  ])(
    'blackcloud %j with stdout closed early exits 0 without a trace',
    async (args) => {
      const child = spawn(process.execPath, [CLI, ...args.map((arg) => (arg === '<data>' ? dataDir : arg))], {
        cwd: PROJECT_ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.destroy(); // closed before the first line is written
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
        err += chunk;
      });
      const code = await new Promise<number | null>((done) => child.on('close', (exit) => done(exit)));
      expect(err).not.toMatch(TRACE);
      expect(code).toBe(0);
    },
    30_000,
  );
});
