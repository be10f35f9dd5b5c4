/**
 * The `blackcloud` command line as users run it: child processes through the real launcher
 * (cli/bin/blackcloud.js → tsx), a temp data directory and free ports. `up` runs in the background,
 * `sub` waits for a message, `pub` sends it as the demo device; errors are one line and a non-zero exit.
 */
import { createSocket, type Socket } from 'node:dgram';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cli, freePort, removeDir, runCli, stopAllCli, tempDir } from '../functions/local/helpers.ts';

let dataDir: string | undefined;

beforeAll(async () => {
  dataDir = await tempDir('bc-cli');
});

afterEach(async () => {
  await stopAllCli();
});

afterAll(async () => {
  await removeDir(dataDir);
});

describe('blackcloud --help', () => {
  it.each([
    [[], ['up', 'knock', 'pub', 'sub', 'devices', 'Quick start']],
    [['up'], ['--firewall', '--broker', '--data-dir', '--config', '--spa-port', '--mqtt-port', 'Examples:']],
    [['knock'], ['--device', '--server', '--format', 'Examples:']],
    [['pub'], ['--device', '--topic', '--message', 'blackcloud/devices/<device id>/', 'Examples:']],
    [['sub'], ['--device', '--topic', '--count', 'blackcloud/devices/<device id>/', 'Examples:']],
    [['devices'], ['add', 'list', 'Examples:']],
    [
      ['devices', 'add'],
      ['--format', '--data-dir', '--ports', 'fwknop', 'Examples:'],
    ],
  ])('blackcloud %j --help explains the command with examples', async (command, expected) => {
    const result = await cli([...command, '--help']);
    expect(result.code).toBe(0);
    for (const text of expected) expect(result.stdout).toContain(text);
  });
});

