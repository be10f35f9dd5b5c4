/**
 * The audit trail in CloudWatch Logs for the AWS fleet: reading the audit log group (the receiver's
 * `{"kind":"audit",...}` lines) and writing the operator's actions into it.
 *
 * Contract:
 * - `readAuditLog` yields the audit records (audit-query.ts parses and filters; metrics, heartbeats and other lines
 *   are skipped) from `query.since` on, page by page. With `follow`, it polls every `pollMs` from the newest
 *   timestamp seen, never yielding an event twice (events at that instant already printed are remembered by
 *   stream and event id), until `query.signal` aborts.
 * - `OperatorAuditLog.write` appends one record to the stream `operator-<user@host>` (created on first use; an
 *   existing stream is fine). AWS errors reject.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type CloudWatchLogsClient,
  CreateLogStreamCommand,
  PutLogEventsCommand,
  paginateFilterLogEvents,
} from '@aws-sdk/client-cloudwatch-logs';
import { awsErrorCode } from '../../functions/aws/errors.ts';
import { matchesQuery, parseAuditLine } from './audit-query.ts';
import type { AuditQuery, AuditRecord } from './fleet.ts';

export async function* readAuditLog(
  logs: CloudWatchLogsClient,
  logGroupName: string,
  query: AuditQuery,
  pollMs = 2000,
): AsyncIterable<AuditRecord> {
  let startTime = query.since ?? 0;
  const seen = new Set<string>();
  for (;;) {
    let newest = startTime;
    const atNewest = new Set<string>();
    for await (const page of paginateFilterLogEvents({ client: logs }, { logGroupName, startTime })) {
      for (const event of page.events ?? []) {
        const id = `${event.logStreamName}/${event.eventId ?? `${event.timestamp}/${event.message}`}`;
        const at = event.timestamp ?? 0;
        if (at > newest) {
          newest = at;
          atNewest.clear();
        }
        if (at === newest) atNewest.add(id);
        if (seen.has(id)) continue;
        const record = parseAuditLine(event.message ?? '');
        if (record !== undefined && matchesQuery(record, query)) yield record;
      }
    }
    if (query.follow !== true) return;
    // Next round: from the newest timestamp seen, skipping the events already printed at that instant.
    startTime = newest;
    seen.clear();
    for (const id of atNewest) seen.add(id);
    // Ctrl-C (also before the wait) ends it at once; only an abort may end it early.
    await sleep(pollMs, undefined, { signal: query.signal }).catch((error: unknown) => {
      if (query.signal?.aborted !== true) throw error;
    });
    if (query.signal?.aborted === true) return;
  }
}

/** Log stream names may not contain ':' or '*'. */
export function operatorStreamName(operator: string): string {
  return `operator-${operator.replace(/[^A-Za-z0-9._@-]/g, '_')}`.slice(0, 512);
}

export class OperatorAuditLog {
  readonly #logs: CloudWatchLogsClient;
  readonly #group: string;
  readonly #stream: string;
  #ready: Promise<void> | undefined;

  constructor(logs: CloudWatchLogsClient, logGroupName: string, operator: string) {
    this.#logs = logs;
    this.#group = logGroupName;
    this.#stream = operatorStreamName(operator);
  }

  async write(record: AuditRecord): Promise<void> {
    this.#ready ??= this.#logs
      .send(new CreateLogStreamCommand({ logGroupName: this.#group, logStreamName: this.#stream }))
      .then(
        () => undefined,
        (error: unknown) => {
          if (awsErrorCode(error) !== 'ResourceAlreadyExistsException') throw error;
        },
      );
    await this.#ready;
    await this.#logs.send(
      new PutLogEventsCommand({
        logGroupName: this.#group,
        logStreamName: this.#stream,
        logEvents: [
          {
            timestamp: record.time,
            message: JSON.stringify({
              kind: 'audit',
              ...record,
              isoTime: new Date(record.time).toISOString(),
            }),
          },
        ],
      }),
    );
  }
}
