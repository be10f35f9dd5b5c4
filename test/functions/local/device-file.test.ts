import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addDeviceEntry,
  DeviceFileError,
  loadDeviceFile,
  writeDeviceFile,
} from '../../../functions/local/device-file.ts';
import {
  FileDeviceDirectory,
  StaticDeviceDirectory,
} from '../../../functions/local/file-device-directory.ts';
import { bytesFrom, makeDevice } from '../receiver/helpers.ts';

const BC1_KEY = bytesFrom('file bc1 key', 32);
const ENC_KEY = bytesFrom('file fwknop enc', 32);
const HMAC_KEY = bytesFrom('file fwknop hmac', 64);
const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');

const DEMO_YAML = `# the demo fleet
devices:
  - id: demo-device                # [a-zA-Z0-9._-]{1,128}
    enabled: true
    allowedAccess: [tcp/8883]
    maxOpenSeconds: 300
    nativeKeys:
      - keyId: 305419896
        key: { file: keys/demo-device.bc1 }
        notAfter: 2026-12-01T00:00:00Z
    fwknop:
      username: demo
      encryptionKey: { file: keys/demo-device.fwknop-key }
      hmacKey: { file: keys/demo-device.fwknop-hmac }
      hmacType: sha256
  - id: sensor.7
    allowedAccess: [tcp/8883, udp/5683]
`;

