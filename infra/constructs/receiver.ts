/**
 * Receiver unit: small Graviton instances (Amazon Linux 2023 arm64, Node 24) running the bundled receiver
 * (functions/aws/receiver-main.ts, one ES module file shipped as a CDK asset) under a hardened systemd unit as an
 * unprivileged user, with the CloudWatch agent shipping its JSON lines to the audit log group.
 * The AMI comes from Amazon's public SSM parameter, resolved at deploy time (no synth lookup).
 *
 * `count` 1 (the default): one instance with its own Elastic IP. Main child: the instance ('Resource').
 * `count` > 1: an Auto Scaling group of `count` receivers ('Resource') from a launch template, behind an
 * internet-facing UDP Network Load Balancer: one listener on the SPA port, cross-zone, instance targets with the
 * client's source address preserved (grants are for the device's address, never the balancer's), one Elastic IP
 * per subnet mapping (the SPA addresses devices knock on). Health: TCP on `healthCheckPort`, which the security
 * group admits from the VPC's own range only, so nothing on the internet ever gets an answer; the balancer has no
 * TCP listener. Replacement without a window where knocks are lost: a rolling update one instance at a time with
 * all `count` in service (the group may grow to count + 1), each new instance signalling CloudFormation only once
 * its health port answers; a leaving instance is drained for `deregistrationDelay` while it still processes the
 * knocks already routed to it, and hands its open grants to the durable backstops (revoke queue, sweeper)
 * instead of revoking them (BLACKCLOUD_SHUTDOWN=handover).
 *
 * Security group: no ingress except UDP on the SPA port from the CIDRs given to `allowKnockFrom` (and, scaled,
 * the health port from the VPC); egress HTTPS (AWS APIs, packages) and, once wired, the broker's TLS port
 * (controller session). Its role gets only what the stack grants it, plus: read its own code object, ship to its
 * own log group, read the controller secret.
 */

import { ArnFormat, Aws, Duration, Stack } from 'aws-cdk-lib';
import * as autoscaling from 'aws-cdk-lib/aws-autoscaling';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import type * as sns from 'aws-cdk-lib/aws-sns';
import { Construct } from 'constructs';
import { DEFAULT_SPA_PORT } from '../../functions/core/deployment.ts';
import { ENV, SCALED_RECEIVER_ENV } from '../../functions/core/environment.ts';
import { bundleEntry } from '../bundle.ts';
import { receiverBootCommands, receiverPackageCommands } from '../host/receiver-host.ts';

export interface ReceiverProps {
  readonly vpc: ec2.IVpc;
  /** Subnets for the instance (it takes the first). @default the public subnets */
  readonly vpcSubnets?: ec2.SubnetSelection;
  /** Graviton instance type. @default t4g.nano */
  readonly instanceType?: ec2.InstanceType;
  /** UDP port of the SPA knocks. @default 62201 */
  readonly spaPort?: number;
  /** Receiver entrypoint to bundle, relative to the repository root. @default 'functions/aws/receiver-main.ts' */
  readonly entry?: string;
  /** The receiver's configuration (environment variables: names, ports, table names, URLs; never secrets). */
  readonly environment: Readonly<Record<string, string>>;
  /** Log group its JSON lines are shipped to. */
  readonly logGroup: logs.ILogGroup;
  /** Name of the Secrets Manager secret with the controller's client certificate and key. */
  readonly controllerTlsSecretName: string;
  /** Allow HTTPS egress over IPv6 too (dual-stack VPC). @default false */
  readonly ipv6?: boolean;
  /** Attach the SSM Session Manager permissions (shell access without any inbound port). @default false */
  readonly sessionManager?: boolean;
  /** Receivers: 1 = one instance with an Elastic IP; more = an Auto Scaling group behind a UDP NLB. @default 1 */
  readonly count?: number;
  /** TCP health-check port of the scaled receivers, answered to the VPC range only. @default 62202 */
  readonly healthCheckPort?: number;
  /** How long a leaving receiver still gets the knocks already routed to it. @default 30 seconds */
  readonly deregistrationDelay?: Duration;
  /** Scaled only: where the Auto Scaling group reports launches, terminations and their failures. @default none */
  readonly notificationTopic?: sns.ITopic;
}

/**
 * The variable whose presence turns the receiver's key-rotation controller on (functions/aws/aws-controller.ts).
 * Scaled receivers get it too: they elect one controller among themselves with a lease in the devices table
 * (functions/aws/controller-lease.ts; docs/scaling.md, docs/key-lifecycle.md), written with the devices-table
 * rights key rotation already grants (PutItem, DeleteItem).
 */
