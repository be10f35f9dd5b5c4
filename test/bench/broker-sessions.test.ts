/**
 * The broker-sessions bench (bench/broker/session-bench.ts) at a tiny size against the real Mosquitto 2.0.11 with
 * dynamic security and mutual TLS, so the bench cannot rot: 20 sessions from 3 loopback addresses in two client
 * processes, every one held and seen by the broker, telemetry acknowledged and delivered, a burst and a
 * reconnect storm that bring every session back; and its arithmetic (session-figures.ts). No speed is asserted.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { runSessionBench } from '../../bench/broker/session-bench.ts';
import {
  cpuPercentPer1000,
  degradation,
  latency,
  slope,
  stormDegradation,
} from '../../bench/broker/session-figures.ts';
import { removeDir, tempDir } from '../functions/local/helpers.ts';

let dir: string | undefined;
afterEach(async () => {
  await removeDir(dir);
  dir = undefined;
});

describe('broker-sessions bench, tiny run on the real Mosquitto', () => {
  it('1. holds every one of 20 sessions from 3 source addresses, then survives a burst and a reconnect storm', async () => {
    dir = await tempDir('bc-broker-sessions');
    const report = await runSessionBench({
      sessions: 20,
      step: 10,
      keepaliveSeconds: 60,
      telemetryPerMinute: 120,
      workers: 2,
      sessionsPerAddress: 7,
      steadyMs: 1500,
      connectConcurrency: 4,
      stormConcurrency: 20,
      connackP99Ms: 20_000,
      probeConnects: 3,
      connectTimeoutMs: 15_000,
      cacheDir: dir,
    });
    expect(report.mosquittoVersion).toBe('2.0.11');
    expect(report.certificatesIssued).toBe(21);
    expect(report.steps.map((step) => step.target)).toEqual([10, 20]);
    for (const step of report.steps) {
      expect(step.degraded).toBeUndefined();
      expect(step.held).toBe(step.target);
      expect(step.brokerSessions).toBe(step.target);
      expect(step.connectErrors).toEqual({});
      expect(step.lost).toBe(0);
      expect(step.telemetryPublished).toBeGreaterThan(0);
      expect(step.telemetryAcked).toBe(step.telemetryPublished);
      expect(step.ramp.count).toBe(10);
      expect(step.probe.count).toBe(3);
      expect(step.probe.p50).toBeLessThanOrEqual(step.probe.p99);
      expect(step.rssBytes).toBeGreaterThan(1024 * 1024);
      expect(step.mosquittoCpuPercent).toBeGreaterThanOrEqual(0);
    }
    // Devices 0-6 from the first address, 7-13 from the second, 14-19 from the third.
    expect(report.steps.map((step) => step.sourceAddresses)).toEqual([2, 3]);
    expect(report.limits.sourceAddresses).toBe(3);
    expect(report.maxHeld).toBe(20);
    expect(report.degradedAt).toBeUndefined();
    expect(Number.isFinite(report.memoryPerSessionBytes)).toBe(true);
    expect(report.memoryPerSessionBytes).toBeLessThan(1024 * 1024);
    expect(report.limits.mosquittoOpenFiles).toEqual({ soft: 1044, hard: 1044 });
    expect(report.burst).toMatchObject({ messages: 20, failed: 0 });
    expect(report.burst!.delivered).toBeGreaterThanOrEqual(20);
    expect(report.storm).toMatchObject({ sessions: 20, held: 20, errors: {}, degraded: undefined });
    expect(report.storm!.latency.count).toBe(20);
    expect(report.storm!.connectsPerSecond).toBeGreaterThan(0);
    expect(report.storm!.mosquittoCpuMsPerConnect).toBeGreaterThanOrEqual(0);
    expect(report.storm!.listenOverflows).toBeGreaterThanOrEqual(0);
    expect(report.steps.every((step) => step.rampListenOverflows >= 0)).toBe(true);
    expect(report.telemetryDelivered).toBeGreaterThanOrEqual(
      report.steps.reduce((sum, step) => sum + step.telemetryAcked, 0),
    );
    expect(report.loadBefore).toMatch(/^\d+\.\d+ \d+\.\d+ \d+\.\d+ /);
  }, 60_000);
});

describe('the arithmetic', () => {
  it('2. slope is the least-squares bytes per session; NaN without two distinct points', () => {
    expect(
      slope([
        { x: 0, y: 100 },
        { x: 10, y: 300 },
        { x: 20, y: 500 },
      ]),
    ).toBe(20);
    expect(
      slope([
        { x: 0, y: 0 },
        { x: 10, y: 10 },
        { x: 20, y: 5 },
      ]),
    ).toBeCloseTo(0.25);
    expect(slope([{ x: 5, y: 1 }])).toBeNaN();
    expect(
      slope([
        { x: 5, y: 1 },
        { x: 5, y: 2 },
      ]),
    ).toBeNaN();
  });

  it('3. percentiles, CPU per 1,000 sessions', () => {
    const values = Array.from({ length: 100 }, (_, i) => 100 - i);
    expect(latency(values)).toEqual({ count: 100, p50: 50, p99: 99, max: 100 });
    // 0.5 CPU s over 10 s = 5 % of a core for 5,000 sessions = 1 % per 1,000.
    expect(cpuPercentPer1000(0.5, 10, 5000)).toBeCloseTo(1);
    expect(cpuPercentPer1000(1, 10, 0)).toBeNaN();
  });

  it('4. a step is degraded by the first failed condition, in order', () => {
    const clean = {
      target: 100,
      held: 100,
      brokerSessions: 100,
      connectErrors: 0,
      lost: 0,
      unacked: 0,
      probeP99Ms: 10,
    };
    expect(degradation(clean, 50)).toBeUndefined();
    expect(degradation({ ...clean, connectErrors: 2, held: 98 }, 50)).toBe('2 connect errors');
    expect(degradation({ ...clean, held: 99 }, 50)).toBe('99 of 100 sessions held');
    expect(degradation({ ...clean, brokerSessions: 90 }, 50)).toBe('the broker holds 90 of 100');
    expect(degradation({ ...clean, lost: 1 }, 50)).toBe('1 sessions lost');
    expect(degradation({ ...clean, unacked: 3 }, 50)).toBe('3 QoS 1 messages without PUBACK');
    expect(degradation({ ...clean, probeP99Ms: 75.4 }, 50)).toBe('CONNACK p99 75 ms > 50 ms');
  });

  it('5. a storm is degraded by connect errors, sessions not back, or its CONNACK p99', () => {
    const storm = { sessions: 10, held: 10, errors: 0, p99Ms: 900 };
    expect(stormDegradation(storm, 1000)).toBeUndefined();
    expect(stormDegradation({ ...storm, errors: 2, held: 8 }, 1000)).toBe('2 connect errors');
    expect(stormDegradation({ ...storm, held: 9 }, 1000)).toBe('9 of 10 sessions back');
    expect(stormDegradation({ ...storm, p99Ms: 25_233 }, 1000)).toBe('CONNACK p99 25233 ms > 1000 ms');
  });
});
