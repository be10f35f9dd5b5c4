/**
 * A retry policy for tests: `maxAttempts` attempts with no real waiting (sleep resolves at once, jitter 0), so
 * throttling paths run fast and deterministically. The backoff itself is tested in the retry module's own tests.
 */
import type { RetryPolicy } from '../../functions/aws/retry.ts';

export function immediateRetry(maxAttempts: number): RetryPolicy {
  return {
    maxAttempts,
    baseDelayMs: 1,
    maxDelayMs: 1,
    sleep: async () => undefined,
    random: () => 0,
  };
}
