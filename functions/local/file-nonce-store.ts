/**
 * File-backed NonceStore: replay records that survive a restart of a single receiver.
 *
 * File format (UTF-8 text, mode 0600):
 *   blackcloud-nonces v1 since=<ms> [forgotten=<ms>]
 *                                            header: when this file's memory began (its start-time guard), and
 *                                            the latest expiry of a record it dropped (absent in older files)
 *   <replayId> <expiresAt ms> [<owner>]      one line per recorded packet, appended (owner: the device id,
 *                                            URI-encoded; absent in files written before per-device shares)
 *
 * Contract:
 * - `record` decides fresh/replay in memory (synchronously, so concurrent calls for one id never both get
 *   'fresh'), then appends the line and, with the default durability 'fsync', fdatasyncs the file before it
 *   answers 'fresh' (writes that arrive together share one write and one sync). If the write fails, `record`
 *   throws `NonceStoreFileError` and the receiver fails closed; the id stays remembered (never 'fresh' twice).
 * - `FileNonceStore.open` loads the file, drops expired and torn (incomplete) lines, and rewrites it compacted
 *   (temp file + rename). While running, every `compactAfterLines` appended lines it sweeps expired records
 *   and compacts the file when the appended lines outnumber twice the live records.
 * - Start-time guard: `notBefore` is the file's `since`: its creation plus `guardMs` (the receiver's clock window,
 *   passed when a store could have accepted packets before this file existed, e.g. it was removed; 0 for a new
 *   data directory), so packets stamped before the store's memory began are refused by the receiver
 *   ('before-start'); a restart on the same file keeps the horizon and still answers 'replay' for packets
 *   recorded before it.
 * - Clock steps (memory-nonce-store.ts `forgottenUntil`): the latest expiry of any record dropped, at load or by a
 *   sweep, is kept in the header and never goes down, so records dropped under a clock stepped forward cannot be
 *   replayed after the clock goes back, across restarts too.
 * - Each device's share is bounded (`maxEntriesPerOwner`, MemoryNonceStore's contract): a device holding its
 *   whole share gets 'share-full' and nothing is written; the share survives a restart (the owner is on the line).
 * - A file that is not a nonce file is a `NonceStoreFileError` (the path, what was found, the fix); so is a symbolic
 *   link at its name (never read or written through, open-flags.ts).
 */
import { type FileHandle, mkdir, open, readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Clock, NonceRecordResult, NonceStore } from '../core/interfaces.ts';
import { MemoryNonceStore } from '../receiver/memory-nonce-store.ts';
import { APPEND_FLAGS, READ_FLAGS, symlinkRefusal } from './open-flags.ts';
import { replaceFile } from './replace-file.ts';

export class NonceStoreFileError extends Error {
  override readonly name = 'NonceStoreFileError';
  readonly path: string;

  constructor(path: string, message: string, options?: { cause?: unknown }) {
    super(`nonce file ${path}: ${message}`, options);
    this.path = path;
  }
}

export interface FileNonceStoreOptions {
  readonly path: string;
  readonly clock: Clock;
  /** 'fsync' (default): fdatasync before answering 'fresh'; 'write': the write only (faster, survives a crash of
   *  the process but not of the machine). */
  readonly durability?: 'fsync' | 'write';
  /** @default 10_000 */
  readonly compactAfterLines?: number;
  /** @default 1_000_000 */
  readonly maxEntries?: number;
  /** Live records one device may hold. @default 4096 (DEFAULT_MAX_NONCES_PER_DEVICE) */
  readonly maxEntriesPerOwner?: number;
  /** How far past a new file's creation its start-time guard reaches (see the contract). @default 0 */
  readonly guardMs?: number;
}

const HEADER = /^blackcloud-nonces v1 since=(\d{1,16})(?: forgotten=(\d{1,16}))?$/;
const RECORD = /^(\S+) (\d{1,16})(?: (\S+))?$/;
const FILE_MODE = 0o600;

function header(since: number, forgotten: number): string {
  return `blackcloud-nonces v1 since=${since}${forgotten > 0 ? ` forgotten=${forgotten}` : ''}\n`;
}

function line(replayId: string, expiresAt: number, owner: string | undefined): string {
  const ownerField = owner === undefined ? '' : ` ${encodeURIComponent(owner)}`;
  return `${encodeURIComponent(replayId)} ${expiresAt}${ownerField}\n`;
}

interface Waiter {
  resolve(): void;
  reject(error: unknown): void;
}

export class FileNonceStore implements NonceStore {
  readonly notBefore: number;
  readonly path: string;
  readonly #clock: Clock;
  readonly #memory: MemoryNonceStore;
  readonly #durability: 'fsync' | 'write';
  readonly #compactAfterLines: number;
  #handle: FileHandle;
  #appendedLines = 0;
  #nextCompactionCheck: number;
  #pending: string[] = [];
  /** Ids decided 'fresh' whose line is not written yet: a compaction must not write them (their append will). */
  readonly #pendingIds = new Set<string>();
  #waiters: Waiter[] = [];
  #flushing: Promise<void> | undefined;
  #closed = false;

  private constructor(
    options: FileNonceStoreOptions,
    since: number,
    memory: MemoryNonceStore,
    handle: FileHandle,
  ) {
    this.path = options.path;
    this.notBefore = since;
    this.#clock = options.clock;
    this.#memory = memory;
    this.#durability = options.durability ?? 'fsync';
    this.#compactAfterLines = options.compactAfterLines ?? 10_000;
    this.#nextCompactionCheck = this.#compactAfterLines;
    this.#handle = handle;
  }

