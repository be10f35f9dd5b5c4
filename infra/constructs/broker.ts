/**
 * Broker unit: one Debian 12 arm64 instance running Mosquitto 2 with TLS, client certificates and per-device
 * roles of the dynamic-security plugin (infra/host/broker-host.ts), with an Elastic IP. The image comes from
 * Debian's public SSM parameter, resolved by CloudFormation at deploy time (a stack parameter of type
 * AWS::SSM::Parameter::Value; no lookup at synth). The TLS material is read at boot from a Secrets Manager secret created by the operator; the instance
 * role may read only that secret.
 *
 * Security groups: the broker's interface carries `grantSecurityGroupCount` groups. None has an ingress rule
 * from the template except the first, which admits the receiver's group on the TLS port (the controller session,
 * via `allowControllerFrom`). The plain listener (`plainPort`, off by default) gets no template rule at all. Every other inbound rule is a knock grant added and removed at run time by the
 * receiver, the revoker and the sweeper, which may touch only these groups (`grantRuleManagement`,
 * `grantRuleRevocation`). Egress: HTTPS and HTTP for packages and Secrets Manager only.
 * Main child: the instance ('Resource').
 */

import { ArnFormat, Aws, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import { Construct } from 'constructs';
import { DEFAULT_BROKER_PORT } from '../../functions/core/deployment.ts';
import { brokerBootCommands } from '../host/broker-host.ts';

/** Debian's public SSM parameter for the latest Debian 12 (bookworm) arm64 AMI. */
export const DEBIAN_12_ARM64_PARAMETER = '/aws/service/debian/release/12/latest/arm64';

/** Actions the receiver needs on the broker's groups. Authorize/Revoke are scoped to the groups' ARNs. */
export const RULE_MANAGEMENT_ACTIONS = Object.freeze([
  'ec2:AuthorizeSecurityGroupIngress',
  'ec2:RevokeSecurityGroupIngress',
  'ec2:UpdateSecurityGroupRuleDescriptionsIngress',
]);
/** Actions the revoker and the sweeper need: revoke only. */
export const RULE_REVOCATION_ACTIONS = Object.freeze(['ec2:RevokeSecurityGroupIngress']);
/**
 * Listing the groups' rules (rule ids, expiries in descriptions): functions/aws/sg-api.ts reads them with
 * DescribeSecurityGroups (before every Authorize, in every revoke and sweep). Describe calls cannot be scoped to a
 * resource (IAM has no resource type for them), the documented exception. Proven by enforcement:
 * test/functions/aws/iam-enforced.test.ts runs each runtime under exactly these policies (moto with IAM enforced).
 */
export const RULE_DESCRIBE_ACTIONS = Object.freeze(['ec2:DescribeSecurityGroups']);

export interface BrokerProps {
  readonly vpc: ec2.IVpc;
  /** Subnets for the instance (it takes the first). @default the public subnets */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** Graviton instance type. @default t4g.micro */
  readonly instanceType?: ec2.InstanceType;
  /** MQTT over TLS port. @default 8883 */
  readonly tlsPort?: number;
  /**
   * The plain profile's listener port (no TLS; each plain device logs in with its knock's one-time credential).
   * Like the TLS port it has no ingress rule from the template: only knock grants open it. @default none
   */
  readonly plainPort?: number;
  /** Name of the Secrets Manager secret with the broker's TLS material (docs/deploy.md). */
  readonly tlsSecretName: string;
  /** Common name of the controller's certificate, the dynamic-security admin, granted every device tree. @default 'blackcloud-controller' */
  readonly controllerIdentity?: string;
  /** Security groups that carry knock rules (1..5). @default 1 */
  readonly grantSecurityGroupCount?: number;
  /** Allow egress over IPv6 too (dual-stack VPC). @default false */
  readonly ipv6?: boolean;
  /** SSM parameter naming the AMI. @default DEBIAN_12_ARM64_PARAMETER */
  readonly imageParameterName?: string;
}

export class Broker extends Construct {
  readonly instance: ec2.Instance;
  /** The groups on the broker's interface; knock rules go into these. The first also admits the controller. */
  readonly securityGroups: readonly ec2.SecurityGroup[];
  readonly tlsPort: number;
  /** The plain listener's port; undefined when there is none. */
  readonly plainPort: number | undefined;
  /** The Elastic IP devices connect to. */
  readonly publicAddress: string;
  /** The private address the receiver's controller connects to. */
  readonly privateAddress: string;
  readonly elasticIp: ec2.CfnEIP;
  /** ARN of the TLS secret (with the wildcard suffix Secrets Manager appends to names). */
  readonly tlsSecretArn: string;

  constructor(scope: Construct, id: string, props: BrokerProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.tlsPort = props.tlsPort ?? DEFAULT_BROKER_PORT;
    this.plainPort = props.plainPort;
    const count = props.grantSecurityGroupCount ?? 1;

    const groups: ec2.SecurityGroup[] = [];
    for (let index = 0; index < count; index++) {
      const group = new ec2.SecurityGroup(this, index === 0 ? 'SecurityGroup' : `GrantGroup${index + 1}`, {
        vpc: props.vpc,
        description:
          index === 0
            ? 'blackcloud broker: no ingress but the controller and per-knock grants'
            : `blackcloud broker: per-knock grants (group ${index + 1})`,
        allowAllOutbound: false,
        allowAllIpv6Outbound: false,
      });
      groups.push(group);
    }
    this.securityGroups = groups;
    const primary = groups[0]!;
    for (const port of [443, 80]) {
      primary.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(port), `packages and AWS APIs (tcp/${port})`);
      if (props.ipv6) {
        primary.addEgressRule(ec2.Peer.anyIpv6(), ec2.Port.tcp(port), `packages and AWS APIs (tcp/${port})`);
      }
    }

    this.tlsSecretArn = stack.formatArn({
      service: 'secretsmanager',
      resource: 'secret',
      resourceName: `${props.tlsSecretName}-??????`,
      arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });

    const userData = ec2.UserData.forLinux();
    userData.addCommands(
      ...brokerBootCommands({
        port: this.tlsPort,
        ...(this.plainPort === undefined ? {} : { plainPort: this.plainPort }),
        controllerIdentity: props.controllerIdentity ?? 'blackcloud-controller',
        tlsSecretName: props.tlsSecretName,
        region: Aws.REGION,
      }),
    );

    this.instance = new ec2.Instance(this, 'Resource', {
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PUBLIC },
      instanceType: props.instanceType ?? new ec2.InstanceType('t4g.micro'),
      machineImage: ec2.MachineImage.fromSsmParameter(props.imageParameterName ?? DEBIAN_12_ARM64_PARAMETER, {
        os: ec2.OperatingSystemType.LINUX,
      }),
      securityGroup: primary,
      userData,
      userDataCausesReplacement: true,
      requireImdsv2: true,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(8, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
        },
      ],
    });
    for (const group of groups.slice(1)) this.instance.addSecurityGroup(group);

    this.instance.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'ReadBrokerTlsSecret',
        actions: ['secretsmanager:GetSecretValue'],
        resources: [this.tlsSecretArn],
      }),
    );

    this.elasticIp = new ec2.CfnEIP(this, 'ElasticIp', {
      domain: 'vpc',
      instanceId: this.instance.instanceId,
      tags: [{ key: 'Name', value: `${stack.stackName}-broker` }],
    });
    this.publicAddress = this.elasticIp.attrPublicIp;
    this.privateAddress = this.instance.instancePrivateIp;
  }

  /** IDs of the groups knock rules go into, in order. */
  get securityGroupIds(): string[] {
    return this.securityGroups.map((group) => group.securityGroupId);
  }

  /** ARNs of those groups: the only resources Authorize/Revoke may touch. */
  get securityGroupArns(): string[] {
    const stack = Stack.of(this);
    return this.securityGroups.map((group) =>
      stack.formatArn({ service: 'ec2', resource: 'security-group', resourceName: group.securityGroupId }),
    );
  }

  /**
   * Admits `peer` (the receiver) on the TLS port through the first group: the controller session for key
   * rotation. This is the only ingress rule the template ever creates on the broker.
   */
  allowControllerFrom(peer: ec2.IConnectable): void {
    this.securityGroups[0]!.connections.allowFrom(
      peer,
      ec2.Port.tcp(this.tlsPort),
      'controller session (key rotation) from the receiver',
    );
  }

  /** The receiver opens, extends and closes knock rules: Authorize/Revoke/UpdateDescriptions on these groups. */
  grantRuleManagement(grantee: iam.IGrantable): iam.Grant {
    return this.grantOnGroups(grantee, RULE_MANAGEMENT_ACTIONS);
  }

  /** The revoker and the sweeper close knock rules: Revoke on these groups. */
  grantRuleRevocation(grantee: iam.IGrantable): iam.Grant {
    return this.grantOnGroups(grantee, RULE_REVOCATION_ACTIONS);
  }

  private grantOnGroups(grantee: iam.IGrantable, actions: readonly string[]): iam.Grant {
    const scoped = iam.Grant.addToPrincipal({
      grantee,
      actions: [...actions],
      resourceArns: this.securityGroupArns,
    });
    // IAM has no resource type for the Describe calls: '*' is the documented exception (docs/operations-aws.md).
    const describe = iam.Grant.addToPrincipal({
      grantee,
      actions: [...RULE_DESCRIBE_ACTIONS],
      resourceArns: ['*'],
    });
    return scoped.combine(describe);
  }
}
