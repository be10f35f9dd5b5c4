/** Retry/backoff, the bounded cache, EMF metrics and the CloudWatch audit sink (pure, virtual time). */
import { describe, expect, it } from 'vitest';
import { awsClients, destroyAwsClients, ec2Client } from '../../../functions/aws/clients.ts';
import { CloudWatchAuditSink } from '../../../functions/aws/cloudwatch-audit-sink.ts';
import { AwsConfigError, awsErrorCode } from '../../../functions/aws/errors.ts';
import { EmfMetrics, emfDocuments, METRIC_NAMESPACE } from '../../../functions/aws/metrics.ts';
import { backoffDelay, isTransient, type RetryPolicy, withRetry } from '../../../functions/aws/retry.ts';

function awsError(name: string, status = 400) {
  return Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });
}

describe('withRetry', () => {
  function policy(sleeps: number[], errors: [string, string][] = []): RetryPolicy {
    return {
      maxAttempts: 4,
      baseDelayMs: 100,
      maxDelayMs: 250,
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      random: () => 0.5,
      onError: (op, code) => errors.push([op, code]),
    };
  }

  it('retries throttling with exponential backoff, full jitter and a cap, then succeeds', async () => {
    const sleeps: number[] = [];
    const errors: [string, string][] = [];
    let calls = 0;
    const result = await withRetry(
      'Authorize',
      async () => {
        calls++;
        if (calls < 4) throw awsError('RequestLimitExceeded', 503);
        return 'done';
      },
      policy(sleeps, errors),
    );
    expect(result).toBe('done');
    expect(calls).toBe(4);
    expect(sleeps).toEqual([50, 100, 125]); // 0.5 × min(250, 100·2^(n-1))
    expect(errors).toEqual([
      ['Authorize', 'RequestLimitExceeded'],
      ['Authorize', 'RequestLimitExceeded'],
      ['Authorize', 'RequestLimitExceeded'],
    ]);
  });

  it('gives up after maxAttempts with the last error', async () => {
    const sleeps: number[] = [];
    let calls = 0;
    await expect(
      withRetry(
        'Revoke',
        async () => {
          calls++;
          throw awsError('RequestLimitExceeded');
        },
        policy(sleeps),
      ),
    ).rejects.toMatchObject({ name: 'RequestLimitExceeded' });
    expect(calls).toBe(4);
    expect(sleeps).toHaveLength(3);
  });

  it('does not retry answers like InvalidPermission.Duplicate', async () => {
    const sleeps: number[] = [];
    let calls = 0;
    await expect(
      withRetry(
        'Authorize',
        async () => {
          calls++;
          throw awsError('InvalidPermission.Duplicate');
        },
        policy(sleeps),
      ),
    ).rejects.toMatchObject({ name: 'InvalidPermission.Duplicate' });
    expect([calls, sleeps.length]).toEqual([1, 0]);
  });

  it('classifies transient errors', () => {
    expect(isTransient(awsError('RequestLimitExceeded'))).toBe(true);
    expect(isTransient(awsError('SomethingElse', 500))).toBe(true);
    expect(isTransient(Object.assign(new Error('x'), { code: 'ECONNREFUSED' }))).toBe(true);
    expect(isTransient(awsError('InvalidGroup.NotFound'))).toBe(false);
    expect(backoffDelay({ baseDelayMs: 200, maxDelayMs: 20_000 }, 10, 0.999)).toBe(19_980);
  });

  it('reads error codes off SDK and query-protocol errors', () => {
    expect(awsErrorCode(awsError('ConditionalCheckFailedException'))).toBe('ConditionalCheckFailedException');
    expect(awsErrorCode({ Code: 'RequestLimitExceeded', name: 'Error' })).toBe('RequestLimitExceeded');
    expect(awsErrorCode('nope')).toBe('UnknownError');
  });
});

