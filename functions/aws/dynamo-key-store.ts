/**
 * KeyGenerationStore on AWS: the fleet thing group (AWS IoT) names the devices, the DynamoDB devices/keys table
 * holds the key generations (record formats: functions/aws/device-record.ts). Key items gain three
 * attributes for rotation: `generation` N, `state` S ('pending' | 'current'; missing = current), `createdAt` N
 * (epoch ms).
 *
 * Contract:
 * - `list()` lists the fleet once and reads the device and key items in batches (BatchGetItem, 100 keys per call,
 *   consistent), never per device; it leaves `enabled` out (a thing attribute: `get` reads it, through the
 *   directory). `get` reads one device: the directory (cached), then its device item and its key items (a batch).
 * - `apply` is serialised per store. 'add-pending' writes the key item first, conditional on `key#<id>` not
 *   existing: that put is the key id's reservation, and a taken id rejects with `KeyIdTakenError` (nothing
 *   changed; the controller draws another). Then it adds the id to the device item's `keyIds`, so the receiver
 *   never sees an id without its key.
 *   'confirm' sets the key's state, then lowers every other listed key's `notAfter` (a condition keeps an
 *   earlier end). 'remove' drops the ids from `keyIds` first (the receiver refuses them from then on), then
 *   deletes the key items.
 * - After each change `onChange` runs (by default `IotDeviceDirectory.refreshDevice(deviceId)`), so this
 *   receiver's device index has the change at once (other receivers see it at their next index refresh).
 * - AWS failures reject (the controller audits them as 'key.rotation-failed'); malformed records throw
 *   `DeviceRecordError`. Key material is never logged.
 */
