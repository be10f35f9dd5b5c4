import { lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileNonceStore, NonceStoreFileError } from '../../../functions/local/file-nonce-store.ts';
import { handleDatagram } from '../../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore, NonceStoreFullError } from '../../../functions/receiver/memory-nonce-store.ts';
import { DEFAULT_CLOCK_WINDOW_MS } from '../../../spa/limits.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { bc1Packet, harness, T0 } from '../receiver/helpers.ts';

describe('MemoryNonceStore', () => {
  it('answers fresh once, then replay while the record lives', async () => {
    const store = new MemoryNonceStore({ clock: new VirtualTime(T0) });
    expect(await store.record('a', T0 + 60_000)).toBe('fresh');
    expect(await store.record('a', T0 + 60_000)).toBe('replay');
    expect(await store.record('b', T0 + 60_000)).toBe('fresh');
  });

  it('concurrent records of one id: exactly one fresh', async () => {
    const store = new MemoryNonceStore({ clock: new VirtualTime(T0) });
    const results = await Promise.all(Array.from({ length: 5 }, () => store.record('x', T0 + 1000)));
    expect(results.filter((result) => result === 'fresh')).toHaveLength(1);
  });

  it('start-time guard: notBefore is the construction time', () => {
    expect(new MemoryNonceStore({ clock: new VirtualTime(T0) }).notBefore).toBe(T0);
  });

  it('a restart (new instance) refuses packets stamped before it, so a replay cannot reopen', async () => {
    const before = harness();
    const packet = bc1Packet({ timestampMs: T0 });
    expect(
      (await handleDatagram(packet, { address: '192.0.2.10', family: 4, port: 1 }, before.deps)).ok,
    ).toBe(true);
    // The process restarts 5 s later: a fresh memory store, same packet replayed within the clock window.
    const restartedStore = new MemoryNonceStore({ clock: { now: () => T0 + 5000 } });
    const after = harness({ nonces: restartedStore });
    await after.time.advance(5000);
    expect(await handleDatagram(packet, { address: '192.0.2.10', family: 4, port: 1 }, after.deps)).toEqual({
      ok: false,
      reason: 'before-start',
    });
  });

  it('the start-time guard covers start + window: a packet from a device 50 s ahead cannot replay after a restart', async () => {
    const before = harness();
    const ahead = bc1Packet({ timestampMs: T0 + 50_000 }); // the device clock runs 50 s ahead of the receiver's
    const source = { address: '192.0.2.10', family: 4 as const, port: 1 };
    expect((await handleDatagram(ahead, source, before.deps)).ok).toBe(true);
    const restartedStore = new MemoryNonceStore({
      clock: { now: () => T0 + 5000 },
      guardMs: DEFAULT_CLOCK_WINDOW_MS,
    });
    expect(restartedStore.notBefore).toBe(T0 + 5000 + DEFAULT_CLOCK_WINDOW_MS);
    const after = harness({ nonces: restartedStore });
    await after.time.advance(5000);
    expect(await handleDatagram(ahead, source, after.deps)).toEqual({ ok: false, reason: 'before-start' });
    // Without the window in the guard (the old contract) the same replay got in.
    const unguarded = harness({ nonces: new MemoryNonceStore({ clock: { now: () => T0 + 5000 } }) });
    await unguarded.time.advance(5000);
    expect((await handleDatagram(ahead, source, unguarded.deps)).ok).toBe(true);
  });

  it('a clock stepped forward then back: a record swept under the wrong time still answers replay', async () => {
    const time = new VirtualTime(T0);
    const store = new MemoryNonceStore({ clock: time, sweepIntervalMs: 1000 });
    expect(await store.record('a', T0 + 60_000)).toBe('fresh');
    time.set(T0 + 3_600_000); // stepped an hour forward: the sweep drops 'a'
    expect(await store.record('z', T0 + 3_660_000)).toBe('fresh');
    expect(store.size).toBe(1);
    expect(store.forgottenUntil).toBe(T0 + 60_000);
    time.set(T0 + 1000); // and back
    expect(await store.record('a', T0 + 60_000)).toBe('replay');
    expect(await store.record('b', T0 + 61_000)).toBe('fresh'); // a later packet is not refused
  });

  it('sweeps expired records on insert (bounded memory), once per sweep interval', async () => {
    const time = new VirtualTime(T0);
    const store = new MemoryNonceStore({ clock: time, sweepIntervalMs: 10_000 });
    for (let i = 0; i < 100; i++) await store.record(`old-${i}`, T0 + 60_000);
    expect(store.size).toBe(100);
    await time.advance(60_001);
    await store.record('new', T0 + 120_000);
    expect(store.size).toBe(1);
  });

  it('at maxEntries with nothing expired it throws (fail closed), never evicts a live record', async () => {
    const time = new VirtualTime(T0);
    const store = new MemoryNonceStore({ clock: time, maxEntries: 2 });
    await store.record('a', T0 + 60_000);
    await store.record('b', T0 + 60_000);
    await expect(store.record('c', T0 + 60_000)).rejects.toThrow(NonceStoreFullError);
    expect(await store.record('a', T0 + 60_000)).toBe('replay');
    await time.advance(60_001);
    expect(await store.record('c', T0 + 120_000)).toBe('fresh');
  });
});

