/**
 * Test support for the AWS path: one moto server per test file (`python3 -m moto.server` on a free port chosen by
 * the OS, read back from its banner), SDK clients pointed at it, fixtures shaped like the stack (a non-default
 * VPC with broker security groups, the DynamoDB tables, the revoke queue, the IoT fleet group) and a recorder of
 * the calls a client really sends. Start it in beforeAll, `stop()` it in afterAll; `reset()` wipes moto's state.
 * A missing moto makes `startMoto` reject naming the tool.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { CreateTableCommand, type DynamoDBClient, UpdateTimeToLiveCommand } from '@aws-sdk/client-dynamodb';
import {
  AuthorizeSecurityGroupIngressCommand,
  CreateSecurityGroupCommand,
  CreateVpcCommand,
  type EC2Client,
} from '@aws-sdk/client-ec2';
import { CreateThingGroupCommand, type IoTClient } from '@aws-sdk/client-iot';
import { CreateQueueCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { type AwsClients, createAwsClients } from '../../functions/aws/clients.ts';
import { AWS_ENDPOINT_ENV, ENV } from '../../functions/core/environment.ts';

export const MOTO_REGION = 'us-east-1';
export const MOTO_CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' } as const;

/** Credentials and region in the environment too (handlers build their clients from the default chain). */
export function setMotoEnv(endpoint: string): void {
  process.env.AWS_ACCESS_KEY_ID = MOTO_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = MOTO_CREDENTIALS.secretAccessKey;
  process.env.AWS_SESSION_TOKEN = 'testing';
  process.env.AWS_REGION = MOTO_REGION;
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  process.env.BLACKCLOUD_AWS_ENDPOINT = endpoint;
}

