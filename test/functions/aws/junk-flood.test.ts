/**
 * Unauthenticated junk costs AWS nothing (issue 14, item 2): the AWS receiver on moto with a 200-device fleet, every
 * SDK request it sends recorded (recordCalls), takes a flood of 5,000 fwknop-shaped datagrams (180 'A's) and 5,000
 * BC1 datagrams with unknown key ids over real UDP from 500 loopback sources (so the per-source limit lets them
 * through to the directory): zero AWS requests during the flood. Then a valid knock from an enrolled device opens
 * the broker, and a device enrolled after the start is refused until the index refreshes, then accepted.
 */
import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { BatchWriteItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, type Item, keyItem } from '../../../functions/aws/device-record.ts';
import { loadAwsReceiverConfig } from '../../../functions/aws/receiver-config.ts';
import { type AwsReceiver, startAwsReceiver } from '../../../functions/aws/receiver-main.ts';
import type { Outcome } from '../../../functions/receiver/handle-datagram.ts';
import { encodeBc1 } from '../../../spa/bc1.ts';
import {
  createStackResources,
  type MotoServer,
  type RecordedCall,
  recordCalls,
  stackReceiverEnv,
  startMoto,
} from '../../support/moto.ts';

const FLEET_SIZE = 200;
const JUNK_PER_SHAPE = 5000;
const SOURCES = 500;
const BATCH = 100;

let moto: MotoServer;
let clients: AwsClients;
let receiver: AwsReceiver | undefined;
const calls: RecordedCall[][] = [];
const outcomes: Outcome[] = [];
const waiters: (() => void)[] = [];

const keyOf = (i: number) => new Uint8Array(32).fill(i % 251);
const keyIdOf = (i: number) => 1000 + i;

async function enrol(clientsToUse: AwsClients, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    const thingName = `dev-${i}`;
    await clientsToUse.iot.send(
      new CreateThingCommand({
        thingName,
        attributePayload: { attributes: { enabled: 'true', allowedAccess: 'tcp/8883' } },
      }),
    );
    await clientsToUse.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName }));
  }
  const items: Item[] = [];
  for (let i = from; i < to; i++) {
    items.push(
      deviceItem(`dev-${i}`, [keyIdOf(i)]),
      keyItem(`dev-${i}`, { keyId: keyIdOf(i), key: keyOf(i) }),
    );
  }
  for (let i = 0; i < items.length; i += 25) {
    await clientsToUse.dynamodb.send(
      new BatchWriteItemCommand({
        RequestItems: { devices: items.slice(i, i + 25).map((Item) => ({ PutRequest: { Item } })) },
      }),
    );
  }
}

function knockPacket(i: number): Uint8Array {
  return encodeBc1(
    { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
    { keyId: keyIdOf(i), key: keyOf(i), nonce: randomBytes(12) },
  );
}

async function waitForOutcomes(count: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (outcomes.length < count) {
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new Error(
        `${outcomes.length} of ${count} outcomes after ${timeoutMs} ms; ` +
          `AWS requests so far: ${requestCount()} ${JSON.stringify(requestsByCommand())}`,
      );
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, left);
      waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

async function bound(address: string): Promise<Socket> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, address, () => resolve());
  });
  return socket;
}

