/**
 * Metrics in CloudWatch Embedded Metric Format (EMF), written as JSON lines on stdout. On Lambda, CloudWatch Logs
 * extracts them by itself; on the receiver instance the CloudWatch agent ships stdout to the log group with EMF
 * extraction on. Namespace `Blackcloud`.
 *
 * Data points are aggregated in memory and written per flush (every `flushMs` with `timers`, and on `flush()` /
 * `close()`): ONE document carrying every metric's total (no dimensions), plus one document per dimension value
 * seen in the interval (EMF gives each dimension one value per document, so `Reason=replay` and `Reason=stale`
 * cannot share one). Counters are summed; gauges carry their samples of the interval as an EMF value array (at
 * most 100, the newest), so CloudWatch still sees their maximum and last value. An interval without data points
 * writes nothing, except that exported receiver counters are always written.
 *
 * Metrics (all Unit Count):
 *   PacketsAccepted   counter: accepted knocks                                 dimensions: none
 *   PacketsRejected   counter: rejected knocks                                 dimensions: Reason, and none
 *   GrantsOpen        gauge: grants open in this process                       dimensions: none
 *   GrantsClosed      counter: grants closed, by why ('connected' = closed on   dimensions: Reason, and none
 *                     connect, 'expired', 'address-cap', 'operator', 'shutdown')
 *   GrantQueueDepth   gauge: grants waiting for a rule slot                    dimensions: none
 *   ApiErrors         counter: failed AWS calls (also throttled and            dimensions: Code, and none
 *                     RulesPerSecurityGroupLimitExceeded)                      (`Operation` is a property)
 *   DroppedOverload   counter: datagrams dropped unread under a flood          receiver counter `dropped.overload`
 *   AuditSuppressed   counter: rejections not audited (audit rate limit)       receiver counter `audit.suppressed`
 * The last two are the receiver's in-process counters (counters.ts), exported as their increase per flush.
 */
import type { Clock, Timers } from '../core/interfaces.ts';
import { counterName } from '../receiver/counters.ts';

export const METRIC_NAMESPACE = 'Blackcloud';

export type MetricName =
  | 'PacketsAccepted'
  | 'PacketsRejected'
  | 'GrantsOpen'
  | 'GrantsClosed'
  | 'GrantQueueDepth'
  | 'ApiErrors'
  | 'DroppedOverload'
  | 'AuditSuppressed';

const GAUGES: ReadonlySet<MetricName> = new Set(['GrantsOpen', 'GrantQueueDepth']);

/** The receiver counters exported as metrics. */
export const EXPORTED_COUNTERS: Readonly<Record<string, MetricName>> = Object.freeze({
  [counterName.droppedOverload]: 'DroppedOverload',
  [counterName.auditSuppressed]: 'AuditSuppressed',
});

/** EMF accepts at most 100 values for one metric in one document. */
const MAX_VALUES = 100;

export interface Metrics {
  /**
   * One data point. `dimensions` become CloudWatch dimensions (the point also counts in the dimensionless total);
   * `properties` are logged with the point's dimension document for Logs Insights but are not dimensions.
   */
  put(
    name: MetricName,
    value: number,
    dimensions?: Readonly<Record<string, string>>,
    properties?: Readonly<Record<string, string>>,
  ): void;
}

/** Where lines go: `process.stdout` in production, an array in tests. */
export interface LineWriter {
  write(line: string): unknown;
}

export interface EmfDocument {
  readonly _aws: {
    readonly Timestamp: number;
    readonly CloudWatchMetrics: readonly {
      readonly Namespace: string;
      readonly Dimensions: readonly (readonly string[])[];
      readonly Metrics: readonly { readonly Name: string; readonly Unit: 'Count' }[];
    }[];
  };
  readonly [key: string]: number | readonly number[] | string | EmfDocument['_aws'];
}

/** What one flush interval recorded for one metric and one set of dimensions and properties. */
export interface MetricSeries {
  readonly name: MetricName;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly properties: Readonly<Record<string, string>>;
  /** A counter's sum, or a gauge's samples (oldest first). */
  readonly value: number | readonly number[];
}

/**
 * The EMF documents of one flush (pure): first the totals document (every metric, no dimensions), then one
 * document per series that has dimensions. Empty when there is nothing to write.
 */
