/**
 * A device on another machine (root): `blackcloud up --host 0.0.0.0 --public-address <IP>,<DNS name>` in the
 * server namespace, the device in the client namespace (two network namespaces joined by veth; docs/local.md
 * "A device on another machine"). The client namespace resolves the DNS name through its own /etc/hosts
 * (`/etc/netns/<ns>/hosts`, which `ip netns exec` mounts over /etc/hosts).
 * - the demo device's bundle names the IP address, and the broker certificate's SANs hold both names;
 * - a copy of the bundle, elsewhere, knocks and connects over TLS with hostname verification, by IP and by name;
 *   with a server name the certificate does not hold, the TLS connection is refused;
 * - after a restart without the flag the address is still in force, and a hand edit of device.json survives.
 * Namespaces, hosts file and data directory carry a random suffix and are removed in afterAll.
 */
import { X509Certificate } from 'node:crypto';
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
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

let pair: NetnsPair | undefined;
let dataDir: string | undefined;
let copies: string | undefined;
let hostsDir: string | undefined;
let up: CliRun | undefined;
let spaPort = 0;
let mqttPort = 0;
let hostName = '';

function blackcloud(ns: string, args: readonly string[]): CliRun {
  return runCommand(['ip', 'netns', 'exec', ns, process.execPath, CLI, ...args]);
}

function startUp(extra: readonly string[]): CliRun {
  return blackcloud(pair!.server.name, [
    'up',
    '--json',
    '--data-dir',
    dataDir!,
    '--spa-port',
    String(spaPort),
    '--mqtt-port',
    String(mqttPort),
    ...extra,
  ]);
}

function readyRecord(run: CliRun): Record<string, unknown> {
  const line = run
    .stdout()
    .split('\n')
    .find((text) => text.includes('"event":"ready"'));
  return JSON.parse(line!) as Record<string, unknown>;
}

/** A copy of the demo device's bundle in another directory (what an operator copies onto the device). */
async function copyBundle(name: string, edit?: (json: Record<string, Record<string, unknown>>) => void) {
  const dir = join(copies!, name);
  await cp(join(dataDir!, 'devices/demo-device'), dir, { recursive: true });
  const file = join(dir, 'device.json');
  if (edit !== undefined) {
    const json = JSON.parse(await readFile(file, 'utf8'));
    edit(json);
    await writeFile(file, JSON.stringify(json), { mode: 0o600 });
  }
  return file;
}

/** sub then pub from the client namespace with one device file: the message must arrive. */
async function roundTrip(deviceFile: string, topic: string): Promise<void> {
  const sub = blackcloud(pair!.client.name, [
    'sub',
    '--device',
    deviceFile,
    '-t',
    topic,
    '--count',
    '1',
    '--json',
  ]);
  await sub.waitForOutput(new RegExp(`subscribed to blackcloud/devices/demo-device/${topic}`), 'stderr');
  const pub = await complete(
    blackcloud(pair!.client.name, ['pub', '--device', deviceFile, '-t', topic, '-m', `via ${topic}`]),
  );
  expect(pub).toMatchObject({ code: 0, stderr: '' });
  expect(await sub.exited).toBe(0);
  expect(JSON.parse(sub.stdout())).toEqual({
    topic: `blackcloud/devices/demo-device/${topic}`,
    message: `via ${topic}`,
  });
}

beforeAll(async () => {
  await requireTool('ip', 'iproute2');
  pair = await createNetnsPair('bcp');
  dataDir = await tempDir('bc-public-e2e');
  copies = await tempDir('bc-public-copies');
  hostName = `bc-${pair.suffix}.test`;
  hostsDir = `/etc/netns/${pair.client.name}`;
  await mkdir(hostsDir, { recursive: true });
  await writeFile(join(hostsDir, 'hosts'), `127.0.0.1 localhost\n${pair.server.ipv4} ${hostName}\n`);
  spaPort = 20_000 + Math.floor(Math.random() * 20_000);
  mqttPort = spaPort + 1;
  up = startUp(['--host', '0.0.0.0', '--public-address', `${pair.server.ipv4},${hostName}`]);
  await up.waitForOutput(/"event":"ready"/, 'stdout', 60_000);
}, 90_000);

