/**
 * A reader worker thread's entry (started by reader-workers.ts, never imported): binds its own UDP socket on the
 * owner's port (SO_REUSEPORT when there are several readers) and runs the CPU half of the pipeline on it
 * (handle-datagram.ts `screenDatagram` then `authenticateScreened`: shape checks, key lookup, AEAD open / HMAC,
 * parse, clock, policy), posting each authenticated candidate to the owner, which alone records the nonce and
 * opens the grant (reader-protocol.ts).
 *
 * Contract:
 * - Keys come only from `workerData` and `devices` messages (the owner's snapshot) and are never posted back,
 *   logged or put in an event: a candidate names the device by id.
 * - Every datagram is counted (`received`, and this reader's reads); junk is rejected here, counted and (under
 *   this reader's share of the audit cap) audited through the owner. Never sends a byte on the socket; a failure
 *   in the pipeline is impossible by construction (the halves never throw) and a socket error is ignored.
 * - At most `maxInFlight` datagrams are authenticated concurrently; beyond that `dropped.overload`.
 * - On `close` it stops reading, waits for what is in flight, posts its final counters and lets the thread end.
 */
import { createSocket, type RemoteInfo } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import type { AuditEvent, Clock, RemoteEndpoint } from '../core/interfaces.ts';
import { counterName, createCounters } from './counters.ts';
import { authenticateScreened, type Outcome, type ScreeningDeps, screenDatagram } from './handle-datagram.ts';
import { TokenBucketRateLimiter } from './rate-limiter.ts';
import {
  type OwnerMessage,
  READER_COUNTER_INTERVAL_MS,
  type ReaderInit,
  type ReaderMessage,
} from './reader-protocol.ts';
import { SnapshotDeviceDirectory } from './snapshot-directory.ts';
import { remoteOf } from './udp-receiver.ts';

/** At most one `miss` a second: the owner's directory rate-limits its own checks too. */
const MISS_INTERVAL_MS = 1000;

const owner = parentPort;
if (owner === null)
  throw new Error('reader-worker.ts runs as a worker thread: start it with startReaderWorkers');
const init = workerData as ReaderInit;
const post = (message: ReaderMessage): void => owner.postMessage(message);

let clockOffsetMs = init.clockOffsetMs;
const clock: Clock = { now: () => Date.now() + clockOffsetMs };
const counters = createCounters();
let lastMiss = Number.NEGATIVE_INFINITY;
const directory = new SnapshotDeviceDirectory(init.devices, () => {
  const now = Date.now();
  if (now - lastMiss < MISS_INTERVAL_MS) return;
  lastMiss = now;
  post({ type: 'miss' });
});
const deps: ScreeningDeps = {
  directory,
  clock,
  counters,
  config: init.config,
  nonces: init.notBefore === undefined ? {} : { notBefore: init.notBefore },
  rateLimiter: new TokenBucketRateLimiter({ clock, ...init.rateLimit }),
  audit: { write: (event: AuditEvent) => post({ type: 'audit', event }) },
  ...(init.rejectAudit === false
    ? {}
    : { rejectAuditLimiter: new TokenBucketRateLimiter({ clock, ...init.rejectAudit, maxSources: 1 }) }),
};
/** The owner's onOutcome hears of rejections at most at the audit cap's pace (a flood is counted, not listed). */
const rejectionReports =
  init.rejectAudit === false
    ? undefined
    : new TokenBucketRateLimiter({ clock, ...init.rejectAudit, maxSources: 1 });

function report(outcome: Outcome, remote: RemoteEndpoint): void {
  if (!init.reportRejections || outcome.ok) return;
  if (rejectionReports !== undefined && !rejectionReports.take('rejected')) return;
  post({ type: 'rejected', reason: outcome.reason, remote });
}

let reads = 0;
let inFlight = 0;
const pending = new Set<Promise<void>>();
const socket = createSocket({
  type: isIPv6(init.host) ? 'udp6' : 'udp4',
  reuseAddr: false,
  reusePort: init.reusePort,
});

socket.on('message', (message: Buffer, info: RemoteInfo) => {
  reads++;
  if (inFlight >= init.maxInFlight) {
    counters.increment(counterName.droppedOverload);
    return;
  }
  const remote = remoteOf(info);
  const bytes = new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
  const screened = screenDatagram(bytes, remote, deps);
  if (!screened.pass) {
    report(screened.outcome, remote);
    return;
  }
  inFlight++;
  const handled = authenticateScreened(bytes, screened, deps)
    .then((authenticated) => {
      if (authenticated.ok) post({ type: 'candidate', candidate: authenticated.candidate });
      else report(authenticated.outcome, remote);
    })
    .catch(() => undefined)
    .finally(() => {
      inFlight--;
      pending.delete(handled);
    });
  pending.add(handled);
});

let posted = -1;
const postCounters = (): void => {
  posted = reads;
  post({ type: 'counters', counters: counters.snapshot(), reads });
};
// Every counter moves only when a datagram is read, so the read count says whether there is news to post.
const ticker = setInterval(() => {
  if (reads !== posted) postCounters();
}, READER_COUNTER_INTERVAL_MS);

owner.on('message', (message: OwnerMessage) => {
  if (message.type === 'devices') {
    directory.replace(message.devices);
    clockOffsetMs = message.clockOffsetMs;
    return;
  }
  clearInterval(ticker);
  socket.close(() => {
    void Promise.all([...pending]).then(() => {
      postCounters();
      owner.close();
    });
  });
});

socket.once('error', (error: NodeJS.ErrnoException) => {
  clearInterval(ticker);
  post({ type: 'bind-failed', code: error.code, message: error.message });
  owner.close();
});
socket.bind({ address: init.host, port: init.port, exclusive: true }, () => {
  socket.removeAllListeners('error');
  socket.on('error', () => undefined); // after bind: ignored, still listening (udp-receiver.ts)
  const bound = socket.address();
  post({ type: 'bound', address: bound.address, port: bound.port, family: bound.family });
});
