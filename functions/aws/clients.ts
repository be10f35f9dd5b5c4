/**
 * The one place SDK v3 clients are created. A process (the receiver, a Lambda cold start) calls `awsClients(...)`
 * (or `ec2Client(...)`, `dynamodbClient(...)`, ...: a Lambda takes only what it uses) once at module scope and
 * passes the clients into adapters' constructors and logic functions; nothing else constructs a client.
 * `endpoint` points every client at one server (moto in tests; BLACKCLOUD_AWS_ENDPOINT).
 *
 * Retries: the EC2 client has the SDK's retries off (`maxAttempts: 1`) because the security-group code retries
 * throttling itself with injected backoff (retry.ts) and must count every call against EC2's token bucket.
 * DynamoDB, SQS and IoT keep the SDK's standard retry (3 attempts) unless `maxAttempts` says otherwise.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { EC2Client } from '@aws-sdk/client-ec2';
import { IoTClient } from '@aws-sdk/client-iot';
import { SQSClient } from '@aws-sdk/client-sqs';
import { AwsConfigError } from './errors.ts';

export interface AwsClientOptions {
  readonly region: string;
  /** Override every service endpoint (tests: `http://127.0.0.1:<moto port>`). */
  readonly endpoint?: string | undefined;
  /** Static credentials (tests). Production uses the default provider chain (instance role, Lambda role). */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string } | undefined;
  /** Attempts for DynamoDB, SQS and IoT calls (SDK retry). Default 3. EC2 is always 1 (see above). */
  readonly maxAttempts?: number | undefined;
}

export interface AwsClients {
  readonly ec2: EC2Client;
  readonly dynamodb: DynamoDBClient;
  readonly sqs: SQSClient;
  readonly iot: IoTClient;
}

function clientConfig(options: AwsClientOptions) {
  return {
    region: options.region,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.credentials === undefined ? {} : { credentials: { ...options.credentials } }),
  };
}

// One factory per service, each naming only its own constructor, so a bundle keeps only the clients it uses.
const makeEc2 = (o: AwsClientOptions) => new EC2Client({ ...clientConfig(o), maxAttempts: 1 });
const makeDynamodb = (o: AwsClientOptions) =>
  new DynamoDBClient({ ...clientConfig(o), maxAttempts: o.maxAttempts ?? 3 });
const makeSqs = (o: AwsClientOptions) =>
  new SQSClient({ ...clientConfig(o), maxAttempts: o.maxAttempts ?? 3 });
const makeIot = (o: AwsClientOptions) =>
  new IoTClient({ ...clientConfig(o), maxAttempts: o.maxAttempts ?? 3 });

/** New clients (tests use this to get an isolated set per moto server). */
export function createAwsClients(options: AwsClientOptions): AwsClients {
  return {
    ec2: makeEc2(options),
    dynamodb: makeDynamodb(options),
    sqs: makeSqs(options),
    iot: makeIot(options),
  };
}

type Service = keyof AwsClients;
const processClients = new Map<Service, { key: string; client: AwsClients[Service] }>();

/**
 * The process-wide client of one service: created on the first call, the same instance afterwards. A later call
 * with different options is a wiring bug and throws. (Per service, so a Lambda bundle only carries the SDK
 * clients it uses.)
 */
function processClient<S extends Service>(
  service: S,
  options: AwsClientOptions,
  make: (options: AwsClientOptions) => AwsClients[S],
): AwsClients[S] {
  const key = JSON.stringify([options.region, options.endpoint ?? null, options.maxAttempts ?? null]);
  const existing = processClients.get(service);
  if (existing === undefined) {
    const client = make(options);
    processClients.set(service, { key, client });
    return client;
  }
  if (existing.key !== key) {
    throw new AwsConfigError(
      `the ${service} client was already created with ${existing.key} and is now asked for with ${key}: create ` +
        'the clients once per process (at module scope) and pass them to the adapters',
    );
  }
  return existing.client as AwsClients[S];
}

export const ec2Client = (options: AwsClientOptions): EC2Client => processClient('ec2', options, makeEc2);
export const dynamodbClient = (options: AwsClientOptions): DynamoDBClient =>
  processClient('dynamodb', options, makeDynamodb);
export const sqsClient = (options: AwsClientOptions): SQSClient => processClient('sqs', options, makeSqs);
export const iotClient = (options: AwsClientOptions): IoTClient => processClient('iot', options, makeIot);

/** All four process-wide clients (the receiver). */
export function awsClients(options: AwsClientOptions): AwsClients {
  return {
    ec2: ec2Client(options),
    dynamodb: dynamodbClient(options),
    sqs: sqsClient(options),
    iot: iotClient(options),
  };
}

/** Close the process-wide clients' sockets (receiver shutdown). */
export function destroyAwsClients(): void {
  for (const { client } of processClients.values()) client.destroy();
  processClients.clear();
}
