/**
 * The simulated fleet's DeviceDirectory: N native-key devices held in memory (the simulation measures the grant
 * path, not IoT lookups). Device `i` is `dev-<i>`, key id i + 1, allowed tcp/8883, grants up to 60 s; with a
 * `grantPrefix` policy (carrier NAT, functions/core/grant-prefix.ts) every device carries it.
 */
import type { GrantPrefixPolicy } from '../../functions/core/grant-prefix.ts';
import type { Device, DeviceDirectory, DeviceKey } from '../../functions/core/interfaces.ts';
import { seededRandom } from './fleet-model.ts';

/** The device id of simulated device `index` (what the receiver puts on its grants). */
export function fleetDeviceId(index: number): string {
  return `dev-${index}`;
}

export class FleetDirectory implements DeviceDirectory {
  readonly #keys: Uint8Array[] = [];
  readonly #grantPrefix: GrantPrefixPolicy | undefined;

  constructor(devices: number, seed: number, grantPrefix?: GrantPrefixPolicy) {
    this.#grantPrefix = grantPrefix;
    const random = seededRandom(seed ^ 0x5eed);
    for (let i = 0; i < devices; i++) {
      this.#keys.push(Uint8Array.from({ length: 32 }, () => Math.floor(random() * 256)));
    }
  }

  keyOf(device: number): DeviceKey {
    return { keyId: device + 1, key: this.#keys[device]! };
  }

  async byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined> {
    const index = keyId - 1;
    if (index < 0 || index >= this.#keys.length) return undefined;
    const key = this.keyOf(index);
    return {
      key,
      device: {
        id: fleetDeviceId(index),
        enabled: true,
        allowedAccess: [{ protocol: 'tcp', port: 8883 }],
        maxOpenSeconds: 60,
        nativeKeys: [key],
        ...(this.#grantPrefix === undefined ? {} : { grantPrefix: this.#grantPrefix }),
      },
    };
  }

  async fwknopCandidates(): Promise<readonly Device[]> {
    return [];
  }
}
