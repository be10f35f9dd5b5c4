/**
 * How many AWS calls key rotation makes on the AWS directory (DynamoKeyStore + IotDeviceDirectory), against moto
 * server with real SDK clients, counted with recordCalls(): one schedule tick with 40 due devices and an idle tick
 * with 40 devices (docs/key-lifecycle.md, "Calls per tick"). Then the key-id reservation: a RandomSource that
 * first draws an id already in use makes the conditional put fail and the controller draw again; one that only
 * ever draws used ids gives up after a bounded number of attempts, naming the cause.
 *
 * Measured with this test on the code before the change (each offer listed the whole fleet to pick a free key id,
 * and the tick read every device twice, one GetItem per key):
 *   40 due devices:    7,420 DynamoDB + 3,241 IoT calls      after: 242 DynamoDB + 81 IoT
 *   idle, 40 devices:    240 DynamoDB +    81 IoT calls      after:   2 DynamoDB +  1 IoT
 */
import { GetItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../../functions/aws/device-record.ts';
import type { RandomSource } from '../../../functions/core/interfaces.ts';
import { systemRandom } from '../../../functions/core/system.ts';
import { awsRotation } from '../../support/aws-rotation.ts';
import {
  createStackResources,
  type MotoServer,
  type RecordedCall,
  recordCalls,
  startMoto,
} from '../../support/moto.ts';

const FLEET = 'fleet';
const DEVICES = 40;
const HOUR = 3_600_000;
const MINUTE = 60_000;
const deviceId = (i: number) => `dev-${String(i).padStart(3, '0')}`;
const oldKeyId = (i: number) => 1000 + i;

let moto: MotoServer;
let clients: AwsClients;
let dynamoCalls: RecordedCall[];
let iotCalls: RecordedCall[];
let now = 1_800_000_000_000;
const clock = { now: () => now };

function setup(random: RandomSource = systemRandom) {
  return awsRotation({
    clients,
    fleetThingGroup: FLEET,
    clock,
    random,
    config: { periodMs: 24 * HOUR, graceMs: HOUR, tickMs: MINUTE },
  });
}

/** The calls `run` makes, by client and command. */
async function count(run: () => Promise<unknown>) {
  dynamoCalls.length = 0;
  iotCalls.length = 0;
  await run();
  const byCommand = (calls: RecordedCall[]) => {
    const counts: Record<string, number> = {};
    for (const call of calls) counts[call.command] = (counts[call.command] ?? 0) + 1;
    return counts;
  };
  return {
    dynamodb: dynamoCalls.length,
    iot: iotCalls.length,
    dynamodbByCommand: byCommand(dynamoCalls),
    iotByCommand: byCommand(iotCalls),
  };
}

/** Draws `first` as the first key id (4-byte draw), then real randomness. */
function firstKeyId(first: number): RandomSource & { keyIdDraws: number } {
  const source = {
    keyIdDraws: 0,
    randomBytes(length: number): Uint8Array {
      if (length !== 4) return systemRandom.randomBytes(length);
      source.keyIdDraws += 1;
      if (source.keyIdDraws > 1) return systemRandom.randomBytes(length);
      const bytes = Buffer.alloc(4);
      bytes.writeUInt32BE(first);
      return new Uint8Array(bytes);
    },
  };
  return source;
}

beforeAll(async () => {
  moto = await startMoto();
  clients = moto.clients();
  await createStackResources(clients);
  for (let i = 1; i <= DEVICES; i++) {
    const thingName = deviceId(i);
    await clients.iot.send(
      new CreateThingCommand({
        thingName,
        attributePayload: { attributes: { enabled: 'true', allowedAccess: 'tcp/8883' } },
      }),
    );
    await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: FLEET, thingName }));
    await clients.dynamodb.send(
      new PutItemCommand({ TableName: 'devices', Item: deviceItem(thingName, [oldKeyId(i)]) }),
    );
    await clients.dynamodb.send(
      new PutItemCommand({
        TableName: 'devices',
        Item: keyItem(thingName, { keyId: oldKeyId(i), key: new Uint8Array(32).fill(i) }),
      }),
    );
  }
  dynamoCalls = recordCalls(clients.dynamodb);
  iotCalls = recordCalls(clients.iot);
}, 120_000);

afterAll(async () => {
  await moto?.stop();
});

