/**
 * The public address (functions/local/public-address.ts, up-config.ts, endpoints.ts, local-cloud.ts): validation
 * with the fix in the message, precedence and persistence, the broker certificate's names, and device files whose
 * hand-edited endpoint fields survive a restart. The in-process cloud listens on 0.0.0.0 with the loopback alias
 * 127.0.0.2 (then 127.0.0.3) as the public address; the real thing, a device in another network namespace, is
 * test/e2e/netns-public-address.test.ts.
 */
import { randomBytes, X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { connectToBroker } from '../../../device-client/broker-connection.ts';
import { buildKnock } from '../../../device-client/knock.ts';
import { loadDeviceConfig } from '../../../device-client/load-device-config.ts';
import { sendDatagram } from '../../../device-client/send-datagram.ts';
import { systemRandom } from '../../../functions/core/system.ts';
import { DEMO_DEVICE_ID, dataDirLayout } from '../../../functions/local/data-dir.ts';
import { type Endpoints, refreshDeviceEndpoints } from '../../../functions/local/endpoints.ts';
import { type LocalCloud, startLocalCloud } from '../../../functions/local/local-cloud.ts';
import { provisionDevice } from '../../../functions/local/provision-device.ts';
import {
  checkPublicAddress,
  PublicAddressFileError,
  readPublicAddresses,
  savePublicAddresses,
} from '../../../functions/local/public-address.ts';
import {
  LocalConfigError,
  loadUpConfig,
  resolveUpConfig,
  type UpFlags,
} from '../../../functions/local/up-config.ts';
import { ensureLocalPki, loadPem } from '../../../functions/pki/local-ca.ts';
import { freePort, removeDir, tempDir } from './helpers.ts';

const dirs: string[] = [];
let cloud: LocalCloud | undefined;

afterEach(async () => {
  await cloud?.close();
  cloud = undefined;
  for (const dir of dirs.splice(0)) await removeDir(dir);
});

async function newDir(): Promise<string> {
  const dir = await tempDir('bc-public');
  dirs.push(dir);
  return dir;
}

describe('checkPublicAddress', () => {
  it.each([
    ['192.168.1.20', '192.168.1.20'],
    [' 10.0.0.5 ', '10.0.0.5'],
    ['Broker.LAN', 'broker.lan'],
    ['broker.lan.', 'broker.lan'],
    ['fd00:0:0::0:1', 'fd00::1'],
    ['[fd00::1]', 'fd00::1'],
    ['127.0.0.2', '127.0.0.2'],
    ['gateway', 'gateway'],
  ])('accepts %j as %j', (text, address) => {
    expect(checkPublicAddress(text)).toEqual({ address });
  });

  it.each([
    ['0.0.0.0', /wildcard.*fix: give the address of this machine/],
    ['::', /wildcard/],
    ['', /empty; fix/],
    ['mqtts://broker.lan:8883', /URL; fix: give only the host/],
    ['broker.lan:8883', /has a port; fix: .*--spa-port and --mqtt-port/],
    ['[fd00::1]:8883', /has a port/],
    ['192.168.1', /not a valid IPv4 address.*fix/],
    ['192.168.1.300', /not a valid IPv4 address/],
    ['bad_name', /neither an IP address nor a DNS name.*fix/],
    ['-lead.lan', /neither an IP address nor a DNS name/],
    ['fe80::1%eth0', /zone index/],
    ['224.0.0.1', /multicast/],
    ['255.255.255.255', /broadcast/],
    ['ff02::1', /multicast/],
  ])('refuses %j with the fix', (text, message) => {
    const checked = checkPublicAddress(text);
    expect(checked).toHaveProperty('problem');
    expect((checked as { problem: string }).problem).toMatch(message);
  });
});

describe('resolveUpConfig: the public address', () => {
  const file = (publicAddress: string | string[], extra: object = {}) => ({
    source: 'up.yaml',
    publicAddress,
    ...extra,
  });

  it('takes repeated and comma-separated flags, canonical and without duplicates; devices get the first', () => {
    const config = resolveUpConfig({ publicAddress: ['10.0.0.5,Broker.LAN', '10.0.0.5', 'fd00::1'] });
    expect(config.publicAddresses).toEqual(['10.0.0.5', 'broker.lan', 'fd00::1']);
    expect(config.advertisedHost).toBe('10.0.0.5');
  });

  it('listens on every address when no host is given: 0.0.0.0, or dual-stack :: with an IPv6 address', () => {
    expect(resolveUpConfig({ publicAddress: ['10.0.0.5'] }).host).toBe('0.0.0.0');
    expect(resolveUpConfig({ publicAddress: ['10.0.0.5', 'fd00::1'] }).host).toBe('::');
    expect(resolveUpConfig({ publicAddress: ['10.0.0.5'], host: '10.0.0.5' }).host).toBe('10.0.0.5');
    expect(resolveUpConfig({}).host).toBe('127.0.0.1');
    expect(resolveUpConfig({ host: '0.0.0.0' }).advertisedHost).toBe('127.0.0.1');
  });

  it('refuses a loopback host with a public address other machines dial, naming the flag and the fix', () => {
    expect(() => resolveUpConfig({ host: '127.0.0.1', publicAddress: ['10.0.0.5'] })).toThrow(
      /^--host: 127\.0\.0\.1 is a loopback address, which devices dialling the public address 10\.0\.0\.5 cannot reach; fix: .*--host 0\.0\.0\.0/,
    );
    expect(() => resolveUpConfig({}, file('broker.lan', { host: '::1' }))).toThrow(
      /^config file up\.yaml: field "host": ::1 is a loopback address/,
    );
    // A loopback public address with a loopback host is coherent (one machine).
    expect(resolveUpConfig({ host: '127.0.0.1', publicAddress: ['127.0.0.2'] }).advertisedHost).toBe(
      '127.0.0.2',
    );
  });

  it('names the flag or config field and the value of a bad address', () => {
    const flags: UpFlags = { publicAddress: ['10.0.0.5', '0.0.0.0'] };
    expect(() => resolveUpConfig(flags)).toThrow(LocalConfigError);
    expect(() => resolveUpConfig(flags)).toThrow(/^--public-address: "0\.0\.0\.0" is a wildcard/);
    expect(() => resolveUpConfig({ publicAddress: ['a,,b'] })).toThrow(/^--public-address: "" is empty/);
    expect(() => resolveUpConfig({}, file(['ok.lan', 'x:1']))).toThrow(
      /^config file up\.yaml: field "publicAddress": "x:1" has a port/,
    );
  });

  it('flags win over the file, the file over what the data directory remembers; --no-public-address forgets', () => {
    const remembered = ['10.9.9.9'];
    expect(resolveUpConfig({}, undefined, remembered).publicAddresses).toEqual(['10.9.9.9']);
    expect(resolveUpConfig({}, file(['broker.lan']), remembered).publicAddresses).toEqual(['broker.lan']);
    expect(resolveUpConfig({}, file('broker.lan'), remembered).publicAddresses).toEqual(['broker.lan']);
    expect(
      resolveUpConfig({ publicAddress: ['10.0.0.5'] }, file('broker.lan'), remembered).publicAddresses,
    ).toEqual(['10.0.0.5']);
    const forgotten = resolveUpConfig({ publicAddress: false }, file('broker.lan'), remembered);
    expect(forgotten.publicAddresses).toEqual([]);
    expect(forgotten.host).toBe('127.0.0.1');
  });
});

describe('the remembered public address (public-address.json)', () => {
  it('is saved, reused by loadUpConfig, rewritten only when it changes, removed for none', async () => {
    const dir = await newDir();
    const layout = dataDirLayout(dir);
    expect(await readPublicAddresses(layout)).toBeUndefined();
    expect(await savePublicAddresses(layout, ['10.0.0.5', 'broker.lan'])).toBe(true);
    expect(await savePublicAddresses(layout, ['10.0.0.5', 'broker.lan'])).toBe(false);
    expect(JSON.parse(await readFile(layout.publicAddressFile, 'utf8'))).toEqual({
      publicAddresses: ['10.0.0.5', 'broker.lan'],
    });
    const config = await loadUpConfig({ dataDir: dir });
    expect(config.publicAddresses).toEqual(['10.0.0.5', 'broker.lan']);
    expect(config.host).toBe('0.0.0.0');
    expect((await loadUpConfig({ dataDir: dir, publicAddress: false })).publicAddresses).toEqual([]);
    expect(await savePublicAddresses(layout, [])).toBe(true);
    expect(await readPublicAddresses(layout)).toBeUndefined();
    expect(await savePublicAddresses(layout, [])).toBe(false);
  });

  it('a damaged file is refused naming the file and the fix', async () => {
    const dir = await newDir();
    const layout = dataDirLayout(dir);
    await writeFile(layout.publicAddressFile, '{"publicAddresses": ["0.0.0.0"]}');
    const error = await loadUpConfig({ dataDir: dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PublicAddressFileError);
    expect((error as Error).message).toMatch(
      new RegExp(`^${layout.publicAddressFile}: address "0.0.0.0" is a wildcard.*--public-address HOST`),
    );
    await writeFile(layout.publicAddressFile, 'not json');
    await expect(readPublicAddresses(layout)).rejects.toThrow(/is not valid JSON; fix: run "blackcloud up/);
    // A flag does not need the damaged file and replaces it.
    expect((await loadUpConfig({ dataDir: dir, publicAddress: ['10.0.0.5'] })).publicAddresses).toEqual([
      '10.0.0.5',
    ]);
  });
});

describe('refreshDeviceEndpoints', () => {
  it('moves the fields blackcloud wrote, keeps hand-edited ones and reports both', async () => {
    const dir = await newDir();
    const layout = dataDirLayout(dir);
    const old: Endpoints = { host: '127.0.0.1', spaPort: 62201, mqttPort: 8883 };
    const now: Endpoints = { host: '10.0.0.5', spaPort: 62201, mqttPort: 8883 };
    const pki = await ensureLocalPki(layout.pkiDir);
    const ca = await loadPem(pki.caCert, pki.caKey);
    const write = async (id: string, edit?: (json: Record<string, Record<string, unknown>>) => void) => {
      const file = layout.deviceFile(id);
      const access = [{ protocol: 'tcp' as const, port: 8883 }];
      await provisionDevice({
        layout,
        deviceId: id,
        format: 'native',
        access,
        endpoints: old,
        ca,
        caFile: pki.caCert,
        random: systemRandom,
      });
      const json = JSON.parse(await readFile(file, 'utf8'));
      edit?.(json);
      await writeFile(file, JSON.stringify(json));
      return file;
    };
    const plain = await write('plain');
    const edited = await write('edited', (json) => {
      json.spa!.host = 'broker.lan';
      json.mqtt!.url = 'mqtts://broker.lan:8883';
      json.mqtt!.servername = 'broker.lan';
    });
    const refresh = await refreshDeviceEndpoints(layout, now, [old]);
    expect(refresh.updated).toEqual([plain]);
    expect(refresh.kept).toEqual([{ file: edited, fields: ['spa.host', 'mqtt.url'] }]);
    expect(JSON.parse(await readFile(plain, 'utf8'))).toMatchObject({
      spa: { host: '10.0.0.5', port: 62201 },
      mqtt: { url: 'mqtts://10.0.0.5:8883' },
    });
    expect(JSON.parse(await readFile(edited, 'utf8'))).toMatchObject({
      spa: { host: 'broker.lan' },
      mqtt: { url: 'mqtts://broker.lan:8883', servername: 'broker.lan' },
    });
    // Nothing left to do the second time.
    expect((await refreshDeviceEndpoints(layout, now, [old, now])).updated).toEqual([]);
  });
});

describe('up with a public address (in process, 0.0.0.0 with 127.0.0.2 standing in for the LAN address)', () => {
  const knockIo = { now: () => Date.now(), randomBytes: (n: number) => new Uint8Array(randomBytes(n)) };

  async function start(dir: string, flags: UpFlags, notes: string[]): Promise<LocalCloud> {
    const config = await loadUpConfig({ dataDir: dir, ...flags });
    cloud = await startLocalCloud(config, { onNote: (line) => notes.push(line), keyRotation: false });
    return cloud;
  }

  async function knockAndConnect(deviceFile: string): Promise<void> {
    const config = await loadDeviceConfig(deviceFile);
    await sendDatagram(config.spa.host, config.spa.port, buildKnock(config, knockIo).bytes);
    const client = await connectToBroker(config, {
      deadlineMs: 5000,
      retryDelayMs: 100,
      attemptTimeoutMs: 1000,
    });
    await client.endAsync(true);
  }

  function brokerCert(dir: string): Promise<X509Certificate> {
    return readFile(`${dataDirLayout(dir).pkiDir}/broker.crt`).then((pem) => new X509Certificate(pem));
  }

  it('names it in device files and the certificate, keeps it across restarts and keeps hand edits', async () => {
    const dir = await newDir();
    const layout = dataDirLayout(dir);
    const ports = { spaPort: String(await freePort()), mqttPort: String(await freePort()) };
    const notes: string[] = [];
    const first = await start(dir, { host: '0.0.0.0', publicAddress: ['127.0.0.2'], ...ports }, notes);
    const demoFile = layout.deviceFile(DEMO_DEVICE_ID);
    expect(JSON.parse(await readFile(demoFile, 'utf8'))).toMatchObject({
      spa: { host: '127.0.0.2', port: Number(ports.spaPort) },
      mqtt: { url: `mqtts://127.0.0.2:${ports.mqttPort}` },
    });
    expect((await brokerCert(dir)).checkIP('127.0.0.2')).toBe('127.0.0.2');
    expect(notes.some((line) => line.startsWith('public address 127.0.0.2 recorded in'))).toBe(true);
    await knockAndConnect(demoFile);
    const other = await provisionDevice({
      layout,
      deviceId: 'sensor-1',
      format: 'native',
      access: [{ protocol: 'tcp', port: first.endpoints.mqttPort }],
      endpoints: first.endpoints,
      ca: await loadPem(`${layout.pkiDir}/ca.crt`, `${layout.pkiDir}/ca.key`),
      caFile: `${layout.pkiDir}/ca.crt`,
      random: systemRandom,
    });
    await first.close();
    cloud = undefined;
    const caBefore = await readFile(`${layout.pkiDir}/ca.crt`, 'utf8');

    // A hand edit: the demo device dials the loopback name instead.
    const edited = JSON.parse(await readFile(demoFile, 'utf8'));
    edited.spa.host = 'localhost';
    edited.mqtt.url = `mqtts://localhost:${ports.mqttPort}`;
    await writeFile(demoFile, JSON.stringify(edited));

    // Restart without the flag: the remembered address stays in force, the hand edit survives.
    const restartNotes: string[] = [];
    const second = await start(dir, ports, restartNotes);
    expect(second.config.publicAddresses).toEqual(['127.0.0.2']);
    expect(second.config.host).toBe('0.0.0.0');
    expect(JSON.parse(await readFile(demoFile, 'utf8'))).toMatchObject({
      spa: { host: 'localhost' },
      mqtt: { url: `mqtts://localhost:${ports.mqttPort}` },
    });
    expect(restartNotes).toContainEqual(
      expect.stringMatching(/demo-device\/device\.json: spa\.host, mqtt\.url edited by hand, left as it is/),
    );
    await knockAndConnect(demoFile);
    await knockAndConnect(other.deviceFile);
    await second.close();
    cloud = undefined;

    // A new public address: the certificate is reissued by the same CA, the unedited device file follows it.
    const moveNotes: string[] = [];
    await start(dir, { publicAddress: ['127.0.0.3'], ...ports }, moveNotes);
    const cert = await brokerCert(dir);
    expect(cert.checkIP('127.0.0.3')).toBe('127.0.0.3');
    expect(cert.checkIP('127.0.0.2')).toBeUndefined();
    expect(cert.checkIssued(new X509Certificate(caBefore))).toBe(true);
    expect(await readFile(`${layout.pkiDir}/ca.crt`, 'utf8')).toBe(caBefore);
    expect(moveNotes).toContainEqual(
      expect.stringMatching(/^broker certificate reissued by the same CA for 127\.0\.0\.3/),
    );
    expect(moveNotes).toContainEqual(
      expect.stringMatching(
        new RegExp(`^1 device file\\(s\\) now point at mqtts://127\\.0\\.0\\.3:${ports.mqttPort}`),
      ),
    );
    expect(JSON.parse(await readFile(other.deviceFile, 'utf8'))).toMatchObject({
      spa: { host: '127.0.0.3' },
      mqtt: { url: `mqtts://127.0.0.3:${ports.mqttPort}` },
    });
    await knockAndConnect(other.deviceFile);
    expect(JSON.parse(await readFile(demoFile, 'utf8')).spa.host).toBe('localhost');
  }, 60_000);
});
