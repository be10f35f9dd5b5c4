/**
 * ExpiryScheduler on SQS: the durable backstop behind the receiver's own timer. `schedule(grant)` sends one
 * message to the revoke queue carrying the grant (grant-message.ts), delayed by the grant's remaining lifetime,
 * capped at SQS's 900 s: DelaySeconds = clamp(ceil((expiresAt - now) / 1000), 0, 900). The revoker Lambda
 * consumes it; a grant longer than 900 s is closed by the receiver's timer or, failing that, the sweeper.
 * An extension schedules a new message; the revoker skips messages whose grant was extended past now.
 */
import { SendMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { SQS_MAX_DELAY_SECONDS } from '../core/deployment.ts';
import type { Clock, ExpiryScheduler, Grant } from '../core/interfaces.ts';
import { encodeGrantMessage } from './grant-message.ts';

/** The message delay for a grant at `now` (pure). */
export function revokeDelaySeconds(grant: Grant, now: number): number {
  const seconds = Math.ceil((grant.expiresAt - now) / 1000);
  return Math.min(SQS_MAX_DELAY_SECONDS, Math.max(0, seconds));
}

export class SqsExpiryScheduler implements ExpiryScheduler {
  readonly #sqs: SQSClient;
  readonly #queueUrl: string;
  readonly #clock: Clock;

  constructor(options: { sqs: SQSClient; queueUrl: string; clock: Clock }) {
    this.#sqs = options.sqs;
    this.#queueUrl = options.queueUrl;
    this.#clock = options.clock;
  }

  async schedule(grant: Grant): Promise<void> {
    await this.#sqs.send(
      new SendMessageCommand({
        QueueUrl: this.#queueUrl,
        DelaySeconds: revokeDelaySeconds(grant, this.#clock.now()),
        MessageBody: encodeGrantMessage(grant),
      }),
    );
  }
}
