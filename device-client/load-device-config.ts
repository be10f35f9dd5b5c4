/** Reads a device file (device.json) and validates it with the shared schema (functions/core/device-config.ts). */
import { readFile } from 'node:fs/promises';
import { DeviceConfigError } from '../functions/core/config-errors.ts';
import { type DeviceConfig, parseDeviceConfig } from '../functions/core/device-config.ts';

/** Reads, parses and validates a device file. Throws `DeviceConfigError` (one line) on any problem. */
export async function loadDeviceConfig(file: string): Promise<DeviceConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const fix =
      code === 'ENOENT'
        ? 'fix: pass the device.json written by "blackcloud up" or "blackcloud devices add"'
        : 'fix: check the path and its permissions';
    throw new DeviceConfigError(file, '', `cannot be read (${code ?? 'error'}); ${fix}`, { cause: error });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new DeviceConfigError(
      file,
      '',
      `is not valid JSON (${(error as Error).message}); fix: restore the file written by "blackcloud devices add"`,
      { cause: error },
    );
  }
  return parseDeviceConfig(json, file);
}
