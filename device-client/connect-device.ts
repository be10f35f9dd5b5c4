/**
 * `connectDevice(deviceFile, options)`: one call that gives a device program an MQTT session that lasts for
 * months (docs/device-sdk.md). The result is a connected mqtt.js `MqttClient` (publish, subscribe, `end` as usual)
 * with a `device` event emitter added.
 *
 * Contract:
 * - Every connection attempt, the first and each reconnect, is: re-read the device file (so a rotated key is
 *   used), build and send a fresh knock (unless `knock: false`), wait `knockWaitMs` for the firewall, then open
 *   TLS (mutual, the server verified against the device's CA). This runs inside mqtt.js's stream builder, so
 *   mqtt.js's own session machinery (offline queue, resubscribe, keepalive) is kept.
 * - The plain profile (`mqtt.transport: "plain"`, docs/device-sdk.md): every attempt knocks natively (BC1) and
 *   connects over plain TCP (`mqtt://`) with username = the device id and password = that knock's one-time
 *   credential (functions/core/connect-credential.ts), recomputed for every attempt. mqtt.js writes CONNECT as
 *   soon as the stream builder returns, so the knock is built there, synchronously, from the device file as last
 *   read; the file is re-read after the knock is sent, for the next attempt (a rotated key is used from the
 *   attempt after it was stored; the old key stays valid through the rotation's grace period). `knock: false` and
 *   fwknop knocks cannot log in (no credential): `DeviceConfigError` on `mqtt.transport`.
 * - After any drop (broker or receiver restart, grant expiry, network loss, a failed attempt) the client
 *   reconnects by itself after `backoffDelayMs(failures)`: full jitter, random(0, min(cap, base * 2^failures)),
 *   `failures` = consecutive failed attempts (0 right after a drop of a working session). Defaults base 1 s,
 *   cap 60 s. QoS 1/2 publishes made while offline wait in mqtt.js's outgoing store and are sent after the
 *   reconnect; QoS 0 publishes are not queued (`queueQoSZero: false`).
 * - The promise resolves on the first CONNACK. It rejects with `BrokerConnectError` when the broker refuses the
 *   device (a CONNACK reason code: retrying cannot help) or when `firstConnectDeadlineMs` (default: none, keep
 *   trying) passes; `SessionEndedError` ('unreachable') when a give-up bound below is reached first;
 *   `DeviceConfigError` for a bad device file or unreadable certificates.
 * - Terminal outcomes once connected (docs/device-sdk.md, "When retrying cannot help"): the session ends for good,
 *   with a `give-up` event and `client.device.closed()` resolving to a `SessionEndedError`, when
 *   - the broker's session notice says the operator disabled or removed the device ('disabled', 'removed';
 *     functions/core/session-notice.ts, sent on the device's key topic just before the broker closes the session);
 *   - a reconnect gets a CONNACK refusal ('refused'; every code but 3 "server unavailable", which is transient);
 *   - an optional bound is reached ('unreachable'): `maxConsecutiveFailures` failed attempts in a row, or
 *     `giveUpAfterMs` without a session (from the drop; from the start when there is no first-connect deadline).
 *   Ending leaves nothing behind: the reconnect timer, the bound's timer and the socket are gone, no further knock
 *   is sent, and the client is ended (`client.end(true)`). When the program ends the client itself,
 *   `closed()` resolves to undefined.
 * - Key rotation (`keyRotation`, default on): the key listener (key-listener.ts) runs for the whole session;
 *   an offer is stored atomically (0600) before its ack; the next knock uses it.
 * - Events (`client.device`, and `options.onEvent` from before the first attempt): `knock`, `connect`,
 *   `offline`, `reconnect-scheduled`, `key-rotated`, `key`, `give-up`, `error`. They carry key ids, never key material;
 *   `error` is only emitted when someone listens (no unhandled-error crash).
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { isIP, type Socket, connect as tcpConnect } from 'node:net';
import { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { type IClientOptions, MqttClient } from 'mqtt';
import { DeviceConfigError } from '../functions/core/config-errors.ts';
import { connectCredential } from '../functions/core/connect-credential.ts';
import type { DeviceConfig, KnockFormat } from '../functions/core/device-config.ts';
import { parseSessionNotice, sessionNoticeTopic } from '../functions/core/session-notice.ts';
import { DEFAULT_PLAIN_PORT } from '../functions/core/transport.ts';
import { readTlsMaterial, type TlsMaterial } from './broker-connection.ts';
import { BrokerConnectError, SessionEndedError, type SessionEndReason } from './errors.ts';
import { type KeyListenerEvent, listenForKeys } from './key-listener.ts';
import { buildKnock, type Knock } from './knock.ts';
import { loadDeviceConfig } from './load-device-config.ts';
import { sendDatagram } from './send-datagram.ts';

export interface BackoffPolicy {
  /** @default 1000 ms */
  readonly baseMs: number;
  /** @default 60000 ms */
  readonly capMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = Object.freeze({ baseMs: 1000, capMs: 60_000 });

