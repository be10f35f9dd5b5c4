/**
 * Audit unit: where the receiver's JSON lines land and how operators watch them (docs/deploy.md).
 * - The audit log group (retention as configured), fed by the receiver's CloudWatch agent.
 * - Metric filters on the receiver's JSON lines: its audit events (functions/core/interfaces.ts `AuditEvent`, written
 *   by functions/aws/cloudwatch-audit-sink.ts with top-level `type`, `reason`, `error`): accepted and
 *   rejected knocks, replays, grants opened, grant failures, revoke failures; its EMF `ApiErrors` points with
 *   `Code` = RulesPerSecurityGroupLimitExceeded (rule quota); and the heartbeat.
 * - Alarms, all sent to one SNS topic: replay spike, rule quota exhausted, revoke failures, receiver silent (no
 *   heartbeat), and those added by `alarmOn*` (Lambda errors, dead letters, instance status checks).
 * - Saved CloudWatch Logs Insights queries and a dashboard.
 * Main child: the audit log group ('Resource').
 */
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as actions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import type * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { HEARTBEAT_EVENT_TYPE, PREFILTER_EVENT_TYPE } from '../host/receiver-host.ts';

/** One metric filter: a CloudWatch Logs JSON pattern over the receiver's audit lines, counted. */
export interface AuditMetricSpec {
  readonly metricName: string;
  readonly pattern: string;
  /** The metric value of a matching line. @default '1' (one per line) */
  readonly value?: string;
}

/** The metric filters, by key. Patterns match the fields of functions/core/interfaces.ts `AuditEvent`. */
export const AUDIT_METRICS = Object.freeze({
  accepted: { metricName: 'KnocksAccepted', pattern: '{ $.type = "packet.accepted" }' },
  rejected: { metricName: 'KnocksRejected', pattern: '{ $.type = "packet.rejected" }' },
  replays: { metricName: 'Replays', pattern: '{ ($.type = "packet.rejected") && ($.reason = "replay") }' },
  grantsOpened: { metricName: 'GrantsOpened', pattern: '{ $.type = "grant.opened" }' },
  grantFailures: { metricName: 'GrantFailures', pattern: '{ $.type = "grant.failed" }' },
  revokeFailures: {
    metricName: 'RevokeFailures',
    pattern: '{ ($.type = "grant.failed") && ($.error = "revoke failed*") }',
  },
  // The receiver's ApiErrors EMF data point carries the EC2 error code as the `Code` dimension.
  ruleQuotaExhausted: {
    metricName: 'RuleQuotaExhausted',
    pattern: '{ $.Code = "RulesPerSecurityGroupLimitExceeded" }',
  },
  heartbeats: { metricName: 'ReceiverHeartbeats', pattern: `{ $.type = "${HEARTBEAT_EVENT_TYPE}" }` },
  // The receiver host's pre-filter counts line (infra/host/receiver-host.ts): datagrams dropped in the kernel.
  prefilterDropped: {
    metricName: 'PrefilterDropped',
    pattern: `{ $.type = "${PREFILTER_EVENT_TYPE}" }`,
    value: '$.dropped',
  },
} satisfies Record<string, AuditMetricSpec>);

/** Saved Logs Insights queries: name suffix and query text. */
export const AUDIT_QUERIES = Object.freeze({
  'knocks-by-device': [
    'fields @timestamp, deviceId, source, format',
    'filter type = "packet.accepted"',
    'stats count(*) as knocks, latest(source) as lastSource by deviceId',
    'sort knocks desc',
  ].join('\n| '),
  'rejections-by-reason': [
    'filter type = "packet.rejected"',
    'stats count(*) as rejections by reason',
    'sort rejections desc',
  ].join('\n| '),
  'who-knocked-from-where': [
    'filter type = "packet.accepted"',
    'stats count(*) as knocks, min(@timestamp) as first, max(@timestamp) as last by deviceId, source',
    'sort last desc',
  ].join('\n| '),
  'grant-timeline': [
    'fields @timestamp, type, deviceId, source, expiresAt',
    'filter type like /^grant\\./',
    'sort @timestamp desc',
    'limit 200',
  ].join('\n| '),
  'grant-failures': [
    'fields @timestamp, deviceId, source, error',
    'filter type = "grant.failed"',
    'sort @timestamp desc',
    'limit 200',
  ].join('\n| '),
} satisfies Record<string, string>);

