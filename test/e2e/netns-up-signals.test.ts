/**
 * `blackcloud up --firewall nftables` (root, in a network namespace) stopped by SIGINT/SIGTERM/SIGHUP while it
 * starts (once its nftables table exists) and after a knock opened a grant: the table (and with it every grant)
 * is gone, and so are the control socket and the data directory's lock (cli/exit-paths.ts, local-cloud.ts).
 */
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signalExitCode } from '../../cli/exit-paths.ts';
import { dataDirLayout } from '../../functions/local/data-dir.ts';
import {
  CLI,
  type CliRun,
  complete,
  removeDir,
  requireTool,
  runCommand,
  stopAllCli,
  tempDir,
  waitFor,
} from '../functions/local/helpers.ts';
import { createNetnsPair, type NetnsPair } from '../support/netns.ts';

const run = promisify(execFile);

let pair: NetnsPair | undefined;
let dataDir = '';
let table = '';
let spaPort = 0;
let mqttPort = 0;

beforeAll(async () => {
  await requireTool('ip', 'iproute2');
  await requireTool('nft', 'nftables');
  pair = await createNetnsPair('bcs');
  dataDir = await tempDir('bc-e2e-signals');
  table = `bc_${pair.suffix}`;
  spaPort = randomInt(20_000, 40_000);
  mqttPort = randomInt(40_000, 60_000);
}, 60_000);

afterEach(async () => {
  await stopAllCli();
});

afterAll(async () => {
  await stopAllCli();
  await pair?.destroy();
  await removeDir(dataDir);
});

function blackcloud(ns: string, args: readonly string[]): CliRun {
  return runCommand(['ip', 'netns', 'exec', ns, process.execPath, CLI, ...args]);
}

function up(): CliRun {
  return blackcloud(pair!.server.name, [
    'up',
    '--json',
    '--firewall',
    'nftables',
    '--nft-table',
    table,
    '--host',
    pair!.server.ipv4,
    '--data-dir',
    dataDir,
    '--spa-port',
    String(spaPort),
    '--mqtt-port',
    String(mqttPort),
  ]);
}

async function tableExists(): Promise<boolean> {
  const { stdout } = await run('ip', ['netns', 'exec', pair!.server.name, 'nft', 'list', 'tables']);
  return stdout.includes(`inet ${table}\n`) || stdout.trimEnd().endsWith(`inet ${table}`);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

describe('blackcloud up --firewall nftables stopped by a signal', () => {
  it('a first start creates the data directory and the table; SIGTERM removes the table', async () => {
    const first = up();
    await first.waitForOutput(/"event":"ready"/, 'stdout', 30_000);
    expect(await tableExists()).toBe(true);
    expect(await first.stop()).toBe(0);
    expect(await tableExists()).toBe(false);
  }, 60_000);

  const cases = (['while starting, once the table exists', 'after a knock opened a grant'] as const).flatMap(
    (point) => (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((signal) => [point, signal] as const),
  );
  it.each(cases)(
    '%s, %s: no table, no control socket, no lock',
    async (point, signal) => {
      const running = up();
      if (point === 'after a knock opened a grant') {
        await running.waitForOutput(/"event":"ready"/, 'stdout', 30_000);
        const device = dataDirLayout(dataDir).deviceFile('demo-device');
        const knock = await complete(blackcloud(pair!.client.name, ['knock', '--device', device]));
        expect(knock.code).toBe(0);
        await running.waitForOutput(/"type":"grant\.opened"/, 'stdout', 20_000);
        const stdout = await pair!.exec(pair!.server.name, ['nft', 'list', 'table', 'inet', table]);
        expect(stdout).toContain(pair!.client.ipv4); // the grant is in the kernel's set
      } else {
        await waitFor(
          async () => ((await tableExists()) ? true : undefined),
          `nftables table ${table}`,
          30_000,
        );
      }
      running.child.kill(signal);
      const code = await running.exited;
      expect(point === 'after a knock opened a grant' ? [0] : [0, signalExitCode(signal)]).toContain(code);
      expect(running.stderr()).not.toMatch(/Unhandled|\n\s+at /);
      expect(await tableExists()).toBe(false);
      const layout = dataDirLayout(dataDir);
      expect(await exists(join(layout.root, 'control.sock'))).toBe(false);
      expect(await exists(layout.ownerLock)).toBe(false);
    },
    60_000,
  );
});
