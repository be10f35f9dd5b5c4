/**
 * End to end across two network namespaces joined by veth (root): `blackcloud up --firewall nftables` in the
 * server namespace, the device (the `blackcloud` CLI and small probes) in the client namespace.
 * - before the knock a TCP SYN to the broker port gets no answer at all (a timeout, not a reset);
 * - after the knock MQTT works (pub arrives at sub, over mutual TLS);
 * - after the grant expires new SYNs get no answer, while an established session keeps working;
 * - junk, empty, oversize and flood datagrams to the SPA port get no byte back and the receiver keeps working;
 * - SIGTERM removes the nftables table.
 * Namespaces, table and data directory carry a random suffix and are removed in afterAll, whatever happened.
 */
import { execFile } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  type CliRun,
  complete,
  PROJECT_ROOT,
  removeDir,
  requireTool,
  runCommand,
  sleep,
  stopAllCli,
  tempDir,
  waitFor,
} from '../functions/local/helpers.ts';
import { createNetnsPair, type NetnsPair, netnsExists } from '../support/netns.ts';

const run = promisify(execFile);
const GRANT_SECONDS = 3;

let pair: NetnsPair | undefined;
let dataDir: string | undefined;
let up: CliRun | undefined;
let table = '';
let spaPort = 0;
let mqttPort = 0;
let deviceFile = '';

/** Runs argv inside a namespace. */
function inNs(ns: string, argv: readonly string[]): CliRun {
  return runCommand(['ip', 'netns', 'exec', ns, ...argv]);
}

function blackcloud(ns: string, args: readonly string[]): CliRun {
  return inNs(ns, [process.execPath, CLI, ...args]);
}

