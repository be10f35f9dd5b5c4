/**
 * Parity of the DynamoDB model (bench/support/modelled-dynamodb.ts) with moto: the same commands, in the same
 * order, against a moto server (test/support/moto.ts) and against the model, must give the same answers: the
 * items and Attributes returned, and which calls failed with which error code (ConditionalCheckFailedException
 * above all). Covers every expression form the model implements, then the product's own stores
 * (DynamoGrantStore, DynamoNonceStore) over both backends. Also: what the model does not implement fails loudly.
 */
import {
  type AttributeValue,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  ScanCommand,
  type ScanCommandOutput,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ModelledDynamoDb } from '../../bench/support/modelled-dynamodb.ts';
import { type ActiveGrant, DynamoGrantStore } from '../../functions/aws/dynamo-grant-store.ts';
import { DynamoNonceStore } from '../../functions/aws/dynamo-nonce-store.ts';
import { awsErrorCode } from '../../functions/aws/errors.ts';
import { createTable, type MotoServer, startMoto } from '../support/moto.ts';

type Item = Record<string, AttributeValue>;
type Command = PutItemCommand | GetItemCommand | DeleteItemCommand | UpdateItemCommand | ScanCommand;

let moto: MotoServer;
let motoDynamo: DynamoDBClient;
let model: ModelledDynamoDb;

beforeAll(async () => {
  moto = await startMoto();
  motoDynamo = moto.clients().dynamodb;
  model = new ModelledDynamoDb();
}, 60_000);

afterAll(async () => {
  motoDynamo?.destroy();
  model?.restore();
  await moto?.stop();
});

/** Sets in a canonical order (DynamoDB does not keep a set's order). */
function canonical(item: Item | undefined): Item | undefined {
  if (item === undefined) return undefined;
  return Object.fromEntries(
    Object.entries(item)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([k, v]) => [
        k,
        v.SS !== undefined ? { SS: [...v.SS].sort() } : v.NS !== undefined ? { NS: [...v.NS].sort() } : v,
      ]),
  );
}

const byKey = (items: Item[]) =>
  items.map((i) => canonical(i)!).sort((a, b) => (a.pk!.S! < b.pk!.S! ? -1 : 1));

/** What a call answered, in a form both backends can be compared in. */
async function answer(client: DynamoDBClient, command: Command): Promise<unknown> {
  try {
    const out = (await client.send(command as never)) as {
      Item?: Item;
      Attributes?: Item;
      Items?: Item[];
      Count?: number;
      ScannedCount?: number;
    };
    if (command instanceof ScanCommand)
      return { Items: byKey(out.Items ?? []), Count: out.Count, ScannedCount: out.ScannedCount };
    if (command instanceof GetItemCommand) return { Item: canonical(out.Item) };
    return { Attributes: canonical(out.Attributes) };
  } catch (error) {
    const item = (error as { Item?: Item }).Item;
    return { error: awsErrorCode(error), ...(item === undefined ? {} : { Item: canonical(item) }) };
  }
}

/** Runs `commands` (built per table name) against both backends, in order; returns both answer lists. */
async function both(table: string, commands: (table: string) => Command[]) {
  await createTable(motoDynamo, table);
  await createTable(model.client, table);
  const fromMoto: unknown[] = [];
  const fromModel: unknown[] = [];
  for (const command of commands(table)) fromMoto.push(await answer(motoDynamo, command));
  for (const command of commands(table)) fromModel.push(await answer(model.client, command));
  return { fromMoto, fromModel };
}

const S = (s: string): AttributeValue => ({ S: s });
const N = (n: number | string): AttributeValue => ({ N: String(n) });
const key = (pk: string) => ({ pk: S(pk) });

