/**
 * The simulated fleet's knock pattern, pure and seeded (same seed, same schedule): what each device sends and
 * when, in virtual milliseconds from the start. Three sources of traffic:
 *   - steady reconnects: every device reconnects as a Poisson process (mean `reconnectHours`) during the whole run;
 *   - a regional outage: at `outageAtSeconds` a fraction of the fleet loses its connection; each of those devices
 *     knocks again `outageSeconds` later plus a uniform jitter of up to `stormSpreadSeconds` (the reconnect storm);
 *   - a slow drip of attacks: a captured knock re-sent every `replayEverySeconds` (a replay), and `junkPerSecond`
 *     random datagrams from random addresses.
 * Devices get addresses in 100.64.0.0/10 (one each, or, behind carrier NAT, any address of one of a few /24 pools:
 * `carrierAddress`), key ids 1..N, and keys drawn from the seeded generator.
 */

export interface FleetParams {
  readonly devices: number;
  readonly seed: number;
  readonly reconnectHours: number;
  readonly outageAtSeconds: number;
  readonly outageFraction: number;
  readonly outageSeconds: number;
  readonly stormSpreadSeconds: number;
  readonly endSeconds: number;
  readonly replayEverySeconds: number;
  readonly junkPerSecond: number;
}

export type FleetEvent =
  | { readonly kind: 'knock'; readonly at: number; readonly device: number; readonly storm: boolean }
  | { readonly kind: 'replay'; readonly at: number }
  | { readonly kind: 'junk'; readonly at: number };

/** mulberry32: a small, fast, seeded generator (not for secrets: the simulation's randomness only). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Device `i`'s source address (100.64.0.0/10 holds 4 million). */
export function deviceAddress(i: number): string {
  return `100.${64 + ((i >> 16) & 63)}.${(i >> 8) & 255}.${i & 255}`;
}

/**
 * A carrier-NAT fleet (prefix grants): device `i` sits behind carrier pool `i % prefixes`, a /24 in 100.64.0.0/10
 * (at most 16,384 pools); each flow leaves from an address of the pool that `random` draws (hosts 1 to 254), so the
 * knock and the session may come from different addresses of one /24.
 */
export function carrierAddress(i: number, prefixes: number, random: () => number): string {
  if (!Number.isInteger(prefixes) || prefixes < 1 || prefixes > 16_384)
    throw new RangeError(
      `fleet-sim: --prefixes must be a whole number from 1 to 16384, got ${String(prefixes)}`,
    );
  const pool = i % prefixes;
  return `100.${64 + (pool >> 8)}.${pool & 255}.${1 + Math.floor(random() * 254)}`;
}

export function fleetSchedule(params: FleetParams): FleetEvent[] {
  const random = seededRandom(params.seed);
  const endMs = params.endSeconds * 1000;
  const events: FleetEvent[] = [];
  const meanMs = params.reconnectHours * 3_600_000;
  for (let device = 0; device < params.devices; device++) {
    // Poisson arrivals: exponential gaps from a uniformly random phase.
    for (let at = -Math.log(1 - random()) * meanMs; at < endMs; at += -Math.log(1 - random()) * meanMs) {
      events.push({ kind: 'knock', at: Math.floor(at), device, storm: false });
    }
  }
  const outageAt = params.outageAtSeconds * 1000;
  const back = outageAt + params.outageSeconds * 1000;
  for (let device = 0; device < params.devices; device++) {
    if (random() >= params.outageFraction) continue;
    const at = back + Math.floor(random() * params.stormSpreadSeconds * 1000);
    if (at < endMs) events.push({ kind: 'knock', at, device, storm: true });
  }
  for (let at = params.replayEverySeconds * 1000; at < endMs; at += params.replayEverySeconds * 1000) {
    events.push({ kind: 'replay', at });
  }
  if (params.junkPerSecond > 0) {
    const gap = 1000 / params.junkPerSecond;
    for (let at = gap; at < endMs; at += gap) events.push({ kind: 'junk', at: Math.floor(at) });
  }
  events.sort((a, b) => a.at - b.at);
  return events;
}
