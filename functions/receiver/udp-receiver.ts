/**
 * The receiver daemon's socket: binds one UDP socket (or `readers` of them on one port) and hands every datagram
 * to the pipeline of handle-datagram.ts (`screenDatagram`, synchronous, then `continueDatagram` for what passes:
 * `handleDatagram` in two parts, so junk and rate-limited sources cost no promise and no in-flight slot).
 *
 * Contract:
 * - Binds udp6 when `host` is an IPv6 literal, else udp4. A busy port rejects with `UdpPortInUseError`
 *   (any other bind failure: `UdpBindError`); nothing is left bound after a failure.
 * - `readers: N` (default 1, an integer 1..MAX_READERS) binds N sockets with SO_REUSEPORT on the one port (Linux;
 *   the kernel spreads datagrams over them by source). All N live in this process and share the one `deps`: the
 *   nonce record and the grant are decided on one event loop, so a replay is refused exactly once across
 *   readers (docs/scaling.md, "Readers"). With N = 1 the socket has no SO_REUSEPORT, exactly as before. This
 *   uses one core; reader-workers.ts runs the screening and authentication on N worker threads instead.
 * - Never sends a byte on the socket, whatever arrives; every datagram is handled, a handler failure is
 *   impossible by construction (`handleDatagram` never throws) and socket errors after bind are logged only.
 * - At most `maxInFlight` datagrams are processed concurrently; beyond that they are dropped and counted as
 *   `dropped.overload` (memory stays bounded under a flood).
 * - `close()` stops receiving and waits for datagrams in flight. It does not close the deps: their owner calls
 *   `deps.grants.close()` (revokes every grant) and `deps.nonces.close?.()` afterwards. Idempotent.
 * Thin on purpose: bind and wire, nothing else.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { RemoteEndpoint } from '../core/interfaces.ts';
import { listenErrorCode, listenFix, portInUse } from '../core/listen-error.ts';
import { counterName } from './counters.ts';
import { UdpBindError, UdpPortInUseError, udpBindFixes } from './errors.ts';
import { continueDatagram, type Outcome, type ReceiverDeps, screenDatagram } from './handle-datagram.ts';

export interface ReceiverLogger {
  info(message: string): void;
  warn(message: string): void;
}

export interface StartReceiverOptions {
  readonly host: string;
  /** 0 = any free port (read it back from `RunningReceiver.address`). */
  readonly port: number;
  readonly deps: ReceiverDeps;
  readonly logger?: ReceiverLogger;
  /** @default 4096 */
  readonly maxInFlight?: number;
  /**
   * Sockets bound on the one port with SO_REUSEPORT (Linux), all in this process, sharing `deps`.
   * @default 1 (one socket, no SO_REUSEPORT)
   */
  readonly readers?: number;
  /** Called after each datagram is handled (e.g. for a console line in `blackcloud up`). Must not throw. */
  readonly onOutcome?: (outcome: Outcome, remote: RemoteEndpoint) => void;
}

export interface RunningReceiver {
  readonly address: { readonly address: string; readonly port: number; readonly family: string };
  counters(): Record<string, number>;
  /** Datagrams read by each reader socket since start (one entry per reader, in bind order). */
  datagramsPerReader(): number[];
  close(): Promise<void>;
}

/** More sockets than this on one port buys nothing on one event loop; a larger value is a typo. */
export const MAX_READERS = 64;

const silentLogger: ReceiverLogger = { info: () => undefined, warn: () => undefined };

export function bindError(error: unknown, host: string, port: number): UdpBindError {
  const code = listenErrorCode(error);
  if (portInUse(code)) return new UdpPortInUseError(host, port, { cause: error });
  return new UdpBindError(
    host,
    port,
    code,
    `cannot bind UDP port ${port} on ${host} (${code ?? String(error)}): ${listenFix(code, udpBindFixes(host))}`,
    { cause: error },
  );
}

