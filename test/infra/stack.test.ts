/**
 * The synthesized template, unit by unit (GIVEN the default stack, WHEN synthesized, THEN ...): network, receiver,
 * broker, grant store, revocation, fleet, audit, IAM least privilege, outputs; no private key material anywhere
 * in the template; no context lookups. One synth shared by every test of the default stack, one more for a
 * stack with three grant groups and narrowed knock sources. Offline, no credentials.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type App, CfnElement } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import type { Asset } from 'aws-cdk-lib/aws-s3-assets';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ENV, OPTIONAL_ENV } from '../../functions/core/environment.ts';
import { STACK_OUTPUTS } from '../../functions/core/stack-outputs.ts';
import { cdkJsonContext, createBlackcloudApp } from '../../infra/blackcloud-app.ts';
import type { BlackcloudStack } from '../../infra/blackcloud-stack.ts';
import { AUDIT_METRICS, AUDIT_QUERIES } from '../../infra/constructs/audit.ts';
import { RULE_DESCRIBE_ACTIONS } from '../../infra/constructs/broker.ts';
import { TABLE_SCHEMA } from '../../infra/constructs/grant-store.ts';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

type Json = Record<string, unknown>;
type Resources = Record<string, { Type: string; Properties?: Json; DeletionPolicy?: string }>;

/** Renders CloudFormation intrinsics as text, tokens as {Ref} / {Resource.Attr}, so scripts can be read. */
function render(value: unknown): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  if (value !== null && typeof value === 'object') {
    const object = value as Json;
    if ('Fn::Join' in object) {
      const [separator, parts] = object['Fn::Join'] as [string, unknown[]];
      return parts.map(render).join(separator);
    }
    if ('Ref' in object) return `{${String(object.Ref)}}`;
    if ('Fn::GetAtt' in object) return `{${(object['Fn::GetAtt'] as string[]).join('.')}}`;
    if ('Fn::Sub' in object) return String(object['Fn::Sub']);
    if ('Fn::Base64' in object) return render(object['Fn::Base64']);
  }
  return JSON.stringify(value);
}

/** The logical id as synthesized (including overrides such as the instances' user-data hash suffix). */
function logicalId(stack: BlackcloudStack, construct: { node: { defaultChild?: unknown } }): string {
  const element = (construct instanceof CfnElement ? construct : construct.node.defaultChild) as CfnElement;
  return stack.resolve(element.logicalId) as string;
}

function only<T>(items: T[]): T {
  expect(items).toHaveLength(1);
  return items[0]!;
}

interface Synthesized {
  app: App;
  stack: BlackcloudStack;
  template: Template;
  resources: Resources;
  outdir: string;
}

function synthesize(props: Parameters<typeof createBlackcloudApp>[0]): Synthesized {
  const outdir = mkdtempSync(join(tmpdir(), 'blackcloud-infra-test-'));
  const { app, stack } = createBlackcloudApp({ ...props, outdir, context: cdkJsonContext(), nag: false });
  const template = Template.fromStack(stack);
  return { app, stack, template, resources: template.toJSON().Resources as Resources, outdir };
}

function ofType(resources: Resources, type: string): [string, Json][] {
  return Object.entries(resources)
    .filter(([, resource]) => resource.Type === type)
    .map(([id, resource]) => [id, resource.Properties ?? {}]);
}

/** Every policy statement in the template, with the role(s) it is attached to. */
function statements(resources: Resources): { roles: string[]; statement: Json }[] {
  return ofType(resources, 'AWS::IAM::Policy').flatMap(([, policy]) =>
    ((policy.PolicyDocument as Json).Statement as Json[]).map((statement) => ({
      roles: (policy.Roles as Json[]).map((role) => String(role.Ref)),
      statement,
    })),
  );
}

function actionsOf(statement: Json): string[] {
  const action = statement.Action;
  return Array.isArray(action) ? (action as string[]) : [String(action)];
}

function resourcesOf(statement: Json): string[] {
  const resource = statement.Resource;
  return (Array.isArray(resource) ? resource : [resource]).map(render);
}

/** Statements attached to `roleLogicalId`. */
function statementsOf(resources: Resources, roleLogicalId: string): Json[] {
  return statements(resources)
    .filter(({ roles }) => roles.includes(roleLogicalId))
    .map(({ statement }) => statement);
}

/** The role (logical id) a construct's principal assumes. */
function roleIdOf(stack: BlackcloudStack, role: { node: { defaultChild?: unknown } } | undefined): string {
  expect(role).toBeDefined();
  return logicalId(stack, role!);
}

let main: Synthesized;

beforeAll(() => {
  main = synthesize({});
});

afterAll(() => {
  rmSync(main.outdir, { recursive: true, force: true });
});

describe('network', () => {
  it('GIVEN the default stack THEN one IPv4 VPC, public subnets only, no NAT gateway', () => {
    const { template, resources } = main;
    template.resourceCountIs('AWS::EC2::VPC', 1);
    template.resourceCountIs('AWS::EC2::NatGateway', 0);
    template.resourceCountIs('AWS::EC2::VPCCidrBlock', 0);
    const subnets = ofType(resources, 'AWS::EC2::Subnet');
    expect(subnets.length).toBeGreaterThanOrEqual(1);
    for (const [, subnet] of subnets) expect(subnet.MapPublicIpOnLaunch).toBe(true);
    // Every subnet route table routes 0.0.0.0/0 to the internet gateway: all subnets are public.
    const defaultRoutes = ofType(resources, 'AWS::EC2::Route').filter(
      ([, route]) => route.DestinationCidrBlock,
    );
    expect(defaultRoutes).toHaveLength(subnets.length);
    for (const [, route] of defaultRoutes) expect(route.GatewayId).toEqual({ Ref: expect.any(String) });
  });

  it('GIVEN the default stack THEN a flow log records rejected traffic', () => {
    main.template.hasResourceProperties('AWS::EC2::FlowLog', {
      TrafficType: 'REJECT',
      LogDestinationType: 'cloud-watch-logs',
    });
  });
});