afterAll(async () => {
  await stopAllCli();
  await pair?.destroy();
  if (hostsDir !== undefined) await rm(hostsDir, { recursive: true, force: true });
  await removeDir(dataDir);
  await removeDir(copies);
});

describe('blackcloud up --public-address, the device in another network namespace', () => {
  it('the bundle names the public address; the broker certificate holds the address and the name', async () => {
    expect(readyRecord(up!)).toMatchObject({
      spa: { host: '0.0.0.0', port: spaPort },
      mqtt: { url: `mqtts://${pair!.server.ipv4}:${mqttPort}` },
      publicAddresses: [pair!.server.ipv4, hostName],
    });
    const device = JSON.parse(await readFile(join(dataDir!, 'devices/demo-device/device.json'), 'utf8'));
    expect(device).toMatchObject({
      spa: { host: pair!.server.ipv4, port: spaPort },
      mqtt: { url: `mqtts://${pair!.server.ipv4}:${mqttPort}` },
    });
    const cert = new X509Certificate(await readFile(join(dataDir!, 'pki/broker.crt')));
    expect(cert.checkIP(pair!.server.ipv4)).toBe(pair!.server.ipv4);
    expect(cert.checkHost(hostName)).toBe(hostName);
    expect(cert.checkIP(pair!.client.ipv4)).toBeUndefined();
  });

  it('a copy of the bundle knocks and connects over TLS with hostname verification, by IP and by name', async () => {
    await roundTrip(await copyBundle('by-ip'), 'by-ip');
    const byName = await copyBundle('by-name', (json) => {
      json.spa!.host = hostName;
      json.mqtt!.url = `mqtts://${hostName}:${mqttPort}`;
    });
    await roundTrip(byName, 'by-name');
    await waitFor(
      () => (up!.stdout().includes(`"source":"${pair!.client.ipv4}"`) ? true : undefined),
      'a knock from the client namespace in the audit',
    );
  }, 60_000);

  it('a server name the certificate does not hold is refused by the device (verification is on)', async () => {
    const wrong = await copyBundle('wrong-name', (json) => {
      json.mqtt!.servername = 'not-in-the-certificate.test';
    });
    const pub = await complete(
      blackcloud(pair!.client.name, ['pub', '--device', wrong, '-t', 'x', '-m', 'x', '--timeout', '2', '-v']),
    );
    expect(pub.code).not.toBe(0);
    expect(pub.stderr).toMatch(/altnames|ERR_TLS_CERT_ALTNAME_INVALID/);
  }, 30_000);

  it('after a restart without the flag the address stays in force and a hand edit survives', async () => {
    const deviceFile = join(dataDir!, 'devices/demo-device/device.json');
    const json = JSON.parse(await readFile(deviceFile, 'utf8'));
    json.spa.host = hostName;
    await writeFile(deviceFile, JSON.stringify(json, null, 2), { mode: 0o600 });
    expect(await up!.stop()).toBe(0);
    const caBefore = await readFile(join(dataDir!, 'pki/ca.crt'), 'utf8');
    const certBefore = await readFile(join(dataDir!, 'pki/broker.crt'), 'utf8');
    up = startUp([]);
    await up.waitForOutput(/"event":"ready"/, 'stdout', 60_000);
    expect(readyRecord(up)).toMatchObject({
      spa: { host: '0.0.0.0' },
      publicAddresses: [pair!.server.ipv4, hostName],
    });
    expect(up.stderr()).toMatch(/demo-device\/device\.json: spa\.host edited by hand, left as it is/);
    expect(JSON.parse(await readFile(deviceFile, 'utf8'))).toMatchObject({
      spa: { host: hostName, port: spaPort },
      mqtt: { url: `mqtts://${pair!.server.ipv4}:${mqttPort}` },
    });
    // Same names, same certificate, same CA.
    expect(await readFile(join(dataDir!, 'pki/broker.crt'), 'utf8')).toBe(certBefore);
    expect(await readFile(join(dataDir!, 'pki/ca.crt'), 'utf8')).toBe(caBefore);
    await roundTrip(deviceFile, 'after-restart');
  }, 90_000);
});
