/**
 * Wires the receiver's in-process parts (grant manager, rate limiters, counters, config) around the adapters a
 * deployment chooses (directory, nonce store, firewall, audit, expiry scheduler). Used by `blackcloud up` and
 * the AWS receiver entry point alike; only the adapters passed in differ.
 *
 * Config is validated once here; a bad value throws `ReceiverConfigError` naming the field, value and range.
 */
import { DEFAULT_CLOCK_WINDOW_MS, DEFAULT_GRANT_SECONDS } from '../../spa/limits.ts';
import { MAX_GRANT_SECONDS } from '../core/deployment.ts';
import type {
  AuditSink,
  Clock,
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
  /** Per-source token bucket. @default 20 burst, 5 per second, 65536 sources */
  readonly rateLimit?: Omit<TokenBucketOptions, 'clock'>;
  /** Cap on 'packet.rejected' audit lines; `false` audits every rejection. @default 200 burst, 50 per second */
  readonly rejectAudit?: { readonly burst: number; readonly ratePerSecond: number } | false;
  readonly counters?: Counters;
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
  const grants = new GrantManager({
    firewall: options.firewall,
    expiry: options.expiry ?? noExpiryBackstop,
    audit: options.audit,
    clock,
    timers: options.timers ?? systemTimers,
  });
  const rejectAudit = options.rejectAudit ?? { burst: 200, ratePerSecond: 50 };
  return Object.freeze({
    directory: options.directory,
    nonces: options.nonces,
    grants,
    audit: options.audit,
    clock,
    rateLimiter: new TokenBucketRateLimiter({ clock, ...options.rateLimit }),
    counters: options.counters ?? createCounters(),
    config,
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
