/** DynamoNonceStore, DynamoGrantStore and SqsExpiryScheduler against moto server. */
import { createServer } from 'node:net';
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { GetQueueAttributesCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type AwsClients, createAwsClients } from '../../../functions/aws/clients.ts';
import { DynamoGrantStore } from '../../../functions/aws/dynamo-grant-store.ts';
import { DynamoNonceStore } from '../../../functions/aws/dynamo-nonce-store.ts';
import { NonceStoreUnavailableError } from '../../../functions/aws/errors.ts';
import { decodeGrantMessage } from '../../../functions/aws/grant-message.ts';
import { revokeDelaySeconds, SqsExpiryScheduler } from '../../../functions/aws/sqs-expiry-scheduler.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import {
  createQueue,
  createTable,
  MOTO_CREDENTIALS,
  MOTO_REGION,
  type MotoServer,
  recordCalls,
  startMoto,
} from '../../support/moto.ts';

let moto: MotoServer;
let clients: AwsClients;

beforeAll(async () => {
  moto = await startMoto();
});
afterAll(async () => {
  await moto?.stop();
});
beforeEach(async () => {
  await moto.reset();
  clients = moto.clients();
  await createTable(clients.dynamodb, 'nonces', 'ttl');
  await createTable(clients.dynamodb, 'grants', 'ttl');
});

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

const grant = (overrides: Partial<Grant> = {}): Grant => ({
  deviceId: 'dev-1',
  address: '203.0.113.7',
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt: 1_700_000_000_000,
  expiresAt: 1_700_000_030_000,
  ...overrides,
});

describe('DynamoNonceStore', () => {
  it('records a fresh replay id with its TTL, and calls the second one a replay', async () => {
    const store = new DynamoNonceStore({ dynamodb: clients.dynamodb, tableName: 'nonces' });
    expect(await store.record('bc1:0000002a:00112233445566778899aabb', 1_700_000_060_500)).toBe('fresh');
    expect(await store.record('bc1:0000002a:00112233445566778899aabb', 1_700_000_060_500)).toBe('replay');
    expect(await store.record('bc1:0000002a:ffffffffffffffffffffffff', 1_700_000_060_500)).toBe('fresh');
    const item = await clients.dynamodb.send(
      new GetItemCommand({
        TableName: 'nonces',
        Key: { pk: { S: 'bc1:0000002a:00112233445566778899aabb' } },
      }),
    );
    expect(item.Item?.ttl).toEqual({ N: '1700000061' });
  });

  it('sends one conditional put on the replay id', async () => {
    const calls = recordCalls(clients.dynamodb);
    const store = new DynamoNonceStore({ dynamodb: clients.dynamodb, tableName: 'nonces' });
    await store.record('r1', 2000);
    expect(calls).toEqual([
      {
        command: 'PutItemCommand',
        input: {
          TableName: 'nonces',
          Item: { pk: { S: 'r1' }, ttl: { N: '2' } },
          ConditionExpression: 'attribute_not_exists(pk)',
        },
      },
    ]);
  });

  it('fails closed when DynamoDB is unreachable', async () => {
    const unreachable = createAwsClients({
      region: MOTO_REGION,
      endpoint: `http://127.0.0.1:${await closedPort()}`,
      credentials: MOTO_CREDENTIALS,
      maxAttempts: 1,
    });
    const store = new DynamoNonceStore({ dynamodb: unreachable.dynamodb, tableName: 'nonces' });
    const error = await store.record('r1', 2000).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NonceStoreUnavailableError);
    expect((error as Error).message).toContain('failing closed');
    unreachable.dynamodb.destroy();
  });

  it('fails closed when the table does not exist', async () => {
    const store = new DynamoNonceStore({ dynamodb: clients.dynamodb, tableName: 'missing' });
    await expect(store.record('r1', 2000)).rejects.toMatchObject({
      name: 'NonceStoreUnavailableError',
      message: expect.stringContaining('ResourceNotFoundException'),
    });
  });
});