describe('receiver', () => {
  it('GIVEN the default stack THEN its security group admits exactly UDP 62201 from anywhere (IPv4 and IPv6)', () => {
    const { stack, resources } = main;
    const group = resources[logicalId(stack, stack.receiver.securityGroup)]!;
    const ingress = (group.Properties!.SecurityGroupIngress as Json[]).map(
      ({ Description: _, ...rule }) => rule,
    );
    expect(ingress).toEqual([
      { IpProtocol: 'udp', FromPort: 62_201, ToPort: 62_201, CidrIp: '0.0.0.0/0' },
      { IpProtocol: 'udp', FromPort: 62_201, ToPort: 62_201, CidrIpv6: '::/0' },
    ]);
    // No separate ingress resource targets the receiver's group.
    const receiverGroupRef = { 'Fn::GetAtt': [logicalId(stack, stack.receiver.securityGroup), 'GroupId'] };
    const separate = ofType(resources, 'AWS::EC2::SecurityGroupIngress').filter(
      ([, rule]) => JSON.stringify(rule.GroupId) === JSON.stringify(receiverGroupRef),
    );
    expect(separate).toEqual([]);
  });

  it('GIVEN the default stack THEN its egress is HTTPS out and the broker TLS port to the broker group only', () => {
    const { stack, resources } = main;
    const group = resources[logicalId(stack, stack.receiver.securityGroup)]!;
    const egress = (group.Properties!.SecurityGroupEgress as Json[]).map(
      ({ Description: _, ...rule }) => rule,
    );
    expect(egress).toEqual([{ IpProtocol: 'tcp', FromPort: 443, ToPort: 443, CidrIp: '0.0.0.0/0' }]);
    const toBroker = only(ofType(resources, 'AWS::EC2::SecurityGroupEgress'))[1];
    expect(toBroker).toMatchObject({
      IpProtocol: 'tcp',
      FromPort: 8883,
      ToPort: 8883,
      GroupId: { 'Fn::GetAtt': [logicalId(stack, stack.receiver.securityGroup), 'GroupId'] },
      DestinationSecurityGroupId: {
        'Fn::GetAtt': [logicalId(stack, stack.broker.securityGroups[0]!), 'GroupId'],
      },
    });
  });

  it('GIVEN the default stack THEN a t4g.nano on Amazon Linux 2023 arm64, resolved from SSM at deploy time', () => {
    const { stack, template } = main;
    const instance = template.toJSON().Resources[logicalId(stack, stack.receiver.instance)];
    expect(instance.Properties.InstanceType).toBe('t4g.nano');
    const parameterId = instance.Properties.ImageId.Ref as string;
    expect(template.toJSON().Parameters[parameterId]).toEqual({
      Type: 'AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>',
      Default: '/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-6.1-arm64',
    });
    expect(instance.Properties.BlockDeviceMappings).toEqual([
      { DeviceName: '/dev/xvda', Ebs: { Encrypted: true, VolumeSize: 8, VolumeType: 'gp3' } },
    ]);
  });

  it('GIVEN the default stack THEN its user data runs the bundled receiver under systemd as an unprivileged user', () => {
    const { stack, resources } = main;
    const userData = render(resources[logicalId(stack, stack.receiver.instance)]!.Properties!.UserData);
    expect(userData).toMatch(/^#!\/bin\/bash\n/);
    expect(userData).toContain('dnf install -y nodejs24 amazon-cloudwatch-agent');
    expect(userData).toContain("aws s3 cp 's3://cdk-hnb659fds-assets-");
    expect(userData).toContain('ExecStart=/usr/bin/node-24 /opt/blackcloud/receiver/receiver.mjs');
    expect(userData).toContain('User=blackcloud');
    expect(userData).toContain('Restart=on-failure');
    expect(userData).toContain('NoNewPrivileges=yes');
    expect(userData).toContain('CapabilityBoundingSet=\n');
    expect(userData).toContain('StandardOutput=append:/var/log/blackcloud/receiver.log');
    expect(userData).toContain('amazon-cloudwatch-agent-ctl -a fetch-config');
    expect(userData).toContain(`"log_group_name": "{${logicalId(stack, stack.audit.logGroup)}}"`);
  });

  it('GIVEN the default stack THEN the receiver gets every contract environment variable', () => {
    const { stack, resources } = main;
    const userData = render(resources[logicalId(stack, stack.receiver.instance)]!.Properties!.UserData);
    const marker = "<<'ENV'\n";
    const envBlock = userData.slice(userData.indexOf(marker) + marker.length, userData.indexOf('\nENV\n'));
    const environment = Object.fromEntries(
      envBlock
        .split('\n')
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    const id = (construct: { node: { defaultChild?: unknown } }) => `{${logicalId(stack, construct)}}`;
    expect(environment).toMatchObject({
      BLACKCLOUD_SPA_PORT: '62201',
      BLACKCLOUD_BROKER_PORT: '8883',
      BLACKCLOUD_NONCE_TABLE: id(stack.grantStore.nonces),
      BLACKCLOUD_DEVICES_TABLE: id(stack.grantStore.devices),
      BLACKCLOUD_GRANTS_TABLE: id(stack.grantStore.grants),
      BLACKCLOUD_BROKER_SECURITY_GROUP_IDS: `{${logicalId(stack, stack.broker.securityGroups[0]!)}.GroupId}`,
      BLACKCLOUD_REVOKE_QUEUE_URL: id(stack.revocation.queue),
      BLACKCLOUD_FLEET_THING_GROUP: 'Blackcloud-fleet',
      BLACKCLOUD_GRANT_SECONDS: '30',
      BLACKCLOUD_CLOCK_WINDOW_SECONDS: '60',
      AWS_REGION: '{AWS::Region}',
      BLACKCLOUD_KEY_ROTATION_SECONDS: '86400',
      BLACKCLOUD_BROKER_HOST: `{${logicalId(stack, stack.broker.instance)}.PrivateIp}`,
    });
    expect(Object.keys(environment).sort()).toEqual(Object.values(ENV).sort());
  });

  it('GIVEN the default stack THEN both user data scripts stay well under the 16 KB EC2 limit', () => {
    const { stack, resources } = main;
    for (const instance of [stack.receiver.instance, stack.broker.instance]) {
      const userData = render(resources[logicalId(stack, instance)]!.Properties!.UserData);
      // Tokens render shorter than their values (table names, URLs): keep a 4 KB margin.
      expect(Buffer.byteLength(userData)).toBeLessThan(12 * 1024);
    }
  });

  it('GIVEN the default stack THEN the bundled receiver is one ES module file that Node can parse', () => {
    const bundle = join(main.outdir, main.stack.receiver.code.assetPath);
    expect(statSync(bundle).isFile()).toBe(true);
    expect(bundle.endsWith('.mjs')).toBe(true);
    execFileSync(process.execPath, ['--check', bundle]);
  });

  it('GIVEN the default stack THEN IMDSv2 is required and an Elastic IP is attached', () => {
    const { stack, template } = main;
    template.resourcePropertiesCountIs(
      'AWS::EC2::LaunchTemplate',
      { LaunchTemplateData: { MetadataOptions: { HttpTokens: 'required' } } },
      2,
    );
    template.hasResourceProperties('AWS::EC2::EIP', {
      Domain: 'vpc',
      InstanceId: { Ref: logicalId(stack, stack.receiver.instance) },
    });
  });
});

describe('broker', () => {
  it('GIVEN the default stack THEN its security group has no ingress but the receiver group on 8883', () => {
    const { stack, resources } = main;
    const brokerGroup = logicalId(stack, stack.broker.securityGroups[0]!);
    expect(resources[brokerGroup]!.Properties!.SecurityGroupIngress).toBeUndefined();
    const ingressResources = ofType(resources, 'AWS::EC2::SecurityGroupIngress');
    expect(ingressResources.map(([, rule]) => rule)).toEqual([
      {
        IpProtocol: 'tcp',
        FromPort: 8883,
        ToPort: 8883,
        GroupId: { 'Fn::GetAtt': [brokerGroup, 'GroupId'] },
        SourceSecurityGroupId: { 'Fn::GetAtt': [logicalId(stack, stack.receiver.securityGroup), 'GroupId'] },
        Description: 'controller session (key rotation) from the receiver',
      },
    ]);
  });

  it('GIVEN the default stack THEN its egress is only HTTP(S) for packages and AWS APIs', () => {
    const { stack, resources } = main;
    const group = resources[logicalId(stack, stack.broker.securityGroups[0]!)]!;
    const ports = (group.Properties!.SecurityGroupEgress as Json[]).map(
      (rule) => `${String(rule.IpProtocol)}/${String(rule.FromPort)}-${String(rule.ToPort)}`,
    );
    expect(new Set(ports)).toEqual(new Set(['tcp/443-443', 'tcp/80-80']));
  });

  it('GIVEN the default stack THEN Debian 12 arm64 from its public SSM parameter, t4g.micro, encrypted disk', () => {
    const { stack, template } = main;
    const instance = template.toJSON().Resources[logicalId(stack, stack.broker.instance)];
    expect(instance.Properties.InstanceType).toBe('t4g.micro');
    expect(template.toJSON().Parameters[instance.Properties.ImageId.Ref]).toEqual({
      Type: 'AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>',
      Default: '/aws/service/debian/release/12/latest/arm64',
    });
    expect(instance.Properties.BlockDeviceMappings[0].Ebs.Encrypted).toBe(true);
  });

  it('GIVEN the default stack THEN its user data configures Mosquitto with TLS, client certificates and dynamic security', () => {
    const { stack, resources } = main;
    const userData = render(resources[logicalId(stack, stack.broker.instance)]!.Properties!.UserData);
    expect(userData).toContain('apt-get install -y --no-install-recommends mosquitto awscli');
    expect(userData).toContain("--secret-id 'Blackcloud/broker-tls'");
    for (const line of [
      'listener 8883',
      'require_certificate true',
      'use_identity_as_username true',
      'allow_anonymous false',
      'plugin /usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so',
      'plugin_opt_config_file /var/lib/mosquitto/dynamic-security.json',
      'log_dest topic',
      'log_type notice',
      "cat > /var/lib/mosquitto/dynamic-security.json <<'DYNSEC'",
      'if [ ! -f /var/lib/mosquitto/dynamic-security.json ]; then',
    ]) {
      expect(userData).toContain(`\n${line}\n`);
    }
    expect(userData).not.toContain('acl_file');
    // One descriptor per session: systemd's default of 1,024 would cap the broker at about 1,000 devices.
    expect(userData).toContain('\\nLimitNOFILE=1048576\\n');
    // The plugin's initial JSON: the controller is its one client, with the controller role; no device yet.
    const json = userData.slice(
      userData.indexOf("<<'DYNSEC'\n") + "<<'DYNSEC'\n".length,
      userData.indexOf('\nDYNSEC\n'),
    );
    const dynsec = JSON.parse(json) as {
      clients: { username: string; roles: { rolename: string }[] }[];
      roles: { rolename: string }[];
      defaultACLAccess: Record<string, boolean>;
    };
    expect(dynsec.clients).toEqual([
      {
        username: 'blackcloud-controller',
        textname: 'blackcloud controller',
        roles: [{ rolename: 'blackcloud-controller' }],
      },
    ]);
    expect(dynsec.roles.map((role) => role.rolename)).toEqual(['blackcloud-controller']);
    expect(dynsec.defaultACLAccess).toEqual({
      publishClientSend: false,
      publishClientReceive: false,
      subscribe: false,
      unsubscribe: true,
    });
  });

  it('GIVEN the default stack THEN the broker has no plain listener and the receiver no plain port', () => {
    const { stack, resources } = main;
    const brokerData = render(resources[logicalId(stack, stack.broker.instance)]!.Properties!.UserData);
    expect(brokerData.match(/\nlistener /g)).toHaveLength(1);
    expect(brokerData).not.toContain('listener 1883');
    const receiverData = render(resources[logicalId(stack, stack.receiver.instance)]!.Properties!.UserData);
    expect(receiverData).not.toContain(OPTIONAL_ENV.plainBrokerPort);
    expect(stack.broker.plainPort).toBeUndefined();
  });

  it('GIVEN the default stack THEN the broker role may only read its TLS secret', () => {
    const { stack, resources } = main;
    const role = roleIdOf(stack, stack.broker.instance.role as never);
    const brokerStatements = statementsOf(resources, role);
    expect(brokerStatements).toHaveLength(1);
    expect(actionsOf(brokerStatements[0]!)).toEqual(['secretsmanager:GetSecretValue']);
    expect(resourcesOf(brokerStatements[0]!)).toEqual([
      'arn:{AWS::Partition}:secretsmanager:{AWS::Region}:{AWS::AccountId}:secret:Blackcloud/broker-tls-??????',
    ]);
    main.template.hasResource('AWS::IAM::Role', Match.anyValue());
  });
});

describe('IAM least privilege', () => {
  const sgArn = (group: string) =>
    `arn:{AWS::Partition}:ec2:{AWS::Region}:{AWS::AccountId}:security-group/{${group}.GroupId}`;

  it('GIVEN the default stack THEN Authorize/Revoke/UpdateDescriptions are scoped to the broker group ARN only', () => {
    const { stack, resources } = main;
    const brokerGroup = logicalId(stack, stack.broker.securityGroups[0]!);
    const managing = statements(resources).filter(({ statement }) =>
      actionsOf(statement).some((action) => /^ec2:(Authorize|Revoke|Update)/.test(action)),
    );
    expect(managing.length).toBe(3); // receiver, revoker, sweeper
    for (const { statement } of managing) expect(resourcesOf(statement)).toEqual([sgArn(brokerGroup)]);

    const receiverRole = roleIdOf(stack, stack.receiver.role as never);
    const receiverManaging = managing.filter(({ roles }) => roles.includes(receiverRole));
    expect(actionsOf(only(receiverManaging).statement).sort()).toEqual([
      'ec2:AuthorizeSecurityGroupIngress',
      'ec2:RevokeSecurityGroupIngress',
      'ec2:UpdateSecurityGroupRuleDescriptionsIngress',
    ]);
    for (const fn of [stack.revocation.revoker, stack.revocation.sweeper]) {
      const role = roleIdOf(stack, fn.role as never);
      const own = managing.filter(({ roles }) => roles.includes(role));
      expect(actionsOf(only(own).statement)).toEqual(['ec2:RevokeSecurityGroupIngress']);
    }
  });

  it('GIVEN the default stack THEN Resource "*" appears only with the unscopable Describe calls', () => {
    const wildcard = statements(main.resources).filter(({ statement }) =>
      resourcesOf(statement).includes('*'),
    );
    expect(wildcard.length).toBe(3);
    for (const { statement } of wildcard) {
      expect(actionsOf(statement).sort()).toEqual([...RULE_DESCRIBE_ACTIONS].sort());
      expect(resourcesOf(statement)).toEqual(['*']);
      // What functions/aws/sg-api.ts calls (proven under enforced IAM: test/functions/aws/iam-enforced.test.ts).
      expect(actionsOf(statement)).toEqual(['ec2:DescribeSecurityGroups']);
    }
    const describing = new Set(wildcard.flatMap(({ roles }) => roles));
    expect([...describing].sort()).toEqual(
      [
        roleIdOf(main.stack, main.stack.receiver.role as never),
        roleIdOf(main.stack, main.stack.revocation.revoker.role as never),
        roleIdOf(main.stack, main.stack.revocation.sweeper.role as never),
      ].sort(),
    );
  });

  it('GIVEN the default stack THEN no role carries a managed policy, and every statement allows', () => {
    for (const [, role] of ofType(main.resources, 'AWS::IAM::Role'))
      expect(role.ManagedPolicyArns).toBeUndefined();
    for (const { statement } of statements(main.resources)) expect(statement.Effect).toBe('Allow');
  });

  it('GIVEN the default stack THEN the receiver has exactly its data-plane rights', () => {
    const { stack, resources } = main;
    const role = roleIdOf(stack, stack.receiver.role as never);
    const granted = new Map<string, string[]>();
    for (const statement of statementsOf(resources, role)) {
      for (const action of actionsOf(statement)) {
        granted.set(action, [...(granted.get(action) ?? []), ...resourcesOf(statement)]);
      }
    }
    const table = (construct: { node: { defaultChild?: unknown } }) => `{${logicalId(stack, construct)}.Arn}`;
    // PutItem: nonces (replay record), devices (key rotation); never more.
    expect(granted.get('dynamodb:PutItem')?.sort()).toEqual(
      [table(stack.grantStore.nonces), table(stack.grantStore.devices)].sort(),
    );
    // UpdateItem: devices (key rotation, the lease), grants (the grant's fields and the connect claims).
    expect(granted.get('dynamodb:UpdateItem')?.sort()).toEqual(
      [table(stack.grantStore.devices), table(stack.grantStore.grants)].sort(),
    );
    // Nothing on the nonce table but PutItem.
    const onNonces = [...granted].filter(([, arns]) => arns.includes(table(stack.grantStore.nonces)));
    expect(onNonces.map(([action]) => action)).toEqual(['dynamodb:PutItem']);
    expect(granted.get('sqs:SendMessage')).toEqual([`{${logicalId(stack, stack.revocation.queue)}.Arn}`]);
    expect(granted.get('logs:PutLogEvents')).toEqual([`{${logicalId(stack, stack.audit.logGroup)}.Arn}`]);
    expect(granted.get('iot:ListThingsInThingGroup')).toEqual([
      'arn:{AWS::Partition}:iot:{AWS::Region}:{AWS::AccountId}:thinggroup/Blackcloud-fleet',
    ]);
    expect(granted.get('secretsmanager:GetSecretValue')).toEqual([
      'arn:{AWS::Partition}:secretsmanager:{AWS::Region}:{AWS::AccountId}:secret:Blackcloud/controller-tls-??????',
    ]);
    expect(granted.get('s3:GetObject')?.[0]).toMatch(
      /^arn:\{AWS::Partition\}:s3:::cdk-.*\/[0-9a-f]{64}\.mjs$/,
    );
    expect([...granted.keys()].sort()).toEqual(
      [
        'dynamodb:BatchGetItem',
        'dynamodb:DeleteItem',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:Scan',
        'dynamodb:UpdateItem',
        'ec2:AuthorizeSecurityGroupIngress',
        'ec2:DescribeSecurityGroups',
        'ec2:RevokeSecurityGroupIngress',
        'ec2:UpdateSecurityGroupRuleDescriptionsIngress',
        'iot:DescribeThing',
        'iot:ListThingGroupsForThing',
        'iot:ListThingsInThingGroup',
        'logs:CreateLogStream',
        'logs:DescribeLogStreams',
        'logs:PutLogEvents',
        's3:GetObject',
        'secretsmanager:GetSecretValue',
        'sqs:SendMessage',
      ].sort(),
    );
  });

  it('GIVEN the default stack THEN each Lambda touches only its own log group, the queue (revoker) and the grants table', () => {
    const { stack, resources } = main;
    for (const [fn, logGroupPath] of [
      [stack.revocation.revoker, 'RevokerLogs'],
      [stack.revocation.sweeper, 'SweeperLogs'],
    ] as const) {
      const role = roleIdOf(stack, fn.role as never);
      const all = statementsOf(resources, role);
      const logs = all.filter((statement) =>
        actionsOf(statement).some((action) => action.startsWith('logs:')),
      );
      const logGroup = stack.revocation.node.findChild(logGroupPath) as never;
      expect(resourcesOf(only(logs))).toEqual([`{${logicalId(stack, logGroup)}.Arn}`]);
      const dynamo = all.filter((statement) =>
        actionsOf(statement).some((action) => action.startsWith('dynamodb:')),
      );
      const grantsTable = `{${logicalId(stack, stack.grantStore.grants)}.Arn}`;
      const dynamoRights = dynamo.flatMap((statement) =>
        actionsOf(statement).flatMap((action) => resourcesOf(statement).map((arn) => `${action} ${arn}`)),
      );
      expect(dynamoRights.sort()).toEqual([
        `dynamodb:DeleteItem ${grantsTable}`,
        `dynamodb:GetItem ${grantsTable}`,
        `dynamodb:Scan ${grantsTable}`,
      ]);
      const sqs = all.filter((statement) => actionsOf(statement).some((action) => action.startsWith('sqs:')));
      if (fn === stack.revocation.revoker) {
        expect(resourcesOf(only(sqs))).toEqual([`{${logicalId(stack, stack.revocation.queue)}.Arn}`]);
        expect(actionsOf(only(sqs))).not.toContain('sqs:SendMessage');
      } else {
        expect(sqs).toEqual([]);
      }
    }
  });
});

describe('grant store', () => {
  it('GIVEN the default stack THEN three on-demand, encrypted tables with point-in-time recovery', () => {
    const tables = ofType(main.resources, 'AWS::DynamoDB::Table');
    expect(tables).toHaveLength(3);
    for (const [, table] of tables) {
      expect(table.BillingMode).toBe('PAY_PER_REQUEST');
      expect(table.SSESpecification).toEqual({ SSEEnabled: true });
      expect(table.PointInTimeRecoverySpecification).toEqual({ PointInTimeRecoveryEnabled: true });
    }
  });

  it('GIVEN the default stack THEN the nonce table is keyed by `pk` (the replay id) with TTL attribute `ttl`', () => {
    const { stack, resources } = main;
    const nonces = resources[logicalId(stack, stack.grantStore.nonces)]!;
    expect(nonces.Properties).toMatchObject({
      KeySchema: [{ AttributeName: TABLE_SCHEMA.nonces.partitionKey, KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'pk', AttributeType: 'S' }],
      TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
    });
    expect(nonces.DeletionPolicy).toBe('Delete');
  });

  it('GIVEN the default stack THEN the devices/keys table is keyed by `pk`, without TTL, and retained', () => {
    const { stack, resources } = main;
    const devices = resources[logicalId(stack, stack.grantStore.devices)]!;
    expect(devices.Properties!.KeySchema).toEqual([{ AttributeName: 'pk', KeyType: 'HASH' }]);
    expect(devices.Properties!.TimeToLiveSpecification).toBeUndefined();
    expect(devices.Properties!.GlobalSecondaryIndexes).toBeUndefined();
    expect(devices.DeletionPolicy).toBe('Retain');
  });

  it('GIVEN the default stack THEN the grants table is keyed by `pk` (the source address) with TTL `ttl`', () => {
    const { stack, resources } = main;
    const grants = resources[logicalId(stack, stack.grantStore.grants)]!;
    expect(grants.Properties).toMatchObject({
      KeySchema: [{ AttributeName: 'pk', KeyType: 'HASH' }],
      TimeToLiveSpecification: { AttributeName: 'ttl', Enabled: true },
    });
  });
});

describe('revocation', () => {
  it('GIVEN the default stack THEN a delay queue of 30 s, encrypted, with a dead-letter queue after 5 receives', () => {
    const { stack, resources } = main;
    const queue = resources[logicalId(stack, stack.revocation.queue)]!;
    expect(queue.Properties).toMatchObject({
      DelaySeconds: 30,
      SqsManagedSseEnabled: true,
      VisibilityTimeout: 180,
      RedrivePolicy: {
        deadLetterTargetArn: { 'Fn::GetAtt': [logicalId(stack, stack.revocation.deadLetterQueue), 'Arn'] },
        maxReceiveCount: 5,
      },
    });
    const dlq = resources[logicalId(stack, stack.revocation.deadLetterQueue)]!;
    expect(dlq.Properties).toMatchObject({ SqsManagedSseEnabled: true, MessageRetentionPeriod: 1_209_600 });
  });

  it('GIVEN the default stack THEN both queues refuse requests without TLS', () => {
    main.template.resourcePropertiesCountIs(
      'AWS::SQS::QueuePolicy',
      {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Effect: 'Deny',
              Action: 'sqs:*',
              Condition: { Bool: { 'aws:SecureTransport': 'false' } },
            }),
          ]),
        },
      },
      2,
    );
  });

  it('GIVEN the default stack THEN the revoker consumes the queue reporting partial batch failures', () => {
    const { stack, template } = main;
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [logicalId(stack, stack.revocation.queue), 'Arn'] },
      FunctionName: { Ref: logicalId(stack, stack.revocation.revoker) },
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      BatchSize: 10,
    });
  });

  it('GIVEN the default stack THEN the sweeper runs on a schedule of rate(1 minute)', () => {
    const { stack, template } = main;
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      State: 'ENABLED',
      Targets: [
        Match.objectLike({ Arn: { 'Fn::GetAtt': [logicalId(stack, stack.revocation.sweeper), 'Arn'] } }),
      ],
    });
  });

  it('GIVEN the default stack THEN both Lambdas run Node 24 on arm64 with the contract environment', () => {
    const { stack, resources } = main;
    const brokerGroup = logicalId(stack, stack.broker.securityGroups[0]!);
    for (const fn of [stack.revocation.revoker, stack.revocation.sweeper]) {
      const properties = resources[logicalId(stack, fn)]!.Properties!;
      expect(properties).toMatchObject({
        Runtime: 'nodejs24.x',
        Architectures: ['arm64'],
        Handler: 'index.handler',
        LoggingConfig: { LogGroup: { Ref: expect.stringMatching(/Logs/) } },
      });
      const variables = (properties.Environment as { Variables: Json }).Variables;
      expect(Object.keys(variables).sort()).toEqual([ENV.brokerSecurityGroupIds, ENV.grantsTable].sort());
      expect(variables[ENV.brokerSecurityGroupIds]).toEqual({ 'Fn::GetAtt': [brokerGroup, 'GroupId'] });
      expect(variables[ENV.grantsTable]).toEqual({ Ref: logicalId(stack, stack.grantStore.grants) });
    }
  });

  it('GIVEN the default stack THEN each Lambda asset is one bundled ES module exporting `handler`', async () => {
    // The handlers validate their environment at cold start (as Lambda would give it); no call is made.
    Object.assign(process.env, {
      AWS_REGION: 'eu-west-1',
      [ENV.grantsTable]: 'grants-table',
      [ENV.brokerSecurityGroupIds]: 'sg-0123456789abcdef0',
    });
    for (const fn of [main.stack.revocation.revoker, main.stack.revocation.sweeper]) {
      const asset = fn.node.findChild('Code') as Asset;
      const file = join(main.outdir, asset.assetPath, 'index.mjs');
      expect(existsSync(file)).toBe(true);
      const module = (await import(pathToFileURL(file).href)) as { handler?: unknown };
      expect(typeof module.handler).toBe('function');
    }
  });
});

