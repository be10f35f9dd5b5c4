/**
 * A small read-through cache with two bounds: every entry lives at most `ttlMs` (by the injected clock) and the
 * cache holds at most `maxEntries` (the least recently used entry is evicted first). Values may be negative
 * answers (`null`) so repeated lookups of unknown ids do not each reach the backing store.
 * Concurrent misses for the same key share one load. A load that rejects is not cached.
 */
import type { Clock } from '../core/interfaces.ts';
import { AwsConfigError } from './errors.ts';

interface Entry<V> {
  readonly value: V;
  readonly expiresAt: number;
}

export interface BoundedCacheOptions {
  readonly ttlMs: number;
  readonly maxEntries: number;
  readonly clock: Clock;
}

export class BoundedCache<K, V> {
  readonly #entries = new Map<K, Entry<V>>();
  readonly #loading = new Map<K, Promise<V>>();
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  readonly #clock: Clock;

  constructor(options: BoundedCacheOptions) {
    if (!Number.isInteger(options.maxEntries) || options.maxEntries < 1) {
      throw new AwsConfigError(
        `BoundedCache maxEntries must be a positive integer, got ${String(options.maxEntries)}: pass e.g. 10000`,
      );
    }
    if (!Number.isFinite(options.ttlMs) || options.ttlMs < 0) {
      throw new AwsConfigError(
        `BoundedCache ttlMs must be a finite number >= 0, got ${String(options.ttlMs)}: pass e.g. 30000`,
      );
    }
    this.#ttlMs = options.ttlMs;
    this.#maxEntries = options.maxEntries;
    this.#clock = options.clock;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The cached value, or undefined when absent or expired (an expired entry is dropped). */
  get(key: K): { value: V } | undefined {
    const entry = this.#entries.get(key);
    if (entry === undefined) return undefined;
    if (this.#clock.now() >= entry.expiresAt) {
      this.#entries.delete(key);
      return undefined;
    }
    // Refresh recency: Map keeps insertion order, so re-insert at the end.
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    return { value: entry.value };
  }

  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, { value, expiresAt: this.#clock.now() + this.#ttlMs });
    while (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
    }
  }

  delete(key: K): void {
    this.#entries.delete(key);
  }

  clear(): void {
    this.#entries.clear();
  }

  /** The cached value, or the loaded one (then cached). Concurrent callers for one key share a single load. */
  async getOrLoad(key: K, load: () => Promise<V>): Promise<V> {
    const hit = this.get(key);
    if (hit !== undefined) return hit.value;
    const inFlight = this.#loading.get(key);
    if (inFlight !== undefined) return inFlight;
    const promise = load().then(
      (value) => {
        this.#loading.delete(key);
        this.set(key, value);
        return value;
      },
      (error: unknown) => {
        this.#loading.delete(key);
        throw error;
      },
    );
    this.#loading.set(key, promise);
    return promise;
  }
}
