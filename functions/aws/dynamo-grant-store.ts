/**
 * The grants table: which source addresses have rules open right now, so a restarted receiver, the revoker and
 * the sweeper know what is open without trusting any one process's memory.
 *
 * Item (partition key `pk` = canonical source address, or `network/length` of a prefix grant, see address.ts):
 *   { pk S, deviceId S, family N (4|6), access S ("tcp/8883,..."), openedAt N (ms), expiresAt N (ms),
 *     securityGroupIds SS (groups holding the address's rules), ttl N (epoch s: expiresAt + 1 day, GC only) }
 * `put` only ever moves expiresAt forward (conditional write), so an extension is never undone by a late write
 * of the shorter grant; it is an UpdateItem that sets these fields and keeps every other attribute: the item also
 * carries the receivers' connect claims (dynamo-connect-claims.ts, `w:<deviceId>` / `r:<deviceId>`), which may be
 * written before the grant itself. An item without `expiresAt` (claims only) is no grant: `get` answers undefined
 * for it and the scans skip it. `delete` can be conditional on the item having expired by `now` so a revoker never deletes
 * a grant that was extended meanwhile. Reads are eventually consistent except `get` (strongly consistent).
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  paginateScan,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import type { Grant } from '../core/interfaces.ts';
import { grantRange, parseTarget } from './address.ts';
import { formatAccessList, parseAccessList } from './device-record.ts';
import { awsErrorCode, GrantRecordError } from './errors.ts';

export interface ActiveGrant extends Grant {
  /** The broker security groups holding this address's rules. */
  readonly securityGroupIds: readonly string[];
}

export type GrantDeleteResult = 'deleted' | 'absent' | 'kept';

export interface GrantStore {
  /** Record an opened or extended grant (keeps the later expiry if one is already stored). */
  put(grant: ActiveGrant): Promise<void>;
  get(address: string): Promise<ActiveGrant | undefined>;
  /**
   * Forget the address's grant. With `ifExpiredBy`, only if its stored expiry is <= that instant (ms).
   * 'deleted' / 'absent': the item is gone; 'kept': it was extended past `ifExpiredBy`.
   */
  delete(address: string, options?: { readonly ifExpiredBy?: number }): Promise<GrantDeleteResult>;
  /** Grants whose expiry is after `now` (ms): what a restarted receiver must re-arm. */
  listActive(now: number): Promise<readonly ActiveGrant[]>;
  /** Grants whose expiry is at or before `now` (ms): what the sweeper cleans. */
  listExpired(now: number): Promise<readonly ActiveGrant[]>;
}

export const GRANT_ITEM_GC_SECONDS = 86_400;

type Item = Record<string, AttributeValue>;

export function grantToItem(grant: ActiveGrant): Item {
  const host = grantRange(grant.address, grant.prefixLength);
  return {
    pk: { S: host.target },
    deviceId: { S: grant.deviceId },
    family: { N: String(host.family) },
    access: { S: formatAccessList(grant.access) },
    openedAt: { N: String(grant.openedAt) },
    expiresAt: { N: String(grant.expiresAt) },
    ...(grant.securityGroupIds.length === 0
      ? {}
      : { securityGroupIds: { SS: [...new Set(grant.securityGroupIds)] } }),
    ttl: { N: String(Math.ceil(grant.expiresAt / 1000) + GRANT_ITEM_GC_SECONDS) },
  };
}

export function itemToGrant(item: Item): ActiveGrant {
  const pk = item.pk?.S;
  const family = Number(item.family?.N);
  const access = parseAccessList(item.access?.S ?? '');
  const openedAt = Number(item.openedAt?.N);
  const expiresAt = Number(item.expiresAt?.N);
  const deviceId = item.deviceId?.S;
  if (
    pk === undefined ||
    deviceId === undefined ||
    (family !== 4 && family !== 6) ||
    access === undefined ||
    !Number.isSafeInteger(openedAt) ||
    !Number.isSafeInteger(expiresAt)
  ) {
    throw new GrantRecordError(
      `grants-table item ${JSON.stringify(pk ?? '(no pk)')} is malformed: it must be written by DynamoGrantStore.put ` +
        '(pk, deviceId, family, access, openedAt, expiresAt); delete it and let the sweeper reconcile',
    );
  }
  const range = parseTarget(pk);
  return {
    deviceId,
    address: range.address,
    ...(range.prefixLength === undefined ? {} : { prefixLength: range.prefixLength }),
    family,
    access,
    openedAt,
    expiresAt,
    securityGroupIds: item.securityGroupIds?.SS ?? [],
  };
}

