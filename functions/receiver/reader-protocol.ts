/**
 * The messages between the owner (the main thread) and its reader worker threads (reader-workers.ts,
 * reader-worker.ts). Types and constants only: no I/O.
 *
 * Contract:
 * - Owner → reader: `ReaderInit` as the worker's `workerData` (the device snapshot with its keys, the bind
 *   address, the screening config), then `devices` after every directory reload, and `close` at shutdown.
 *   Keys travel only in these messages (structured clone inside the process), never in a log line or an event.
 * - Reader → owner: `bound` or `bind-failed` once; then `candidate` (authenticated, fresh and allowed: no key
 *   material, see handle-datagram.ts `Candidate`), `audit` (a rejection's event, already rate-limited by the
 *   reader), `rejected` (a rejection, for the owner's `onOutcome`, under the same limit), `counters` (the
 *   reader's whole counter snapshot, at most every `READER_COUNTER_INTERVAL_MS` and when it closes), `miss` (a
 *   lookup found nothing: the owner's directory may check its source).
 */
import type { AuditEvent, Device, RemoteEndpoint } from '../core/interfaces.ts';
import type { Candidate, ReceiverConfig } from './handle-datagram.ts';
import type { RejectReason } from './reject-reason.ts';

/** How often a reader posts its counters while they change, ms. */
export const READER_COUNTER_INTERVAL_MS = 20;

export interface ReaderInit {
  readonly host: string;
  readonly port: number;
  /** SO_REUSEPORT: true whenever more than one reader shares the port. */
  readonly reusePort: boolean;
  readonly maxInFlight: number;
  readonly devices: readonly Device[];
  /** The owner's clock minus the wall clock, ms: the reader's clock is `Date.now() + clockOffsetMs`. */
  readonly clockOffsetMs: number;
  /** The owner's nonce store start-time guard (handle-datagram.ts clock step). */
  readonly notBefore?: number;
  readonly config: ReceiverConfig;
  /** [BC1-2] failure buckets of this reader. */
  readonly rateLimit: {
    readonly burst?: number;
    readonly ratePerSecond?: number;
    readonly maxSources?: number;
  };
  /** This reader's share of the rejection audit cap; false audits every rejection. */
  readonly rejectAudit: { readonly burst: number; readonly ratePerSecond: number } | false;
  /** Whether the owner wants `rejected` messages (it has an `onOutcome`). */
  readonly reportRejections: boolean;
}

export type OwnerMessage =
  | { readonly type: 'devices'; readonly devices: readonly Device[]; readonly clockOffsetMs: number }
  | { readonly type: 'close' };

export type ReaderMessage =
  | { readonly type: 'bound'; readonly address: string; readonly port: number; readonly family: string }
  | { readonly type: 'bind-failed'; readonly code: string | undefined; readonly message: string }
  | { readonly type: 'candidate'; readonly candidate: Candidate }
  | { readonly type: 'audit'; readonly event: AuditEvent }
  | { readonly type: 'rejected'; readonly reason: RejectReason; readonly remote: RemoteEndpoint }
  | { readonly type: 'counters'; readonly counters: Record<string, number>; readonly reads: number }
  | { readonly type: 'miss' };
