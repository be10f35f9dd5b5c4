/**
 * Metrics in CloudWatch Embedded Metric Format (EMF): one JSON line per data point on stdout. On Lambda, CloudWatch
 * Logs extracts them by itself; on the receiver instance the CloudWatch agent ships stdout to the log group with
 * EMF extraction on. Namespace `Blackcloud`.
 *
 * Metrics (all Unit Count):
 *   PacketsAccepted                      one per accepted knock                       dimensions: none
 *   PacketsRejected                      one per rejected knock                       dimensions: Reason, and none
 *   GrantsOpen                           gauge: grants open in this process           dimensions: none
 *   GrantQueueDepth                      gauge: grants waiting for a rule slot        dimensions: none
 *   ApiErrors                            one per failed AWS call (also throttled and  dimensions: Code, and none
 *                                        RulesPerSecurityGroupLimitExceeded)          (`Operation` is a property)
 * Every metric with a dimension is also published without it (the empty dimension set) so alarms can use totals.
 */
import type { Clock } from '../core/interfaces.ts';

export const METRIC_NAMESPACE = 'Blackcloud';

export type MetricName =
  | 'PacketsAccepted'
  | 'PacketsRejected'
  | 'GrantsOpen'
  | 'GrantQueueDepth'
  | 'ApiErrors';

export interface Metrics {
  /**
   * One data point. `dimensions` become CloudWatch dimensions (plus a dimensionless copy); `properties` are logged
   * with the point for Logs Insights but are not dimensions.
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
  readonly [key: string]: unknown;
}

/** The EMF document for one data point (pure). */
export function emfDocument(
  timestamp: number,
  name: MetricName,
  value: number,
  dimensions: Readonly<Record<string, string>> = {},
  properties: Readonly<Record<string, string>> = {},
): EmfDocument {
  const keys = Object.keys(dimensions);
  return {
    ...properties,
    ...dimensions,
    [name]: value,
    _aws: {
      Timestamp: Math.floor(timestamp),
      CloudWatchMetrics: [
        {
          Namespace: METRIC_NAMESPACE,
          Dimensions: keys.length === 0 ? [[]] : [keys, []],
          Metrics: [{ Name: name, Unit: 'Count' }],
        },
      ],
    },
  };
}

export class EmfMetrics implements Metrics {
  readonly #out: LineWriter;
  readonly #clock: Clock;

  constructor(options: { out: LineWriter; clock: Clock }) {
    this.#out = options.out;
    this.#clock = options.clock;
  }

  put(
    name: MetricName,
    value: number,
    dimensions?: Readonly<Record<string, string>>,
    properties?: Readonly<Record<string, string>>,
  ): void {
    this.#out.write(
      `${JSON.stringify(emfDocument(this.#clock.now(), name, value, dimensions, properties))}\n`,
    );
  }
}

/** Metrics that go nowhere (tools and tests that do not look at them). */
export const noMetrics: Metrics = { put() {} };

/** The ApiErrors data point for a failed call, as the retry policy's `onError` hook. */
export function apiErrorReporter(metrics: Metrics): (operation: string, code: string) => void {
  return (operation, code) => metrics.put('ApiErrors', 1, { Code: code }, { Operation: operation });
}
