/**
 * Bulk enrolment: names, the progress bar, and the resumable run: an enrolment interrupted half way (a failing
 * device in process; a CLI process killed with SIGKILL) and run again ends with every device created exactly
 * once, nothing half-created left behind.
 */
import { readdir, readFile } from 'node:fs/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { enrolAll, expandNames, progressReporter } from '../../../cli/fleet/enrol.ts';
import type { Fleet } from '../../../cli/fleet/fleet.ts';
import { LocalFleet } from '../../../cli/fleet/local-fleet.ts';
import { UsageError } from '../../../cli/usage-error.ts';
import { systemClock, systemRandom } from '../../../functions/core/system.ts';
import { dataDirLayout } from '../../../functions/local/data-dir.ts';
import { writeDeviceFile } from '../../../functions/local/device-file.ts';
import { complete, removeDir, runCli, stopAllCli, tempDir } from '../../functions/local/helpers.ts';

let dataDir: string;

beforeEach(async () => {
  dataDir = await tempDir('bc9-bulk');
  await writeDeviceFile(dataDirLayout(dataDir).devicesFile, []);
});

afterEach(async () => {
  await stopAllCli();
  await removeDir(dataDir);
});

function openFleet(): Promise<LocalFleet> {
  return LocalFleet.open({ dataDir, random: systemRandom, clock: systemClock, operator: 'tester@test' });
}

/** The directory's ids, and every device folder and key file on disk: each device exactly once, no orphans. */
async function onDisk(): Promise<{ ids: string[]; folders: string[]; keys: string[] }> {
  const layout = dataDirLayout(dataDir);
  const document = parseYaml(await readFile(layout.devicesFile, 'utf8')) as { devices: { id: string }[] };
  const list = async (dir: string) => (await readdir(dir).catch(() => [] as string[])).sort();
  return {
    ids: document.devices.map((device) => device.id).sort(),
    folders: await list(layout.devicesDir),
    keys: await list(layout.keysDir),
  };
}

describe('expandNames', () => {
  it.each([
    [['a', 'b'], undefined, undefined, ['a', 'b']],
    [[], 3, 'cam-', ['cam-1', 'cam-2', 'cam-3']],
    [[], 100, 's-', Array.from({ length: 100 }, (_, i) => `s-${String(i + 1).padStart(3, '0')}`)],
    [['x'], 2, 'y', ['x', 'y1', 'y2']],
  ])('%j --count %s --prefix %s', (names, count, prefix, expected) => {
    expect(expandNames(names, count, prefix)).toEqual(expected);
  });

  it.each([
    [[], undefined, undefined, /NAME: give at least one device name, or --count N --prefix P/],
    [[], 3, undefined, /--prefix: is required with --count/],
    [['a'], undefined, 'p-', /--prefix: only makes sense with --count N/],
    [[], 0, 'p', /--count: must be an integer 1\.\.100000; received 0/],
    [['a', 'b', 'a'], undefined, undefined, /NAME: "a" is given twice/],
    [['p1'], 2, 'p', /NAME: "p1" is given twice/],
  ])('refuses %j --count %s --prefix %s', (names, count, prefix, message) => {
    expect(() => expandNames(names, count, prefix)).toThrow(UsageError);
    expect(() => expandNames(names, count, prefix)).toThrow(message);
  });
});

describe('progressReporter', () => {
  it('prints about every tenth, every failure and the last step, with a bar and the counts', () => {
    const report = progressReporter(10);
    const lines: string[] = [];
    for (let done = 1; done <= 20; done++) {
      const outcome = done === 7 ? 'failed' : done <= 3 ? 'skipped' : 'created';
      const line = report({ deviceId: `d${done}`, outcome, done, total: 20 });
      if (line !== undefined) lines.push(line);
    }
    expect(lines[0]).toBe('[#.........] 2/20 (created 0, skipped 2)');
    expect(lines).toContain('[####......] 7/20 (created 3, skipped 3, failed 1)');
    expect(lines.at(-1)).toBe('[##########] 20/20 (created 16, skipped 3, failed 1)');
    expect(lines).toHaveLength(11);
  });
});

