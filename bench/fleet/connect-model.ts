/**
 * When a simulated device has its MQTT session after its rule is in place (docs/scaling.md, "The fleet
 * simulation"): TCP handshake + TLS 1.3 with client certificate + MQTT CONNECT/CONNACK, drawn uniformly from
 * [minMs, maxMs] (default 300 ms to 1 s: two to four round trips of 80 to 250 ms). The knock to rule part is not
 * in it: the simulation measures that through the real receiver.
 *
 * Contract: `connectDelayMs(random, range)` returns a whole number of ms in [minMs, maxMs] for `random()` in [0, 1);
 * a range with minMs > maxMs, or a negative or non-integer bound, throws a RangeError naming the flags to fix.
 * Pure (the caller passes its seeded random).
 */

export interface ConnectRange {
  readonly minMs: number;
  readonly maxMs: number;
}

export const DEFAULT_CONNECT_RANGE: ConnectRange = { minMs: 300, maxMs: 1000 };

export function connectDelayMs(random: () => number, range: ConnectRange): number {
  const { minMs, maxMs } = range;
  if (!Number.isInteger(minMs) || !Number.isInteger(maxMs) || minMs < 0 || minMs > maxMs) {
    throw new RangeError(
      `fleet-sim connect delay: received ${String(minMs)} to ${String(maxMs)} ms; expected whole numbers with ` +
        '0 ≤ --connect-min-ms ≤ --connect-max-ms.',
    );
  }
  return minMs + Math.min(maxMs - minMs, Math.floor(random() * (maxMs - minMs + 1)));
}
