/**
 * The scaled receiver tier (`receivers` > 1), as synthesized: an Auto Scaling group of receivers behind an
 * internet-facing UDP Network Load Balancer (listener on the SPA port, client address preserved, cross-zone, one
 * Elastic IP per subnet mapping), a TCP health check answered to the VPC range only, a rolling replacement that
 * keeps every receiver in service, receivers that hand their grants over at shutdown; cdk-nag passes at synth.
 * The default stack keeps its single instance and Elastic IP (no balancer, no group). Offline, no credentials.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CfnElement } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STACK_OUTPUTS } from '../../functions/core/stack-outputs.ts';
import { cdkJsonContext, createBlackcloudApp } from '../../infra/blackcloud-app.ts';
import type { BlackcloudStack } from '../../infra/blackcloud-stack.ts';
import { withReceiversFromContext } from '../../infra/context.ts';
import { InvalidPropError } from '../../infra/errors.ts';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

type Json = Record<string, unknown>;
type Resources = Record<
  string,
  { Type: string; Properties?: Json; UpdatePolicy?: Json; CreationPolicy?: Json }
>;

const outdirs: string[] = [];
let stack: BlackcloudStack;
let template: Template;
let resources: Resources;
let synthError: unknown;

function ofType(type: string): [string, Json, Resources[string]][] {
  return Object.entries(resources)
    .filter(([, resource]) => resource.Type === type)
    .map(([id, resource]) => [id, resource.Properties ?? {}, resource]);
}

function only<T>(items: T[]): T {
  expect(items).toHaveLength(1);
  return items[0]!;
}

function idOf(construct: { node: { defaultChild?: unknown } }): string {
  const child = construct.node.defaultChild as { logicalId: string };
  return stack.resolve(child.logicalId) as string;
}

/** Renders Fn::Join / Ref / GetAtt as text so user data can be read. */
function render(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object') {
    const object = value as Json;
    if ('Fn::Join' in object) {
      const [separator, parts] = object['Fn::Join'] as [string, unknown[]];
      return parts.map(render).join(separator);
    }
    if ('Fn::Base64' in object) return render(object['Fn::Base64']);
    if ('Ref' in object) return `{${String(object.Ref)}}`;
    if ('Fn::GetAtt' in object) return `{${(object['Fn::GetAtt'] as string[]).join('.')}}`;
  }
  return JSON.stringify(value);
}

beforeAll(() => {
  const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-scaled-'));
  outdirs.push(outdir);
  const built = createBlackcloudApp({
    outdir,
    context: cdkJsonContext(),
    nag: true,
    props: { receivers: 3, spaPort: 4000, receiverHealthPort: 4001 },
  });
  stack = built.stack;
  try {
    built.app.synth();
  } catch (error) {
    synthError = error;
  }
  template = Template.fromStack(stack);
  resources = template.toJSON().Resources as Resources;
});

afterAll(() => {
  for (const dir of outdirs) rmSync(dir, { recursive: true, force: true });
});

