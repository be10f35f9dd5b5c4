/**
 * Finding the stack: the default name is the one `cdk deploy` uses, and the DescribeStacks states moto cannot
 * produce (a stack still being created, a deleted stack) give clear errors: aws-sdk-client-mock, with the exact
 * request asserted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CloudFormationClient, DescribeStacksCommand } from '@aws-sdk/client-cloudformation';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { FleetError } from '../../../cli/fleet/fleet.ts';
import { describeFleetStack } from '../../../cli/fleet/stack-outputs.ts';
import { DEFAULT_STACK_NAME } from '../../../functions/core/deployment.ts';
import { createBlackcloudApp } from '../../../infra/blackcloud-app.ts';

const cloudformation = new CloudFormationClient({
  region: 'eu-west-1',
  credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
});
const mock = mockClient(cloudformation);

afterEach(() => {
  mock.reset();
});

describe('describeFleetStack', () => {
  it('defaults to the stack name the CDK app deploys', () => {
    // An outdir of its own, removed after: without one the CDK leaves a cdk.outXXXXXX in the temp dir.
    const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-stack-name-'));
    try {
      const { stack } = createBlackcloudApp({ nag: false, context: {}, outdir });
      expect(stack.stackName).toBe(DEFAULT_STACK_NAME);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
    expect(DEFAULT_STACK_NAME).toBe('Blackcloud');
  });

  it.each([
    [
      'CREATE_IN_PROGRESS',
      /stack Blackcloud in eu-west-1 is CREATE_IN_PROGRESS; fix: wait until the deployment finishes/,
    ],
    ['DELETE_COMPLETE', /stack Blackcloud in eu-west-1 is DELETE_COMPLETE; fix: deploy it again/],
  ])('a stack in %s is a FleetError naming the state and the fix', async (status, message) => {
    mock.on(DescribeStacksCommand).resolves({
      Stacks: [
        { StackName: 'Blackcloud', StackStatus: status as 'CREATE_IN_PROGRESS', CreationTime: new Date() },
      ],
    });
    const found = describeFleetStack(cloudformation, 'Blackcloud', 'eu-west-1');
    await expect(found).rejects.toThrow(FleetError);
    await expect(found).rejects.toThrow(message);
    expect(mock.commandCalls(DescribeStacksCommand).map((call) => call.args[0].input)).toEqual([
      { StackName: 'Blackcloud' },
    ]);
  });

  it('other AWS errors pass through unchanged (the CLI prints them)', async () => {
    const denied = Object.assign(
      new Error('User is not authorized to perform: cloudformation:DescribeStacks'),
      {
        name: 'AccessDenied',
      },
    );
    mock.on(DescribeStacksCommand).rejects(denied);
    await expect(describeFleetStack(cloudformation, 'Blackcloud', 'eu-west-1')).rejects.toBe(denied);
  });
});
