/**
 * The admin session to Mosquitto's dynamic-security plugin: sends the commands of dynsec-commands.ts on
 * `$CONTROL/dynamic-security/v1` over a mutual-TLS MQTT session (the controller's certificate, so the plugin
 * knows it as the controller client with `controllerRole()`), and checks every answer on `.../v1/response`.
 *
 * Contract:
 * - `connectDynsecAdmin` resolves once connected and subscribed to the response topic; it rejects with the
 *   connection error after `connectTimeoutMs`. The server certificate is verified against the CA. mqtt.js
 *   reconnects on its own (the subscription is restored); `onConnect` handlers run on every (re)connect after the
 *   first, so a caller can bring a restarted broker back in step.
 * - `send(commands)` publishes them as one message (QoS 1) and resolves with their answers in order once all came
 *   back. It rejects with `DynsecError` when any answer carries an error (naming each command and the plugin's
 *   error), and when no answer comes within `answerTimeoutMs` (the plugin is not loaded, or this client lacks
 *   the controller role: the broker drops what the session may not publish).
 * - `reconcile(devices)` reads the clients and roles, then sends `planReconcile`'s commands (nothing when the
 *   broker already matches); resolves with the commands sent.
 * - `subscribe(topic, handler)` subscribes the session (QoS 0) to one more literal topic (e.g. the broker's log,
 *   mosquitto-session-watcher.ts) and calls `handler` with each payload published on it; mqtt.js restores the
 *   subscription on every reconnect. Resolves true when the broker granted it, false when it refused (the
 *   controller's role lacks the ACL) or the session failed; never rejects.
 * - `close()` ends the session; pending sends reject. Idempotent.
 */
import { randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import { CONTROLLER_IDENTITY } from '../core/topics.ts';
import {
  DYNSEC_COMMAND_TOPIC,
  DYNSEC_RESPONSE_TOPIC,
  type DynsecCommand,
  type DynsecResponse,
  encodeCommands,
  listClients,
  listRoles,
  parseBrokerState,
  parseResponses,
  planReconcile,
} from './dynsec-commands.ts';

export class DynsecError extends Error {
  override readonly name = 'DynsecError';
  /** The commands the plugin refused, with its error text. */
  readonly failures: readonly { readonly command: string; readonly error: string }[];
  constructor(message: string, failures: readonly { command: string; error: string }[] = []) {
    super(message);
    this.failures = failures;
  }
}

export interface DynsecAdminOptions {
  /** mqtts://host:port of the broker itself (never through the gate). */
  readonly url: string;
  readonly ca: string | Buffer;
  readonly cert: string | Buffer;
  readonly key: string | Buffer;
  readonly servername?: string;
  /** @default 'blackcloud-dynsec' (not the controller's, which would take over its session) */
  readonly clientId?: string;
  /** @default 5000 */
  readonly connectTimeoutMs?: number;
  /** @default 5000 */
  readonly answerTimeoutMs?: number;
}

export interface DynsecAdmin {
  send(commands: readonly DynsecCommand[]): Promise<DynsecResponse[]>;
  reconcile(devices: readonly { readonly id: string; readonly enabled: boolean }[]): Promise<DynsecCommand[]>;
  onConnect(handler: () => void): void;
  subscribe(topic: string, handler: (payload: Buffer) => void): Promise<boolean>;
  close(): Promise<void>;
}

interface Pending {
  readonly count: number;
  readonly responses: DynsecResponse[];
  readonly resolve: (responses: DynsecResponse[]) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export async function connectDynsecAdmin(options: DynsecAdminOptions): Promise<DynsecAdmin> {
  const answerTimeoutMs = options.answerTimeoutMs ?? 5_000;
  const client: MqttClient = mqtt.connect(options.url, {
    ca: options.ca,
    cert: options.cert,
    key: options.key,
    rejectUnauthorized: true,
    ...(options.servername === undefined ? {} : { servername: options.servername }),
    clientId: options.clientId ?? 'blackcloud-dynsec',
    protocolVersion: 4,
    clean: true,
    connectTimeout: options.connectTimeoutMs ?? 5_000,
    reconnectPeriod: 1_000,
    resubscribe: true,
  });
  const pending = new Map<string, Pending>();
  const connectHandlers: (() => void)[] = [];
  const topicHandlers = new Map<string, (payload: Buffer) => void>();
  let closed = false;

  client.on('message', (topic, payload) => {
    if (topic !== DYNSEC_RESPONSE_TOPIC) {
      topicHandlers.get(topic)?.(payload);
      return;
    }
    const parsed = parseResponses(payload);
    if (!parsed.ok) return;
    for (const response of parsed.value) {
      const [batch] = (response.correlationData ?? '').split(':');
      const waiting = batch === undefined ? undefined : pending.get(batch);
      if (waiting === undefined) continue;
      waiting.responses.push(response);
      if (waiting.responses.length < waiting.count) continue;
      clearTimeout(waiting.timer);
      pending.delete(batch!);
      const ordered = [...waiting.responses].sort(
        (a, b) => Number(a.correlationData?.split(':')[1]) - Number(b.correlationData?.split(':')[1]),
      );
      const failures = ordered.flatMap((r) =>
        r.error === undefined ? [] : [{ command: r.command, error: r.error }],
      );
      if (failures.length === 0) waiting.resolve(ordered);
      else
        waiting.reject(
          new DynsecError(
            `the dynamic-security plugin refused ${failures.map((f) => `${f.command} (${f.error})`).join(', ')}`,
            failures,
          ),
        );
    }
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (error: Error) => {
      client.removeListener('connect', onConnect);
      client.end(true);
      reject(error);
    };
    const timer = setTimeout(
      () =>
        onError(
          new Error(`no MQTT session with ${options.url} within ${options.connectTimeoutMs ?? 5_000} ms`),
        ),
      (options.connectTimeoutMs ?? 5_000) + 500,
    );
    const onConnect = () => {
      clearTimeout(timer);
      client.removeListener('error', onError);
      resolve();
    };
    client.once('connect', onConnect);
    client.once('error', (error) => {
      clearTimeout(timer);
      onError(error);
    });
  });
  client.on('error', () => undefined); // later connection errors: mqtt.js retries; send times out meanwhile
  await client.subscribeAsync(DYNSEC_RESPONSE_TOPIC, { qos: 1 });
  client.on('connect', () => {
    for (const handler of connectHandlers) handler();
  });

  const send = (commands: readonly DynsecCommand[]): Promise<DynsecResponse[]> => {
    if (commands.length === 0) return Promise.resolve([]);
    if (closed) return Promise.reject(new DynsecError('the dynamic-security admin session is closed'));
    const batch = randomUUID();
    return new Promise<DynsecResponse[]>((resolve, reject) => {
      const timer = setTimeout(() => {
        pending.delete(batch);
        reject(
          new DynsecError(
            `no answer from the dynamic-security plugin at ${options.url} within ${answerTimeoutMs} ms: load ` +
              `the plugin (docs/local.md, --broker) and give client ${CONTROLLER_IDENTITY} the controller role`,
          ),
        );
      }, answerTimeoutMs);
      pending.set(batch, { count: commands.length, responses: [], resolve, reject, timer });
      client.publish(DYNSEC_COMMAND_TOPIC, encodeCommands(commands, batch), { qos: 1 }, (error) => {
        if (error === undefined || error === null) return;
        clearTimeout(timer);
        pending.delete(batch);
        reject(new DynsecError(`the dynamic-security command could not be sent: ${error.message}`));
      });
    });
  };

  return {
    send,
    async reconcile(devices) {
      const [clients, roles] = await send([listClients(), listRoles()]);
      const state = parseBrokerState(clients?.data, roles?.data);
      if (state === undefined)
        throw new DynsecError('the dynamic-security plugin listed its clients or roles in an unknown form');
      const commands = planReconcile(state, devices);
      await send(commands);
      return commands;
    },
    onConnect(handler) {
      connectHandlers.push(handler);
    },
    async subscribe(topic, handler) {
      if (closed || topic === DYNSEC_RESPONSE_TOPIC || /[+#]/.test(topic)) return false;
      topicHandlers.set(topic, handler);
      try {
        const granted = await client.subscribeAsync(topic, { qos: 0 });
        return granted.every((grant) => grant.qos < 0x80);
      } catch {
        return false;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const [batch, waiting] of pending) {
        clearTimeout(waiting.timer);
        pending.delete(batch);
        waiting.reject(new DynsecError('the dynamic-security admin session was closed'));
      }
      await client.endAsync(true);
    },
  };
}
