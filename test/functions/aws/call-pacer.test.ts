/**
 * The client-side AIMD pacing of EC2 calls (functions/aws/call-pacer.ts): the bucket's bookings, the decrease on
 * throttling and the slow increase, and, against the EC2 request bucket itself (the receiver's token bucket with
 * EC2's Authorize numbers, as bench/support/modelled-ec2.ts uses it), that four receivers pacing independently end
 * up inside the shared budget. Pure: time is a number passed in.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AimdPacer,
  type AimdPacerOptions,
  EC2_PACING,
  Ec2Pacing,
} from '../../../functions/aws/call-pacer.ts';
import { isThrottling } from '../../../functions/aws/retry.ts';
import { TokenBucketRateLimiter } from '../../../functions/receiver/rate-limiter.ts';

const AUTHORIZE = 'AuthorizeSecurityGroupIngress';
const SPEC: AimdPacerOptions = {
  initialRate: 4,
  maxRate: 5,
  minRate: 0.5,
  burst: 2,
  decrease: 0.5,
  increasePerSecond: 1,
  holdMs: 1000,
};

function throttle(): Error {
  return Object.assign(new Error('Request limit exceeded.'), { name: 'RequestLimitExceeded' });
}

describe('AimdPacer', () => {
  it('1. sends the burst at once, then books calls 1/rate apart, in order', () => {
    const pacer = new AimdPacer(SPEC);
    expect([0, 0, 0, 0].map(() => pacer.reserve(0))).toEqual([0, 0, 250, 500]);
    // 1 s later the bucket refilled 4 tokens, 2 of them owed: 2 free calls, then 250 ms apart again.
    expect([1, 2, 3].map(() => pacer.reserve(1000))).toEqual([0, 0, 250]);
  });

  it('2. halves the rate on throttling, drops the saved burst, and counts one event per hold period', () => {
    const pacer = new AimdPacer(SPEC);
    pacer.throttled(0);
    expect(pacer.rate).toBe(2);
    pacer.throttled(500); // still the same congestion event
    expect(pacer.rate).toBe(2);
    expect(pacer.reserve(500)).toBe(0); // 0.5 s at 2/s refilled one token
    expect(pacer.reserve(500)).toBe(500);
    pacer.throttled(1000);
    expect(pacer.rate).toBe(1);
    pacer.throttled(2000);
    pacer.throttled(3000);
    expect(pacer.rate).toBe(SPEC.minRate);
  });

  it('3. raises the rate by increasePerSecond per second of successes, not during the hold, up to maxRate', () => {
    const pacer = new AimdPacer(SPEC);
    pacer.throttled(0); // 2/s
    pacer.succeeded(600); // inside the hold: no rise
    expect(pacer.rate).toBe(2);
    pacer.succeeded(1500); // 0.5 s past the hold
    expect(pacer.rate).toBeCloseTo(2.5, 9);
    pacer.succeeded(2500);
    expect(pacer.rate).toBeCloseTo(3.5, 9);
    pacer.succeeded(60_000);
    expect(pacer.rate).toBe(SPEC.maxRate);
  });

  it('4. refuses options that cannot pace, naming them', () => {
    expect(() => new AimdPacer({ ...SPEC, decrease: 1 })).toThrow(/decrease must lie in \(0, 1\)/);
    expect(() => new AimdPacer({ ...SPEC, initialRate: 9 })).toThrow(
      /initialRate must lie in \[minRate, maxRate\]/,
    );
    expect(() => new AimdPacer({ ...SPEC, burst: 0 })).toThrow(/burst must be a positive number/);
    expect(() => new AimdPacer({ ...SPEC, holdMs: -1 })).toThrow(/holdMs must be 0 or more/);
    for (const spec of Object.values(EC2_PACING)) expect(() => new AimdPacer(spec)).not.toThrow();
  });

  it('5. a booking is never earlier than the one before it, whatever the answers (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3000 }), fc.constantFrom('reserve', 'ok', 'throttled')), {
          maxLength: 200,
        }),
        (steps) => {
          const pacer = new AimdPacer(SPEC);
          let now = 0;
          let lastSendAt = Number.NEGATIVE_INFINITY;
          for (const [gap, what] of steps) {
            now += gap;
            if (what === 'reserve') {
              const sendAt = now + pacer.reserve(now);
              expect(sendAt).toBeGreaterThanOrEqual(lastSendAt - 1); // ceil to whole ms
              lastSendAt = Math.max(lastSendAt, sendAt);
            } else if (what === 'ok') pacer.succeeded(now);
            else pacer.throttled(now);
            expect(pacer.rate).toBeGreaterThanOrEqual(SPEC.minRate);
            expect(pacer.rate).toBeLessThanOrEqual(SPEC.maxRate);
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('Ec2Pacing', () => {
  it('6. waits its turn with the injected sleep, halves on throttling, rethrows, and leaves other actions alone', async () => {
    let now = 0;
    const slept: number[] = [];
    const decreases: [string, number][] = [];
    const pacing = new Ec2Pacing({
      clock: { now: () => now },
      sleep: async (ms) => {
        slept.push(ms);
        now += ms;
      },
      isThrottling,
      actions: { [AUTHORIZE]: SPEC },
      onThrottled: (action, rate) => decreases.push([action, rate]),
    });
    const ok = () => Promise.resolve('ok');
    expect(await pacing.send(AUTHORIZE, ok)).toBe('ok');
    expect(await pacing.send(AUTHORIZE, ok)).toBe('ok');
    expect(await pacing.send(AUTHORIZE, ok)).toBe('ok');
    expect(slept).toEqual([250]);
    const rateBefore = pacing.pacer(AUTHORIZE)!.rate;
    await expect(pacing.send(AUTHORIZE, () => Promise.reject(throttle()))).rejects.toThrow('Request limit');
    expect(decreases).toEqual([[AUTHORIZE, rateBefore / 2]]);
    // Not throttling (e.g. a duplicate rule): EC2 took the call into its budget; the rate is kept.
    const duplicate = Object.assign(new Error('dup'), { name: 'InvalidPermission.Duplicate' });
    await expect(pacing.send(AUTHORIZE, () => Promise.reject(duplicate))).rejects.toBe(duplicate);
    expect(pacing.pacer(AUTHORIZE)?.rate).toBe(rateBefore / 2);
    const before = slept.length;
    for (let i = 0; i < 20; i++) await pacing.send('DescribeSecurityGroups', ok);
    expect(slept.length).toBe(before);
    expect(pacing.pacer('DescribeSecurityGroups')).toBeUndefined();
  });

  it("7. four receivers pacing on their own stay inside EC2's shared Authorize budget (50 burst, 5/s)", async () => {
    // Virtual time: a queue of timers; each receiver always has work (a storm) and sends one call at a time.
    let now = 0;
    const bucket = new TokenBucketRateLimiter({
      clock: { now: () => now },
      burst: 50,
      ratePerSecond: 5,
      maxSources: 1,
    });
    const timers: { at: number; fn: () => void }[] = [];
    const sleep = (ms: number) =>
      new Promise<void>((resolve) => {
        timers.push({ at: now + ms, fn: resolve });
      });
    const answers = { ok: 0, throttled: 0 };
    const okAfter60s = { count: 0 };
    const receivers = Array.from(
      { length: 4 },
      () => new Ec2Pacing({ clock: { now: () => now }, sleep, isThrottling }),
    );
    const endMs = 300_000;
    const loops = receivers.map(async (pacing) => {
      while (now < endMs) {
        try {
          await pacing.send(AUTHORIZE, async () => {
            await sleep(100); // the call's round trip
            if (!bucket.take('account')) throw throttle();
          });
          answers.ok++;
          if (now >= 60_000) okAfter60s.count++;
        } catch {
          answers.throttled++;
          await sleep(200); // the retry policy's first backoff
        }
      }
    });
    while (now < endMs) {
      await new Promise((resolve) => setImmediate(resolve));
      timers.sort((a, b) => a.at - b.at);
      const next = timers.shift();
      if (next === undefined) break;
      now = Math.max(now, next.at);
      next.fn();
    }
    // Let every receiver see the end: answer what is still waiting until all loops returned.
    now = endMs + 1;
    let finished = false;
    void Promise.all(loops).then(() => {
      finished = true;
    });
    while (!finished) {
      for (const t of timers.splice(0)) t.fn();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const rate = okAfter60s.count / ((endMs - 60_000) / 1000);
    // The budget is 5/s (plus the 50 saved at the start): the four together use most of it, and are throttled
    // on a small share of their calls (AIMD finds the limit by touching it).
    expect(rate).toBeGreaterThan(3.5);
    expect(rate).toBeLessThanOrEqual(5 + 50 / 240);
    expect(answers.throttled / (answers.ok + answers.throttled)).toBeLessThan(0.2);
    for (const pacing of receivers) expect(pacing.pacer(AUTHORIZE)!.rate).toBeLessThan(5);
  });
});
