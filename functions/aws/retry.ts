/**
 * Retries of AWS calls that failed for a transient reason: throttling (`RequestLimitExceeded` and friends),
 * 5xx and network errors. Exponential backoff with full jitter: before attempt n+1 it sleeps
 * `random() * min(maxDelayMs, baseDelayMs * 2^(n-1))`. Sleep and randomness are injected, so tests run on a
 * virtual clock and assert the exact delays. Any other error is rethrown at once (the caller decides what it means).
 *
 * The EC2 client is created with the SDK's own retries off (clients.ts) so this policy is the only one.
 */
import { awsErrorCode } from './errors.ts';

export interface RetryPolicy {
  /** Total attempts, including the first. */
  readonly maxAttempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  sleep(ms: number): Promise<void>;
  /** Uniform in [0, 1). */
  random(): number;
  /** Called for every failed attempt (retried or not): feeds the ApiErrors metric. */
  onError?(operation: string, code: string): void;
}

const THROTTLING_CODES = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
  'ServiceUnavailable',
  'InternalError',
  'InternalFailure',
  'Unavailable',
]);

/** Codes meaning "slow down" (the service's request budget), a subset of the transient ones: what pacing adapts to. */
const SLOW_DOWN_CODES = new Set([
  'RequestLimitExceeded',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestThrottled',
  'RequestThrottledException',
  'SlowDown',
]);

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'EAI_AGAIN',
  'TimeoutError',
]);

/** True for throttling, server-side and network failures: worth another attempt after a pause. */
export function isTransient(error: unknown): boolean {
  const code = awsErrorCode(error);
  if (THROTTLING_CODES.has(code) || NETWORK_CODES.has(code)) return true;
  if (typeof error === 'object' && error !== null) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (typeof status === 'number' && status >= 500) return true;
  }
  return false;
}

/** True for an answer that says the request budget is spent (call-pacer.ts halves the rate on it). */
export function isThrottling(error: unknown): boolean {
  return SLOW_DOWN_CODES.has(awsErrorCode(error));
}

/** The delay before the attempt following failed attempt `attempt` (1-based), full jitter. */
export function backoffDelay(
  policy: Pick<RetryPolicy, 'baseDelayMs' | 'maxDelayMs'>,
  attempt: number,
  random: number,
) {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.floor(random * ceiling);
}

export async function withRetry<T>(operation: string, fn: () => Promise<T>, policy: RetryPolicy): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (error) {
      policy.onError?.(operation, awsErrorCode(error));
      if (!isTransient(error) || attempt >= policy.maxAttempts) throw error;
      await policy.sleep(backoffDelay(policy, attempt, policy.random()));
    }
  }
}

/** A production policy: 8 attempts, 200 ms base, 20 s cap, real timers and Math.random (jitter is not a secret). */
export function defaultRetryPolicy(onError?: (operation: string, code: string) => void): RetryPolicy {
  return {
    maxAttempts: 8,
    baseDelayMs: 200,
    maxDelayMs: 20_000,
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    random: Math.random,
    ...(onError === undefined ? {} : { onError }),
  };
}
