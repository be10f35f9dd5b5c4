/**
 * The models' stubs (aws-sdk-client-mock, on sinon) record every command, answer and error, and nothing in a model
 * reads that record: a long simulation would hold gigabytes (the 100,000-device prefix storm of bench/fleet-sim ran
 * out of memory). `forgetStubHistory(stub, calls)` drops the record every HISTORY_CALLS calls of one action, after
 * the call at hand (a microtask: sinon finishes recording it first). The models' own counts and state stay.
 */

/** How many calls of one action a stub's record may hold before it is dropped. */
export const HISTORY_CALLS = 1000;

export function forgetStubHistory(stub: { resetHistory(): unknown }, calls: number): void {
  if (calls % HISTORY_CALLS === 0) queueMicrotask(() => stub.resetHistory());
}