import {
  BatchGetItemCommand,
  type BatchGetItemCommandOutput,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import type { IoTClient } from '@aws-sdk/client-iot';
import {
  type DeviceKeys,
  type KeyChange,
  type KeyGeneration,
  type KeyGenerationStore,
  KeyIdTakenError,
  type ListedDeviceKeys,
} from '../core/key-rotation-interfaces.ts';
import {
  deviceItemKey,
  type Item,
  keyItem,
  keyItemKey,
  parseDeviceItem,
  parseKeyItem,
} from './device-record.ts';
import { awsErrorCode, DeviceRecordError } from './errors.ts';
import { listFleetThings } from './fleet-things.ts';
import type { IotDeviceDirectory } from './iot-device-directory.ts';

export interface DynamoKeyStoreOptions {
  readonly iot: IoTClient;
  readonly dynamodb: DynamoDBClient;
  readonly devicesTable: string;
  readonly fleetThingGroup: string;
  /** For the devices' enabled flag (its index), and the changed device reloaded into it after each change. */
  readonly directory: IotDeviceDirectory;
  /** @default directory.refreshDevice(deviceId) */
  readonly onChange?: () => Promise<void> | void;
}

const BATCH_GET_LIMIT = 100;
const BATCH_GET_ATTEMPTS = 5;

function generationOf(item: Item): KeyGeneration {
  const { key } = parseKeyItem(item);
  const generation = item.generation?.N === undefined ? 0 : Number(item.generation.N);
  const state = item.state?.S ?? 'current';
  const createdAt = item.createdAt?.N === undefined ? undefined : Number(item.createdAt.N);
  if (!Number.isSafeInteger(generation) || generation < 0 || (state !== 'current' && state !== 'pending')) {
    throw new DeviceRecordError(
      `devices-table item ${JSON.stringify(keyItemKey(key.keyId))}: generation must be an integer >= 0 (N) and ` +
        `state "pending" or "current" (S)`,
    );
  }
  return {
    keyId: key.keyId,
    generation,
    state,
    ...(createdAt === undefined ? {} : { createdAt }),
    ...(key.notAfter === undefined ? {} : { notAfter: key.notAfter }),
  };
}

export class DynamoKeyStore implements KeyGenerationStore {
  readonly #o: DynamoKeyStoreOptions;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(options: DynamoKeyStoreOptions) {
    this.#o = options;
  }

  async #getItem(pk: string): Promise<Item | undefined> {
    const result = await this.#o.dynamodb.send(
      new GetItemCommand({ TableName: this.#o.devicesTable, Key: { pk: { S: pk } }, ConsistentRead: true }),
    );
    return result.Item;
  }

  /** The items named by `pks` that exist, keyed by pk: one consistent BatchGetItem per 100 keys. */
  async #batchGet(pks: readonly string[]): Promise<Map<string, Item>> {
    const { dynamodb, devicesTable } = this.#o;
    const found = new Map<string, Item>();
    const unique = [...new Set(pks)]; // BatchGetItem refuses duplicate keys
    for (let i = 0; i < unique.length; i += BATCH_GET_LIMIT) {
      let keys: Item[] = unique.slice(i, i + BATCH_GET_LIMIT).map((pk) => ({ pk: { S: pk } }));
      for (let attempt = 1; keys.length > 0; attempt++) {
        if (attempt > BATCH_GET_ATTEMPTS) {
          throw new Error(
            `devices table ${devicesTable}: BatchGetItem left ${keys.length} keys unprocessed after ` +
              `${BATCH_GET_ATTEMPTS} attempts (throttled?): retried at the next tick`,
          );
        }
        const result: BatchGetItemCommandOutput = await dynamodb.send(
          new BatchGetItemCommand({ RequestItems: { [devicesTable]: { Keys: keys, ConsistentRead: true } } }),
        );
        for (const item of result.Responses?.[devicesTable] ?? []) {
          if (item.pk?.S !== undefined) found.set(item.pk.S, item);
        }
        keys = result.UnprocessedKeys?.[devicesTable]?.Keys ?? [];
      }
    }
    return found;
  }

  /** The generations of each device, from their device items: two batched reads for any number of devices. */
  async #generations(deviceIds: readonly string[]): Promise<Map<string, KeyGeneration[]>> {
    const deviceItems = await this.#batchGet(deviceIds.map(deviceItemKey));
    const records = deviceIds.map(
      (deviceId) => [deviceId, parseDeviceItem(deviceId, deviceItems.get(deviceItemKey(deviceId)))] as const,
    );
    const keyItems = await this.#batchGet(records.flatMap(([, record]) => record.keyIds.map(keyItemKey)));
    const generations = new Map<string, KeyGeneration[]>();
    for (const [deviceId, record] of records) {
      const keys: KeyGeneration[] = [];
      for (const keyId of record.keyIds) {
        const item = keyItems.get(keyItemKey(keyId));
        if (item !== undefined && item.deviceId?.S === deviceId) keys.push(generationOf(item));
      }
      generations.set(
        deviceId,
        keys.sort((a, b) => a.generation - b.generation),
      );
    }
    return generations;
  }

  /**
   * Every fleet device's generations, for the schedule: one fleet listing, then batched reads (device items, key
   * items; 100 per call). `enabled` is left out (a thing attribute, one DescribeThing per device): the controller
   * reads it with `get` for the devices it acts on.
   */
  async list(): Promise<readonly ListedDeviceKeys[]> {
    const fleet = await listFleetThings(this.#o.iot, this.#o.fleetThingGroup);
    const generations = await this.#generations(fleet);
    return fleet.map((deviceId) => ({ deviceId, keys: generations.get(deviceId) ?? [] }));
  }

  async get(deviceId: string): Promise<DeviceKeys | undefined> {
    const device = await this.#o.directory.device(deviceId);
    if (device === undefined) return undefined;
    const keys = (await this.#generations([deviceId])).get(deviceId) ?? [];
    return { deviceId, enabled: device.enabled, keys };
  }

  async keyMaterial(deviceId: string, keyId: number): Promise<Uint8Array | undefined> {
    const item = await this.#getItem(keyItemKey(keyId));
    if (item === undefined) return undefined;
    const parsed = parseKeyItem(item);
    return parsed.deviceId === deviceId ? parsed.key.key : undefined;
  }

  apply(deviceId: string, change: KeyChange): Promise<void> {
    const run = this.#queue.then(() => this.#apply(deviceId, change));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #apply(deviceId: string, change: KeyChange): Promise<void> {
    const { dynamodb, devicesTable: TableName } = this.#o;
    const deviceKey = { pk: { S: deviceItemKey(deviceId) } };
    if (change.type === 'add-pending') {
      try {
        // The reservation: the key item exists once, so no two devices (or rotations) can hold one key id.
        await dynamodb.send(
          new PutItemCommand({
            TableName,
            Item: {
              ...keyItem(deviceId, { keyId: change.keyId, key: change.key }),
              generation: { N: String(change.generation) },
              state: { S: 'pending' },
              createdAt: { N: String(change.createdAt) },
            },
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        );
      } catch (error) {
        if (awsErrorCode(error) !== 'ConditionalCheckFailedException') throw error;
        throw new KeyIdTakenError(
          change.keyId,
          `key id ${change.keyId} is already reserved (${keyItemKey(change.keyId)} exists in ${TableName}): ` +
            'draw another key id',
        );
      }
      await dynamodb.send(
        new UpdateItemCommand({
          TableName,
          Key: deviceKey,
          UpdateExpression: 'SET deviceId = :d ADD keyIds :k',
          ExpressionAttributeValues: { ':d': { S: deviceId }, ':k': { NS: [String(change.keyId)] } },
        }),
      );
    } else if (change.type === 'confirm') {
      const others = ((await this.#generations([deviceId])).get(deviceId) ?? []).filter(
        (k) => k.keyId !== change.keyId,
      );
      await dynamodb.send(
        new UpdateItemCommand({
          TableName,
          Key: { pk: { S: keyItemKey(change.keyId) } },
          UpdateExpression: 'SET #state = :current',
          ConditionExpression: 'deviceId = :d',
          ExpressionAttributeNames: { '#state': 'state' },
          ExpressionAttributeValues: { ':current': { S: 'current' }, ':d': { S: deviceId } },
        }),
      );
      for (const other of others) {
        try {
          await dynamodb.send(
            new UpdateItemCommand({
              TableName,
              Key: { pk: { S: keyItemKey(other.keyId) } },
              UpdateExpression: 'SET notAfter = :t',
              ConditionExpression: 'attribute_not_exists(notAfter) OR notAfter > :t',
              ExpressionAttributeValues: { ':t': { N: String(change.othersNotAfter) } },
            }),
          );
        } catch (error) {
          if (awsErrorCode(error) !== 'ConditionalCheckFailedException') throw error; // already ends earlier
        }
      }
    } else {
      await dynamodb.send(
        new UpdateItemCommand({
          TableName,
          Key: deviceKey,
          UpdateExpression: 'DELETE keyIds :k',
          ExpressionAttributeValues: { ':k': { NS: change.keyIds.map(String) } },
        }),
      );
      for (const keyId of change.keyIds) {
        await dynamodb.send(new DeleteItemCommand({ TableName, Key: { pk: { S: keyItemKey(keyId) } } }));
      }
    }
    await (this.#o.onChange ?? (() => this.#o.directory.refreshDevice(deviceId)))();
  }
}
