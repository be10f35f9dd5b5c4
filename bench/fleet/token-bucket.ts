/**
 * EC2's API throttling as documented ("Request throttling for the Amazon EC2 API"): one token bucket per API
 * action, per account and Region; each request takes a token; an empty bucket answers RequestLimitExceeded;
 * tokens come back at a fixed rate per second up to the bucket size. Pure: time comes from the Clock.
 */
import type { Clock } from '../../functions/core/interfaces.ts';

export interface BucketSpec {
  /** Bucket size (burst). */
  readonly capacity: number;
  /** Tokens added per second. */
  readonly refillPerSecond: number;
}

/** The documented buckets of the actions blackcloud calls. */
export const EC2_BUCKETS: Readonly<Record<string, BucketSpec>> = Object.freeze({
  // "Resource-intensive" actions (the 50 burst, 5/s refill).
  AuthorizeSecurityGroupIngress: { capacity: 50, refillPerSecond: 5 },
  RevokeSecurityGroupIngress: { capacity: 50, refillPerSecond: 5 },
  // Other mutating actions.
  UpdateSecurityGroupRuleDescriptionsIngress: { capacity: 200, refillPerSecond: 5 },
  // Non-mutating (filtered by group id).
  DescribeSecurityGroups: { capacity: 100, refillPerSecond: 20 },
  DescribeSecurityGroupRules: { capacity: 100, refillPerSecond: 20 },
});

export class TokenBucket {
  readonly #spec: BucketSpec;
  readonly #clock: Clock;
  #tokens: number;
  #at: number;

  constructor(spec: BucketSpec, clock: Clock) {
    this.#spec = spec;
    this.#clock = clock;
    this.#tokens = spec.capacity;
    this.#at = clock.now();
  }

  /** Takes one token if there is one. */
  take(): boolean {
    const now = this.#clock.now();
    this.#tokens = Math.min(
      this.#spec.capacity,
      this.#tokens + ((now - this.#at) / 1000) * this.#spec.refillPerSecond,
    );
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
