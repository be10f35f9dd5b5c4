/**
 * DeviceDirectory on AWS IoT (who the device is and what it may open) plus a DynamoDB devices/keys table (key
 * material, never in thing attributes), served from an in-memory index. Record formats: device-record.ts.
 *
 * Contract (issue 14: no AWS call on the path of an unauthenticated datagram):
 * - The index holds every device of the fleet thing group (direct members) whose records parse: key id → (device,
 *   key) for the keys its device item lists, device id → device, and the enabled devices with fwknop settings.
 *   `byKeyId`, `fwknopCandidates` and `device` answer from it and NEVER call AWS: an unknown key id, or any junk,
 *   costs a Map lookup. A key item its device no longer lists, a thing outside the group, a key item naming
 *   another device: not indexed (unknown).
 * - Loaded by `start()` (the receiver awaits it before opening the SPA port; it rejects with the AWS error, and
 *   the receiver fails to start). Used without `start()` (tools, tests) the first lookup loads it.
 * - Refreshed in full every `refreshMs` (default 30 s, BLACKCLOUD_DIRECTORY_REFRESH_SECONDS) by a background timer,
 *   and for one device by `refreshDevice(id)` (the key store calls it after each key change in this process).
 *   The period alone bounds every other change (enrolment, disable, enable, removal, a thing edited in the
 *   console, a key rotated by another receiver): a change is seen within refreshMs plus one load. A generation
 *   item bumped by the CLI was not chosen: changes made outside the CLI (console, IaC, another receiver's
 *   rotation) would not bump it, so the period would still be the bound, and the poll would add a request
 *   per few seconds for a shorter delay on one path only.
 * - After every successful full load `onRefreshed` is called (the receiver brings the broker's dynamic security in
 *   step then, broker-sync.ts); `deviceStates()` lists every indexed device's id and enabled flag (undefined
 *   before the first load), from the index.
 * - A failed refresh keeps the last good index (never empties it), calls `onRefreshError` and counts it in
 *   `stats().refreshFailures`; the next period tries again. A malformed device is left out of the index and
 *   reported (`onDeviceError`); the rest load.
 * - Requests per full refresh, N fleet devices, K listed keys, pages of 250 names and 100 keys:
 *   ceil(N/250) ListThingsInThingGroup + N DescribeThing + ceil(N/100) + ceil(K/100) BatchGetItem (plus one
 *   BatchGetItem per page DynamoDB returns unprocessed). Linear; 2,000 devices with one key each: 2,048.
 *   `refreshDevice`: 1 DescribeThing, 1+ ListThingGroupsForThing, 1 GetItem, 1 BatchGetItem.
 * - Memory is bounded: at most `maxDevices` devices (default 100,000) and MAX_KEYS_PER_DEVICE keys each; a fleet
 *   above the bound fails the refresh (last good index kept) with an error naming the option. A device with one
 *   native key or fwknop settings costs about 0.7 KB in the index (measured over 20,000 with --expose-gc; budget
 *   1 KB each, so the default bound is about 100 MB at most; docs/operations-aws.md).
 */
import {
  BatchGetItemCommand,
  type BatchGetItemCommandOutput,
  type DynamoDBClient,
  GetItemCommand,
} from '@aws-sdk/client-dynamodb';
import { DescribeThingCommand, type IoTClient, paginateListThingGroupsForThing } from '@aws-sdk/client-iot';
import type {
  Clock,
  Device,
  DeviceDirectory,
  DeviceKey,
  RemoteEndpoint,
  Timers,
} from '../core/interfaces.ts';
import {
  type DeviceItem,
  deviceItemKey,
  type Item,
  keyItemKey,
  parseDeviceItem,
  parseKeyItem,
  parseThingAttributes,
  type ThingPolicy,
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
  /** Runs the background refresh after `start()`. Without it the index changes only by refresh()/refreshDevice(). */
  readonly timers?: Timers;
  /** Period of the background full refresh. Default 30 000 ms. */
  readonly refreshMs?: number;
  /** Bound of the index. Default 100 000 devices. */
  readonly maxDevices?: number;
  /** A fleet device left out of the index because its record is malformed. Default: ignored. */
  readonly onDeviceError?: (deviceId: string, error: unknown) => void;
  /** A refresh failed; the last good index stays. Default: ignored. */
  readonly onRefreshError?: (error: unknown) => void;
  /** A full load succeeded (the new index is in place). Default: ignored. */
  readonly onRefreshed?: () => void;
}

