/**
 * Mosquitto 2.0.11's connection log as session events (docs/scaling.md, "The signal on AWS"; docs/fleet.md, "Plain
 * devices on AWS"): the broker, with `log_dest topic` (mosquitto-config.ts), publishes each notice line on
 * `MOSQUITTO_NOTICE_LOG_TOPIC` as `<unix seconds>: <message>`; this module turns those messages into events. Pure: no
 * I/O, no clock.
 *
 * Contract:
 * - `parseSessionLogLine(text)` reads one message (one MQTT payload: never split on newlines, so a client id holding
 *   a newline cannot forge a second line): `New client connected from <address>:<port> as <client id> (p<n>, c<n>,
 *   k<n>, u'<username>').` is `{ kind: 'connected', clientId, username, address, port }`; a line without `u'…'` (no
 *   username) is ignored. `Client <client id> <ending>` for every ending 2.0.11 writes when a session ends
 *   (`disconnected.`, `closed its connection.`, `has exceeded timeout, disconnecting.`, `been disconnected by
 *   administrative action.`, `already connected, closing old connection.`, `disconnected: <reason>.`, ...) is
 *   `{ kind: 'disconnected', clientId }`. Anything else is undefined. The leading timestamp is optional.
 * - Hostile by default: the client id is chosen by the client and may contain anything, so lines are matched anchored
 *   at both ends; the address is the first token (no spaces) and the username is the very last field, in the
 *   device-id alphabet (core/topics.ts `isValidIdentity`; Mosquitto only logs it after the client authenticated).
 *   A client id made to look like the tail of a line cannot move the username: the last `(p…, u'…').` wins.
 * - `SessionLog` keeps the client id -> session map (username, address, port) so a `disconnected` event carries who
 *   it was: `read(text)` returns the event with `username`, `address` and `port` on a disconnect of a known client id
 *   (and forgets it). It holds at most `maxSessions` client ids (default `DEFAULT_MAX_LOGGED_SESSIONS`); the oldest is
 *   forgotten first. Never throws on any input (non-strings included).
 */
import { isValidIdentity } from '../core/topics.ts';

/** The topic Mosquitto publishes its notice-level log lines on (`log_dest topic`, `log_type notice`). */
export const MOSQUITTO_NOTICE_LOG_TOPIC = '$SYS/broker/log/N';
/** Every log topic (one level per log type), what the controller's role may read (dynsec-policy.ts). */
export const MOSQUITTO_LOG_TOPICS = '$SYS/broker/log/#';
/** Client ids remembered by one `SessionLog`. */
export const DEFAULT_MAX_LOGGED_SESSIONS = 100_000;

export interface SessionConnected {
  readonly kind: 'connected';
  readonly clientId: string;
  /** The authenticated username (with `use_identity_as_username`, the certificate CN). */
  readonly username: string;
  /** The TCP peer address as Mosquitto prints it (IPv4 dotted, IPv6 without brackets). */
  readonly address: string;
  readonly port: number;
}

export interface SessionDisconnected {
  readonly kind: 'disconnected';
  readonly clientId: string;
  /** Known when the connect of this client id was read by the same `SessionLog`. */
  readonly username?: string;
  readonly address?: string;
  readonly port?: number;
}

export type SessionEvent = SessionConnected | SessionDisconnected;

const TIMESTAMP = /^\d+: /;
const CONNECTED = /^New client connected from (\S+):(\d{1,5}) as (.*) \(p\d+, c\d+, k\d+, u'([^'\s]+)'\)\.$/s;
const DISCONNECT_ENDINGS: readonly RegExp[] = [
  / disconnected\.$/s,
  / closed its connection\.$/s,
  / has exceeded timeout, disconnecting\.$/s,
  / been disconnected by administrative action\.$/s,
  / already connected, closing old connection\.$/s,
  / disconnected, not authorised\.$/s,
  / disconnected due to [a-zA-Z ,]+\.$/s,
  / disconnected: [^:]*\.$/s,
];

export function parseSessionLogLine(text: unknown): SessionEvent | undefined {
  if (typeof text !== 'string' || text.length > 65_536) return undefined;
  const line = text.replace(TIMESTAMP, '');
  const connected = CONNECTED.exec(line);
  if (connected !== null) {
    const [, address, port, clientId, username] = connected;
    const portNumber = Number(port);
    if (
      address === undefined ||
      clientId === undefined ||
      clientId.length === 0 ||
      !isValidIdentity(username) ||
      portNumber > 65_535
    )
      return undefined;
    return { kind: 'connected', clientId, username, address, port: portNumber };
  }
  if (!line.startsWith('Client ')) return undefined;
  for (const ending of DISCONNECT_ENDINGS) {
    const match = ending.exec(line);
    if (match === null) continue;
    const clientId = line.slice('Client '.length, match.index);
    return clientId.length === 0 ? undefined : { kind: 'disconnected', clientId };
  }
  return undefined;
}

export class SessionLog {
  readonly #sessions = new Map<string, SessionConnected>();
  readonly #max: number;

  constructor(maxSessions: number = DEFAULT_MAX_LOGGED_SESSIONS) {
    this.#max = Math.max(1, Math.floor(maxSessions));
  }

  read(text: unknown): SessionEvent | undefined {
    let event: SessionEvent | undefined;
    try {
      event = parseSessionLogLine(text);
    } catch {
      return undefined;
    }
    if (event === undefined) return undefined;
    if (event.kind === 'connected') {
      this.#sessions.delete(event.clientId); // re-inserted last: the newest
      this.#sessions.set(event.clientId, event);
      while (this.#sessions.size > this.#max) {
        const oldest = this.#sessions.keys().next().value;
        if (oldest === undefined) break;
        this.#sessions.delete(oldest);
      }
      return event;
    }
    const known = this.#sessions.get(event.clientId);
    if (known === undefined) return event;
    this.#sessions.delete(event.clientId);
    return { ...event, username: known.username, address: known.address, port: known.port };
  }

  get size(): number {
    return this.#sessions.size;
  }
}