describe('fleet', () => {
  it('GIVEN the default stack THEN an IoT thing type and thing group for the devices', () => {
    main.template.hasResourceProperties('AWS::IoT::ThingType', {
      ThingTypeName: 'Blackcloud-device',
      ThingTypeProperties: Match.objectLike({ SearchableAttributes: ['enabled'] }),
    });
    main.template.hasResourceProperties('AWS::IoT::ThingGroup', { ThingGroupName: 'Blackcloud-fleet' });
  });
});

describe('audit', () => {
  it('GIVEN the default stack THEN the audit log group keeps 365 days and survives the stack', () => {
    const { stack, resources } = main;
    const group = resources[logicalId(stack, stack.audit.logGroup)]!;
    expect(group.Properties!.RetentionInDays).toBe(365);
    expect(group.DeletionPolicy).toBe('Retain');
  });

  it("GIVEN the default stack THEN one metric filter per audit metric, on the receiver's JSON fields", () => {
    const filters = ofType(main.resources, 'AWS::Logs::MetricFilter').map(([, filter]) => [
      filter.FilterPattern,
      (filter.MetricTransformations as Json[])[0]!.MetricName,
    ]);
    expect(filters).toEqual(Object.values(AUDIT_METRICS).map((spec) => [spec.pattern, spec.metricName]));
    expect(filters).toContainEqual(['{ ($.type = "packet.rejected") && ($.reason = "replay") }', 'Replays']);
  });

  it('GIVEN the default stack THEN the alarms: replay spike, rule quota, revoke failures, receiver silent, Lambdas, DLQ, instances', () => {
    const alarms = ofType(main.resources, 'AWS::CloudWatch::Alarm').map(([, alarm]) => alarm);
    const byMetric = new Map(
      alarms.map((alarm) => [`${String(alarm.Namespace)}:${String(alarm.MetricName)}`, alarm]),
    );
    const namespace = 'Blackcloud/Blackcloud';
    expect(byMetric.get(`${namespace}:Replays`)).toMatchObject({
      Threshold: 10,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Period: 300,
    });
    expect(byMetric.get(`${namespace}:RuleQuotaExhausted`)).toMatchObject({ Threshold: 1 });
    expect(byMetric.get(`${namespace}:RevokeFailures`)).toMatchObject({ Threshold: 1 });
    expect(byMetric.get(`${namespace}:ReceiverHeartbeats`)).toMatchObject({
      ComparisonOperator: 'LessThanThreshold',
      TreatMissingData: 'breaching',
    });
    expect(
      alarms.filter((alarm) => alarm.Namespace === 'AWS/Lambda' && alarm.MetricName === 'Errors'),
    ).toHaveLength(2);
    expect(byMetric.get('AWS/SQS:ApproximateNumberOfMessagesVisible')).toMatchObject({
      Dimensions: [
        {
          Name: 'QueueName',
          Value: {
            'Fn::GetAtt': [logicalId(main.stack, main.stack.revocation.deadLetterQueue), 'QueueName'],
          },
        },
      ],
    });
    expect(alarms.filter((alarm) => alarm.MetricName === 'StatusCheckFailed')).toHaveLength(2);
    expect(alarms).toHaveLength(9);
    const topic = { Ref: logicalId(main.stack, main.stack.audit.alarmTopic) };
    for (const alarm of alarms) expect(alarm.AlarmActions).toEqual([topic]);
  });

  it('GIVEN the default stack THEN saved Logs Insights queries over the audit log group', () => {
    const queries = ofType(main.resources, 'AWS::Logs::QueryDefinition');
    expect(queries.map(([, query]) => query.Name)).toEqual(
      Object.keys(AUDIT_QUERIES).map((name) => `Blackcloud/${name}`),
    );
    for (const [, query] of queries) {
      expect(query.LogGroupNames).toEqual([{ Ref: logicalId(main.stack, main.stack.audit.logGroup) }]);
    }
  });

  it('GIVEN the default stack THEN a dashboard and an alarm topic that requires TLS', () => {
    main.template.hasResourceProperties('AWS::CloudWatch::Dashboard', {
      DashboardName: 'Blackcloud-blackcloud',
    });
    main.template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  });
});

