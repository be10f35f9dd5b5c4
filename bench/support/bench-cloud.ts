/**
 * A local black cloud for the latency benches: N devices (each its own BC1 key and its own loopback source
 * address 127.3.x.y), the real receiver (createReceiverDeps + startReceiver on 127.0.0.1 port 0, in-memory nonce
 * store, system clock) in front of a firewall the bench chooses (the userspace gate or nftables), and the device
 * side of a knock (`knockFrom`). Nothing here measures; the benches do.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { AuditSink, Device, Firewall } from '../../functions/core/interfaces.ts';
import { systemClock } from '../../functions/core/system.ts';
import { StaticDeviceDirectory } from '../../functions/local/file-device-directory.ts';
import { MemoryNonceStore } from '../../functions/receiver/memory-nonce-store.ts';
import { createReceiverDeps, type WiredReceiverDeps } from '../../functions/receiver/receiver-deps.ts';
import { type RunningReceiver, startReceiver } from '../../functions/receiver/udp-receiver.ts';
import { encodeBc1 } from '../../spa/bc1.ts';

export interface BenchDevice {
  readonly id: string;
  readonly keyId: number;
  readonly key: Uint8Array;
  /** The loopback address this device sends and connects from. */
  readonly address: string;
}

/** Loopback address of device i: 127.<block>.x.y, never .0 or .255 in the last octet. */
export function loopbackAddress(block: number, i: number): string {
  return `127.${block}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
}

export function makeBenchDevices(count: number, block = 3): BenchDevice[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `bench-${i}`,
    keyId: 0x0800_0000 + i,
    key: new Uint8Array(randomBytes(32)),
    address: loopbackAddress(block, i),
  }));
}

const countingAudit: AuditSink = { write: () => undefined };

export interface BenchReceiver {
  readonly receiver: RunningReceiver;
  readonly deps: WiredReceiverDeps;
  close(): Promise<void>;
}

/** The receiver for `devices`, which may open tcp/`port`, granting through `firewall`. */
export async function startBenchReceiver(
  devices: readonly BenchDevice[],
  port: number,
  firewall: Firewall,
): Promise<BenchReceiver> {
  const directory = new StaticDeviceDirectory(
    devices.map(
      (d): Device => ({
        id: d.id,
        enabled: true,
        allowedAccess: [{ protocol: 'tcp', port }],
        maxOpenSeconds: 300,
        nativeKeys: [{ keyId: d.keyId, key: d.key }],
      }),
    ),
  );
  const deps = createReceiverDeps({
    directory,
    nonces: new MemoryNonceStore({ clock: { now: () => systemClock.now() - 1000 } }),
    firewall,
    audit: countingAudit,
    rejectAudit: false,
  });
  const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps });
  return {
    receiver,
    deps,
    async close() {
      await receiver.close();
      await deps.grants.close();
    },
  };
}

/** One BC1 knock for tcp/`port` from the device's own address. Resolves once the datagram is sent. */
export function knockFrom(device: BenchDevice, receiverPort: number, port: number): Promise<void> {
  const packet = encodeBc1(
    { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port }] },
    { keyId: device.keyId, key: device.key, nonce: new Uint8Array(randomBytes(12)) },
  );
  const socket = createSocket('udp4');
  return new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, device.address, () =>
      socket.send(packet, receiverPort, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
    );
  }).finally(() => socket.close());
}
