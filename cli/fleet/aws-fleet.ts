/**
 * The Fleet of a deployed black cloud on AWS (fleet.ts), found through its CloudFormation outputs
 * (stack-outputs.ts). Record formats are the receiver's (functions/aws/device-record.ts):
 *   - identity, enabled flag, allowed ports: an AWS IoT thing (thing type of the stack) in the fleet thing group;
 *   - key material: the devices table (`device#<id>` lists the key ids, `key#<keyId>` holds the 32-byte key and
 *     the fwknop keys sit in the device item): never in thing attributes;
 *   - open grants: the grants table + the broker security groups' `blackcloud:` rules;
 *   - audit: the audit log group (receiver lines `{"kind":"audit",...}`); operator actions are written to the
 *     stream `operator-<user>-<host>` of the same group.
 *
 * Enrolment order, so that nothing half-created survives (`enrol` rolls back on failure; a killed run leaves a
 * 'partial' device that the next `enrol` removes first):
 *   1. device item with `enrolment = pending` (conditional: the id is free) — it names the key ids to clean up;
 *   2. key item (conditional: the key id is free; a collision picks another id);
 *   3. the thing (attributes enabled/allowedAccess/maxOpenSeconds, and transport=plain for a plain device) and its
 *      fleet group membership;
 *   4. the client certificate from the operator's CA (none for a plain device: it logs in on the broker's plain
 *      listener with each knock's one-time credential, docs/fleet.md "Plain devices on AWS"), and the bundle
 *      directory `<out>/<id>/` (files 0600, written to a temporary directory and renamed into place);
 *   5. `enrolment` removed from the device item: the device is 'present'.
 *
 * What the CLI cannot do on AWS: close a device's established MQTT session (the broker is reachable only from
 * inside the black cloud). `setEnabled(id, false)` therefore reports `disconnected: undefined` and a note; the
 * receiver refuses the device's knocks once its directory cache (30 s) expires.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import {
  type AttributeValue,
  BatchGetItemCommand,
  type BatchGetItemCommandOutput,
  DeleteItemCommand,
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  AddThingToThingGroupCommand,
  CreateThingCommand,
  DeleteThingCommand,
  DescribeThingCommand,
  RemoveThingFromThingGroupCommand,
  UpdateThingCommand,
} from '@aws-sdk/client-iot';
import {
  deviceItem,
  deviceItemKey,
  formatAccessList,
  keyItem,
  keyItemKey,
  parseDeviceItem,
} from '../../functions/aws/device-record.ts';
import { DynamoGrantStore } from '../../functions/aws/dynamo-grant-store.ts';
import { awsErrorCode } from '../../functions/aws/errors.ts';
import { listFleetThings } from '../../functions/aws/fleet-things.ts';
import { defaultRetryPolicy, type RetryPolicy } from '../../functions/aws/retry.ts';
import { DEFAULT_STACK_NAME } from '../../functions/core/deployment.ts';
import {
  FWKNOP_PROVISIONED_HMAC_KEY_LENGTH,
  FWKNOP_PROVISIONED_KEY_LENGTH,
} from '../../functions/core/device-config.ts';
import type { Clock, FwknopSettings, RandomSource } from '../../functions/core/interfaces.ts';
import { systemClock, systemRandom } from '../../functions/core/system.ts';
import { checkDeviceName } from '../../functions/local/provision-device.ts';
import { issueCertificate, type Pem } from '../../functions/pki/certificate-authority.ts';
import { BC1_KEY_LENGTH } from '../../spa/limits.ts';
import type { AccessEntry } from '../../spa/types.ts';
import { createOperatorClients, explainAwsError, type OperatorClients } from './aws-clients.ts';
import { type AwsGrantDeps, listAwsGrants, revokeAwsGrants } from './aws-grants.ts';
import { OperatorAuditLog, readAuditLog } from './cloudwatch-audit.ts';
import { bundleFiles, writeBundle } from './device-bundle.ts';
import {
  type AuditQuery,
  type AuditRecord,
  type CutOffResult,
  checkEnrolRequest,
  type DeviceState,
  type DeviceSummary,
  type EnrolledDevice,
  type EnrolRequest,
  type Fleet,
  FleetError,
  type FleetGrant,
  type GrantSelector,
} from './fleet.ts';
import { type FleetFlags, operatorName } from './fleet-flags.ts';
import { type OperatorAction, operatorAuditRecord } from './operator-audit.ts';
import { loadOperatorCa, revokeSerial } from './operator-ca.ts';
import { describeFleetStack, type FleetStack } from './stack-outputs.ts';

export const DEFAULT_CA_DIR = join(homedir(), '.blackcloud', 'ca');
export const DEFAULT_BUNDLE_DIR = 'blackcloud-devices';
const ENROLMENT_ATTRIBUTE = 'enrolment';
const CERT_SERIAL_ATTRIBUTE = 'certSerial';
const BATCH_GET_LIMIT = 100;
const LIST_CONCURRENCY = 8;
const KEY_ID_ATTEMPTS = 5;

export interface AwsFleetOptions {
  readonly clients: Pick<OperatorClients, 'iot' | 'dynamodb' | 'ec2' | 'logs'>;
  readonly stack: FleetStack;
  /** The operator's CA directory (ca.crt, ca.key: PEM, EC P-256; infra/tls/blackcloud-tls.sh makes it). */
  readonly caDir: string;
  /** Where device bundles are written (one directory per device). */
  readonly bundleDir: string;
  readonly operator: string;
  readonly clock?: Clock;
  readonly random?: RandomSource;
  readonly retry?: RetryPolicy;
  /** How often `audit --follow` polls the log group. @default 2000 */
  readonly followPollMs?: number;
}