describe('ModelledDynamoDb answers as moto does', () => {
  it('1. PutItem, GetItem, DeleteItem with conditions and ReturnValues', async () => {
    const { fromMoto, fromModel } = await both('t1', (TableName) => {
      const put = (Item: Item, extra: object = {}) => new PutItemCommand({ TableName, Item, ...extra });
      const a = { pk: S('a'), n: N(5), s: S('hello'), ss: { SS: ['x', 'y'] }, b: { BOOL: true } };
      return [
        put(a),
        put(a, { ConditionExpression: 'attribute_not_exists(pk)' }),
        put({ pk: S('b'), n: N(9) }, { ConditionExpression: 'attribute_not_exists(pk)' }),
        put(
          { ...a, n: N(6) },
          {
            ConditionExpression: 'n < :v',
            ExpressionAttributeValues: { ':v': N(10) },
            ReturnValues: 'ALL_OLD',
          },
        ),
        put(a, { ConditionExpression: 'n >= :v', ExpressionAttributeValues: { ':v': N(7) } }),
        put(a, { ConditionExpression: 'begins_with(s, :p)', ExpressionAttributeValues: { ':p': S('hel') } }),
        put(a, { ConditionExpression: 'begins_with(s, :p)', ExpressionAttributeValues: { ':p': S('help') } }),
        put(a, {
          ConditionExpression: 'begins_with(missing, :p)',
          ExpressionAttributeValues: { ':p': S('h') },
        }),
        put(a, {
          ConditionExpression: 's = :s AND NOT (n <> :n)',
          ExpressionAttributeValues: { ':s': S('hello'), ':n': N('5.0') },
        }),
        put(a, {
          ConditionExpression: '#n > :v OR attribute_exists(#m)',
          ExpressionAttributeNames: { '#n': 'n', '#m': 'missing' },
          ExpressionAttributeValues: { ':v': N(100) },
        }),
        put(a, {
          ConditionExpression: '(#n > :v OR attribute_exists(#m)) AND b = :t',
          ExpressionAttributeNames: { '#n': 'n', '#m': 's' },
          ExpressionAttributeValues: { ':v': N(100), ':t': { BOOL: true } },
        }),
        // Precedence: NOT > AND > OR.
        put(a, {
          ConditionExpression: 'n = :x OR n = :y AND n = :z',
          ExpressionAttributeValues: { ':x': N(5), ':y': N(1), ':z': N(2) },
        }),
        put(a, {
          ConditionExpression: 'NOT n = :x AND n = :y',
          ExpressionAttributeValues: { ':x': N(5), ':y': N(5) },
        }),
        // A missing attribute and mismatched types.
        put(a, { ConditionExpression: 'missing <> :v', ExpressionAttributeValues: { ':v': N(1) } }),
        put(a, { ConditionExpression: 'missing = :v', ExpressionAttributeValues: { ':v': N(1) } }),
        put(a, { ConditionExpression: 'missing < :v', ExpressionAttributeValues: { ':v': N(1) } }),
        put(a, { ConditionExpression: 's <> :v', ExpressionAttributeValues: { ':v': N(1) } }),
        // Numbers compare as numbers, strings as bytes; sets as sets.
        put(a, { ConditionExpression: 'n <= :v', ExpressionAttributeValues: { ':v': N(10) } }),
        put(a, { ConditionExpression: 's > :v', ExpressionAttributeValues: { ':v': S('Zebra') } }),
        put(a, { ConditionExpression: 's > :v', ExpressionAttributeValues: { ':v': S('hello!') } }),
        put(a, { ConditionExpression: 'ss = :v', ExpressionAttributeValues: { ':v': { SS: ['y', 'x'] } } }),
        put(a, { ConditionExpression: 'n = n' }),
        // A failed condition with the stored item returned.
        put(a, {
          ConditionExpression: 'attribute_not_exists(pk)',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
        new GetItemCommand({ TableName, Key: key('a'), ConsistentRead: true }),
        new GetItemCommand({ TableName, Key: key('nope') }),
        new DeleteItemCommand({
          TableName,
          Key: key('b'),
          ConditionExpression: 'attribute_not_exists(pk) OR n <= :now',
          ExpressionAttributeValues: { ':now': N(8) },
          ReturnValues: 'ALL_OLD',
        }),
        new DeleteItemCommand({
          TableName,
          Key: key('b'),
          ConditionExpression: 'attribute_not_exists(pk) OR n <= :now',
          ExpressionAttributeValues: { ':now': N(9) },
          ReturnValues: 'ALL_OLD',
        }),
        new DeleteItemCommand({ TableName, Key: key('b'), ReturnValues: 'ALL_OLD' }),
        new DeleteItemCommand({ TableName, Key: key('a') }),
        new GetItemCommand({ TableName, Key: key('a') }),
      ];
    });
    expect(fromModel).toEqual(fromMoto);
    // The sequence exercises both outcomes: writes that held and ConditionalCheckFailed ones.
    expect(
      fromMoto.filter((a) => (a as { error?: string }).error === 'ConditionalCheckFailedException').length,
    ).toBe(8);
  });

  it('2. UpdateItem: SET (if_not_exists, +, -), REMOVE, ADD, DELETE, dynamic names, every ReturnValues', async () => {
    const { fromMoto, fromModel } = await both('t2', (TableName) => {
      const update = (pk: string, UpdateExpression: string, extra: object = {}) =>
        new UpdateItemCommand({
          TableName,
          Key: key(pk),
          UpdateExpression,
          ReturnValues: 'ALL_NEW',
          ...extra,
        });
      return [
        // An update of a missing item creates it (with its key).
        update('u', 'SET a = :v, #b = :w', {
          ExpressionAttributeNames: { '#b': 'b' },
          ExpressionAttributeValues: { ':v': S('one'), ':w': N(2) },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
        update('u', 'SET a = :v', {
          ExpressionAttributeValues: { ':v': S('x') },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
        update('u', 'SET c = if_not_exists(c, :zero) + :one', {
          ExpressionAttributeValues: { ':zero': N(0), ':one': N(1) },
        }),
        update('u', 'SET c = if_not_exists(c, :zero) + :one', {
          ExpressionAttributeValues: { ':zero': N(0), ':one': N(1) },
        }),
        update('u', 'SET b = b + :n, d = b - :one, e = a', {
          ExpressionAttributeValues: { ':n': N(40), ':one': N(1) },
          ReturnValues: 'UPDATED_NEW',
        }),
        update('u', 'SET b = b + :n', {
          ExpressionAttributeValues: { ':n': N(1) },
          ReturnValues: 'UPDATED_OLD',
        }),
        update('u', 'REMOVE e, #d', { ExpressionAttributeNames: { '#d': 'd' }, ReturnValues: 'ALL_OLD' }),
        update('u', 'ADD cnt :one, tags :t', {
          ExpressionAttributeValues: { ':one': N(1), ':t': { SS: ['p', 'q'] } },
        }),
        update('u', 'ADD cnt :one, tags :t', {
          ExpressionAttributeValues: { ':one': N(1), ':t': { SS: ['q', 'r'] } },
        }),
        update('u', 'ADD nums :n', { ExpressionAttributeValues: { ':n': { NS: ['1', '2'] } } }),
        update('u', 'DELETE tags :t', { ExpressionAttributeValues: { ':t': { SS: ['p', 'zz'] } } }),
        update('u', 'DELETE tags :t', { ExpressionAttributeValues: { ':t': { SS: ['q', 'r'] } } }),
        update('u', 'DELETE nope :t', { ExpressionAttributeValues: { ':t': { SS: ['q'] } } }),
        // Several clauses in one expression, in any order, keywords in any case.
        update('u', 'remove a set f = :f add cnt :one', {
          ExpressionAttributeValues: { ':f': S('f'), ':one': N(5) },
        }),
        // Per-device claims with dynamic names (the grant store's claims: `#w` is e.g. `w:cell-17`).
        update('g', 'SET #w = :t, expiresAt = :e', {
          ExpressionAttributeNames: { '#w': 'w:cell-17' },
          ExpressionAttributeValues: { ':t': N(1000), ':e': N(1000) },
          ConditionExpression: 'attribute_not_exists(#w) OR #w < :t',
        }),
        update('g', 'SET #w = :t', {
          ExpressionAttributeNames: { '#w': 'w:cell-17' },
          ExpressionAttributeValues: { ':t': N(900) },
          ConditionExpression: 'attribute_not_exists(#w) OR #w < :t',
        }),
        update('g', 'SET #w = :t, #x = :t', {
          ExpressionAttributeNames: { '#w': 'w:cell-18', '#x': 'w:cell-19' },
          ExpressionAttributeValues: { ':t': N(1200) },
        }),
        update('g', 'REMOVE #w', {
          ExpressionAttributeNames: { '#w': 'w:cell-17' },
          ExpressionAttributeValues: { ':t': N(1000) },
          ConditionExpression: '#w = :t',
          ReturnValues: 'ALL_NEW',
        }),
        update('g', 'REMOVE #w', {
          ExpressionAttributeNames: { '#w': 'w:cell-17' },
          ExpressionAttributeValues: { ':t': N(1000) },
          ConditionExpression: '#w = :t',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
        update('g', 'SET expiresAt = :e', {
          ExpressionAttributeValues: { ':e': N(5) },
          ReturnValues: 'NONE',
        }),
        new GetItemCommand({ TableName, Key: key('u') }),
        new GetItemCommand({ TableName, Key: key('g') }),
      ];
    });
    expect(fromModel).toEqual(fromMoto);
    expect(fromMoto.filter((a) => (a as { error?: string }).error !== undefined).length).toBe(3);
  });

  it('3. Scan: FilterExpression, Limit and ExclusiveStartKey pagination', async () => {
    await createTable(motoDynamo, 't3');
    await createTable(model.client, 't3');
    const scanAll = async (client: DynamoDBClient, limit: number | undefined, filter?: string) => {
      const pages: ScanCommandOutput[] = [];
      let start: Item | undefined;
      do {
        const page = await client.send(
          new ScanCommand({
            TableName: 't3',
            ...(limit === undefined ? {} : { Limit: limit }),
            ...(start === undefined ? {} : { ExclusiveStartKey: start }),
            ...(filter === undefined
              ? {}
              : { FilterExpression: filter, ExpressionAttributeValues: { ':v': N(5) } }),
          }),
        );
        pages.push(page);
        start = page.LastEvaluatedKey;
      } while (start !== undefined && pages.length < 50);
      return {
        items: byKey(pages.flatMap((p) => p.Items ?? [])),
        scanned: pages.reduce((n, p) => n + (p.ScannedCount ?? 0), 0),
        largestPage: Math.max(...pages.map((p) => p.ScannedCount ?? 0)),
      };
    };
    const results = [];
    for (const client of [motoDynamo, model.client]) {
      for (let i = 0; i < 9; i++)
        await client.send(new PutItemCommand({ TableName: 't3', Item: { pk: S(`k${i}`), n: N(i) } }));
      results.push([
        await scanAll(client, undefined),
        await scanAll(client, undefined, 'n > :v'),
        await scanAll(client, 2, 'n <= :v'),
        await scanAll(client, 4),
        await scanAll(client, 100, 'n > :v'),
      ]);
    }
    expect(results[1]).toEqual(results[0]);
    expect(results[0]![2]).toMatchObject({ scanned: 9, largestPage: 2 });
    expect(results[0]![2]!.items).toHaveLength(6);
  });

  it('4. invalid requests are ValidationException on both', async () => {
    const { fromMoto, fromModel } = await both('t4', (TableName) => {
      const update = (UpdateExpression: string, extra: object = {}) =>
        new UpdateItemCommand({ TableName, Key: key('v'), UpdateExpression, ...extra });
      return [
        new PutItemCommand({ TableName, Item: { pk: S('v'), s: S('text'), n: N(1) } }),
        update('SET ttl = :v', { ExpressionAttributeValues: { ':v': N(1) } }),
        update('SET a = :v', { ExpressionAttributeValues: { ':v': N(1), ':unused': N(2) } }),
        update('SET a = :missing', { ExpressionAttributeValues: { ':v': N(1) } }),
        update('SET pk = :v', { ExpressionAttributeValues: { ':v': S('w') } }),
        update('SET a = :v REMOVE a', { ExpressionAttributeValues: { ':v': N(1) } }),
        update('ADD s :v', { ExpressionAttributeValues: { ':v': N(1) } }),
        update('SET n = s + :v', { ExpressionAttributeValues: { ':v': N(1) } }),
        update('SET n = nothing + :v', { ExpressionAttributeValues: { ':v': N(1) } }),
        new PutItemCommand({ TableName, Item: { n: N(1) } }),
        new GetItemCommand({ TableName: 'no-such-table', Key: key('v') }),
        new GetItemCommand({ TableName, Key: key('v') }),
      ];
    });
    expect(fromModel).toEqual(fromMoto);
    expect(fromMoto.filter((a) => (a as { error?: string }).error === 'ValidationException').length).toBe(9);
  });

  it('5. the grant and nonce stores give the same answers over both backends', async () => {
    const run = async (client: DynamoDBClient, suffix: string) => {
      await createTable(client, `grants-${suffix}`, 'ttl');
      await createTable(client, `nonces-${suffix}`, 'ttl');
      const grants = new DynamoGrantStore({ dynamodb: client, tableName: `grants-${suffix}` });
      const nonces = new DynamoNonceStore({ dynamodb: client, tableName: `nonces-${suffix}` });
      const grant = (address: string, expiresAt: number, extra: Partial<ActiveGrant> = {}): ActiveGrant => ({
        deviceId: 'dev-1',
        address,
        family: 4,
        access: [{ protocol: 'tcp', port: 8883 }],
        openedAt: 1000,
        expiresAt,
        securityGroupIds: ['sg-1'],
        ...extra,
      });
      const sorted = (list: readonly ActiveGrant[]) =>
        [...list].sort((a, b) => (a.address < b.address ? -1 : 1));
      const out: unknown[] = [];
      await grants.put(grant('198.51.100.7', 31_000));
      await grants.put(grant('198.51.100.7', 21_000)); // shorter: the later expiry stands
      out.push(await grants.get('198.51.100.7'));
      await grants.put(grant('198.51.100.7', 41_000, { securityGroupIds: ['sg-1', 'sg-2'] }));
      out.push(await grants.get('198.51.100.7'));
      await grants.put(grant('203.0.113.0', 25_000, { prefixLength: 24, deviceId: 'dev-2' }));
      await grants.put(grant('2001:db8::1', 50_000, { family: 6, securityGroupIds: [] }));
      for (let i = 0; i < 30; i++) await grants.put(grant(`192.0.2.${i}`, 20_000 + i * 1000));
      out.push(await grants.get('192.0.2.99'));
      out.push(sorted(await grants.listActive(30_000)));
      out.push(sorted(await grants.listExpired(30_000)));
      out.push(await grants.delete('198.51.100.7', { ifExpiredBy: 40_000 }));
      out.push(await grants.delete('198.51.100.7', { ifExpiredBy: 41_000 }));
      out.push(await grants.delete('198.51.100.7', { ifExpiredBy: 41_000 }));
      out.push(await grants.delete('203.0.113.0/24'));
      out.push(await grants.delete('203.0.113.0/24'));
      out.push(sorted(await grants.listActive(0)));
      out.push(await nonces.record('replay-id-1', 60_000));
      out.push(await nonces.record('replay-id-1', 60_000));
      out.push(await nonces.record('replay-id-2', 60_000));
      return out;
    };
    const fromMoto = await run(motoDynamo, 'moto');
    const fromModel = await run(model.client, 'model');
    expect(fromModel).toEqual(fromMoto);
    expect(fromMoto.slice(5, 10)).toEqual(['kept', 'deleted', 'absent', 'deleted', 'absent']);
    expect(fromMoto.slice(-3)).toEqual(['fresh', 'replay', 'fresh']);
    expect((fromMoto[3] as ActiveGrant[]).length).toBe(21);
  });
});

describe('ModelledDynamoDb outside its subset', () => {
  it('6. fails loudly (a plain Error naming what is unsupported), never answers wrongly', async () => {
    const local = new ModelledDynamoDb();
    local.createTable('t');
    const TableName = 't';
    const cases = [
      new PutItemCommand({
        TableName,
        Item: { pk: S('a') },
        ConditionExpression: 'contains(s, :v)',
        ExpressionAttributeValues: { ':v': S('x') },
      }),
      new PutItemCommand({
        TableName,
        Item: { pk: S('a') },
        ConditionExpression: 'size(s) > :v',
        ExpressionAttributeValues: { ':v': N(1) },
      }),
      new PutItemCommand({
        TableName,
        Item: { pk: S('a') },
        ConditionExpression: 'n BETWEEN :a AND :b',
        ExpressionAttributeValues: { ':a': N(1), ':b': N(2) },
      }),
      new PutItemCommand({
        TableName,
        Item: { pk: S('a') },
        ConditionExpression: 'n IN (:a)',
        ExpressionAttributeValues: { ':a': N(1) },
      }),
      new UpdateItemCommand({
        TableName,
        Key: key('a'),
        UpdateExpression: 'SET m.x = :v',
        ExpressionAttributeValues: { ':v': N(1) },
      }),
      new UpdateItemCommand({
        TableName,
        Key: key('a'),
        UpdateExpression: 'SET l = list_append(l, :v)',
        ExpressionAttributeValues: { ':v': { L: [] } },
      }),
      new GetItemCommand({ TableName, Key: key('a'), ProjectionExpression: 'pk' }),
      new PutItemCommand({ TableName, Item: { pk: S('a') }, Expected: { pk: { Exists: false } } }),
      new QueryCommand({
        TableName,
        KeyConditionExpression: 'pk = :v',
        ExpressionAttributeValues: { ':v': S('a') },
      }),
    ];
    for (const command of cases) {
      const error = await local.client.send(command as never).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(error?.constructor).toBe(Error);
      expect(error?.message).toMatch(/not supported by the model/);
    }
    expect(local.items('t')).toEqual([]);
    // Where moto 5.2.1 answers HTTP 500 or wrongly (so parity cannot be tested), the model answers as DynamoDB
    // documents: a mismatched comparison is false; an undefined #name, a syntax error, a key of the wrong type
    // are ValidationException.
    await local.client.send(new PutItemCommand({ TableName, Item: { pk: S('a'), s: S('text') } }));
    const codes = await Promise.all(
      [
        new PutItemCommand({
          TableName,
          Item: { pk: S('a') },
          ConditionExpression: 's < :v',
          ExpressionAttributeValues: { ':v': N(1) },
        }),
        new UpdateItemCommand({
          TableName,
          Key: key('a'),
          UpdateExpression: 'SET #a = :v',
          ExpressionAttributeValues: { ':v': N(1) },
        }),
        new PutItemCommand({ TableName, Item: { pk: S('a') }, ConditionExpression: 'attribute_not_exists(' }),
        new GetItemCommand({ TableName, Key: { pk: N(1) } }),
      ].map((command) => local.client.send(command as never).then(() => 'ok', awsErrorCode)),
    );
    expect(codes).toEqual([
      'ConditionalCheckFailedException',
      'ValidationException',
      'ValidationException',
      'ValidationException',
    ]);
    await local.client.send(new DeleteItemCommand({ TableName, Key: key('a') }));
    // Limit reached at the last item: a LastEvaluatedKey and an empty next page, as DynamoDB documents.
    await local.client.send(new PutItemCommand({ TableName, Item: { pk: S('only') } }));
    const page = await local.client.send(new ScanCommand({ TableName, Limit: 1 }));
    expect(page.LastEvaluatedKey).toEqual({ pk: S('only') });
    const next = await local.client.send(
      new ScanCommand({ TableName, Limit: 1, ExclusiveStartKey: page.LastEvaluatedKey }),
    );
    expect([next.Items, next.LastEvaluatedKey]).toEqual([[], undefined]);
    expect(local.counts().PutItem).toEqual({
      calls: 9,
      errors: { Unsupported: 5, ConditionalCheckFailedException: 1, ValidationException: 1 },
    });
    local.restore();
  });
});
