/**
 * The receiver's `Timers` port on Node's global timers, looked up at each call, so a test that calls
 * `vi.useFakeTimers()` drives it too. Unlike `systemTimers` the handles are not unref'ed.
 */
import type { Timers } from '../../functions/core/interfaces.ts';

export const globalTimers: Timers = Object.freeze({
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as ReturnType<typeof setTimeout>),
});
