/**
 * Test support for the receiver tests: a harness on the shared virtual clock (test/support/virtual-time.ts), a
 * recording in-memory Firewall, device and packet builders. Real implementations of the ports (no mocks of our own code).
 */
import { createHash } from 'node:crypto';
import type {
  Device,
  ExpiryScheduler,
  Firewall,
  Grant,
  NonceStore,
} from '../../../functions/core/interfaces.ts';
import { MemoryAuditSink } from '../../../functions/local/audit.ts';
import { StaticDeviceDirectory } from '../../../functions/local/file-device-directory.ts';
import { noopExpiryScheduler } from '../../../functions/local/noop-expiry-scheduler.ts';
import { MemoryNonceStore } from '../../../functions/receiver/memory-nonce-store.ts';
import {
  createReceiverDeps,
  type DeviceBounds,
  type WiredReceiverDeps,
} from '../../../functions/receiver/receiver-deps.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import { encodeFwknop, type FwknopMessageInput } from '../../../spa/fwknop.ts';
import type { AccessEntry, IpAddress } from '../../../spa/types.ts';
import { VirtualTime } from '../../support/virtual-time.ts';

/** Deterministic bytes: SHA-256 chain of a label (not random, reproducible, never a real key). */
export function bytesFrom(label: string, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let block = createHash('sha256').update(label).digest();
  for (let offset = 0; offset < length; offset += block.length) {
    out.set(block.subarray(0, Math.min(block.length, length - offset)), offset);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

export interface FirewallCall {
  readonly op: 'allow' | 'revoke';
  readonly grants: readonly Grant[];
}

/** A tiny in-memory Firewall: records calls, keeps open (address, proto/port) → expiresAt, can be told to fail. */
export class RecordingFirewall implements Firewall {
  readonly calls: FirewallCall[] = [];
  readonly open = new Map<string, number>();
  failAllow: Error | undefined;
  failRevoke: Error | undefined;

  async allow(grants: readonly Grant[]): Promise<void> {
    this.calls.push({ op: 'allow', grants });
    if (this.failAllow !== undefined) throw this.failAllow;
    for (const grant of grants) {
      for (const entry of grant.access)
        this.open.set(`${grant.address} ${entry.protocol}/${entry.port}`, grant.expiresAt);
    }
  }

  async revoke(grants: readonly Grant[]): Promise<void> {
    this.calls.push({ op: 'revoke', grants });
    if (this.failRevoke !== undefined) throw this.failRevoke;
    for (const grant of grants) {
      for (const entry of grant.access) this.open.delete(`${grant.address} ${entry.protocol}/${entry.port}`);
    }
  }

  isOpen(address: string, entry: string): boolean {
    return this.open.has(`${address} ${entry}`);
  }
}

/** An ExpiryScheduler that records what it was given (a real implementation of the port). */
export class RecordingExpiryScheduler implements ExpiryScheduler {
  readonly scheduled: Grant[] = [];
  fail: Error | undefined;

  async schedule(grant: Grant): Promise<void> {
    if (this.fail !== undefined) throw this.fail;
    this.scheduled.push(grant);
  }
}

/** A NonceStore whose backend is down: every call rejects (e.g. DynamoDB unreachable). */
export class UnavailableNonceStore implements NonceStore {
  async record(): Promise<never> {
    throw new Error('connect ECONNREFUSED 127.0.0.1:8000');
  }
}

export const T0 = Date.UTC(2025, 5, 1, 12, 0, 0);
export const TCP_8883: AccessEntry = { protocol: 'tcp', port: 8883 };
export const TCP_1883: AccessEntry = { protocol: 'tcp', port: 1883 };
export const UDP_5683: AccessEntry = { protocol: 'udp', port: 5683 };

export const BC1_KEY = bytesFrom('demo bc1 key', 32);
export const BC1_KEY_ID = 0x1234_5678;
export const FWKNOP_ENCRYPTION_KEY = bytesFrom('demo fwknop encryption key', 32);
export const FWKNOP_HMAC_KEY = bytesFrom('demo fwknop hmac key', 64);

export function makeDevice(overrides: Partial<Device> = {}): Device {
  return {
    id: 'demo-device',
    enabled: true,
    allowedAccess: [TCP_8883, UDP_5683],
    maxOpenSeconds: 300,
    nativeKeys: [{ keyId: BC1_KEY_ID, key: BC1_KEY }],
    fwknop: {
      username: 'demo',
      encryptionKey: FWKNOP_ENCRYPTION_KEY,
      hmacKey: FWKNOP_HMAC_KEY,
      hmacType: 'sha256',
    },
    ...overrides,
  };
}

let nonceCounter = 0;

/** A BC1 packet; a fresh nonce per call unless given. */
export function bc1Packet(options: {
  timestampMs: number;
  access?: readonly AccessEntry[];
  durationSeconds?: number;
  claimedSource?: IpAddress;
  keyId?: number;
  key?: Uint8Array;
  nonce?: Uint8Array;
}): Uint8Array {
  nonceCounter += 1;
  return encodeBc1(
    {
      timestampMs: options.timestampMs,
      durationSeconds: options.durationSeconds ?? 0,
      access: options.access ?? [TCP_8883],
      ...(options.claimedSource === undefined ? {} : { claimedSource: options.claimedSource }),
    },
    {
      keyId: options.keyId ?? BC1_KEY_ID,
      key: options.key ?? BC1_KEY,
      nonce: options.nonce ?? bytesFrom(`nonce ${nonceCounter}`, 12),
    },
  );
}

/** An fwknop packet as the standard client builds it (access type 1 from 0.0.0.0 by default). */
export function fwknopPacket(
  options: Partial<FwknopMessageInput> & { timestampSeconds: number },
  keys: { encryptionKey?: Uint8Array; hmacKey?: Uint8Array } = {},
): Uint8Array {
  nonceCounter += 1;
  const { timestampSeconds, ...rest } = options;
  return encodeFwknop(
    { username: 'demo', messageType: 1, message: '0.0.0.0,tcp/8883', ...rest, timestamp: timestampSeconds },
    {
      encryptionKey: keys.encryptionKey ?? FWKNOP_ENCRYPTION_KEY,
      hmacKey: keys.hmacKey ?? FWKNOP_HMAC_KEY,
      hmacType: 'sha256',
    },
    {
      salt: bytesFrom(`salt ${nonceCounter}`, 8),
      random: String(1_000_000_000_000_000 + nonceCounter).slice(0, 16),
    },
  );
}

export interface Harness {
  readonly time: VirtualTime;
  readonly firewall: RecordingFirewall;
  readonly audit: MemoryAuditSink;
  readonly nonces: NonceStore;
  readonly directory: StaticDeviceDirectory;
  readonly deps: WiredReceiverDeps;
}

/** Receiver deps with real in-memory adapters under a virtual clock. The nonce store starts 1 h before T0. */
export function harness(
  options: {
    devices?: readonly Device[];
    nonces?: NonceStore;
    rateLimit?: { burst: number; ratePerSecond: number };
    deviceBounds?: Partial<DeviceBounds>;
  } = {},
): Harness {
  const time = new VirtualTime(T0 - 3_600_000);
  const nonces = options.nonces ?? new MemoryNonceStore({ clock: time });
  time.set(T0);
  const firewall = new RecordingFirewall();
  const audit = new MemoryAuditSink();
  const directory = new StaticDeviceDirectory(options.devices ?? [makeDevice()]);
  const deps = createReceiverDeps({
    directory,
    nonces,
    firewall,
    audit,
    expiry: noopExpiryScheduler,
    clock: time,
    timers: time,
    rejectAudit: false,
    ...(options.rateLimit === undefined ? {} : { rateLimit: options.rateLimit }),
    ...(options.deviceBounds === undefined ? {} : { deviceBounds: options.deviceBounds }),
  });
  return { time, firewall, audit, nonces, directory, deps };
}
