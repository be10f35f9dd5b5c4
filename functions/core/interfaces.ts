/**
 * The receiver's interfaces: the narrow boundaries through which every side effect enters the pure pipeline
 * (nonce store, firewall, device directory, expiry scheduler, audit sink, clock, timers, randomness).
 * Implementations live in functions/aws/ (DynamoDB, EC2, SQS, IoT, CloudWatch) and functions/local/ (memory, files,
 * the gate, nftables); docs/architecture.md draws them. Nothing here reads the clock, the environment or randomness.
 */
import type { AccessEntry, AddressFamily, FwknopHashType } from '../../spa/types.ts';
import type { GrantPrefixPolicy } from './grant-prefix.ts';
import type { DeviceTransport } from './transport.ts';

/** Where a datagram came from, as the socket saw it (never as the packet claims). */
export interface RemoteEndpoint {
  readonly address: string;
  readonly family: AddressFamily;
  readonly port: number;
}

export type PacketFormat = 'bc1' | 'fwknop';

/** One open firewall grant: a source address allowed to reach the broker's ports until `expiresAt`. */
export interface Grant {
  readonly deviceId: string;
  /** The observed source address (never the claimed one), IPv4 dotted quad or IPv6 text; for a prefix grant,
   *  the canonical network address of the prefix. */
  readonly address: string;
  readonly family: AddressFamily;
  /** Set for a prefix grant (grant-prefix.ts, docs/scaling.md "Prefix grants"): the grant admits every address
   *  of `address/prefixLength`. Undefined: the single host `address`. */
  readonly prefixLength?: number;
  readonly access: readonly AccessEntry[];
  /** Milliseconds since the Unix epoch. */
  readonly openedAt: number;
  /** Milliseconds since the Unix epoch. */
  readonly expiresAt: number;
}

/** The receiver's clock. Milliseconds since the Unix epoch. */
export interface Clock {
  now(): number;
}

/** A cryptographically secure source of random bytes. */
export interface RandomSource {
  randomBytes(length: number): Uint8Array;
}

/** Timers, injected so grant expiry is tested under a virtual clock. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** 'share-full': the owner (device) holds its whole share of the store; nothing was recorded. */
export type NonceRecordResult = 'fresh' | 'replay' | 'share-full';

/**
 * Replay protection. `record` stores the replay id with a conditional write and says whether it was new.
 * `expiresAt` (ms) is when the record may be forgotten (timestamp + clock window): garbage collection only.
 * `owner` (the device id) lets a bounded store cap each device's share ('share-full'), so one key cannot fill
 * it for everyone; a store without a bound ignores it. It rejects (throws) when the store cannot answer; the
 * receiver then fails closed (no grant).
 */
export interface NonceStore {
  record(replayId: string, expiresAt: number, owner?: string): Promise<NonceRecordResult>;
  /**
   * Start-time guard (ms since the epoch), for stores whose memory begins at some instant (the in-memory store:
   * the process start plus the clock window; the file store: the file's creation). The receiver refuses packets stamped before it,
   * reason 'before-start', because the store cannot tell whether they were already used. Undefined = no horizon
   * (a shared durable store such as DynamoDB).
   */
  readonly notBefore?: number;
  close?(): Promise<void>;
}

/**
 * The firewall in front of the broker. `allow` opens (or extends) each grant; `revoke` closes it.
 * Both are idempotent: allowing an open grant extends it, revoking a closed one succeeds.
 */
export interface Firewall {
  allow(grants: readonly Grant[]): Promise<void>;
  revoke(grants: readonly Grant[]): Promise<void>;
  close?(): Promise<void>;
}

/** One native SPA key of a device. A device may hold two during a rotation. */
export interface DeviceKey {
  /** u32 key id carried in every BC1 packet header. */
  readonly keyId: number;
  /** 32-byte ChaCha20-Poly1305 key. Never logged. */
  readonly key: Uint8Array;
  /** After this instant (ms) the key is refused; undefined = no end. */
  readonly notAfter?: number;
}

