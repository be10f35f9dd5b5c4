/**
 * Cutting devices off in the running local black cloud: close their broker sessions and revoke their grants,
 * whichever path notices first (the devices-file reload after an edit, or a `cut-off` request on the control
 * socket from `blackcloud devices disable|remove`), and report the whole effect to whoever asks.
 *
 * Contract:
 * - `cutOff(ids)` disconnects each id at the broker and revokes every grant of those ids; what it did is kept
 *   per device id (only non-empty results) until `take` hands it out, so a reload that acted first does not
 *   make the operator's command report "0 revoked".
 * - `take(ids)` waits for cut-offs in flight, then returns and forgets the results for these ids.
 * - Never throws: a failing revoke is audited by the grant manager and the grant stays under its timer.
 */
import type { Grant } from '../core/interfaces.ts';

export interface CutOffDeps {
  readonly grants: { revokeWhere(match: (grant: Grant) => boolean): Promise<Grant[]> };
  /** Closes the identity's broker sessions; returns how many. */
  readonly disconnect: (deviceId: string) => number;
}

export interface CutOffReport {
  readonly revoked: readonly Grant[];
  readonly disconnected: number;
}

export class CutOffTracker {
  readonly #deps: CutOffDeps;
  readonly #done = new Map<string, { revoked: Grant[]; disconnected: number }>();
  readonly #inFlight = new Set<Promise<void>>();

  constructor(deps: CutOffDeps) {
    this.#deps = deps;
  }

  cutOff(ids: Iterable<string>): Promise<void> {
    const set = new Set(ids);
    const run = this.#run(set);
    this.#inFlight.add(run);
    void run.finally(() => this.#inFlight.delete(run));
    return run;
  }

  async take(ids: Iterable<string>): Promise<CutOffReport> {
    await Promise.all([...this.#inFlight]);
    const revoked: Grant[] = [];
    let disconnected = 0;
    for (const id of ids) {
      const entry = this.#done.get(id);
      if (entry === undefined) continue;
      this.#done.delete(id);
      revoked.push(...entry.revoked);
      disconnected += entry.disconnected;
    }
    return { revoked, disconnected };
  }

  async #run(ids: ReadonlySet<string>): Promise<void> {
    for (const id of ids) {
      let closed = 0;
      try {
        closed = this.#deps.disconnect(id);
      } catch {
        // a broker problem must not stop the revokes
      }
      if (closed > 0) this.#entry(id).disconnected += closed;
    }
    let revoked: Grant[] = [];
    try {
      revoked = await this.#deps.grants.revokeWhere((grant) => ids.has(grant.deviceId));
    } catch {
      // revokeWhere audits its own failures
    }
    for (const grant of revoked) this.#entry(grant.deviceId).revoked.push(grant);
  }

  #entry(id: string): { revoked: Grant[]; disconnected: number } {
    let entry = this.#done.get(id);
    if (entry === undefined) {
      entry = { revoked: [], disconnected: 0 };
      this.#done.set(id, entry);
    }
    return entry;
  }
}
