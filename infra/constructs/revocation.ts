/**
 * Revocation unit: the durable backstops that close every grant even when the receiver dies (docs/architecture.md, docs/operations-aws.md).
 * - A delay queue: the receiver sends one message per grant, delayed by the grant's lifetime (at most 900 s);
 *   the queue's own delivery delay is the default grant window. Encrypted (SQS-managed keys), TLS enforced,
 *   with a dead-letter queue after `maxReceiveCount` failed attempts.
 * - The revoker Lambda (functions/revoker/handler.ts) consumes it, reporting partial batch failures so that only
 *   failed records are retried.
 * - The sweeper Lambda (functions/sweeper/handler.ts) runs every minute on an EventBridge schedule and revokes
 *   every knock rule whose expiry (in the rule description) has passed.
 * Both: Node 24 on arm64, bundled with esbuild (one ES module each), their own role with no managed policy and
 * their own log group. What they may do to the broker and the grants table is granted by the stack.
 * Main child: the delay queue ('Resource').
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { bundleEntry } from '../bundle.ts';

/** The Lambdas' runtime: Node 24, like the receiver's instance. */
export const LAMBDA_RUNTIME = lambda.Runtime.NODEJS_24_X;

export interface RevocationProps {
  /** Delivery delay of the queue (the default grant window), 0..900 s. @default Duration.seconds(30) */
  readonly grantWindow?: Duration;
  /** Revoker entrypoint, relative to the repository root. @default 'functions/revoker/handler.ts' */
  readonly revokerEntry?: string;
  /** Sweeper entrypoint, relative to the repository root. @default 'functions/sweeper/handler.ts' */
  readonly sweeperEntry?: string;
  /** Environment of both Lambdas (broker security group ids, grants table name). */
  readonly environment: Readonly<Record<string, string>>;
  /** How often the sweeper runs. @default Duration.minutes(1) */
  readonly sweepInterval?: Duration;
  /** Receives before a revoke message goes to the dead-letter queue. @default 5 */
  readonly maxReceiveCount?: number;
  /** Retention of the Lambdas' log groups. @default logs.RetentionDays.THREE_MONTHS */
  readonly logRetention?: logs.RetentionDays;
}

export class Revocation extends Construct {
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly revoker: lambda.Function;
  readonly sweeper: lambda.Function;
  readonly sweepSchedule: events.Rule;

  constructor(scope: Construct, id: string, props: RevocationProps) {
    super(scope, id);
    const revokerTimeout = Duration.seconds(30);

    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, 'Resource', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      deliveryDelay: props.grantWindow ?? Duration.seconds(30),
      // Lambda's guidance: at least six times the function timeout.
      visibilityTimeout: Duration.seconds(revokerTimeout.toSeconds() * 6),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: props.maxReceiveCount ?? 5 },
    });

    const logRetention = props.logRetention ?? logs.RetentionDays.THREE_MONTHS;
    this.revoker = this.bundledFunction('Revoker', {
      entry: props.revokerEntry ?? 'functions/revoker/handler.ts',
      description: 'blackcloud: revokes a knock grant when its delayed message arrives',
      timeout: revokerTimeout,
      environment: props.environment,
      logRetention,
    });
    this.revoker.addEventSource(
      new SqsEventSource(this.queue, { batchSize: 10, reportBatchItemFailures: true, enabled: true }),
    );

    this.sweeper = this.bundledFunction('Sweeper', {
      entry: props.sweeperEntry ?? 'functions/sweeper/handler.ts',
      description: 'blackcloud: revokes every expired knock rule on the broker security groups',
      timeout: Duration.seconds(50),
      environment: props.environment,
      logRetention,
    });
    this.sweepSchedule = new events.Rule(this, 'SweepSchedule', {
      description: 'blackcloud: run the sweeper',
      schedule: events.Schedule.rate(props.sweepInterval ?? Duration.minutes(1)),
      targets: [new targets.LambdaFunction(this.sweeper, { retryAttempts: 0 })],
    });
  }

  /** The receiver schedules a grant's expiry: SendMessage on the delay queue, nothing else. */
  grantScheduling(grantee: iam.IGrantable): iam.Grant {
    return iam.Grant.addToPrincipal({
      grantee,
      actions: ['sqs:SendMessage'],
      resourceArns: [this.queue.queueArn],
    });
  }

  private bundledFunction(
    id: string,
    options: {
      entry: string;
      description: string;
      timeout: Duration;
      environment: Readonly<Record<string, string>>;
      logRetention: logs.RetentionDays;
    },
  ): lambda.Function {
    const logGroup = new logs.LogGroup(this, `${id}Logs`, {
      retention: options.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    // Its own role: no managed policy; logs to its own group only. Other rights are granted by the stack.
    const role = new iam.Role(this, `${id}Role`, {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `blackcloud ${id.toLowerCase()} Lambda`,
    });
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
        resources: [logGroup.logGroupArn],
      }),
    );
    const bundle = bundleEntry({ entry: options.entry, outFileName: 'index.mjs' });
    try {
      return new lambda.Function(this, id, {
        runtime: LAMBDA_RUNTIME,
        architecture: lambda.Architecture.ARM_64,
        handler: 'index.handler',
        code: lambda.Code.fromAsset(bundle.directory),
        description: options.description,
        timeout: options.timeout,
        memorySize: 256,
        role,
        logGroup,
        environment: { ...options.environment },
      });
    } finally {
      bundle.dispose();
    }
  }
}
