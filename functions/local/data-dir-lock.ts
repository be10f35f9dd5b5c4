/**
 * One owner per data directory (docs/local.md, "One process owns the data directory"). `blackcloud up` owns its
 * data directory for its whole run; a command that writes the directory while no `up` runs (devices add, disable,
 * enable, remove; keys rotate) owns it for the length of its change.
 *
 * Contract:
 * - The lock is proper-lockfile's directory `<data-dir>/owner.lock` (mkdir: atomic), removed on release and, by
 *   proper-lockfile, at process exit. Next to it `owner.json` (0600, replaced atomically) names the holder: pid,
 *   host name, command, start time and, for `up`, its SPA and MQTT endpoints (`updateOwner` once they are known).
 * - `acquireDataDir` (for `up`) takes the lock or rejects with `DataDirBusyError` naming the holder: at once when
 *   the holder is an `up`, after `timeoutMs` when it is a short-lived writer that did not finish.
 * - `withDataDirWriter` (for the other writers) runs `fn` holding the lock; without it when there is no data
 *   directory (nothing to own: `fn` reports that in its own words) or when a live `up` holds it: that `up` follows the devices file and takes the devices-file lock for its own edits
 *   (devices-file-lock.ts), so the two cooperate. Another writer is waited for up to `timeoutMs`.
 * - Stale lock: when the holder named by owner.json ran on this host and its pid is not alive, the lock is taken
 *   over at once (after checking it is still the same lock directory), and `onTakeOver` is told. A lock with no
 *   readable record is waited for while its mtime is fresh (its holder is between mkdir and writing the record,
 *   which takes milliseconds); once nobody refreshed it for `UNRECORDED_STALE_MS` (two heartbeats and a second)
 *   its holder died in that gap (a SIGKILL), and it is taken over the same way. A recorded lock nobody refreshed
 *   for a day is taken over by proper-lockfile itself (a holder on another host).
 * - While held, the lock's mtime is refreshed every 5 s; should the lock be removed or replaced under its holder,
 *   `onLost` is called (the holder must stop: another process may own the directory now).
 * - `release()` removes owner.json, then the lock. Idempotent.
 */
import { readFile, rm, stat as statPath } from 'node:fs/promises';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { lock } from 'proper-lockfile';
import type { DataDirLayout } from './data-dir.ts';
import { replaceFile } from './replace-file.ts';

export interface OwnerEndpoint {
  readonly host: string;
  readonly port: number;
}

export interface OwnerRecord {
  readonly pid: number;
  readonly hostname: string;
  /** `up`, or the writer command (`devices add`, `keys rotate`, ...). */
  readonly command: string;
  readonly startedAt: string;
  readonly state?: 'starting' | 'ready';
  readonly spa?: OwnerEndpoint;
  readonly mqtt?: OwnerEndpoint;
}

export class DataDirBusyError extends Error {
  override readonly name = 'DataDirBusyError';
  readonly owner: OwnerRecord | undefined;

  constructor(message: string, owner: OwnerRecord | undefined) {
    super(message);
    this.owner = owner;
  }
}

export interface HeldDataDir {
  readonly record: OwnerRecord;
  /** Rewrites owner.json with these fields added (the endpoints once `up` listens). */
  updateOwner(fields: Pick<OwnerRecord, 'state' | 'spa' | 'mqtt'>): Promise<void>;
  release(): Promise<void>;
}

export interface DataDirLockOptions {
  /** How long to wait for a writer (or an unrecorded holder) to finish. @default 15000 */
  readonly timeoutMs?: number;
  readonly onTakeOver?: (stale: OwnerRecord) => void;
  readonly onLost?: (error: Error) => void;
}

const RETRY_MS = 50;
const REFRESH_MS = 5_000;
/** Only for a holder whose pid cannot be checked (another host): the pid check decides on this host. */
const STALE_MS = 24 * 3_600_000;
/** A lock without a record and not refreshed for this long lost its holder between mkdir and writing the record. */
const UNRECORDED_STALE_MS = 2 * REFRESH_MS + 1_000;

function endpoint(value: unknown): OwnerEndpoint | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const { host, port } = value as Record<string, unknown>;
  return typeof host === 'string' && Number.isInteger(port) ? { host, port: port as number } : undefined;
}

/** The record in owner.json, or undefined when it is absent or not one (never trusted beyond its types). */
export async function readOwner(layout: DataDirLayout): Promise<OwnerRecord | undefined> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(layout.ownerRecord, 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  if (!Number.isInteger(r.pid) || (r.pid as number) <= 0) return undefined;
  if (typeof r.hostname !== 'string' || typeof r.command !== 'string' || typeof r.startedAt !== 'string') {
    return undefined;
  }
  const spa = endpoint(r.spa);
  const mqtt = endpoint(r.mqtt);
  return {
    pid: r.pid as number,
    hostname: r.hostname,
    command: r.command,
    startedAt: r.startedAt,
    ...(r.state === 'starting' || r.state === 'ready' ? { state: r.state } : {}),
    ...(spa === undefined ? {} : { spa }),
    ...(mqtt === undefined ? {} : { mqtt }),
  };
}

