/**
 * Connect claims shared in the grants table, so closed on connect works with several receivers behind the load
 * balancer (docs/scaling.md, "The signal on AWS"): device X knocks through receiver A, device Y from the same
 * address (or prefix) through receiver B, and the rule closes only when both have their sessions, whichever
 * receiver hears of which session. The `ConnectClaimStore` contract is in functions/core/interfaces.ts.
 *
 * Layout, on the grant target's item (pk = target; the grant item of dynamo-grant-store.ts, which may not exist
 * yet when a queued knock records its claim):
 *   `w:<deviceId>` N  the device waits to connect until then (ms): a live claim while now < until;
 *   `r:<deviceId>` N  the device's claim was released then (ms): the broker reported its session. It lets a
 *                     receiver told of the same session after another receiver released it still close its own
 *                     grants (`revoke: true, claimed: false`). A device has at most one of the two.
 *   `ttl` N           set when absent (until + 1 day): DynamoDB's TTL collects a claims-only item.
 * A claims-only item carries no `expiresAt`, so the grant store's `get` and scans ignore it; deleting the grant
 * item (its rule was revoked) drops its claims with it. Each device's claims on an item: one attribute, so
 * an item holds as many waiting devices as DynamoDB's 400 KB allow (thousands behind one NAT or prefix).
 *
 * Writes (atomic UpdateItems; each claim is its own attribute, so concurrent knocks and releases never conflict):
 *   knock    SET w = :until, ttl = if_not_exists(ttl, :ttl) REMOVE r   IF attribute_not_exists(w) OR w < :until
 *   release  REMOVE w SET r = :now   IF w > :now   (ALL_NEW: the live claims left). Only one release of a live
 *            claim can pass the condition: that receiver gets `claimed`. Any other (the condition failed) reads
 *            the item (strongly consistent): `revoke` when `r:<deviceId>` is there and no live claim is left, or
 *            when there is no item at all (the grants table is the single record of what is open: a rule revoked
 *            by another receiver deleted its item, markers included, so the caller's grants there are stale).
 * Reads (`waiting`) are strongly consistent GetItems. `forget` does nothing: the claims belong to
 * every receiver and go with the grant item.
 */
import {
  type AttributeValue,
  type DynamoDBClient,
  GetItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import type { ConnectClaimRelease, ConnectClaimStore } from '../core/interfaces.ts';
import { parseTarget } from './address.ts';
import { GRANT_ITEM_GC_SECONDS } from './dynamo-grant-store.ts';
import { awsErrorCode } from './errors.ts';

type Item = Record<string, AttributeValue>;

/** Attribute of a device's live claim on a target item. */
export const WAITING_PREFIX = 'w:';
/** Attribute of a device's released claim on a target item. */
export const RELEASED_PREFIX = 'r:';

/** The devices with a live claim (`w:<deviceId>` > now) on an item. */
export function liveClaims(item: Item | undefined, now: number): string[] {
  const devices: string[] = [];
  for (const [name, value] of Object.entries(item ?? {})) {
    if (name.startsWith(WAITING_PREFIX) && Number(value.N) > now)
      devices.push(name.slice(WAITING_PREFIX.length));
  }
  return devices;
}

function gcSeconds(untilMs: number): string {
  return String(Math.ceil(untilMs / 1000) + GRANT_ITEM_GC_SECONDS);
}

export class DynamoConnectClaims implements ConnectClaimStore {
  readonly #dynamodb: DynamoDBClient;
  readonly #tableName: string;

  constructor(options: { dynamodb: DynamoDBClient; tableName: string }) {
    this.#dynamodb = options.dynamodb;
    this.#tableName = options.tableName;
  }

  async knock(deviceId: string, target: string, until: number): Promise<void> {
    try {
      await this.#dynamodb.send(
        new UpdateItemCommand({
          TableName: this.#tableName,
          Key: { pk: { S: parseTarget(target).target } },
          UpdateExpression: 'SET #w = :until, #ttl = if_not_exists(#ttl, :ttl) REMOVE #r',
          ConditionExpression: 'attribute_not_exists(#w) OR #w < :until',
          ExpressionAttributeNames: {
            '#w': WAITING_PREFIX + deviceId,
            '#r': RELEASED_PREFIX + deviceId,
            '#ttl': 'ttl',
          },
          ExpressionAttributeValues: { ':until': { N: String(until) }, ':ttl': { N: gcSeconds(until) } },
        }),
      );
    } catch (error) {
      // A later window of the device is already recorded: that one stands.
      if (awsErrorCode(error) !== 'ConditionalCheckFailedException') throw error;
    }
  }

  async release(deviceId: string, target: string, now: number): Promise<ConnectClaimRelease> {
    const key = parseTarget(target).target;
    try {
      const result = await this.#dynamodb.send(
        new UpdateItemCommand({
          TableName: this.#tableName,
          Key: { pk: { S: key } },
          UpdateExpression: 'REMOVE #w SET #r = :now',
          ConditionExpression: '#w > :now',
          ExpressionAttributeNames: { '#w': WAITING_PREFIX + deviceId, '#r': RELEASED_PREFIX + deviceId },
          ExpressionAttributeValues: { ':now': { N: String(now) } },
          ReturnValues: 'ALL_NEW',
        }),
      );
      const waiting = liveClaims(result.Attributes, now);
      return { revoke: waiting.length === 0, claimed: true, waiting };
    } catch (error) {
      if (awsErrorCode(error) !== 'ConditionalCheckFailedException') throw error;
    }
    // No live claim of the device here: released by another receiver told of the same session, or never there.
    const item = await this.#get(key);
    // No item at all: the rule was revoked and its grants item deleted (with the markers): whatever the caller
    // still holds there is already closed at the firewall.
    if (item === undefined) return { revoke: true, claimed: false, waiting: [] };
    const waiting = liveClaims(item, now);
    const releasedElsewhere = item[RELEASED_PREFIX + deviceId] !== undefined;
    return { revoke: releasedElsewhere && waiting.length === 0, claimed: false, waiting };
  }

  async waiting(target: string, now: number): Promise<readonly string[]> {
    return liveClaims(await this.#get(parseTarget(target).target), now);
  }

  forget(_target: string): void {
    // Shared: the claims stay for the other receivers' grants and go with the grant item.
  }

  async #get(key: string): Promise<Item | undefined> {
    const result = await this.#dynamodb.send(
      new GetItemCommand({ TableName: this.#tableName, Key: { pk: { S: key } }, ConsistentRead: true }),
    );
    return result.Item;
  }
}