export interface AuditProps {
  /** Retention of the audit log group. @default logs.RetentionDays.ONE_YEAR */
  readonly retention?: logs.RetentionDays;
  /** Keep the audit log group when the stack is deleted. @default true */
  readonly retain?: boolean;
  /** Replays per 5 minutes that raise the replay-spike alarm. @default 10 */
  readonly replayAlarmThreshold?: number;
  /** E-mail address subscribed to the alarm topic. @default - no subscription */
  readonly alarmEmail?: string;
}

export class Audit extends Construct {
  readonly logGroup: logs.LogGroup;
  readonly alarmTopic: sns.Topic;
  readonly dashboard: cloudwatch.Dashboard;
  /** Metric namespace of the filters: 'Blackcloud/<stackName>'. */
  readonly namespace: string;
  readonly metrics: Readonly<Record<keyof typeof AUDIT_METRICS, cloudwatch.Metric>>;
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly queries: logs.CfnQueryDefinition[] = [];

  constructor(scope: Construct, id: string, props: AuditProps = {}) {
    super(scope, id);
    const stack = Stack.of(this);
    this.namespace = `Blackcloud/${stack.stackName}`;

    this.logGroup = new logs.LogGroup(this, 'Resource', {
      retention: props.retention ?? logs.RetentionDays.ONE_YEAR,
      removalPolicy: (props.retain ?? true) ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    });

    const metrics = {} as Record<keyof typeof AUDIT_METRICS, cloudwatch.Metric>;
    for (const [key, spec] of Object.entries(AUDIT_METRICS) as [
      keyof typeof AUDIT_METRICS,
      AuditMetricSpec,
    ][]) {
      const filter = new logs.MetricFilter(this, `${spec.metricName}Filter`, {
        logGroup: this.logGroup,
        filterPattern: logs.FilterPattern.literal(spec.pattern),
        metricNamespace: this.namespace,
        metricName: spec.metricName,
        metricValue: spec.value ?? '1',
        unit: cloudwatch.Unit.COUNT,
      });
      metrics[key] = filter.metric({ statistic: cloudwatch.Stats.SUM, period: Duration.minutes(5) });
    }
    this.metrics = Object.freeze(metrics);

    this.alarmTopic = new sns.Topic(this, 'AlarmTopic', {
      displayName: `blackcloud alarms (${stack.stackName})`,
      enforceSSL: true,
    });
    if (props.alarmEmail)
      this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));

    this.addAlarm('ReplaySpike', {
      metric: this.metrics.replays,
      threshold: props.replayAlarmThreshold ?? 10,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      description: 'Replayed SPA packets (someone resending captured knocks).',
    });
    this.addAlarm('RuleQuotaExhausted', {
      metric: this.metrics.ruleQuotaExhausted,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      description:
        'The broker security groups are full (RulesPerSecurityGroupLimitExceeded): grants are queued. ' +
        'Raise grantSecurityGroupCount or the rules-per-group quota.',
    });
    this.addAlarm('RevokeFailures', {
      metric: this.metrics.revokeFailures,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      description: 'The receiver failed to revoke a grant (the revoker and the sweeper are the backstops).',
    });
    this.addAlarm('ReceiverSilent', {
      metric: this.metrics.heartbeats,
      threshold: 2,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      description:
        'No receiver heartbeat for 5 minutes: the receiver service, its instance or its log shipping is down ' +
        '(expected for a few minutes after the first deploy).',
    });

    for (const [name, queryString] of Object.entries(AUDIT_QUERIES)) {
      this.queries.push(
        new logs.CfnQueryDefinition(this, `Query-${name}`, {
          name: `${stack.stackName}/${name}`,
          queryString,
          logGroupNames: [this.logGroup.logGroupName],
        }),
      );
    }

    this.dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${stack.stackName}-blackcloud`,
      defaultInterval: Duration.hours(3),
    });
    this.dashboard.addWidgets(
      new cloudwatch.GraphWidget({
        title: 'Knocks',
        left: [this.metrics.accepted, this.metrics.rejected, this.metrics.replays],
        width: 12,
      }),
      new cloudwatch.GraphWidget({
        title: 'Grants',
        left: [this.metrics.grantsOpened, this.metrics.grantFailures],
        right: [this.metrics.revokeFailures, this.metrics.ruleQuotaExhausted],
        width: 12,
      }),
    );
    this.dashboard.addWidgets(
      new cloudwatch.LogQueryWidget({
        title: 'Latest grants',
        logGroupNames: [this.logGroup.logGroupName],
        queryString: AUDIT_QUERIES['grant-timeline'],
        width: 12,
      }),
      new cloudwatch.LogQueryWidget({
        title: 'Rejections by reason',
        logGroupNames: [this.logGroup.logGroupName],
        queryString: AUDIT_QUERIES['rejections-by-reason'],
        view: cloudwatch.LogQueryVisualizationType.TABLE,
        width: 12,
      }),
    );
  }

  /** Alarms when the function reports any error in 5 minutes. */
  alarmOnFunctionErrors(id: string, fn: lambda.IFunction, description: string): cloudwatch.Alarm {
    return this.addAlarm(id, {
      metric: fn.metricErrors({ period: Duration.minutes(5), statistic: cloudwatch.Stats.SUM }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      description,
    });
  }

  /** Alarms when messages wait in a dead-letter queue (revokes that failed every retry). */
  alarmOnDeadLetters(id: string, queue: sqs.IQueue, description: string): cloudwatch.Alarm {
    return this.addAlarm(id, {
      metric: queue.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(5),
        statistic: cloudwatch.Stats.MAXIMUM,
      }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      description,
    });
  }

  /** Alarms when an instance fails its status checks. */
  alarmOnInstanceStatus(id: string, instance: ec2.IInstance, description: string): cloudwatch.Alarm {
    return this.addAlarm(id, {
      metric: new cloudwatch.Metric({
        namespace: 'AWS/EC2',
        metricName: 'StatusCheckFailed',
        dimensionsMap: { InstanceId: instance.instanceId },
        period: Duration.minutes(5),
        statistic: cloudwatch.Stats.MAXIMUM,
      }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      description,
    });
  }

  /**
   * Alarms when fewer than `expected` receivers behind the load balancer pass their health check (scaled
   * receivers): one receiver down still leaves the others serving, but the headroom is gone.
   */
  alarmOnHealthyTargets(
    id: string,
    targetGroup: elbv2.NetworkTargetGroup,
    loadBalancer: elbv2.NetworkLoadBalancer,
    expected: number,
    description: string,
  ): cloudwatch.Alarm {
    return this.addAlarm(id, {
      metric: new cloudwatch.Metric({
        namespace: 'AWS/NetworkELB',
        metricName: 'HealthyHostCount',
        dimensionsMap: {
          TargetGroup: targetGroup.targetGroupFullName,
          LoadBalancer: loadBalancer.loadBalancerFullName,
        },
        period: Duration.minutes(5),
        statistic: cloudwatch.Stats.MINIMUM,
      }),
      threshold: expected,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      description,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
  }

  /** Adds a widget row of the given alarms' states to the dashboard. */
  showAlarmStatus(): void {
    this.dashboard.addWidgets(
      new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24 }),
    );
  }

  private addAlarm(
    id: string,
    options: {
      metric: cloudwatch.IMetric;
      threshold: number;
      comparisonOperator: cloudwatch.ComparisonOperator;
      description: string;
      treatMissingData?: cloudwatch.TreatMissingData;
    },
  ): cloudwatch.Alarm {
    const alarm = new cloudwatch.Alarm(this, id, {
      metric: options.metric,
      threshold: options.threshold,
      comparisonOperator: options.comparisonOperator,
      evaluationPeriods: 1,
      datapointsToAlarm: 1,
      treatMissingData: options.treatMissingData ?? cloudwatch.TreatMissingData.NOT_BREACHING,
      alarmDescription: `blackcloud: ${options.description}`,
    });
    const action = new actions.SnsAction(this.alarmTopic);
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
    this.alarms.push(alarm);
    return alarm;
  }
}
