/**
 * A modelled service's round trip (bench/support/modelled-ec2.ts, modelled-dynamodb.ts): the answer is computed
 * when the call arrives and delivered `latencyMs` later on the given timers (virtual in the fleet simulation), or
 * on the next microtask when the latency is 0. A thrown answer rejects the promise, as a service's error would.
 */
import type { Timers } from '../../functions/core/interfaces.ts';

/**
 * Node's timers, kept referenced (unlike functions/core/system.ts `systemTimers`): a call waiting for its modelled
 * answer keeps the bench's process alive, as a real request's socket would.
 */
export const modelTimers: Timers = Object.freeze({
  setTimeout: (fn: () => void, ms: number): unknown => setTimeout(fn, ms),
  clearTimeout: (handle: unknown): void => clearTimeout(handle as ReturnType<typeof setTimeout>),
});

export function answerAfter<T>(timers: Timers, latencyMs: number, respond: () => T): Promise<T> {
  if (latencyMs <= 0) return new Promise((resolve) => resolve(respond()));
  return new Promise((resolve, reject) => {
    timers.setTimeout(() => {
      try {
        resolve(respond());
      } catch (error) {
        reject(error);
      }
    }, latencyMs);
  });
}