export const KEY_ROTATION_SWITCH_ENV = ENV.brokerHost;

/**
 * Several receivers share the account's EC2 API budget (5 Authorize and 5 Revoke calls per second): each gathers
 * rule changes for a second and retries throttled calls patiently (bench/fleet-sim.ts, docs/scaling.md).
 */
export const SCALED_COALESCE_MS = 1000;
/**
 * Their revokes are gathered for 2 s: with each receiver in its own share of the slots, the Revoke budget is what
 * four receivers contend for, and fewer, fuller Revoke calls let the slots turn over sooner under a storm
 * (docs/scaling.md "Each receiver its share of the slots": 1 s and 1.5 s measured too, 1.5 s and 2 s on three seeds).
 */
export const SCALED_CLOSE_WINDOW_MS = 2000;
export const SCALED_EC2_ATTEMPTS = 20;

/** Waits (at most 3 minutes) until the receiver's health port answers locally; fails the boot otherwise. */
export function waitForHealthCommands(port: number): string[] {
  return [
    'healthy=0',
    'for attempt in $(seq 1 90); do',
    `  if (exec 3<>/dev/tcp/127.0.0.1/${port}) 2>/dev/null; then healthy=1; break; fi`,
    '  sleep 2',
    'done',
    `[ "$healthy" = 1 ] || { echo "blackcloud: receiver health port ${port} never answered" >&2; exit 1; }`,
  ];
}

export class Receiver extends Construct implements ec2.IConnectable, iam.IGrantable {
  readonly securityGroup: ec2.SecurityGroup;
  readonly connections: ec2.Connections;
  readonly grantPrincipal: iam.IPrincipal;
  readonly role: iam.IRole;
  readonly spaPort: number;
  /** Number of receivers. */
  readonly count: number;
  /** The (first) Elastic IP devices knock on. */
  readonly publicAddress: string;
  /** Every Elastic IP devices may knock on (one; or one per load-balancer subnet). */
  readonly publicAddresses: readonly string[];
  readonly elasticIps: readonly ec2.CfnEIP[];
  /** The bundled receiver, as uploaded. */
  readonly code: s3assets.Asset;
  /** Scaled only: the receivers' group, the balancer and its target group. */
  readonly autoScalingGroup: autoscaling.AutoScalingGroup | undefined;
  readonly loadBalancer: elbv2.NetworkLoadBalancer | undefined;
  readonly targetGroup: elbv2.NetworkTargetGroup | undefined;
  readonly #instance: ec2.Instance | undefined;

