/**
 * Sweeper Lambda (EventBridge schedule, every minute). Thin: the environment is parsed and the clients are
 * created once per cold start; each invocation runs `sweepExpiredGrants`, logs the report as one JSON line and
 * fails the invocation (after doing everything it could) when a group or the grants table failed, so the
 * Lambda Errors metric alarms on it.
 */
import { dynamodbClient, ec2Client } from '../aws/clients.ts';
import { DynamoGrantStore } from '../aws/dynamo-grant-store.ts';
import { AwsAdapterError } from '../aws/errors.ts';
import { apiErrorReporter, EmfMetrics } from '../aws/metrics.ts';
import { defaultRetryPolicy } from '../aws/retry.ts';
import { loadSweeperConfig } from './config.ts';
import { type SweeperDeps, type SweepReport, sweepExpiredGrants } from './sweep.ts';

export class SweepFailedError extends AwsAdapterError {
  override name = 'SweepFailedError';
}

const config = loadSweeperConfig();
const clock = { now: () => Date.now() };
const clientOptions = { region: config.region, endpoint: config.endpoint };
const metrics = new EmfMetrics({ out: process.stdout, clock });
const deps: SweeperDeps = {
  ec2: ec2Client(clientOptions),
  grants: new DynamoGrantStore({ dynamodb: dynamodbClient(clientOptions), tableName: config.grantsTable }),
  securityGroupIds: config.brokerSecurityGroupIds,
  clock,
  retry: defaultRetryPolicy(apiErrorReporter(metrics)),
};

export async function handler(): Promise<SweepReport> {
  let report: SweepReport;
  try {
    report = await sweepExpiredGrants(deps);
  } finally {
    metrics.flush(); // this invocation's ApiErrors, as one EMF document (metrics.ts)
  }
  process.stdout.write(`${JSON.stringify({ kind: 'sweeper', ...report })}\n`);
  if (report.failures.length > 0) {
    throw new SweepFailedError(
      `sweep incomplete: ${report.failures.map((f) => `${f.where}: ${f.error}`).join('; ')}. ` +
        'Check the sweeper role (ec2:DescribeSecurityGroups, ec2:RevokeSecurityGroupIngress on the broker ' +
        'groups, dynamodb:Scan/DeleteItem on the grants table); the next run retries',
    );
  }
  return report;
}
