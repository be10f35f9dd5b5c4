/**
 * IAM proven by enforcement: the policies the stack really synthesizes, run against moto server with IAM enforced.
 *
 * Contract:
 * - `synthesizePolicies()` synthesizes the default stack once (createBlackcloudApp, nag off) and returns, per
 *   principal (`receiver`, `revoker`, `sweeper` roles; `operator` = infra/operator-policy.ts, since the stack has
 *   no operator role), the statements attached to it, still with their CloudFormation intrinsics.
 * - `resolvePolicy(statements, names)` resolves Ref / Fn::GetAtt / Fn::Join / Fn::Sub and the pseudo parameters to
 *   the names and ARNs of the moto resources a test created (`MotoStackNames`); a reference to a resource it does
 *   not know throws, naming it. Then, per statement, what moto can check: moto authorizes EC2, DynamoDB, IoT,
 *   CloudWatch Logs and CloudFormation requests against the resource "*" (it never computes their ARNs), so a
 *   statement of those services gets `Resource: "*"` (its actions are still checked exactly); SQS requests are
 *   checked against the queue's real ARN, so SQS statements keep their resolved ARNs.
 * - `createIamUser(moto, name, document)` creates, while IAM is not yet enforced, a moto IAM user whose only
 *   policy is `document`, and returns its access key. `enforceIam(moto)` then turns enforcement on (moto's
 *   INITIAL_NO_AUTH_ACTION_COUNT, set to 0 through POST /moto-api/reset-auth on this test file's own server): from
 *   then on every request must be signed by a known user's key and be allowed by that user's policies.
 *   `relaxIam(moto)` turns it off again (setup between tests).
 * - `iamClients(moto, key)` are the data-plane clients under those credentials; a denied call rejects with an
 *   error named `AccessDenied` carrying moto's text ("User: arn:aws:iam::123456789012:user/NAME is not authorized
 *   to perform: SERVICE:ACTION"), also for the JSON services whose SDK cannot parse moto's XML error body.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AwsClients } from '../../functions/aws/clients.ts';
import { createAwsClients } from '../../functions/aws/clients.ts';
import { cdkJsonContext, createBlackcloudApp } from '../../infra/blackcloud-app.ts';
import type { BlackcloudStack } from '../../infra/blackcloud-stack.ts';
import { operatorPolicyDocument } from '../../infra/operator-policy.ts';
import { MOTO_REGION, type MotoServer } from './moto.ts';

export const MOTO_ACCOUNT_ID = '123456789012';

type Json = Record<string, unknown>;
export interface PolicyStatement {
  readonly Effect: string;
  readonly Action: string | string[];
  readonly Resource: unknown;
  readonly Sid?: string;
}
export interface PolicyDocument {
  readonly Version: '2012-10-17';
  readonly Statement: PolicyStatement[];
}

export type Principal = 'receiver' | 'revoker' | 'sweeper' | 'operator';

/** What a principal may do, as synthesized (intrinsics unresolved), plus the logical ids the resolver maps. */
export interface SynthesizedPolicies {
  readonly statements: Readonly<Record<Principal, readonly Json[]>>;
  readonly logicalIds: {
    readonly noncesTable: string;
    readonly devicesTable: string;
    readonly grantsTable: string;
    readonly revokeQueue: string;
    readonly auditLogGroup: string;
    readonly revokerLogGroup: string;
    readonly sweeperLogGroup: string;
    readonly brokerSecurityGroups: readonly string[];
  };
  readonly stackName: string;
}

/** The moto resources standing in for the stack's (createStackResources' names by default). */
export interface MotoStackNames {
  readonly noncesTable: string;
  readonly devicesTable: string;
  readonly grantsTable: string;
  readonly revokeQueueName: string;
  readonly auditLogGroup: string;
  /** In the stack's order of broker security groups. */
  readonly brokerSecurityGroupIds: readonly string[];
}

function logicalId(stack: BlackcloudStack, construct: { node: { defaultChild?: unknown } }): string {
  const child = (construct.node.defaultChild ?? construct) as { logicalId: string };
  return stack.resolve(child.logicalId) as string;
}

