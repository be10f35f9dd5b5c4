/**
 * The broker-sessions bench's arithmetic, pure: the least-squares slope of Mosquitto's memory over sessions held,
 * latency percentiles, CPU per 1,000 sessions, and the verdict of one step (`degradation`: the first reason the
 * step is not a clean hold, or undefined) and of the reconnect storm (`stormDegradation`: connect errors, sessions
 * not back, or CONNACK p99 over the limit). docs/scaling.md ("The broker tier") derives instance sizes from these.
 */
import { percentile } from '../support/table.ts';

export interface Point {
  readonly x: number;
  readonly y: number;
}

/** Least-squares slope dy/dx; NaN with fewer than two distinct x. */
export function slope(points: readonly Point[]): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((sum, p) => sum + p.x, 0) / n;
  const my = points.reduce((sum, p) => sum + p.y, 0) / n;
  const sxx = points.reduce((sum, p) => sum + (p.x - mx) ** 2, 0);
  if (sxx === 0) return Number.NaN;
  return points.reduce((sum, p) => sum + (p.x - mx) * (p.y - my), 0) / sxx;
}

export interface Latency {
  readonly count: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export function latency(values: readonly number[]): Latency {
  const sorted = [...values].sort((a, b) => a - b);
  return {
    count: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** Percent of one core used per 1,000 sessions, from CPU seconds over wall seconds. */
export function cpuPercentPer1000(cpuSeconds: number, wallSeconds: number, sessions: number): number {
  if (sessions <= 0 || wallSeconds <= 0) return Number.NaN;
  return ((100 * cpuSeconds) / wallSeconds) * (1000 / sessions);
}

export interface StepHealth {
  readonly target: number;
  readonly held: number;
  /** Sockets Mosquitto holds for sessions (its descriptors above the idle baseline). */
  readonly brokerSessions: number;
  readonly connectErrors: number;
  readonly lost: number;
  readonly unacked: number;
  readonly probeP99Ms: number;
}

/** Why the step is degraded (the first reason found), or undefined for a clean hold. */
export function degradation(step: StepHealth, connackP99LimitMs: number): string | undefined {
  if (step.connectErrors > 0) return `${step.connectErrors} connect errors`;
  if (step.held < step.target) return `${step.held} of ${step.target} sessions held`;
  if (step.brokerSessions < step.target) return `the broker holds ${step.brokerSessions} of ${step.target}`;
  if (step.lost > 0) return `${step.lost} sessions lost`;
  if (step.unacked > 0) return `${step.unacked} QoS 1 messages without PUBACK`;
  if (step.probeP99Ms > connackP99LimitMs)
    return `CONNACK p99 ${step.probeP99Ms.toFixed(0)} ms > ${connackP99LimitMs} ms`;
  return undefined;
}

/** Why the reconnect storm is degraded (the first reason found), or undefined when every session came back in time. */
export function stormDegradation(
  storm: {
    readonly sessions: number;
    readonly held: number;
    readonly errors: number;
    readonly p99Ms: number;
  },
  connackP99LimitMs: number,
): string | undefined {
  if (storm.errors > 0) return `${storm.errors} connect errors`;
  if (storm.held < storm.sessions) return `${storm.held} of ${storm.sessions} sessions back`;
  if (storm.p99Ms > connackP99LimitMs)
    return `CONNACK p99 ${storm.p99Ms.toFixed(0)} ms > ${connackP99LimitMs} ms`;
  return undefined;
}
