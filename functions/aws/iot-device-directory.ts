/**
 * DeviceDirectory on AWS IoT (who the device is and what it may open) plus a DynamoDB devices/keys table (key
 * material, never in thing attributes). Record formats: device-record.ts.
 *
 * A device is known when its thing exists AND is a direct member of the fleet thing group; otherwise it is
 * unknown (undefined), whatever the keys table says.
 *   byKeyId(k):  GetItem key#<k> → owner → device (DescribeThing, ListThingGroupsForThing, GetItem device#<id>,
 *                BatchGetItem of its keyIds) → the key, only if the device item still lists it.
 *   fwknopCandidates(): every enabled fleet device with fwknop settings (fwknop has no key id; the native
 *                format scales better).
 * Answers are cached with a bound (TTL by the injected clock + max entries, negative answers too), so a disabled
 * device or a revoked key takes effect within `cacheTtlMs`. AWS failures reject (the receiver fails closed);
 * malformed records throw DeviceRecordError naming the attribute and the fix.
 */
import {
  BatchGetItemCommand,
  type BatchGetItemCommandOutput,
  type DynamoDBClient,
  GetItemCommand,
} from '@aws-sdk/client-dynamodb';
import { DescribeThingCommand, type IoTClient, paginateListThingGroupsForThing } from '@aws-sdk/client-iot';
import type { Clock, Device, DeviceDirectory, DeviceKey, RemoteEndpoint } from '../core/interfaces.ts';
import { BoundedCache } from './bounded-cache.ts';
import {
  deviceItemKey,
  type Item,
  keyItemKey,
  parseDeviceItem,
  parseKeyItem,
  parseThingAttributes,
} from './device-record.ts';
import { awsErrorCode, DeviceRecordError } from './errors.ts';
import { listFleetThings } from './fleet-things.ts';

export interface IotDeviceDirectoryOptions {
  readonly iot: IoTClient;
  readonly dynamodb: DynamoDBClient;
  readonly devicesTable: string;
  readonly fleetThingGroup: string;
  readonly clock: Clock;
  /** maxOpenSeconds for things without the attribute. */
  readonly defaultMaxOpenSeconds: number;
  /** How long an answer is reused. Default 30 000 ms. */
  readonly cacheTtlMs?: number;
  /** Bound of each cache (devices, key owners). Default 10 000. */
  readonly cacheMaxEntries?: number;
  /** A fleet device skipped from fwknop candidates because its record is malformed. Default: ignored. */
  readonly onDeviceError?: (deviceId: string, error: unknown) => void;
}

const BATCH_GET_LIMIT = 100;
const LOAD_CONCURRENCY = 8;

export class IotDeviceDirectory implements DeviceDirectory {
  readonly #o: IotDeviceDirectoryOptions;
  readonly #devices: BoundedCache<string, Device | null>;
  readonly #keyOwners: BoundedCache<number, string | null>;
  readonly #fleet: BoundedCache<'fleet', readonly string[]>;

  constructor(options: IotDeviceDirectoryOptions) {
    this.#o = options;
    const ttlMs = options.cacheTtlMs ?? 30_000;
    const maxEntries = options.cacheMaxEntries ?? 10_000;
    this.#devices = new BoundedCache({ ttlMs, maxEntries, clock: options.clock });
    this.#keyOwners = new BoundedCache({ ttlMs, maxEntries, clock: options.clock });
    this.#fleet = new BoundedCache({ ttlMs, maxEntries: 1, clock: options.clock });
  }

  async byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined> {
    const owner = await this.#keyOwners.getOrLoad(keyId, () => this.#loadKeyOwner(keyId));
    if (owner === null) return undefined;
    const device = await this.device(owner);
    const key = device?.nativeKeys.find((k) => k.keyId === keyId);
    return device === undefined || key === undefined ? undefined : { device, key };
  }

  async fwknopCandidates(_source: RemoteEndpoint): Promise<readonly Device[]> {
    const ids = await this.#fleet.getOrLoad('fleet', () => this.#listFleet());
    const candidates: Device[] = [];
    for (let i = 0; i < ids.length; i += LOAD_CONCURRENCY) {
      const chunk = ids.slice(i, i + LOAD_CONCURRENCY);
      const devices = await Promise.all(
        chunk.map((id) =>
          this.device(id).catch((error: unknown) => {
            if (!(error instanceof DeviceRecordError)) throw error;
            this.#o.onDeviceError?.(id, error);
            return undefined;
          }),
        ),
      );
      for (const device of devices) {
        if (device?.enabled === true && device.fwknop !== undefined) candidates.push(device);
      }
    }
    return candidates;
  }

