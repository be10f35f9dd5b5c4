/**
 * Network unit: a VPC with public subnets only and no NAT gateway (the two instances have Elastic IPs and talk to
 * AWS APIs over the internet gateway; a NAT gateway would cost more than the rest of the stack). Optional
 * dual-stack so devices can knock and connect over IPv6. Flow logs record rejected traffic for the audit.
 * Main child: the VPC ('Resource').
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface NetworkProps {
  /** Availability zones, one public subnet each (instances use the first). @default 2 */
  readonly maxAzs?: number;
  /** Dual-stack VPC (an Amazon-provided IPv6 /56, an IPv6 address for each instance). @default false */
  readonly ipv6?: boolean;
  /** Retention of the rejected-traffic flow log. @default logs.RetentionDays.ONE_MONTH */
  readonly flowLogRetention?: logs.RetentionDays;
}

export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  /** True when the VPC is dual-stack. */
  readonly ipv6: boolean;
  /** Where instances go: the public subnets. */
  readonly instanceSubnets: ec2.SubnetSelection = { subnetType: ec2.SubnetType.PUBLIC };
  /** Flow log of rejected packets (what the closed broker and receiver turned away). */
  readonly flowLogGroup: logs.LogGroup;

  constructor(scope: Construct, id: string, props: NetworkProps = {}) {
    super(scope, id);
    this.ipv6 = props.ipv6 ?? false;
    this.vpc = new ec2.Vpc(this, 'Resource', {
      maxAzs: props.maxAzs ?? 2,
      natGateways: 0,
      ipProtocol: this.ipv6 ? ec2.IpProtocol.DUAL_STACK : ec2.IpProtocol.IPV4_ONLY,
      restrictDefaultSecurityGroup: false,
      subnetConfiguration: [
        {
          name: 'Public',
          subnetType: ec2.SubnetType.PUBLIC,
          cidrMask: 24,
          // Instances need a public IPv4 address while they boot, before their Elastic IP is attached.
          mapPublicIpOnLaunch: true,
          ...(this.ipv6 ? { ipv6AssignAddressOnCreation: true } : {}),
        },
      ],
    });
    this.flowLogGroup = new logs.LogGroup(this, 'FlowLogs', {
      retention: props.flowLogRetention ?? logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.vpc.addFlowLog('RejectedTraffic', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(this.flowLogGroup),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });
  }
}
