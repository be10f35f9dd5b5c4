/**
 * Drives many simultaneous (or spread) grants through the real AWS firewall adapter (SecurityGroupFirewall:
 * coalescer, planner, retry with backoff) against the modelled EC2 (modelled-ec2.ts), and reports what it cost:
 * API calls per API, throttled calls, largest call, largest backlog (grants asked for and not yet open) and
 * largest slot-queue depth (GrantQueueDepth), time until the last grant is open, and errors.
 * Shared by bench/grant-coalescing.ts and bench/grant-storm.ts. Real time: the buckets refill on the wall clock
 * and throttled calls really back off (production retry policy), so the times are what a receiver would see.
 */
import type { Metrics } from '../../functions/aws/metrics.ts';
import { defaultRetryPolicy } from '../../functions/aws/retry.ts';
import { SecurityGroupFirewall } from '../../functions/aws/security-group-firewall.ts';
import type { Grant } from '../../functions/core/interfaces.ts';
import { systemClock, systemTimers } from '../../functions/core/system.ts';
import { ModelledEc2 } from './modelled-ec2.ts';

export interface GrantLoadOptions {
  readonly devices: number;
  /** Arrivals spread evenly over this many ms (0 = all at once). */
  readonly spreadMs: number;
  readonly groups: number;
  readonly rulesPerGroup: number;
  /** Modelled EC2 round trip, ms. */
  readonly latencyMs: number;
  /** Give up waiting for grants this long after the last arrival, ms. */
  readonly deadlineMs: number;
  /** Grant lifetime, seconds. @default 30 */
  readonly grantSeconds?: number;
}

export interface GrantLoadResult {
  readonly devices: number;
  readonly opened: number;
  readonly failed: number;
  /** Still waiting for a slot when the deadline passed (rejected by close, counted apart from errors). */
  readonly pendingAtDeadline: number;
  readonly calls: Record<string, number>;
  readonly totalCalls: number;
  readonly throttled: number;
  readonly quotaErrors: number;
  readonly largestCall: number;
  readonly largestBacklog: number;
  readonly largestSlotQueue: number;
  /** From the first arrival until the last grant was open, ms. */
  readonly lastOpenMs: number;
  readonly errorKinds: Record<string, number>;
}

const GROUP_PREFIX = 'sg-0bench';

/** 10.x.y.z for device i (distinct /32s, never a real address: the model only stores them). */
export function deviceAddress(i: number): string {
  return `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`;
}

export async function runGrantLoad(options: GrantLoadOptions): Promise<GrantLoadResult> {
  const groupIds = Array.from(
    { length: options.groups },
    (_, i) => `${GROUP_PREFIX}${String(i).padStart(9, '0')}`,
  );
  const model = new ModelledEc2({
    groupIds,
    rulesPerGroup: options.rulesPerGroup,
    clock: systemClock,
    latencyMs: options.latencyMs,
  });
  let largestSlotQueue = 0;
  const metrics: Metrics = {
    put: (name, value) => {
      if (name === 'GrantQueueDepth') largestSlotQueue = Math.max(largestSlotQueue, value);
    },
  };
  const firewall = new SecurityGroupFirewall({
    ec2: model.client,
    securityGroupIds: groupIds,
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: systemClock,
    timers: systemTimers,
    retry: defaultRetryPolicy(),
    metrics,
    rulesPerGroup: options.rulesPerGroup,
    maxQueuedRules: options.devices,
  });
  const grantMs = (options.grantSeconds ?? 30) * 1000;
  let opened = 0;
  let failed = 0;
  let backlog = 0;
  let largestBacklog = 0;
  let lastOpenAt = 0;
  const errorKinds: Record<string, number> = {};
  const start = performance.now();
  const settled: Promise<void>[] = [];
  const knock = (i: number): void => {
    const now = systemClock.now();
    const grant: Grant = {
      deviceId: `device-${i}`,
      address: deviceAddress(i),
      family: 4,
      access: [{ protocol: 'tcp', port: 8883 }],
      openedAt: now,
      expiresAt: now + grantMs,
    };
    backlog++;
    largestBacklog = Math.max(largestBacklog, backlog);
    settled.push(
      firewall.allow([grant]).then(
        () => {
          opened++;
          backlog--;
          lastOpenAt = performance.now();
        },
        (error: unknown) => {
          failed++;
          backlog--;
          const name = error instanceof Error ? error.name : 'UnknownError';
          errorKinds[name] = (errorKinds[name] ?? 0) + 1;
        },
      ),
    );
  };

  if (options.spreadMs <= 0) {
    for (let i = 0; i < options.devices; i++) knock(i);
  } else {
    // Arrivals paced on the wall clock: every tick releases the knocks that are due by now.
    let next = 0;
    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const due = Math.min(
          options.devices,
          Math.floor(((performance.now() - start) / options.spreadMs) * options.devices) + 1,
        );
        while (next < due) knock(next++);
        if (next >= options.devices) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
  }
  const all = Promise.all(settled);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<'deadline'>((resolve) => {
    timer = setTimeout(() => resolve('deadline'), options.spreadMs + options.deadlineMs);
  });
  await Promise.race([all, deadline]);
  clearTimeout(timer);
  const pendingAtDeadline = backlog;
  const failedBeforeClose = failed;
  await firewall.close();
  await all;
  model.restore();
  return {
    devices: options.devices,
    opened,
    failed: failedBeforeClose,
    pendingAtDeadline,
    calls: { ...model.stats.calls },
    totalCalls: model.totalCalls,
    throttled: model.stats.errors.RequestLimitExceeded ?? 0,
    quotaErrors: model.stats.errors.RulesPerSecurityGroupLimitExceeded ?? 0,
    largestCall: model.stats.largestCall,
    largestBacklog,
    largestSlotQueue,
    lastOpenMs: opened > 0 ? lastOpenAt - start : Number.NaN,
    errorKinds,
  };
}

/** "Authorize 100, Describe 10" style summary of calls per API (short names). */
export function callsText(calls: Record<string, number>): string {
  const short = (api: string): string =>
    api
      .replace('SecurityGroupIngress', '')
      .replace('SecurityGroupRuleDescriptionsIngress', '')
      .replace('SecurityGroups', '');
  return Object.entries(calls)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([api, n]) => `${short(api)} ${n}`)
    .join(', ');
}