export class DynamoGrantStore implements GrantStore {
  readonly #dynamodb: DynamoDBClient;
  readonly #tableName: string;

  constructor(options: { dynamodb: DynamoDBClient; tableName: string }) {
    this.#dynamodb = options.dynamodb;
    this.#tableName = options.tableName;
  }

  async put(grant: ActiveGrant): Promise<void> {
    const { pk, ...fields } = grantToItem(grant);
    const names: Record<string, string> = {};
    const values: Item = {};
    const sets: string[] = [];
    for (const [index, [name, value]] of Object.entries(fields).entries()) {
      names[`#f${index}`] = name;
      values[`:f${index}`] = value;
      sets.push(`#f${index} = :f${index}`);
    }
    const keepsGroups = 'securityGroupIds' in fields;
    if (!keepsGroups) names['#groups'] = 'securityGroupIds';
    names['#expiresAt'] = 'expiresAt';
    values[':e'] = { N: String(grant.expiresAt) };
    try {
      await this.#dynamodb.send(
        new UpdateItemCommand({
          TableName: this.#tableName,
          Key: { pk: pk as AttributeValue },
          UpdateExpression: `SET ${sets.join(', ')}${keepsGroups ? '' : ' REMOVE #groups'}`,
          ConditionExpression: 'attribute_not_exists(#expiresAt) OR #expiresAt <= :e',
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: values,
        }),
      );
    } catch (error) {
      // A later expiry is already stored: that one stands.
      if (awsErrorCode(error) !== 'ConditionalCheckFailedException') throw error;
    }
  }

  async get(address: string): Promise<ActiveGrant | undefined> {
    const result = await this.#dynamodb.send(
      new GetItemCommand({
        TableName: this.#tableName,
        Key: { pk: { S: parseTarget(address).target } },
        ConsistentRead: true,
      }),
    );
    return result.Item?.expiresAt === undefined ? undefined : itemToGrant(result.Item);
  }

  async delete(address: string, options?: { readonly ifExpiredBy?: number }): Promise<GrantDeleteResult> {
    const conditional = options?.ifExpiredBy !== undefined;
    try {
      const result = await this.#dynamodb.send(
        new DeleteItemCommand({
          TableName: this.#tableName,
          Key: { pk: { S: parseTarget(address).target } },
          ReturnValues: 'ALL_OLD',
          ...(conditional
            ? {
                ConditionExpression: 'attribute_not_exists(pk) OR expiresAt <= :now',
                ExpressionAttributeValues: { ':now': { N: String(options.ifExpiredBy) } },
              }
            : {}),
        }),
      );
      return result.Attributes === undefined ? 'absent' : 'deleted';
    } catch (error) {
      if (conditional && awsErrorCode(error) === 'ConditionalCheckFailedException') return 'kept';
      throw error;
    }
  }

  listActive(now: number): Promise<readonly ActiveGrant[]> {
    return this.#scan('expiresAt > :now', now);
  }

  listExpired(now: number): Promise<readonly ActiveGrant[]> {
    return this.#scan('expiresAt <= :now', now);
  }

  async #scan(filter: string, now: number): Promise<readonly ActiveGrant[]> {
    const grants: ActiveGrant[] = [];
    const pages = paginateScan(
      { client: this.#dynamodb },
      {
        TableName: this.#tableName,
        FilterExpression: filter,
        ExpressionAttributeValues: { ':now': { N: String(now) } },
      },
    );
    for await (const page of pages) for (const item of page.Items ?? []) grants.push(itemToGrant(item));
    return grants;
  }
}
