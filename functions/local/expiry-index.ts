/**
 * Keys with an expiry, indexed so that expiring them never scans the table: a map key → expiry plus a binary
 * min-heap of (expiry, key) (the gate's grant table, functions/local/gate-firewall.ts).
 *
 * Contract:
 * - `set(key, expiresAt)` replaces the key's expiry; `extend(key, expiresAt)` sets it only when the key is absent
 *   or expires earlier (a shorter grant never cuts a longer one short) and says whether it did; `delete(key)`
 *   forgets it; `get(key)` reads it. Each costs O(log n) heap steps at most (a replaced or deleted expiry leaves a stale heap node, skipped when it surfaces).
 * - `expire(now)` removes and returns the keys whose expiry is at or before `now`, in expiry order: O(k log n)
 *   for k expired keys (plus the stale nodes it meets), never O(n).
 * - The heap holds at most twice the live keys plus 64 nodes: beyond that it is rebuilt from the map (O(n), at
 *   most once per n operations, so amortised O(1)).
 * - `steps` counts heap node moves and visits since construction: the work done, for tests and benches.
 * Pure, synchronous, in-process.
 */

interface Node<K> {
  readonly expiresAt: number;
  readonly key: K;
}

export class ExpiryIndex<K> {
  readonly #expiries = new Map<K, number>();
  #heap: Node<K>[] = [];
  #steps = 0;

  get size(): number {
    return this.#expiries.size;
  }

  /** Heap nodes moved or visited so far (work done, independent of the machine's speed). */
  get steps(): number {
    return this.#steps;
  }

  get(key: K): number | undefined {
    return this.#expiries.get(key);
  }

  set(key: K, expiresAt: number): void {
    if (this.#expiries.get(key) === expiresAt) return;
    this.#expiries.set(key, expiresAt);
    this.#push({ expiresAt, key });
    this.#maybeRebuild();
  }

  /** Sets the expiry when the key has none or an earlier one; true when it changed. */
  extend(key: K, expiresAt: number): boolean {
    const current = this.#expiries.get(key);
    if (current !== undefined && current >= expiresAt) return false;
    this.set(key, expiresAt);
    return true;
  }

  delete(key: K): boolean {
    const deleted = this.#expiries.delete(key);
    if (deleted) this.#maybeRebuild();
    return deleted;
  }

  /** Removes and returns every key whose expiry is ≤ `now`. */
  expire(now: number): K[] {
    const expired: K[] = [];
    for (;;) {
      const top = this.#heap[0];
      if (top === undefined || top.expiresAt > now) break;
      this.#pop();
      // A stale node: the key was deleted or given another expiry since this node was pushed.
      if (this.#expiries.get(top.key) !== top.expiresAt) continue;
      this.#expiries.delete(top.key);
      expired.push(top.key);
    }
    return expired;
  }

  #maybeRebuild(): void {
    if (this.#heap.length <= 2 * this.#expiries.size + 64) return;
    this.#heap = [];
    for (const [key, expiresAt] of this.#expiries) this.#push({ expiresAt, key });
  }

  #push(node: Node<K>): void {
    const heap = this.#heap;
    let i = heap.length;
    heap.push(node);
    this.#steps += 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const above = heap[parent]!;
      if (above.expiresAt <= node.expiresAt) break;
      heap[i] = above;
      heap[parent] = node;
      i = parent;
      this.#steps += 1;
    }
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    this.#steps += 1;
    if (heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      const right = left + 1;
      let smallest = i;
      if (left < heap.length && heap[left]!.expiresAt < heap[smallest]!.expiresAt) smallest = left;
      if (right < heap.length && heap[right]!.expiresAt < heap[smallest]!.expiresAt) smallest = right;
      if (smallest === i) return;
      heap[i] = heap[smallest]!;
      heap[smallest] = last;
      i = smallest;
      this.#steps += 1;
    }
  }
}
