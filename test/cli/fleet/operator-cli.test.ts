/**
 * The operator section of the README, as written, against a real `blackcloud up` (child processes, ports 0
 * chosen by the OS): enrol 100 devices, list, knock as one, see its grant, disable it (its session is cut), read
 * the audit. Plus `blackcloud audit` filters and --follow, and the pure audit helpers.
 */
import { appendFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { auditRow, matchesQuery, parseAuditLine, parseSince } from '../../../cli/fleet/audit-query.ts';
import { UsageError } from '../../../cli/usage-error.ts';
import { writeDeviceFile } from '../../../functions/local/device-file.ts';
import { cli, freePort, removeDir, runCli, stopAllCli, tempDir } from '../../functions/local/helpers.ts';

let workDir: string;

beforeAll(async () => {
  workDir = await tempDir('bc9-operator');
});

afterEach(async () => {
  await stopAllCli();
});

afterAll(async () => {
  await removeDir(workDir);
});

describe('the README operator walkthrough against the local black cloud', () => {
  it('enrols 100 devices, lists them, disables a connected one (cut off at once) and reads the audit', async () => {
    const cwd = workDir;
    const up = runCli(
      ['up', '--spa-port', String(await freePort()), '--mqtt-port', String(await freePort())],
      {
        cwd,
      },
    );
    await up.waitForOutput(/Ctrl-C stops/);

    const added = await cli(['devices', 'add', '--count', '100', '--prefix', 'sensor-'], { cwd });
    expect(added.code).toBe(0);
    expect(added.stdout).toContain('data directory .blackcloud: created 100, skipped 0 (already there)');
    expect(added.stderr).toContain('[##############################] 100/100 (created 100, skipped 0)');

    const listed = await cli(['devices', 'list'], { cwd });
    expect(listed.stdout.split('\n')[0]).toMatch(/^ID +STATE +ACCESS +FORMATS$/);
    expect(listed.stdout).toMatch(/^sensor-042 +enabled +tcp\/\d+ +native$/m);
    expect(listed.stderr).toContain('101 device(s) in data directory .blackcloud');
    const json = await cli(['devices', 'list', '--json'], { cwd });
    expect(json.stdout.trim().split('\n')).toHaveLength(101);

    // sensor-042 connects and stays subscribed.
    const sub = runCli(['sub', '--device', '.blackcloud/devices/sensor-042/device.json', '-t', '#'], { cwd });
    await sub.waitForOutput(/subscribed to blackcloud\/devices\/sensor-042/, 'stderr');
    // Its rule closed once its session was up (closed on connect, docs/scaling.md); the session lives on.
    const grants = await cli(['grants', 'list'], { cwd });
    expect(grants.stdout).toMatch(/^no open grants/);

    const disabled = await cli(['devices', 'disable', 'sensor-042'], { cwd });
    expect(disabled.stdout).toBe('disabled sensor-042: 0 grant(s) revoked, 1 broker session(s) closed\n');
    // The subscriber's session was cut at once (test/cli/fleet/local-fleet.test.ts shows new knocks are refused).
    // The broker's session notice says why, so sub stops at once instead of knocking again (refused) forever.
    await sub.waitForOutput(/the broker closed the session/, 'stderr');
    expect(await sub.exited).not.toBe(0);
    expect(sub.stderr()).toContain(
      'blackcloud: the broker closed the session: the operator disabled device "sensor-042"',
    );
    expect(sub.stderr()).toContain('fix: blackcloud devices enable sensor-042');
    expect(sub.stderr()).not.toContain('reconnecting');
    expect((await cli(['grants', 'list'], { cwd })).stdout).toMatch(/^no open grants/);

    const audit = await cli(['audit', '--since', '1h', '--device', 'sensor-042'], { cwd });
    expect(audit.code).toBe(0);
    const rows = audit.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^TIME +EVENT +DEVICE +SOURCE +DETAIL$/);
    const events = rows.slice(1).map((row) => row.split(/ +/)[1]);
    expect(events).toEqual(
      expect.arrayContaining([
        'device.added',
        'grant.opened',
        'packet.accepted',
        'grant.revoked',
        'device.disabled',
      ]),
    );
    expect(audit.stdout).toMatch(
      /device\.disabled +sensor-042 +- +by \S+@\S+, 0 grant\(s\) revoked, 1 session\(s\) closed/,
    );
    expect(audit.stdout).toMatch(/grant\.revoked +sensor-042 +127\.0\.0\.1 +tcp\/\d+, connected/);

    expect((await cli(['devices', 'enable', 'sensor-042'], { cwd })).stdout).toBe('enabled sensor-042\n');
    const show = await cli(['devices', 'show', 'sensor-042', '--json'], { cwd });
    expect(JSON.parse(show.stdout)).toMatchObject({ id: 'sensor-042', enabled: true, grants: [] });
    expect(await up.stop()).toBe(0);
  }, 120_000); // ~15 CLI processes and 100 enrolments: generous on a busy 2-core CI machine
});

