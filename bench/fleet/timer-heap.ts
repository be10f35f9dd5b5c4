/**
 * Many timers on one: a `Timers` (functions/core/interfaces.ts) that keeps its timers in a binary heap and holds
 * a single timer of the underlying `Timers` (the virtual clock) for the earliest of them. The fleet simulation's
 * clock (@sinonjs/fake-timers under test/support/virtual-time.ts) scans every pending timer to find the next one,
 * so 100,000 devices' attempt timeouts and backoffs there cost a scan of thousands per fired timer; here each
 * costs O(log n).
 *
 * Contract: `setTimeout(fn, ms)` fires `fn` once, at now + max(1, ms) (a zero delay is 1 ms, as in Node), unless
 * cleared first; due timers fire in due order, ties in the order they were set, each with the clock at its due
 * time (the underlying timer fires at exactly the earliest due instant). `clearTimeout` of a fired, cleared or
 * foreign handle does nothing. `pending` counts timers set and not yet fired or cleared.
 * Self-healing: if the underlying timer is overdue when a timer is set (at the 100,000-device storm it was seen
 * never to fire: the virtual clock stepped past it, test/support/virtual-time.ts `run`), it is armed again, and a
 * firing fires everything due by the clock's time, not only by the instant it was armed for.
 */
import type { Clock, Timers } from '../../functions/core/interfaces.ts';

class Entry {
  readonly owner: TimerHeap;
  readonly due: number;
  readonly order: number;
  readonly fn: () => void;
  /** Fired or cleared. */
  cleared = false;
  constructor(owner: TimerHeap, due: number, order: number, fn: () => void) {
    this.owner = owner;
    this.due = due;
    this.order = order;
    this.fn = fn;
  }
}

const before = (a: Entry, b: Entry) => a.due < b.due || (a.due === b.due && a.order < b.order);

export class TimerHeap implements Timers {
  readonly #clock: Clock;
  readonly #timers: Timers;
  readonly #heap: Entry[] = [];
  #order = 0;
  #pending = 0;
  /** The underlying timer, and the instant it is set for. */
  #armed: { handle: unknown; at: number } | undefined;

  constructor(clock: Clock, timers: Timers) {
    this.#clock = clock;
    this.#timers = timers;
  }

  get pending(): number {
    return this.#pending;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const entry = new Entry(this, this.#clock.now() + Math.max(1, ms), this.#order++, fn);
    this.#push(entry);
    this.#pending++;
    this.#arm();
    return entry;
  }

  clearTimeout(handle: unknown): void {
    if (!(handle instanceof Entry) || handle.owner !== this || handle.cleared) return;
    handle.cleared = true;
    this.#pending--;
  }

  /** Keeps the underlying timer on the earliest live entry's due instant. */
  #arm(): void {
    while (this.#heap[0]?.cleared === true) this.#pop();
    const head = this.#heap[0];
    const now = this.#clock.now();
    // An underlying timer already overdue has been lost (the virtual clock stepped past it): arm again.
    const lost = this.#armed !== undefined && this.#armed.at < now;
    if (head === undefined || (!lost && this.#armed !== undefined && this.#armed.at <= head.due)) return;
    if (this.#armed !== undefined) this.#timers.clearTimeout(this.#armed.handle);
    const at = head.due;
    this.#armed = {
      at,
      handle: this.#timers.setTimeout(() => this.#fire(at), at - this.#clock.now()),
    };
  }

  #fire(armedAt: number): void {
    this.#armed = undefined;
    const at = Math.max(armedAt, this.#clock.now());
    for (let head = this.#heap[0]; head !== undefined && head.due <= at; head = this.#heap[0]) {
      this.#pop();
      if (head.cleared) continue;
      head.cleared = true;
      this.#pending--;
      head.fn();
    }
    this.#arm();
  }

  #push(entry: Entry): void {
    const heap = this.#heap;
    heap.push(entry);
    for (let i = heap.length - 1; i > 0; ) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    heap[0] = last;
    for (let i = 0; ; ) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && before(heap[left]!, heap[smallest]!)) smallest = left;
      if (right < heap.length && before(heap[right]!, heap[smallest]!)) smallest = right;
      if (smallest === i) break;
      [heap[i], heap[smallest]] = [heap[smallest]!, heap[i]!];
      i = smallest;
    }
  }
}