/** One attempt's limit by default (knock wait + TCP + TLS + CONNACK), ms. */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 10_000;

/**
 * Full jitter: a uniform delay in [0, min(cap, base * 2^failures)). `random` returns a number in [0, 1).
 * Pure; the exponent is bounded so that large failure counts stay finite.
 */
export function backoffDelayMs(
  failures: number,
  random: () => number,
  policy: BackoffPolicy = DEFAULT_BACKOFF,
): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(Math.max(0, failures), 52));
  return Math.floor(random() * ceiling);
}

export interface KnockEvent {
  readonly type: 'knock';
  /** 1 for the first connection attempt, then counting every attempt. */
  readonly attempt: number;
  readonly format: KnockFormat;
  readonly server: string;
  readonly port: number;
  readonly bytes: number;
  /** The native key id the knock was made with (an id, not the key). */
  readonly keyId?: number;
}

export interface ConnectEvent {
  readonly type: 'connect';
  /** 1 = the first session, 2 = the first reconnect, ... */
  readonly connection: number;
  readonly attempt: number;
  /** For a reconnect: ms from going offline to this CONNACK. */
  readonly offlineMs?: number;
}

/** A working session dropped (never emitted before the first CONNACK). */
export interface OfflineEvent {
  readonly type: 'offline';
}

export interface ReconnectScheduledEvent {
  readonly type: 'reconnect-scheduled';
  /** Consecutive failed attempts before this delay (0 right after a working session dropped). */
  readonly failures: number;
  readonly delayMs: number;
}

export interface KeyRotatedEvent {
  readonly type: 'key-rotated';
  readonly keyId: number;
}

export interface KeyEvent {
  readonly type: 'key';
  readonly event: KeyListenerEvent;
}

export interface ErrorEvent {
  readonly type: 'error';
  readonly error: Error;
}

/** The session ended for good (terminal): the library stopped; nothing is retried after this. */
export interface GiveUpEvent {
  readonly type: 'give-up';
  readonly reason: SessionEndReason;
  readonly error: SessionEndedError;
}

export type DeviceEvent =
  | GiveUpEvent
  | KnockEvent
  | ConnectEvent
  | OfflineEvent
  | ReconnectScheduledEvent
  | KeyRotatedEvent
  | KeyEvent
  | ErrorEvent;

export interface DeviceEvents {
  knock: [KnockEvent];
  connect: [ConnectEvent];
  offline: [OfflineEvent];
  'reconnect-scheduled': [ReconnectScheduledEvent];
  'key-rotated': [KeyRotatedEvent];
  key: [KeyEvent];
  'give-up': [GiveUpEvent];
  error: [Error];
}

export interface DeviceSession extends EventEmitter<DeviceEvents> {
  /** The device file as read for the latest attempt (after a rotation: with the new key id). */
  config(): DeviceConfig;
  /** Attempts (knock + TLS) so far, and sessions established. */
  stats(): { readonly attempts: number; readonly connections: number };
  /**
   * Resolves once the session is over: with the `SessionEndedError` when the library gave up (a terminal outcome),
   * with undefined when the program ended the client itself. Never rejects.
   */
  closed(): Promise<SessionEndedError | undefined>;
}

export type DeviceClient = MqttClient & { readonly device: DeviceSession };

