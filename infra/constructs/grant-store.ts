/**
 * Grant store unit: the three DynamoDB tables of the AWS data plane (docs/architecture.md), on-demand, encrypted with the
 * AWS-managed key, with point-in-time recovery. The schema is the adapters' (functions/aws/):
 * - nonces (dynamo-nonce-store.ts): partition key `pk` = replay id, written with a conditional put
 *   (`attribute_not_exists(pk)`) so receivers sharing the table catch a replay once; `ttl` (epoch seconds) is the
 *   TTL attribute, garbage collection only (TTL deletes late and expired items still match conditions);
 * - devices (device-record.ts): partition key `pk`, items `device#<id>` and `key#<keyId>` (key material lives
 *   here, never in IoT thing attributes); a key id is a direct GetItem, so no index;
 * - grants (dynamo-grant-store.ts): partition key `pk` = source address, the active grants, so a restarted
 *   receiver, the revoker and the sweeper know what is open; `ttl` for garbage collection.
 * Each `grant*` method gives a principal exactly the actions its role uses on exactly these tables.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';

/** Key and TTL attribute names of the three tables (the contract with functions/aws). */
export const TABLE_SCHEMA = Object.freeze({
  nonces: Object.freeze({ partitionKey: 'pk', ttlAttribute: 'ttl' }),
  devices: Object.freeze({ partitionKey: 'pk' }),
  grants: Object.freeze({ partitionKey: 'pk', ttlAttribute: 'ttl' }),
});

export interface GrantStoreProps {
  /**
   * Keep the devices/keys table when the stack is deleted (it holds every device's SPA keys).
   * The nonce and grant tables are transient and always deleted with the stack. @default true
   */
  readonly retainDevices?: boolean;
}

/** The receiver records a replay id: one conditional PutItem. */
const NONCE_RECORDING = ['dynamodb:PutItem'];
/** The receiver reads device and key items (GetItem, BatchGetItem of a device's keys). */
const DEVICE_LOOKUP = ['dynamodb:GetItem', 'dynamodb:BatchGetItem'];
/**
 * The controller writes new key generations and deletes retired keys (key rotation, DynamoKeyStore); the same
 * PutItem/DeleteItem hold, renew and release the controller lease item (functions/aws/controller-lease.ts).
 */
const KEY_ROTATION = ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'];
/**
 * The receiver records (UpdateItem: the grant's fields, keeping the connect claims on the item), reads, lists and
 * deletes active grants, and records and releases the connect claims (UpdateItem, GetItem; dynamo-connect-claims.ts).
 */
const GRANT_BOOKKEEPING = ['dynamodb:GetItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:Scan'];
/** The revoker and the sweeper read and list grants and delete the ones they revoked. */
const GRANT_CLEANUP = ['dynamodb:GetItem', 'dynamodb:DeleteItem', 'dynamodb:Scan'];

export class GrantStore extends Construct {
  readonly nonces: dynamodb.Table;
  readonly devices: dynamodb.Table;
  readonly grants: dynamodb.Table;

  constructor(scope: Construct, id: string, props: GrantStoreProps = {}) {
    super(scope, id);
    const common = {
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    } as const;
    const key = (name: string) => ({ name, type: dynamodb.AttributeType.STRING });

    this.nonces = new dynamodb.Table(this, 'Nonces', {
      ...common,
      partitionKey: key(TABLE_SCHEMA.nonces.partitionKey),
      timeToLiveAttribute: TABLE_SCHEMA.nonces.ttlAttribute,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.devices = new dynamodb.Table(this, 'Devices', {
      ...common,
      partitionKey: key(TABLE_SCHEMA.devices.partitionKey),
      removalPolicy: (props.retainDevices ?? true) ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    });
    this.grants = new dynamodb.Table(this, 'Grants', {
      ...common,
      partitionKey: key(TABLE_SCHEMA.grants.partitionKey),
      timeToLiveAttribute: TABLE_SCHEMA.grants.ttlAttribute,
      removalPolicy: RemovalPolicy.DESTROY,
    });
  }

  /** The receiver records replay ids: conditional PutItem on the nonce table only. */
  grantNonceRecording(grantee: iam.IGrantable): iam.Grant {
    return this.grantOn(grantee, NONCE_RECORDING, this.nonces);
  }

  /** The receiver looks devices and their keys up. */
  grantDeviceLookup(grantee: iam.IGrantable): iam.Grant {
    return this.grantOn(grantee, DEVICE_LOOKUP, this.devices);
  }

  /** The controller writes new key generations during key rotation. */
  grantKeyRotation(grantee: iam.IGrantable): iam.Grant {
    return this.grantOn(grantee, KEY_ROTATION, this.devices);
  }

  /** The receiver keeps the active grants (open, extend, close, list after a restart). */
  grantGrantBookkeeping(grantee: iam.IGrantable): iam.Grant {
    return this.grantOn(grantee, GRANT_BOOKKEEPING, this.grants);
  }

  /** The revoker and the sweeper read and list grants and delete the ones they revoked. */
  grantGrantCleanup(grantee: iam.IGrantable): iam.Grant {
    return this.grantOn(grantee, GRANT_CLEANUP, this.grants);
  }

  private grantOn(grantee: iam.IGrantable, actions: string[], table: dynamodb.Table): iam.Grant {
    return iam.Grant.addToPrincipal({ grantee, actions, resourceArns: [table.tableArn] });
  }
}
