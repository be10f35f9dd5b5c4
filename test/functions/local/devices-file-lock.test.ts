/** The devices-file lock (proper-lockfile): exclusion, heartbeat, stale takeover, timeout. */
import { mkdir, mkdtemp, rm, stat, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  DevicesFileLockError,
  devicesFileLockPath,
  withDevicesFileLock,
} from '../../../functions/local/devices-file-lock.ts';

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bc-lock-'));
  file = join(dir, 'devices.yaml');
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('withDevicesFileLock', () => {
  it('runs one holder at a time, returns its value, and removes the lock after', async () => {
    const events: string[] = [];
    const hold = (name: string) =>
      withDevicesFileLock(file, async () => {
        events.push(`${name}+`);
        await sleep(30);
        events.push(`${name}-`);
        return name;
      });
    expect(await Promise.all([hold('a'), hold('b'), hold('c')])).toEqual(['a', 'b', 'c']);
    for (let i = 0; i < events.length; i += 2) expect(events[i + 1]).toBe(events[i]!.replace('+', '-'));
    await expect(stat(devicesFileLockPath(file))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('removes the lock when fn throws, and passes the error on', async () => {
    await expect(
      withDevicesFileLock(file, async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    await expect(stat(devicesFileLockPath(file))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('takes over the lock of a holder that died (not refreshed for staleMs)', async () => {
    await mkdir(devicesFileLockPath(file));
    const died = new Date(Date.now() - 60_000);
    await utimes(devicesFileLockPath(file), died, died);
    expect(await withDevicesFileLock(file, async () => 'taken over', { staleMs: 2000 })).toBe('taken over');
    await expect(stat(devicesFileLockPath(file))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('keeps a long-held lock fresh (heartbeat): a waiter does not take it over after staleMs', async () => {
    const events: string[] = [];
    const long = withDevicesFileLock(
      file,
      async () => {
        events.push('long+');
        await sleep(3500);
        events.push('long-');
      },
      { staleMs: 2000 },
    );
    await sleep(50);
    const waiter = withDevicesFileLock(file, async () => void events.push('waiter'), { staleMs: 2000 });
    await Promise.all([long, waiter]);
    expect(events).toEqual(['long+', 'long-', 'waiter']);
  });

  it('gives up after timeoutMs on a live lock, naming the lock file and the fix', async () => {
    await mkdir(devicesFileLockPath(file)); // fresh: a live holder in another process
    const error = await withDevicesFileLock(file, async () => 'never', { timeoutMs: 200 }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DevicesFileLockError);
    expect((error as Error).message).toBe(
      `${devicesFileLockPath(file)} is held by another process for over 200 ms: if no blackcloud process is running, delete it`,
    );
  });
});