type Item = Record<string, AttributeValue>;

function conditionFailed(error: unknown): boolean {
  return awsErrorCode(error) === 'ConditionalCheckFailedException';
}

function notFound(error: unknown): boolean {
  return awsErrorCode(error) === 'ResourceNotFoundException';
}

function u32(random: RandomSource): number {
  return Buffer.from(random.randomBytes(4)).readUInt32BE(0);
}

export class AwsFleet implements Fleet {
  readonly backend = 'aws' as const;
  readonly stack: FleetStack;
  readonly #o: AwsFleetOptions;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #grants: DynamoGrantStore;
  readonly #auditLog: OperatorAuditLog;
  #ca: Promise<Pem> | undefined;

  constructor(options: AwsFleetOptions) {
    this.#o = options;
    this.stack = options.stack;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? systemRandom;
    this.#auditLog = new OperatorAuditLog(
      options.clients.logs,
      options.stack.auditLogGroup,
      options.operator,
    );
    this.#grants = new DynamoGrantStore({
      dynamodb: options.clients.dynamodb,
      tableName: options.stack.grantsTable,
    });
  }

  get description(): string {
    return `stack ${this.stack.stackName} in ${this.stack.region}`;
  }

  // ----- devices -----------------------------------------------------------------------------

  async state(deviceId: string): Promise<DeviceState> {
    checkDeviceName(deviceId);
    const item = await this.#deviceItem(deviceId);
    if (item !== undefined) return item[ENROLMENT_ATTRIBUTE] === undefined ? 'present' : 'partial';
    if ((await this.#describeThing(deviceId)) !== undefined) {
      throw new FleetError(
        `thing ${JSON.stringify(deviceId)} exists but has no ${deviceItemKey(deviceId)} item in ` +
          `${this.stack.devicesTable}: it was not enrolled by blackcloud; fix: choose another name, or delete the ` +
          'thing ("aws iot delete-thing") if it is yours',
      );
    }
    return 'absent';
  }

  async enrol(request: EnrolRequest): Promise<EnrolledDevice> {
    checkEnrolRequest(request);
    const { deviceId } = request;
    const state = await this.state(deviceId);
    if (state === 'present') {
      throw new FleetError(
        `device ${JSON.stringify(deviceId)} already exists in ${this.description}; fix: choose another name, or ` +
          '"blackcloud devices remove" it first',
      );
    }
    if (state === 'partial') await this.#cleanUp(deviceId);
    const plain = request.transport === 'plain';
    if (plain && this.stack.brokerPlainPort === undefined) {
      throw new FleetError(
        `${this.description} has no plain listener, so a device that cannot do TLS cannot log in; fix: deploy with ` +
          `-c blackcloud='{"plainListener":true}' (docs/deploy.md, "Devices without TLS"), or enrol ${deviceId} ` +
          'with --transport tls',
      );
    }
    const ca = plain ? undefined : await this.#loadCa();
    try {
      return await this.#enrolNow(request, ca);
    } catch (error) {
      await this.#cleanUp(deviceId).catch(() => undefined);
      throw explainAwsError(error);
    }
  }

  async list(): Promise<DeviceSummary[]> {
    const names = await this.#fleetNames();
    const summaries: DeviceSummary[] = [];
    for (let i = 0; i < names.length; i += BATCH_GET_LIMIT) {
      const chunk = names.slice(i, i + BATCH_GET_LIMIT);
      const items = await this.#deviceItems(chunk);
      for (let j = 0; j < chunk.length; j += LIST_CONCURRENCY) {
        const part = chunk.slice(j, j + LIST_CONCURRENCY);
        const things = await Promise.all(part.map((name) => this.#describeThing(name)));
        part.forEach((name, k) => {
          const thing = things[k];
          if (thing !== undefined) summaries.push(this.#summary(name, thing, items.get(name)));
        });
      }
    }
    return summaries.sort((a, b) => a.id.localeCompare(b.id));
  }

  async show(deviceId: string): Promise<DeviceSummary | undefined> {
    const thing = await this.#describeThing(deviceId);
    if (thing === undefined) return undefined;
    return this.#summary(deviceId, thing, await this.#deviceItem(deviceId));
  }

  async setEnabled(deviceId: string, enabled: boolean): Promise<CutOffResult> {
    const thing = await this.#describeThing(deviceId);
    if (thing === undefined) throw this.#unknown(deviceId);
    const changed = (thing.enabled ?? 'false') !== String(enabled);
    if (changed) {
      await this.#o.clients.iot.send(
        new UpdateThingCommand({
          thingName: deviceId,
          attributePayload: { attributes: { enabled: String(enabled) }, merge: true },
        }),
      );
    }
    if (enabled) {
      if (changed) await this.#audit('device.enabled', deviceId, {});
      return { changed, revoked: [], disconnected: undefined, notes: [] };
    }
    const revoked = await this.revokeGrants({ deviceId });
    if (changed) await this.#audit('device.disabled', deviceId, { revokedGrants: revoked.length });
    return { changed, revoked, disconnected: undefined, notes: [this.#sessionNote(deviceId)] };
  }

  async remove(deviceId: string): Promise<CutOffResult> {
    checkDeviceName(deviceId);
    if (
      (await this.#describeThing(deviceId)) === undefined &&
      (await this.#deviceItem(deviceId)) === undefined
    ) {
      throw this.#unknown(deviceId);
    }
    // Refuse new knocks first, then close what is open, then delete.
    await this.#o.clients.iot
      .send(
        new UpdateThingCommand({
          thingName: deviceId,
          attributePayload: { attributes: { enabled: 'false' }, merge: true },
        }),
      )
      .catch((error: unknown) => {
        if (!notFound(error)) throw error;
      });
    const revoked = await this.revokeGrants({ deviceId });
    const plain = (await this.#describeThing(deviceId))?.transport === 'plain';
    const serial = plain ? undefined : await this.#certificateSerial(deviceId);
    await this.#cleanUp(deviceId);
    await this.#audit('device.removed', deviceId, { revokedGrants: revoked.length });
    return {
      changed: true,
      revoked,
      disconnected: undefined,
      notes: [
        this.#sessionNote(deviceId),
        plain
          ? `${deviceId} is a plain device: it has no certificate to revoke`
          : await this.#revokeCertificate(deviceId, serial),
      ],
    };
  }

  /** The device's certificate serial: from its devices-table item, else from the bundle on this machine. */
  async #certificateSerial(deviceId: string): Promise<string | undefined> {
    const stored = (await this.#deviceItem(deviceId))?.[CERT_SERIAL_ATTRIBUTE]?.S;
    if (stored !== undefined) return stored;
    try {
      const pem = await readFile(join(this.#bundlePath(deviceId), 'client.crt'), 'utf8');
      return new X509Certificate(pem).serialNumber.toLowerCase();
    } catch {
      return undefined;
    }
  }

  /** Adds the certificate to the CA's CRL; returns the note telling the operator what to publish. */
  async #revokeCertificate(deviceId: string, serial: string | undefined): Promise<string> {
    if (serial === undefined) {
      return (
        `no certificate serial of ${deviceId} is known (no devices-table serial, no bundle here): revoke its ` +
        'certificate with your CA tools and publish the CRL in the broker TLS secret'
      );
    }
    try {
      const ca = await this.#loadCa();
      const { crlFile, count } = await revokeSerial(
        this.#o.caDir,
        ca,
        { serial, deviceId, revokedAt: this.#clock.now() },
        this.#clock.now(),
      );
      return (
        `certificate ${serial} (CN ${deviceId}) revoked in ${crlFile} (${count} revoked); the broker drops the ` +
        "device at the receivers' next index refresh (dynamic security); for defence in depth also put the PEM " +
        'as "crl" in the broker TLS secret and reboot the broker (docs/deploy.md, "Operating")'
      );
    } catch (error) {
      return (
        `the CRL was not updated (${error instanceof Error ? error.message : String(error)}): the certificate ` +
        `${serial} (CN ${deviceId}) stays valid for the broker until you revoke it; fix: run remove again with --ca DIR`
      );
    }
  }

  // ----- grants ------------------------------------------------------------------------------

  async grants(): Promise<FleetGrant[]> {
    return listAwsGrants(this.#grantDeps());
  }

  revokeGrants(selector: GrantSelector): Promise<FleetGrant[]> {
    return revokeAwsGrants(this.#grantDeps(), selector);
  }

  #grantDeps(): AwsGrantDeps {
    return {
      store: this.#grants,
      ec2: this.#o.clients.ec2,
      retry: this.#o.retry ?? defaultRetryPolicy(),
      securityGroupIds: this.stack.brokerSecurityGroupIds,
      now: this.#clock.now(),
    };
  }

  // ----- audit -------------------------------------------------------------------------------

  audit(query: AuditQuery): AsyncIterable<AuditRecord> {
    return readAuditLog(this.#o.clients.logs, this.stack.auditLogGroup, query, this.#o.followPollMs);
  }

  // ----- internals ---------------------------------------------------------------------------

  /** `ca` undefined: a plain device (the plain listener's port is known, checked by `enrol`). */
  async #enrolNow(request: EnrolRequest, ca: Pem | undefined): Promise<EnrolledDevice> {
    const { deviceId } = request;
    const { dynamodb, iot } = this.#o.clients;
    const plainPort = ca === undefined ? this.stack.brokerPlainPort : undefined;
    const access: readonly AccessEntry[] = request.access ?? [
      { protocol: 'tcp', port: plainPort ?? this.stack.brokerPort },
    ];
    const nativeKey = this.#random.randomBytes(BC1_KEY_LENGTH);
    const fwknop: FwknopSettings | undefined =
      request.format === 'fwknop'
        ? {
            username: deviceId,
            encryptionKey: this.#random.randomBytes(FWKNOP_PROVISIONED_KEY_LENGTH),
            hmacKey: this.#random.randomBytes(FWKNOP_PROVISIONED_HMAC_KEY_LENGTH),
            hmacType: 'sha256',
          }
        : undefined;

    // 1. + 2. The device item (pending) and its key item, with a free key id.
    let keyId = u32(this.#random);
    try {
      await dynamodb.send(
        new PutItemCommand({
          TableName: this.stack.devicesTable,
          Item: { ...deviceItem(deviceId, [keyId], fwknop), [ENROLMENT_ATTRIBUTE]: { S: 'pending' } },
          ConditionExpression: 'attribute_not_exists(pk)',
        }),
      );
    } catch (error) {
      if (conditionFailed(error)) {
        throw new FleetError(
          `device ${JSON.stringify(deviceId)} is being enrolled by another run; fix: retry later`,
        );
      }
      throw error;
    }
    for (let attempt = 1; ; attempt++) {
      try {
        await dynamodb.send(
          new PutItemCommand({
            TableName: this.stack.devicesTable,
            Item: keyItem(deviceId, { keyId, key: nativeKey }),
            ConditionExpression: 'attribute_not_exists(pk)',
          }),
        );
        break;
      } catch (error) {
        if (!conditionFailed(error) || attempt >= KEY_ID_ATTEMPTS) throw error;
        keyId = u32(this.#random);
        await dynamodb.send(
          new UpdateItemCommand({
            TableName: this.stack.devicesTable,
            Key: { pk: { S: deviceItemKey(deviceId) } },
            UpdateExpression: 'SET keyIds = :k',
            ExpressionAttributeValues: { ':k': { NS: [String(keyId)] } },
          }),
        );
      }
    }

    // 3. The thing in the fleet group: identity and policy, never key material.
    await iot.send(
      new CreateThingCommand({
        thingName: deviceId,
        thingTypeName: this.stack.deviceThingType,
        attributePayload: {
          attributes: {
            enabled: 'true',
            allowedAccess: formatAccessList(access),
            ...(request.maxOpenSeconds === undefined
              ? {}
              : { maxOpenSeconds: String(request.maxOpenSeconds) }),
            ...(plainPort === undefined ? {} : { transport: 'plain' }),
          },
        },
      }),
    );
    await iot.send(
      new AddThingToThingGroupCommand({ thingGroupName: this.stack.fleetThingGroup, thingName: deviceId }),
    );

    // 4. Certificate (TLS devices only) and bundle.
    const client =
      ca === undefined ? undefined : await issueCertificate(ca, { commonName: deviceId, kind: 'client' });
    const bundleDir = this.#bundlePath(deviceId);
    const bundle = bundleFiles({
      deviceId,
      format: request.format,
      access,
      keyId,
      nativeKey,
      fwknop,
      receiver: { host: this.stack.receiverAddress, port: this.stack.spaPort },
      broker: {
        host: this.stack.brokerAddress,
        port: this.stack.brokerPort,
        servername: this.stack.brokerTlsServerName,
      },
      ...(client === undefined || ca === undefined
        ? { plainPort: plainPort! }
        : { tls: { client, caCert: ca.cert } }),
    });
    const tag = `${process.pid}-${Buffer.from(this.#random.randomBytes(6)).toString('hex')}`;
    await writeBundle(bundleDir, bundle.files, tag);

    // 5. Commit (with the certificate's serial, so `remove` can revoke it without the bundle).
    await dynamodb.send(
      new UpdateItemCommand({
        TableName: this.stack.devicesTable,
        Key: { pk: { S: deviceItemKey(deviceId) } },
        ConditionExpression: 'attribute_exists(pk)',
        ...(client === undefined
          ? { UpdateExpression: `REMOVE ${ENROLMENT_ATTRIBUTE}` }
          : {
              UpdateExpression: `REMOVE ${ENROLMENT_ATTRIBUTE} SET ${CERT_SERIAL_ATTRIBUTE} = :serial`,
              ExpressionAttributeValues: {
                ':serial': { S: new X509Certificate(client.cert).serialNumber.toLowerCase() },
              },
            }),
      }),
    );
    await this.#audit('device.added', deviceId, {});
    return Object.freeze({
      deviceId,
      format: request.format,
      bundleDir,
      deviceFile: join(bundleDir, 'device.json'),
      keyId,
      access,
      ...(plainPort === undefined ? {} : { transport: 'plain' as const }),
      ...(bundle.fwknop === undefined
        ? {}
        : { fwknop: { ...bundle.fwknop, rcFile: join(bundleDir, 'fwknoprc') } }),
    });
  }

  /** Removes everything of a device: key items, device item, group membership, thing, local bundle. */
  async #cleanUp(deviceId: string): Promise<void> {
    checkDeviceName(deviceId);
    const { dynamodb, iot } = this.#o.clients;
    const item = await this.#deviceItem(deviceId);
    const keyIds = item === undefined ? [] : (item.keyIds?.NS ?? []).map(Number);
    for (const keyId of keyIds) {
      try {
        await dynamodb.send(
          new DeleteItemCommand({
            TableName: this.stack.devicesTable,
            Key: { pk: { S: keyItemKey(keyId) } },
            ConditionExpression: 'attribute_not_exists(pk) OR deviceId = :d',
            ExpressionAttributeValues: { ':d': { S: deviceId } },
          }),
        );
      } catch (error) {
        if (!conditionFailed(error)) throw error; // another device's key: not ours to delete
      }
    }
    await iot
      .send(
        new RemoveThingFromThingGroupCommand({
          thingGroupName: this.stack.fleetThingGroup,
          thingName: deviceId,
        }),
      )
      .catch((error: unknown) => {
        if (!notFound(error)) throw error;
      });
    await iot.send(new DeleteThingCommand({ thingName: deviceId })).catch((error: unknown) => {
      if (!notFound(error)) throw error;
    });
    await dynamodb.send(
      new DeleteItemCommand({
        TableName: this.stack.devicesTable,
        Key: { pk: { S: deviceItemKey(deviceId) } },
      }),
    );
    await rm(this.#bundlePath(deviceId), { recursive: true, force: true });
  }

  #bundlePath(deviceId: string): string {
    checkDeviceName(deviceId);
    return join(resolvePath(this.#o.bundleDir), deviceId);
  }

  #loadCa(): Promise<Pem> {
    this.#ca ??= loadOperatorCa(this.#o.caDir);
    return this.#ca;
  }

  async #deviceItem(deviceId: string): Promise<Item | undefined> {
    const result = await this.#o.clients.dynamodb.send(
      new GetItemCommand({
        TableName: this.stack.devicesTable,
        Key: { pk: { S: deviceItemKey(deviceId) } },
        ConsistentRead: true,
      }),
    );
    return result.Item;
  }

  async #deviceItems(names: readonly string[]): Promise<Map<string, Item>> {
    const found = new Map<string, Item>();
    let request: Record<string, { Keys: Item[] }> | undefined = {
      [this.stack.devicesTable]: { Keys: names.map((name) => ({ pk: { S: deviceItemKey(name) } })) },
    };
    while (request !== undefined) {
      const result: BatchGetItemCommandOutput = await this.#o.clients.dynamodb.send(
        new BatchGetItemCommand({ RequestItems: request }),
      );
      for (const item of result.Responses?.[this.stack.devicesTable] ?? []) {
        const id = item.deviceId?.S;
        if (id !== undefined) found.set(id, item);
      }
      const unprocessed: Item[] | undefined = result.UnprocessedKeys?.[this.stack.devicesTable]?.Keys;
      request =
        unprocessed !== undefined && unprocessed.length > 0
          ? { [this.stack.devicesTable]: { Keys: unprocessed } }
          : undefined;
    }
    return found;
  }

  async #describeThing(deviceId: string): Promise<Record<string, string> | undefined> {
    try {
      const thing = await this.#o.clients.iot.send(new DescribeThingCommand({ thingName: deviceId }));
      return thing.attributes ?? {};
    } catch (error) {
      if (notFound(error)) return undefined;
      throw error;
    }
  }

  #fleetNames(): Promise<string[]> {
    return listFleetThings(this.#o.clients.iot, this.stack.fleetThingGroup);
  }

  #summary(deviceId: string, attributes: Record<string, string>, item: Item | undefined): DeviceSummary {
    let keyIds: number[] = [];
    let fwknop = false;
    try {
      const parsed = parseDeviceItem(deviceId, item);
      keyIds = [...parsed.keyIds].sort((a, b) => a - b);
      fwknop = parsed.fwknop !== undefined;
    } catch {
      // A malformed item is shown without keys; the receiver refuses such a device and says why.
    }
    const maxOpen = Number(attributes.maxOpenSeconds);
    return Object.freeze({
      id: deviceId,
      enabled: attributes.enabled === 'true' && item?.[ENROLMENT_ATTRIBUTE] === undefined,
      allowedAccess: (attributes.allowedAccess ?? '').split(',').filter((entry) => entry !== ''),
      formats: fwknop ? (['native', 'fwknop'] as const) : (['native'] as const),
      maxOpenSeconds: Number.isInteger(maxOpen) && maxOpen > 0 ? maxOpen : 0,
      keyIds,
      ...(attributes.transport === 'plain' ? { transport: 'plain' as const } : {}),
      bundleDir: this.#bundlePath(deviceId),
    });
  }

  #unknown(deviceId: string): FleetError {
    return new FleetError(
      `device ${JSON.stringify(deviceId)} is not in ${this.description}; fix: check the id with ` +
        '"blackcloud devices list --aws"',
    );
  }

  #sessionNote(deviceId: string): string {
    return (
      `the receivers refuse ${deviceId}'s knocks and the broker closes its open MQTT session at their next ` +
      'device-index refresh (BLACKCLOUD_DIRECTORY_REFRESH_SECONDS, default 30 s; docs/fleet.md)'
    );
  }

  async #audit(
    type: OperatorAction,
    deviceId: string,
    extra: { revokedGrants?: number; disconnected?: number },
  ): Promise<void> {
    await this.#auditLog.write(
      operatorAuditRecord({ type, time: this.#clock.now(), deviceId, operator: this.#o.operator, ...extra }),
    );
  }
}

/** The AWS fleet of `--aws` / `--stack NAME` / `--region R`: clients, stack outputs, CA and bundle locations. */
export async function openAwsFleet(flags: FleetFlags): Promise<Fleet> {
  const endpoint = process.env.BLACKCLOUD_AWS_ENDPOINT;
  const clients = createOperatorClients({ region: flags.region, endpoint });
  const stackName = flags.stack ?? DEFAULT_STACK_NAME;
  try {
    const region = await clients.cloudformation.config.region();
    const stack = await describeFleetStack(clients.cloudformation, stackName, region);
    return new AwsFleet({
      clients,
      stack,
      caDir: flags.ca ?? DEFAULT_CA_DIR,
      bundleDir: flags.out ?? DEFAULT_BUNDLE_DIR,
      operator: operatorName(),
    });
  } catch (error) {
    throw explainAwsError(error);
  }
}