describe('outputs and hygiene', () => {
  it('GIVEN the default stack THEN every output the CLI needs is there', () => {
    const outputs = main.template.toJSON().Outputs as Record<string, { Value: unknown }>;
    // Every output but the plain listener's, which exists only when the plain listener is on.
    expect(Object.keys(outputs).sort()).toEqual(
      Object.values(STACK_OUTPUTS)
        .filter((key) => key !== STACK_OUTPUTS.brokerPlainPort)
        .sort(),
    );
    expect(render(outputs.ReceiverAddress!.Value)).toBe(
      `{${logicalId(main.stack, main.stack.receiver.elasticIp)}.PublicIp}`,
    );
    expect(render(outputs.BrokerAddress!.Value)).toBe(
      `{${logicalId(main.stack, main.stack.broker.elasticIp)}.PublicIp}`,
    );
    expect(outputs.SpaPort!.Value).toBe('62201');
  });

  it('GIVEN the synthesized assembly THEN no private key material is in the template or its parameters', () => {
    const templateText = readFileSync(join(main.outdir, 'Blackcloud.template.json'), 'utf8');
    expect(templateText.length).toBeGreaterThan(10_000);
    expect(templateText).not.toMatch(/PRIVATE KEY/);
    expect(templateText).not.toMatch(/-----BEGIN [A-Z ]*KEY-----/);
    const parameters = Object.values(
      main.template.toJSON().Parameters as Record<string, { Default?: string }>,
    );
    for (const parameter of parameters) expect(String(parameter.Default ?? '')).not.toMatch(/KEY|BEGIN/);
  });

  it('GIVEN the default stack THEN synthesis needed no context lookup', () => {
    const manifest = JSON.parse(readFileSync(join(main.outdir, 'manifest.json'), 'utf8')) as {
      missing?: unknown[];
    };
    expect(manifest.missing ?? []).toEqual([]);
  });
});

