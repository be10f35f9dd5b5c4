/**
 * What a start-up has opened, to be closed in reverse order (local-cloud.ts): one shutdown path for a failed
 * start, a start interrupted by a signal, and a normal stop.
 *
 * Contract:
 * - `defer(step)` registers a closing step. `close()` runs the steps, last deferred first, each one even when an
 *   earlier one failed, and rejects with the first failure once all ran. Idempotent: later calls return the same
 *   settled outcome.
 * - A step deferred once `close()` has begun (a start that was in flight when the stop came) runs at once: next,
 *   while the close is running, or in a new round after it ended; `close()` then returns that round.
 * - `closing` is true from the first `close()` on.
 */
export type CleanupStep = () => Promise<unknown> | unknown;

export class CleanupStack {
  readonly #steps: CleanupStep[] = [];
  #run: Promise<void> | undefined;
  #draining = false;

  get closing(): boolean {
    return this.#run !== undefined;
  }

  defer(step: CleanupStep): void {
    this.#steps.push(step);
    if (this.#run !== undefined && !this.#draining) this.#run = this.#round();
  }

  close(): Promise<void> {
    this.#run ??= this.#round();
    return this.#run;
  }

  /** A round nobody awaits (a late step) must not become an unhandled rejection: its awaiters still see it. */
  #round(): Promise<void> {
    const round = this.#drain();
    round.catch(() => undefined);
    return round;
  }

  async #drain(): Promise<void> {
    this.#draining = true;
    let first: { error: unknown } | undefined;
    try {
      for (let step = this.#steps.pop(); step !== undefined; step = this.#steps.pop()) {
        try {
          await step();
        } catch (error) {
          first ??= { error };
        }
      }
    } finally {
      this.#draining = false;
    }
    if (first !== undefined) throw first.error;
  }
}