describe('device file', () => {
  let dir: string;
  let file: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bc-devices-'));
    file = join(dir, 'devices.yaml');
    await mkdir(join(dir, 'keys'), { mode: 0o700 });
    await writeFile(join(dir, 'keys/demo-device.bc1'), `${b64(BC1_KEY)}\n`, { mode: 0o600 });
    await writeFile(join(dir, 'keys/demo-device.fwknop-key'), b64(ENC_KEY), { mode: 0o600 });
    await writeFile(join(dir, 'keys/demo-device.fwknop-hmac'), b64(HMAC_KEY), { mode: 0o600 });
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function failure(text: string, name = 'devices.yaml'): Promise<DeviceFileError> {
    const path = join(dir, name);
    await writeFile(path, text, { mode: 0o600 });
    const error = await loadDeviceFile(path).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeviceFileError);
    return error as DeviceFileError;
  }

  it('loads the documented format into frozen devices with keys resolved and defaults applied', async () => {
    await writeFile(file, DEMO_YAML, { mode: 0o600 });
    const devices = await loadDeviceFile(file);
    expect(devices).toEqual([
      {
        id: 'demo-device',
        enabled: true,
        allowedAccess: [{ protocol: 'tcp', port: 8883 }],
        maxOpenSeconds: 300,
        nativeKeys: [{ keyId: 305_419_896, key: BC1_KEY, notAfter: Date.UTC(2026, 11, 1) }],
        fwknop: { username: 'demo', encryptionKey: ENC_KEY, hmacKey: HMAC_KEY, hmacType: 'sha256' },
      },
      {
        id: 'sensor.7',
        enabled: true,
        allowedAccess: [
          { protocol: 'tcp', port: 8883 },
          { protocol: 'udp', port: 5683 },
        ],
        maxOpenSeconds: 300,
        nativeKeys: [],
      },
    ]);
    expect(Object.isFrozen(devices[0])).toBe(true);
  });

  it('loads a grantPrefix policy (prefix grants, off by default) and refuses an invalid one naming the field', async () => {
    await writeFile(
      file,
      'devices:\n  - id: cell-1\n    allowedAccess: [tcp/8883]\n' +
        '    grantPrefix: { ipv4: 24, ranges: ["2001:DB8:40::/48"] }\n  - id: plain\n    allowedAccess: [tcp/8883]\n',
      { mode: 0o600 },
    );
    const [cell, plain] = await loadDeviceFile(file);
    expect(cell!.grantPrefix).toEqual({ ipv4: 24, ranges: ['2001:db8:40::/48'] });
    expect(plain!.grantPrefix).toBeUndefined();
    const error = await failure(
      'devices:\n  - id: cell-2\n    allowedAccess: [tcp/8883]\n    grantPrefix: { ipv4: 8 }\n',
    );
    expect(error.message).toMatch(/grantPrefix/);
    expect(error.message).toMatch(/grantPrefix\.ipv4: received 8; expected an integer 16\.\.32/);
  });

  it('accepts JSON and inline base64 keys', async () => {
    const json = JSON.stringify({
      devices: [
        { id: 'j', allowedAccess: ['udp/5683'], nativeKeys: [{ keyId: 1, key: { base64: b64(BC1_KEY) } }] },
      ],
    });
    await writeFile(join(dir, 'devices.json'), json, { mode: 0o600 });
    const [device] = await loadDeviceFile(join(dir, 'devices.json'));
    expect(device!.nativeKeys[0]!.key).toEqual(BC1_KEY);
  });

  // Each row: a broken file, the field path the error must name, the value it must quote, words of the fix.
  const BROKEN: readonly { n: number; yaml: string; path: string; value: string; fix: RegExp }[] = [
    {
      n: 1,
      yaml: 'devices:\n  - id: "bad id!"\n    allowedAccess: [tcp/8883]\n',
      path: 'devices[0].id',
      value: '"bad id!"',
      fix: /1\.\.64 characters of a-z A-Z 0-9/,
    },
    {
      n: 1.1,
      yaml: 'devices:\n  - id: .hidden\n    allowedAccess: [tcp/8883]\n',
      path: 'devices[0].id',
      value: '".hidden"',
      fix: /starting with a letter or digit/,
    },
    {
      n: 1.2,
      yaml: `devices:\n  - id: ${'d'.repeat(65)}\n    allowedAccess: [tcp/8883]\n`,
      path: 'devices[0].id',
      value: `"${'d'.repeat(40)}`, // long values are quoted shortened
      fix: /1\.\.64 characters/,
    },
    {
      n: 2,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883, tcp/99999]\n',
      path: 'devices[0].allowedAccess[1]',
      value: '"tcp/99999"',
      fix: /PORT .*1\.\.65535.*tcp\/8883/,
    },
    {
      n: 3,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [sctp/1]\n',
      path: 'devices[0].allowedAccess[0]',
      value: '"sctp/1"',
      fix: /"tcp\/PORT" or "udp\/PORT"/,
    },
    {
      n: 4,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    maxOpenSeconds: 0\n',
      path: 'devices[0].maxOpenSeconds',
      value: '0',
      fix: /integer 1\.\.86400/,
    },
    {
      n: 5,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys:\n      - keyId: -1\n        key: { file: k }\n',
      path: 'devices[0].nativeKeys[0].keyId',
      value: '-1',
      fix: /0\.\.4294967295 \(u32\)/,
    },
    {
      n: 6,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    enabeld: false\n',
      path: 'devices[0]',
      value: 'a mapping with id, allowedAccess, enabeld',
      fix: /unknown field "enabeld": remove or correct the spelling/,
    },
    {
      n: 7,
      yaml: 'devices:\n  - id: a\n',
      path: 'devices[0].allowedAccess',
      value: 'nothing',
      fix: /missing: expected a list such as \[tcp\/8883\]/,
    },
    {
      n: 8,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys:\n      - keyId: 1\n        key: { file: k, base64: AAAA }\n',
      path: 'devices[0].nativeKeys[0].key',
      value: 'a mapping with file, base64',
      fix: /exactly one of \{ file: PATH \} or \{ base64/,
    },
    {
      n: 9,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys:\n      - keyId: 1\n        key: { file: keys/missing.bc1 }\n',
      path: 'devices[0].nativeKeys[0].key.file',
      value: '"keys/missing.bc1"',
      fix: /does not exist: create it \(base64 of 32 bytes\)/,
    },
    {
      n: 10,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys:\n      - keyId: 1\n        key: { base64: "c2hvcnQ=" }\n',
      path: 'devices[0].nativeKeys[0].key.base64',
      value: '<redacted>',
      fix: /expected base64 of 32 bytes .*got 5 bytes/,
    },
    {
      n: 11,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n  - id: a\n    allowedAccess: [tcp/8883]\n',
      path: 'devices[1].id',
      value: '"a"',
      fix: /duplicate device id \(also devices\[0\]\.id\)/,
    },
    {
      n: 12,
      yaml: `devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys: [{ keyId: 5, key: { file: keys/demo-device.bc1 } }]\n  - id: b\n    allowedAccess: [tcp/8883]\n    nativeKeys: [{ keyId: 5, key: { file: keys/demo-device.bc1 } }]\n`,
      path: 'devices[1].nativeKeys[0].keyId',
      value: '5',
      fix: /duplicate key id \(also devices\[0\]\.nativeKeys\[0\]\.keyId\)/,
    },
    {
      n: 13,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    fwknop: { username: u, encryptionKey: { file: keys/demo-device.fwknop-key }, hmacKey: { file: keys/demo-device.fwknop-hmac }, hmacType: sha999 }\n',
      path: 'devices[0].fwknop.hmacType',
      value: '"sha999"',
      fix: /one of md5, sha1, sha256/,
    },
    {
      n: 14,
      yaml: 'devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys:\n      - keyId: 1\n        key: { file: keys/demo-device.bc1 }\n        notAfter: next tuesday\n',
      path: 'devices[0].nativeKeys[0].notAfter',
      value: '"next tuesday"',
      fix: /ISO 8601 date-time .* 2026-12-01T00:00:00Z/,
    },
    {
      n: 15,
      yaml: 'devices: [ { id: a, ',
      path: '',
      value: 'YAML error at line',
      fix: /fix the YAML syntax/,
    },
    {
      n: 16,
      yaml: 'hosts: []\n',
      path: '',
      value: 'a mapping with hosts',
      fix: /unknown field "hosts"/,
    },
  ];

  it.each(BROKEN)('error #$n names $path, the value and the fix', async (row) => {
    const error = await failure(row.yaml);
    const issue = error.issues.find((candidate) => candidate.path === row.path);
    expect(issue, error.message).toBeDefined();
    expect(issue!.value).toContain(row.value);
    expect(issue!.message).toMatch(row.fix);
    // One message carries it all: file, path, value, fix.
    expect(error.message).toContain(file);
    expect(error.message).toContain(row.value);
    expect(error.name).toBe('DeviceFileError');
  });

  it('reports every problem at once and never prints inline key material', async () => {
    const secret = b64(bytesFrom('leaky', 31));
    const error = await failure(
      `devices:\n  - id: "!"\n    allowedAccess: [tcp/0]\n    nativeKeys: [{ keyId: 1, key: { base64: "${secret}" } }]\n`,
    );
    expect(error.issues.map((issue) => issue.path)).toEqual(['devices[0].id', 'devices[0].allowedAccess[0]']);
    const keyError = await failure(
      `devices:\n  - id: a\n    allowedAccess: [tcp/1]\n    nativeKeys: [{ keyId: 1, key: { base64: "${secret}" } }]\n`,
    );
    expect(keyError.issues).toHaveLength(1);
    expect(keyError.message).not.toContain(secret);
    expect(keyError.message).toContain('<redacted>');
  });

  it('refuses key files readable by group or others, naming the chmod fix', async () => {
    await chmod(join(dir, 'keys/demo-device.bc1'), 0o644);
    const error = await failure(DEMO_YAML);
    expect(error.issues).toEqual([
      {
        path: 'devices[0].nativeKeys[0].key.file',
        value: '"keys/demo-device.bc1"',
        message: `key file ${join(dir, 'keys/demo-device.bc1')} has mode 0644: run "chmod 600 ${join(dir, 'keys/demo-device.bc1')}"`,
      },
    ]);
    await expect(loadDeviceFile(file, { checkKeyFileMode: false })).resolves.toHaveLength(2);
  });

  it('a missing file is a DeviceFileError with the fix', async () => {
    const error = await loadDeviceFile(join(dir, 'nope.yaml')).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(DeviceFileError);
    expect((error as Error).message).toMatch(/does not exist: create it \(blackcloud devices add\)/);
  });

  it('writeDeviceFile writes atomically with mode 0600 and round-trips through loadDeviceFile', async () => {
    const out = join(dir, 'new', 'devices.yaml');
    await mkdir(join(dir, 'new', 'keys'), { recursive: true });
    await writeFile(join(dir, 'new', 'keys', 'x.bc1'), b64(BC1_KEY), { mode: 0o600 });
    await writeDeviceFile(out, [
      { id: 'x', allowedAccess: ['tcp/8883'], nativeKeys: [{ keyId: 9, key: { file: 'keys/x.bc1' } }] },
    ]);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const [device] = await loadDeviceFile(out);
    expect(device).toMatchObject({ id: 'x', nativeKeys: [{ keyId: 9, key: BC1_KEY }] });
    await expect(writeDeviceFile(out, [{ id: 'bad id', allowedAccess: ['tcp/1'] }])).rejects.toThrow(
      DeviceFileError,
    );
    expect((await loadDeviceFile(out))[0]!.id).toBe('x');
  });

  it('addDeviceEntry appends, keeps comments, refuses a taken id or key id', async () => {
    await writeFile(file, DEMO_YAML, { mode: 0o600 });
    await addDeviceEntry(file, { id: 'added', allowedAccess: ['tcp/8883'], maxOpenSeconds: 60 });
    const text = await readFile(file, 'utf8');
    expect(text).toContain('# the demo fleet');
    expect(text).toContain('# [a-zA-Z0-9._-]{1,128}');
    expect((await loadDeviceFile(file)).map((device) => device.id)).toEqual([
      'demo-device',
      'sensor.7',
      'added',
    ]);
    expect((await stat(file)).mode & 0o777).toBe(0o600);

    const taken = await addDeviceEntry(file, { id: 'added', allowedAccess: ['tcp/1'] }).catch(
      (e: unknown) => e,
    );
    expect((taken as DeviceFileError).issues[0]).toMatchObject({ path: 'devices[3].id', value: '"added"' });
    const keyTaken = await addDeviceEntry(file, {
      id: 'other',
      allowedAccess: ['tcp/1'],
      nativeKeys: [{ keyId: 305_419_896, key: { file: 'keys/demo-device.bc1' } }],
    }).catch((e: unknown) => e);
    expect((keyTaken as DeviceFileError).issues[0]!.message).toMatch(/duplicate key id/);

    const fresh = join(dir, 'fresh.yaml');
    await addDeviceEntry(fresh, { id: 'first', allowedAccess: ['udp/5683'] });
    expect((await loadDeviceFile(fresh)).map((device) => device.id)).toEqual(['first']);
  });

  it('addDeviceEntry holds the devices-file lock: 20 concurrent adds all land, and the lock is gone after', async () => {
    await writeFile(file, DEMO_YAML, { mode: 0o600 });
    const ids = Array.from({ length: 20 }, (_, i) => `concurrent-${i}`);
    await Promise.all(ids.map((id) => addDeviceEntry(file, { id, allowedAccess: ['tcp/8883'] })));
    const loaded = (await loadDeviceFile(file)).map((device) => device.id);
    expect(loaded.slice(0, 2)).toEqual(['demo-device', 'sensor.7']);
    expect(new Set(loaded.slice(2))).toEqual(new Set(ids));
    await expect(stat(`${file}.lock`)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('FileDeviceDirectory / StaticDeviceDirectory', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bc-directory-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('indexes key ids, lists fwknop candidates, and reloads atomically', async () => {
    const file = join(dir, 'devices.yaml');
    const key = (label: string): string => b64(bytesFrom(label, 32));
    await writeFile(
      file,
      `devices:\n  - id: a\n    allowedAccess: [tcp/8883]\n    nativeKeys: [{ keyId: 1, key: { base64: "${key('a')}" } }]\n` +
        `    fwknop: { username: a, encryptionKey: { base64: "${key('ae')}" }, hmacKey: { base64: "${key('ah')}" } }\n` +
        `  - id: b\n    allowedAccess: [tcp/8883]\n    nativeKeys: [{ keyId: 2, key: { base64: "${key('b')}" } }]\n`,
      { mode: 0o600 },
    );
    const directory = await FileDeviceDirectory.load(file);
    expect((await directory.byKeyId(2))?.device.id).toBe('b');
    expect(await directory.byKeyId(3)).toBeUndefined();
    const candidates = await directory.fwknopCandidates({ address: '192.0.2.1', family: 4, port: 1 });
    expect(candidates.map((device) => device.id)).toEqual(['a']);

    await writeFile(file, 'devices: [ oops', { mode: 0o600 });
    await expect(directory.reload()).rejects.toThrow(DeviceFileError);
    expect((await directory.byKeyId(1))?.device.id).toBe('a'); // previous list still in force

    await writeFile(
      file,
      `devices:\n  - id: c\n    allowedAccess: [tcp/8883]\n    nativeKeys: [{ keyId: 1, key: { base64: "${key('c')}" } }]\n`,
      { mode: 0o600 },
    );
    await directory.reload();
    expect((await directory.byKeyId(1))?.device.id).toBe('c');
    expect(await directory.byKeyId(2)).toBeUndefined();
  });

  it('two fwknop devices with one HMAC key cannot be told apart: config error', async () => {
    const file = join(dir, 'devices.yaml');
    const same = b64(bytesFrom('shared', 32));
    const fw = `fwknop: { username: u, encryptionKey: { base64: "${same}" }, hmacKey: { base64: "${same}" } }`;
    await writeFile(
      file,
      `devices:\n  - id: a\n    allowedAccess: [tcp/1]\n    ${fw}\n  - id: b\n    allowedAccess: [tcp/1]\n    ${fw}\n`,
      { mode: 0o600 },
    );
    const error = (await FileDeviceDirectory.load(file).catch((e: unknown) => e)) as DeviceFileError;
    expect(error.issues).toEqual([
      {
        path: 'devices[1].fwknop.hmacKey',
        value: '<redacted>',
        message: 'same HMAC key as devices[0].fwknop.hmacKey: generate a key per device (fwknop --key-gen)',
      },
    ]);
    expect(error.message).not.toContain(same);
  });

  it('a static list with a duplicate key id is refused', () => {
    expect(() => new StaticDeviceDirectory([makeDevice(), makeDevice({ id: 'other' })])).toThrow(
      /duplicate key id \(also held by demo-device\)/,
    );
  });
});