describe('variant: three grant groups, narrowed knock sources, dual-stack', () => {
  let variant: Synthesized;
  beforeAll(() => {
    variant = synthesize({
      stackName: 'Edge',
      props: { grantSecurityGroupCount: 3, spaSourceCidrs: ['203.0.113.0/24'], spaPort: 4000, ipv6: true },
    });
  });
  afterAll(() => {
    rmSync(variant.outdir, { recursive: true, force: true });
  });

  it('WHEN synthesized THEN the broker carries three groups, none with template ingress but the controller rule', () => {
    const { stack, resources } = variant;
    const groups = stack.broker.securityGroups.map((group) => logicalId(stack, group));
    expect(groups).toHaveLength(3);
    const instance = resources[logicalId(stack, stack.broker.instance)]!;
    expect(instance.Properties!.SecurityGroupIds).toEqual(
      groups.map((id) => ({ 'Fn::GetAtt': [id, 'GroupId'] })),
    );
    for (const id of groups) expect(resources[id]!.Properties!.SecurityGroupIngress).toBeUndefined();
    expect(ofType(resources, 'AWS::EC2::SecurityGroupIngress')).toHaveLength(1);
  });

  it('WHEN synthesized THEN Authorize/Revoke are scoped to exactly those three ARNs, and the env lists them in order', () => {
    const { stack, resources } = variant;
    const groups = stack.broker.securityGroups.map((group) => logicalId(stack, group));
    const managing = statements(resources).filter(({ statement }) =>
      actionsOf(statement).includes('ec2:RevokeSecurityGroupIngress'),
    );
    expect(managing).toHaveLength(3);
    for (const { statement } of managing) {
      expect(resourcesOf(statement).sort()).toEqual(
        groups
          .map(
            (id) => `arn:{AWS::Partition}:ec2:{AWS::Region}:{AWS::AccountId}:security-group/{${id}.GroupId}`,
          )
          .sort(),
      );
    }
    const userData = render(resources[logicalId(stack, stack.receiver.instance)]!.Properties!.UserData);
    expect(userData).toContain(
      `BLACKCLOUD_BROKER_SECURITY_GROUP_IDS=${groups.map((id) => `{${id}.GroupId}`).join(',')}\n`,
    );
  });

  it('WHEN synthesized THEN the receiver admits UDP 4000 from the one CIDR only', () => {
    const { stack, resources } = variant;
    const group = resources[logicalId(stack, stack.receiver.securityGroup)]!;
    expect(group.Properties!.SecurityGroupIngress).toEqual([
      {
        IpProtocol: 'udp',
        FromPort: 4000,
        ToPort: 4000,
        CidrIp: '203.0.113.0/24',
        Description: 'SPA knocks from 203.0.113.0/24',
      },
    ]);
  });

  it('WHEN synthesized THEN the VPC is dual-stack: an IPv6 block, IPv6 addresses on launch, HTTPS egress over IPv6', () => {
    const { stack, resources, template } = variant;
    template.hasResourceProperties('AWS::EC2::VPCCidrBlock', { AmazonProvidedIpv6CidrBlock: true });
    for (const [, subnet] of ofType(resources, 'AWS::EC2::Subnet')) {
      expect(subnet.AssignIpv6AddressOnCreation).toBe(true);
      expect(subnet.MapPublicIpOnLaunch).toBe(true);
    }
    const egress = resources[logicalId(stack, stack.receiver.securityGroup)]!.Properties
      ?.SecurityGroupEgress as Json[];
    expect(egress).toContainEqual(
      expect.objectContaining({ CidrIpv6: '::/0', FromPort: 443, IpProtocol: 'tcp' }),
    );
  });
});

