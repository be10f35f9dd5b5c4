/**
 * `HOST[:PORT]` as given to `--server`: `203.0.113.7`, `203.0.113.7:62201`, `spa.example.net:62201`,
 * `[2001:db8::1]:62201` or a bare IPv6 address (`2001:db8::1`, taken as a host without a port).
 *
 * Contract: `parseServerAddress` never throws; it returns the host and the port (the default when absent), or a
 * reason when the port is not an integer 1..65535 or the host is empty. Pure: no name resolution here.
 */
import { PORT_MAX, PORT_MIN } from '../spa/limits.ts';
import { ok, type Result, reject } from '../spa/result.ts';

export interface ServerAddress {
  readonly host: string;
  readonly port: number;
}

export type ServerAddressReason = 'empty-host' | 'bad-port';

function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= PORT_MIN && port <= PORT_MAX ? port : undefined;
}

export function parseServerAddress(
  text: string,
  defaultPort: number,
): Result<ServerAddress, ServerAddressReason> {
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(text);
  let host: string;
  let portText: string | undefined;
  if (bracketed !== null) {
    host = bracketed[1]!;
    portText = bracketed[2];
  } else if (text.indexOf(':') !== text.lastIndexOf(':')) {
    host = text; // a bare IPv6 address: several colons, no brackets, no port
  } else {
    const colon = text.indexOf(':');
    host = colon === -1 ? text : text.slice(0, colon);
    portText = colon === -1 ? undefined : text.slice(colon + 1);
  }
  if (host === '') return reject('empty-host');
  if (portText === undefined) return ok({ host, port: defaultPort });
  const port = parsePort(portText);
  return port === undefined ? reject('bad-port') : ok({ host, port });
}
