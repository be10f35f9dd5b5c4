/**
 * The real clock, timers and randomness, for wiring the receiver in a process. Pure modules never import this:
 * they take `Clock`, `Timers` and `RandomSource` as parameters; only entry points (main, CLI) pass these in.
 */
import { randomBytes } from 'node:crypto';
import type { Clock, RandomSource, Timers } from './interfaces.ts';

export const systemClock: Clock = Object.freeze({ now: () => Date.now() });

/** Node timers, unref'ed: a pending grant expiry alone does not keep the process alive. */
export const systemTimers: Timers = Object.freeze({
  setTimeout(fn: () => void, ms: number): unknown {
    const handle = setTimeout(fn, ms);
    handle.unref();
    return handle;
  },
  clearTimeout(handle: unknown): void {
    clearTimeout(handle as ReturnType<typeof setTimeout>);
  },
});

export const systemRandom: RandomSource = Object.freeze({
  randomBytes: (length: number): Uint8Array => new Uint8Array(randomBytes(length)),
});
