/**
 * The one virtual clock of the tests and the benches: the product's `Clock` and `Timers`
 * (functions/core/interfaces.ts) on a @sinonjs/fake-timers clock that is never installed globally (real timers,
 * real I/O and `setImmediate` keep working), so grant windows, coalescing windows, leases, retry backoff and the
 * EC2 model's token buckets and latencies run without waiting.
 *
 * Contract:
 * - `now()` only moves when told to. Timers fire in due order (ties in the order they were set, as fake-timers
 *   orders them); during a callback `now()` is its due time. A zero delay set while a timer fires is 1 ms (as in
 *   Node and fake-timers).
 * - `tick(ms)`: fires every timer due within `ms`, synchronously (no promise work runs between them).
 * - `advance(ms)`: fires the due timers one at a time, letting promise chains and real I/O callbacks settle
 *   (`settle()`) after each, then once more at the end; `now()` is then `now + ms`.
 * - `run(until, { inFlight, quantumMs })` (the fleet simulation): before each step waits until `inFlight()` is 0
 *   and the event loop is quiet, then fires every timer due within `quantumMs` of the next one together;
 *   returns when nothing is due before `until`, `now()` then `until`.
 * - `set(now)` moves the clock with no timer pending (throws otherwise); `jump(ms)` moves it forward without
 *   firing anything (a stalled process): pending timers keep their remaining delay.
 */
import { type NodeClock, type NodeTimer, withGlobal } from '@sinonjs/fake-timers';
import type { Clock, Timers } from '../../functions/core/interfaces.ts';

const fakeTimers = withGlobal(globalThis);

/** Lets pending promise chains run to completion (several macrotask turns). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

export class VirtualTime implements Clock, Timers {
  readonly #clock: NodeClock;
  /** When the last timer set through `setTimeout` fired. */
  #firedAt: number;

  constructor(startMs: number) {
    // In Node, fake-timers hands out timer objects (like Node's own): a NodeClock.
    this.#clock = fakeTimers.createClock(startMs) as NodeClock;
    this.#firedAt = startMs;
  }

  now(): number {
    return this.#clock.now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    return this.#clock.setTimeout(() => {
      this.#firedAt = this.#clock.now;
      fn();
    }, ms);
  }

  clearTimeout(handle: unknown): void {
    this.#clock.clearTimeout(handle as NodeTimer);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, ms));
  }

  /** Timers set and not yet fired or cleared. */
  get pendingTimers(): number {
    return this.#clock.countTimers();
  }

  /** Sets the clock without firing anything; only while no timer is pending. */
  set(now: number): void {
    if (this.pendingTimers > 0) throw new Error('VirtualTime.set with pending timers: use advance()');
    this.#clock.setSystemTime(now);
  }

  /** Moves the clock `ms` forward without firing any timer (a stalled process, a clock jump). */
  jump(ms: number): void {
    this.#clock.setSystemTime(this.#clock.now + ms);
  }

  /** Moves the clock `ms` forward, firing due timers (in time order) synchronously as it passes them. */
  tick(ms: number): void {
    this.#clock.tick(ms);
  }

  /** Moves the clock forward by `ms`, firing due timers in order and letting their async work settle. */
  async advance(ms: number): Promise<void> {
    const target = this.#clock.now + ms;
    // Rounds until one fires nothing but its marker: a timer set during a round for exactly `target` runs too.
    for (let fired = -1; fired !== 0; ) {
      fired = 0;
      await this.#fireUntil(target, async () => {
        fired++;
        await settle();
      });
    }
    await settle();
  }

  async run(until: number, options: { inFlight: () => number; quantumMs: number }): Promise<void> {
    await this.#fireUntil(until, () => undefined, {
      before: () => this.#quiet(options.inFlight),
      quantumMs: options.quantumMs,
    });
  }

  /**
   * Fires timers in order until a marker timer set for `target` fires, awaiting `step.before` before and `after`
   * after each step; a step is the next timer plus, with `step.quantumMs`, every timer due within that much of it.
   */
  async #fireUntil(
    target: number,
    after: () => Promise<void> | undefined,
    step: { before?: () => Promise<void>; quantumMs?: number } = {},
  ): Promise<void> {
    let reached = false;
    const marker = this.#clock.setTimeout(
      () => {
        reached = true;
      },
      Math.max(0, target - this.#clock.now),
    );
    try {
      for (;;) {
        await step.before?.();
        this.#clock.next();
        if (!reached && step.quantumMs !== undefined) {
          const from = this.#clock.now;
          this.#clock.tick(Math.min(step.quantumMs, target - from));
          // tick() ends at the end of the quantum; the step ends at the last timer it fired (none is due between).
          if (!reached) this.#clock.now = Math.max(from, this.#firedAt);
        }
        if (reached) return;
        await after();
      }
    } finally {
      if (!reached) this.#clock.clearTimeout(marker);
    }
  }

  async #quiet(inFlight: () => number): Promise<void> {
    let quiet = 0;
    while (quiet < 2) {
      await turn();
      quiet = inFlight() === 0 ? quiet + 1 : 0;
    }
  }
}
