/**
 * The receiver on N reader worker threads (docs/scaling.md, "Readers"): each worker binds its own SO_REUSEPORT
 * socket on the one port (the kernel spreads datagrams over them by flow) and does the CPU work of every
 * datagram in parallel (reader-worker.ts: shape checks, AEAD open / HMAC, parse, clock, policy); the main thread
 * is the one owner of what needs one place: it receives the authenticated candidates and runs
 * handle-datagram.ts `decideCandidate` (nonce record, per-device limit, grant) on its own event loop, so a replay
 * is refused exactly once across readers, as with one socket.
 *
 * Contract:
 * - `readers` is an integer 1..MAX_READERS (udp-receiver.ts); the first worker fixes the port (port 0 works), the
 *   others join it. A bind failure rejects with `UdpPortInUseError` / `UdpBindError` and leaves no worker.
 * - Keys reach the workers as a snapshot of `devices()` (structured clone inside the process): on start, and
 *   whenever the owner calls `devicesChanged()` (after each directory reload). They are never logged. A worker's
 *   lookup that finds nothing asks the owner's directory to check its source (at most once a second per worker),
 *   so a watched devices file is re-read as with one socket.
 * - `counters()` sums the owner's counters (decisions: accepted, replay, ...) and every worker's (screening and
 *   authentication: received, rejections, dropped.overload), including the last counts of workers that died.
 *   Worker counts lag by at most READER_COUNTER_INTERVAL_MS (reader-protocol.ts).
 * - A worker that exits while the receiver runs is replaced on the same port and counted (`readers.restarted`),
 *   at once, or a second after it bound when it died sooner (no tight crash loop); a replacement that cannot
 *   bind is retried every second. The receiver never stops because one reader died.
 * - The [BC1-2] failure buckets live in each worker (per source, per reader: a source whose flows the kernel
 *   spreads over k readers gets k buckets); the rejection audit cap is split evenly between workers.
 * - At most `maxInFlight` candidates are decided concurrently by the owner; beyond that `dropped.overload`.
 * - Never sends a byte. `close()` stops every worker (each finishes what it had in flight and posts its final
 *   counters), then waits for the owner's decisions in flight; it does not close `deps` (as udp-receiver.ts).
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { reject } from '../../spa/result.ts';
import type { Device, RemoteEndpoint } from '../core/interfaces.ts';
import { type Counters, counterName, createCounters } from './counters.ts';
import { type Candidate, decideCandidate, type Outcome, type ReceiverDeps } from './handle-datagram.ts';
import type { OwnerMessage, ReaderInit, ReaderMessage } from './reader-protocol.ts';
import { bindError, type ReceiverLogger, type RunningReceiver, readerCount } from './udp-receiver.ts';

export interface StartReaderWorkersOptions {
  readonly host: string;
  /** 0 = any free port. */
  readonly port: number;
  readonly readers: number;
  /** The owner's deps: its directory, nonce store, grants, audit, counters and clock. */
  readonly deps: ReceiverDeps;
  /** The devices (with keys) the workers authenticate against: read on start and at each `devicesChanged()`. */
  readonly devices: () => readonly Device[];
  readonly logger?: ReceiverLogger;
  /** Per worker, and for the owner's decisions. @default 4096 */
  readonly maxInFlight?: number;
  /** [BC1-2] failure buckets (each worker has its own). @default rate-limiter.ts RATE_LIMIT_DEFAULTS */
  readonly rateLimit?: ReaderInit['rateLimit'];
  /** The rejection audit cap, split between workers; false audits every rejection. @default 200 burst, 50/s */
  readonly rejectAudit?: ReaderInit['rejectAudit'];
  /** Every decision, and rejections under the audit cap's pace. Must not throw. */
  readonly onOutcome?: (outcome: Outcome, remote: RemoteEndpoint) => void;
}

export interface RunningReaderWorkers extends RunningReceiver {
  /** Re-sends `devices()` to every worker: call it after each directory reload. */
  devicesChanged(): void;
  /** The live worker threads, one per reader (supervision tests end one to see it replaced). */
  workers(): readonly Worker[];
}

/** The default rejection audit cap (receiver-deps.ts's default), shared by all workers. */
const DEFAULT_REJECT_AUDIT = Object.freeze({ burst: 200, ratePerSecond: 50 });
const RESTART_RETRY_MS = 1000;
const CLOSE_TIMEOUT_MS = 5000;