describe('blackcloud audit', () => {
  const now = Date.now();
  const lines = [
    { type: 'packet.accepted', time: now - 3 * 3_600_000, deviceId: 'old-1', source: '10.0.0.1' },
    { type: 'packet.rejected', time: now - 60_000, source: '10.0.0.9', reason: 'replay', deviceId: 'cam-1' },
    {
      type: 'grant.opened',
      time: now - 50_000,
      deviceId: 'cam-1',
      source: '10.0.0.2',
      access: [],
      expiresAt: now,
    },
    {
      type: 'device.disabled',
      time: now - 40_000,
      deviceId: 'cam-2',
      operator: 'ops@host',
      revokedGrants: 0,
    },
  ];

  it('--since and --device filter; --json prints the records; junk lines are skipped', async () => {
    const dir = join(workDir, 'audit');
    await writeDeviceFile(join(dir, 'devices.yaml'), []);
    await writeFile(
      join(dir, 'audit.jsonl'),
      `${lines.map((line) => JSON.stringify(line)).join('\n')}\nnot json\n{"half":`,
      { mode: 0o600 },
    );
    const all = await cli(['audit', '--data-dir', dir, '--json']);
    expect(
      all.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line)),
    ).toEqual(lines);
    const recent = await cli(['audit', '--data-dir', dir, '--since', '1h', '--json']);
    expect(
      recent.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line).deviceId),
    ).toEqual(['cam-1', 'cam-1', 'cam-2']);
    const cam = await cli(['audit', '--data-dir', dir, '--device', 'cam-2']);
    expect(cam.stdout.trim().split('\n')).toHaveLength(2);
    expect(cam.stdout).toMatch(/device\.disabled +cam-2 +- +by ops@host, 0 grant\(s\) revoked/);
    const bad = await cli(['audit', '--data-dir', dir, '--since', 'yesterday']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(
      /^blackcloud: --since: must be a duration like 90s, 15m, 1h, 2d or an ISO 8601 time/,
    );
  });

  it('an unknown device id fails clearly: audit --device nosuch, grants revoke nosuch', async () => {
    const dir = join(workDir, 'nosuch');
    await writeDeviceFile(join(dir, 'devices.yaml'), []);
    await writeFile(join(dir, 'audit.jsonl'), `${JSON.stringify(lines[3])}\n`, { mode: 0o600 });
    const audit = await cli(['audit', '--data-dir', dir, '--device', 'nosuch', '--json']);
    expect(audit.code).toBe(1);
    expect(audit.stdout).toBe('');
    expect(audit.stderr).toContain(
      'blackcloud: --device: no device "nosuch" in data directory ' +
        `${dir} and no audit record names it; fix: check the id ("blackcloud devices list")`,
    );
    // A removed device's records are still shown.
    const removed = await cli(['audit', '--data-dir', dir, '--device', 'cam-2', '--json']);
    expect(removed.code).toBe(0);
    expect(JSON.parse(removed.stdout)).toMatchObject({ type: 'device.disabled', deviceId: 'cam-2' });
    const revoke = await cli(['grants', 'revoke', 'nosuch', '--data-dir', dir]);
    expect(revoke.code).toBe(1);
    expect(revoke.stderr).toContain(
      'blackcloud: <address-or-device>: "nosuch" is neither an IP address nor a device of data directory',
    );
    const byAddress = await cli(['grants', 'revoke', '0:0:0:0:0:0:0:1', '--data-dir', dir]);
    expect(byAddress.code).toBe(0);
    expect(byAddress.stdout).toContain('revoked 0 grant(s) for ::1');
  });

  it('devices add --transport takes tls or plain only, naming both', async () => {
    const dir = join(workDir, 'transport');
    const added = await cli(['devices', 'add', 'tiny-1', '--transport', 'udp', '--data-dir', dir]);
    expect(added.code).toBe(1);
    expect(added.stderr).toContain(
      'blackcloud: --transport: must be "tls" (mutual TLS, the default) or "plain" (a device that cannot do TLS); received "udp"',
    );
    expect(added.stdout).toBe('');
  });

  it('a corrupt devices.yaml is reported one way by every command and by up', async () => {
    const dir = join(workDir, 'corrupt');
    await writeDeviceFile(join(dir, 'devices.yaml'), []);
    await writeFile(join(dir, 'devices.yaml'), 'devices:\n  - id: [oops\n', { mode: 0o600 });
    const expected =
      `blackcloud: devices file ${join(dir, 'devices.yaml')} is invalid (1 problem): - (file): got YAML error at ` +
      'line 3, column 1; Flow sequence in block collection must be sufficiently indented and end with a ] at ' +
      'line 3, column 1: fix the YAML syntax';
    const runs = [
      ['devices', 'list'],
      ['devices', 'show', 'demo-device'],
      ['devices', 'disable', 'demo-device'],
      ['devices', 'add', 'sensor-9'],
      ['up', '--spa-port', '0', '--mqtt-port', '0'],
    ];
    for (const args of runs) {
      const run = await cli([...args, '--data-dir', dir]);
      expect({ args, code: run.code, stderr: run.stderr.trim() }).toEqual({
        args,
        code: 1,
        stderr: expected,
      });
    }
  });

  it('--follow prints records appended later, until stopped', async () => {
    const dir = join(workDir, 'follow');
    await writeDeviceFile(join(dir, 'devices.yaml'), []);
    await writeFile(join(dir, 'audit.jsonl'), `${JSON.stringify(lines[1])}\n`, { mode: 0o600 });
    const follow = runCli(['audit', '--data-dir', dir, '--follow', '--json']);
    await follow.waitForOutput(/"reason":"replay"/);
    await appendFile(join(dir, 'audit.jsonl'), `${JSON.stringify(lines[3])}\n`);
    await follow.waitForOutput(/"type":"device\.disabled"/);
    expect(await follow.stop()).toBe(0);
  });
});