export interface DirectoryStats {
  readonly devices: number;
  readonly keys: number;
  /** clock.now() of the last successful full load; undefined before the first. */
  readonly loadedAt: number | undefined;
  readonly refreshFailures: number;
}

export const DEFAULT_DIRECTORY_REFRESH_MS = 30_000;
export const DEFAULT_DIRECTORY_MAX_DEVICES = 100_000;
export const MAX_KEYS_PER_DEVICE = 8;
const BATCH_GET_LIMIT = 100;
const FLEET_PAGE_SIZE = 250;
const LOAD_CONCURRENCY = 8;

interface Index {
  readonly devices: Map<string, Device>;
  readonly byKeyId: Map<number, { device: Device; key: DeviceKey }>;
  fwknop: readonly Device[];
}

function toDevice(
  id: string,
  policy: ThingPolicy,
  record: DeviceItem,
  nativeKeys: readonly DeviceKey[],
): Device {
  return {
    id,
    enabled: policy.enabled,
    allowedAccess: policy.allowedAccess,
    maxOpenSeconds: policy.maxOpenSeconds,
    nativeKeys,
    ...(policy.grantPrefix === undefined ? {} : { grantPrefix: policy.grantPrefix }),
    ...(policy.transport === undefined ? {} : { transport: policy.transport }),
    ...(record.fwknop === undefined ? {} : { fwknop: record.fwknop }),
  };
}

const isFwknopCandidate = (device: Device) => device.enabled && device.fwknop !== undefined;

export class IotDeviceDirectory implements DeviceDirectory {
  readonly #o: IotDeviceDirectoryOptions;
  readonly #refreshMs: number;
  readonly #maxDevices: number;
  #index: Index | undefined;
  #loadedAt: number | undefined;
  #failures = 0;
  #running: Promise<void> | undefined;
  #queued: Promise<void> | undefined;
  #timer: unknown;
  #closed = false;

  constructor(options: IotDeviceDirectoryOptions) {
    const refreshMs = options.refreshMs ?? DEFAULT_DIRECTORY_REFRESH_MS;
    const maxDevices = options.maxDevices ?? DEFAULT_DIRECTORY_MAX_DEVICES;
    if (!Number.isSafeInteger(refreshMs) || refreshMs < 1) {
      throw new RangeError(
        `IotDeviceDirectory refreshMs must be a positive integer, got ${String(refreshMs)}`,
      );
    }
    if (!Number.isSafeInteger(maxDevices) || maxDevices < 1) {
      throw new RangeError(
        `IotDeviceDirectory maxDevices must be a positive integer, got ${String(maxDevices)}`,
      );
    }
    this.#o = options;
    this.#refreshMs = refreshMs;
    this.#maxDevices = maxDevices;
  }

  /** Load the index (rejects with the AWS error when it cannot), then refresh it every refreshMs. */
  async start(): Promise<void> {
    await this.refresh();
    this.#schedule();
  }