export interface MotoServer {
  readonly endpoint: string;
  readonly port: number;
  /** Fresh clients pointed at this server (SDK retries: EC2 off, others 1 attempt so failures are quick). */
  clients(): AwsClients;
  /** Forget every resource (POST /moto-api/reset). */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

const BANNER = /Running on http:\/\/127\.0\.0\.1:(\d+)/;

export async function startMoto(): Promise<MotoServer> {
  const child: ChildProcess = spawn('python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', '0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`moto server did not start within 30 s (python3 -m moto.server). Output:\n${output}`));
    }, 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = BANNER.exec(output);
      if (match !== null) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run python3 -m moto.server: ${error.message}. Install moto[server] (pip).`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        new Error(
          `moto server exited with ${String(code)} before listening: install moto[server] so that ` +
            `"python3 -m moto.server" works. Output:\n${output}`,
        ),
      );
    });
  });
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    port,
    clients: () =>
      createAwsClients({ region: MOTO_REGION, endpoint, credentials: MOTO_CREDENTIALS, maxAttempts: 1 }),
    async reset() {
      const response = await fetch(`${endpoint}/moto-api/reset`, { method: 'POST' });
      if (!response.ok) throw new Error(`moto reset failed: HTTP ${response.status}`);
    },
    stop: () =>
      new Promise<void>((resolve) => {
        process.off('exit', killOnExit);
        if (child.exitCode !== null || child.signalCode !== null) {
          resolve();
          return;
        }
        const force = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(force);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}

/** A non-default VPC (the stack's case) with `count` empty broker security groups. */
export async function createBrokerGroups(
  ec2: EC2Client,
  count: number,
): Promise<{ vpcId: string; groupIds: string[] }> {
  const vpc = await ec2.send(
    new CreateVpcCommand({ CidrBlock: '10.42.0.0/16', AmazonProvidedIpv6CidrBlock: true }),
  );
  const vpcId = vpc.Vpc?.VpcId;
  if (vpcId === undefined) throw new Error('moto CreateVpc returned no VpcId');
  const groupIds: string[] = [];
  for (let i = 0; i < count; i++) {
    const group = await ec2.send(
      new CreateSecurityGroupCommand({
        GroupName: `broker-${i}`,
        Description: 'blackcloud broker',
        VpcId: vpcId,
      }),
    );
    if (group.GroupId === undefined) throw new Error('moto CreateSecurityGroup returned no GroupId');
    groupIds.push(group.GroupId);
  }
  return { vpcId, groupIds };
}

/** Fill a group with `count` non-blackcloud IPv4 rules (10.x.y.0/24 on the given port) to use up its quota. */
export async function fillGroup(ec2: EC2Client, groupId: string, count: number, port = 8883): Promise<void> {
  if (count === 0) return;
  await ec2.send(
    new AuthorizeSecurityGroupIngressCommand({
      GroupId: groupId,
      IpPermissions: [
        {
          IpProtocol: 'tcp',
          FromPort: port,
          ToPort: port,
          IpRanges: Array.from({ length: count }, (_, i) => ({
            CidrIp: `10.${100 + Math.floor(i / 250)}.${i % 250}.0/24`,
            Description: 'operator rule',
          })),
        },
      ],
    }),
  );
}

/** A table with partition key `pk` (S), on-demand, optional TTL attribute. */
export async function createTable(
  dynamodb: DynamoDBClient,
  name: string,
  ttlAttribute?: string,
): Promise<void> {
  await dynamodb.send(
    new CreateTableCommand({
      TableName: name,
      BillingMode: 'PAY_PER_REQUEST',
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
    }),
  );
  if (ttlAttribute !== undefined) {
    await dynamodb.send(
      new UpdateTimeToLiveCommand({
        TableName: name,
        TimeToLiveSpecification: { AttributeName: ttlAttribute, Enabled: true },
      }),
    );
  }
}

export async function createQueue(sqs: SQSClient, name: string): Promise<string> {
  const queue = await sqs.send(new CreateQueueCommand({ QueueName: name }));
  if (queue.QueueUrl === undefined) throw new Error('moto CreateQueue returned no QueueUrl');
  return queue.QueueUrl;
}

export async function createThingGroup(iot: IoTClient, name: string): Promise<void> {
  await iot.send(new CreateThingGroupCommand({ thingGroupName: name }));
}

/** What `createStackResources` made, named as the receiver's configuration names them. */
export interface StackResources {
  readonly groupIds: string[];
  /** Tables `nonces` (TTL), `devices`, `grants` (TTL); SQS queue `revoke`; IoT thing group `fleet`. */
  readonly queueUrl: string;
}

/** The data plane a receiver needs, shaped like the stack: broker groups, the three tables, the queue, the fleet. */
export async function createStackResources(
  clients: AwsClients,
  options: { readonly groups?: number } = {},
): Promise<StackResources> {
  const { groupIds } = await createBrokerGroups(clients.ec2, options.groups ?? 1);
  await createTable(clients.dynamodb, 'nonces', 'ttl');
  await createTable(clients.dynamodb, 'devices');
  await createTable(clients.dynamodb, 'grants', 'ttl');
  const queueUrl = await createQueue(clients.sqs, 'revoke');
  await createThingGroup(clients.iot, 'fleet');
  return { groupIds, queueUrl };
}

/**
 * The AWS receiver's environment for the data plane `createStackResources` makes (tables `nonces`, `devices`,
 * `grants`, thing group `fleet`), named as the stack names them (functions/core/environment.ts).
 */
export function stackReceiverEnv(
  endpoint: string,
  groupIds: string,
  queueUrl: string,
): Record<string, string> {
  return {
    [ENV.region]: MOTO_REGION,
    [AWS_ENDPOINT_ENV]: endpoint,
    [ENV.nonceTable]: 'nonces',
    [ENV.devicesTable]: 'devices',
    [ENV.grantsTable]: 'grants',
    [ENV.brokerSecurityGroupIds]: groupIds,
    [ENV.revokeQueueUrl]: queueUrl,
    [ENV.fleetThingGroup]: 'fleet',
  };
}

export interface RecordedCall {
  readonly command: string;
  readonly input: unknown;
}

/** Records every command the client really sends (after serialization starts), without changing anything. */
let recorders = 0;

export function recordCalls(client: EC2Client | DynamoDBClient | SQSClient | IoTClient): RecordedCall[] {
  const calls: RecordedCall[] = [];
  recorders++;
  (client as EC2Client).middlewareStack.add(
    (next, context) => async (args) => {
      calls.push({ command: String(context.commandName), input: structuredClone(args.input) });
      return next(args);
    },
    { step: 'initialize', name: `recordCalls${recorders}` },
  );
  return calls;
}