describe('blackcloud up, pub and sub as child processes', () => {
  it('up prints where it listens; pub as the demo device arrives at a sub subscriber; SIGTERM stops it', async () => {
    const spaPort = await freePort();
    const mqttPort = await freePort();
    const up = runCli([
      'up',
      '--data-dir',
      dataDir!,
      '--spa-port',
      String(spaPort),
      '--mqtt-port',
      String(mqttPort),
    ]);
    await up.waitForOutput(/Ctrl-C stops/);
    expect(up.stdout()).toContain(`udp 127.0.0.1:${spaPort}`);
    expect(up.stdout()).toContain(`tcp 127.0.0.1:${mqttPort}`);
    const device = join(dataDir!, 'devices/demo-device/device.json');
    expect(up.stdout()).toContain(`blackcloud pub --device ${device}`);
    expect((await stat(device)).mode & 0o777).toBe(0o600);

    const sub = runCli(['sub', '--device', device, '-t', 'greetings', '--count', '1']);
    await sub.waitForOutput(/subscribed to blackcloud\/devices\/demo-device\/greetings/, 'stderr');
    const pub = await cli(['pub', '--device', device, '-t', 'greetings', '-m', 'hello, black cloud']);
    expect(pub).toMatchObject({ code: 0, stderr: '' });
    expect(pub.stdout).toContain('published to blackcloud/devices/demo-device/greetings');
    expect(await sub.exited).toBe(0);
    expect(sub.stdout()).toBe('blackcloud/devices/demo-device/greetings hello, black cloud\n');
    await up.waitForOutput(/knock accepted: demo-device from 127\.0\.0\.1 \(bc1\)/);

    const knock = await cli(['knock', '--device', device, '--json']);
    expect(knock.code).toBe(0);
    expect(JSON.parse(knock.stdout)).toMatchObject({
      deviceId: 'demo-device',
      format: 'native',
      port: spaPort,
      bytes: 48,
    });

    // devices add while up runs: the new device gets in without a restart.
    const added = await cli(['devices', 'add', 'sensor-7', '--data-dir', dataDir!, '--json']);
    expect(added.code).toBe(0);
    const sensor = JSON.parse(added.stdout) as { deviceFile: string; access: string[] };
    expect(sensor.access).toEqual([`tcp/${mqttPort}`]);
    const sensorPub = await cli(['pub', '--device', sensor.deviceFile, '-t', 'up', '-m', '1']);
    expect(sensorPub.code).toBe(0);

    expect(await up.stop()).toBe(0);
    expect(up.stderr()).toContain('stopped');
  });

  it('up --json prints a ready record with the endpoints', async () => {
    const spaPort = await freePort();
    const mqttPort = await freePort();
    const dir = join(dataDir!, 'json');
    const up = runCli([
      'up',
      '--json',
      '--data-dir',
      dir,
      '--spa-port',
      String(spaPort),
      '--mqtt-port',
      String(mqttPort),
    ]);
    const [line] = await up.waitForOutput(/^\{"event":"ready".*$/m);
    expect(JSON.parse(line)).toMatchObject({
      event: 'ready',
      spa: { host: '127.0.0.1', port: spaPort, protocol: 'udp' },
      mqtt: { port: mqttPort, url: `mqtts://127.0.0.1:${mqttPort}` },
      firewall: 'gate',
      devices: ['demo-device'],
    });
    expect(await up.stop()).toBe(0);
  });

  it('devices add --format fwknop writes the keys and prints the fwknop command line and .fwknoprc stanza', async () => {
    const dir = join(dataDir!, 'fwknop');
    const up = runCli([
      'up',
      '--data-dir',
      dir,
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
    ]);
    await up.waitForOutput(/Ctrl-C stops/);
    const result = await cli(['devices', 'add', 'legacy-9', '--format', 'fwknop', '--data-dir', dir]);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/fwknop -A tcp\/\d+ -s -D 127\.0\.0\.1 -p \d+ -U legacy-9 --use-hmac/);
    expect(result.stdout).toContain('[blackcloud-legacy-9]');
    expect(result.stdout).toMatch(/HMAC_KEY_BASE64 +\S+/);
    for (const file of [
      'keys/legacy-9.fwknop-key',
      'keys/legacy-9.fwknop-hmac',
      'devices/legacy-9/fwknoprc',
    ]) {
      expect((await stat(join(dir, file))).mode & 0o777).toBe(0o600);
    }
    const again = await cli(['devices', 'add', 'legacy-9', '--data-dir', dir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^blackcloud: device name "legacy-9": already exists in .*; fix: /);
    await up.stop();
  });
});

describe('blackcloud errors: one clear line and a non-zero exit', () => {
  it.each([
    [
      'a port that is not a number',
      { spa: { host: '127.0.0.1', port: 'x' } },
      /field "spa\.port" must be an integer UDP port 1\.\.65535; received "x"/,
    ],
    [
      'a short key (hidden)',
      { spa: { host: 'h', native: { keyId: 1, key: 'AAAA' } } },
      /field "spa\.native\.key" must be base64 of exactly 32 bytes.*received a value \(hidden\)/,
    ],
    ['an unknown field', { colour: 'blue' }, /field "colour" is not a known field; fix: remove it/],
  ])('a device file with %s names the field', async (_what, patch, pattern) => {
    const file = join(dataDir!, `bad-${Math.random().toString(16).slice(2)}.json`);
    const good = {
      version: 1,
      deviceId: 'd1',
      spa: { host: '127.0.0.1', port: 62201, native: { keyId: 1, key: Buffer.alloc(32).toString('base64') } },
      access: ['tcp/8883'],
      mqtt: { url: 'mqtts://127.0.0.1:8883', ca: 'ca.crt', cert: 'c.crt', key: 'c.key' },
    };
    await writeFile(file, JSON.stringify({ ...good, ...patch }), { mode: 0o600 });
    const result = await cli(['knock', '--device', file]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(pattern);
  });

  it('a missing device file says which file and what to pass', async () => {
    const result = await cli(['pub', '--device', '/nonexistent/device.json', '-t', 'x', '-m', 'y']);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      'blackcloud: device file /nonexistent/device.json: cannot be read (ENOENT); fix: pass the device.json written by "blackcloud up" or "blackcloud devices add"\n',
    );
  });

  it('a bad config file names the field and the allowed range', async () => {
    const file = join(dataDir!, 'config.yaml');
    await writeFile(file, 'spaPort: 70000\nfirewall: gate\n');
    const result = await cli(['up', '--config', file, '--data-dir', join(dataDir!, 'unused')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toBe(
      `blackcloud: config file ${file}: field "spaPort": must be an integer UDP port 0..65535 (0 = any free port); received 70000\n`,
    );
  });

  it('an invalid devices.yaml stops up with one line naming each field', async () => {
    const dir = join(dataDir!, 'bad-devices');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await writeFile(join(dir, 'devices.yaml'), 'devices:\n  - id: x\n    allowedAccess: [tcp/99999]\n', {
      mode: 0o600,
    });
    const result = await cli([
      'up',
      '--data-dir',
      dir,
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(result.stderr).toMatch(
      /devices\.yaml is invalid \(1 problem\): - devices\[0\]\.allowedAccess\[0\]: got "tcp\/99999"; PORT must be in 1\.\.65535/,
    );
  });

  it('a bad flag value names the flag', async () => {
    const result = await cli(['up', '--firewall', 'iptables', '--data-dir', join(dataDir!, 'unused')]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^blackcloud: --firewall: must be "gate" .* or "nftables" .*; received "iptables"\n$/,
    );
  });

  it('a busy SPA port gives a clear message naming --spa-port', async () => {
    const port = await freePort();
    const holder: Socket = createSocket('udp4');
    await new Promise<void>((done) => holder.bind(port, '127.0.0.1', () => done()));
    try {
      const result = await cli([
        'up',
        '--data-dir',
        join(dataDir!, 'busy'),
        '--spa-port',
        String(port),
        '--mqtt-port',
        String(await freePort()),
      ]);
      expect(result.code).toBe(1);
      expect(result.stderr).toBe(
        `blackcloud: UDP port ${port} on 127.0.0.1 is already in use (another "blackcloud up"?): stop the other process or choose another port with --spa-port\n`,
      );
    } finally {
      holder.close();
    }
  });

  it('a busy MQTT port gives a clear message naming --mqtt-port', async () => {
    const first = runCli([
      'up',
      '--data-dir',
      join(dataDir!, 'busy1'),
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      String(await freePort()),
    ]);
    await first.waitForOutput(/Ctrl-C stops/);
    const mqttPort = /tcp 127\.0\.0\.1:(\d+)/.exec(first.stdout())![1]!;
    const result = await cli([
      'up',
      '--data-dir',
      join(dataDir!, 'busy2'),
      '--spa-port',
      String(await freePort()),
      '--mqtt-port',
      mqttPort,
    ]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      new RegExp(`^blackcloud: TCP port ${mqttPort} on 127\\.0\\.0\\.1 is already in use .* --mqtt-port\\n$`),
    );
  });
});
