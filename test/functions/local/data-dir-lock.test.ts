/** The data directory's owner lock (data-dir-lock.ts): one `up`, writers wait or cooperate, stale takeover. */
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { dataDirLayout } from '../../../functions/local/data-dir.ts';
import {
  acquireDataDir,
  DataDirBusyError,
  type OwnerRecord,
  readOwner,
  withDataDirWriter,
} from '../../../functions/local/data-dir-lock.ts';
import { removeDir, tempDir } from './helpers.ts';

let dir: string | undefined;
beforeEach(async () => {
  dir = await tempDir('bc-owner');
});
afterEach(async () => {
  await removeDir(dir);
});

const ENDPOINTS = { spa: { host: '127.0.0.1', port: 40001 }, mqtt: { host: '127.0.0.1', port: 40002 } };

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** The pid of a process that has exited. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', ''], { timeout: 10_000 });
  expect(child.status).toBe(0);
  return child.pid;
}

describe('acquireDataDir', () => {
  it('writes the owner record next to the lock, updates it, and release removes both', async () => {
    const layout = dataDirLayout(dir!);
    const held = await acquireDataDir(layout, ENDPOINTS);
    expect(await exists(layout.ownerLock)).toBe(true);
    expect(await readOwner(layout)).toMatchObject({ pid: process.pid, command: 'up', state: 'starting' });
    expect((await stat(layout.ownerRecord)).mode & 0o777).toBe(0o600);
    await held.updateOwner({ state: 'ready', spa: { host: '127.0.0.1', port: 5 }, mqtt: ENDPOINTS.mqtt });
    expect(await readOwner(layout)).toMatchObject({ state: 'ready', spa: { port: 5 } });
    await held.release();
    await held.release();
    expect(await exists(layout.ownerLock)).toBe(false);
    expect(await exists(layout.ownerRecord)).toBe(false);
  });

  it('refuses a second up at once, naming the running one’s pid and ports', async () => {
    const layout = dataDirLayout(dir!);
    const held = await acquireDataDir(layout, ENDPOINTS);
    const started = Date.now();
    const error = await acquireDataDir(layout, ENDPOINTS).catch((caught: unknown) => caught);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(error).toBeInstanceOf(DataDirBusyError);
    expect((error as Error).message).toBe(
      `data directory ${layout.root} is already used by blackcloud up (pid ${process.pid}, SPA udp 127.0.0.1:40001, ` +
        `MQTT tcp 127.0.0.1:40002, still starting, since ${held.record.startedAt}); fix: stop that one (Ctrl-C in ` +
        `its terminal, or kill ${process.pid}), or start this one with another --data-dir`,
    );
    // The first one still owns it.
    expect(await readOwner(layout)).toMatchObject({ pid: process.pid, startedAt: held.record.startedAt });
    await held.release();
    const next = await acquireDataDir(layout, ENDPOINTS);
    await next.release();
  });

  it('takes over the lock of a dead up (its pid is not running) and says so', async () => {
    const layout = dataDirLayout(dir!);
    const stale: OwnerRecord = {
      pid: deadPid(),
      hostname: hostname(),
      command: 'up',
      startedAt: '2020-01-01T00:00:00.000Z',
      state: 'ready',
      ...ENDPOINTS,
    };
    await mkdir(layout.ownerLock);
    await writeFile(layout.ownerRecord, JSON.stringify(stale));
    const takenOver: OwnerRecord[] = [];
    const held = await acquireDataDir(layout, ENDPOINTS, { onTakeOver: (owner) => takenOver.push(owner) });
    expect(takenOver).toEqual([stale]);
    expect(await readOwner(layout)).toMatchObject({ pid: process.pid });
    await held.release();
  });

  it('does not take over a holder on another host (its pid cannot be checked): it waits, then names it', async () => {
    const layout = dataDirLayout(dir!);
    await mkdir(layout.ownerLock);
    const other = {
      pid: deadPid(),
      hostname: `not-${hostname()}`,
      command: 'devices add',
      startedAt: 'then',
    };
    await writeFile(layout.ownerRecord, JSON.stringify(other));
    const error = await acquireDataDir(layout, ENDPOINTS, { timeoutMs: 300 }).catch(
      (caught: unknown) => caught,
    );
    expect((error as Error).message).toContain(
      `is in use by blackcloud devices add (pid ${other.pid}, on host ${other.hostname}, since then) for over 300 ms`,
    );
    expect(await exists(layout.ownerLock)).toBe(true);
  });

  it('a lock without a record is waited for, then named with the fix', async () => {
    const layout = dataDirLayout(dir!);
    await mkdir(layout.ownerLock);
    const error = await acquireDataDir(layout, ENDPOINTS, { timeoutMs: 200 }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(DataDirBusyError);
    expect((error as Error).message).toContain(
      `if no blackcloud process uses this directory, delete ${layout.ownerLock}`,
    );
  });

  it('takes over a lock without a record that nobody refreshed for two heartbeats (its holder was killed in between)', async () => {
    const layout = dataDirLayout(dir!);
    await mkdir(layout.ownerLock);
    const past = new Date(Date.now() - 12_000);
    await utimes(layout.ownerLock, past, past);
    const held = await acquireDataDir(layout, ENDPOINTS, { timeoutMs: 2_000 });
    expect((await readOwner(layout))?.pid).toBe(process.pid);
    expect(Date.now() - (await stat(layout.ownerLock)).mtimeMs).toBeLessThan(11_000);
    await held.release();
  });

  it('calls onLost when the lock is removed under its holder', async () => {
    const layout = dataDirLayout(dir!);
    const lost: Error[] = [];
    const held = await acquireDataDir(layout, ENDPOINTS, { onLost: (error) => lost.push(error) });
    await removeDir(layout.ownerLock);
    // proper-lockfile refreshes the lock every 5 s and reports it compromised when it is gone.
    const deadline = Date.now() + 15_000;
    while (lost.length === 0 && Date.now() < deadline) await new Promise((done) => setTimeout(done, 50));
    expect(lost).toHaveLength(1);
    await held.release();
  }, 20_000);
});

describe('withDataDirWriter', () => {
  it('owns the directory while its change runs, and releases it after (also when the change throws)', async () => {
    const layout = dataDirLayout(dir!);
    const seen = await withDataDirWriter(layout, 'devices add', async () => readOwner(layout));
    expect(seen).toMatchObject({ pid: process.pid, command: 'devices add' });
    expect(await exists(layout.ownerLock)).toBe(false);
    await expect(
      withDataDirWriter(layout, 'devices add', async () => {
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect(await exists(layout.ownerLock)).toBe(false);
  });

  it('an up waits for a running writer, and starts once it is done', async () => {
    const layout = dataDirLayout(dir!);
    let finish: () => void = () => undefined;
    const writer = withDataDirWriter(
      layout,
      'keys rotate',
      () => new Promise<void>((done) => (finish = done)),
    );
    await new Promise((done) => setTimeout(done, 100));
    const up = acquireDataDir(layout, ENDPOINTS);
    await new Promise((done) => setTimeout(done, 200));
    expect(await readOwner(layout)).toMatchObject({ command: 'keys rotate' });
    finish();
    await writer;
    const held = await up;
    expect(await readOwner(layout)).toMatchObject({ command: 'up' });
    await held.release();
  });

  it('runs under a live up without touching its lock or record', async () => {
    const layout = dataDirLayout(dir!);
    const held = await acquireDataDir(layout, ENDPOINTS);
    const before = await readFile(layout.ownerRecord, 'utf8');
    expect(await withDataDirWriter(layout, 'devices remove', async () => 'done')).toBe('done');
    expect(await readFile(layout.ownerRecord, 'utf8')).toBe(before);
    expect(await exists(layout.ownerLock)).toBe(true);
    await held.release();
  });

  it('runs without a lock when there is no data directory (the change reports that itself)', async () => {
    const layout = dataDirLayout(`${dir!}/missing`);
    expect(await withDataDirWriter(layout, 'keys rotate', async () => 'ran')).toBe('ran');
    expect(await exists(layout.root)).toBe(false);
  });
});