function bind(socket: Socket, host: string, port: number): Promise<void> {
  return new Promise((resolve, rejectBind) => {
    const onError = (error: Error): void => {
      socket.close();
      rejectBind(bindError(error, host, port));
    };
    socket.once('error', onError);
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

export function remoteOf(info: RemoteInfo): RemoteEndpoint {
  return { address: info.address, family: info.family === 'IPv6' ? 6 : 4, port: info.port };
}

export function readerCount(readers: number | undefined): number {
  const count = readers ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > MAX_READERS) {
    throw new RangeError(
      `readers must be an integer from 1 to ${MAX_READERS}, got ${String(readers)}: pass e.g. 2`,
    );
  }
  return count;
}

/**
 * Binds `count` sockets on host:port; with more than one, each has SO_REUSEPORT and the first fixes the port (so
 * port 0 works). On any failure the sockets already bound are closed before the rejection.
 */
async function bindReaders(host: string, port: number, count: number): Promise<Socket[]> {
  const type = isIPv6(host) ? 'udp6' : 'udp4';
  const sockets: Socket[] = [];
  try {
    let boundPort = port;
    for (let i = 0; i < count; i++) {
      const socket = createSocket({ type, reuseAddr: false, reusePort: count > 1 });
      await bind(socket, host, boundPort);
      sockets.push(socket);
      boundPort = socket.address().port;
    }
    return sockets;
  } catch (error) {
    await Promise.all(sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))));
    throw error;
  }
}

export async function startReceiver(options: StartReceiverOptions): Promise<RunningReceiver> {
  const { host, port, deps } = options;
  const logger = options.logger ?? silentLogger;
  const maxInFlight = options.maxInFlight ?? 4096;
  const sockets = await bindReaders(host, port, readerCount(options.readers));
  const reads = sockets.map(() => 0);

  const inFlight = new Set<Promise<void>>();
  const onMessage = (message: Buffer, info: RemoteInfo): void => {
    if (inFlight.size >= maxInFlight) {
      deps.counters.increment(counterName.droppedOverload);
      return;
    }
    const remote = remoteOf(info);
    const bytes = new Uint8Array(message.buffer, message.byteOffset, message.byteLength);
    // Junk and rate-limited sources are rejected synchronously: no promise, no in-flight slot.
    const screened = screenDatagram(bytes, remote, deps);
    if (!screened.pass) {
      try {
        options.onOutcome?.(screened.outcome, remote);
      } catch {
        // onOutcome must not throw; if it does, the datagram is still dropped and the receiver lives on.
      }
      return;
    }
    const handled = continueDatagram(bytes, screened, deps)
      .then((outcome) => options.onOutcome?.(outcome, remote))
      .catch(() => undefined)
      .finally(() => inFlight.delete(handled));
    inFlight.add(handled);
  };
  sockets.forEach((socket, i) => {
    socket.on('error', (error) =>
      logger.warn(`SPA socket error (ignored, still listening): ${error.message}`),
    );
    socket.on('message', (message, info) => {
      reads[i]!++;
      onMessage(message, info);
    });
  });

  const bound = sockets[0]!.address();
  const address = Object.freeze({ address: bound.address, port: bound.port, family: bound.family });
  const readersNote = sockets.length > 1 ? ` (${sockets.length} readers, SO_REUSEPORT)` : '';
  logger.info(`SPA receiver listening on UDP ${address.address}:${address.port}${readersNote}`);

  let closing: Promise<void> | undefined;
  return {
    address,
    counters: () => deps.counters.snapshot(),
    datagramsPerReader: () => [...reads],
    close() {
      closing ??= Promise.all(
        sockets.map((socket) => new Promise<void>((resolve) => socket.close(() => resolve()))),
      ).then(async () => {
        await Promise.all([...inFlight]);
        logger.info(`SPA receiver on UDP ${address.address}:${address.port} closed`);
      });
      return closing;
    },
  };
}
