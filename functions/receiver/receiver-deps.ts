/**
 * Wires the receiver's in-process parts (grant manager, rate limiters, counters, config) around the adapters a
 * deployment chooses (directory, nonce store, firewall, audit, expiry scheduler). Used by `blackcloud up` and
 * the AWS receiver entry point alike; only the adapters passed in differ.
 *
 * Config is validated once here; a bad value throws `ReceiverConfigError` naming the field, value and range.
 */
import { DEFAULT_CLOCK_WINDOW_MS, DEFAULT_GRANT_SECONDS } from '../../spa/limits.ts';
import {
  DEFAULT_DEVICE_KNOCK_BURST,
  DEFAULT_DEVICE_KNOCKS_PER_MINUTE,
  DEFAULT_MAX_ADDRESSES_PER_DEVICE,
  MAX_ADDRESSES_PER_DEVICE,
  MAX_GRANT_SECONDS,
} from '../core/deployment.ts';
import type {
  AuditSink,
  Clock,
  ConnectClaimStore,
  DeviceDirectory,
  ExpiryScheduler,
  Firewall,
  NonceStore,
  Timers,
} from '../core/interfaces.ts';
import { systemClock, systemTimers } from '../core/system.ts';
import { type Counters, createCounters } from './counters.ts';
import { GrantManager } from './grant-manager.ts';
import type { ReceiverConfig, ReceiverDeps } from './handle-datagram.ts';
import { type TokenBucketOptions, TokenBucketRateLimiter } from './rate-limiter.ts';

export class ReceiverConfigError extends RangeError {
  override readonly name = 'ReceiverConfigError';
}

export interface CreateReceiverDepsOptions {
  readonly directory: DeviceDirectory;
  readonly nonces: NonceStore;
  readonly firewall: Firewall;
  readonly audit: AuditSink;
  /** @default a no-op (the local firewalls expire grants by themselves) */
  readonly expiry?: ExpiryScheduler;
  /** @default systemClock */
  readonly clock?: Clock;
  /** @default systemTimers */
  readonly timers?: Timers;
  readonly config?: Partial<ReceiverConfig>;
  /** [BC1-2] Failure bucket per (source, key id). @default 20 burst, 5 per second, 65536 buckets */
  readonly rateLimit?: Omit<TokenBucketOptions, 'clock'>;
  /** Per-device bounds [BC1-9]; each validated here. */
  readonly deviceBounds?: Partial<DeviceBounds>;
  /** Cap on 'packet.rejected' audit lines; `false` audits every rejection. @default 200 burst, 50 per second */
  readonly rejectAudit?: { readonly burst: number; readonly ratePerSecond: number } | false;
  readonly counters?: Counters;
  /** Where the grant manager keeps the connect claims (closed on connect). @default this process only */
  readonly connectClaims?: ConnectClaimStore;
  /** The plain profile's credential keeper (plain-credential-keeper.ts). @default none (no plain logins) */
  readonly connectCredentials?: ReceiverDeps['connectCredentials'];
}

export interface DeviceBounds {
  /** Source addresses one device may hold grants for at once; the oldest is released beyond it. @default 4 */
  readonly maxAddressesPerDevice: number;
  /** Accepted knocks per device: bucket capacity. @default 20 */
  readonly knockBurst: number;
  /** Accepted knocks per device: refill per minute. @default 60 */
  readonly knocksPerMinute: number;
}

export function validateDeviceBounds(bounds: Partial<DeviceBounds> = {}): DeviceBounds {
  const checked = (field: keyof DeviceBounds, fallback: number, max: number): number => {
    const value = bounds[field] ?? fallback;
    if (!Number.isInteger(value) || value < 1 || value > max) {
      throw new ReceiverConfigError(
        `receiver config ${field}: received ${String(value)}; expected an integer in 1..${max} (default ${fallback}).`,
      );
    }
    return value;
  };
  return Object.freeze({
    maxAddressesPerDevice: checked(
      'maxAddressesPerDevice',
      DEFAULT_MAX_ADDRESSES_PER_DEVICE,
      MAX_ADDRESSES_PER_DEVICE,
    ),
    knockBurst: checked('knockBurst', DEFAULT_DEVICE_KNOCK_BURST, 100_000),
    knocksPerMinute: checked('knocksPerMinute', DEFAULT_DEVICE_KNOCKS_PER_MINUTE, 6_000_000),
  });
}

/** ReceiverDeps whose grant opener is the concrete GrantManager (call `grants.close()` at shutdown). */
export type WiredReceiverDeps = ReceiverDeps & { readonly grants: GrantManager };

export function validateReceiverConfig(config: Partial<ReceiverConfig> = {}): ReceiverConfig {
  const clockWindowMs = config.clockWindowMs ?? DEFAULT_CLOCK_WINDOW_MS;
  const defaultGrantSeconds = config.defaultGrantSeconds ?? DEFAULT_GRANT_SECONDS;
  if (!Number.isInteger(clockWindowMs) || clockWindowMs < 1000 || clockWindowMs > 3_600_000) {
    throw new ReceiverConfigError(
      `receiver config clockWindowMs: received ${String(clockWindowMs)}; expected an integer number of ` +
        `milliseconds in 1000..3600000 (default ${DEFAULT_CLOCK_WINDOW_MS}).`,
    );
  }
  if (
    !Number.isInteger(defaultGrantSeconds) ||
    defaultGrantSeconds < 1 ||
    defaultGrantSeconds > MAX_GRANT_SECONDS
  ) {
    throw new ReceiverConfigError(
      `receiver config defaultGrantSeconds: received ${String(defaultGrantSeconds)}; expected an integer in ` +
        `1..${MAX_GRANT_SECONDS} (default ${DEFAULT_GRANT_SECONDS}).`,
    );
  }
  return Object.freeze({ clockWindowMs, defaultGrantSeconds });
}

const noExpiryBackstop: ExpiryScheduler = Object.freeze({ schedule: async () => undefined });

export function createReceiverDeps(options: CreateReceiverDepsOptions): WiredReceiverDeps {
  const clock = options.clock ?? systemClock;
  const config = validateReceiverConfig(options.config);
  const bounds = validateDeviceBounds(options.deviceBounds);
  const grants = new GrantManager({
    maxAddressesPerDevice: bounds.maxAddressesPerDevice,
    firewall: options.firewall,
    expiry: options.expiry ?? noExpiryBackstop,
    audit: options.audit,
    clock,
    timers: options.timers ?? systemTimers,
    ...(options.connectClaims === undefined ? {} : { connectClaims: options.connectClaims }),
  });
  const rejectAudit = options.rejectAudit ?? { burst: 200, ratePerSecond: 50 };
  return Object.freeze({
    directory: options.directory,
    nonces: options.nonces,
    grants,
    audit: options.audit,
    clock,
    rateLimiter: new TokenBucketRateLimiter({ clock, ...options.rateLimit }),
    deviceRateLimiter: new TokenBucketRateLimiter({
      clock,
      burst: bounds.knockBurst,
      ratePerSecond: bounds.knocksPerMinute / 60,
    }),
    counters: options.counters ?? createCounters(),
    config,
    ...(options.connectCredentials === undefined ? {} : { connectCredentials: options.connectCredentials }),
    ...(rejectAudit === false
      ? {}
      : {
          rejectAuditLimiter: new TokenBucketRateLimiter({
            clock,
            burst: rejectAudit.burst,
            ratePerSecond: rejectAudit.ratePerSecond,
            maxSources: 1,
          }),
        }),
  });
}
