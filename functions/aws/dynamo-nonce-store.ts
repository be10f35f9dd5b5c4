/**
 * NonceStore on DynamoDB. `record` is one conditional PutItem on the nonce table:
 *   item `{ pk: <replay id>, ttl: <epoch seconds> }`, ConditionExpression `attribute_not_exists(pk)`.
 * The write succeeding means the replay id was fresh; `ConditionalCheckFailedException` means it was already there
 * ('replay'). Any other failure (unreachable, throttled after the SDK's retries, missing table, access denied)
 * rejects with NonceStoreUnavailableError: the receiver then fails closed and opens nothing.
 *
 * `ttl` is DynamoDB TTL's attribute, for garbage collection only: TTL deletes "typically within two days" and an
 * expired item still matches the condition, which is the safe direction (a late replay is still refused; the
 * packet is stale by then anyway). Several receivers sharing the table catch a replay sent to two of them once.
 * Table schema: partition key `pk` (S), TTL attribute `ttl`.
 */
import { type DynamoDBClient, PutItemCommand } from '@aws-sdk/client-dynamodb';
import type { NonceRecordResult, NonceStore } from '../core/interfaces.ts';
import { awsErrorCode, NonceStoreUnavailableError } from './errors.ts';

export class DynamoNonceStore implements NonceStore {
  readonly #dynamodb: DynamoDBClient;
  readonly #tableName: string;

  constructor(options: { dynamodb: DynamoDBClient; tableName: string }) {
    this.#dynamodb = options.dynamodb;
    this.#tableName = options.tableName;
  }

  async record(replayId: string, expiresAt: number): Promise<NonceRecordResult> {
    try {
      await this.#dynamodb.send(
        new PutItemCommand({
          TableName: this.#tableName,
          Item: { pk: { S: replayId }, ttl: { N: String(Math.ceil(expiresAt / 1000)) } },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
      return 'fresh';
    } catch (error) {
      if (awsErrorCode(error) === 'ConditionalCheckFailedException') return 'replay';
      throw new NonceStoreUnavailableError(
        `nonce table ${JSON.stringify(this.#tableName)} did not answer (${awsErrorCode(error)}): failing closed. ` +
          'Check that the table exists, the receiver role may dynamodb:PutItem on it, and DynamoDB is reachable',
        { cause: error },
      );
    }
  }
}
