/** Typed errors of the embedded broker (configuration and environment; MQTT clients never see these). */

/** The broker's TLS listener could not bind its address. */
export class BrokerListenError extends Error {
  override readonly name: string = 'BrokerListenError';
  readonly host: string;
  readonly port: number;
  /** The system error code, e.g. 'EADDRINUSE', 'EADDRNOTAVAIL', 'EACCES'. */
  readonly code: string | undefined;

  constructor(host: string, port: number, code: string | undefined, options?: { cause?: unknown }) {
    const fix =
      code === 'EADDRINUSE'
        ? 'stop the other process or choose another broker port'
        : code === 'EACCES'
          ? 'run as root for ports below 1024, or choose a port of 1024 or more'
          : code === 'EADDRNOTAVAIL'
            ? 'choose an address of this host (e.g. 127.0.0.1)'
            : 'check the broker host and port';
    super(
      `the embedded broker cannot listen on ${host} port ${port} (${code ?? 'unknown error'}): ${fix}`,
      options,
    );
    this.host = host;
    this.port = port;
    this.code = code;
  }
}

/** The TLS material given to the broker is missing or unusable. */
export class BrokerTlsError extends Error {
  override readonly name: string = 'BrokerTlsError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
