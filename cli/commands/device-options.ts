/**
 * Flags shared by the device commands (knock, pub, sub): `--device FILE`, `--server HOST[:PORT]`,
 * `--format native|fwknop`, and their resolution into a loaded device config and a knock target.
 */

import { loadDeviceConfig, parseServerAddress } from '../../device-client/index.ts';
import type { DeviceConfig, KnockFormat } from '../../functions/core/device-config.ts';
import { UsageError } from '../usage-error.ts';

export interface DeviceFlags {
  readonly device?: string;
  readonly server?: string;
  readonly format?: string;
}

export interface KnockTarget {
  readonly host: string;
  readonly port: number;
  readonly format: KnockFormat;
}

export async function loadDeviceFromFlags(flags: DeviceFlags): Promise<DeviceConfig> {
  if (flags.device === undefined) {
    throw new UsageError(
      '--device',
      'is required: pass the device.json written by "blackcloud up" (e.g. .blackcloud/devices/demo-device/device.json)',
    );
  }
  return loadDeviceConfig(flags.device);
}

export function knockTarget(config: DeviceConfig, flags: DeviceFlags): KnockTarget {
  let host = config.spa.host;
  let port = config.spa.port;
  if (flags.server !== undefined) {
    const parsed = parseServerAddress(flags.server, config.spa.port);
    if (!parsed.ok) {
      throw new UsageError(
        '--server',
        `must be HOST or HOST:PORT (port 1..65535; IPv6 as [addr]:port); received ${JSON.stringify(flags.server)}`,
      );
    }
    host = parsed.value.host;
    port = parsed.value.port;
  }
  const format = flags.format ?? config.spa.format;
  if (format !== 'native' && format !== 'fwknop') {
    throw new UsageError('--format', `must be "native" or "fwknop"; received ${JSON.stringify(format)}`);
  }
  return { host, port, format };
}