/** The EMF specification's structural rules, checked on every document. */
function assertEmf(doc: Record<string, unknown>): void {
  const aws = doc._aws as { Timestamp: unknown; CloudWatchMetrics: unknown };
  expect(Number.isInteger(aws.Timestamp)).toBe(true);
  expect(Array.isArray(aws.CloudWatchMetrics)).toBe(true);
  for (const directive of aws.CloudWatchMetrics as Record<string, unknown>[]) {
    expect(directive.Namespace).toBe(METRIC_NAMESPACE);
    const dimensionSets = directive.Dimensions as string[][];
    expect(Array.isArray(dimensionSets)).toBe(true);
    for (const set of dimensionSets) {
      expect(set.length).toBeLessThanOrEqual(30);
      for (const key of set) expect(typeof doc[key]).toBe('string');
    }
    const metrics = directive.Metrics as { Name: string; Unit: string }[];
    expect(metrics.length).toBeGreaterThan(0);
    for (const m of metrics) {
      expect(m.Name).toMatch(/^[A-Za-z]+$/);
      expect(m.Unit).toBe('Count');
      const value = doc[m.Name];
      // A number, or an array of at most 100 numbers (EMF's value array).
      if (Array.isArray(value)) {
        expect(value.length).toBeLessThanOrEqual(100);
        for (const v of value) expect(typeof v).toBe('number');
      } else expect(typeof value).toBe('number');
    }
  }
}