describe('scaled receivers: three behind a UDP Network Load Balancer', () => {
  it('GIVEN receivers: 3 WHEN synthesized with cdk-nag THEN no unacknowledged finding remains', () => {
    expect(synthError === undefined ? 'synth succeeded' : String(synthError)).toBe('synth succeeded');
  });

  it('THEN one internet-facing network balancer, cross-zone, one Elastic IP per public subnet', () => {
    const [, lb] = only(ofType('AWS::ElasticLoadBalancingV2::LoadBalancer'));
    expect(lb).toMatchObject({ Type: 'network', Scheme: 'internet-facing' });
    expect(lb.LoadBalancerAttributes).toContainEqual({
      Key: 'load_balancing.cross_zone.enabled',
      Value: 'true',
    });
    expect(lb.SecurityGroups).toBeUndefined();
    const subnets = ofType('AWS::EC2::Subnet').map(([id]) => id);
    const mappings = lb.SubnetMappings as { SubnetId: Json; AllocationId: Json }[];
    expect(mappings.map((m) => m.SubnetId).sort()).toEqual(subnets.map((id) => ({ Ref: id })).sort());
    const eips = stack.receiver.elasticIps.map((eip) => stack.resolve(eip.logicalId) as string);
    expect(mappings.map((m) => m.AllocationId)).toEqual(
      eips.map((id) => ({ 'Fn::GetAtt': [id, 'AllocationId'] })),
    );
    // The receivers' EIPs belong to the balancer, never to an instance.
    for (const id of eips) expect(resources[id]!.Properties!.InstanceId).toBeUndefined();
  });

  it('THEN its only listener is UDP on the SPA port, forwarding to the receivers', () => {
    const [, listener] = only(ofType('AWS::ElasticLoadBalancingV2::Listener'));
    const targetGroupId = idOf(stack.receiver.targetGroup!);
    expect(listener).toMatchObject({
      Protocol: 'UDP',
      Port: 4000,
      DefaultActions: [{ Type: 'forward', TargetGroupArn: { Ref: targetGroupId } }],
    });
  });

  it('THEN the target group: UDP instances on the SPA port, client address preserved, TCP health on 4001', () => {
    const [, targets] = only(ofType('AWS::ElasticLoadBalancingV2::TargetGroup'));
    expect(targets).toMatchObject({
      Protocol: 'UDP',
      Port: 4000,
      TargetType: 'instance',
      HealthCheckEnabled: true,
      HealthCheckProtocol: 'TCP',
      HealthCheckPort: '4001',
    });
    expect(targets.TargetGroupAttributes).toEqual(
      expect.arrayContaining([
        { Key: 'preserve_client_ip.enabled', Value: 'true' },
        { Key: 'deregistration_delay.timeout_seconds', Value: '30' },
      ]),
    );
  });

  it('THEN the health port is admitted from the VPC range only, and nothing else but the knocks', () => {
    const sg = resources[idOf(stack.receiver.securityGroup)]!.Properties!;
    const ingress = sg.SecurityGroupIngress as Json[];
    const vpcId = idOf(stack.network.vpc);
    expect(ingress).toHaveLength(3);
    expect(ingress).toContainEqual({
      IpProtocol: 'tcp',
      FromPort: 4001,
      ToPort: 4001,
      CidrIp: { 'Fn::GetAtt': [vpcId, 'CidrBlock'] },
      Description: 'load balancer health checks, from inside the VPC only',
    });
    // Every other rule is UDP on the SPA port: no TCP port is open to the internet.
    for (const rule of ingress.filter((r) => r.IpProtocol !== 'tcp')) {
      expect(rule).toMatchObject({ IpProtocol: 'udp', FromPort: 4000, ToPort: 4000 });
    }
    expect(ingress.filter((r) => r.IpProtocol === 'tcp')).toHaveLength(1);
    // No separate ingress resource opens the receivers either.
    const extra = ofType('AWS::EC2::SecurityGroupIngress').filter(([, rule]) =>
      JSON.stringify(rule.GroupId).includes(idOf(stack.receiver.securityGroup)),
    );
    expect(extra).toEqual([]);
  });

  it('THEN an Auto Scaling group of 3 (room for one replacement) in the target group, ELB health checks', () => {
    const [, group] = only(ofType('AWS::AutoScaling::AutoScalingGroup'));
    expect(group).toMatchObject({
      MinSize: '3',
      DesiredCapacity: '3',
      MaxSize: '4',
      HealthCheckType: 'ELB',
      TargetGroupARNs: [{ Ref: idOf(stack.receiver.targetGroup!) }],
    });
    expect((group.VPCZoneIdentifier as unknown[]).length).toBe(ofType('AWS::EC2::Subnet').length);
    expect(group.NotificationConfigurations).toEqual([
      expect.objectContaining({ TopicARN: { Ref: idOf(stack.audit.alarmTopic) } }),
    ]);
  });

  it('THEN replacement is one at a time with all three in service, each new receiver signalling when healthy', () => {
    const [id, , resource] = only(ofType('AWS::AutoScaling::AutoScalingGroup'));
    expect(resource.UpdatePolicy?.AutoScalingRollingUpdate).toMatchObject({
      MaxBatchSize: 1,
      MinInstancesInService: 3,
      WaitOnResourceSignals: true,
    });
    expect(resource.CreationPolicy).toEqual({ ResourceSignal: { Count: 3, Timeout: 'PT10M' } });
    const [, lt] = only(ofType('AWS::EC2::LaunchTemplate').filter(([ltId]) => ltId.startsWith('Receiver')));
    const data = lt.LaunchTemplateData as Json;
    expect(data.MetadataOptions).toMatchObject({ HttpTokens: 'required' });
    const userData = render(data.UserData);
    expect(userData).toContain(`cfn-signal --stack ${stack.stackName} --resource ${id} `);
    expect(userData).toContain('(exec 3<>/dev/tcp/127.0.0.1/4001)');
    expect(userData).toContain('BLACKCLOUD_HEALTH_PORT=4001\n');
    expect(userData).toContain('BLACKCLOUD_SHUTDOWN=handover\n');
    expect(userData).toContain('BLACKCLOUD_COALESCE_MS=1000\n');
    expect(userData).toContain('BLACKCLOUD_CLOSE_WINDOW_MS=2000\n');
    expect(userData).toContain('BLACKCLOUD_EC2_ATTEMPTS=20\n');
    // Each receiver holds one of 3 shares of the rule slots (slot-share-lease.ts).
    expect(userData).toContain('BLACKCLOUD_RECEIVERS=3\n');
    // Closed on connect stays on: the receivers share the connect claims in the grants table (docs/scaling.md).
    expect(userData).not.toContain('BLACKCLOUD_CLOSE_ON_CONNECT');
  });

  it('THEN the scaled receivers get the key-rotation switch (they elect one controller with the lease)', () => {
    const [, lt] = only(ofType('AWS::EC2::LaunchTemplate').filter(([ltId]) => ltId.startsWith('Receiver')));
    const userData = render((lt.LaunchTemplateData as Json).UserData);
    expect(userData).toContain('BLACKCLOUD_KEY_ROTATION_SECONDS=');
    expect(userData).toContain(`BLACKCLOUD_BROKER_HOST={${idOf(stack.broker.instance)}.PrivateIp}\n`);
  });

  it('THEN the receivers role may write and delete items on the devices table (keys, and the controller lease)', () => {
    const roleId = idOf(stack.receiver.role as never);
    const devices = `{${idOf(stack.grantStore.devices)}.Arn}`;
    const onDevices = ofType('AWS::IAM::Policy')
      .filter(([, policy]) => JSON.stringify(policy.Roles).includes(roleId))
      .flatMap(([, policy]) => (policy.PolicyDocument as { Statement: Json[] }).Statement)
      .filter((s) => render(s.Resource).includes(devices) || JSON.stringify(s.Resource).includes(devices))
      .flatMap((s) => (Array.isArray(s.Action) ? s.Action : [s.Action]) as string[]);
    expect(onDevices).toEqual(expect.arrayContaining(['dynamodb:PutItem', 'dynamodb:DeleteItem']));
    expect(onDevices).not.toContain('dynamodb:Scan');
  });

  it('THEN no receiver instance of its own: the only EC2 instance is the broker', () => {
    const [, instance] = only(ofType('AWS::EC2::Instance'));
    expect(JSON.stringify(instance)).toContain('blackcloud broker');
    expect(() => stack.receiver.instance).toThrow(/Auto Scaling group \(receivers = 3\)/);
  });

  it('THEN the receivers role keeps exactly the rule-management rights on the broker groups', () => {
    const roleId = idOf(stack.receiver.role as never);
    const statements = ofType('AWS::IAM::Policy')
      .filter(([, policy]) => JSON.stringify(policy.Roles).includes(roleId))
      .flatMap(([, policy]) => (policy.PolicyDocument as { Statement: Json[] }).Statement);
    const authorize = statements.find((s) =>
      JSON.stringify(s.Action).includes('AuthorizeSecurityGroupIngress'),
    );
    expect(authorize?.Resource).toEqual(
      expect.objectContaining({ 'Fn::Join': expect.anything() as unknown }),
    );
    expect(render(authorize?.Resource)).toContain(`{${idOf(stack.broker.securityGroups[0]!)}.GroupId}`);
    expect(statements.map((s) => s.Sid).filter(Boolean)).toEqual(
      expect.arrayContaining(['ReadReceiverCode', 'ShipAuditLines', 'ReadControllerTlsSecret']),
    );
  });

  it('THEN every balancer address is an output, the first one the address the CLI knocks on', () => {
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const eips = stack.receiver.elasticIps.map((eip) => stack.resolve(eip.logicalId) as string);
    expect(outputs[STACK_OUTPUTS.receiverAddress]!.Value).toEqual({ 'Fn::GetAtt': [eips[0], 'PublicIp'] });
    expect(render(outputs[STACK_OUTPUTS.receiverAddresses]!.Value)).toBe(
      eips.map((id) => `{${id}.PublicIp}`).join(','),
    );
  });

  it('THEN an alarm fires when fewer than three receivers pass the health check', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/NetworkELB',
      MetricName: 'HealthyHostCount',
      Threshold: 3,
      ComparisonOperator: 'LessThanThreshold',
      Dimensions: Match.arrayWith([Match.objectLike({ Name: 'TargetGroup' })]),
    });
  });
});

