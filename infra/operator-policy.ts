/**
 * The IAM policy the operator CLI (`blackcloud devices|grants|audit --aws`, cli/fleet/aws-fleet.ts) needs on one
 * deployed stack, stated once: docs/fleet.md ("IAM for the operator") lists it, and
 * test/functions/aws/iam-enforced.test.ts runs the CLI under exactly this policy (moto with IAM enforced).
 * The stack has no operator role (operators bring their own identity): attach this document to it, e.g. from
 * `npx cdk synth` output or by adding it as a managed policy in your own stack.
 */
import { Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import type { BlackcloudStack } from './blackcloud-stack.ts';

export function operatorPolicyDocument(stack: BlackcloudStack): iam.PolicyDocument {
  const scope = Stack.of(stack);
  const things = scope.formatArn({ service: 'iot', resource: 'thing', resourceName: '*' });
  return new iam.PolicyDocument({
    statements: [
      new iam.PolicyStatement({
        sid: 'ReadStackOutputs',
        actions: ['cloudformation:DescribeStacks'],
        resources: [
          scope.formatArn({
            service: 'cloudformation',
            resource: 'stack',
            resourceName: `${scope.stackName}/*`,
          }),
        ],
      }),
      new iam.PolicyStatement({
        sid: 'ManageFleetThings',
        actions: ['iot:CreateThing', 'iot:UpdateThing', 'iot:DeleteThing', 'iot:DescribeThing'],
        resources: [things],
      }),
      new iam.PolicyStatement({
        sid: 'ManageFleetGroup',
        actions: ['iot:AddThingToThingGroup', 'iot:RemoveThingFromThingGroup', 'iot:ListThingsInThingGroup'],
        resources: [stack.fleet.thingGroupArn],
      }),
      new iam.PolicyStatement({
        sid: 'ManageDeviceItems',
        actions: [
          'dynamodb:GetItem',
          'dynamodb:PutItem',
          'dynamodb:UpdateItem',
          'dynamodb:DeleteItem',
          'dynamodb:BatchGetItem',
        ],
        resources: [stack.grantStore.devices.tableArn],
      }),
      new iam.PolicyStatement({
        sid: 'RevokeGrantItems',
        actions: ['dynamodb:Scan', 'dynamodb:DeleteItem'],
        resources: [stack.grantStore.grants.tableArn],
      }),
      new iam.PolicyStatement({
        sid: 'DescribeBrokerGroups',
        // IAM has no resource type for Describe calls: '*' is the documented exception.
        actions: ['ec2:DescribeSecurityGroups'],
        resources: ['*'],
      }),
      new iam.PolicyStatement({
        sid: 'RevokeBrokerRules',
        actions: ['ec2:RevokeSecurityGroupIngress'],
        resources: stack.broker.securityGroupArns,
      }),
      new iam.PolicyStatement({
        sid: 'AuditLog',
        actions: ['logs:FilterLogEvents', 'logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [stack.audit.logGroup.logGroupArn],
      }),
    ],
  });
}