describe('DynamoGrantStore', () => {
  it('puts, reads, lists active and expired, and only moves expiry forward', async () => {
    const store = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' });
    await store.put({ ...grant(), securityGroupIds: ['sg-aaaaaaaa'] });
    await store.put({
      ...grant({ deviceId: 'dev-6', address: '2001:DB8::6', family: 6, expiresAt: 1_700_000_010_000 }),
      securityGroupIds: ['sg-bbbbbbbb'],
    });
    // A late write of a shorter grant does not undo the longer one.
    await store.put({ ...grant({ expiresAt: 1_700_000_020_000 }), securityGroupIds: ['sg-aaaaaaaa'] });
    expect(await store.get('203.0.113.7')).toEqual({ ...grant(), securityGroupIds: ['sg-aaaaaaaa'] });
    expect(await store.get('2001:db8::6')).toMatchObject({ address: '2001:db8::6', family: 6 });
    const now = 1_700_000_015_000;
    expect((await store.listActive(now)).map((g) => g.address)).toEqual(['203.0.113.7']);
    expect((await store.listExpired(now)).map((g) => g.address)).toEqual(['2001:db8::6']);
    // Extension.
    await store.put({ ...grant({ expiresAt: 1_700_000_090_000 }), securityGroupIds: ['sg-aaaaaaaa'] });
    expect((await store.get('203.0.113.7'))?.expiresAt).toBe(1_700_000_090_000);
  });

  it('deletes conditionally: an extended grant is kept', async () => {
    const store = new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' });
    await store.put({ ...grant(), securityGroupIds: [] });
    expect(await store.delete('203.0.113.7', { ifExpiredBy: 1_700_000_029_999 })).toBe('kept');
    expect(await store.delete('203.0.113.7', { ifExpiredBy: 1_700_000_030_000 })).toBe('deleted');
    expect(await store.delete('203.0.113.7', { ifExpiredBy: 1_700_000_030_000 })).toBe('absent');
    expect(await store.get('203.0.113.7')).toBeUndefined();
  });
});

describe('SqsExpiryScheduler', () => {
  it('computes the delay from the remaining lifetime, capped at 900 s', () => {
    const g = grant();
    expect(revokeDelaySeconds(g, g.openedAt)).toBe(30);
    expect(revokeDelaySeconds(g, g.openedAt + 100)).toBe(30);
    expect(revokeDelaySeconds(g, g.expiresAt - 1)).toBe(1);
    expect(revokeDelaySeconds(g, g.expiresAt + 5000)).toBe(0);
    expect(revokeDelaySeconds(grant({ expiresAt: g.openedAt + 3_600_000 }), g.openedAt)).toBe(900);
  });

  it('sends the grant as the body, delayed by its lifetime', async () => {
    const queueUrl = await createQueue(clients.sqs, 'revoke');
    const calls = recordCalls(clients.sqs);
    const g = grant();
    const scheduler = new SqsExpiryScheduler({
      sqs: clients.sqs,
      queueUrl,
      clock: { now: () => g.openedAt },
    });
    await scheduler.schedule(g);
    expect(calls).toHaveLength(1);
    expect(calls[0]?.command).toBe('SendMessageCommand');
    const input = calls[0]?.input as { QueueUrl: string; DelaySeconds: number; MessageBody: string };
    expect(input.QueueUrl).toBe(queueUrl);
    expect(input.DelaySeconds).toBe(30);
    expect(decodeGrantMessage(input.MessageBody)).toEqual(g);
    // moto holds it back: delayed, not yet visible.
    const attributes = await clients.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: queueUrl,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesDelayed'],
      }),
    );
    expect(attributes.Attributes).toMatchObject({
      ApproximateNumberOfMessages: '0',
      ApproximateNumberOfMessagesDelayed: '1',
    });
    const early = await clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 0 }),
    );
    expect(early.Messages ?? []).toEqual([]);
  });

  it('a 1 s grant arrives on the queue after its delay, carrying the grant', async () => {
    const queueUrl = await createQueue(clients.sqs, 'revoke-short');
    const now = Date.now();
    const g = grant({ openedAt: now, expiresAt: now + 1000 });
    const scheduler = new SqsExpiryScheduler({ sqs: clients.sqs, queueUrl, clock: { now: () => now } });
    await scheduler.schedule(g);
    const received = await clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queueUrl, WaitTimeSeconds: 5, MaxNumberOfMessages: 1 }),
    );
    expect(received.Messages).toHaveLength(1);
    expect(decodeGrantMessage(received.Messages?.[0]?.Body ?? '')).toEqual(g);
  });
});
