/**
 * Per-source token bucket [BC1-2], bounded in memory.
 *
 * Contract:
 * - Each key (a source address, see `rateLimitKey` in source-address.ts) owns a bucket holding at most `burst`
 *   tokens, refilled continuously at `ratePerSecond`. `take(key)` spends one token and returns true, or returns
 *   false (nothing spent) when the bucket holds less than one. A key never seen before starts full. `peek(key)`
 *   says whether `take` would succeed, spending nothing and tracking nothing new (the receiver peeks before
 *   authentication and takes only for packets that fail it, [BC1-2]).
 * - Memory is bounded: at most `maxSources` buckets are tracked; when a new key would exceed it, the least
 *   recently used bucket is forgotten (that source starts full again: an attacker cycling through many spoofed
 *   sources gains at most one burst per eviction, while the expensive steps stay behind authentication).
 * - Time comes from the injected clock only; a clock that goes backwards refills nothing.
 * - Pure in-process state; never throws after construction.
 */
import type { Clock } from '../core/interfaces.ts';

export interface RateLimiter {
  /** Spend one token for `key`; false = over the limit. */
  take(key: string): boolean;
  /** Whether `take(key)` would succeed now; spends nothing, tracks no new key. */
  peek(key: string): boolean;
  /** Number of buckets currently tracked (≤ maxSources). */
  readonly size: number;
}

export interface TokenBucketOptions {
  readonly clock: Clock;
  /** Tokens added per second per source. @default 5 */
  readonly ratePerSecond?: number;
  /** Bucket capacity: packets a quiet source may send at once. @default 20 */
  readonly burst?: number;
  /** Most sources tracked at once (LRU beyond). @default 65536 */
  readonly maxSources?: number;
}

export const RATE_LIMIT_DEFAULTS = Object.freeze({ ratePerSecond: 5, burst: 20, maxSources: 65_536 });

interface Bucket {
  tokens: number;
  updatedAt: number;
}

export class RateLimiterConfigError extends RangeError {
  override readonly name = 'RateLimiterConfigError';
}

function positive(field: string, value: number, integer: boolean): number {
  if (!Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw new RateLimiterConfigError(
      `rate limiter ${field}: received ${String(value)}; expected a positive ${integer ? 'integer' : 'number'}.`,
    );
  }
  return value;
}

export class TokenBucketRateLimiter implements RateLimiter {
  readonly #clock: Clock;
  readonly #ratePerMs: number;
  readonly #burst: number;
  readonly #maxSources: number;
  /** Insertion order = recency order: a touched bucket is deleted and re-inserted at the end. */
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: TokenBucketOptions) {
    this.#clock = options.clock;
    this.#ratePerMs =
      positive('ratePerSecond', options.ratePerSecond ?? RATE_LIMIT_DEFAULTS.ratePerSecond, false) / 1000;
    this.#burst = positive('burst', options.burst ?? RATE_LIMIT_DEFAULTS.burst, true);
    this.#maxSources = positive('maxSources', options.maxSources ?? RATE_LIMIT_DEFAULTS.maxSources, true);
  }

  get size(): number {
    return this.#buckets.size;
  }

  peek(key: string): boolean {
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) return true;
    const elapsed = Math.max(0, this.#clock.now() - bucket.updatedAt);
    return Math.min(this.#burst, bucket.tokens + elapsed * this.#ratePerMs) >= 1;
  }

  take(key: string): boolean {
    const now = this.#clock.now();
    let bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      bucket = { tokens: this.#burst, updatedAt: now };
    } else {
      this.#buckets.delete(key);
      const elapsed = Math.max(0, now - bucket.updatedAt);
      bucket.tokens = Math.min(this.#burst, bucket.tokens + elapsed * this.#ratePerMs);
      bucket.updatedAt = Math.max(bucket.updatedAt, now);
    }
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > this.#maxSources) {
      const oldest = this.#buckets.keys().next();
      if (!oldest.done) this.#buckets.delete(oldest.value);
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }
}
