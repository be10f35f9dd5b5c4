/**
 * In-process counters for the receiver: monotonically increasing integers by name, read as a plain snapshot
 * (for `RunningReceiver.counters()`, a metrics exporter or a test). Names used by the pipeline:
 * `received`, `accepted`, `accepted.<format>`, `rejected`, `rejected.<reason>`, `audit.suppressed`,
 * `dropped.overload` (main.ts), `readers.restarted` (reader-workers.ts). Never throws; not persisted.
 */
import type { PacketFormat } from '../core/interfaces.ts';
import type { RejectReason } from './reject-reason.ts';

export interface Counters {
  increment(name: string, by?: number): void;
  /** A copy: later increments do not change it. Keys sorted by name. */
  snapshot(): Record<string, number>;
}

export const counterName = {
  received: 'received',
  accepted: 'accepted',
  acceptedFormat: (format: PacketFormat): string => `accepted.${format}`,
  rejected: 'rejected',
  rejectedReason: (reason: RejectReason): string => `rejected.${reason}`,
  auditSuppressed: 'audit.suppressed',
  droppedOverload: 'dropped.overload',
  readersRestarted: 'readers.restarted',
} as const;

export function createCounters(): Counters {
  const values = new Map<string, number>();
  return {
    increment(name, by = 1) {
      values.set(name, (values.get(name) ?? 0) + by);
    },
    snapshot() {
      const out: Record<string, number> = {};
      for (const name of [...values.keys()].sort()) out[name] = values.get(name)!;
      return out;
    },
  };
}
