/**
 * The broker's session signal from Mosquitto's own log (docs/scaling.md, "The signal on AWS"): subscribes an admin
 * session (dynsec-admin.ts `DynsecAdmin`, or anything with its `subscribe`) to the notice log topic that
 * `log_dest topic` fills (mosquitto-config.ts) and hands every connect and disconnect line, parsed
 * (mosquitto-session-log.ts), to `onEvent`. The only I/O is the subscription; the parsing is pure.
 *
 * Contract:
 * - `watchMosquittoSessions` subscribes to `MOSQUITTO_NOTICE_LOG_TOPIC` and resolves with whether the broker granted
 *   it (false: the controller's role lacks `$SYS/broker/log/#`, dynsec-policy.ts; no event ever comes then). It never
 *   rejects. When refused and `ensureAccess` is given (e.g. sending dynsec-commands.ts `grantControllerLog()`: a
 *   broker whose dynamic-security file predates the log ACLs), it calls it once and subscribes once more, whether
 *   or not `ensureAccess` resolved: Mosquitto 2.0.11 ends the sessions of a role's clients when the role's ACLs
 *   change, this admin session (and every other controller session) included, so its answer never comes.
 * - Each payload is read as one line (UTF-8) by one `SessionLog` (client ids remembered: at most `maxSessions`);
 *   other lines are dropped. `onEvent` runs synchronously per event, in the broker's order; an `onEvent` that throws
 *   is reported to `onError` and the watch goes on.
 * - Lines published while the admin session was down are lost (Mosquitto does not queue QoS 0 for a clean
 *   session): a caller that must not miss a disconnect treats a missing one as "still connected" until another
 *   signal (the next knock, a disable) ends it.
 */
import { MOSQUITTO_NOTICE_LOG_TOPIC, type SessionEvent, SessionLog } from './mosquitto-session-log.ts';

/** What the watcher needs from an admin session. */
export interface BrokerLogSubscriber {
  subscribe(topic: string, handler: (payload: Buffer) => void): Promise<boolean>;
}

export interface MosquittoSessionWatchOptions {
  readonly subscriber: BrokerLogSubscriber;
  readonly onEvent: (event: SessionEvent) => void;
  readonly onError?: (error: Error) => void;
  /** @default DEFAULT_MAX_LOGGED_SESSIONS */
  readonly maxSessions?: number;
  /** Called once if the broker refused the subscription, before one more try. */
  readonly ensureAccess?: () => Promise<unknown>;
}

export async function watchMosquittoSessions(options: MosquittoSessionWatchOptions): Promise<boolean> {
  const log = new SessionLog(options.maxSessions);
  const handler = (payload: Buffer): void => {
    const event = log.read(payload.toString('utf8'));
    if (event === undefined) return;
    try {
      options.onEvent(event);
    } catch (error) {
      options.onError?.(error instanceof Error ? error : new Error(String(error)));
    }
  };
  const subscribe = () =>
    options.subscriber.subscribe(MOSQUITTO_NOTICE_LOG_TOPIC, handler).catch(() => false);
  if (await subscribe()) return true;
  if (options.ensureAccess === undefined) return false;
  try {
    await options.ensureAccess();
  } catch (error) {
    // Expected on 2.0.11: changing a role's ACLs kicks the role's clients, this session included, so the answer
    // is lost; the change is made and mqtt.js reconnects. The second try tells.
    options.onError?.(error instanceof Error ? error : new Error(String(error)));
  }
  return subscribe();
}