describe('enrolAll over the local fleet', () => {
  it('stops at a failing device, cleans it up, and a re-run creates every device exactly once', async () => {
    const fleet = await openFleet();
    const ids = expandNames([], 12, 'unit-');
    let failOn: string | undefined = 'unit-05';
    // The fifth device fails inside the fleet (after its files were written): a real half-way interruption.
    const failing: Fleet = Object.assign(Object.create(fleet) as LocalFleet, {
      enrol: (request: Parameters<Fleet['enrol']>[0]) =>
        request.deviceId === failOn
          ? fleet.enrol({ ...request, maxOpenSeconds: 100_000 }) // refused by the devices-file schema
          : fleet.enrol(request),
      state: (id: string) => fleet.state(id),
    });
    const requests = ids.map((deviceId) => ({ deviceId, format: 'native' as const }));
    const progress: string[] = [];

    const first = await enrolAll({
      fleet: failing,
      requests,
      concurrency: 1,
      onProgress: (step) => progress.push(`${step.deviceId}:${step.outcome}`),
    });
    expect(first.created.map((device) => device.deviceId)).toEqual(ids.slice(0, 4));
    expect(first.failed.map((failure) => failure.deviceId)).toEqual(['unit-05']);
    expect(first.notStarted).toEqual(ids.slice(5));
    expect(progress).toEqual([...ids.slice(0, 4).map((id) => `${id}:created`), 'unit-05:failed']);
    expect(await fleet.state('unit-05')).toBe('absent');
    expect(await onDisk()).toEqual({
      ids: ids.slice(0, 4),
      folders: ids.slice(0, 4),
      keys: ids.slice(0, 4).map((id) => `${id}.bc1`),
    });

    failOn = undefined;
    const second = await enrolAll({ fleet: failing, requests, concurrency: 4 });
    expect([...second.skipped].sort()).toEqual(ids.slice(0, 4));
    expect(second.created.map((device) => device.deviceId).sort()).toEqual(ids.slice(4));
    expect(second.failed).toEqual([]);
    expect(await onDisk()).toEqual({ ids, folders: ids, keys: ids.map((id) => `${id}.bc1`) });
    const keyIds = (await fleet.list()).flatMap((device) => device.keyIds);
    expect(new Set(keyIds).size).toBe(12);
  });
});

describe('blackcloud devices add --count, killed half way and run again', () => {
  it('ends with every device created exactly once and no orphan files', async () => {
    const args = ['devices', 'add', '--count', '40', '--prefix', 'kill-', '--data-dir', dataDir];
    const first = runCli(args);
    await first.waitForOutput(/\] (\d+)\/40/, 'stderr');
    first.child.kill('SIGKILL');
    await first.exited;
    const interrupted = await onDisk();
    expect(interrupted.ids.length).toBeGreaterThan(0);
    expect(interrupted.ids.length).toBeLessThan(40);

    const second = await complete(runCli(args));
    expect(second.stderr).toMatch(/\[#{30}\] 40\/40 \(created \d+, skipped \d+\)/);
    const [, created, skipped] = /created (\d+), skipped (\d+) \(already there\)/.exec(second.stdout) ?? [];
    expect(Number(skipped)).toBe(interrupted.ids.length);
    expect(Number(created) + Number(skipped)).toBe(40);
    expect(second.code).toBe(0);

    const ids = expandNames([], 40, 'kill-');
    expect(await onDisk()).toEqual({ ids, folders: ids, keys: ids.map((id) => `${id}.bc1`) });

    const third = await complete(runCli(args));
    expect(third.stdout).toContain('created 0, skipped 40 (already there)');
  }, 180_000); // three CLI runs of up to 40 enrolments each, and a stale lock of the killed one (10 s) on a loaded machine
});
