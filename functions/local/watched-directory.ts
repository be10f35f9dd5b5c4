/**
 * The devices file as a DeviceDirectory that follows edits while `up` runs (`blackcloud devices add` in another
 * terminal): a new device can knock at once, without a restart.
 *
 * Contract:
 * - Reloads when the file changes: a file-system watch on its folder (the file is replaced by rename, so the
 *   folder is watched, not the file) triggers a reload after `debounceMs`; as a fallback where watches are
 *   unreliable, a lookup that finds nothing (unknown key id) or an fwknop candidate list checks the file's
 *   mtime, at most once per `checkIntervalMs`, and reloads when it changed.
 * - A reload that fails (the file is being edited, or invalid) keeps the previous devices in force and is
 *   reported through `onReloadError`; the next change tries again.
 * - Lookups never throw because of a reload problem.
 */
import { type FSWatcher, watch } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { Device, DeviceDirectory, DeviceKey, RemoteEndpoint } from '../core/interfaces.ts';
import { FileDeviceDirectory } from './file-device-directory.ts';

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
  #mtimeMs = 0;
  #lastCheck = 0;
  #reloading: Promise<void> | undefined;

  private constructor(inner: FileDeviceDirectory, mtimeMs: number, options: WatchedDirectoryOptions) {
    this.#inner = inner;
    this.#mtimeMs = mtimeMs;
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Loads the file (throws DeviceFileError when invalid) and starts watching it. */
  static async open(path: string, options: WatchedDirectoryOptions = {}): Promise<WatchedDeviceDirectory> {
    const mtimeMs = (await stat(path)).mtimeMs;
    const directory = new WatchedDeviceDirectory(await FileDeviceDirectory.load(path), mtimeMs, options);
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

  /** Re-reads the file if it changed since the last load (what the watch does). Keeps the old devices on error. */
  reload(): Promise<void> {
    this.#reloading ??= this.#reloadNow().finally(() => {
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
      this.#watcher = undefined; // no watch support: the mtime check on lookups still works
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
      const { mtimeMs } = await stat(this.#inner.path);
      if (mtimeMs === this.#mtimeMs) return false;
    } catch {
      return false;
    }
    await this.reload();
    return true;
  }

  async #reloadNow(): Promise<void> {
    try {
      const { mtimeMs } = await stat(this.#inner.path);
      if (mtimeMs === this.#mtimeMs) return; // several watch events for one change
      await this.#inner.reload();
      this.#mtimeMs = mtimeMs;
      this.#options.onReload?.(this.#inner.devices());
    } catch (error) {
      this.#options.onReloadError?.(error instanceof Error ? error : new Error(String(error)));
    }
  }
}