describe('audit helpers', () => {
  const at = Date.parse('2026-11-30T12:00:00Z');
  it.each([
    ['90s', at - 90_000],
    ['15m', at - 900_000],
    ['1h', at - 3_600_000],
    ['2d', at - 172_800_000],
    ['2026-11-29T08:00:00Z', Date.parse('2026-11-29T08:00:00Z')],
    ['2026-11-29', Date.parse('2026-11-29')],
  ])('parseSince(%s)', (text, expected) => {
    expect(parseSince(text, at)).toBe(expected);
  });

  it.each(['', '1', '1w', '-1h', '0h', 'now', '2026-13-45'])('parseSince(%j) is a UsageError', (text) => {
    expect(() => parseSince(text, at)).toThrow(UsageError);
  });

  it('reads CloudWatch lines (kind audit) and local lines alike; metrics and messages are not records', () => {
    const cloudwatch = `{"kind":"audit","type":"grant.revoked","time":${at},"deviceId":"d","source":"1.2.3.4","access":[{"protocol":"tcp","port":8883}],"expiresAt":${at},"isoTime":"x"}`;
    const record = parseAuditLine(cloudwatch);
    expect(record).toEqual({
      type: 'grant.revoked',
      time: at,
      deviceId: 'd',
      source: '1.2.3.4',
      access: [{ protocol: 'tcp', port: 8883 }],
      expiresAt: at,
    });
    expect(auditRow(record!)).toEqual([
      '2026-11-30T12:00:00.000Z',
      'grant.revoked',
      'd',
      '1.2.3.4',
      'tcp/8883',
    ]);
    expect(parseAuditLine('{"_aws":{"CloudWatchMetrics":[]},"PacketsAccepted":1}')).toBeUndefined();
    expect(parseAuditLine('{"kind":"message","type":"x","time":1}')).toBeUndefined();
    expect(parseAuditLine('heartbeat')).toBeUndefined();
    expect(matchesQuery(record!, { since: at + 1 })).toBe(false);
    expect(matchesQuery(record!, { since: at, deviceId: 'd' })).toBe(true);
    expect(matchesQuery(record!, { deviceId: 'e' })).toBe(false);
  });
});
