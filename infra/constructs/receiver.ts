/**
 * Receiver unit: one small Graviton instance (Amazon Linux 2023 arm64, Node 22) running the bundled receiver
 * (functions/receiver/aws-main.ts, one ES module file shipped as a CDK asset) under a hardened systemd unit as an
 * unprivileged user, with the CloudWatch agent shipping its JSON lines to the audit log group, and an Elastic IP.
 * The AMI comes from Amazon's public SSM parameter, resolved at deploy time (no synth lookup).
 *
 * Security group: no ingress except UDP on the SPA port from the CIDRs given to `allowKnockFrom`; egress HTTPS
 * (AWS APIs, packages) and, once wired, the broker's TLS port (controller session). Its role gets only what the
 * stack grants it, plus: read its own code object, ship to its own log group, read the controller secret.
 * Main child: the instance ('Resource').
 */
import { ArnFormat, Aws, Stack } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as logs from 'aws-cdk-lib/aws-logs';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import { Construct } from 'constructs';
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
  /** Receiver entrypoint to bundle, relative to the repository root. @default 'functions/receiver/aws-main.ts' */
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
}

export class Receiver extends Construct implements ec2.IConnectable, iam.IGrantable {
  readonly instance: ec2.Instance;
  readonly securityGroup: ec2.SecurityGroup;
  readonly connections: ec2.Connections;
  readonly grantPrincipal: iam.IPrincipal;
  readonly role: iam.IRole;
  readonly spaPort: number;
  /** The Elastic IP devices knock on. */
  readonly publicAddress: string;
  readonly elasticIp: ec2.CfnEIP;
  /** The bundled receiver, as uploaded. */
  readonly code: s3assets.Asset;

  constructor(scope: Construct, id: string, props: ReceiverProps) {
    super(scope, id);
    const stack = Stack.of(this);
    this.spaPort = props.spaPort ?? 62_201;

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
      entry: props.entry ?? 'functions/receiver/aws-main.ts',
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
        environment: props.environment,
        controllerTlsSecretName: props.controllerTlsSecretName,
        logGroupName: props.logGroup.logGroupName,
        region: Aws.REGION,
      }),
    );

    this.instance = new ec2.Instance(this, 'Resource', {
      vpc: props.vpc,
      vpcSubnets: props.vpcSubnets ?? { subnetType: ec2.SubnetType.PUBLIC },
      instanceType: props.instanceType ?? new ec2.InstanceType('t4g.nano'),
      machineImage: ec2.MachineImage.latestAmazonLinux2023({ cpuType: ec2.AmazonLinuxCpuType.ARM_64 }),
      securityGroup: this.securityGroup,
      userData,
      userDataCausesReplacement: true,
      requireImdsv2: true,
      ssmSessionPermissions: props.sessionManager ?? false,
      blockDevices: [
        {
          deviceName: '/dev/xvda',
          volume: ec2.BlockDeviceVolume.ebs(8, { encrypted: true, volumeType: ec2.EbsDeviceVolumeType.GP3 }),
        },
      ],
    });
    this.role = this.instance.role;
    this.grantPrincipal = this.instance.grantPrincipal;

    // Its own code object, exactly (not the whole asset bucket).
    this.instance.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'ReadReceiverCode',
        actions: ['s3:GetObject'],
        resources: [this.code.bucket.arnForObjects(this.code.s3ObjectKey)],
      }),
    );
    // The CloudWatch agent ships the JSON lines to the audit log group (which exists: no CreateLogGroup).
    this.instance.addToRolePolicy(
      new iam.PolicyStatement({
        sid: 'ShipAuditLines',
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents', 'logs:DescribeLogStreams'],
        resources: [props.logGroup.logGroupArn],
      }),
    );
    this.instance.addToRolePolicy(
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

    this.elasticIp = new ec2.CfnEIP(this, 'ElasticIp', {
      domain: 'vpc',
      instanceId: this.instance.instanceId,
      tags: [{ key: 'Name', value: `${stack.stackName}-receiver` }],
    });
    this.publicAddress = this.elasticIp.attrPublicIp;
  }

  /** Admits SPA knocks (UDP on the SPA port) from `peer`. The only ingress the receiver ever has. */
  allowKnockFrom(peer: ec2.IPeer): void {
    this.securityGroup.addIngressRule(peer, ec2.Port.udp(this.spaPort), `SPA knocks from ${peer.uniqueId}`);
  }
}