export function emfDocuments(timestamp: number, series: readonly MetricSeries[]): EmfDocument[] {
  const totals = new Map<MetricName, number | number[]>();
  for (const s of series) {
    const sofar = totals.get(s.name);
    if (typeof s.value === 'number') totals.set(s.name, (typeof sofar === 'number' ? sofar : 0) + s.value);
    else totals.set(s.name, [...(Array.isArray(sofar) ? sofar : []), ...s.value].slice(-MAX_VALUES));
  }
  if (totals.size === 0) return [];
  const document = (
    fields: Record<string, number | readonly number[] | string>,
    names: readonly MetricName[],
    dimensions: readonly string[],
  ): EmfDocument => ({
    ...fields,
    _aws: {
      Timestamp: Math.floor(timestamp),
      CloudWatchMetrics: [
        {
          Namespace: METRIC_NAMESPACE,
          Dimensions: [dimensions],
          Metrics: names.map((name) => ({ Name: name, Unit: 'Count' as const })),
        },
      ],
    },
  });
  const values = (v: number | readonly number[]) => (typeof v === 'number' || v.length !== 1 ? v : v[0]!);
  const docs = [
    document(Object.fromEntries([...totals].map(([name, v]) => [name, values(v)])), [...totals.keys()], []),
  ];
  for (const s of series) {
    const keys = Object.keys(s.dimensions);
    if (keys.length === 0) continue;
    docs.push(document({ ...s.properties, ...s.dimensions, [s.name]: values(s.value) }, [s.name], keys));
  }
  return docs;
}

export interface EmfMetricsOptions {
  readonly out: LineWriter;
  readonly clock: Clock;
  /** With timers, a flush every `flushMs`; without, only `flush()` and `close()` write (Lambdas). */
  readonly timers?: Timers;
  /** @default 60000 */
  readonly flushMs?: number;
  /** The receiver's counters (snapshot); those in EXPORTED_COUNTERS are written as their increase per flush. */
  readonly counters?: () => Readonly<Record<string, number>>;
}

interface Series {
  readonly name: MetricName;
  readonly dimensions: Readonly<Record<string, string>>;
  readonly properties: Readonly<Record<string, string>>;
  sum: number;
  readonly samples: number[];
}

export class EmfMetrics implements Metrics {
  readonly #o: EmfMetricsOptions;
  #series = new Map<string, Series>();
  #exported: Record<string, number> = {};
  #timer: unknown;
  #closed = false;

  constructor(options: EmfMetricsOptions) {
    this.#o = options;
    this.#exported = this.#counterValues();
    this.#arm();
  }

  put(
    name: MetricName,
    value: number,
    dimensions: Readonly<Record<string, string>> = {},
    properties: Readonly<Record<string, string>> = {},
  ): void {
    const key = JSON.stringify([name, dimensions, properties]);
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { name, dimensions, properties, sum: 0, samples: [] };
      this.#series.set(key, series);
    }
    if (GAUGES.has(name)) {
      series.samples.push(value);
      if (series.samples.length > MAX_VALUES) series.samples.shift();
    } else series.sum += value;
  }

  /** Writes what was recorded since the last flush (emfDocuments), one line per document. */
  flush(): void {
    const series: MetricSeries[] = [...this.#series.values()].map((s) => ({
      name: s.name,
      dimensions: s.dimensions,
      properties: s.properties,
      value: GAUGES.has(s.name) ? s.samples : s.sum,
    }));
    this.#series = new Map();
    if (this.#o.counters !== undefined) {
      const now = this.#counterValues();
      for (const [counter, name] of Object.entries(EXPORTED_COUNTERS)) {
        series.push({
          name,
          dimensions: {},
          properties: {},
          value: (now[counter] ?? 0) - (this.#exported[counter] ?? 0),
        });
      }
      this.#exported = now;
    }
    for (const doc of emfDocuments(this.#o.clock.now(), series))
      this.#o.out.write(`${JSON.stringify(doc)}\n`);
  }

  /** Stops the periodic flush and writes the rest. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) this.#o.timers?.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.flush();
  }

  #counterValues(): Record<string, number> {
    return { ...(this.#o.counters?.() ?? {}) };
  }

  #arm(): void {
    const timers = this.#o.timers;
    if (timers === undefined || this.#closed) return;
    this.#timer = timers.setTimeout(() => {
      this.flush();
      this.#arm();
    }, this.#o.flushMs ?? 60_000);
  }
}

/** Metrics that go nowhere (tools and tests that do not look at them). */
export const noMetrics: Metrics = { put() {} };

/** The ApiErrors data point for a failed call, as the retry policy's `onError` hook. */
export function apiErrorReporter(metrics: Metrics): (operation: string, code: string) => void {
  return (operation, code) => metrics.put('ApiErrors', 1, { Code: code }, { Operation: operation });
}