  /** Stop the background refresh. The index stays readable. */
  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) this.#o.timers?.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async byKeyId(keyId: number): Promise<{ device: Device; key: DeviceKey } | undefined> {
    return (this.#index ?? (await this.#firstLoad())).byKeyId.get(keyId);
  }

  async fwknopCandidates(_source: RemoteEndpoint): Promise<readonly Device[]> {
    return (this.#index ?? (await this.#firstLoad())).fwknop;
  }

  /** One device by id (thing name), undefined when unknown or not in the fleet. From the index. */
  async device(deviceId: string): Promise<Device | undefined> {
    return (this.#index ?? (await this.#firstLoad())).devices.get(deviceId);
  }

  /** Every indexed device's id and enabled flag; undefined before the first load. */
  deviceStates(): readonly { readonly id: string; readonly enabled: boolean }[] | undefined {
    if (this.#index === undefined) return undefined;
    return [...this.#index.devices.values()].map((device) => ({ id: device.id, enabled: device.enabled }));
  }

  stats(): DirectoryStats {
    return {
      devices: this.#index?.devices.size ?? 0,
      keys: this.#index?.byKeyId.size ?? 0,
      loadedAt: this.#loadedAt,
      refreshFailures: this.#failures,
    };
  }

  /**
   * Reload the whole index now (a refresh already waiting is shared; one in progress is followed by a new one, so
   * the answer reflects changes made before the call). Rejects when the load fails; the last good index stays.
   */
  refresh(): Promise<void> {
    if (this.#queued !== undefined) return this.#queued;
    if (this.#running === undefined) return this.#run();
    const queued = this.#running
      .catch(() => undefined)
      .then(() => {
        this.#queued = undefined;
        return this.#run();
      });
    this.#queued = queued;
    return queued;
  }

  /** Reload one device (after a key change) into the index, after any full refresh in progress. */
  async refreshDevice(deviceId: string): Promise<void> {
    const index = this.#index ?? (await this.#firstLoad());
    await this.#running?.catch(() => undefined);
    let device: Device | undefined;
    try {
      device = await this.#loadDevice(deviceId);
    } catch (error) {
      if (!(error instanceof DeviceRecordError)) throw error;
      this.#o.onDeviceError?.(deviceId, error);
    }
    const current = this.#index ?? index;
    const old = current.devices.get(deviceId);
    for (const key of old?.nativeKeys ?? []) {
      if (current.byKeyId.get(key.keyId)?.device.id === deviceId) current.byKeyId.delete(key.keyId);
    }
    current.devices.delete(deviceId);
    if (device !== undefined) {
      current.devices.set(deviceId, device);
      for (const key of device.nativeKeys) current.byKeyId.set(key.keyId, { device, key });
    }
    current.fwknop = [...current.devices.values()].filter(isFwknopCandidate);
  }

  #firstLoad(): Promise<Index> {
    return this.refresh().then(() => {
      if (this.#index === undefined) throw new Error('device directory: the first load produced no index');
      return this.#index;
    });
  }

  #run(): Promise<void> {
    const run = this.#loadAll().then(
      (index) => {
        this.#index = index;
        this.#loadedAt = this.#o.clock.now();
        this.#o.onRefreshed?.();
      },
      (error: unknown) => {
        this.#failures++;
        this.#o.onRefreshError?.(error);
        throw error;
      },
    );
    const settled = run.finally(() => {
      if (this.#running === settled) this.#running = undefined;
    });
    this.#running = settled;
    return settled;
  }

  #schedule(): void {
    const timers = this.#o.timers;
    if (timers === undefined || this.#closed) return;
    this.#timer = timers.setTimeout(() => {
      this.#timer = undefined;
      this.refresh().then(
        () => this.#schedule(),
        () => this.#schedule(), // counted and reported by #run; the last good index stays
      );
    }, this.#refreshMs);
  }

  async #loadAll(): Promise<Index> {
    const names = await listFleetThings(this.#o.iot, this.#o.fleetThingGroup, FLEET_PAGE_SIZE);
    if (names.length > this.#maxDevices) {
      throw new RangeError(
        `fleet thing group ${JSON.stringify(this.#o.fleetThingGroup)} has ${names.length} things, above the ` +
          `directory's bound of ${this.#maxDevices} (maxDevices): raise it, or split the fleet`,
      );
    }
    const policies = new Map<string, ThingPolicy>();
    const skip = (deviceId: string, error: unknown) => {
      if (!(error instanceof DeviceRecordError)) throw error;
      this.#o.onDeviceError?.(deviceId, error);
    };
    for (let i = 0; i < names.length; i += LOAD_CONCURRENCY) {
      await Promise.all(
        names.slice(i, i + LOAD_CONCURRENCY).map(async (deviceId) => {
          let attributes: Record<string, string> | undefined;
          try {
            attributes = (await this.#o.iot.send(new DescribeThingCommand({ thingName: deviceId })))
              .attributes;
          } catch (error) {
            if (awsErrorCode(error) === 'ResourceNotFoundException') return; // deleted since the listing
            throw error;
          }
          try {
            policies.set(deviceId, parseThingAttributes(deviceId, attributes, this.#o.defaultMaxOpenSeconds));
          } catch (error) {
            skip(deviceId, error);
          }
        }),
      );
    }
    const deviceItems = await this.#batchGet([...policies.keys()].map(deviceItemKey));
    const records = new Map<string, DeviceItem>();
    for (const deviceId of policies.keys()) {
      try {
        const record = parseDeviceItem(deviceId, deviceItems.get(deviceItemKey(deviceId)));
        if (record.keyIds.length > MAX_KEYS_PER_DEVICE) {
          throw new DeviceRecordError(
            `devices-table item ${JSON.stringify(deviceItemKey(deviceId))} lists ${record.keyIds.length} keyIds, ` +
              `above ${MAX_KEYS_PER_DEVICE}: remove retired keys from it`,
          );
        }
        records.set(deviceId, record);
      } catch (error) {
        skip(deviceId, error);
      }
    }
    const keyItems = await this.#batchGet([...records.values()].flatMap((r) => r.keyIds.map(keyItemKey)));
    const index: Index = { devices: new Map(), byKeyId: new Map(), fwknop: [] };
    for (const [deviceId, record] of records) {
      let nativeKeys: DeviceKey[];
      try {
        nativeKeys = this.#keysOf(
          deviceId,
          record.keyIds.flatMap((id) => {
            const item = keyItems.get(keyItemKey(id));
            return item === undefined ? [] : [item];
          }),
        );
      } catch (error) {
        skip(deviceId, error);
        continue;
      }
      const policy = policies.get(deviceId);
      if (policy === undefined) continue;
      const device = toDevice(deviceId, policy, record, nativeKeys);
      index.devices.set(deviceId, device);
      for (const key of nativeKeys) index.byKeyId.set(key.keyId, { device, key });
    }
    index.fwknop = [...index.devices.values()].filter(isFwknopCandidate);
    return index;
  }

  /** Items by pk, BatchGetItem in batches of 100, unprocessed keys retried. */
  async #batchGet(pks: readonly string[]): Promise<Map<string, Item>> {
    const items = new Map<string, Item>();
    const table = this.#o.devicesTable;
    for (let i = 0; i < pks.length; i += BATCH_GET_LIMIT) {
      let keys: Item[] | undefined = pks.slice(i, i + BATCH_GET_LIMIT).map((pk) => ({ pk: { S: pk } }));
      while (keys !== undefined && keys.length > 0) {
        const result: BatchGetItemCommandOutput = await this.#o.dynamodb.send(
          new BatchGetItemCommand({ RequestItems: { [table]: { Keys: keys } } }),
        );
        for (const item of result.Responses?.[table] ?? []) {
          const pk = item.pk?.S;
          if (pk !== undefined) items.set(pk, item);
        }
        keys = result.UnprocessedKeys?.[table]?.Keys;
      }
    }
    return items;
  }

  /** The device's listed keys; a key item naming another device is a DeviceRecordError. */
  #keysOf(deviceId: string, items: readonly Item[]): DeviceKey[] {
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

  /** One device read directly (refreshDevice): undefined when its thing is gone or outside the fleet group. */
  async #loadDevice(deviceId: string): Promise<Device | undefined> {
    let attributes: Record<string, string> | undefined;
    try {
      const thing = await this.#o.iot.send(new DescribeThingCommand({ thingName: deviceId }));
      attributes = thing.attributes;
    } catch (error) {
      if (awsErrorCode(error) === 'ResourceNotFoundException') return undefined;
      throw error;
    }
    if (!(await this.#inFleet(deviceId))) return undefined;
    const policy = parseThingAttributes(deviceId, attributes, this.#o.defaultMaxOpenSeconds);
    const item = await this.#o.dynamodb.send(
      new GetItemCommand({ TableName: this.#o.devicesTable, Key: { pk: { S: deviceItemKey(deviceId) } } }),
    );
    const record = parseDeviceItem(deviceId, item.Item);
    const keyItems = await this.#batchGet(record.keyIds.slice(0, MAX_KEYS_PER_DEVICE).map(keyItemKey));
    return toDevice(deviceId, policy, record, this.#keysOf(deviceId, [...keyItems.values()]));
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
}
