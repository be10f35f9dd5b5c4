/**
 * Typed errors of the receiver daemon (misuse and environment, never untrusted input: packets are results).
 * Messages say what went wrong, the value involved and what to do.
 */

/** The UDP socket could not be bound (address not local, permission, ...). */
export class UdpBindError extends Error {
  override readonly name: string = 'UdpBindError';
  readonly host: string;
  readonly port: number;
  /** The system error code, e.g. 'EADDRNOTAVAIL', 'EACCES'. */
  readonly code: string | undefined;

  constructor(
    host: string,
    port: number,
    code: string | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.host = host;
    this.port = port;
    this.code = code;
  }
}

/** Another socket already holds the SPA port. */
export class UdpPortInUseError extends UdpBindError {
  override readonly name: string = 'UdpPortInUseError';

  constructor(host: string, port: number, options?: { cause?: unknown }) {
    super(
      host,
      port,
      'EADDRINUSE',
      `UDP port ${port} on ${host} is already in use: stop the other process or choose another port with --spa-port`,
      options,
    );
  }
}
