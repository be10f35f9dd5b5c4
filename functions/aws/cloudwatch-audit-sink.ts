/**
 * AuditSink for AWS: every audit event is one JSON line on stdout (the CloudWatch agent ships it to the audit log
 * group; metric filters and Logs Insights queries read the `type` field); its metric data points go to `metrics`
 * (metrics.ts: Embedded Metric Format, written per flush). Events never carry key material
 * (functions/core/interfaces.ts), so nothing is redacted here.
 *
 * Line shape: `{"kind":"audit", ...event}`; `time` stays epoch milliseconds as in the event, `isoTime` is added.
 * Metrics: packet.accepted → PacketsAccepted; packet.rejected → PacketsRejected{Reason}; grant.opened/extended/
 * revoked → GrantsOpen (gauge: distinct source addresses with an open grant, as this process saw them);
 * grant.revoked → GrantsClosed{Reason} as well ('connected' = closed on connect, 'expired' = the window ended, ...).
 */
import type { AuditEvent, AuditSink } from '../core/interfaces.ts';
import type { LineWriter, Metrics } from './metrics.ts';

export class CloudWatchAuditSink implements AuditSink {
  readonly #out: LineWriter;
  readonly #metrics: Metrics;
  readonly #open = new Set<string>();

  constructor(options: { out: LineWriter; metrics: Metrics }) {
    this.#out = options.out;
    this.#metrics = options.metrics;
  }

  write(event: AuditEvent): void {
    this.#out.write(
      `${JSON.stringify({ kind: 'audit', ...event, isoTime: new Date(event.time).toISOString() })}\n`,
    );
    switch (event.type) {
      case 'packet.accepted':
        this.#metrics.put('PacketsAccepted', 1);
        return;
      case 'packet.rejected':
        this.#metrics.put('PacketsRejected', 1, { Reason: event.reason });
        return;
      case 'grant.opened':
      case 'grant.extended':
        this.#open.add(event.source);
        this.#metrics.put('GrantsOpen', this.#open.size);
        return;
      case 'grant.revoked':
        this.#open.delete(event.source);
        this.#metrics.put('GrantsOpen', this.#open.size);
        this.#metrics.put('GrantsClosed', 1, { Reason: event.reason });
        return;
      case 'grant.failed':
        return;
      default:
        return; // key.* events (key rotation): logged above, no metric
    }
  }
}
