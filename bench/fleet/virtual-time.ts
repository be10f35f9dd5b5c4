/**
 * Virtual time for the fleet simulation: a Clock and Timers (functions/core/interfaces.ts) whose "now" only moves
 * when `run` advances it, so grant windows, coalescing windows, retry backoff and the EC2 model's token buckets
 * and latencies play out over minutes of simulated time in seconds of real time.
 *
 * Contract:
 *   - Timers fire in due order (ties in the order they were set); `now()` during a callback is its due time,
 *     never earlier than any instant already observed.
 *   - Real I/O (DynamoDB requests to moto) takes no virtual time: before each step `run` waits until the
 *     `inFlight()` count given to it is 0 and the microtask queue has drained, then fires every timer due within
 *     the next `quantumMs` together (so work that is due at nearly the same moment overlaps its I/O).
 *   - `run(until)` returns when nothing is due before `until`; `now()` is then `until`.
 */
import type { Clock, Timers } from '../../functions/core/interfaces.ts';

interface Entry {
  readonly at: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/** A binary min-heap on (at, seq). */
class TimerHeap {
  readonly #items: Entry[] = [];

  get size(): number {
    return this.#items.length;
  }

  peek(): Entry | undefined {
    return this.#items[0];
  }

  push(entry: Entry): void {
    const items = this.#items;
    items.push(entry);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!less(items[i]!, items[parent]!)) break;
      [items[i], items[parent]] = [items[parent]!, items[i]!];
      i = parent;
    }
  }

  pop(): Entry | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < items.length && less(items[l]!, items[m]!)) m = l;
        if (r < items.length && less(items[r]!, items[m]!)) m = r;
        if (m === i) break;
        [items[i], items[m]] = [items[m]!, items[i]!];
        i = m;
      }
    }
    return top;
  }
}

function less(a: Entry, b: Entry): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

export class VirtualTime implements Clock, Timers {
  #now: number;
  #seq = 0;
  readonly #heap = new TimerHeap();

  constructor(startMs: number) {
    this.#now = startMs;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const entry: Entry = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#heap.push(entry);
    return entry;
  }

  clearTimeout(handle: unknown): void {
    if (handle !== null && typeof handle === 'object' && 'cancelled' in handle) {
      (handle as Entry).cancelled = true;
    }
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, ms));
  }

  /** Timers still set (including cancelled ones not yet reached). */
  get pending(): number {
    return this.#heap.size;
  }

  async run(until: number, options: { inFlight: () => number; quantumMs: number }): Promise<void> {
    for (;;) {
      await this.#settle(options.inFlight);
      let next = this.#heap.peek();
      while (next?.cancelled) {
        this.#heap.pop();
        next = this.#heap.peek();
      }
      if (next === undefined || next.at > until) break;
      const horizon = Math.max(this.#now, next.at) + options.quantumMs;
      while (next !== undefined && next.at <= horizon && next.at <= until) {
        this.#heap.pop();
        if (!next.cancelled) {
          this.#now = Math.max(this.#now, next.at);
          next.fn();
        }
        next = this.#heap.peek();
      }
    }
    this.#now = Math.max(this.#now, until);
  }

  async #settle(inFlight: () => number): Promise<void> {
    let quiet = 0;
    while (quiet < 2) {
      await tick();
      quiet = inFlight() === 0 ? quiet + 1 : 0;
    }
  }
}
