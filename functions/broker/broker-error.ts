/** Typed errors of the embedded broker (configuration and environment; MQTT clients never see these). */
import { ListenError, listenFix } from '../core/listen-error.ts';

/** The broker's TLS listener could not bind its address. */
export class BrokerListenError extends ListenError {
  override readonly name: string = 'BrokerListenError';

  constructor(host: string, port: number, code: string | undefined, options?: { cause?: unknown }) {
    const fix = listenFix(code, {
      inUse: 'stop the other process or choose another broker port',
      permission: 'run as root for ports below 1024, or choose a port of 1024 or more',
      notLocal: 'choose an address of this host (e.g. 127.0.0.1)',
      other: 'check the broker host and port',
    });
    super(
      host,
      port,
      code,
      `the embedded broker cannot listen on ${host} port ${port} (${code ?? 'unknown error'}): ${fix}`,
      options,
    );
  }
}

/** The TLS material given to the broker is missing or unusable. */
export class BrokerTlsError extends Error {
  override readonly name: string = 'BrokerTlsError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
