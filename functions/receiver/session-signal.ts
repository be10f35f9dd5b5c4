/**
 * Where a broker's session signal enters the receiver (docs/scaling.md, "Closed on connect"; docs/fleet.md, "Plain
 * devices on AWS"): one handler for every signal source that reports connects and disconnects with the session's
 * client id, authenticated username and TCP peer address (Mosquitto's connection log,
 * functions/broker/mosquitto-session-watcher.ts, on AWS and for `up --broker`).
 *
 * Contract:
 * - `sessionSignalHandler({ grants, keeper })` returns the `onEvent` for such a source. A connect tells the plain
 *   credential keeper first (`sessionConnected`: a credential held by its session survives the grant's close that
 *   follows), then the grant manager (`sessionEstablished(username, address)`: closed on connect; a device without a
 *   claim there changes nothing). A disconnect tells the keeper (`sessionEnded`). Without a keeper only grants are
 *   told.
 * - Never throws and never rejects: a failing `sessionEstablished` is reported to `onError` (device id and reason).
 */
import type { BrokerSession, PlainCredentialKeeper } from './plain-credential-keeper.ts';

export type BrokerSessionEvent =
  | ({ readonly kind: 'connected' } & BrokerSession)
  | { readonly kind: 'disconnected'; readonly clientId: string; readonly username?: string };

export interface SessionSignalTargets {
  readonly grants: { sessionEstablished(deviceId: string, address: string): Promise<unknown> };
  readonly keeper?: Pick<PlainCredentialKeeper, 'sessionConnected' | 'sessionEnded'>;
  readonly onError?: (deviceId: string, error: Error) => void;
}

export function sessionSignalHandler(targets: SessionSignalTargets): (event: BrokerSessionEvent) => void {
  const failed = (deviceId: string, error: unknown) =>
    targets.onError?.(deviceId, error instanceof Error ? error : new Error(String(error)));
  return (event) => {
    try {
      if (event.kind === 'disconnected') {
        targets.keeper?.sessionEnded(event.clientId, event.username);
        return;
      }
      targets.keeper?.sessionConnected(event);
      targets.grants
        .sessionEstablished(event.username, event.address)
        .catch((error: unknown) => failed(event.username, error));
    } catch (error) {
      failed(event.username ?? event.clientId, error);
    }
  };
}