describe('variant: the plain listener on (plainListener: true)', () => {
  let plain: Synthesized;
  beforeAll(() => {
    plain = synthesize({ stackName: 'Plain', props: { plainListener: true } });
  });
  afterAll(() => {
    rmSync(plain.outdir, { recursive: true, force: true });
  });

  it('WHEN synthesized THEN Mosquitto gets a plain listener on 1883 besides the TLS one, checked by the same plugin', () => {
    const { stack, resources } = plain;
    const userData = render(resources[logicalId(stack, stack.broker.instance)]!.Properties!.UserData);
    const conf = userData.slice(userData.indexOf("<<'CONF'\n"), userData.indexOf('\nCONF\n'));
    expect(conf.match(/\nlistener [0-9]+/g)).toEqual(['\nlistener 8883', '\nlistener 1883']);
    // One plugin, global: the plain listener's logins are the dynamic-security plugin's; no anonymous access.
    expect(conf).toContain('\nallow_anonymous false\n');
    expect(conf).toContain('\nplugin /usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so\n');
    expect(conf).not.toContain('per_listener_settings');
    expect(stack.broker.plainPort).toBe(1883);
  });

  it('WHEN synthesized THEN the broker still has no ingress but the controller rule: only knocks open 1883', () => {
    const { stack, resources } = plain;
    for (const group of stack.broker.securityGroups) {
      expect(resources[logicalId(stack, group)]!.Properties!.SecurityGroupIngress).toBeUndefined();
    }
    const ingress = ofType(resources, 'AWS::EC2::SecurityGroupIngress').map(([, rule]) => rule);
    expect(ingress).toEqual([expect.objectContaining({ FromPort: 8883, ToPort: 8883 })]);
  });

  it('WHEN synthesized THEN the receiver learns the plain port, and the output names it', () => {
    const { stack, resources, template } = plain;
    const userData = render(resources[logicalId(stack, stack.receiver.instance)]!.Properties!.UserData);
    expect(userData).toContain(`\n${OPTIONAL_ENV.plainBrokerPort}=1883\n`);
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs[STACK_OUTPUTS.brokerPlainPort]!.Value).toBe('1883');
  });

  it('WHEN synthesized THEN every role has exactly the statements of the default stack (no new right)', () => {
    const shape = (synthesized: Synthesized) =>
      statements(synthesized.resources)
        .map(
          ({ statement }) => `${actionsOf(statement).sort().join(',')} -> ${resourcesOf(statement).length}`,
        )
        .sort();
    expect(shape(plain)).toEqual(shape(main));
  });
});
