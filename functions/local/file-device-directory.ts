/**
 * DeviceDirectory adapters for the local run: a fixed list of devices, and the devices file (device-file.ts).
 *
 * Contract:
 * - `byKeyId` is one map lookup (key id → device and key) [BC1-3]; key ids are unique (a duplicate is a config
 *   error, raised when the list is built).
 * - `fwknopCandidates` returns every device with fwknop settings, whatever the source: the local small-fleet
 *   strategy (fwknop has no key id, so the receiver tries each candidate's HMAC; fine for tens of devices, and
 *   the reason the native format is the one that scales). Disabled devices are included so the receiver can
 *   report 'device-disabled' rather than 'auth-failed'.
 * - `FileDeviceDirectory.reload()` re-reads the file and swaps the whole list at once; on a `DeviceFileError`
 *   the previous list stays in force and the error is thrown to the caller.
 */
import type { Device, DeviceDirectory, DeviceKey, RemoteEndpoint } from '../core/interfaces.ts';
import {
  DeviceFileError,
  type DeviceFileIssue,
  type LoadDeviceFileOptions,
  loadDeviceFile,
} from './device-file.ts';

interface Index {
  readonly devices: readonly Device[];
  readonly byKeyId: ReadonlyMap<number, { device: Device; key: DeviceKey }>;
  readonly byId: ReadonlyMap<string, Device>;
  readonly fwknop: readonly Device[];
}

function buildIndex(source: string, devices: readonly Device[]): Index {
  const byKeyId = new Map<number, { device: Device; key: DeviceKey }>();
  const byId = new Map<string, Device>();
  const issues: DeviceFileIssue[] = [];
  devices.forEach((device, i) => {
    if (byId.has(device.id)) {
      issues.push({
        path: `devices[${i}].id`,
        value: JSON.stringify(device.id),
        message: 'duplicate device id: give every device its own id',
      });
    }
    byId.set(device.id, device);
    device.nativeKeys.forEach((key, j) => {
      if (byKeyId.has(key.keyId)) {
        issues.push({
          path: `devices[${i}].nativeKeys[${j}].keyId`,
          value: String(key.keyId),
          message: `duplicate key id (also held by ${byKeyId.get(key.keyId)!.device.id}): every native key needs its own id`,
        });
      }
      byKeyId.set(key.keyId, { device, key });
    });
  });
  if (issues.length > 0) throw new DeviceFileError(source, issues);
  return Object.freeze({
    devices: Object.freeze([...devices]),
    byKeyId,
    byId,
    fwknop: Object.freeze(devices.filter((device) => device.fwknop !== undefined)),
  });
}

/** A directory over a fixed list of devices (tests, embedding). Throws DeviceFileError on duplicate ids. */
export class StaticDeviceDirectory implements DeviceDirectory {
  protected index: Index;

  constructor(devices: readonly Device[], source = '(in-memory device list)') {
    this.index = buildIndex(source, devices);
  }

  devices(): readonly Device[] {
    return this.index.devices;
  }

  byId(id: string): Device | undefined {
    return this.index.byId.get(id);
  }

  async byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined> {
    return this.index.byKeyId.get(keyId);
  }

  async fwknopCandidates(_source: RemoteEndpoint): Promise<readonly Device[]> {
    return this.index.fwknop;
  }
}

/** The devices file as a DeviceDirectory. Create with `FileDeviceDirectory.load(path)`. */
export class FileDeviceDirectory extends StaticDeviceDirectory {
  readonly path: string;
  readonly #options: LoadDeviceFileOptions;

  private constructor(path: string, devices: readonly Device[], options: LoadDeviceFileOptions) {
    super(devices, path);
    this.path = path;
    this.#options = options;
  }

  /** Loads and validates the file; throws DeviceFileError. */
  static async load(path: string, options: LoadDeviceFileOptions = {}): Promise<FileDeviceDirectory> {
    return new FileDeviceDirectory(path, await loadDeviceFile(path, options), options);
  }

  /** Re-reads the file; on error keeps the current devices and throws DeviceFileError. */
  async reload(): Promise<void> {
    const devices = await loadDeviceFile(this.path, this.#options);
    this.index = buildIndex(this.path, devices);
  }
}
