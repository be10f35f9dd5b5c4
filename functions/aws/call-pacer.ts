/**
 * Client-side pacing of EC2 calls, one AIMD token bucket per action (docs/scaling.md, "Staying inside the EC2 API
 * budget"). EC2 throttles per account and Region with one request bucket per action (Authorize and Revoke: 50
 * burst, 5/s refill); several receivers share it without talking to each other, so each paces its own calls and
 * adapts to the throttling it meets, the way TCP senders share a link: halve the rate on a throttled answer, raise
 * it slowly while calls succeed. They converge on a fair share of the budget instead of retrying into it.
 *
 * Contract of `AimdPacer` (pure: the time is passed in, nothing is scheduled):
 * - A token bucket of at most `burst` tokens, refilled at `rate` calls per second, minRate <= rate <= maxRate;
 *   it starts full, at `initialRate`.
 * - `reserve(now)` books one call and returns the wait (ms, >= 0) before it may be sent: 0 while a token is left,
 *   otherwise the bookings queue 1/rate apart after the previous one (FIFO). A booking made stays made.
 * - `throttled(now)` (the call was answered RequestLimitExceeded / Throttling...): the rate is multiplied by
 *   `decrease` (not below minRate) and the saved burst is dropped; at most once per `holdMs`, since the calls
 *   already in flight when the first throttle came back were sent at the old rate (one congestion event, one
 *   decrease).
 * - `succeeded(now)`: the rate rises by `increasePerSecond` calls/s for each second since the last rise, not
 *   counting the `holdMs` after a decrease, up to maxRate.
 * - The constructor throws a RangeError naming the option to fix; nothing else throws.
 *
 * `Ec2Pacing` applies one pacer per EC2 action around a call (waits with the injected `sleep`, reads the injected
 * clock). Any answer other than throttling counts as a success: EC2 accepted the request into its budget.
 */
import type { Clock } from '../core/interfaces.ts';

export interface AimdPacerOptions {
  /** Calls per second at the start. */
  readonly initialRate: number;
  /** Calls per second at most (the account's refill rate for the action: one receiver may use all of it). */
  readonly maxRate: number;
  /** Calls per second at least, however often throttled. */
  readonly minRate: number;
  /** Tokens saved up at most (calls sent at once after a quiet spell). */
  readonly burst: number;
  /** Factor applied to the rate on a throttled answer, in (0, 1). */
  readonly decrease: number;
  /** Rate added per second of successful calls. */
  readonly increasePerSecond: number;
  /** After a decrease: no further decrease and no increase for this long, ms. */
  readonly holdMs: number;
}

/** Authorize and Revoke: EC2's "resource-intensive" buckets, 50 burst and 5/s refill each. */
const RESOURCE_INTENSIVE: AimdPacerOptions = Object.freeze({
  initialRate: 5,
  maxRate: 5,
  minRate: 0.2,
  burst: 10,
  decrease: 0.5,
  increasePerSecond: 0.25,
  holdMs: 1000,
});

/** The pacing of each action blackcloud's firewall calls (EC2's buckets: docs/operations-aws.md). */
export const EC2_PACING: Readonly<Record<string, AimdPacerOptions>> = Object.freeze({
  AuthorizeSecurityGroupIngress: RESOURCE_INTENSIVE,
  RevokeSecurityGroupIngress: RESOURCE_INTENSIVE,
  // Other mutating actions: 200 burst, 5/s.
  UpdateSecurityGroupRuleDescriptionsIngress: Object.freeze({ ...RESOURCE_INTENSIVE, burst: 20 }),
  // Non-mutating: 100 burst, 20/s.
  DescribeSecurityGroups: Object.freeze({ ...RESOURCE_INTENSIVE, initialRate: 20, maxRate: 20, burst: 20 }),
});