export interface ConnectDeviceOptions {
  /** Knock before each attempt. @default true (false: the firewall is already open, e.g. `--no-knock`). */
  readonly knock?: boolean;
  /** Receiver to knock. @default the device file's spa.host / spa.port */
  readonly server?: { readonly host: string; readonly port: number };
  /** @default the device file's spa.format */
  readonly format?: KnockFormat;
  /** Pause between the knock and the TLS connect, for the firewall to open. @default 250 ms */
  readonly knockWaitMs?: number;
  /** @default { baseMs: 1000, capMs: 60000 } */
  readonly backoff?: Partial<BackoffPolicy>;
  /** Reject the first connection after this long, ms. @default none: keep trying with backoff */
  readonly firstConnectDeadlineMs?: number;
  /** Give up ('unreachable') after this many failed attempts in a row. @default none: keep trying */
  readonly maxConsecutiveFailures?: number;
  /**
   * Give up ('unreachable') after this long without a session, ms: from the drop, or from the start when
   * `firstConnectDeadlineMs` is not set. @default none: keep trying
   */
  readonly giveUpAfterMs?: number;
  /** One attempt's limit (knock wait + TCP + TLS + CONNACK), ms. @default 10000 */
  readonly attemptTimeoutMs?: number;
  /** @default `<deviceId>/<8 random hex>` */
  readonly clientId?: string;
  /** MQTT clean session. @default true (subscriptions are re-made by mqtt.js after each reconnect) */
  readonly clean?: boolean;
  /** @default 60 s */
  readonly keepaliveSeconds?: number;
  /** Receive and store rotated SPA keys. @default true */
  readonly keyRotation?: boolean;
  /** Every event, from before the first knock on (the `device` emitter only exists once connected). */
  readonly onEvent?: (event: DeviceEvent) => void;
  /** Injected for tests. @default Math.random */
  readonly random?: () => number;
  /** @default node:crypto randomBytes */
  readonly randomBytes?: (length: number) => Uint8Array;
  /** @default Date.now */
  readonly now?: () => number;
  /** @default setTimeout */
  readonly sleep?: (ms: number) => Promise<void>;
}

/**
 * A Duplex that stands for the TLS socket while the knock is made: mqtt.js's stream builder is synchronous, so
 * writes (the CONNECT packet) wait here until `open` resolves with the real socket; then bytes flow both ways.
 */
class KnockFirstStream extends Duplex {
  #socket: Socket | undefined;
  readonly #ready: Promise<Socket>;

  constructor(open: () => Promise<Socket>) {
    super();
    this.#ready = open().then((socket) => {
      if (this.destroyed) {
        socket.destroy();
        throw new Error('stream closed before the connection was made');
      }
      this.#socket = socket;
      socket.on('data', (chunk: Buffer) => {
        if (!this.push(chunk)) socket.pause();
      });
      socket.on('end', () => this.push(null));
      socket.on('error', (error) => this.destroy(error));
      socket.on('close', () => this.destroy());
      return socket;
    });
    this.#ready.catch((error: unknown) =>
      this.destroy(error instanceof Error ? error : new Error(String(error))),
    );
  }

  override _read(): void {
    this.#socket?.resume();
  }

  override _write(chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.#ready.then(
      (socket) => socket.write(chunk, encoding, (error) => callback(error ?? null)),
      (error: unknown) => callback(error instanceof Error ? error : new Error(String(error))),
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#ready.then(
      (socket) => socket.end(() => callback()),
      () => callback(),
    );
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#socket?.destroy();
    callback(error);
  }
}

function brokerEndpoint(config: DeviceConfig): { host: string; port: number } {
  const url = new URL(config.mqtt.url);
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const defaultPort = config.mqtt.transport === 'plain' ? DEFAULT_PLAIN_PORT : 8883;
  return { host, port: url.port === '' ? defaultPort : Number(url.port) };
}

function asError(value: unknown): Error {
  return value instanceof Error ? value : new Error(String(value));
}

function randomSuffix(): string {
  return nodeRandomBytes(4).toString('hex');
}