describe('the default stack keeps one receiver instance', () => {
  it('GIVEN no receivers prop WHEN synthesized THEN one instance with its Elastic IP, no balancer, no group', () => {
    const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-single-'));
    outdirs.push(outdir);
    const single = createBlackcloudApp({ outdir, context: cdkJsonContext(), nag: false }).stack;
    const t = Template.fromStack(single);
    t.resourceCountIs('AWS::ElasticLoadBalancingV2::LoadBalancer', 0);
    t.resourceCountIs('AWS::AutoScaling::AutoScalingGroup', 0);
    t.resourceCountIs('AWS::EC2::Instance', 2);
    const instance = single.receiver.instance.node.defaultChild as CfnElement;
    t.hasResourceProperties('AWS::EC2::EIP', { InstanceId: { Ref: single.resolve(instance.logicalId) } });
    expect(single.receiver.elasticIps).toHaveLength(1);
    const userData = JSON.stringify(t.toJSON());
    expect(userData).not.toContain('BLACKCLOUD_HEALTH_PORT');
    expect(userData).not.toContain('BLACKCLOUD_SHUTDOWN');
    expect(userData).not.toContain('BLACKCLOUD_CLOSE_ON_CONNECT');
  });
});

describe('-c receivers=N', () => {
  it('GIVEN the context key as the CLI passes it (a string) THEN it becomes the receivers prop', () => {
    expect(withReceiversFromContext({ spaPort: 4000 }, '3')).toEqual({ spaPort: 4000, receivers: 3 });
    expect(withReceiversFromContext({}, undefined)).toEqual({});
    expect(withReceiversFromContext({ receivers: 2 }, 2)).toEqual({ receivers: 2 });
  });

  it('GIVEN a non-number or a contradiction THEN InvalidPropError names the context key', () => {
    expect(() => withReceiversFromContext({}, 'three')).toThrow(InvalidPropError);
    expect(() => withReceiversFromContext({}, 'three')).toThrow(/context receivers' must be a whole number/);
    expect(() => withReceiversFromContext({ receivers: 2 }, '3')).toThrow(/contradicts blackcloud.receivers/);
  });
});
