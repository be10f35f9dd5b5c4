/**
 * `coalescedSync(once)`: a sync that never runs twice at once and never misses a request. The broker's dynamic
 * security follows a device list that can change while a sync is running (functions/local/broker-dynsec.ts,
 * functions/aws/broker-sync.ts).
 *
 * Contract:
 * - The returned function runs `once` when no run is in flight. A call made while one is in flight returns that
 *   run's promise and makes it run `once` one more time when it ends, so every call is followed by a `once` that
 *   started after it; any number of calls during one run add a single extra `once`.
 * - The promise resolves with the last `once`'s result. `once` must not reject (it reports its own failures).
 */
export function coalescedSync(once: () => Promise<boolean>): () => Promise<boolean> {
  let running: Promise<boolean> | undefined;
  let again = false;
  return () => {
    if (running !== undefined) {
      again = true;
      return running;
    }
    const run = (async () => {
      let result = await once();
      while (again) {
        again = false;
        result = await once();
      }
      return result;
    })();
    running = run;
    void run.finally(() => {
      if (running === run) running = undefined;
    });
    return run;
  };
}
