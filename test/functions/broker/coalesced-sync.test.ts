/** coalescedSync (functions/broker/coalesced-sync.ts): one run at a time, and every call followed by a run. */
import { describe, expect, it } from 'vitest';
import { coalescedSync } from '../../../functions/broker/coalesced-sync.ts';

/** A `once` whose runs end when the test says; it records how many started and what each saw. */
function gatedOnce(results: boolean[]) {
  const started: number[] = [];
  const finish: Array<() => void> = [];
  let state = 0;
  const once = async (): Promise<boolean> => {
    started.push(state);
    await new Promise<void>((done) => finish.push(done));
    return results[started.length - 1] ?? true;
  };
  return {
    once,
    started,
    setState: (next: number) => {
      state = next;
    },
    finishNext: async () => {
      finish.shift()?.();
      await new Promise((done) => setImmediate(done));
    },
  };
}

describe('coalescedSync', () => {
  it('runs once when idle, and again when called after the run ended', async () => {
    const gate = gatedOnce([true, false]);
    const sync = coalescedSync(gate.once);
    const first = sync();
    await gate.finishNext();
    await expect(first).resolves.toBe(true);
    const second = sync();
    await gate.finishNext();
    await expect(second).resolves.toBe(false);
    expect(gate.started).toHaveLength(2);
  });

  it('folds calls made during a run into one more run that starts after them, and resolves with its result', async () => {
    const gate = gatedOnce([true, false]);
    const sync = coalescedSync(gate.once);
    const first = sync();
    gate.setState(1);
    const second = sync();
    const third = sync();
    expect(second).toBe(first);
    expect(third).toBe(first);
    expect(gate.started).toEqual([0]); // never two at once
    await gate.finishNext();
    expect(gate.started).toEqual([0, 1]); // the extra run sees the change made during the first
    await gate.finishNext();
    await expect(first).resolves.toBe(false);
    expect(gate.started).toHaveLength(2);
  });
});