/** fwknop (FKO 3.0.0) settings of a device that knocks with the standard fwknop client. */
export interface FwknopSettings {
  /** The username field the fwknop client sends (its -U option, default the OS user). */
  readonly username: string;
  /** Rijndael key material, 1..32 bytes. Never logged. */
  readonly encryptionKey: Uint8Array;
  /** HMAC key. Never logged. */
  readonly hmacKey: Uint8Array;
  readonly hmacType: FwknopHashType;
}

export interface Device {
  readonly id: string;
  readonly enabled: boolean;
  /** What the device may ask to open. */
  readonly allowedAccess: readonly AccessEntry[];
  /** Upper bound of a grant for this device, seconds. */
  readonly maxOpenSeconds: number;
  readonly nativeKeys: readonly DeviceKey[];
  readonly fwknop?: FwknopSettings;
  /** The serial (upper-case hex) of this enrolment's client certificate, where the directory records it (local):
   *  the broker then refuses any other certificate with the device's CN. */
  readonly certificateSerial?: string;
  /** Prefix grants for carrier-grade NAT (grant-prefix.ts); undefined (the default) = single-address grants. */
  readonly grantPrefix?: GrantPrefixPolicy;
  /** How it reaches the broker (transport.ts); undefined = `tls`. */
  readonly transport?: DeviceTransport;
}

export interface DeviceDirectory {
  /** The device holding this native key id, and that key; undefined when unknown. */
  byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined>;
  /**
   * Devices whose fwknop keys may have made a packet from this source (fwknop carries no key id, so the
   * receiver tries each candidate's HMAC). Implementations keep this list small.
   */
  fwknopCandidates(source: RemoteEndpoint): Promise<readonly Device[]>;
}

/**
 * A durable backstop for grant expiry beyond the receiver's own timer (on AWS: an SQS message delayed by
 * the grant lifetime, consumed by the revoker Lambda). Locally a no-op: the gate's timer or nftables'
 * element timeout expires the grant by itself.
 */
export interface ExpiryScheduler {
  schedule(grant: Grant): Promise<void>;
}

/** What releasing one device's connect claim on one grant target found (ConnectClaimStore.release). */
export interface ConnectClaimRelease {
  /**
   * Close the grants you hold for the target now: the device's claim there has been released (by this call, or,
   * with a shared store, by another receiver told of the same session) and no live claim is left on the target.
   */
  readonly revoke: boolean;
  /** This call ended a live claim of the device (false: it changed nothing). */
  readonly claimed: boolean;
  /** Devices with a live claim on the target after the release. */
  readonly waiting: readonly string[];
}

/**
 * Connect claims (closed on connect, docs/scaling.md "A rule lives until the session is established"): which
 * devices that knocked for a grant target (a source address, or a prefix grant's `network/length`) still wait
 * to connect from it. In process (functions/receiver/connect-claims.ts) for local firewalls and one receiver; in
 * the grants table (functions/aws/dynamo-connect-claims.ts) for receivers behind a load balancer.
 *
 * Contract, whoever shares the store:
 * - `knock(deviceId, target, until)` records or refreshes the device's claim until `until` (ms); a later knock
 *   only moves it forward. Resolves once the claim is visible to every sharer's `release` and `waiting`.
 * - `release(deviceId, target, now)` is "the broker accepted a session of `deviceId` from `target`". Atomic: of
 *   all the releases of one live claim, through any sharer, exactly one gets `claimed: true`. `revoke` is true
 *   for every release of the device's released claim while no live claim is left (so each receiver told of the
 *   session closes the grants it holds; revokes are idempotent), and false when the device never knocked for the
 *   target, or its window ended unreleased: a device can never shorten another device's grant. A shared store
 *   also says `revoke` when it has no record of the target at all (its rule was revoked and its record deleted
 *   by another receiver): the caller's grants there are stale.
 * - `waiting(target, now)` lists the devices with a live claim (`now < until`).
 * - `forget(target)`: this process holds no grant of the target any more. An in-process store drops the
 *   target's claims; a shared store keeps them (they live on the grants item and go with it).
 */