/** False only when the pid certainly runs no process here (ESRCH); another user's process (EPERM) is alive. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

function isStale(owner: OwnerRecord): boolean {
  return owner.hostname === hostname() && !pidAlive(owner.pid);
}

function hostPort(point: OwnerEndpoint): string {
  return point.host.includes(':') ? `[${point.host}]:${point.port}` : `${point.host}:${point.port}`;
}

/** "blackcloud up (pid 4242, SPA udp 127.0.0.1:62201, MQTT tcp 127.0.0.1:8883, since ...)". */
export function describeOwner(owner: OwnerRecord): string {
  const parts = [`pid ${owner.pid}`];
  if (owner.hostname !== hostname()) parts.push(`on host ${owner.hostname}`);
  if (owner.spa !== undefined) parts.push(`SPA udp ${hostPort(owner.spa)}`);
  if (owner.mqtt !== undefined) parts.push(`MQTT tcp ${hostPort(owner.mqtt)}`);
  if (owner.state === 'starting') parts.push('still starting');
  parts.push(`since ${owner.startedAt}`);
  return `blackcloud ${owner.command} (${parts.join(', ')})`;
}

interface LockIdentity {
  readonly key: string;
  readonly mtimeMs: number;
}

async function lockIdentity(path: string): Promise<LockIdentity | undefined> {
  try {
    const info = await statPath(path);
    return { key: `${info.dev}:${info.ino}:${info.mtimeMs}`, mtimeMs: info.mtimeMs };
  } catch {
    return undefined;
  }
}

type Attempt = { held: HeldDataDir } | { up: OwnerRecord } | { absent: true };

async function attempt(
  layout: DataDirLayout,
  record: OwnerRecord,
  options: DataDirLockOptions,
): Promise<Attempt> {
  const timeoutMs = options.timeoutMs ?? 15_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let unlock: (() => Promise<void>) | undefined;
    try {
      unlock = await lock(layout.root, {
        lockfilePath: layout.ownerLock,
        realpath: false,
        stale: STALE_MS,
        update: REFRESH_MS,
        retries: 0,
        onCompromised: (error) => options.onLost?.(error),
      });
    } catch (error) {
      const { code } = error as NodeJS.ErrnoException;
      if (code === 'ENOENT') return { absent: true };
      if (code !== 'ELOCKED') throw error;
    }
    if (unlock !== undefined) return { held: await hold(layout, record, unlock) };
    const seen = await lockIdentity(layout.ownerLock);
    const owner = await readOwner(layout);
    const unrecordedDead =
      owner === undefined && seen !== undefined && Date.now() - seen.mtimeMs > UNRECORDED_STALE_MS;
    if ((owner !== undefined && isStale(owner)) || unrecordedDead) {
      // The same lock directory as when the record was read: no live process took it over meanwhile.
      if (seen !== undefined && seen.key === (await lockIdentity(layout.ownerLock))?.key) {
        await rm(layout.ownerRecord, { force: true });
        await rm(layout.ownerLock, { recursive: true, force: true });
        if (owner !== undefined) options.onTakeOver?.(owner);
      }
      continue;
    }
    if (owner?.command === 'up') return { up: owner };
    if (Date.now() >= deadline) {
      throw new DataDirBusyError(
        owner === undefined
          ? `data directory ${layout.root} is locked (${layout.ownerLock}) by a process that left no record ` +
              `for over ${timeoutMs} ms; fix: if no blackcloud process uses this directory, delete ${layout.ownerLock}`
          : `data directory ${layout.root} is in use by ${describeOwner(owner)} for over ${timeoutMs} ms; fix: ` +
              'wait for it to finish (or stop it), then run this again',
        owner,
      );
    }
    await sleep(RETRY_MS);
  }
}

async function hold(
  layout: DataDirLayout,
  record: OwnerRecord,
  unlock: () => Promise<void>,
): Promise<HeldDataDir> {
  let current = record;
  const write = () => replaceFile(layout.ownerRecord, `${JSON.stringify(current)}\n`, 0o600);
  try {
    await write();
  } catch (error) {
    await unlock().catch(() => undefined);
    throw error;
  }
  let released: Promise<void> | undefined;
  return {
    get record() {
      return current;
    },
    async updateOwner(fields) {
      current = { ...current, ...fields };
      await write();
    },
    release() {
      released ??= (async () => {
        await rm(layout.ownerRecord, { force: true }).catch(() => undefined);
        // A lock already lost (removed or taken over) is not ours to remove.
        await unlock().catch(() => undefined);
      })();
      return released;
    },
  };
}

function ownRecord(command: string): OwnerRecord {
  return {
    pid: process.pid,
    hostname: hostname(),
    command,
    startedAt: new Date().toISOString(),
  };
}

/** `up`: owns the data directory until `release()`; a second `up` is refused naming this one. */
export async function acquireDataDir(
  layout: DataDirLayout,
  fields: Pick<OwnerRecord, 'spa' | 'mqtt'>,
  options: DataDirLockOptions = {},
): Promise<HeldDataDir> {
  const result = await attempt(layout, { ...ownRecord('up'), state: 'starting', ...fields }, options);
  if ('held' in result) return result.held;
  if ('absent' in result) {
    throw new DataDirBusyError(
      `data directory ${layout.root} does not exist; fix: create it first`,
      undefined,
    );
  }
  throw new DataDirBusyError(
    `data directory ${layout.root} is already used by ${describeOwner(result.up)}; fix: stop that one ` +
      `(Ctrl-C in its terminal, or kill ${result.up.pid}), or start this one with another --data-dir`,
    result.up,
  );
}

/** A writer other than `up`: `fn` runs as the directory's owner, or under the live `up` that owns it. */
export async function withDataDirWriter<T>(
  layout: DataDirLayout,
  command: string,
  fn: () => Promise<T>,
  options: DataDirLockOptions = {},
): Promise<T> {
  const result = await attempt(layout, ownRecord(command), options);
  if (!('held' in result)) return fn();
  try {
    return await fn();
  } finally {
    await result.held.release();
  }
}
