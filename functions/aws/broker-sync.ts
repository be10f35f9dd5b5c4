/**
 * The AWS receiver's hold on the broker's dynamic-security plugin (docs/fleet.md, "Dynamic security on AWS"):
 * keeps the broker's clients and roles in step with the device index, so `devices disable|remove --aws` close the
 * device's session within one index refresh (BLACKCLOUD_DIRECTORY_REFRESH_SECONDS) and `devices add --aws`
 * enrols it at the broker as well.
 *
 * Contract:
 * - `startAwsBrokerSync` returns at once; the admin session (functions/broker/dynsec-admin.ts, the controller's
 *   certificate, to the broker's private address) is opened in the background: the broker may boot after the
 *   receiver. A failed connect is logged (`warn`) and retried every `retryMs`; once connected it syncs, and
 *   every reconnect syncs again (a replaced broker comes back in step).
 * - `sync()` reconciles with `devices()` (dynsec-commands.ts `planReconcile`, via `DynsecAdmin.reconcile`);
 *   calls while one runs are coalesced into one more run afterwards, so the last index always reaches the
 *   broker. Resolves true once the broker matched, false (after a `warn`) when there is no session yet or the
 *   plugin refused or did not answer. Never rejects. `devices()` returning undefined (no index loaded) skips the
 *   run: an empty list would delete every device at the broker.
 * - `clientId` must differ per receiver (several receivers each hold one session; one id would make the broker
 *   drop the other's).
 * - `send(commands)` sends other commands over the same session (the plain profile's passwords,
 *   functions/broker/dynsec-credentials.ts); it rejects while there is no session yet, and with the plugin's refusal.
 * - `subscribe(topic, handler)` subscribes the admin session to one more topic (dynsec-admin.ts `subscribe`: the
 *   broker's log, functions/broker/mosquitto-session-watcher.ts), once the session is up; resolves with whether the
 *   broker granted it (false when closed first). Never rejects.
 * - `close()` ends the session and the retries; idempotent.
 */

import { coalescedSync } from '../broker/coalesced-sync.ts';
import { connectDynsecAdmin, type DynsecAdmin, DynsecError } from '../broker/dynsec-admin.ts';
import type { DynsecCommand, DynsecResponse } from '../broker/dynsec-commands.ts';
import type { Timers } from '../core/interfaces.ts';

export interface AwsBrokerSyncOptions {
  /** mqtts://host:port of the broker's private address. */
  readonly url: string;
  readonly ca: Buffer | string;
  readonly cert: Buffer | string;
  readonly key: Buffer | string;
  readonly servername?: string;
  readonly clientId: string;
  /** The index's devices; undefined while none is loaded. */
  readonly devices: () => readonly { readonly id: string; readonly enabled: boolean }[] | undefined;
  readonly log: (level: 'info' | 'warn', message: string) => void;
  readonly timers: Timers;
  /** @default 10000 */
  readonly retryMs?: number;
  /** Connect and answer timeouts. @default 5000 */
  readonly timeoutMs?: number;
}

export interface AwsBrokerSync {
  sync(): Promise<boolean>;
  send(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]>;
  subscribe(topic: string, handler: (payload: Buffer) => void): Promise<boolean>;
  close(): Promise<void>;
}

export function startAwsBrokerSync(options: AwsBrokerSyncOptions): AwsBrokerSync {
  const retryMs = options.retryMs ?? 10_000;
  const timeoutMs = options.timeoutMs ?? 5_000;
  let admin: DynsecAdmin | undefined;
  let closed = false;
  let retry: unknown;
  /** Subscriptions asked for before the session was up. */
  const waiting: { topic: string; handler: (payload: Buffer) => void; resolve: (ok: boolean) => void }[] = [];

  const once = async (): Promise<boolean> => {
    const devices = options.devices();
    if (admin === undefined || devices === undefined) return false;
    try {
      const sent = await admin.reconcile(devices);
      if (sent.length > 0) {
        options.log(
          'info',
          `broker dynamic security: ${sent.length} change(s) applied to match the device index`,
        );
      }
      return true;
    } catch (error) {
      options.log(
        'warn',
        `broker dynamic security not in step with the device index (${(error as Error).message}): the next ` +
          'refresh tries again',
      );
      return false;
    }
  };
  const sync = coalescedSync(once);
  const connect = async (): Promise<void> => {
    retry = undefined;
    if (closed) return;
    try {
      const opened = await connectDynsecAdmin({
        url: options.url,
        ca: options.ca,
        cert: options.cert,
        key: options.key,
        ...(options.servername === undefined ? {} : { servername: options.servername }),
        clientId: options.clientId,
        connectTimeoutMs: timeoutMs,
        answerTimeoutMs: timeoutMs,
      });
      if (closed) {
        await opened.close();
        return;
      }
      admin = opened;
      for (const { topic, handler, resolve } of waiting.splice(0))
        void opened.subscribe(topic, handler).then(resolve);
      opened.onConnect(() => void sync());
      options.log('info', `broker dynamic security: admin session with ${options.url}`);
      await sync();
    } catch (error) {
      options.log(
        'warn',
        `broker dynamic security: no admin session with ${options.url} (${(error as Error).message}); ` +
          `retrying in ${retryMs} ms (disable and remove cannot close sessions until then)`,
      );
      if (!closed) retry = options.timers.setTimeout(() => void connect(), retryMs);
    }
  };
  void connect();
  return {
    sync,
    send(commands) {
      if (admin === undefined) {
        return Promise.reject(
          new DynsecError(`no dynamic-security admin session with ${options.url} yet (it is retried)`),
        );
      }
      return admin.send(commands);
    },
    subscribe(topic, handler) {
      if (admin !== undefined) return admin.subscribe(topic, handler);
      if (closed) return Promise.resolve(false);
      return new Promise<boolean>((resolve) => waiting.push({ topic, handler, resolve }));
    },
    async close() {
      closed = true;
      for (const { resolve } of waiting.splice(0)) resolve(false);
      if (retry !== undefined) options.timers.clearTimeout(retry);
      retry = undefined;
      await admin?.close();
    },
  };
}
