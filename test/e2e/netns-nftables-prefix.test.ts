/**
 * End to end, carrier-grade NAT (docs/scaling.md "Prefix grants"), across two network namespaces (root):
 * `blackcloud up --firewall nftables` in the server namespace, with the demo device's entry given
 * `grantPrefix: { ipv4: 24 }`; in the client namespace a source NAT (the "carrier") sends every TCP connection to
 * the broker port from a second address of the client's /24, while the knock leaves from the client's own address.
 * - before the knock the NATed address gets no answer at all;
 * - the knock opens the whole /24 (one element of the prefix set): the NATed address connects, and the device's
 *   MQTT session from it succeeds;
 * - that session closes the prefix's rule (closed on connect): new SYNs get no answer again.
 * Namespaces, table and data directory carry a random suffix and are removed in afterAll, whatever happened.
 */
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { prefixOf } from '../../functions/core/grant-prefix.ts';
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
const GRANT_SECONDS = 20;

let pair: NetnsPair | undefined;
let dataDir: string | undefined;
let up: CliRun | undefined;
let table = '';
let spaPort = 0;
let mqttPort = 0;
let deviceFile = '';
/** The client's /24 as `network/24`, and the second address of it the client's "carrier" NATs TCP to. */
let prefix = '';
let natAddress = '';

function inNs(ns: string, argv: readonly string[]): CliRun {
  return runCommand(['ip', 'netns', 'exec', ns, ...argv]);
}

function blackcloud(ns: string, args: readonly string[]): CliRun {
  return inNs(ns, [process.execPath, CLI, ...args]);
}

function startUp(): CliRun {
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
    dataDir!,
    '--spa-port',
    String(spaPort),
    '--mqtt-port',
    String(mqttPort),
    '--grant-seconds',
    String(GRANT_SECONDS),
  ]);
}

/** One TCP connect from the client namespace: 'connected', 'refused' (RST) or 'timeout' (no answer at all). */
async function synProbe(timeoutMs = 1500): Promise<string> {
  const code = `
    import net from 'node:net';
    const [host, port, ms] = process.argv.slice(-3);
    const socket = net.connect({ host, port: Number(port) });
    const done = (result) => { console.log(JSON.stringify({ result, local: socket.localAddress })); socket.destroy(); process.exit(0); };
    socket.setTimeout(Number(ms), () => done('timeout'));
    socket.on('connect', () => done('connected'));
    socket.on('error', (error) => done(error.code === 'ECONNREFUSED' || error.code === 'ECONNRESET' ? 'refused' : 'error:' + error.code));
  `;
  const result = await complete(
    inNs(pair!.client.name, [
      process.execPath,
      '--input-type=module',
      '-e',
      code,
      '--',
      pair!.server.ipv4,
      String(mqttPort),
      String(timeoutMs),
    ]),
  );
  return String((JSON.parse(result.stdout) as { result: string }).result);
}

function auditLines(): Record<string, unknown>[] {
  return up!
    .stdout()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function upSaw(predicate: (line: Record<string, unknown>) => boolean, what: string, timeoutMs = 10_000) {
  return waitFor(() => auditLines().find(predicate), `${what} in the output of blackcloud up`, timeoutMs);
}

const serverNft = (args: string[]) => run('ip', ['netns', 'exec', pair!.server.name, 'nft', ...args]);

beforeAll(async () => {
  await requireTool('ip', 'iproute2');
  await requireTool('nft', 'nftables');
  pair = await createNetnsPair('bcp');
  dataDir = await tempDir('bc-e2e-prefix');
  table = `bc_${pair.suffix}`;
  spaPort = randomInt(20_000, 40_000);
  mqttPort = randomInt(40_000, 60_000);
  prefix = prefixOf(pair.client.ipv4, 24) as string;
  natAddress = pair.client.ipv4.replace(/\.\d+$/, '.77');

  // First run: creates the demo device; then its entry gets a prefix-grant policy and `up` starts again.
  const first = startUp();
  await first.waitForOutput(/"event":"ready"/);
  expect(await first.stop()).toBe(0);
  const devicesFile = join(dataDir, 'devices.yaml');
  const doc = parseDocument(await readFile(devicesFile, 'utf8'));
  const index = (doc.toJS().devices as { id: string }[]).findIndex((d) => d.id === 'demo-device');
  expect(index).toBeGreaterThanOrEqual(0);
  doc.setIn(['devices', index, 'grantPrefix'], doc.createNode({ ipv4: 24 }));
  await writeFile(devicesFile, doc.toString(), { mode: 0o600 });
  up = startUp();
  await up.waitForOutput(/"event":"ready"/);
  deviceFile = join(dataDir, 'devices/demo-device/device.json');

  // The client's "carrier": TCP to the broker port leaves from a second address of its /24.
  await run('ip', ['-n', pair.client.name, 'addr', 'add', `${natAddress}/24`, 'dev', pair.client.iface]);
  await pair.exec(
    pair.client.name,
    ['nft', '-f', '-'],
    `table ip bc_carrier {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n` +
      `    ip daddr ${pair.server.ipv4} tcp dport ${mqttPort} snat to ${natAddress}\n  }\n}\n`,
  );
}, 60_000);

afterAll(async () => {
  await stopAllCli();
  await pair?.destroy();
  await removeDir(dataDir);
});

describe('blackcloud up --firewall nftables with a prefix grant, the device behind a carrier NAT', () => {
  it('before the knock the broker port gives the NATed address no answer at all', async () => {
    expect(await synProbe()).toBe('timeout');
  });

  it('a knock from one address opens its /24: the NATed address connects', async () => {
    const knock = await complete(blackcloud(pair!.client.name, ['knock', '--device', deviceFile, '--json']));
    expect(knock.code).toBe(0);
    await upSaw(
      (line) => line.type === 'grant.opened' && line.source === prefix,
      `the grant for ${prefix} (not the host ${pair!.client.ipv4})`,
    );
    const { stdout } = await serverNft(['list', 'set', 'inet', table, 'allow4_24']);
    expect(stdout).toContain(`${prefix} . tcp . ${mqttPort} timeout`);
    // Not as hosts: the host set holds only the in-host controller's own short grant (the server's address).
    const hosts = (await serverNft(['list', 'set', 'inet', table, 'allow4'])).stdout;
    expect(hosts).not.toContain(`${pair!.client.ipv4} .`);
    expect(hosts).not.toContain(`${natAddress} .`);
    expect(await synProbe()).toBe('connected');
  });

  it("the device's MQTT session from the NATed address succeeds and closes the prefix's rule", async () => {
    const pub = await complete(
      blackcloud(pair!.client.name, ['pub', '--device', deviceFile, '-t', 'cgnat', '-m', 'via the pool']),
    );
    expect(pub).toMatchObject({ code: 0, stderr: '' });
    await upSaw(
      (line) => line.type === 'packet.accepted' && line.source === pair!.client.ipv4,
      'the knock from the client address',
    );
    await upSaw(
      (line) => line.type === 'grant.revoked' && line.reason === 'connected' && line.source === prefix,
      'the prefix rule to close on connect (an expiry would say reason "expired")',
    );
    expect((await serverNft(['list', 'set', 'inet', table, 'allow4_24'])).stdout).not.toContain('elements');
    expect(await synProbe()).toBe('timeout');
  });

  it('SIGTERM removes the nftables table, prefix sets included', async () => {
    expect(await up!.stop()).toBe(0);
    const tables = await run('ip', ['netns', 'exec', pair!.server.name, 'nft', 'list', 'tables']);
    expect(tables.stdout).not.toContain(table);
  });
});
