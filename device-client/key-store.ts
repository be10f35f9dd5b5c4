/**
 * The device's durable native key: the `spa.native` field of its device file (device.json).
 *
 * Contract of `storeNativeKey(file, keyId, key)`:
 * - Reads the device file, replaces `spa.native` with { keyId, key } (every other field kept as written), checks
 *   the result with the device-file schema, then replaces the file atomically (write-file-atomic: temp file, fsync, mode 0600, rename):
 *   after it resolves the key is on disk, and a crash leaves either the old file or the new one, never a mix.
 * - Throws `DeviceConfigError` (naming the field, never the key) when the file cannot be read or the result
 *   would not validate; the file is then unchanged.
 * - The next `loadDeviceConfig` (hence the next knock) uses the new key.
 */
import { readFile } from 'node:fs/promises';
import writeFileAtomic from 'write-file-atomic';
import { DeviceConfigError } from '../functions/core/config-errors.ts';
import { type DeviceConfig, parseDeviceConfig } from '../functions/core/device-config.ts';

export async function storeNativeKey(file: string, keyId: number, key: Uint8Array): Promise<DeviceConfig> {
  let json: { spa?: Record<string, unknown> } & Record<string, unknown>;
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (error) {
    throw new DeviceConfigError(
      file,
      '',
      `cannot be read as JSON to store the new SPA key (${(error as Error).message}); fix: restore the device file`,
      { cause: error },
    );
  }
  const updated = {
    ...json,
    spa: { ...(json.spa ?? {}), native: { keyId, key: Buffer.from(key).toString('base64') } },
  };
  const config = parseDeviceConfig(updated, file); // throws DeviceConfigError, file unchanged
  // `chown: false`: the new file belongs to the writer (write-file-atomic honours it; its @types 4.0.3 lack it).
  const options = { mode: 0o600, chown: false };
  await writeFileAtomic(
    file,
    `${JSON.stringify(updated, null, 2)}\n`,
    options as unknown as writeFileAtomic.Options,
  );
  return config;
}
