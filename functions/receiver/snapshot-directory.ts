/**
 * A DeviceDirectory over a snapshot of devices, for a reader worker thread (reader-workers.ts): the owner posts
 * the device list on start and after every reload, and the worker answers lookups from it.
 *
 * Contract:
 * - `byKeyId` is one map lookup; `fwknopCandidates` returns every device with fwknop settings (whatever the
 *   source), disabled ones included so the pipeline reports 'device-disabled' rather than 'auth-failed'.
 * - `replace(devices)` swaps the whole snapshot at once. A duplicate key id keeps the first holder (the owner's
 *   directory already refused such a list: this never guesses a winner beyond that).
 * - `onMiss` (optional) is told of a lookup that found nothing, so the owner's directory can check its source
 *   (watched-directory.ts re-reads a changed file on a miss). Never throws.
 */
import type { Device, DeviceDirectory, DeviceKey, RemoteEndpoint } from '../core/interfaces.ts';

export class SnapshotDeviceDirectory implements DeviceDirectory {
  #byKeyId = new Map<number, { device: Device; key: DeviceKey }>();
  #fwknop: readonly Device[] = [];
  readonly #onMiss: (() => void) | undefined;

  constructor(devices: readonly Device[], onMiss?: () => void) {
    this.#onMiss = onMiss;
    this.replace(devices);
  }

  replace(devices: readonly Device[]): void {
    const byKeyId = new Map<number, { device: Device; key: DeviceKey }>();
    for (const device of devices) {
      for (const key of device.nativeKeys)
        if (!byKeyId.has(key.keyId)) byKeyId.set(key.keyId, { device, key });
    }
    this.#byKeyId = byKeyId;
    this.#fwknop = Object.freeze(devices.filter((device) => device.fwknop !== undefined));
  }

  async byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined> {
    const found = this.#byKeyId.get(keyId);
    if (found === undefined) this.#onMiss?.();
    return found;
  }

  async fwknopCandidates(_source: RemoteEndpoint): Promise<readonly Device[]> {
    if (this.#fwknop.length === 0) this.#onMiss?.();
    return this.#fwknop;
  }
}