/** One synth of the default stack (about 20 s: it bundles the receiver and the Lambdas). */
export function synthesizePolicies(): SynthesizedPolicies {
  const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-iam-'));
  try {
    const { app, stack } = createBlackcloudApp({ outdir, context: cdkJsonContext(), nag: false });
    const template = app.synth().getStackByName(stack.stackName).template as {
      Resources: Record<string, Json>;
    };
    const attached = (role: { node: { defaultChild?: unknown } }): Json[] => {
      const roleId = logicalId(stack, role);
      return Object.values(template.Resources)
        .filter((resource) => resource.Type === 'AWS::IAM::Policy')
        .map((resource) => resource.Properties as Json)
        .filter((policy) => (policy.Roles as Json[]).some((ref) => ref.Ref === roleId))
        .flatMap((policy) => (policy.PolicyDocument as { Statement: Json[] }).Statement);
    };
    const lambdaRole = (fn: { role?: unknown }) => fn.role as { node: { defaultChild?: unknown } };
    const operator = stack.resolve(operatorPolicyDocument(stack).toJSON()) as { Statement: Json[] };
    return {
      statements: {
        receiver: attached(stack.receiver.role as never),
        revoker: attached(lambdaRole(stack.revocation.revoker)),
        sweeper: attached(lambdaRole(stack.revocation.sweeper)),
        operator: operator.Statement,
      },
      logicalIds: {
        noncesTable: logicalId(stack, stack.grantStore.nonces),
        devicesTable: logicalId(stack, stack.grantStore.devices),
        grantsTable: logicalId(stack, stack.grantStore.grants),
        revokeQueue: logicalId(stack, stack.revocation.queue),
        auditLogGroup: logicalId(stack, stack.audit.logGroup),
        revokerLogGroup: logicalId(stack, stack.revocation.node.findChild('RevokerLogs') as never),
        sweeperLogGroup: logicalId(stack, stack.revocation.node.findChild('SweeperLogs') as never),
        brokerSecurityGroups: stack.broker.securityGroups.map((group) => logicalId(stack, group)),
      },
      stackName: stack.stackName,
    };
  } finally {
    rmSync(outdir, { recursive: true, force: true });
  }
}

const PSEUDO: Record<string, string> = {
  'AWS::Partition': 'aws',
  'AWS::Region': MOTO_REGION,
  'AWS::AccountId': MOTO_ACCOUNT_ID,
  'AWS::URLSuffix': 'amazonaws.com',
};

/** Services whose requests moto authorizes against the real resource ARN (the others: against "*"). */
const MOTO_CHECKS_RESOURCES = new Set(['sqs']);

