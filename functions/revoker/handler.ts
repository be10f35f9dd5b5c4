/**
 * Revoker Lambda (SQS event source on the revoke delay queue, ReportBatchItemFailures on).
 * Thin: the environment is parsed and the clients are created once per cold start; each invocation hands the
 * records to `revokeGrantMessages`, logs one JSON line per message and maps failures to batch item failures.
 */
import type { SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { dynamodbClient, ec2Client } from '../aws/clients.ts';
import { DynamoGrantStore } from '../aws/dynamo-grant-store.ts';
import { apiErrorReporter, EmfMetrics } from '../aws/metrics.ts';
import { defaultRetryPolicy } from '../aws/retry.ts';
import { loadRevokerConfig } from './config.ts';
import { type RevokerDeps, revokeGrantMessages } from './revoke-grants.ts';

const config = loadRevokerConfig();
const clock = { now: () => Date.now() };
const clientOptions = { region: config.region, endpoint: config.endpoint };
const metrics = new EmfMetrics({ out: process.stdout, clock });
const deps: RevokerDeps = {
  ec2: ec2Client(clientOptions),
  grants: new DynamoGrantStore({ dynamodb: dynamodbClient(clientOptions), tableName: config.grantsTable }),
  securityGroupIds: config.brokerSecurityGroupIds,
  clock,
  retry: defaultRetryPolicy(apiErrorReporter(metrics)),
};

export async function handler(event: SQSEvent): Promise<SQSBatchResponse> {
  try {
    const result = await revokeGrantMessages(
      event.Records.map((r) => ({ messageId: r.messageId, body: r.body })),
      deps,
    );
    for (const outcome of result.outcomes) {
      process.stdout.write(`${JSON.stringify({ kind: 'revoker', time: clock.now(), ...outcome })}\n`);
    }
    return { batchItemFailures: [...result.batchItemFailures] };
  } finally {
    metrics.flush(); // this invocation's ApiErrors, as one EMF document (metrics.ts)
  }
}
