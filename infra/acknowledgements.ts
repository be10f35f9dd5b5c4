/**
 * Every cdk-nag AwsSolutions finding this stack accepts, in one reviewable place, each on the narrowest construct
 * and with its reason (cdk-nag 3: `Validations.of(scope).acknowledge`). Anything not listed here fails synth.
 * test/infra/compliance.test.ts pins this list: a new finding, or an acknowledgement that no longer matches, fails it.
 */
import { Validations } from 'aws-cdk-lib';
import type { IConstruct } from 'constructs';
import type { BlackcloudConfig } from './config.ts';
import type { Broker } from './constructs/broker.ts';
import type { Receiver } from './constructs/receiver.ts';
import type { Revocation } from './constructs/revocation.ts';

/** The parts of the stack whose findings are acknowledged (the stack passes itself). */
export interface AcknowledgedStack {
  readonly config: BlackcloudConfig;
  readonly broker: Broker;
  readonly revocation: Revocation;
  readonly receiver: Receiver;
}

export interface NagAcknowledgement {
  /** The construct the finding is on (acknowledgements cover its children). */
  readonly scope: IConstruct;
  /** cdk-nag finding id, e.g. 'AwsSolutions::AwsSolutions-EC23' or '...-IAM5[Resource::*]'. */
  readonly id: string;
  readonly reason: string;
}

const DESCRIBE_IS_UNSCOPABLE =
  'Resource::* only on ec2:DescribeSecurityGroups, which IAM cannot scope to a resource (it supports no ' +
  'resource type); Authorize/Revoke/UpdateDescriptions are scoped to the broker security group ARNs ' +
  '(docs/operations-aws.md, documented exception).';

const NO_DETAILED_MONITORING =
  'Basic 5-minute EC2 metrics suffice: receiver liveness is alarmed from its own one-minute heartbeat and both ' +
  'instances have status-check alarms; detailed monitoring would add about 2 USD per instance per month.';

const NO_TERMINATION_PROTECTION =
  'The instance is cattle: a code or configuration change replaces it (userDataCausesReplacement) and ' +
  '`cdk destroy` must be able to delete it; all state lives in DynamoDB, Secrets Manager and the security groups.';

const NODE_24 =
  'Pinned to nodejs24.x on purpose: the receiver runs Node 24 (the LTS) on Amazon Linux 2023 and the handlers ' +
  'share its code and bundle target.';

/** The acknowledgements of `stack`, as data (used by `acknowledgeNagFindings` and by the tests). */
export function nagAcknowledgements(stack: AcknowledgedStack): NagAcknowledgement[] {
  const list: NagAcknowledgement[] = [
    {
      scope: stack.receiver.securityGroup,
      id: 'AwsSolutions::AwsSolutions-EC23',
      reason:
        'The SPA port must accept UDP from wherever devices roam (default 0.0.0.0/0 and ::/0, configurable with ' +
        'spaSourceCidrs); the receiver never answers on it, so a scan sees nothing. It is the only ingress rule.',
    },
  ];
  const instances = stack.receiver.scaled
    ? [stack.broker.instance]
    : [stack.receiver.instance, stack.broker.instance];
  for (const instance of instances) {
    list.push(
      { scope: instance, id: 'AwsSolutions::AwsSolutions-EC28', reason: NO_DETAILED_MONITORING },
      { scope: instance, id: 'AwsSolutions::AwsSolutions-EC29', reason: NO_TERMINATION_PROTECTION },
    );
  }
  const roles = [stack.receiver.role, stack.revocation.revoker.role, stack.revocation.sweeper.role];
  for (const role of roles) {
    if (role === undefined) continue;
    list.push({
      scope: role,
      id: 'AwsSolutions::AwsSolutions-IAM5[Resource::*]',
      reason: DESCRIBE_IS_UNSCOPABLE,
    });
  }
  list.push({
    scope: stack.receiver.role,
    id: 'AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:thing/*]',
    reason:
      'iot:DescribeThing and iot:ListThingGroupsForThing on things of this account and Region only: thing names are ' +
      'device ids chosen at enrolment and IoT cannot scope things by thing group; the group itself is scoped exactly.',
  });
  for (const fn of [stack.revocation.revoker, stack.revocation.sweeper]) {
    list.push({ scope: fn, id: 'AwsSolutions::AwsSolutions-L1', reason: NODE_24 });
  }
  if (stack.receiver.loadBalancer !== undefined) {
    list.push({
      scope: stack.receiver.loadBalancer,
      id: 'AwsSolutions::AwsSolutions-ELB2',
      reason:
        'Network Load Balancer access logs exist only for TLS listeners; this balancer has a single UDP listener ' +
        '(SPA knocks), and every knock is audited by the receiver that handled it, client address included.',
    });
  }
  if (stack.config.sessionManager) {
    list.push({
      scope: stack.receiver.role,
      id: 'AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/AmazonSSMManagedInstanceCore]',
      reason:
        'Only with sessionManager: true, chosen by the operator for shell access without any inbound port; ' +
        'AmazonSSMManagedInstanceCore is the policy Session Manager documents for its agent.',
    });
  }
  return list;
}

export function acknowledgeNagFindings(stack: AcknowledgedStack): void {
  for (const { scope, id, reason } of nagAcknowledgements(stack)) {
    Validations.of(scope).acknowledge({ id, reason });
  }
}