export interface ConnectClaimStore {
  knock(deviceId: string, target: string, until: number): Promise<void>;
  release(deviceId: string, target: string, now: number): Promise<ConnectClaimRelease>;
  waiting(target: string, now: number): Promise<readonly string[]>;
  forget(target: string): void;
}

export type AuditEvent =
  | {
      readonly type: 'packet.accepted';
      readonly time: number;
      readonly deviceId: string;
      readonly source: string;
      readonly format: PacketFormat;
      readonly access: readonly AccessEntry[];
      readonly grantSeconds: number;
      /** SHA-256 of the replay id, hex, truncated: identifies the packet without revealing it. */
      readonly replayIdHash: string;
    }
  | {
      readonly type: 'packet.rejected';
      readonly time: number;
      readonly source: string;
      readonly reason: string;
      readonly format?: PacketFormat;
      readonly deviceId?: string;
      /** The codec's finer reason when `reason` is 'malformed' (e.g. 'bad-port'); never key material. */
      readonly detail?: string;
    }
  | {
      readonly type: 'grant.opened' | 'grant.extended';
      readonly time: number;
      readonly deviceId: string;
      readonly source: string;
      readonly access: readonly AccessEntry[];
      readonly expiresAt: number;
    }
  | {
      readonly type: 'grant.revoked';
      readonly time: number;
      readonly deviceId: string;
      readonly source: string;
      readonly access: readonly AccessEntry[];
      readonly expiresAt: number;
      /** Why the grant closed (GrantRevokeReason); 'connected' and 'expired' are the two a fleet sees most. */
      readonly reason: GrantRevokeReason;
    }
  | {
      readonly type: 'grant.failed';
      readonly time: number;
      readonly deviceId: string;
      readonly source: string;
      readonly error: string;
    }
  | KeyAuditEvent;

/**
 * Why a grant closed: 'connected' = every device that knocked for the address has its broker session (closed on
 * connect, docs/scaling.md); 'expired' = the window ended; 'address-cap' = the device knocked from too many newer
 * addresses; 'operator' = an explicit revoke (fleet commands, a disabled device); 'shutdown' = the receiver stopped.
 */
export type GrantRevokeReason = 'connected' | 'expired' | 'address-cap' | 'operator' | 'shutdown';

/** Key rotation (functions/key-rotation/, docs/key-lifecycle.md). Key ids only, never key material. */
export type KeyAuditEvent =
  | {
      /** A new key was generated and published ('key.offered') or a pending offer published again. */
      readonly type: 'key.offered' | 'key.resent';
      readonly time: number;
      readonly deviceId: string;
      readonly keyId: number;
      readonly generation: number;
      readonly oldKeyNotAfter: number;
    }
  | {
      readonly type: 'key.confirmed';
      readonly time: number;
      readonly deviceId: string;
      readonly keyId: number;
      /** 'ack' = proof of possession on the ack topic; 'first-use' = an accepted knock with the new key. */
      readonly by: 'ack' | 'first-use';
      /** When the older keys stop working. */
      readonly oldKeysNotAfter: number;
    }
  | {
      readonly type: 'key.retired';
      readonly time: number;
      readonly deviceId: string;
      readonly keyIds: readonly number[];
      readonly reason: 'new-key-used' | 'grace-ended';
    }
  | {
      readonly type: 'key.ack-rejected';
      readonly time: number;
      readonly deviceId: string;
      readonly keyId?: number;
      readonly reason: string;
    }
  | {
      readonly type: 'key.rotation-failed';
      readonly time: number;
      readonly deviceId: string;
      readonly error: string;
    };

/** The audit trail: one event per validated packet, rejection and grant change. Never carries key material. */
export interface AuditSink {
  write(event: AuditEvent): void;
}
