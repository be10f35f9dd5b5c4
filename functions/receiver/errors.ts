/**
 * Typed errors of the receiver daemon (misuse and environment, never untrusted input: packets are results).
 * Messages say what went wrong, the value involved and what to do.
 */
import { ListenError, type ListenFixes } from '../core/listen-error.ts';

/** What to do when the SPA port cannot be bound (core/listen-error.ts `listenFix`). */
export function udpBindFixes(host: string): ListenFixes {
  const check =
    `check that ${host} is an address of this machine and that the port is allowed ` +
    '(ports below 1024 need privileges)';
  return {
    inUse: 'stop the other process or choose another port with --spa-port',
    permission: check,
    notLocal: check,
    other: check,
  };
}

/** The UDP socket could not be bound (address not local, permission, ...). */
export class UdpBindError extends ListenError {
  override readonly name: string = 'UdpBindError';
}

/** Another socket already holds the SPA port. */
export class UdpPortInUseError extends UdpBindError {
  override readonly name: string = 'UdpPortInUseError';

  constructor(host: string, port: number, options?: { cause?: unknown }) {
    super(
      host,
      port,
      'EADDRINUSE',
      `UDP port ${port} on ${host} is already in use: ${udpBindFixes(host).inUse}`,
      options,
    );
  }
}