/** One TCP connect from the client namespace: 'connected', 'refused' (RST) or 'timeout' (no answer at all). */
async function synProbe(host: string, port: number, timeoutMs = 1500): Promise<string> {
  const code = `
    import net from 'node:net';
    const [host, port, ms] = process.argv.slice(-3);
    const socket = net.connect({ host, port: Number(port) });
    const done = (result) => { console.log(result); socket.destroy(); process.exit(0); };
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
      host,
      String(port),
      String(timeoutMs),
    ]),
  );
  return result.stdout.trim();
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

beforeAll(async () => {
  await requireTool('ip', 'iproute2');
  await requireTool('nft', 'nftables');
  pair = await createNetnsPair('bce');
  dataDir = await tempDir('bc-e2e');
  table = `bc_${pair.suffix}`;
  spaPort = randomInt(20_000, 40_000);
  mqttPort = randomInt(40_000, 60_000);
  up = blackcloud(pair.server.name, [
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
    '--grant-seconds',
    String(GRANT_SECONDS),
  ]);
  await up.waitForOutput(/"event":"ready"/);
  deviceFile = join(dataDir, 'devices/demo-device/device.json');
}, 60_000);

afterAll(async () => {
  await stopAllCli();
  await pair?.destroy();
  await removeDir(dataDir);
});

describe('blackcloud up --firewall nftables, device in another network namespace', () => {
  it('is ready with its own nftables table guarding the broker port, nothing else', async () => {
    const ready = auditLines().find((line) => line.event === 'ready');
    expect(ready).toMatchObject({
      spa: { host: pair!.server.ipv4, port: spaPort },
      mqtt: { port: mqttPort, url: `mqtts://${pair!.server.ipv4}:${mqttPort}` },
      firewall: 'nftables',
      nftTable: table,
    });
    const stdout = await pair!.exec(pair!.server.name, ['nft', 'list', 'table', 'inet', table]);
    expect(stdout).toContain(`tcp . ${mqttPort} } drop`);
  });

  it('before the knock a SYN to the broker port gets no answer at all (timeout, not reset)', async () => {
    expect(await synProbe(pair!.server.ipv4, mqttPort)).toBe('timeout');
  });

  it('after the knock MQTT works: pub as the demo device arrives at sub', async () => {
    const sub = blackcloud(pair!.client.name, [
      'sub',
      '--device',
      deviceFile,
      '-t',
      'e2e',
      '--count',
      '1',
      '--json',
    ]);
    await sub.waitForOutput(/subscribed to blackcloud\/devices\/demo-device\/e2e/, 'stderr');
    const pub = await complete(
      blackcloud(pair!.client.name, ['pub', '--device', deviceFile, '-t', 'e2e', '-m', 'across namespaces']),
    );
    expect(pub).toMatchObject({ code: 0, stderr: '' });
    expect(await sub.exited).toBe(0);
    expect(JSON.parse(sub.stdout())).toEqual({
      topic: 'blackcloud/devices/demo-device/e2e',
      message: 'across namespaces',
    });
    await upSaw(
      (line) => line.type === 'packet.accepted' && line.source === pair!.client.ipv4,
      'the knock from the client namespace',
    );
  });

  it('once the session is up its rule closes (closed on connect): new SYNs get no answer, the session lives', async () => {
    // A device session opened now, kept after its rule closed; it waits for "go" on stdin before its checks.
    const code = `
      const root = process.argv.at(-2);
      const file = process.argv.at(-1);
      const { loadDeviceConfig } = await import(root + '/device-client/load-device-config.ts');
      const { buildKnock } = await import(root + '/device-client/knock.ts');
      const { sendDatagram } = await import(root + '/device-client/send-datagram.ts');
      const { connectToBroker } = await import(root + '/device-client/broker-connection.ts');
      const { randomBytes } = await import('node:crypto');
      const { createInterface } = await import('node:readline');
      const config = await loadDeviceConfig(file);
      const knock = buildKnock(config, { now: () => Date.now(), randomBytes: (n) => new Uint8Array(randomBytes(n)) });
      await sendDatagram(config.spa.host, config.spa.port, knock.bytes);
      const client = await connectToBroker(config, { deadlineMs: 5000 });
      await client.subscribeAsync('blackcloud/devices/demo-device/alive', { qos: 1 });
      console.log(JSON.stringify({ connected: true }));
      for await (const line of createInterface({ input: process.stdin })) {
        if (line !== 'go') continue;
        const echo = new Promise((done) => client.once('message', (_t, p) => done(p.toString())));
        await client.publishAsync('blackcloud/devices/demo-device/alive', 'still connected', { qos: 1 });
        console.log(JSON.stringify({ echo: await echo }));
        client.end(true);
        process.exit(0);
      }
    `;
    const knockedAt = Date.now();
    const session = inNs(pair!.client.name, [
      process.execPath,
      '--input-type=module',
      '-e',
      code,
      '--',
      PROJECT_ROOT,
      deviceFile,
    ]);
    await session.waitForOutput(/"connected":true/);
    // The broker (nftables: it sees the device's own address) reported the session: the rule closed at once.
    await upSaw(
      (line) =>
        line.type === 'grant.revoked' &&
        line.reason === 'connected' &&
        line.source === pair!.client.ipv4 &&
        Number(line.time) >= knockedAt,
      'the rule to close on connect (an expiry would say reason "expired")',
      (GRANT_SECONDS + 5) * 1000,
    );
    expect(await synProbe(pair!.server.ipv4, mqttPort)).toBe('timeout');
    session.send('go');
    await session.waitForOutput(/"echo":"still connected"/);
    expect(await session.exited).toBe(0);
  });

  it('junk, empty, oversize and flood datagrams get no byte back, and the receiver keeps working', async () => {
    const code = `
      import dgram from 'node:dgram';
      import { randomBytes } from 'node:crypto';
      const [host, port] = process.argv.slice(-2);
      const socket = dgram.createSocket('udp4');
      let bytesBack = 0, icmpError = false;
      socket.on('message', (m) => { bytesBack += m.length; });
      socket.on('error', () => { icmpError = true; });
      await new Promise((done) => socket.connect(Number(port), host, done));
      // Half the flood is BC1-shaped with one key id: the per-source budget (source and key id, spent by
      // authentication failures) must engage; the other half is random bytes.
      const datagrams = [Buffer.alloc(0), Buffer.from('hello?'), Buffer.alloc(1400, 0x41), Buffer.alloc(9000, 0xb1)];
      for (let i = 0; i < 2000; i++) { const b = randomBytes(48 + (i % 40)); if (i % 2) { b[0] = 0xb1; b.writeUInt32BE(0xdeadbeef, 1); } datagrams.push(b); }
      for (const d of datagrams) await new Promise((done) => socket.send(d, done));
      await new Promise((done) => setTimeout(done, 1000));
      console.log(JSON.stringify({ sent: datagrams.length, bytesBack, icmpError }));
      socket.close();
    `;
    const before = auditLines().length;
    const flood = await complete(
      inNs(pair!.client.name, [
        process.execPath,
        '--input-type=module',
        '-e',
        code,
        '--',
        pair!.server.ipv4,
        String(spaPort),
      ]),
    );
    expect(flood.code).toBe(0);
    expect(JSON.parse(flood.stdout)).toEqual({ sent: 2004, bytesBack: 0, icmpError: false });
    await upSaw(
      (line) => line.type === 'packet.rejected' && line.reason === 'rate-limited',
      'the flood to be rate limited',
    );
    expect(
      auditLines()
        .slice(before)
        .some((line) => line.type === 'packet.accepted'),
    ).toBe(false);

    await sleep(500); // the client's token bucket refills (5 per second)
    const pub = await complete(
      blackcloud(pair!.client.name, ['pub', '--device', deviceFile, '-t', 'after-flood', '-m', 'ok']),
    );
    expect(pub).toMatchObject({ code: 0, stderr: '' });
  });

  it('SIGTERM shuts down cleanly and removes the nftables table', async () => {
    expect(await up!.stop()).toBe(0);
    const tables = await run('ip', ['netns', 'exec', pair!.server.name, 'nft', 'list', 'tables']);
    expect(tables.stdout).not.toContain(table);
    expect(await netnsExists(pair!.server.name)).toBe(true); // only our table went away
  });
});
