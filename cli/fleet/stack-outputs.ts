/**
 * Finds a deployed black cloud from its CloudFormation outputs (functions/core/stack-outputs.ts is the contract): the tables,
 * the fleet thing group, the broker security groups, the audit log group and the endpoints devices use.
 *
 * Contract:
 * - `parseFleetStack` (pure) validates the outputs once into a frozen `FleetStack`; missing or malformed outputs
 *   are one FleetError listing each output key and the fix (deploy the current infra/).
 * - `describeFleetStack` calls DescribeStacks; a stack that does not exist, or one still being created or
 *   deleted, is a FleetError naming the stack, the region and the fix (--stack NAME, or `npx cdk deploy`).
 */
import {
  type CloudFormationClient,
  DescribeStacksCommand,
  type Output,
} from '@aws-sdk/client-cloudformation';
import { STACK_OUTPUTS } from '../../functions/core/stack-outputs.ts';
import { FleetError } from './fleet.ts';

export interface FleetStack {
  readonly stackName: string;
  readonly region: string;
  readonly devicesTable: string;
  readonly grantsTable: string;
  readonly fleetThingGroup: string;
  readonly deviceThingType: string;
  readonly brokerSecurityGroupIds: readonly string[];
  readonly auditLogGroup: string;
  readonly receiverAddress: string;
  readonly spaPort: number;
  readonly brokerAddress: string;
  readonly brokerPort: number;
  readonly brokerTlsServerName: string;
  /** The broker's plain listener port; undefined when the stack has none (plainListener off, the default). */
  readonly brokerPlainPort: number | undefined;
}

const PORT = /^[1-9][0-9]{0,4}$/;

export function parseFleetStack(stackName: string, region: string, outputs: readonly Output[]): FleetStack {
  const values = new Map<string, string>();
  for (const output of outputs) {
    if (output.OutputKey !== undefined && output.OutputValue !== undefined) {
      values.set(output.OutputKey, output.OutputValue);
    }
  }
  const problems: string[] = [];
  const text = (key: string): string => {
    const value = values.get(key)?.trim() ?? '';
    if (value === '') problems.push(`${key} is missing`);
    return value;
  };
  const port = (key: string): number => {
    const value = text(key);
    if (value !== '' && (!PORT.test(value) || Number(value) > 65_535)) {
      problems.push(`${key} is ${JSON.stringify(value)}, not a port 1..65535`);
    }
    return Number(value);
  };
  const stack: FleetStack = {
    stackName,
    region,
    devicesTable: text(STACK_OUTPUTS.devicesTable),
    grantsTable: text(STACK_OUTPUTS.grantsTable),
    fleetThingGroup: text(STACK_OUTPUTS.fleetThingGroup),
    deviceThingType: text(STACK_OUTPUTS.deviceThingType),
    brokerSecurityGroupIds: text(STACK_OUTPUTS.brokerSecurityGroupIds)
      .split(',')
      .map((id) => id.trim())
      .filter((id) => id !== ''),
    auditLogGroup: text(STACK_OUTPUTS.auditLogGroup),
    receiverAddress: text(STACK_OUTPUTS.receiverAddress),
    spaPort: port(STACK_OUTPUTS.spaPort),
    brokerAddress: text(STACK_OUTPUTS.brokerAddress),
    brokerPort: port(STACK_OUTPUTS.brokerPort),
    brokerTlsServerName: text(STACK_OUTPUTS.brokerTlsServerName),
    brokerPlainPort: values.has(STACK_OUTPUTS.brokerPlainPort)
      ? port(STACK_OUTPUTS.brokerPlainPort)
      : undefined,
  };
  if (problems.length > 0) {
    throw new FleetError(
      `stack ${stackName} in ${region} is not a blackcloud stack of this version (${problems.join('; ')}); ` +
        'fix: deploy the current infra/ (npx cdk deploy) or pass the right --stack NAME',
    );
  }
  return Object.freeze(stack);
}

export async function describeFleetStack(
  cloudformation: CloudFormationClient,
  stackName: string,
  region: string,
): Promise<FleetStack> {
  let outputs: readonly Output[];
  let status: string;
  try {
    const result = await cloudformation.send(new DescribeStacksCommand({ StackName: stackName }));
    const stack = result.Stacks?.[0];
    outputs = stack?.Outputs ?? [];
    status = stack?.StackStatus ?? 'UNKNOWN';
  } catch (error) {
    if (error instanceof Error && /does not exist/.test(error.message)) {
      throw new FleetError(
        `stack ${stackName} does not exist in ${region}; fix: pass --stack NAME (and --region) of your ` +
          'deployment, or deploy it with "npx cdk deploy"',
        { cause: error },
      );
    }
    throw error;
  }
  if (/_IN_PROGRESS$/.test(status) && outputs.length === 0) {
    throw new FleetError(
      `stack ${stackName} in ${region} is ${status}; fix: wait until the deployment finishes`,
    );
  }
  if (status.startsWith('DELETE_')) {
    throw new FleetError(
      `stack ${stackName} in ${region} is ${status}; fix: deploy it again ("npx cdk deploy")`,
    );
  }
  return parseFleetStack(stackName, region, outputs);
}