  static async open(options: FileNonceStoreOptions): Promise<FileNonceStore> {
    const { path, clock } = options;
    const now = clock.now();
    const memory = new MemoryNonceStore({
      clock,
      maxEntries: options.maxEntries ?? 1_000_000,
      ...(options.maxEntriesPerOwner === undefined ? {} : { maxEntriesPerOwner: options.maxEntriesPerOwner }),
    });
    let since = now + (options.guardMs ?? 0);
    let text: string | undefined;
    try {
      text = await readFile(path, { encoding: 'utf8', flag: READ_FLAGS });
    } catch (error) {
      const refusal = symlinkRefusal(path, error);
      if (refusal !== undefined) throw new NonceStoreFileError(path, refusal, { cause: error });
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new NonceStoreFileError(
          path,
          `cannot be read (${(error as Error).message}); check its permissions`,
          {
            cause: error,
          },
        );
      }
    }
    if (text !== undefined && text.length > 0) {
      const lines = text.split('\n');
      const first = HEADER.exec(lines[0] ?? '');
      if (first === null) {
        throw new NonceStoreFileError(
          path,
          `is not a blackcloud nonce file (first line ${JSON.stringify((lines[0] ?? '').slice(0, 40))}); ` +
            'point the receiver at another path, or remove the file (packets stamped before the restart will be refused)',
        );
      }
      since = Number(first[1]);
      if (first[2] !== undefined) memory.forget(Number(first[2]));
      for (const raw of lines.slice(1)) {
        const match = RECORD.exec(raw);
        if (match === null) continue; // empty or torn line (a crash mid-write): that write never answered 'fresh'
        const expiresAt = Number(match[2]);
        if (expiresAt < now) {
          memory.forget(expiresAt);
          continue;
        }
        let id: string;
        let owner: string | undefined;
        try {
          id = decodeURIComponent(match[1]!);
          owner = match[3] === undefined ? undefined : decodeURIComponent(match[3]);
        } catch {
          continue;
        }
        memory.restore(id, expiresAt, owner);
      }
    }
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeCompacted(path, since, memory);
    const handle = await openAppend(path);
    return new FileNonceStore(options, since, memory, handle);
  }

  /** Live records in memory. */
  get size(): number {
    return this.#memory.size;
  }

  /** Live records of one device. */
  ownedBy(owner: string): number {
    return this.#memory.ownedBy(owner);
  }

  async record(replayId: string, expiresAt: number, owner?: string): Promise<NonceRecordResult> {
    if (this.#closed) throw new NonceStoreFileError(this.path, 'the store is closed');
    const decided = this.#memory.recordSync(replayId, expiresAt, owner);
    if (decided !== 'fresh') return decided;
    await new Promise<void>((resolve, reject) => {
      this.#pending.push(line(replayId, expiresAt, owner));
      this.#pendingIds.add(replayId);
      this.#waiters.push({ resolve, reject });
      this.#kick();
    });
    return 'fresh';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#flushing !== undefined) await this.#flushing;
    await this.#handle.close();
  }

  #kick(): void {
    if (this.#flushing !== undefined) return;
    this.#flushing = this.#flush().then(() => {
      this.#flushing = undefined;
      if (this.#pending.length > 0) this.#kick();
    });
  }

  /** Group commit: everything pending goes out in one write (+ one sync); then maybe a compaction. */
  async #flush(): Promise<void> {
    while (this.#pending.length > 0) {
      const lines = this.#pending.splice(0);
      const waiters = this.#waiters.splice(0);
      this.#pendingIds.clear();
      try {
        await this.#handle.write(lines.join(''));
        if (this.#durability === 'fsync') await this.#handle.datasync();
        this.#appendedLines += lines.length;
        for (const waiter of waiters) waiter.resolve();
      } catch (error) {
        const failure = new NonceStoreFileError(this.path, `append failed (${(error as Error).message})`, {
          cause: error,
        });
        for (const waiter of waiters) waiter.reject(failure);
      }
      if (this.#appendedLines >= this.#nextCompactionCheck) {
        this.#memory.sweep(this.#clock.now());
        if (this.#appendedLines > 2 * this.#memory.size) await this.#compact();
        else this.#nextCompactionCheck = this.#appendedLines + this.#compactAfterLines;
      }
    }
  }

  async #compact(): Promise<void> {
    try {
      await writeCompacted(this.path, this.notBefore, this.#memory, this.#pendingIds);
      const previous = this.#handle;
      this.#handle = await openAppend(this.path);
      this.#appendedLines = 0;
      this.#nextCompactionCheck = this.#compactAfterLines;
      await previous.close();
    } catch {
      // A failed compaction leaves the old file, still complete and valid: appends continue on the old handle.
    }
  }
}

/** Opens the log for append, never through a symbolic link (open-flags.ts). */
async function openAppend(path: string): Promise<FileHandle> {
  let handle: FileHandle;
  try {
    handle = await open(path, APPEND_FLAGS, FILE_MODE);
  } catch (error) {
    const refusal = symlinkRefusal(path, error);
    if (refusal === undefined) throw error;
    throw new NonceStoreFileError(path, refusal, { cause: error });
  }
  await handle.chmod(FILE_MODE);
  return handle;
}

/** Writes header + live records atomically over `path` (replace-file.ts: temp file, fsync, mode 0600, rename). */
async function writeCompacted(
  path: string,
  since: number,
  memory: MemoryNonceStore,
  skip: ReadonlySet<string> = new Set(),
): Promise<void> {
  let body = header(since, memory.forgottenUntil);
  for (const [id, expiresAt, owner] of memory.entries()) {
    if (!skip.has(id)) body += line(id, expiresAt, owner);
  }
  await replaceFile(path, body, FILE_MODE);
}
