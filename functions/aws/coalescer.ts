/**
 * Coalesces work that arrives close together into batches (pure scheduling; timers injected).
 *
 * Contract:
 *   - The first item after an idle period opens a window of `windowMs`; everything added before it closes is
 *     flushed as one batch. A batch never exceeds `maxBatch` items: reaching it flushes at once.
 *   - At most one flush runs at a time. Items added while a flush runs wait for it, then go out as the next batch
 *     once `windowMs` has passed since the previous flush STARTED (at once if that flush took longer, or if the
 *     next batch is full, or while draining): under load batches go out at most once per window and grow by
 *     themselves (e.g. EC2 throttling slows each call), which keeps one receiver's call rate to about one call per
 *     action and group per window, leaving the shared EC2 budget to the others (docs/scaling.md, "Staying inside
 *     the EC2 API budget").
 *   - Order is preserved across and within batches (`addFirst` puts items ahead of what is pending).
 *   - `take(match)` removes and returns the pending items that match (not those of a running flush), in order.
 *   - `flush` should not reject; if it does, `onFlushError` receives the error and the next batch still runs.
 */
import type { Timers } from '../core/interfaces.ts';

export interface CoalescerOptions<T> {
  readonly windowMs: number;
  readonly maxBatch: number;
  readonly timers: Timers;
  readonly flush: (batch: T[]) => Promise<void>;
  readonly onFlushError?: (error: unknown) => void;
}

export class Coalescer<T> {
  readonly #o: CoalescerOptions<T>;
  #pending: T[] = [];
  #timer: unknown;
  #flushing: Promise<void> | undefined;
  /** Set while `windowMs` has not yet passed since the running (or last) flush started. */
  #gap: unknown;
  #draining = false;
  #idleWaiters: (() => void)[] = [];

  constructor(options: CoalescerOptions<T>) {
    this.#o = options;
  }

  get pending(): number {
    return this.#pending.length;
  }

  add(...items: T[]): void {
    if (items.length === 0) return;
    this.#pending.push(...items);
    this.#schedule();
  }

  /** Add items ahead of everything pending (work that already waited, e.g. re-queued grants). */
  addFirst(...items: T[]): void {
    if (items.length === 0) return;
    this.#pending.unshift(...items);
    this.#schedule();
  }

  /** Remove the pending items that match (a flush already running keeps its batch), in order. */
  take(match: (item: T) => boolean): T[] {
    const taken: T[] = [];
    const kept: T[] = [];
    for (const item of this.#pending) (match(item) ? taken : kept).push(item);
    if (taken.length === 0) return taken;
    this.#pending = kept;
    if (kept.length === 0 && this.#flushing === undefined) {
      // Nothing left to send: no window stays armed, and whoever waits for idle is told.
      if (this.#timer !== undefined) this.#o.timers.clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#resolveIdle();
    }
    return taken;
  }

  #schedule(): void {
    if (this.#flushing !== undefined) return;
    if (this.#pending.length >= this.#o.maxBatch) {
      this.#flushNow();
    } else if (this.#gap !== undefined) {
      // The gap timer sends what gathered once the window since the last flush's start has passed.
    } else if (this.#timer === undefined) {
      this.#timer = this.#o.timers.setTimeout(() => {
        this.#timer = undefined;
        this.#flushNow();
      }, this.#o.windowMs);
    }
  }

  /** Resolves once nothing is pending and no flush runs. */
  idle(): Promise<void> {
    if (this.#pending.length === 0 && this.#flushing === undefined) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Flush what is pending now (no waiting for the window) and resolve when idle. */
  drain(): Promise<void> {
    this.#draining = true;
    if (this.#flushing === undefined && this.#pending.length > 0) this.#flushNow();
    return this.idle().finally(() => {
      this.#draining = false;
    });
  }

  #flushNow(): void {
    if (this.#timer !== undefined) {
      this.#o.timers.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#gap !== undefined) this.#o.timers.clearTimeout(this.#gap);
    this.#gap = this.#o.timers.setTimeout(() => {
      this.#gap = undefined;
      // A batch that gathered during a fast flush goes out once the window since that flush's start has passed.
      if (this.#flushing === undefined && this.#pending.length > 0) this.#flushNow();
    }, this.#o.windowMs);
    const batch = this.#pending.splice(0, this.#o.maxBatch);
    this.#flushing = (async () => {
      try {
        await this.#o.flush(batch);
      } catch (error) {
        this.#o.onFlushError?.(error);
      }
    })().then(() => {
      this.#flushing = undefined;
      if (this.#pending.length > 0) {
        if (this.#gap === undefined || this.#draining || this.#pending.length >= this.#o.maxBatch)
          this.#flushNow();
        // else: the gap timer sends it when the window since this flush's start has passed
      } else {
        // Nothing gathered: the next item opens its own window (no timer is left behind when idle).
        if (this.#gap !== undefined) this.#o.timers.clearTimeout(this.#gap);
        this.#gap = undefined;
        this.#resolveIdle();
      }
    });
  }

  #resolveIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}