  constructor(scope: Construct, id: string, props: ReceiverProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.spaPort = props.spaPort ?? DEFAULT_SPA_PORT;
    this.count = props.count ?? 1;
    const scaled = this.count > 1;
    const healthCheckPort = props.healthCheckPort ?? 62_202;

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: 'blackcloud receiver: UDP SPA knocks in, nothing answered',
      allowAllOutbound: false,
      allowAllIpv6Outbound: false,
    });
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'AWS APIs and packages (HTTPS)');
    if (props.ipv6) {
      this.securityGroup.addEgressRule(
        ec2.Peer.anyIpv6(),
        ec2.Port.tcp(443),
        'AWS APIs and packages (HTTPS)',
      );
    }
    this.connections = this.securityGroup.connections;

    const bundle = bundleEntry({
      entry: props.entry ?? 'functions/aws/receiver-main.ts',
      outFileName: 'receiver.mjs',
    });
    try {
      this.code = new s3assets.Asset(this, 'Code', { path: bundle.file });
    } finally {
      bundle.dispose();
    }

    const userData = ec2.UserData.forLinux();
    userData.addCommands(...receiverPackageCommands());
    const downloaded = userData.addS3DownloadCommand({
      bucket: this.code.bucket,
      bucketKey: this.code.s3ObjectKey,
      localFile: '/var/tmp/blackcloud/receiver.mjs',
    });
    userData.addCommands(
      ...receiverBootCommands({
        spaPort: this.spaPort,
        downloadedBundle: downloaded,
        environment: scaled
          ? {
              ...props.environment,
              [SCALED_RECEIVER_ENV.healthPort]: String(healthCheckPort),
              [SCALED_RECEIVER_ENV.shutdown]: 'handover',
              [SCALED_RECEIVER_ENV.coalesceMs]: String(SCALED_COALESCE_MS),
              [SCALED_RECEIVER_ENV.closeWindowMs]: String(SCALED_CLOSE_WINDOW_MS),
              [SCALED_RECEIVER_ENV.ec2Attempts]: String(SCALED_EC2_ATTEMPTS),
              [SCALED_RECEIVER_ENV.receivers]: String(this.count),
            }
          : props.environment,
        controllerTlsSecretName: props.controllerTlsSecretName,
        logGroupName: props.logGroup.logGroupName,
        region: Aws.REGION,
      }),
    );

    if (scaled) {
      const tier = this.#scaledTier(props, userData, healthCheckPort);
      this.#instance = undefined;
      this.autoScalingGroup = tier.group;
      this.loadBalancer = tier.loadBalancer;
      this.targetGroup = tier.targetGroup;
      this.elasticIps = tier.elasticIps;
      this.role = tier.role;
      this.grantPrincipal = tier.role;
    } else {
      const instance = this.#singleInstance(props, userData);
      this.#instance = instance;
      this.autoScalingGroup = undefined;
      this.loadBalancer = undefined;
      this.targetGroup = undefined;
      this.role = instance.role;
      this.grantPrincipal = instance.grantPrincipal;
      this.elasticIps = [
        new ec2.CfnEIP(this, 'ElasticIp', {
          domain: 'vpc',
          instanceId: instance.instanceId,
          tags: [{ key: 'Name', value: `${stack.stackName}-receiver` }],
        }),
      ];
    }
    this.publicAddresses = this.elasticIps.map((eip) => eip.attrPublicIp);
    this.publicAddress = this.publicAddresses[0]!;

    // Its own code object, exactly (not the whole asset bucket).
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadReceiverCode',
        actions: ['s3:GetObject'],
        resources: [this.code.bucket.arnForObjects(this.code.s3ObjectKey)],
      }),
    );
    // The CloudWatch agent ships the JSON lines to the audit log group (which exists: no CreateLogGroup).
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ShipAuditLines',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
        resources: [props.logGroup.logGroupArn],
      }),
    );
    this.role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ReadControllerTlsSecret',
        actions: ['secretsmanager:GetSecretValue'],
        resources: [
          stack.formatArn({
            service: 'secretsmanager',
            resource: 'secret',
            resourceName: `${props.controllerTlsSecretName}-??????`,
            arnFormat: ArnFormat.COLON_RESOURCE_NAME,
          }),
        ],
      }),
    );
  }

  /** True when the receivers are an Auto Scaling group behind a load balancer. */
  get scaled(): boolean {
    return this.autoScalingGroup !== undefined;
  }

  /** The single receiver instance. Throws when the receivers are scaled (use `autoScalingGroup`). */
  get instance(): ec2.Instance {
    if (this.#instance === undefined) {
      throw new Error(
        `blackcloud: the receivers are an Auto Scaling group (receivers = ${this.count}), not one instance: ` +
          'use receiver.autoScalingGroup',
      );
    }
    return this.#instance;
  }

  /** The single receiver's Elastic IP. Throws when scaled (use `elasticIps`). */
  get elasticIp(): ec2.CfnEIP {
    if (this.scaled) {
      throw new Error(
        'blackcloud: the scaled receivers have one Elastic IP per subnet: use receiver.elasticIps',
      );
    }
    return this.elasticIps[0]!;
  }

  /** Admits SPA knocks (UDP on the SPA port) from `peer`. The only internet ingress the receiver ever has. */
  allowKnockFrom(peer: ec2.IPeer): void {
    this.securityGroup.addIngressRule(peer, ec2.Port.udp(this.spaPort), `SPA knocks from ${peer.uniqueId}`);
  }

  #blockDevices(): ec2.BlockDevice[] {
    return [
      {
        deviceName: '/dev/xvda',
        volume: ec2.BlockDeviceVolume.ebs(8, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
      },
    ];
  }

  #singleInstance(props: ReceiverProps, userData: ec2.UserData): ec2.Instance {
    return new ec2.Instance(this, 'Resource', {
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PUBLIC },
      instanceType: props.instanceType ?? new ec2.InstanceType('t4g.nano'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023({ cpuType: ec2.AmazonLinuxCpuType.ARM_64 }),
      securityGroup: this.securityGroup,
      userData,
      userDataCausesReplacement: true,
      requireImdsv2: true,
      ssmSessionPermissions: props.sessionManager ?? false,
      blockDevices: this.#blockDevices(),
    });
  }

  #scaledTier(
    props: ReceiverProps,
    userData: ec2.UserData,
    healthCheckPort: number,
  ): {
    group: autoscaling.AutoScalingGroup;
    loadBalancer: elbv2.NetworkLoadBalancer;
    targetGroup: elbv2.NetworkTargetGroup;
    elasticIps: ec2.CfnEIP[];
    role: iam.Role;
  } {
    const stack = Stack.of(this);
    const count = this.count;
    // Health checks come from the balancer's nodes, inside the VPC: only the VPC's range gets an answer.
    this.securityGroup.addIngressRule(
      ec2.Peer.ipv4(props.vpc.vpcCidrBlock),
      ec2.Port.tcp(healthCheckPort),
      'load balancer health checks, from inside the VPC only',
    );
    const role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('ec2.amazonaws.com'),
      description: 'blackcloud receivers (Auto Scaling group)',
    });
    if (props.sessionManager === true) {
      role.addManagedPolicy(iam.ManagedPolicy.fromAwsManagedPolicyName('AmazonSSMManagedInstanceCore'));
    }
    // cfn-signal (aws-cfn-bootstrap) tells CloudFormation the new receiver answers its health port.
    userData.addCommands('dnf install -y aws-cfn-bootstrap', ...waitForHealthCommands(healthCheckPort));
    const launchTemplate = new ec2.LaunchTemplate(this, 'LaunchTemplate', {
      instanceType: props.instanceType ?? new ec2.InstanceType('t4g.nano'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023({ cpuType: ec2.AmazonLinuxCpuType.ARM_64 }),
      securityGroup: this.securityGroup,
      userData,
      role,
      requireImdsv2: true,
      blockDevices: this.#blockDevices(),
    });
    const group = new autoscaling.AutoScalingGroup(this, 'Resource', {
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PUBLIC },
      launchTemplate,
      minCapacity: count,
      desiredCapacity: count,
      // Room for one replacement while all `count` stay in service.
      maxCapacity: count + 1,
      healthChecks: autoscaling.HealthChecks.withAdditionalChecks({
        additionalTypes: [autoscaling.AdditionalHealthCheckType.ELB],
        gracePeriod: Duration.minutes(5),
      }),
      signals: autoscaling.Signals.waitForMinCapacity({ timeout: Duration.minutes(10) }),
      ...(props.notificationTopic === undefined
        ? {}
        : { notifications: [{ topic: props.notificationTopic }] }),
      updatePolicy: autoscaling.UpdatePolicy.rollingUpdate({
        maxBatchSize: 1,
        minInstancesInService: count,
        waitOnResourceSignals: true,
        pauseTime: Duration.minutes(10),
      }),
    });
    userData.addSignalOnExitCommand(group);

    const subnets = props.vpc.selectSubnets(
      props.vpcSubnets ?? { subnetType: ec2.SubnetType.PUBLIC },
    ).subnets;
    const elasticIps = subnets.map(
      (_subnet, index) =>
        new ec2.CfnEIP(this, `ElasticIp${index + 1}`, {
          domain: 'vpc',
          tags: [{ key: 'Name', value: `${stack.stackName}-receiver-${index + 1}` }],
        }),
    );
    const loadBalancer = new elbv2.NetworkLoadBalancer(this, 'LoadBalancer', {
      vpc: props.vpc,
      internetFacing: true,
      crossZoneEnabled: true,
      subnetMappings: subnets.map((subnet, index) => ({
        subnet,
        allocationId: elasticIps[index]!.attrAllocationId,
      })),
    });
    const targetGroup = new elbv2.NetworkTargetGroup(this, 'Targets', {
      vpc: props.vpc,
      port: this.spaPort,
      protocol: elbv2.Protocol.UDP,
      targetType: elbv2.TargetType.INSTANCE,
      preserveClientIp: true,
      deregistrationDelay: props.deregistrationDelay ?? Duration.seconds(30),
      healthCheck: {
        enabled: true,
        protocol: elbv2.Protocol.TCP,
        port: String(healthCheckPort),
        interval: Duration.seconds(10),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 2,
      },
      targets: [group],
    });
    loadBalancer.addListener('Knocks', {
      port: this.spaPort,
      protocol: elbv2.Protocol.UDP,
      defaultTargetGroups: [targetGroup],
    });
    return { group, loadBalancer, targetGroup, elasticIps, role };
  }
}