/**
 * The worker entry: beside this module from source (`.ts`); in the CLI bundle `dist/reader-worker.js`
 * (packaging/packages.ts), beside this code or one folder up when it sits in `dist/chunks/`.
 */
function readerWorkerUrl(): URL {
  if (import.meta.url.endsWith('.ts')) return new URL('./reader-worker.ts', import.meta.url);
  const beside = new URL('./reader-worker.js', import.meta.url);
  return existsSync(fileURLToPath(beside)) ? beside : new URL('../reader-worker.js', import.meta.url);
}

interface Slot {
  /** Undefined only until its first worker is created. */
  worker: Worker | undefined;
  /** When its worker bound its socket (a worker that dies sooner than RESTART_RETRY_MS is replaced after it). */
  boundAt: number;
  counters: Record<string, number>;
  reads: number;
  /** Counts of this slot's earlier (dead) workers. */
  readonly base: Counters;
  baseReads: number;
}

type Bound = { readonly address: string; readonly port: number; readonly family: string };

function shareOf(rejectAudit: ReaderInit['rejectAudit'], readers: number): ReaderInit['rejectAudit'] {
  if (rejectAudit === false) return false;
  return {
    burst: Math.max(1, Math.floor(rejectAudit.burst / readers)),
    ratePerSecond: rejectAudit.ratePerSecond / readers,
  };
}