function resolver(policies: SynthesizedPolicies, names: MotoStackNames): (value: unknown) => unknown {
  const ids = policies.logicalIds;
  const arn = (service: string, resource: string) =>
    `arn:aws:${service}:${MOTO_REGION}:${MOTO_ACCOUNT_ID}:${resource}`;
  const refs = new Map<string, { ref: string; attributes: Record<string, string> }>([
    [
      ids.noncesTable,
      { ref: names.noncesTable, attributes: { Arn: arn('dynamodb', `table/${names.noncesTable}`) } },
    ],
    [
      ids.devicesTable,
      { ref: names.devicesTable, attributes: { Arn: arn('dynamodb', `table/${names.devicesTable}`) } },
    ],
    [
      ids.grantsTable,
      { ref: names.grantsTable, attributes: { Arn: arn('dynamodb', `table/${names.grantsTable}`) } },
    ],
    [
      ids.revokeQueue,
      {
        ref: names.revokeQueueName,
        attributes: { Arn: arn('sqs', names.revokeQueueName), QueueName: names.revokeQueueName },
      },
    ],
    [
      ids.auditLogGroup,
      { ref: names.auditLogGroup, attributes: { Arn: arn('logs', `log-group:${names.auditLogGroup}:*`) } },
    ],
    // The Lambdas' own log groups have no moto counterpart (the handlers' logic runs in the test process).
    [
      ids.revokerLogGroup,
      { ref: 'revoker-logs', attributes: { Arn: arn('logs', 'log-group:revoker-logs:*') } },
    ],
    [
      ids.sweeperLogGroup,
      { ref: 'sweeper-logs', attributes: { Arn: arn('logs', 'log-group:sweeper-logs:*') } },
    ],
  ]);
  ids.brokerSecurityGroups.forEach((id, index) => {
    const groupId = names.brokerSecurityGroupIds[index];
    if (groupId === undefined)
      throw new Error(`no moto security group for broker group ${index + 1} (${id})`);
    refs.set(id, { ref: groupId, attributes: { GroupId: groupId } });
  });
  const ref = (name: string): string => {
    const pseudo = PSEUDO[name];
    if (pseudo !== undefined) return pseudo;
    if (name === 'AWS::StackName') return policies.stackName;
    const known = refs.get(name);
    if (known === undefined)
      throw new Error(`IAM policy references ${name}, which has no moto counterpart here`);
    return known.ref;
  };
  const getAtt = (name: string, attribute: string): string => {
    const value = refs.get(name)?.attributes[attribute];
    if (value === undefined)
      throw new Error(`IAM policy references ${name}.${attribute}, which has no moto counterpart`);
    return value;
  };
  const resolve = (value: unknown): unknown => {
    if (typeof value === 'string') return value;
    if (Array.isArray(value)) return value.map(resolve);
    if (value === null || typeof value !== 'object') return value;
    const object = value as Json;
    if ('Ref' in object) return ref(String(object.Ref));
    if ('Fn::GetAtt' in object) {
      const [name, attribute] = object['Fn::GetAtt'] as [string, string];
      return getAtt(name, attribute);
    }
    if ('Fn::Join' in object) {
      const [separator, parts] = object['Fn::Join'] as [string, unknown[]];
      return parts.map((part) => String(resolve(part))).join(separator);
    }
    if ('Fn::Sub' in object) {
      return String(object['Fn::Sub']).replace(
        /\$\{([^}.]+)(?:\.([^}]+))?\}/g,
        (_, name: string, attribute?: string) =>
          attribute === undefined ? ref(name) : getAtt(name, attribute),
      );
    }
    throw new Error(`cannot resolve the intrinsic ${JSON.stringify(object)} in an IAM policy`);
  };
  return resolve;
}

const actionsOf = (statement: Json): string[] =>
  Array.isArray(statement.Action) ? (statement.Action as string[]) : [String(statement.Action)];

/**
 * The principal's policy as moto can enforce it: intrinsics resolved to the moto resources, statements of services
 * moto checks against "*" widened to "*" (actions kept exactly). `without` drops actions (a control: the same run
 * must then fail with AccessDenied).
 */
export function resolvePolicy(
  policies: SynthesizedPolicies,
  principal: Principal,
  names: MotoStackNames,
  options: { readonly without?: readonly string[] } = {},
): PolicyDocument {
  const resolve = resolver(policies, names);
  const without = new Set(options.without ?? []);
  const statements: PolicyStatement[] = [];
  for (const statement of policies.statements[principal]) {
    const resource = resolve(statement.Resource);
    const actions = actionsOf(statement).filter((action) => !without.has(action));
    if (actions.length === 0) continue;
    const services = new Set(actions.map((action) => action.split(':')[0] ?? ''));
    const checked = [...services].every((service) => MOTO_CHECKS_RESOURCES.has(service));
    statements.push({
      Effect: String(statement.Effect),
      Action: actions,
      Resource: checked ? resource : '*',
    });
  }
  return { Version: '2012-10-17', Statement: statements };
}

/** Every action a principal is granted (for the test's own checks). */
export function grantedActions(policies: SynthesizedPolicies, principal: Principal): string[] {
  return [...new Set(policies.statements[principal].flatMap(actionsOf))].sort();
}

export interface AccessKey {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
}

/** moto's IAM query API (the project has no IAM SDK client); only before `enforceIam`, so unsigned is accepted. */
async function iamCall(moto: MotoServer, params: Record<string, string>): Promise<string> {
  const response = await fetch(`${moto.endpoint}/`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `AWS4-HMAC-SHA256 Credential=setup/20250101/${MOTO_REGION}/iam/aws4_request, SignedHeaders=host, Signature=0`,
    },
    body: new URLSearchParams({ Version: '2010-05-08', ...params }).toString(),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`moto IAM ${params.Action} failed: HTTP ${response.status} ${text}`);
  return text;
}

