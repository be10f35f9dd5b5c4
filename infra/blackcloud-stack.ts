/**
 * The black cloud on AWS (docs/deploy.md). This stack only composes and wires the units (infra/constructs/):
 * network, audit, grant store, fleet, broker, revocation, receiver; it validates its props once
 * (infra/config.ts), passes each unit what it needs, grants each principal exactly its rights through the
 * units' intent-named methods, and publishes the outputs the CLI reads (functions/core/stack-outputs.ts).
 * Environment-agnostic: no context lookups, AMIs resolved by CloudFormation from public SSM parameters.
 */
import { CfnOutput, Duration, Fn, Stack, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as logs from 'aws-cdk-lib/aws-logs';
import { EC2_UNIQUE_IMDSV2_LAUNCH_TEMPLATE_NAME } from 'aws-cdk-lib/cx-api';
import type { Construct } from 'constructs';
import { ENV, OPTIONAL_ENV } from '../functions/core/environment.ts';
import { STACK_OUTPUTS } from '../functions/core/stack-outputs.ts';
import { acknowledgeNagFindings } from './acknowledgements.ts';
import {
  type BlackcloudConfig,
  type BlackcloudProps,
  DEFAULT_RULES_PER_SECURITY_GROUP,
  resolveConfig,
} from './config.ts';
import { Audit } from './constructs/audit.ts';
import { Broker } from './constructs/broker.ts';
import { Fleet } from './constructs/fleet.ts';
import { GrantStore } from './constructs/grant-store.ts';
import { Network } from './constructs/network.ts';
import { Receiver } from './constructs/receiver.ts';
import { Revocation } from './constructs/revocation.ts';
import { CONTROLLER_SECRET_FILES, CONTROLLER_TLS_DIR } from './host/receiver-host.ts';

/** The stack name the CLI assumes when `--stack` is not given. */

export interface BlackcloudStackProps extends StackProps, BlackcloudProps {}

export class BlackcloudStack extends Stack {
  readonly config: BlackcloudConfig;
  readonly network: Network;
  readonly audit: Audit;
  readonly grantStore: GrantStore;
  readonly fleet: Fleet;
  readonly broker: Broker;
  readonly revocation: Revocation;
  readonly receiver: Receiver;

  constructor(scope: Construct, id: string, props: BlackcloudStackProps = {}) {
    super(scope, id, {
      description:
        'blackcloud: SPA-guarded MQTT broker (receiver, broker, grant store, revocation, fleet, audit)',
      ...props,
    });
    // Two instances require IMDSv2, each through a launch template: their names must differ (set before any child).
    this.node.setContext(EC2_UNIQUE_IMDSV2_LAUNCH_TEMPLATE_NAME, true);
    const config = resolveConfig(props, this.stackName);
    this.config = config;

    this.network = new Network(this, 'Network', { ipv6: config.ipv6 });
    const { vpc, instanceSubnets } = this.network;

    this.audit = new Audit(this, 'Audit', {
      retention: config.logRetentionDays as logs.RetentionDays,
      retain: config.retainData,
      replayAlarmThreshold: config.replayAlarmThreshold,
      ...(config.alarmEmail ? { alarmEmail: config.alarmEmail } : {}),
    });

    this.grantStore = new GrantStore(this, 'GrantStore', { retainDevices: config.retainData });

    this.fleet = new Fleet(this, 'Fleet', {
      thingGroupName: config.fleetThingGroupName,
      thingTypeName: config.deviceThingTypeName,
    });

    this.broker = new Broker(this, 'Broker', {
      vpc,
      vpcSubnets: instanceSubnets,
      instanceType: new ec2.InstanceType(config.brokerInstanceType),
      tlsPort: config.brokerPort,
      ...(config.plainBrokerPort === undefined ? {} : { plainPort: config.plainBrokerPort }),
      tlsSecretName: config.brokerTlsSecretName,
      controllerIdentity: config.controllerIdentity,
      grantSecurityGroupCount: config.grantSecurityGroupCount,
      ipv6: config.ipv6,
    });
    const brokerSecurityGroupIds = Fn.join(',', this.broker.securityGroupIds);

    this.revocation = new Revocation(this, 'Revocation', {
      grantWindow: Duration.seconds(config.grantSeconds),
      revokerEntry: config.code.revokerEntry,
      sweeperEntry: config.code.sweeperEntry,
      environment: {
        [ENV.brokerSecurityGroupIds]: brokerSecurityGroupIds,
        [ENV.grantsTable]: this.grantStore.grants.tableName,
      },
    });

    this.receiver = new Receiver(this, 'Receiver', {
      vpc,
      vpcSubnets: instanceSubnets,
      instanceType: new ec2.InstanceType(config.receiverInstanceType),
      spaPort: config.spaPort,
      entry: config.code.receiverEntry,
      logGroup: this.audit.logGroup,
      controllerTlsSecretName: config.controllerTlsSecretName,
      ipv6: config.ipv6,
      sessionManager: config.sessionManager,
      count: config.receivers,
      healthCheckPort: config.receiverHealthPort,
      notificationTopic: this.audit.alarmTopic,
      environment: {
        // Only when the quota was raised: the default stack's receiver configuration stays as it is.
        ...(config.rulesPerSecurityGroup === DEFAULT_RULES_PER_SECURITY_GROUP
          ? {}
          : { [OPTIONAL_ENV.rulesPerGroup]: String(config.rulesPerSecurityGroup) }),
        // Only with the plain listener: grants of plain devices may then open its port.
        ...(config.plainBrokerPort === undefined
          ? {}
          : { [OPTIONAL_ENV.plainBrokerPort]: String(config.plainBrokerPort) }),
        [ENV.spaPort]: String(config.spaPort),
        [ENV.brokerPort]: String(config.brokerPort),
        [ENV.nonceTable]: this.grantStore.nonces.tableName,
        [ENV.devicesTable]: this.grantStore.devices.tableName,
        [ENV.grantsTable]: this.grantStore.grants.tableName,
        [ENV.brokerSecurityGroupIds]: brokerSecurityGroupIds,
        [ENV.revokeQueueUrl]: this.revocation.queue.queueUrl,
        [ENV.fleetThingGroup]: config.fleetThingGroupName,
        [ENV.grantSeconds]: String(config.grantSeconds),
        [ENV.clockWindowSeconds]: String(config.clockWindowSeconds),
        [ENV.region]: this.region,
        [ENV.keyRotationSeconds]: String(config.keyRotationHours * 3600),
        [ENV.brokerHost]: this.broker.privateAddress,
        [ENV.brokerTlsServerName]: config.brokerTlsServerName,
        [ENV.controllerCaFile]: `${CONTROLLER_TLS_DIR}/${CONTROLLER_SECRET_FILES.caCertificate}`,
        [ENV.controllerCertFile]: `${CONTROLLER_TLS_DIR}/${CONTROLLER_SECRET_FILES.certificate}`,
        [ENV.controllerKeyFile]: `${CONTROLLER_TLS_DIR}/${CONTROLLER_SECRET_FILES.privateKey}`,
      },
    });

    // Network paths: knocks in from the configured sources; the controller session receiver -> broker.
    for (const cidr of config.spaSourceCidrs) {
      this.receiver.allowKnockFrom(cidr.includes(':') ? ec2.Peer.ipv6(cidr) : ec2.Peer.ipv4(cidr));
    }
    this.broker.allowControllerFrom(this.receiver);

    // Rights: each principal gets its own actions on its own resources.
    this.broker.grantRuleManagement(this.receiver);
    this.grantStore.grantNonceRecording(this.receiver);
    this.grantStore.grantDeviceLookup(this.receiver);
    this.grantStore.grantKeyRotation(this.receiver);
    this.grantStore.grantGrantBookkeeping(this.receiver);
    this.revocation.grantScheduling(this.receiver);
    this.fleet.grantRegistryRead(this.receiver);
    for (const fn of [this.revocation.revoker, this.revocation.sweeper]) {
      this.broker.grantRuleRevocation(fn);
      this.grantStore.grantGrantCleanup(fn);
    }

    // Watching.
    this.audit.alarmOnFunctionErrors('RevokerErrors', this.revocation.revoker, 'The revoker Lambda failed.');
    this.audit.alarmOnFunctionErrors('SweeperErrors', this.revocation.sweeper, 'The sweeper Lambda failed.');
    this.audit.alarmOnDeadLetters(
      'RevokeDeadLetters',
      this.revocation.deadLetterQueue,
      'Revoke messages failed every retry (the sweeper still closes expired rules; inspect the dead-letter queue).',
    );
    this.audit.alarmOnInstanceStatus(
      'BrokerStatus',
      this.broker.instance,
      'The broker instance fails its status checks.',
    );
    if (this.receiver.targetGroup !== undefined && this.receiver.loadBalancer !== undefined) {
      this.audit.alarmOnHealthyTargets(
        'ReceiverTargets',
        this.receiver.targetGroup,
        this.receiver.loadBalancer,
        config.receivers,
        `Fewer than ${config.receivers} receivers pass the load balancer's health check.`,
      );
    } else {
      this.audit.alarmOnInstanceStatus(
        'ReceiverStatus',
        this.receiver.instance,
        'The receiver instance fails its status checks.',
      );
    }
    this.audit.showAlarmStatus();

    this.addOutputs(config, brokerSecurityGroupIds);
    acknowledgeNagFindings(this);
  }

  private addOutputs(config: BlackcloudConfig, brokerSecurityGroupIds: string): void {
    const outputs: Record<string, { value: string; description: string }> = {
      [STACK_OUTPUTS.receiverAddress]: {
        value: this.receiver.publicAddress,
        description: 'Elastic IP of the receiver: devices knock here (UDP)',
      },
      [STACK_OUTPUTS.receiverAddresses]: {
        value: Fn.join(',', [...this.receiver.publicAddresses]),
        description:
          'Every address devices may knock on (comma-separated; one per load-balancer subnet when scaled)',
      },
      [STACK_OUTPUTS.spaPort]: { value: String(config.spaPort), description: 'UDP port of the SPA knocks' },
      [STACK_OUTPUTS.brokerAddress]: {
        value: this.broker.publicAddress,
        description: 'Elastic IP of the broker: devices connect here after a knock (MQTT over TLS)',
      },
      [STACK_OUTPUTS.brokerPort]: { value: String(config.brokerPort), description: 'MQTT over TLS port' },
      [STACK_OUTPUTS.brokerPrivateAddress]: {
        value: this.broker.privateAddress,
        description: 'Private address of the broker (the controller session)',
      },
      [STACK_OUTPUTS.brokerTlsServerName]: {
        value: config.brokerTlsServerName,
        description: 'DNS name in the broker certificate: the TLS server name clients verify',
      },
      [STACK_OUTPUTS.brokerTlsSecretName]: {
        value: config.brokerTlsSecretName,
        description: 'Secrets Manager secret the broker reads its TLS material from',
      },
      [STACK_OUTPUTS.controllerTlsSecretName]: {
        value: config.controllerTlsSecretName,
        description: "Secrets Manager secret the receiver reads the controller's client certificate from",
      },
      [STACK_OUTPUTS.brokerSecurityGroupIds]: {
        value: brokerSecurityGroupIds,
        description: 'Security groups (comma-separated) that carry the per-knock rules',
      },
      [STACK_OUTPUTS.receiverSecurityGroupId]: {
        value: this.receiver.securityGroup.securityGroupId,
        description: "The receiver's security group",
      },
      [STACK_OUTPUTS.nonceTable]: {
        value: this.grantStore.nonces.tableName,
        description: 'Nonce (replay) table',
      },
      [STACK_OUTPUTS.devicesTable]: {
        value: this.grantStore.devices.tableName,
        description: 'Devices/keys table',
      },
      [STACK_OUTPUTS.grantsTable]: {
        value: this.grantStore.grants.tableName,
        description: 'Active grants table',
      },
      [STACK_OUTPUTS.revokeQueueUrl]: {
        value: this.revocation.queue.queueUrl,
        description: 'Delay queue of grant expiries',
      },
      [STACK_OUTPUTS.revokeDeadLetterQueueUrl]: {
        value: this.revocation.deadLetterQueue.queueUrl,
        description: 'Dead-letter queue of failed revokes',
      },
      [STACK_OUTPUTS.fleetThingGroup]: {
        value: this.fleet.thingGroupName,
        description: 'IoT thing group of the fleet',
      },
      [STACK_OUTPUTS.deviceThingType]: {
        value: this.fleet.thingTypeName,
        description: 'IoT thing type of devices',
      },
      [STACK_OUTPUTS.auditLogGroup]: {
        value: this.audit.logGroup.logGroupName,
        description: "Audit log group (the receiver's JSON lines)",
      },
      [STACK_OUTPUTS.alarmTopicArn]: {
        value: this.audit.alarmTopic.topicArn,
        description: 'SNS topic of the alarms',
      },
      [STACK_OUTPUTS.dashboardName]: {
        value: this.audit.dashboard.dashboardName,
        description: 'CloudWatch dashboard',
      },
      [STACK_OUTPUTS.grantSeconds]: {
        value: String(config.grantSeconds),
        description: 'Grant window, seconds',
      },
      [STACK_OUTPUTS.clockWindowSeconds]: {
        value: String(config.clockWindowSeconds),
        description: 'Accepted clock difference, seconds',
      },
      [STACK_OUTPUTS.keyRotationHours]: {
        value: String(config.keyRotationHours),
        description: 'SPA key rotation period, hours',
      },
      [STACK_OUTPUTS.region]: { value: this.region, description: 'Region of the black cloud' },
      ...(config.plainBrokerPort === undefined
        ? {}
        : {
            [STACK_OUTPUTS.brokerPlainPort]: {
              value: String(config.plainBrokerPort),
              description: 'Plain MQTT port of the broker (devices without TLS; opened only by their knocks)',
            },
          }),
    };
    for (const [key, output] of Object.entries(outputs)) {
      new CfnOutput(this, key, { value: output.value, description: output.description });
    }
  }
}
