/**
 * KeyGenerationStore over the local devices file (functions/local/device-file.ts): the device directory
 * records each native key's generation, state and creation time next to its key file reference.
 *
 * Contract:
 * - `apply` is serialised: one change at a time in this process, and across processes (`blackcloud up` and
 *   `blackcloud keys rotate`, the fleet commands) by the devices-file lock (devices-file-lock.ts; a lock not
 *   refreshed for `staleLockMs` is taken over: its holder died). Each change re-reads the file under the lock, so two writers
 *   never lose each other's changes. A second pending key for one device is refused, and so is a key id that any
 *   device in the file already uses (`KeyIdTakenError`: the file, read under the lock, is the key-id reservation).
 *   It is atomic on disk: a new key is first written to its own key file `keys/<device>.<keyId>.bc1` (0600, temp file + rename), then the devices file is replaced
 *   atomically (0600). A crash between the two leaves an unreferenced key file, never a reference to nothing.
 * - Removing keys deletes their key files when no remaining entry references them.
 * - After every change `onChange` runs (e.g. `FileDeviceDirectory.reload()`), so the receiver sees it before
 *   `apply` resolves. Errors (bad file, unknown device) are thrown as `DeviceFileError` / `KeyStoreError`.
 * - Reads come from one parsed snapshot of the file, indexed by device id, kept until the file changes: `list`,
 *   `get` and `keyMaterial` cost one `stat` (file-signature.ts) when it did not, and one read and parse when it
 *   did. `apply` always reads the file again under the lock and compares its content with the snapshot's (parsing
 *   only when it differs), so a change is never made on a stale version. A 1,000-device tick therefore parses the
 *   file once, not once per device.
 * - Key material is read one key at a time (`loadNativeKey`: that key file only, mode checks included) and never
 *   logged.
 */
import { rm } from 'node:fs/promises';
import { dirname, resolve as resolvePath } from 'node:path';
import {
  type DeviceKeys,
  type KeyChange,
  type KeyGeneration,
  type KeyGenerationStore,
  KeyIdTakenError,
  type KeyState,
} from '../core/key-rotation-interfaces.ts';
import { applyToGenerations } from '../key-rotation/rotation-plan.ts';
import {
  type DeviceFileEntry,
  type KeyRef,
  loadNativeKey,
  parseDeviceFileText,
  readDeviceFileText,
  validateDeviceDocument,
  writeDeviceFile,
  writeFileAtomic,
} from './device-file.ts';
import { withDevicesFileLock } from './devices-file-lock.ts';
import { type FileSignature, fileSignature } from './file-signature.ts';

export class KeyStoreError extends Error {
  override readonly name = 'KeyStoreError';
}

type NativeKeyEntry = NonNullable<DeviceFileEntry['nativeKeys']>[number];

function timeOf(value: string | Date | undefined): number | undefined {
  if (value === undefined) return undefined;
  return value instanceof Date ? value.getTime() : Date.parse(value);
}

function generationOf(entry: NativeKeyEntry): KeyGeneration & { entry: NativeKeyEntry } {
  const createdAt = timeOf(entry.createdAt);
  const notAfter = timeOf(entry.notAfter);
  return {
    entry,
    keyId: entry.keyId,
    generation: entry.generation ?? 0,
    state: (entry.state ?? 'current') as KeyState,
    ...(createdAt === undefined ? {} : { createdAt }),
    ...(notAfter === undefined ? {} : { notAfter }),
  };
}

function toEntry(key: KeyGeneration & { entry: NativeKeyEntry }): NativeKeyEntry {
  const { entry } = key;
  return {
    keyId: entry.keyId,
    key: entry.key,
    ...(key.notAfter === undefined ? {} : { notAfter: new Date(key.notAfter).toISOString() }),
    generation: key.generation,
    state: key.state,
    ...(entry.createdAt === undefined ? {} : { createdAt: entry.createdAt }),
  };
}

export interface DeviceFileKeyStoreOptions {
  /** Called after each applied change (e.g. reload the receiver's directory). */
  readonly onChange?: () => Promise<void> | void;
  /** Passed to `loadDeviceFile` when key material is read. @default true */
  readonly checkKeyFileMode?: boolean;
  /** A lock not refreshed for this long (at least 2000) is taken over. @default 10000 */
  readonly staleLockMs?: number;
  /** Give up waiting for the lock after this long. @default 15000 */
  readonly lockTimeoutMs?: number;
}

/** One version of the file, parsed and validated, indexed by device id. Never mutated. */
interface Snapshot {
  /** Taken before the read (a change during it shows as a difference); undefined = unknown, compare the text. */
  readonly signature: FileSignature | undefined;
  readonly text: string;
  readonly entries: readonly DeviceFileEntry[];
  readonly byId: ReadonlyMap<string, DeviceFileEntry>;
}

function keysOf(entry: DeviceFileEntry): DeviceKeys {
  return {
    deviceId: entry.id,
    enabled: entry.enabled ?? true,
    keys: (entry.nativeKeys ?? []).map((native) => {
      const { entry: _file, ...generation } = generationOf(native);
      return generation;
    }),
  };
}

export class DeviceFileKeyStore implements KeyGenerationStore {
  readonly path: string;
  readonly #options: DeviceFileKeyStoreOptions;
  #queue: Promise<unknown> = Promise.resolve();
  #snapshot: Snapshot | undefined;
  #parses = 0;

  constructor(path: string, options: DeviceFileKeyStoreOptions = {}) {
    this.path = resolvePath(path);
    this.#options = options;
  }

