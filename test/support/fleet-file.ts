/**
 * A large local fleet written straight to disk (no provisioning, no certificates): `devices.yaml` and one key file
 * per native key under `keys/` (0600), as `blackcloud devices add` and the rotation store would leave them.
 *
 * Contract:
 * - `writeFleetFile(dir, count, options)` writes devices `dev-0000`, `dev-0001`, ... each with a current key
 *   (generation 1, key id `KEY_ID_BASE + i`) and, with `pending: true`, a pending key (generation 2, key id
 *   `PENDING_KEY_ID_BASE + i`, created at `createdAt`), as after `blackcloud keys rotate --all` with the devices
 *   offline. Returns each device's id and keys, so a test can knock as any of them.
 * - Key files are written in parallel batches; the devices file goes through `writeDeviceFile` (validated, atomic).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type DeviceFileEntry, writeDeviceFile } from '../../functions/local/device-file.ts';

export const KEY_ID_BASE = 1_000_000;
export const PENDING_KEY_ID_BASE = 2_000_000;

export interface FleetDevice {
  readonly id: string;
  readonly keyId: number;
  readonly key: Uint8Array;
  readonly pendingKeyId?: number;
}

export interface FleetOptions {
  readonly pending?: boolean;
  /** @default 0 */
  readonly createdAt?: number;
  /** @default ['tcp/8883'] */
  readonly allowedAccess?: readonly string[];
  /** Only the first `entries` of the fleet go into the file (the key files are written for all). */
  readonly entries?: number;
}

function keyOf(i: number, salt: number): Uint8Array {
  const key = new Uint8Array(32);
  key.fill(salt);
  new DataView(key.buffer).setUint32(0, i);
  return key;
}

export function fleetDeviceId(i: number): string {
  return `dev-${String(i).padStart(4, '0')}`;
}

export async function writeFleetFile(
  dir: string,
  count: number,
  options: FleetOptions = {},
): Promise<FleetDevice[]> {
  await mkdir(join(dir, 'keys'), { recursive: true, mode: 0o700 });
  const devices: FleetDevice[] = [];
  const entries: DeviceFileEntry[] = [];
  const files: [string, Uint8Array][] = [];
  for (let i = 0; i < count; i++) {
    const id = fleetDeviceId(i);
    const key = keyOf(i, 1);
    const current = `keys/${id}.${KEY_ID_BASE + i}.bc1`;
    files.push([current, key]);
    const nativeKeys: NonNullable<DeviceFileEntry['nativeKeys']> = [
      { keyId: KEY_ID_BASE + i, key: { file: current }, generation: 1, state: 'current' },
    ];
    if (options.pending === true) {
      const pending = `keys/${id}.${PENDING_KEY_ID_BASE + i}.bc1`;
      files.push([pending, keyOf(i, 2)]);
      nativeKeys.push({
        keyId: PENDING_KEY_ID_BASE + i,
        key: { file: pending },
        generation: 2,
        state: 'pending',
        createdAt: new Date(options.createdAt ?? 0).toISOString(),
      });
    }
    entries.push({ id, allowedAccess: [...(options.allowedAccess ?? ['tcp/8883'])], nativeKeys });
    devices.push({
      id,
      keyId: KEY_ID_BASE + i,
      key,
      ...(options.pending === true ? { pendingKeyId: PENDING_KEY_ID_BASE + i } : {}),
    });
  }
  for (let start = 0; start < files.length; start += 200) {
    await Promise.all(
      files
        .slice(start, start + 200)
        .map(([file, key]) =>
          writeFile(join(dir, file), `${Buffer.from(key).toString('base64')}\n`, { mode: 0o600 }),
        ),
    );
  }
  await writeDeviceFile(join(dir, 'devices.yaml'), entries.slice(0, options.entries ?? count));
  return devices;
}

/** The entries of the first `count` fleet devices (for rewriting the file with a growing fleet). */
export function fleetEntries(devices: readonly FleetDevice[], count: number): DeviceFileEntry[] {
  return devices.slice(0, count).map((device) => ({
    id: device.id,
    allowedAccess: ['tcp/8883'],
    nativeKeys: [
      {
        keyId: device.keyId,
        key: { file: `keys/${device.id}.${device.keyId}.bc1` },
        generation: 1,
        state: 'current',
      },
    ],
  }));
}
