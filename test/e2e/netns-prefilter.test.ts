/**
 * The kernel pre-filter of the SPA port, end to end across two network namespaces (root): `blackcloud up
 * --firewall nftables --host <server address>` installs it on the netdev ingress hook of the server's veth.
 * - junk (wrong length, wrong BC1 magic, fwknop text that is not what a client sends) is dropped in the kernel
 *   and counted there: the receiver never sees it (a datagram that passes the filter, sent after the junk, is the
 *   only rejection the receiver audits);
 * - a BC1 knock (`blackcloud knock`) and a knock of the real fwknop client pass and are accepted;
 * - a flood from one source address is rate limited in the kernel while another source's knock is accepted;
 * - SIGTERM prints the counts and removes the table.
 */
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PREFILTER_RATE_DEFAULTS, prefilterVerdict } from '../../functions/local/prefilter-ruleset.ts';
import {
  CLI,
  type CliRun,
  cli,
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
let dataDir: string | undefined;
let home: string | undefined;
let up: CliRun | undefined;
let table = '';
let spaPort = 0;
let mqttPort = 0;
let floodSource = '';

function inNs(ns: string, argv: readonly string[]): CliRun {
  return runCommand(['ip', 'netns', 'exec', ns, ...argv]);
}

function lines(): Record<string, unknown>[] {
  return up!
    .stdout()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function upSaw(predicate: (line: Record<string, unknown>) => boolean, what: string, timeoutMs = 15_000) {
  return waitFor(() => lines().find(predicate), `${what} in the output of blackcloud up`, timeoutMs);
}

/** Sends hex datagrams from the client namespace, bound to `source`; prints how long it took. */
async function send(source: string, datagrams: readonly Uint8Array[]): Promise<{ ms: number }> {
  const code = `
    import dgram from 'node:dgram';
    import { readFileSync } from 'node:fs';
    const [source, host, port] = process.argv.slice(-3);
    const datagrams = readFileSync(0, 'utf8').trim().split('\\n').filter(Boolean).map((h) => Buffer.from(h === '-' ? '' : h, 'hex'));
    const socket = dgram.createSocket('udp4');
    await new Promise((done) => socket.bind(0, source, done));
    const started = Date.now();
    for (const d of datagrams) await new Promise((done) => socket.send(d, Number(port), host, done));
    console.log(JSON.stringify({ ms: Date.now() - started }));
    socket.close();
  `;
  const stdout = await pair!.exec(
    pair!.client.name,
    [process.execPath, '--input-type=module', '-e', code, '--', source, pair!.server.ipv4, String(spaPort)],
    `${datagrams.map((d) => (d.length === 0 ? '-' : Buffer.from(d).toString('hex'))).join('\n')}\n`,
  );
  return JSON.parse(stdout) as { ms: number };
}

async function tables(): Promise<string> {
  return (await run('ip', ['netns', 'exec', pair!.server.name, 'nft', 'list', 'tables'], { timeout: 10_000 }))
    .stdout;
}

const ascii = (text: string) => new Uint8Array(Buffer.from(text, 'latin1'));

beforeAll(async () => {
  await requireTool('ip', 'iproute2');
  await requireTool('nft', 'nftables');
  await requireTool('fwknop', 'fwknop-client');
  pair = await createNetnsPair('bcp');
  // A second client address: the flood's source.
  floodSource = pair.client.ipv4.replace(/\.2$/, '.3');
  await run('ip', ['-n', pair.client.name, 'addr', 'add', `${floodSource}/24`, 'dev', pair.client.iface], {
    timeout: 10_000,
  });
  dataDir = await tempDir('bc-prefilter');
  home = await tempDir('bc-prefilter-home');
  table = `bc_${pair.suffix}`;
  spaPort = randomInt(20_000, 40_000);
  mqttPort = randomInt(40_000, 60_000);
  up = inNs(pair.server.name, [
    process.execPath,
    CLI,
    'up',
    '--json',
    '--firewall',
    'nftables',
    '--nft-table',
    table,
    '--host',
    pair.server.ipv4,
    '--data-dir',
    dataDir,
    '--spa-port',
    String(spaPort),
    '--mqtt-port',
    String(mqttPort),
  ]);
  await up.waitForOutput(/"event":"ready"/, 'stdout', 60_000);
}, 90_000);

afterAll(async () => {
  await stopAllCli();
  await pair?.destroy();
  await removeDir(dataDir);
  await removeDir(home);
});

describe('the kernel pre-filter of blackcloud up, device in another network namespace', () => {
  it('is installed on the netdev ingress of the receiving interface', async () => {
    expect(lines().find((line) => line.event === 'ready')).toMatchObject({
      prefilter: {
        table: `${table}_spa`,
        hook: { kind: 'netdev-ingress', device: pair!.server.iface, address: pair!.server.ipv4 },
      },
    });
    expect(await tables()).toContain(`table netdev ${table}_spa`);
  });

  it('drops junk in the kernel, counted there: the receiver sees only what passes', async () => {
    const junk = [
      new Uint8Array(0),
      ascii('hello?'),
      new Uint8Array(47).fill(0xb1),
      new Uint8Array(86).fill(0xb1),
      new Uint8Array(48).fill(0xb2),
      new Uint8Array(85),
      ascii(`U2FsdGVkX1${'A'.repeat(200)}`),
      ascii('A'.repeat(200)),
      ascii(`8=${'A'.repeat(198)}`),
      ascii(`8${'A'.repeat(399)}`),
    ];
    expect(junk.map(prefilterVerdict)).toEqual([
      'length',
      'length',
      'length',
      'length',
      'bc1_magic',
      'bc1_magic',
      'fwknop_base64',
      'fwknop_base64',
      'fwknop_base64',
      'length',
    ]);
    // Passes the filter (the right shape), fails at the receiver: the marker that everything before it arrived.
    const marker = new Uint8Array(48).fill(0xb1);
    expect(prefilterVerdict(marker)).toBe('pass');
    const before = lines().length;
    await send(pair!.client.ipv4, [...junk, marker]);
    await upSaw(
      (line) => line.type === 'packet.rejected' && line.reason === 'unknown-key',
      'the marker datagram rejected by the receiver',
    );
    const rejected = lines()
      .slice(before)
      .filter((line) => line.type === 'packet.rejected');
    expect(rejected.map((line) => line.reason)).toEqual(['unknown-key']);
  });

  it('passes a BC1 knock and a real fwknop client knock, both accepted', async () => {
    const knock = await complete(
      inNs(pair!.client.name, [
        process.execPath,
        CLI,
        'knock',
        '--device',
        join(dataDir!, 'devices/demo-device/device.json'),
      ]),
    );
    expect(knock.code).toBe(0);
    await upSaw(
      (line) => line.type === 'packet.accepted' && line.format === 'bc1' && line.source === pair!.client.ipv4,
      'the BC1 knock accepted',
    );

    const added = await cli([
      'devices',
      'add',
      'legacy-1',
      '--format',
      'fwknop',
      '--data-dir',
      dataDir!,
      '--json',
    ]);
    expect(added.code).toBe(0);
    const device = JSON.parse(added.stdout.trim().split('\n')[0]!) as Record<string, unknown>;
    const keys = JSON.stringify(device);
    const keyBase64 = /"keyBase64":"([^"]+)"/.exec(keys)?.[1];
    const hmacKeyBase64 = /"hmacKeyBase64":"([^"]+)"/.exec(keys)?.[1];
    expect(keyBase64).toBeDefined();
    // fwknop stamps whole seconds and the directory reloads on change: retry the client until one is accepted.
    await waitFor(
      async () => {
        await run(
          'ip',
          [
            'netns',
            'exec',
            pair!.client.name,
            'fwknop',
            '--no-save-args',
            '-A',
            `tcp/${mqttPort}`,
            '-a',
            pair!.client.ipv4,
            '-D',
            pair!.server.ipv4,
            '-p',
            String(spaPort),
            '-U',
            'legacy-1',
            '--use-hmac',
            '--key-base64-rijndael',
            keyBase64!,
            '--key-base64-hmac',
            hmacKeyBase64!,
          ],
          { env: { ...process.env, HOME: home! }, cwd: home!, timeout: 15_000 },
        );
        return (await waitFor(
          () => lines().find((line) => line.type === 'packet.accepted' && line.format === 'fwknop'),
          'the fwknop knock accepted',
          1500,
        ).catch(() => undefined)) as Record<string, unknown> | undefined;
      },
      'a real fwknop client knock accepted',
      20_000,
    );
  }, 60_000);

  it('rate limits a flood from one source in the kernel while another source’s knock is accepted', async () => {
    const count = 3000;
    const shaped = Array.from({ length: count }, () => new Uint8Array(48).fill(0xb1));
    const [flood] = await Promise.all([
      send(floodSource, shaped),
      complete(
        inNs(pair!.client.name, [
          process.execPath,
          CLI,
          'knock',
          '--device',
          join(dataDir!, 'devices/demo-device/device.json'),
        ]),
      ),
    ]);
    await upSaw(
      (line) =>
        line.type === 'packet.accepted' &&
        line.format === 'bc1' &&
        lines().filter((l) => l.type === 'packet.accepted' && l.format === 'bc1').length >= 2,
      'the second BC1 knock accepted during the flood',
    );
    // The flood's source got at most its burst plus the rate over the time it sent; the rest was dropped in the kernel.
    const seconds = Math.ceil(flood.ms / 1000) + 1;
    const allowed = PREFILTER_RATE_DEFAULTS.burst + PREFILTER_RATE_DEFAULTS.packetsPerSecond * seconds;
    expect(count - allowed).toBeGreaterThan(0);
    up!.child.kill('SIGTERM');
    const record = await upSaw((line) => line.event === 'prefilter', 'the pre-filter counts on exit');
    expect(record.rate as number).toBeGreaterThanOrEqual(count - allowed);
    expect(record).toMatchObject({ table: `${table}_spa`, length: 5, bc1_magic: 2, fwknop_base64: 3 });
    expect(record.dropped).toBe((record.rate as number) + 10);
    expect(await up!.exited).toBe(0);
    expect(await tables()).not.toContain(`${table}_spa`);
  }, 60_000);
});