function check(options: AimdPacerOptions): void {
  const problems: string[] = [];
  const positive = (name: keyof AimdPacerOptions) => {
    const v = options[name];
    if (!Number.isFinite(v) || v <= 0) problems.push(`${name} must be a positive number, got ${String(v)}`);
  };
  for (const name of ['initialRate', 'maxRate', 'minRate', 'burst', 'increasePerSecond'] as const)
    positive(name);
  if (!(options.minRate <= options.initialRate && options.initialRate <= options.maxRate))
    problems.push(
      `initialRate must lie in [minRate, maxRate], got ${options.initialRate} in [${options.minRate}, ${options.maxRate}]`,
    );
  if (!(options.decrease > 0 && options.decrease < 1))
    problems.push(`decrease must lie in (0, 1), got ${options.decrease}`);
  if (!Number.isFinite(options.holdMs) || options.holdMs < 0)
    problems.push(`holdMs must be 0 or more, got ${options.holdMs}`);
  if (options.burst < 1) problems.push(`burst must be at least 1, got ${options.burst}`);
  if (problems.length > 0) throw new RangeError(`AimdPacer: ${problems.join('; ')}`);
}

export class AimdPacer {
  readonly #o: AimdPacerOptions;
  #rate: number;
  #tokens: number;
  #refilledAt: number | undefined;
  #raisedAt: number | undefined;
  #decreasedAt = Number.NEGATIVE_INFINITY;

  constructor(options: AimdPacerOptions) {
    check(options);
    this.#o = options;
    this.#rate = options.initialRate;
    this.#tokens = options.burst;
  }

  /** Calls per second now. */
  get rate(): number {
    return this.#rate;
  }

  reserve(now: number): number {
    this.#refill(now);
    this.#tokens -= 1;
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens * 1000) / this.#rate);
  }

  throttled(now: number): void {
    if (now - this.#decreasedAt < this.#o.holdMs) return;
    this.#refill(now);
    this.#rate = Math.max(this.#o.minRate, this.#rate * this.#o.decrease);
    this.#tokens = Math.min(this.#tokens, 0);
    this.#decreasedAt = now;
    this.#raisedAt = now;
  }

  succeeded(now: number): void {
    const from = Math.max(this.#raisedAt ?? now, this.#decreasedAt + this.#o.holdMs);
    if (now > from) {
      this.#refill(now);
      this.#rate = Math.min(this.#o.maxRate, this.#rate + (this.#o.increasePerSecond * (now - from)) / 1000);
    }
    if (now >= this.#decreasedAt + this.#o.holdMs) this.#raisedAt = now;
  }

  #refill(now: number): void {
    if (this.#refilledAt !== undefined && now > this.#refilledAt) {
      this.#tokens = Math.min(this.#o.burst, this.#tokens + ((now - this.#refilledAt) * this.#rate) / 1000);
    }
    if (this.#refilledAt === undefined || now > this.#refilledAt) this.#refilledAt = now;
  }
}

export interface Ec2PacingOptions {
  readonly clock: Clock;
  readonly sleep: (ms: number) => Promise<void>;
  /** Tells throttling apart from every other answer (retry.ts `isThrottling`). */
  readonly isThrottling: (error: unknown) => boolean;
  /** Pacing per action. @default EC2_PACING */
  readonly actions?: Readonly<Record<string, AimdPacerOptions>>;
  /** Told of every decrease (the rate after it): feeds a metric. */
  readonly onThrottled?: (action: string, rate: number) => void;
}

export class Ec2Pacing {
  readonly #o: Ec2PacingOptions;
  readonly #pacers = new Map<string, AimdPacer>();

  constructor(options: Ec2PacingOptions) {
    this.#o = options;
    for (const [action, spec] of Object.entries(options.actions ?? EC2_PACING))
      this.#pacers.set(action, new AimdPacer(spec));
  }

  /** The pacer of an action (undefined: the action is not paced). */
  pacer(action: string): AimdPacer | undefined {
    return this.#pacers.get(action);
  }

  /** Waits for the action's turn, sends, and adapts the action's rate to the answer. */
  async send<T>(action: string, call: () => Promise<T>): Promise<T> {
    const pacer = this.#pacers.get(action);
    if (pacer === undefined) return call();
    const wait = pacer.reserve(this.#o.clock.now());
    if (wait > 0) await this.#o.sleep(wait);
    try {
      const result = await call();
      pacer.succeeded(this.#o.clock.now());
      return result;
    } catch (error) {
      if (this.#o.isThrottling(error)) {
        const before = pacer.rate;
        pacer.throttled(this.#o.clock.now());
        if (pacer.rate < before) this.#o.onThrottled?.(action, pacer.rate);
      } else {
        pacer.succeeded(this.#o.clock.now());
      }
      throw error;
    }
  }
}