  /** One device by id (thing name), undefined when unknown or not in the fleet. Cached. */
  async device(deviceId: string): Promise<Device | undefined> {
    const device = await this.#devices.getOrLoad(deviceId, () => this.#loadDevice(deviceId));
    return device ?? undefined;
  }

  /** Forget every cached answer (after provisioning changes, in tools and tests). */
  invalidate(): void {
    this.#devices.clear();
    this.#keyOwners.clear();
    this.#fleet.clear();
  }

  async #loadKeyOwner(keyId: number): Promise<string | null> {
    const result = await this.#o.dynamodb.send(
      new GetItemCommand({
        TableName: this.#o.devicesTable,
        Key: { pk: { S: keyItemKey(keyId) } },
        ProjectionExpression: 'deviceId',
      }),
    );
    return result.Item?.deviceId?.S ?? null;
  }

  async #loadDevice(deviceId: string): Promise<Device | null> {
    let attributes: Record<string, string> | undefined;
    try {
      const thing = await this.#o.iot.send(new DescribeThingCommand({ thingName: deviceId }));
      attributes = thing.attributes;
    } catch (error) {
      if (awsErrorCode(error) === 'ResourceNotFoundException') return null;
      throw error;
    }
    if (!(await this.#inFleet(deviceId))) return null;
    const policy = parseThingAttributes(deviceId, attributes, this.#o.defaultMaxOpenSeconds);
    const item = await this.#o.dynamodb.send(
      new GetItemCommand({ TableName: this.#o.devicesTable, Key: { pk: { S: deviceItemKey(deviceId) } } }),
    );
    const record = parseDeviceItem(deviceId, item.Item);
    const nativeKeys = await this.#loadKeys(deviceId, record.keyIds);
    return {
      id: deviceId,
      enabled: policy.enabled,
      allowedAccess: policy.allowedAccess,
      maxOpenSeconds: policy.maxOpenSeconds,
      nativeKeys,
      ...(record.fwknop === undefined ? {} : { fwknop: record.fwknop }),
    };
  }

  async #inFleet(deviceId: string): Promise<boolean> {
    for await (const page of paginateListThingGroupsForThing(
      { client: this.#o.iot },
      { thingName: deviceId },
    )) {
      if (page.thingGroups?.some((g) => g.groupName === this.#o.fleetThingGroup) === true) return true;
    }
    return false;
  }

  async #loadKeys(deviceId: string, keyIds: readonly number[]): Promise<DeviceKey[]> {
    const items: Item[] = [];
    for (let i = 0; i < keyIds.length; i += BATCH_GET_LIMIT) {
      let request: Record<string, { Keys: Item[] }> | undefined = {
        [this.#o.devicesTable]: {
          Keys: keyIds.slice(i, i + BATCH_GET_LIMIT).map((id) => ({ pk: { S: keyItemKey(id) } })),
        },
      };
      while (request !== undefined) {
        const result: BatchGetItemCommandOutput = await this.#o.dynamodb.send(
          new BatchGetItemCommand({ RequestItems: request }),
        );
        items.push(...(result.Responses?.[this.#o.devicesTable] ?? []));
        const unprocessed: Item[] | undefined = result.UnprocessedKeys?.[this.#o.devicesTable]?.Keys;
        request =
          unprocessed !== undefined && unprocessed.length > 0
            ? { [this.#o.devicesTable]: { Keys: unprocessed } }
            : undefined;
      }
    }
    const keys = items.map(parseKeyItem);
    for (const k of keys) {
      if (k.deviceId !== deviceId) {
        throw new DeviceRecordError(
          `devices-table item ${JSON.stringify(keyItemKey(k.key.keyId))} belongs to ${JSON.stringify(k.deviceId)} ` +
            `but device ${JSON.stringify(deviceId)} lists it in keyIds: remove it from one of them`,
        );
      }
    }
    return keys.map((k) => k.key).sort((a, b) => a.keyId - b.keyId);
  }

  #listFleet(): Promise<readonly string[]> {
    return listFleetThings(this.#o.iot, this.#o.fleetThingGroup);
  }
}
