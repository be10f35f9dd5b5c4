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
 * - Key material is read through `loadDeviceFile` (mode checks included) and never logged.
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
  loadDeviceFile,
  readDeviceFileDocument,
  validateDeviceDocument,
  writeDeviceFile,
  writeFileAtomic,
} from './device-file.ts';
import { withDevicesFileLock } from './devices-file-lock.ts';

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

export class DeviceFileKeyStore implements KeyGenerationStore {
  readonly path: string;
  readonly #options: DeviceFileKeyStoreOptions;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(path: string, options: DeviceFileKeyStoreOptions = {}) {
    this.path = resolvePath(path);
    this.#options = options;
  }

  async #entries(): Promise<DeviceFileEntry[]> {
    const document = await readDeviceFileDocument(this.path);
    const raw = document.toJS() as { devices?: DeviceFileEntry[] } | null;
    validateDeviceDocument(this.path, raw); // throws DeviceFileError naming every problem
    return raw?.devices ?? [];
  }

  async list(): Promise<readonly DeviceKeys[]> {
    return (await this.#entries()).map((entry) => ({
      deviceId: entry.id,
      enabled: entry.enabled ?? true,
      keys: (entry.nativeKeys ?? []).map((native) => {
        const { entry: _file, ...generation } = generationOf(native);
        return generation;
      }),
    }));
  }

  async get(deviceId: string): Promise<DeviceKeys | undefined> {
    return (await this.list()).find((device) => device.deviceId === deviceId);
  }

  async keyMaterial(deviceId: string, keyId: number): Promise<Uint8Array | undefined> {
    const devices = await loadDeviceFile(this.path, {
      ...(this.#options.checkKeyFileMode === undefined
        ? {}
        : { checkKeyFileMode: this.#options.checkKeyFileMode }),
    });
    return devices.find((device) => device.id === deviceId)?.nativeKeys.find((key) => key.keyId === keyId)
      ?.key;
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
    const entries = await this.#entries();
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
    await writeDeviceFile(this.path, entries);
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
