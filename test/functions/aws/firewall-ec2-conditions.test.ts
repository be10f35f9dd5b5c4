/**
 * EC2 conditions moto cannot produce, with aws-sdk-client-mock (and only for these): RequestLimitExceeded
 * throttling, UpdateSecurityGroupRuleDescriptionsIngress on a rule that vanished (moto ignores unknown rules),
 * and UnknownIpPermissions in a revoke response (default VPCs). Each test asserts the exact requests sent.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  EC2ServiceException,
  RevokeSecurityGroupIngressCommand,
  UpdateSecurityGroupRuleDescriptionsIngressCommand,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FirewallApiError } from '../../../functions/aws/errors.ts';
import type { Metrics } from '../../../functions/aws/metrics.ts';
import type { RetryPolicy } from '../../../functions/aws/retry.ts';
import { SecurityGroupFirewall } from '../../../functions/aws/security-group-firewall.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { globalTimers as timers } from '../../support/timers.ts';

const GROUP = 'sg-0123456789abcdef0';
const NOW = 1_700_000_000_000;

function ec2Error(name: string, status: number): EC2ServiceException {
  return new EC2ServiceException({
    name,
    $fault: 'client',
    $metadata: { httpStatusCode: status },
    message: name,
  });
}

const grant = (n: number, seconds = 30): Grant => ({
  deviceId: `dev-${n}`,
  address: `198.51.100.${n}`,
  family: 4,
  access: [{ protocol: 'tcp', port: 8883 }],
  openedAt: NOW,
  expiresAt: NOW + seconds * 1000,
});

const permission = (ranges: { CidrIp: string; Description?: string }[]) => ({
  IpProtocol: 'tcp',
  FromPort: 8883,
  ToPort: 8883,
  IpRanges: ranges,
});

const describeInput = { GroupIds: [GROUP] };

let ec2: EC2Client;
let ec2Mock: ReturnType<typeof mockClient>;
let sleeps: number[];
let apiErrors: string[];
let firewall: SecurityGroupFirewall;

function sent(): [string, unknown][] {
  return ec2Mock.calls().map((c) => {
    const command = c.args[0] as { constructor: { name: string }; input: unknown };
    return [command.constructor.name, command.input];
  });
}

function makeFirewall(maxAttempts: number): SecurityGroupFirewall {
  const retry: RetryPolicy = {
    maxAttempts,
    baseDelayMs: 100,
    maxDelayMs: 1000,
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    random: () => 0.5,
  };
  const metrics: Metrics = {
    put: (name, _value, dimensions) => {
      if (name === 'ApiErrors') apiErrors.push(dimensions?.Code ?? '');
    },
  };
  return new SecurityGroupFirewall({
    ec2,
    securityGroupIds: [GROUP],
    brokerAccess: [{ protocol: 'tcp', port: 8883 }],
    clock: { now: () => NOW },
    timers,
    retry,
    metrics,
    coalesceWindowMs: 5,
  });
}

beforeEach(() => {
  ec2 = new EC2Client({
    region: 'us-east-1',
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
  });
  ec2Mock = mockClient(ec2);
  sleeps = [];
  apiErrors = [];
});
afterEach(async () => {
  await firewall?.close();
  ec2Mock.restore();
});

describe('SecurityGroupFirewall under EC2 conditions moto lacks', () => {
  it('retries RequestLimitExceeded with exponential backoff and jitter, then opens (same request each time)', async () => {
    ec2Mock
      .on(DescribeSecurityGroupsCommand)
      .resolves({ SecurityGroups: [{ GroupId: GROUP, IpPermissions: [] }] });
    ec2Mock
      .on(AuthorizeSecurityGroupIngressCommand)
      .rejectsOnce(ec2Error('RequestLimitExceeded', 503))
      .rejectsOnce(ec2Error('RequestLimitExceeded', 503))
      .resolves({ Return: true });
    firewall = makeFirewall(5);
    await Promise.all([firewall.allow([grant(1)]), firewall.allow([grant(2)])]);
    const authorize = {
      GroupId: GROUP,
      IpPermissions: [
        permission([
          { CidrIp: '198.51.100.1/32', Description: 'blackcloud:dev-1:exp=1700000030' },
          { CidrIp: '198.51.100.2/32', Description: 'blackcloud:dev-2:exp=1700000030' },
        ]),
      ],
    };
    expect(sent()).toEqual([
      ['DescribeSecurityGroupsCommand', describeInput],
      ['AuthorizeSecurityGroupIngressCommand', authorize],
      ['AuthorizeSecurityGroupIngressCommand', authorize],
      ['AuthorizeSecurityGroupIngressCommand', authorize],
    ]);
    expect(sleeps).toEqual([50, 100]);
    expect(apiErrors).toEqual(['RequestLimitExceeded', 'RequestLimitExceeded']);
    expect(firewall.openRules().map((r) => r.spec.cidr)).toEqual(['198.51.100.1/32', '198.51.100.2/32']);
  });

  it('rejects the grants (not silently) when throttling outlasts the attempts', async () => {
    ec2Mock
      .on(DescribeSecurityGroupsCommand)
      .resolves({ SecurityGroups: [{ GroupId: GROUP, IpPermissions: [] }] });
    ec2Mock.on(AuthorizeSecurityGroupIngressCommand).rejects(ec2Error('RequestLimitExceeded', 503));
    firewall = makeFirewall(3);
    const error = await firewall.allow([grant(1)]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FirewallApiError);
    expect((error as Error).message).toContain('RequestLimitExceeded');
    expect(ec2Mock.commandCalls(AuthorizeSecurityGroupIngressCommand)).toHaveLength(3);
    expect(sleeps).toEqual([50, 100]);
    expect(firewall.openRules()).toEqual([]);
  });

  it('re-authorizes when the rule to extend vanished (Update → InvalidPermission.NotFound → describe → Authorize)', async () => {
    ec2Mock
      .on(DescribeSecurityGroupsCommand)
      .resolvesOnce({
        SecurityGroups: [
          {
            GroupId: GROUP,
            IpPermissions: [
              permission([{ CidrIp: '198.51.100.1/32', Description: 'blackcloud:dev-1:exp=1700000010' }]),
            ],
          },
        ],
      })
      .resolves({ SecurityGroups: [{ GroupId: GROUP, IpPermissions: [] }] });
    ec2Mock
      .on(UpdateSecurityGroupRuleDescriptionsIngressCommand)
      .rejects(ec2Error('InvalidPermission.NotFound', 400));
    ec2Mock.on(AuthorizeSecurityGroupIngressCommand).resolves({ Return: true });
    firewall = makeFirewall(3);
    await firewall.allow([grant(1)]);
    const ranges = [{ CidrIp: '198.51.100.1/32', Description: 'blackcloud:dev-1:exp=1700000030' }];
    expect(sent()).toEqual([
      ['DescribeSecurityGroupsCommand', describeInput],
      [
        'UpdateSecurityGroupRuleDescriptionsIngressCommand',
        { GroupId: GROUP, IpPermissions: [permission(ranges)] },
      ],
      ['DescribeSecurityGroupsCommand', describeInput],
      ['AuthorizeSecurityGroupIngressCommand', { GroupId: GROUP, IpPermissions: [permission(ranges)] }],
    ]);
    expect(apiErrors).toEqual([]); // NotFound here is an answer, not an error
  });

  it('takes UnknownIpPermissions in a revoke response (default VPC) as already gone', async () => {
    ec2Mock
      .on(DescribeSecurityGroupsCommand)
      .resolves({ SecurityGroups: [{ GroupId: GROUP, IpPermissions: [] }] });
    ec2Mock.on(AuthorizeSecurityGroupIngressCommand).resolves({ Return: true });
    ec2Mock.on(RevokeSecurityGroupIngressCommand).resolves({
      Return: true,
      UnknownIpPermissions: [permission([{ CidrIp: '198.51.100.2/32' }])],
    });
    firewall = makeFirewall(3);
    await firewall.allow([grant(1), grant(2)]);
    ec2Mock.resetHistory();
    await firewall.revoke([grant(1), grant(2)]);
    expect(sent()).toEqual([
      [
        'RevokeSecurityGroupIngressCommand',
        {
          GroupId: GROUP,
          IpPermissions: [permission([{ CidrIp: '198.51.100.1/32' }, { CidrIp: '198.51.100.2/32' }])],
        },
      ],
    ]);
    expect(firewall.openRules()).toEqual([]);
  });
});
