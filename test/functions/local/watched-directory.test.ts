/**
 * The devices file followed while `up` runs (functions/local/watched-directory.ts): a reload never misses a change,
 * however the writes fall against the reloads in flight (issue 19: `up` stayed at 82 of 100 devices).
 */
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeDeviceFile } from '../../../functions/local/device-file.ts';
import { WatchedDeviceDirectory } from '../../../functions/local/watched-directory.ts';
import { type FleetDevice, fleetEntries, writeFleetFile } from '../../support/fleet-file.ts';
import { removeDir, tempDir, waitFor } from './helpers.ts';

/** Devices already in the file: enough that a reload takes a while, so writes land while one is in flight. */
const BASE = 400;
const WRITES = 100;

let dir: string | undefined;
let file: string;
let fleet: FleetDevice[];
let directory: WatchedDeviceDirectory | undefined;

beforeEach(async () => {
  dir = await tempDir('bc-watched');
  file = join(dir, 'devices.yaml');
  fleet = await writeFleetFile(dir, BASE + WRITES, { entries: BASE });
});

afterEach(async () => {
  directory?.close();
  directory = undefined;
  await removeDir(dir);
});

describe('WatchedDeviceDirectory', () => {
  it(`a burst of ${WRITES} writes ends with the last state loaded (watch events only)`, async () => {
    const reloads: number[] = [];
    const errors: string[] = [];
    directory = await WatchedDeviceDirectory.open(file, {
      debounceMs: 5,
      onReload: (devices) => reloads.push(devices.length),
      onReloadError: (error) => errors.push(error.message),
    });
    expect(directory.devices()).toHaveLength(BASE);
    for (let k = 1; k <= WRITES; k++) await writeDeviceFile(file, fleetEntries(fleet, BASE + k));
    await waitFor(
      () => (directory!.devices().length === BASE + WRITES ? true : undefined),
      `the directory to load all ${BASE + WRITES} devices`,
      20_000,
    ).catch(() => undefined); // on a timeout, the assertions below say what was loaded
    expect({ loaded: directory.devices().length, lastReload: reloads.at(-1) }).toEqual({
      loaded: BASE + WRITES,
      lastReload: BASE + WRITES,
    });
    expect(errors).toEqual([]);
    expect(directory.byId(fleet[BASE + WRITES - 1]!.id)?.enabled).toBe(true);
  }, 60_000);

  it('reload() called while another reload is in flight settles only after reading the newer file', async () => {
    directory = await WatchedDeviceDirectory.open(file, { debounceMs: 60_000 }); // the watch stays out of it
    for (let k = 1; k <= 6; k++) {
      await writeDeviceFile(file, fleetEntries(fleet, BASE + 2 * k - 1));
      const first = directory.reload(); // in flight while the next write lands
      await writeDeviceFile(file, fleetEntries(fleet, BASE + 2 * k));
      await directory.reload();
      expect(directory.devices()).toHaveLength(BASE + 2 * k);
      await first;
    }
  }, 60_000);

  it('a lookup of an unknown key id reloads a changed file even without a watch event', async () => {
    directory = await WatchedDeviceDirectory.open(file, { debounceMs: 60_000, checkIntervalMs: 0 });
    const added = fleet[BASE]!;
    expect(await directory.byKeyId(added.keyId)).toBeUndefined();
    await writeDeviceFile(file, fleetEntries(fleet, BASE + 1));
    expect((await directory.byKeyId(added.keyId))?.device.id).toBe(added.id);
  }, 30_000);
});