describe('FileNonceStore', () => {
  let dir: string;
  let path: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bc-nonces-'));
    path = join(dir, 'state', 'nonces.log');
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('refuses a symbolic link at the nonce file, never reading or writing through it', async () => {
    const victim = join(dir, 'victim');
    await writeFile(victim, 'root-owned\n');
    await mkdir(dirname(path), { recursive: true });
    await symlink(victim, path);
    const error = await FileNonceStore.open({ path, clock: new VirtualTime(T0) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NonceStoreFileError);
    expect((error as Error).message).toBe(
      `nonce file ${path}: ${path} is a symbolic link, which is never written through; fix: remove it (rm ${path}) and start again`,
    );
    expect(await readFile(victim, 'utf8')).toBe('root-owned\n');
    expect((await lstat(path)).isSymbolicLink()).toBe(true);
    expect((await readdir(dirname(path))).sort()).toEqual(['nonces.log']);
  });

  it('a clock stepped forward across a restart and back: the dropped record still answers replay', async () => {
    const time = new VirtualTime(T0);
    const first = await FileNonceStore.open({ path, clock: time });
    expect(await first.record('bc1:abc', T0 + 60_000)).toBe('fresh');
    await first.close();
    time.set(T0 + 3_600_000); // restart under a clock an hour ahead: the load drops the record
    const stepped = await FileNonceStore.open({ path, clock: time });
    expect(stepped.size).toBe(0);
    await stepped.close();
    expect((await readFile(path, 'utf8')).split('\n')[0]).toBe(
      `blackcloud-nonces v1 since=${T0} forgotten=${T0 + 60_000}`,
    );
    time.set(T0 + 2000); // the clock is put right, and the receiver restarts again
    const corrected = await FileNonceStore.open({ path, clock: time });
    expect(await corrected.record('bc1:abc', T0 + 60_000)).toBe('replay');
    expect(await corrected.record('bc1:later', T0 + 62_000)).toBe('fresh');
    await corrected.close();
  });

  it('a new file with guardMs starts its horizon one window later; an existing file keeps its own', async () => {
    const time = new VirtualTime(T0);
    const created = await FileNonceStore.open({ path, clock: time, guardMs: DEFAULT_CLOCK_WINDOW_MS });
    expect(created.notBefore).toBe(T0 + DEFAULT_CLOCK_WINDOW_MS);
    await created.close();
    await time.advance(10_000);
    const reopened = await FileNonceStore.open({ path, clock: time, guardMs: DEFAULT_CLOCK_WINDOW_MS });
    expect(reopened.notBefore).toBe(T0 + DEFAULT_CLOCK_WINDOW_MS);
    await reopened.close();
  });

  it('survives a restart: a new instance on the same file still says replay, and keeps the horizon', async () => {
    const time = new VirtualTime(T0);
    const first = await FileNonceStore.open({ path, clock: time });
    expect(first.notBefore).toBe(T0);
    expect(await first.record('bc1:abc', T0 + 60_000)).toBe('fresh');
    await first.close();

    await time.advance(10_000);
    const second = await FileNonceStore.open({ path, clock: time });
    expect(second.notBefore).toBe(T0);
    expect(await second.record('bc1:abc', T0 + 60_000)).toBe('replay');
    expect(await second.record('bc1:def', T0 + 70_000)).toBe('fresh');
    await second.close();
  });

  it("bounds each device's share, and the share survives a restart (the owner is on the line)", async () => {
    const time = new VirtualTime(T0);
    const first = await FileNonceStore.open({
      path,
      clock: time,
      durability: 'write',
      maxEntriesPerOwner: 50,
    });
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => first.record(`stolen-${i}`, T0 + 60_000, 'stolen-device')),
    );
    expect(results.filter((r) => r === 'fresh')).toHaveLength(50);
    expect(results.filter((r) => r === 'share-full')).toHaveLength(150);
    expect(await first.record('legit-1', T0 + 60_000, 'demo-device')).toBe('fresh');
    await first.close();
    expect((await readFile(path, 'utf8')).split('\n')[1]).toBe(`stolen-0 ${T0 + 60_000} stolen-device`);
    const second = await FileNonceStore.open({ path, clock: time, maxEntriesPerOwner: 50 });
    expect(second.ownedBy('stolen-device')).toBe(50);
    expect(await second.record('stolen-x', T0 + 60_000, 'stolen-device')).toBe('share-full');
    expect(await second.record('legit-2', T0 + 60_000, 'demo-device')).toBe('fresh');
    await second.close();
  });

  it('the answer fresh is given only after the line is in the file; the file is 0600', async () => {
    const time = new VirtualTime(T0);
    const store = await FileNonceStore.open({ path, clock: time });
    await store.record('id-1', T0 + 60_000);
    const text = await readFile(path, 'utf8');
    expect(text).toBe(`blackcloud-nonces v1 since=${T0}\nid-1 ${T0 + 60_000}\n`);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await store.close();
  });

  it('drops expired and torn lines on load, and compacts the file', async () => {
    await writeFile(
      path.replace('state/nonces.log', 'nonces.log'),
      `blackcloud-nonces v1 since=${T0 - 100_000}\nexpired ${T0 - 1}\nlive ${T0 + 5000}\ntorn 17`,
    );
    const file = path.replace('state/nonces.log', 'nonces.log');
    const store = await FileNonceStore.open({ path: file, clock: new VirtualTime(T0) });
    expect(store.notBefore).toBe(T0 - 100_000);
    expect(store.size).toBe(1);
    expect(await store.record('live', T0 + 5000)).toBe('replay');
    expect(await store.record('expired', T0 + 60_000)).toBe('fresh');
    expect(await readFile(file, 'utf8')).toBe(
      // The dropped record's expiry is the high-water mark (clock steps, memory-nonce-store.ts).
      `blackcloud-nonces v1 since=${T0 - 100_000} forgotten=${T0 - 1}\nlive ${T0 + 5000}\nexpired ${T0 + 60_000}\n`,
    );
    await store.close();
  });

  it('compacts while running once appended lines outgrow the live records', async () => {
    const time = new VirtualTime(T0);
    // Checks every 5 appended lines: at 5 and 10 everything is live (no compaction), at 15 the early ten have
    // expired and 15 lines > 2 x 5 live records: the file is rewritten with the live ones only.
    const store = await FileNonceStore.open({ path, clock: time, compactAfterLines: 5 });
    for (let i = 0; i < 10; i++) await store.record(`early-${i}`, T0 + 1000);
    expect((await readFile(path, 'utf8')).trim().split('\n')).toHaveLength(11);
    await time.advance(2000);
    for (let i = 0; i < 5; i++) await store.record(`late-${i}`, T0 + 60_000);
    // Recorded while the compaction runs: must land in the new file, after it.
    expect(await store.record('after', T0 + 60_000)).toBe('fresh');
    await store.close();
    expect(await readFile(path, 'utf8')).toBe(
      `blackcloud-nonces v1 since=${T0} forgotten=${T0 + 1000}\n${[0, 1, 2, 3, 4].map((i) => `late-${i} ${T0 + 60_000}\n`).join('')}` +
        `after ${T0 + 60_000}\n`,
    );
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const reopened = await FileNonceStore.open({ path, clock: time });
    expect(await reopened.record('late-2', T0 + 60_000)).toBe('replay');
    await reopened.close();
  });

  it('concurrent records share writes and never answer fresh twice for one id', async () => {
    const store = await FileNonceStore.open({ path, clock: new VirtualTime(T0) });
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => store.record(`id-${i % 25}`, T0 + 60_000)),
    );
    expect(results.filter((result) => result === 'fresh')).toHaveLength(25);
    await store.close();
    const reopened = await FileNonceStore.open({ path, clock: new VirtualTime(T0) });
    expect(reopened.size).toBe(25);
    await reopened.close();
  });

  it('a file that is not a nonce file is a clear typed error', async () => {
    const file = join(dir, 'devices.yaml');
    await writeFile(file, 'devices: []\n');
    const failure = await FileNonceStore.open({ path: file, clock: new VirtualTime(T0) }).catch(
      (error) => error,
    );
    expect(failure).toBeInstanceOf(NonceStoreFileError);
    expect(String(failure.message)).toContain(`nonce file ${file}: is not a blackcloud nonce file`);
  });

  it('a closed store throws (the receiver fails closed)', async () => {
    const store = await FileNonceStore.open({ path, clock: new VirtualTime(T0) });
    await store.close();
    await expect(store.record('x', T0)).rejects.toThrow(NonceStoreFileError);
  });
});