  /** How many times the file was parsed (it is parsed only when its content changed). */
  get parses(): number {
    return this.#parses;
  }

  /** The current snapshot: one stat when the file did not change. */
  async #current(): Promise<Snapshot> {
    const signature = await fileSignature(this.path);
    const cached = this.#snapshot;
    if (cached !== undefined && cached.signature === signature) return cached;
    return this.#fromText(await readDeviceFileText(this.path), signature);
  }

  /** The snapshot of `text`: the cached one when the content is the same, else parsed (throws DeviceFileError). */
  #fromText(text: string, signature: FileSignature | undefined): Snapshot {
    const cached = this.#snapshot;
    if (cached !== undefined && cached.text === text) {
      this.#snapshot = { ...cached, signature };
      return this.#snapshot;
    }
    this.#parses += 1;
    const raw = parseDeviceFileText(this.path, text).toJS() as { devices?: DeviceFileEntry[] } | null;
    validateDeviceDocument(this.path, raw); // throws DeviceFileError naming every problem
    const entries = Object.freeze(raw?.devices ?? []);
    this.#snapshot = { signature, text, entries, byId: new Map(entries.map((entry) => [entry.id, entry])) };
    return this.#snapshot;
  }

  async list(): Promise<readonly DeviceKeys[]> {
    return (await this.#current()).entries.map(keysOf);
  }

  async get(deviceId: string): Promise<DeviceKeys | undefined> {
    const entry = (await this.#current()).byId.get(deviceId);
    return entry === undefined ? undefined : keysOf(entry);
  }

  async keyMaterial(deviceId: string, keyId: number): Promise<Uint8Array | undefined> {
    const { entries, byId } = await this.#current();
    const entry = byId.get(deviceId);
    const index = (entry?.nativeKeys ?? []).findIndex((key) => key.keyId === keyId);
    if (entry === undefined || index < 0) return undefined;
    return loadNativeKey(
      this.path,
      entry.nativeKeys![index]!.key as KeyRef,
      `devices[${entries.indexOf(entry)}].nativeKeys[${index}].key`,
      this.#options.checkKeyFileMode === undefined
        ? {}
        : { checkKeyFileMode: this.#options.checkKeyFileMode },
    );
  }

  apply(deviceId: string, change: KeyChange): Promise<void> {
    const run = this.#queue.then(() =>
      withDevicesFileLock(this.path, () => this.#apply(deviceId, change), {
        ...(this.#options.staleLockMs === undefined ? {} : { staleMs: this.#options.staleLockMs }),
        ...(this.#options.lockTimeoutMs === undefined ? {} : { timeoutMs: this.#options.lockTimeoutMs }),
      }),
    );
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #apply(deviceId: string, change: KeyChange): Promise<void> {
    // Under the lock: the file as it is now (content compared, never only its signature), copied to be changed.
    const entries = [...this.#fromText(await readDeviceFileText(this.path), undefined).entries];
    const index = entries.findIndex((entry) => entry.id === deviceId);
    if (index < 0) {
      throw new KeyStoreError(
        `device "${deviceId}" is not in ${this.path}: check the id (blackcloud devices list)`,
      );
    }
    const entry = entries[index]!;
    const before = (entry.nativeKeys ?? []).map(generationOf);
    let after: (KeyGeneration & { entry: NativeKeyEntry })[];
    if (change.type === 'add-pending') {
      const pending = before.find((key) => key.state === 'pending');
      if (pending !== undefined) {
        throw new KeyStoreError(
          `device "${deviceId}" already has a pending key (${pending.keyId}): it is offered again until acknowledged`,
        );
      }
      // The reservation: no device in the file may use the id (read under the lock, so no one else takes it).
      const owner = entries.find((other) =>
        (other.nativeKeys ?? []).some((key) => key.keyId === change.keyId),
      );
      if (owner !== undefined) {
        throw new KeyIdTakenError(
          change.keyId,
          `key id ${change.keyId} is already used by device "${owner.id}": draw another key id`,
        );
      }
      const file = `keys/${deviceId}.${change.keyId}.bc1`;
      await writeFileAtomic(
        resolvePath(dirname(this.path), file),
        `${Buffer.from(change.key).toString('base64')}\n`,
      );
      const created: NativeKeyEntry = {
        keyId: change.keyId,
        key: { file },
        generation: change.generation,
        state: 'pending',
        createdAt: new Date(change.createdAt).toISOString(),
      };
      after = [...before, generationOf(created)];
    } else {
      after = applyToGenerations(before, change, (key, fields) => ({ ...key, ...fields }));
    }
    entries[index] = { ...entry, nativeKeys: after.map(toEntry) };
    const written = await writeDeviceFile(this.path, entries);
    // What was written is the snapshot (signature unknown: the next read compares the content, so a writer after
    // this one is seen).
    this.#snapshot = {
      signature: undefined,
      text: written,
      entries: Object.freeze(entries),
      byId: new Map(entries.map((e) => [e.id, e])),
    };
    if (change.type === 'remove') await this.#deleteUnreferenced(before, entries);
    await this.#options.onChange?.();
  }

  async #deleteUnreferenced(
    removed: readonly { entry: NativeKeyEntry }[],
    entries: readonly DeviceFileEntry[],
  ): Promise<void> {
    const referenced = new Set(
      entries.flatMap((entry) => (entry.nativeKeys ?? []).map((key) => key.key.file).filter(Boolean)),
    );
    for (const { entry } of removed) {
      const file = entry.key.file;
      if (file !== undefined && !referenced.has(file)) {
        await rm(resolvePath(dirname(this.path), file), { force: true });
      }
    }
  }
}
