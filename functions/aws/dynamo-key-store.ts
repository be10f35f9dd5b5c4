/**
 * KeyGenerationStore on AWS: the fleet thing group (AWS IoT) names the devices, the DynamoDB devices/keys table
 * holds the key generations (record formats: functions/aws/device-record.ts). Key items gain three
 * attributes for rotation: `generation` N, `state` S ('pending' | 'current'; missing = current), `createdAt` N
 * (epoch ms).
 *
 * Contract:
 * - `apply` is serialised per store. 'add-pending' writes the key item first (conditional: the key id must be
 *   new), then adds its id to the device item's `keyIds`, so the receiver never sees an id without its key.
 *   'confirm' sets the key's state, then lowers every other listed key's `notAfter` (a condition keeps an
 *   earlier end). 'remove' drops the ids from `keyIds` first (the receiver refuses them from then on), then
 *   deletes the key items.
 * - After each change `onChange` runs (by default `IotDeviceDirectory.refreshDevice(deviceId)`), so this
 *   receiver's device index has the change at once (other receivers see it at their next index refresh).
 * - AWS failures reject (the controller audits them as 'key.rotation-failed'); malformed records throw
 *   `DeviceRecordError`. Key material is never logged.
 */
import {
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import type { IoTClient } from '@aws-sdk/client-iot';
import type {
  DeviceKeys,
  KeyChange,
  KeyGeneration,
  KeyGenerationStore,
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

  #fleet(): Promise<string[]> {
    return listFleetThings(this.#o.iot, this.#o.fleetThingGroup);
  }

  async #getItem(pk: string): Promise<Item | undefined> {
    const result = await this.#o.dynamodb.send(
      new GetItemCommand({ TableName: this.#o.devicesTable, Key: { pk: { S: pk } }, ConsistentRead: true }),
    );
    return result.Item;
  }

  async #keyItems(deviceId: string): Promise<Item[]> {
    const record = parseDeviceItem(deviceId, await this.#getItem(deviceItemKey(deviceId)));
    const items: Item[] = [];
    for (const keyId of record.keyIds) {
      const item = await this.#getItem(keyItemKey(keyId));
      if (item !== undefined && item.deviceId?.S === deviceId) items.push(item);
    }
    return items;
  }

  async list(): Promise<readonly DeviceKeys[]> {
    const devices: DeviceKeys[] = [];
    for (const deviceId of await this.#fleet()) {
      const found = await this.get(deviceId);
      if (found !== undefined) devices.push(found);
    }
    return devices;
  }

  async get(deviceId: string): Promise<DeviceKeys | undefined> {
    const device = await this.#o.directory.device(deviceId);
    if (device === undefined) return undefined;
    const keys = (await this.#keyItems(deviceId))
      .map(generationOf)
      .sort((a, b) => a.generation - b.generation);
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
      await dynamodb.send(
        new UpdateItemCommand({
          TableName,
          Key: deviceKey,
          UpdateExpression: 'SET deviceId = :d ADD keyIds :k',
          ExpressionAttributeValues: { ':d': { S: deviceId }, ':k': { NS: [String(change.keyId)] } },
        }),
      );
    } else if (change.type === 'confirm') {
      const others = (await this.#keyItems(deviceId))
        .map(generationOf)
        .filter((k) => k.keyId !== change.keyId);
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