export async function connectDevice(
  deviceFile: string,
  options: ConnectDeviceOptions = {},
): Promise<DeviceClient> {
  const random = options.random ?? Math.random;
  const randomBytes = options.randomBytes ?? ((length: number) => new Uint8Array(nodeRandomBytes(length)));
  const now = options.now ?? Date.now;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((done) => setTimeout(done, ms)));
  const policy: BackoffPolicy = { ...DEFAULT_BACKOFF, ...options.backoff };
  const knockWaitMs = options.knockWaitMs ?? 250;
  const attemptTimeoutMs = options.attemptTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS;

  let config = await loadDeviceConfig(deviceFile);
  const plain = config.mqtt.transport === 'plain';
  if (plain && (options.knock === false || (options.format ?? config.spa.format) !== 'native')) {
    throw new DeviceConfigError(
      config.file,
      'mqtt.transport',
      'is "plain": each connection logs in with the one-time credential of the native knock just sent, so it ' +
        'cannot connect without knocking or with an fwknop knock; fix: knock natively (drop --no-knock / --format fwknop)',
    );
  }
  const tls: TlsMaterial | undefined = plain ? undefined : await readTlsMaterial(config);
  const endpoint = brokerEndpoint(config);
  const events = new EventEmitter<DeviceEvents>() as DeviceSession;
  let attempts = 0;
  let connections = 0;
  let failures = 0;
  let offlineSince: number | undefined;
  /** Failed attempts in a row (an attempt that never got CONNACK); a working session that drops is not one. */
  let failedInARow = 0;
  /** Whether the current connection got its CONNACK. */
  let sessionUp = false;
  /** Set once the session is over (a terminal outcome or the program's own `end`): nothing more is attempted. */
  let ended = false;
  let resolveClosed: (value: SessionEndedError | undefined) => void = () => undefined;
  const closed = new Promise<SessionEndedError | undefined>((done) => {
    resolveClosed = done;
  });

  const emit = (event: DeviceEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // observers never break the session
    }
    if (event.type === 'error') {
      if (events.listenerCount('error') > 0) events.emit('error', event.error);
      return;
    }
    try {
      (events.emit as (name: string, value: DeviceEvent) => boolean)(event.type, event);
    } catch {
      // a throwing listener must not break the reconnect loop
    }
  };

  /** Sends `knock` (built already, or now) and waits for the firewall. */
  const sendKnock = async (attempt: number, prebuilt: Knock | undefined): Promise<void> => {
    const format = options.format ?? config.spa.format;
    const host = options.server?.host ?? config.spa.host;
    const port = options.server?.port ?? config.spa.port;
    try {
      const knock = prebuilt ?? buildKnock(config, { now, randomBytes }, format);
      const sent = await sendDatagram(host, port, knock.bytes);
      emit({
        type: 'knock',
        attempt,
        format: knock.format,
        server: sent.address,
        port: sent.port,
        bytes: sent.bytes,
        ...(knock.identity === undefined ? {} : { keyId: knock.identity.keyId }),
      });
    } catch (error) {
      // Reported here; mqtt.js gets an error without a code (it would report it a second time).
      emit({ type: 'error', error: asError(error) });
      throw new Error('knock failed; the attempt is skipped');
    }
    if (knockWaitMs > 0) await sleep(knockWaitMs);
    if (ended) throw new Error('the session is over; no further attempt');
  };

  const reload = async (): Promise<void> => {
    try {
      config = await loadDeviceConfig(deviceFile);
    } catch (error) {
      emit({ type: 'error', error: asError(error) });
      throw new Error('device file unreadable; the attempt is skipped');
    }
  };

  /** Runs before every TLS connect: re-read the file (rotated key), knock, wait for the firewall. */
  const prepareTls = async (): Promise<Socket> => {
    if (ended) throw new Error('the session is over; no further attempt');
    attempts += 1;
    const attempt = attempts;
    await reload();
    if (options.knock !== false) await sendKnock(attempt, undefined);
    const material = tls as TlsMaterial;
    const settings = config.mqtt.transport === 'tls' ? config.mqtt : undefined;
    return tlsConnect({
      host: endpoint.host,
      port: endpoint.port,
      ca: material.ca,
      cert: material.cert,
      key: material.key,
      rejectUnauthorized: true,
      ...(settings?.servername !== undefined
        ? { servername: settings.servername }
        : isIP(endpoint.host) === 0
          ? { servername: endpoint.host }
          : {}),
    });
  };

  /** The plain profile: send the knock the CONNECT's credential was made from, re-read the file, plain TCP. */
  const preparePlain = async (knock: Knock): Promise<Socket> => {
    if (ended) throw new Error('the session is over; no further attempt');
    attempts += 1;
    const attempt = attempts;
    await sendKnock(attempt, knock);
    await reload();
    return tcpConnect({ host: endpoint.host, port: endpoint.port });
  };

  /**
   * mqtt.js's stream builder (synchronous; CONNECT is written right after it returns): for a plain device, the
   * knock is made here and its one-time credential becomes this attempt's password.
   */
  const streamBuilder = (mqttClient: MqttClient): Duplex => {
    if (!plain) return new KnockFirstStream(prepareTls);
    let knock: Knock;
    try {
      knock = buildKnock(config, { now, randomBytes }, 'native');
    } catch (error) {
      return new KnockFirstStream(() => Promise.reject(asError(error)));
    }
    const native = config.spa.native;
    const identity = knock.identity;
    if (native !== undefined && identity !== undefined) {
      mqttClient.options.username = config.deviceId;
      mqttClient.options.password = Buffer.from(connectCredential(native.key, identity), 'latin1');
    }
    return new KnockFirstStream(() => preparePlain(knock));
  };

  const mqttOptions: IClientOptions = {
    clientId: options.clientId ?? `${config.deviceId}/${randomSuffix()}`,
    clean: options.clean ?? true,
    protocolVersion: 4,
    keepalive: options.keepaliveSeconds ?? 60,
    connectTimeout: attemptTimeoutMs,
    reconnectPeriod: Math.max(1, backoffDelayMs(0, random, policy)),
    queueQoSZero: false,
    resubscribe: true,
  };
  const client = new MqttClient(streamBuilder, mqttOptions) as DeviceClient;
  Object.defineProperty(client, 'device', { value: events, enumerable: false });
  events.config = () => config;
  events.stats = () => ({ attempts, connections });
  events.closed = () => closed;

  return new Promise<DeviceClient>((resolve, reject) => {
    let settled = false;
    let boundTimer: ReturnType<typeof setTimeout> | undefined;
    const deadline =
      options.firstConnectDeadlineMs === undefined
        ? undefined
        : setTimeout(() => {
            failFirst(
              new BrokerConnectError(
                config.mqtt.url,
                attempts,
                `could not connect to ${config.mqtt.url} within ${options.firstConnectDeadlineMs! / 1000} s ` +
                  `(${attempts} attempts); fix: check that the knock reached the receiver (same host/port as ` +
                  '"blackcloud up" printed), that the device may open the broker port, and that both clocks agree',
              ),
            );
          }, options.firstConnectDeadlineMs);

    /** Stops everything: timers, the reconnect loop, the socket. Idempotent. */
    const stop = (): void => {
      ended = true;
      clearTimeout(deadline);
      clearTimeout(boundTimer);
      boundTimer = undefined;
      client.end(true);
    };
    /** Before the first session: the promise rejects. */
    const failFirst = (error: Error): void => {
      if (settled) return;
      settled = true;
      stop();
      reject(error);
      resolveClosed(error instanceof SessionEndedError ? error : undefined);
    };
    /** A terminal outcome: a `give-up` event, `closed()` resolves; before the first session the promise rejects. */
    const end = (error: SessionEndedError): void => {
      if (ended) return;
      emit({ type: 'give-up', reason: error.reason, error });
      if (!settled) {
        failFirst(error);
        return;
      }
      stop();
      resolveClosed(error);
    };
    const unreachable = (why: string): SessionEndedError =>
      new SessionEndedError(
        'unreachable',
        config.deviceId,
        `no session with ${config.mqtt.url} (${why}; ${attempts} attempts in all); stopped trying. Likely causes: ` +
          `the device was disabled or removed (its knocks are dropped without an answer; fix: blackcloud devices ` +
          `enable ${config.deviceId}), the receiver or the broker is down (fix: start "blackcloud up" or the ` +
          'stack again), or the device file names the wrong server (fix: spa.host/spa.port and mqtt.url in the ' +
          'device file, or --server)',
      );
    const armBound = (): void => {
      const limit = options.giveUpAfterMs;
      if (limit === undefined || boundTimer !== undefined || ended) return;
      boundTimer = setTimeout(() => {
        boundTimer = undefined;
        end(unreachable(`none for ${limit / 1000} s`));
      }, limit);
    };
    if (options.firstConnectDeadlineMs === undefined) armBound();

    /** Before mqtt.js's own close handler arms the reconnect timer: count the failure, choose the delay. */
    const schedule = (): void => {
      const failed = !sessionUp;
      sessionUp = false;
      if (client.disconnecting || ended) return;
      if (failed) failedInARow += 1;
      const max = options.maxConsecutiveFailures;
      if (max !== undefined && failedInARow >= max) {
        end(unreachable(`${failedInARow} failed attempts in a row`));
        return;
      }
      const delayMs = backoffDelayMs(failures, random, policy);
      emit({ type: 'reconnect-scheduled', failures, delayMs });
      failures += 1;
      client.options.reconnectPeriod = Math.max(1, delayMs);
    };
    client.prependListener('close', schedule);
    client.on('offline', () => {
      // mqtt.js also says "offline" when a first attempt fails; only a session that was up can be lost.
      if (connections === 0) return;
      offlineSince = now();
      emit({ type: 'offline' });
      armBound();
    });
    // The program ended the client itself: the session is over, nothing was given up.
    client.on('end', () => {
      ended = true;
      clearTimeout(deadline);
      clearTimeout(boundTimer);
      boundTimer = undefined;
      resolveClosed(undefined);
    });
    // The operator's notice arrives just before the broker closes the session (session-notice.ts).
    const noticeTopic = sessionNoticeTopic(config.deviceId);
    client.on('message', (topic, payload) => {
      if (topic !== noticeTopic) return;
      const notice = parseSessionNotice(payload);
      if (!notice.ok) return;
      const id = config.deviceId;
      end(
        new SessionEndedError(
          notice.value.reason,
          id,
          notice.value.reason === 'disabled'
            ? `the broker closed the session: the operator disabled device "${id}", so retrying cannot help ` +
                `(its knocks are refused too); fix: blackcloud devices enable ${id}, then connect again`
            : `the broker closed the session: the operator removed device "${id}", so retrying cannot help; ` +
                `fix: enrol it again (blackcloud devices add ${id}) and use the new device file`,
        ),
      );
    });

    client.on('error', (error) => {
      const failure = asError(error);
      const code = (failure as { code?: unknown }).code;
      // A CONNACK reason code: the broker answered. 3 (server unavailable) is transient; the others are final.
      if (typeof code === 'number' && code !== 3) {
        if (!settled) {
          failFirst(
            new BrokerConnectError(
              config.mqtt.url,
              attempts,
              `broker ${config.mqtt.url} refused device "${config.deviceId}" (${failure.message}); fix: the ` +
                "client certificate must be issued by the broker's CA with CN = the device id",
              { cause: failure },
            ),
          );
          return;
        }
        end(
          new SessionEndedError(
            'refused',
            config.deviceId,
            `broker ${config.mqtt.url} refused device "${config.deviceId}" on reconnect (${failure.message}), so ` +
              `retrying cannot help; fix: if the operator disabled it, blackcloud devices enable ` +
              `${config.deviceId}; otherwise the client certificate must be issued by the broker's CA with CN = ` +
              'the device id',
            { cause: failure },
          ),
        );
        return;
      }
      emit({ type: 'error', error: failure });
    });

    client.on('connect', () => {
      sessionUp = true;
      connections += 1;
      failures = 0;
      failedInARow = 0;
      clearTimeout(boundTimer);
      boundTimer = undefined;
      client.options.reconnectPeriod = Math.max(1, backoffDelayMs(0, random, policy));
      const offlineMs = offlineSince === undefined ? undefined : now() - offlineSince;
      offlineSince = undefined;
      emit({
        type: 'connect',
        connection: connections,
        attempt: attempts,
        ...(offlineMs === undefined ? {} : { offlineMs }),
      });
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      const ready =
        options.keyRotation === false
          ? Promise.resolve()
          : listenForKeys(client, config, {
              randomBytes,
              onEvent: (event) => {
                emit({ type: 'key', event });
                if (event.type === 'stored') emit({ type: 'key-rotated', keyId: event.keyId });
                if (event.type === 'failed') {
                  emit({
                    type: 'error',
                    error: new Error(`new SPA key ${event.keyId} not stored: ${event.error}`),
                  });
                }
              },
            }).then(() => undefined);
      ready.then(
        () => resolve(client),
        (error: unknown) => {
          stop();
          reject(asError(error));
        },
      );
    });
  });
}