async function send(socket: Socket, packet: Uint8Array): Promise<void> {
  const port = receiver?.receiver.address.port ?? 0;
  await new Promise<void>((resolve, reject) =>
    socket.send(packet, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  );
}

async function knockFrom(address: string, packet: Uint8Array): Promise<Outcome> {
  const seen = outcomes.length;
  const socket = await bound(address);
  await send(socket, packet);
  socket.close();
  await waitForOutcomes(seen + 1);
  const outcome = outcomes[seen];
  if (outcome === undefined) throw new Error('no outcome');
  return outcome;
}

const requestCount = () => calls.reduce((n, c) => n + c.length, 0);
const requestsByCommand = () => {
  const counts: Record<string, number> = {};
  for (const c of calls.flat()) counts[c.command] = (counts[c.command] ?? 0) + 1;
  return counts;
};

beforeAll(async () => {
  moto = await startMoto();
  clients = moto.clients();
  const { groupIds, queueUrl } = await createStackResources(clients);
  await enrol(clients, 0, FLEET_SIZE);
  const config = loadAwsReceiverConfig({
    ...stackReceiverEnv(moto.endpoint, groupIds[0] ?? '', queueUrl),
    // No background refresh during the test (its requests would be counted); the test calls refresh() itself.
    BLACKCLOUD_DIRECTORY_REFRESH_SECONDS: '3600',
  });
  const receiverClients = moto.clients();
  for (const client of [
    receiverClients.iot,
    receiverClients.dynamodb,
    receiverClients.ec2,
    receiverClients.sqs,
  ]) {
    calls.push(recordCalls(client));
  }
  receiver = await startAwsReceiver(config, {
    host: '127.0.0.1',
    port: 0,
    clients: receiverClients,
    out: { write: () => true },
    onOutcome: (outcome) => {
      outcomes.push(outcome);
      for (const wake of waiters.splice(0)) wake();
    },
  });
}, 120_000);

afterAll(async () => {
  await receiver?.close();
  await moto?.stop();
});

describe('a junk flood against the AWS receiver (200-device fleet on moto)', () => {
  it('costs zero AWS requests; an enrolled device then gets in; a new device gets in after a refresh', async () => {
    const atStart = requestsByCommand();
    process.stdout.write(`directory load at start: ${JSON.stringify(atStart)}\n`);
    for (const c of calls) c.length = 0;

    const fwknopJunk = new TextEncoder().encode('A'.repeat(180));
    const sockets = await Promise.all(
      Array.from({ length: SOURCES }, (_, s) => bound(`127.1.${Math.floor(s / 250)}.${(s % 250) + 1}`)),
    );
    // In batches of BATCH (under the receiver's in-flight bound, so none is dropped unseen); each source sends
    // 2 * JUNK_PER_SHAPE / SOURCES = 20 datagrams, within its per-source burst.
    let sent = 0;
    while (sent < 2 * JUNK_PER_SHAPE) {
      const batch = Array.from({ length: BATCH }, (_, b) => sent + b);
      await Promise.all(
        batch.map((n) => {
          const socket = sockets[n % SOURCES];
          if (socket === undefined) throw new Error('no socket');
          if (n % 2 === 0) return send(socket, fwknopJunk);
          const junk = encodeBc1(
            { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
            { keyId: 5_000_000 + n, key: randomBytes(32), nonce: randomBytes(12) },
          );
          return send(socket, junk);
        }),
      );
      sent += BATCH;
      await waitForOutcomes(sent);
    }
    for (const socket of sockets) socket.close();
    const reasons: Record<string, number> = {};
    for (const o of outcomes) if (!o.ok) reasons[o.reason] = (reasons[o.reason] ?? 0) + 1;
    process.stdout.write(
      `flood of ${sent} datagrams: ${requestCount()} AWS requests ${JSON.stringify(requestsByCommand())}, ` +
        `outcomes ${JSON.stringify(reasons)}\n`,
    );
    expect(outcomes.filter((o) => o.ok)).toHaveLength(0);
    expect(reasons['directory-unavailable']).toBeUndefined();
    expect(requestCount()).toBe(0);

    const accepted = await knockFrom('127.2.0.1', knockPacket(7));
    expect(accepted.ok && accepted.value.deviceId).toBe('dev-7');

    await enrol(clients, FLEET_SIZE, FLEET_SIZE + 1);
    const early = await knockFrom('127.2.0.2', knockPacket(FLEET_SIZE));
    expect(early).toMatchObject({ ok: false, reason: 'unknown-key' });
    await receiver?.directory.refresh();
    const late = await knockFrom('127.2.0.2', knockPacket(FLEET_SIZE));
    expect(late.ok && late.value.deviceId).toBe(`dev-${FLEET_SIZE}`);
  }, 300_000);
});