describe('EMF metrics and the CloudWatch audit sink', () => {
  it('builds a valid EMF document with the dimensionless total, and one with the dimension set', () => {
    const docs = emfDocuments(1_700_000_000_123.7, [
      { name: 'PacketsRejected', dimensions: { Reason: 'stale' }, properties: {}, value: 1 },
    ]);
    for (const doc of docs) assertEmf(doc);
    expect(docs).toEqual([
      {
        PacketsRejected: 1,
        _aws: {
          Timestamp: 1_700_000_000_123,
          CloudWatchMetrics: [
            {
              Namespace: 'Blackcloud',
              Dimensions: [[]],
              Metrics: [{ Name: 'PacketsRejected', Unit: 'Count' }],
            },
          ],
        },
      },
      {
        Reason: 'stale',
        PacketsRejected: 1,
        _aws: {
          Timestamp: 1_700_000_000_123,
          CloudWatchMetrics: [
            {
              Namespace: 'Blackcloud',
              Dimensions: [['Reason']],
              Metrics: [{ Name: 'PacketsRejected', Unit: 'Count' }],
            },
          ],
        },
      },
    ]);
    expect(emfDocuments(1, [])).toEqual([]);
  });

  it('writes one document per flush with every total, plus one per dimension value; gauges as value arrays', () => {
    const lines: string[] = [];
    const metrics = new EmfMetrics({
      out: { write: (l: string) => lines.push(l) },
      clock: { now: () => 5000 },
    });
    metrics.put('PacketsRejected', 1, { Reason: 'replay' });
    metrics.put('PacketsRejected', 1, { Reason: 'stale' });
    metrics.put('PacketsRejected', 1, { Reason: 'replay' });
    metrics.put(
      'ApiErrors',
      1,
      { Code: 'RequestLimitExceeded' },
      { Operation: 'AuthorizeSecurityGroupIngress' },
    );
    metrics.put(
      'ApiErrors',
      1,
      { Code: 'RequestLimitExceeded' },
      { Operation: 'AuthorizeSecurityGroupIngress' },
    );
    metrics.put('PacketsAccepted', 1);
    for (let depth = 1; depth <= 120; depth++) metrics.put('GrantQueueDepth', depth);
    expect(lines).toEqual([]); // nothing before a flush
    metrics.flush();
    const docs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const d of docs) assertEmf(d);
    expect(docs[0]).toMatchObject({ PacketsRejected: 3, ApiErrors: 2, PacketsAccepted: 1 });
    expect(docs[0]!.GrantQueueDepth).toEqual(Array.from({ length: 100 }, (_, i) => i + 21)); // the newest 100
    expect(docs.slice(1).map(({ _aws, ...fields }) => fields)).toEqual([
      { Reason: 'replay', PacketsRejected: 2 },
      { Reason: 'stale', PacketsRejected: 1 },
      { Operation: 'AuthorizeSecurityGroupIngress', Code: 'RequestLimitExceeded', ApiErrors: 2 },
    ]);
    lines.length = 0;
    metrics.flush();
    expect(lines).toEqual([]); // an empty interval writes nothing
  });

  it('exports the receiver counters dropped.overload and audit.suppressed as their increase per flush', () => {
    const lines: string[] = [];
    const counters: Record<string, number> = { 'dropped.overload': 5, 'audit.suppressed': 1, received: 9 };
    let timer: (() => void) | undefined;
    const timers = {
      setTimeout: (fn: () => void, ms: number) => {
        expect(ms).toBe(1000);
        timer = fn;
        return 1;
      },
      clearTimeout: () => {
        timer = undefined;
      },
    };
    const metrics = new EmfMetrics({
      out: { write: (l: string) => lines.push(l) },
      clock: { now: () => 7000 },
      timers,
      flushMs: 1000,
      counters: () => ({ ...counters }),
    });
    counters['dropped.overload'] = 12;
    counters['audit.suppressed'] = 4;
    metrics.put('PacketsAccepted', 1);
    timer?.(); // the periodic flush
    counters['dropped.overload'] = 13;
    metrics.close();
    metrics.close(); // idempotent
    expect(timer).toBeUndefined();
    const docs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const d of docs) assertEmf(d);
    expect(docs.map(({ _aws, ...fields }) => fields)).toEqual([
      { PacketsAccepted: 1, DroppedOverload: 7, AuditSuppressed: 3 },
      { DroppedOverload: 1, AuditSuppressed: 0 },
    ]);
    expect(docs.every((d) => !('received' in d))).toBe(true);
  });

  it('writes an audit JSON line then its metrics for each event', () => {
    const lines: string[] = [];
    const out = { write: (line: string) => lines.push(line) };
    const clock = { now: () => 1_700_000_000_000 };
    const metrics = new EmfMetrics({ out, clock });
    const sink = new CloudWatchAuditSink({ out, metrics });
    const access = [{ protocol: 'tcp' as const, port: 8883 }];
    sink.write({
      type: 'packet.accepted',
      time: 1_700_000_000_000,
      deviceId: 'dev-1',
      source: '203.0.113.7',
      format: 'bc1',
      access,
      grantSeconds: 30,
      replayIdHash: 'abcd',
    });
    sink.write({ type: 'packet.rejected', time: 1_700_000_000_001, source: '203.0.113.8', reason: 'replay' });
    sink.write({
      type: 'grant.opened',
      time: 1,
      deviceId: 'dev-1',
      source: '203.0.113.7',
      access,
      expiresAt: 2,
    });
    sink.write({
      type: 'grant.opened',
      time: 1,
      deviceId: 'dev-2',
      source: '203.0.113.9',
      access,
      expiresAt: 2,
    });
    sink.write({
      type: 'grant.revoked',
      time: 3,
      deviceId: 'dev-1',
      source: '203.0.113.7',
      access,
      expiresAt: 2,
      reason: 'connected',
    });
    metrics.flush();
    expect(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    const docs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    const audit = docs.filter((d) => d.kind === 'audit');
    const emf = docs.filter((d) => d._aws !== undefined);
    for (const d of emf) assertEmf(d);
    expect(audit.map((d) => d.type)).toEqual([
      'packet.accepted',
      'packet.rejected',
      'grant.opened',
      'grant.opened',
      'grant.revoked',
    ]);
    expect(audit[0]).toMatchObject({ deviceId: 'dev-1', isoTime: '2023-11-14T22:13:20.000Z' });
    expect(docs.slice(0, 5).every((d) => d.kind === 'audit')).toBe(true); // metrics follow, at the flush
    expect(emf.map(({ _aws, ...fields }) => fields)).toEqual([
      { PacketsAccepted: 1, PacketsRejected: 1, GrantsOpen: [1, 2, 1], GrantsClosed: 1 },
      { Reason: 'replay', PacketsRejected: 1 },
      { Reason: 'connected', GrantsClosed: 1 },
    ]);
  });
});

describe('process-wide clients', () => {
  it('creates each client once per process and refuses a second, different configuration', () => {
    const options = { region: 'eu-west-1', endpoint: 'http://127.0.0.1:1' };
    try {
      const first = awsClients(options);
      expect(awsClients(options)).toEqual(first);
      expect(ec2Client(options)).toBe(first.ec2);
      expect(() => ec2Client({ ...options, endpoint: 'http://127.0.0.1:2' })).toThrow(AwsConfigError);
    } finally {
      destroyAwsClients();
    }
  });
});
