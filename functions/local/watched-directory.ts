/**
 * The devices file as a DeviceDirectory that follows edits while `up` runs (`blackcloud devices add` in another
 * terminal): a new device can knock at once, without a restart.
 *
 * Contract:
 * - Reloads when the file changes: a file-system watch on its folder (the file is replaced by rename, so the
 *   folder is watched, not the file) triggers a reload after `debounceMs`; as a fallback where watches are
 *   unreliable, a lookup that finds nothing (unknown key id) or an fwknop candidate list checks the file's
 *   signature (file-signature.ts), at most once per `checkIntervalMs`, and reloads when
 *   it changed.
 * - A reload never misses a change: every `reload()` call (each watch event, each check) marks the file dirty, and
 *   one reload loop reads it again until a pass ends with no new mark and the file's signature after the read
 *   equal to the one before it. The promise `reload()` returns settles only after a read that started after the
 *   call, so the caller sees the file at least as new as when it called.
 * - `onReload` is called in the same turn as the loaded devices change (before any further await).
 * - A reload that fails (the file is being edited, or invalid) keeps the previous devices in force and is
 *   reported through `onReloadError`; the next change tries again.
 * - Lookups never throw because of a reload problem.
 */
import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Device, DeviceDirectory, DeviceKey, RemoteEndpoint } from '../core/interfaces.ts';
import { FileDeviceDirectory } from './file-device-directory.ts';
import { type FileSignature, fileSignature } from './file-signature.ts';

export interface WatchedDirectoryOptions {
  /** @default 1000 */
  readonly checkIntervalMs?: number;
  /** @default 50 */
  readonly debounceMs?: number;
  readonly onReload?: (devices: readonly Device[]) => void;
  readonly onReloadError?: (error: Error) => void;
  /** @default Date.now */
  readonly now?: () => number;
}

export class WatchedDeviceDirectory implements DeviceDirectory {
  readonly #inner: FileDeviceDirectory;
  readonly #options: WatchedDirectoryOptions;
  readonly #now: () => number;
  #watcher: FSWatcher | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The signature of the version loaded (taken before its read: a change during the read shows as a difference). */
  #loaded: FileSignature;
  #lastCheck = 0;
  #reloading: Promise<void> | undefined;
  /** Set by every `reload()` call; the reload loop clears it before each read and runs again while it is set. */
  #dirty = false;

  private constructor(inner: FileDeviceDirectory, loaded: FileSignature, options: WatchedDirectoryOptions) {
    this.#inner = inner;
    this.#loaded = loaded;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Loads the file (throws DeviceFileError when invalid) and starts watching it. */
  static async open(path: string, options: WatchedDirectoryOptions = {}): Promise<WatchedDeviceDirectory> {
    const loaded = await fileSignature(path);
    const directory = new WatchedDeviceDirectory(await FileDeviceDirectory.load(path), loaded, options);
    directory.#watch();
    return directory;
  }

  get path(): string {
    return this.#inner.path;
  }

  devices(): readonly Device[] {
    return this.#inner.devices();
  }

  byId(id: string): Device | undefined {
    return this.#inner.byId(id);
  }

  async byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined> {
    const found = await this.#inner.byKeyId(keyId);
    if (found !== undefined) return found;
    if (!(await this.#checkForChange())) return undefined;
    return this.#inner.byKeyId(keyId);
  }

  async fwknopCandidates(source: RemoteEndpoint): Promise<readonly Device[]> {
    await this.#checkForChange();
    return this.#inner.fwknopCandidates(source);
  }

  /**
   * Re-reads the file if it changed since the last load (what the watch does), until no change arrived during the
   * read. Keeps the old devices on error.
   */
  reload(): Promise<void> {
    this.#dirty = true;
    this.#reloading ??= this.#drain().finally(() => {
      this.#reloading = undefined;
    });
    return this.#reloading;
  }

  close(): void {
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  #watch(): void {
    const name = basename(this.#inner.path);
    try {
      this.#watcher = watch(dirname(this.#inner.path), { persistent: false }, (_event, file) => {
        if (file !== null && file !== name) return;
        if (this.#timer !== undefined) clearTimeout(this.#timer);
        this.#timer = setTimeout(() => void this.reload(), this.#options.debounceMs ?? 50);
        this.#timer.unref();
      });
      this.#watcher.on('error', () => this.close());
    } catch {
      this.#watcher = undefined; // no watch support: the signature check on lookups still works
    }
  }

  /** True when the file changed and was reloaded. Rate-bounded. */
  async #checkForChange(): Promise<boolean> {
    const now = this.#now();
    if (now - this.#lastCheck < (this.#options.checkIntervalMs ?? 1000)) {
      if (this.#reloading !== undefined) await this.#reloading;
      return false;
    }
    this.#lastCheck = now;
    try {
      if ((await fileSignature(this.#inner.path)) === this.#loaded) return false;
    } catch {
      return false;
    }
    await this.reload();
    return true;
  }

  /** The reload loop: one pass per mark, and another while the file changed under a read. */
  async #drain(): Promise<void> {
    while (this.#dirty) {
      this.#dirty = false;
      try {
        const before = await fileSignature(this.#inner.path);
        if (before === this.#loaded) continue; // several watch events for one change
        await this.#inner.reload();
        this.#loaded = before;
        // Told in the same turn as the devices change, so a lookup never sees devices onReload has not seen.
        this.#options.onReload?.(this.#inner.devices());
        // Changed during the read: what was loaded may be the older version; read again.
        if ((await fileSignature(this.#inner.path)) !== before) this.#dirty = true;
      } catch (error) {
        this.#options.onReloadError?.(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }
}