function xmlField(xml: string, field: string): string {
  const match = new RegExp(`<${field}>([^<]*)</${field}>`).exec(xml);
  if (match?.[1] === undefined) throw new Error(`moto IAM reply has no ${field}: ${xml}`);
  return match[1];
}

/** A moto IAM user with exactly `document` as its only (inline) policy, and its access key. */
export async function createIamUser(
  moto: MotoServer,
  name: string,
  document: PolicyDocument,
): Promise<AccessKey> {
  await iamCall(moto, { Action: 'CreateUser', UserName: name });
  await iamCall(moto, {
    Action: 'PutUserPolicy',
    UserName: name,
    PolicyName: `${name}-policy`,
    PolicyDocument: JSON.stringify(document),
  });
  const key = await iamCall(moto, { Action: 'CreateAccessKey', UserName: name });
  return { accessKeyId: xmlField(key, 'AccessKeyId'), secretAccessKey: xmlField(key, 'SecretAccessKey') };
}

/** Everything allowed: the test's own setup and checks once IAM is enforced. */
export const ADMIN_POLICY: PolicyDocument = {
  Version: '2012-10-17',
  Statement: [{ Effect: 'Allow', Action: '*', Resource: '*' }],
};

async function setNoAuthCount(moto: MotoServer, count: string): Promise<void> {
  const response = await fetch(`${moto.endpoint}/moto-api/reset-auth`, { method: 'POST', body: count });
  if (!response.ok) throw new Error(`moto reset-auth failed: HTTP ${response.status}`);
}

/** From now on every request is authenticated and authorized against IAM (INITIAL_NO_AUTH_ACTION_COUNT = 0). */
export const enforceIam = (moto: MotoServer): Promise<void> => setNoAuthCount(moto, '0');
/** Back to moto's default: no IAM checks (INITIAL_NO_AUTH_ACTION_COUNT = infinity). */
export const relaxIam = (moto: MotoServer): Promise<void> => setNoAuthCount(moto, 'inf');

/**
 * An error named AccessDenied with moto's message when moto refused the call (whatever the SDK's protocol); each
 * refusal is also pushed to `denied` (the runtimes under test report failures in their own words).
 */
export function readableAccessDenied(client: object, denied?: string[]): void {
  const stack = (client as { middlewareStack: { addRelativeTo(middleware: unknown, options: object): void } })
    .middlewareStack;
  stack.addRelativeTo(
    (next: (args: unknown) => Promise<{ response: unknown }>) => async (args: unknown) => {
      const result = await next(args);
      const response = result.response as { statusCode?: number; body?: AsyncIterable<Uint8Array> };
      if (response.statusCode !== 403 || response.body === undefined) return result;
      const chunks: Buffer[] = [];
      for await (const chunk of response.body) chunks.push(Buffer.from(chunk));
      const body = Buffer.concat(chunks).toString('utf8');
      const message =
        /<Message>([^<]*)<\/Message>/.exec(body)?.[1] ?? /"message"\s*:\s*"([^"]*)"/i.exec(body)?.[1];
      const error = new Error(message ?? body);
      error.name = /AccessDenied/.test(body) ? 'AccessDenied' : `HTTP403`;
      denied?.push(`${error.name}: ${error.message}`);
      throw error;
    },
    { relation: 'after', toMiddleware: 'deserializerMiddleware', name: 'readableAccessDenied' },
  );
}

/** Data-plane clients signed with `key` (SDK retries as in tests: EC2 off, others 1 attempt); refusals to `denied`. */
export function iamClients(moto: MotoServer, key: AccessKey, denied?: string[]): AwsClients {
  const clients = createAwsClients({
    region: MOTO_REGION,
    endpoint: moto.endpoint,
    credentials: key,
    maxAttempts: 1,
  });
  for (const client of Object.values(clients)) readableAccessDenied(client, denied);
  return clients;
}
