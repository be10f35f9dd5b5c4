/**
 * The receiver daemon's socket: binds one UDP socket and hands every datagram to the pipeline of
 * handle-datagram.ts (`screenDatagram`, synchronous, then `continueDatagram` for what passes: `handleDatagram`
 * in two parts, so junk and rate-limited sources cost no promise and no in-flight slot).
 *
 * Contract:
 * - Binds udp6 when `host` is an IPv6 literal, else udp4. A busy port rejects with `UdpPortInUseError`
 *   (any other bind failure: `UdpBindError`); nothing is left bound after a failure.
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
  /** Called after each datagram is handled (e.g. for a console line in `blackcloud up`). Must not throw. */
  readonly onOutcome?: (outcome: Outcome, remote: RemoteEndpoint) => void;
}

export interface RunningReceiver {
  readonly address: { readonly address: string; readonly port: number; readonly family: string };
  counters(): Record<string, number>;
  close(): Promise<void>;
}

const silentLogger: ReceiverLogger = { info: () => undefined, warn: () => undefined };

function bindError(error: unknown, host: string, port: number): UdpBindError {
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

function remoteOf(info: RemoteInfo): RemoteEndpoint {
  return { address: info.address, family: info.family === 'IPv6' ? 6 : 4, port: info.port };
}

export async function startReceiver(options: StartReceiverOptions): Promise<RunningReceiver> {
  const { host, port, deps } = options;
  const logger = options.logger ?? silentLogger;
  const maxInFlight = options.maxInFlight ?? 4096;
  const socket = createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4', reuseAddr: false });
  await bind(socket, host, port);
  socket.on('error', (error) => logger.warn(`SPA socket error (ignored, still listening): ${error.message}`));

  const inFlight = new Set<Promise<void>>();
  socket.on('message', (message, info) => {
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
  });

  const bound = socket.address();
  const address = Object.freeze({ address: bound.address, port: bound.port, family: bound.family });
  logger.info(`SPA receiver listening on UDP ${address.address}:${address.port}`);

  let closing: Promise<void> | undefined;
  return {
    address,
    counters: () => deps.counters.snapshot(),
    close() {
      closing ??= new Promise<void>((resolve) => socket.close(() => resolve())).then(async () => {
        await Promise.all([...inFlight]);
        logger.info(`SPA receiver on UDP ${address.address}:${address.port} closed`);
      });
      return closing;
    },
  };
}