export async function startReaderWorkers(options: StartReaderWorkersOptions): Promise<RunningReaderWorkers> {
  const { host, deps } = options;
  const readers = readerCount(options.readers);
  const logger = options.logger ?? { info: () => undefined, warn: () => undefined };
  const maxInFlight = options.maxInFlight ?? 4096;
  const clockOffset = (): number => deps.clock.now() - Date.now();
  const initFor = (port: number): ReaderInit => ({
    host,
    port,
    reusePort: readers > 1,
    maxInFlight,
    devices: options.devices(),
    clockOffsetMs: clockOffset(),
    ...(deps.nonces.notBefore === undefined ? {} : { notBefore: deps.nonces.notBefore }),
    config: deps.config,
    rateLimit: options.rateLimit ?? {},
    rejectAudit: shareOf(options.rejectAudit ?? DEFAULT_REJECT_AUDIT, readers),
    reportRejections: options.onOutcome !== undefined,
  });

  let closing = false;
  const slots: Slot[] = [];
  const inFlight = new Set<Promise<void>>();

  const safeOutcome = (outcome: Outcome, remote: RemoteEndpoint): void => {
    try {
      options.onOutcome?.(outcome, remote);
    } catch {
      // onOutcome must not throw; the receiver lives on.
    }
  };
  const decide = (candidate: Candidate): void => {
    if (inFlight.size >= maxInFlight) {
      deps.counters.increment(counterName.droppedOverload);
      return;
    }
    const decided = decideCandidate(candidate, deps)
      .then((outcome) => safeOutcome(outcome, candidate.source))
      .finally(() => inFlight.delete(decided));
    inFlight.add(decided);
  };
  const anySource: RemoteEndpoint = { address: '0.0.0.0', family: 4, port: 0 };
  const onMessage = (slot: Slot, message: ReaderMessage): void => {
    switch (message.type) {
      case 'candidate':
        decide(message.candidate);
        return;
      case 'audit':
        try {
          deps.audit.write(message.event);
        } catch {
          // The audit sink failing must not turn into a crash.
        }
        return;
      case 'rejected':
        safeOutcome(reject(message.reason), message.remote);
        return;
      case 'counters':
        slot.counters = message.counters;
        slot.reads = message.reads;
        return;
      case 'miss':
        // The owner's directory checks its source on a lookup (watched-directory.ts); a reload then calls
        // devicesChanged(). The answer itself is not needed.
        void deps.directory.fwknopCandidates(anySource).catch(() => undefined);
        return;
      default:
        return;
    }
  };

  /** Starts one worker on `port`; resolves with its bound address or rejects with the bind error. */
  const spawn = (slot: Slot, port: number): Promise<{ worker: Worker; bound: Bound }> =>
    new Promise((resolve, rejectSpawn) => {
      const worker = new Worker(readerWorkerUrl(), { workerData: initFor(port) });
      slot.worker = worker;
      let started = false;
      worker.on('message', (message: ReaderMessage) => {
        if (!started) {
          if (message.type === 'bound') {
            started = true;
            slot.boundAt = Date.now();
            resolve({ worker, bound: message });
          } else if (message.type === 'bind-failed') {
            started = true;
            const cause = Object.assign(new Error(message.message), { code: message.code });
            rejectSpawn(bindError(cause, host, port));
          }
          return;
        }
        onMessage(slot, message);
      });
      let failure: Error | undefined;
      worker.on('error', (error) => {
        failure = error;
        if (started) logger.warn(`SPA reader thread failed (${error.message}): it is replaced`);
      });
      worker.once('exit', (code) => {
        if (!started) {
          started = true;
          const why = failure === undefined ? '' : `: ${failure.message}`;
          rejectSpawn(
            new Error(`SPA reader thread exited with code ${code} before it bound its socket${why}`, {
              cause: failure,
            }),
          );
        }
      });
    });

  const supervise = (slot: Slot, port: number): void => {
    slot.worker?.once('exit', () => {
      if (closing) return;
      // Keep what the dead worker counted, then replace it on the same port.
      for (const [name, value] of Object.entries(slot.counters)) slot.base.increment(name, value);
      slot.baseReads += slot.reads;
      slot.counters = {};
      slot.reads = 0;
      deps.counters.increment(counterName.readersRestarted);
      logger.warn(`SPA reader thread ${slots.indexOf(slot) + 1} exited: starting a replacement`);
      const restart = (): void => {
        if (closing) return;
        spawn(slot, port).then(
          ({ worker }) => {
            if (closing) {
              worker.postMessage({ type: 'close' } satisfies OwnerMessage);
              return;
            }
            supervise(slot, port);
          },
          (error: Error) => {
            logger.warn(`SPA reader thread not replaced (${error.message}): retrying in 1 s`);
            setTimeout(restart, RESTART_RETRY_MS).unref();
          },
        );
      };
      // A worker that died at once is not restarted in a tight loop.
      const lived = Date.now() - slot.boundAt;
      if (lived >= RESTART_RETRY_MS) restart();
      else setTimeout(restart, RESTART_RETRY_MS - lived).unref();
    });
  };

  for (let i = 0; i < readers; i++) {
    slots.push({
      worker: undefined,
      boundAt: 0,
      counters: {},
      reads: 0,
      base: createCounters(),
      baseReads: 0,
    });
  }
  let bound: Bound;
  try {
    bound = (await spawn(slots[0]!, options.port)).bound;
    const rest = await Promise.allSettled(slots.slice(1).map((slot) => spawn(slot, bound.port)));
    const failed = rest.find((result) => result.status === 'rejected');
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
  } catch (error) {
    closing = true;
    await Promise.all(slots.map((slot) => slot.worker?.terminate()));
    throw error;
  }
  for (const slot of slots) supervise(slot, bound.port);
  const address = Object.freeze({ address: bound.address, port: bound.port, family: bound.family });
  logger.info(
    `SPA receiver listening on UDP ${address.address}:${address.port} (${readers} reader thread(s), SO_REUSEPORT)`,
  );

  const stop = (worker: Worker): Promise<void> =>
    new Promise((resolve) => {
      if (worker.threadId === -1) return resolve(); // already exited (a replacement that could not bind)
      const timer = setTimeout(() => void worker.terminate(), CLOSE_TIMEOUT_MS);
      worker.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      worker.postMessage({ type: 'close' } satisfies OwnerMessage);
    });

  let closed: Promise<void> | undefined;
  return {
    address,
    counters() {
      const sum = new Map<string, number>();
      const add = (counts: Record<string, number>): void => {
        for (const [name, value] of Object.entries(counts)) sum.set(name, (sum.get(name) ?? 0) + value);
      };
      add(deps.counters.snapshot());
      for (const slot of slots) {
        add(slot.base.snapshot());
        add(slot.counters);
      }
      const out: Record<string, number> = {};
      for (const name of [...sum.keys()].sort()) out[name] = sum.get(name)!;
      return out;
    },
    datagramsPerReader: () => slots.map((slot) => slot.baseReads + slot.reads),
    devicesChanged() {
      const message: OwnerMessage = {
        type: 'devices',
        devices: options.devices(),
        clockOffsetMs: clockOffset(),
      };
      for (const slot of slots) slot.worker?.postMessage(message);
    },
    workers: () => slots.flatMap((slot) => (slot.worker === undefined ? [] : [slot.worker])),
    close() {
      closing = true;
      closed ??= Promise.all(
        slots.map((slot) => (slot.worker === undefined ? undefined : stop(slot.worker))),
      ).then(async () => {
        await Promise.all([...inFlight]);
        logger.info(`SPA receiver on UDP ${address.address}:${address.port} closed`);
      });
      return closed;
    },
  };
}