describe('key rotation calls per tick on AWS (moto, 40 devices)', () => {
  it('an idle tick costs a fleet listing and batched reads, not calls per device', async () => {
    const { controller } = setup();
    expect(await controller.tick()).toEqual([]); // warm: nothing is due yet
    now += MINUTE; // the next scheduled tick, after the directory's 30 s cache has expired
    const idle = await count(async () => expect(await controller.tick()).toEqual([]));
    console.log(`idle tick, ${DEVICES} devices: ${JSON.stringify(idle)}`);
    // One ListThingsInThingGroup page; one BatchGetItem of the device items and one of the key items per 100.
    expect(idle.iot).toBeLessThanOrEqual(1);
    expect(idle.dynamodb).toBeLessThanOrEqual(2 * Math.ceil(DEVICES / 100));
    expect(idle.dynamodbByCommand).toEqual({ BatchGetItemCommand: 2 });
  });

  it('a tick with 40 due devices makes a linear number of calls (no fleet listing per offer)', async () => {
    const { controller, session, audit, directory } = setup();
    await directory.refresh(); // the receiver loads the directory's index before it starts (not part of a tick)
    now += 24 * HOUR; // every key (of unknown age: counted from the controller's start) is due
    const keyIds = new Set<number>();
    const due = await count(async () => {
      const outcomes = await controller.tick();
      expect(outcomes.map((outcome) => outcome.status)).toEqual(new Array(DEVICES).fill('offered'));
      for (const outcome of outcomes) keyIds.add((outcome as { keyId: number }).keyId);
    });
    console.log(`tick with ${DEVICES} due devices: ${JSON.stringify(due)}`);
    expect(session.published).toHaveLength(DEVICES);
    expect(audit.ofType('key.offered')).toHaveLength(DEVICES);
    expect(keyIds.size).toBe(DEVICES);
    // Per due device: a fresh read before acting (its thing and group for the enabled flag, 2 IoT; the
    // directory's GetItem + BatchGetItem and the store's GetItem + BatchGetItem, 4 DynamoDB) and the reservation
    // (PutItem key#<id>, UpdateItem device#<id>: 2 DynamoDB), then the current key's GetItem to seal the offer
    // under it (docs/protocol.md [KO-6]: 1 DynamoDB). Per tick: the fleet listing and the batched reads.
    expect(due.dynamodb).toBeLessThanOrEqual(7 * DEVICES + 2);
    expect(due.iot).toBeLessThanOrEqual(2 * DEVICES + 1);
    expect(due.iotByCommand.ListThingsInThingGroupCommand).toBe(1);
    expect(due.dynamodbByCommand.PutItemCommand).toBe(DEVICES);
  }, 60_000);
});

describe('key id reservation (moto)', () => {
  it('a drawn key id already in use fails the conditional put; the controller draws again', async () => {
    const random = firstKeyId(oldKeyId(2)); // dev-002's key id, drawn for dev-001
    const { controller, store } = setup(random);
    // dev-001 has the pending key of the previous test: confirm it so that a new rotation is an offer.
    const pending = (await store.get(deviceId(1)))!.keys.find((key) => key.state === 'pending')!;
    await store.apply(deviceId(1), { type: 'confirm', keyId: pending.keyId, othersNotAfter: now });
    const calls = await count(async () => {
      const outcome = await controller.rotate(deviceId(1));
      expect(outcome).toMatchObject({ deviceId: deviceId(1), status: 'offered' });
      expect((outcome as { keyId: number }).keyId).not.toBe(oldKeyId(2));
    });
    expect(random.keyIdDraws).toBe(2);
    const puts = dynamoCalls.filter((call) => call.command === 'PutItemCommand');
    expect(calls.dynamodbByCommand.PutItemCommand).toBe(2);
    expect((puts[0]!.input as { Item: { pk: { S: string } } }).Item.pk.S).toBe(`key#${oldKeyId(2)}`);
    // The existing key item still belongs to dev-002, with its own key.
    const kept = await clients.dynamodb.send(
      new GetItemCommand({ TableName: 'devices', Key: { pk: { S: `key#${oldKeyId(2)}` } } }),
    );
    expect(kept.Item?.deviceId?.S).toBe(deviceId(2));
    expect(kept.Item?.key?.B).toEqual(new Uint8Array(32).fill(2));
  });

  it('gives up after a bounded number of draws, naming the cause, and changes nothing', async () => {
    const always: RandomSource = {
      randomBytes: (length) =>
        length === 4 ? new Uint8Array([0, 0, 0x03, 0xe9]) : systemRandom.randomBytes(length), // 1001, dev-001's
    };
    const { controller, store, audit } = setup(always);
    const before = await store.get(deviceId(3));
    expect(before?.keys.some((key) => key.state === 'pending')).toBe(true);
    await store.apply(deviceId(3), {
      type: 'confirm',
      keyId: before!.keys.find((key) => key.state === 'pending')!.keyId,
      othersNotAfter: now,
    });
    const confirmed = await store.get(deviceId(3));
    const calls = await count(async () => {
      const outcome = await controller.rotate(deviceId(3));
      expect(outcome).toMatchObject({ deviceId: deviceId(3), status: 'failed' });
      expect((outcome as { error: string }).error).toMatch(
        /no free key id after 8 random draws: each was already reserved \(key ids 1001\)/,
      );
    });
    expect(calls.dynamodbByCommand.PutItemCommand).toBe(8);
    expect(calls.dynamodbByCommand.UpdateItemCommand).toBeUndefined();
    expect(await store.get(deviceId(3))).toEqual(confirmed);
    expect(audit.ofType('key.rotation-failed')).toEqual([
      expect.objectContaining({ deviceId: deviceId(3), error: expect.stringContaining('no free key id') }),
    ]);
  });
});
