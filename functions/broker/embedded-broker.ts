/**
 * The embedded MQTT broker of `blackcloud up`: aedes 1.2 behind a mutual-TLS listener.
 *
 * Contract:
 * - TLS 1.2+ with `requestCert` and `rejectUnauthorized`: a client without a certificate signed by `tls.ca` never
 *   completes the handshake, so it never reaches MQTT. Node verifies client certificates for the TLS client
 *   purpose, so a certificate whose extendedKeyUsage lacks clientAuth (a server certificate) is refused too.
 * - The identity of a connection is its certificate's single subject CN (topic-policy.ts says which CNs are
 *   valid). A certificate with no CN, several CNs, or a CN outside that alphabet is dropped after the handshake.
 * - CONNECT: the `username`/`password` fields are ignored (the username is overwritten with the identity). The
 *   client id is namespaced by the identity: an id equal to `<identity>` or starting with `<identity>/` is kept,
 *   any other id becomes `<identity>/<id>`, so no client can take over another identity's session. An empty id
 *   keeps aedes' random `aedes_<uuid>`. A will message outside the identity's topics is refused with CONNACK 5.
 * - Topics: topic-policy.ts (`blackcloud/devices/<CN>/#` for devices, everything but `$SYS/` publishes for
 *   `blackcloud-controller`). A refused SUBSCRIBE entry is answered with SUBACK 0x80 [MQTT-3.9.3-2]; a refused
 *   PUBLISH closes the connection without delivering it [MQTT-3.3.5-2]; deliveries are filtered again on the way
 *   out. Optional hooks can only narrow these rules, never widen them.
 * - `disconnect(identity, farewell?)` drops every connection of the identity. With a farewell (the operator's
 *   session notice, functions/core/session-notice.ts) each connection first stops being served (no publish, no
 *   subscribe, nothing delivered but the farewell's topic), gets the farewell as one QoS 0 PUBLISH, then a graceful
 *   close; whatever happens, the socket is destroyed within `FAREWELL_GRACE_MS`.
 * - `onSession` (the closed-on-connect signal, docs/scaling.md): called once per accepted MQTT session, after the
 *   CONNACK with return code 0 was written, with the session's certificate identity (never the client-chosen
 *   username or client id) and the TCP peer address and port the broker saw (behind the gate: the gate's upstream
 *   leg, which the gate maps back to the device's address). A throwing hook is ignored.
 * - The plain profile (docs/threat-model.md, "The plain profile"), only with `plain`: `acceptPlain(socket)` serves a
 *   plain TCP connection (the plain listener's granted connection; `startEmbeddedBroker` with `plain.port` listens
 *   for them itself). There is no certificate: the CONNECT's username is the claimed identity (it must be a valid
 *   device identity, never the controller's) and `plain.authenticate` decides with the username, the password and
 *   the TCP peer address; anything it does not accept (no username, no password, a refusal, a throw) gets CONNACK
 *   5. Only once accepted does the connection get its identity; from then on it is served exactly like a TLS
 *   connection of that identity (client id namespacing, will check, topic policy, `disconnect`, `onSession`).
 * - `close()` disconnects every client and stops listening; it resolves when the port is released.
 * - `startInProcessBroker` is the same broker with no listening socket at all (docs/local.md, gate mode): it only
 *   speaks to streams handed to it in this process, `accept(socket)` (the gate's accepted, granted connection)
 *   and `connect()` (a fresh in-memory stream pair for an in-process client such as the key-rotation controller;
 *   the TLS and certificate checks above apply to both unchanged). No other process can reach it.
 */
import {
  type AddressInfo,
  createServer as createTcpServer,
  type Socket,
  type Server as TcpServer,
} from 'node:net';
import { type Duplex, duplexPair } from 'node:stream';
import { createSecureContext, createServer, type TLSSocket, type Server as TlsServer } from 'node:tls';
import {
  Aedes,
  type AedesPublishPacket,
  type AuthenticateError,
  type Client,
  type ConnectPacket,
  type PublishPacket,
  type Subscription,
} from 'aedes';
import { listenErrorCode } from '../core/listen-error.ts';
import { CONTROLLER_IDENTITY, isValidIdentity } from '../core/topics.ts';
import { BrokerListenError, BrokerTlsError } from './broker-error.ts';
import { mayPublish, mayReceive, maySubscribe } from './topic-policy.ts';

export { CONTROLLER_IDENTITY, DEVICE_TOPIC_ROOT, deviceTopic } from '../core/topics.ts';
export { BrokerListenError, BrokerTlsError } from './broker-error.ts';

/** The logger the broker uses: (fields, message), the shape of structured loggers such as pino. */
export interface BrokerLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
}

export interface TopicRequest {
  /** The client certificate's CN. */
  readonly identity: string;
  /** The (namespaced) MQTT client id. */
  readonly clientId: string;
  readonly topic: string;
}

export interface EmbeddedBrokerOptions {
  host: string;
  /** 0 = any free port; read it back with `address()`. */
  port: number;
  tls: { key: string | Buffer; cert: string | Buffer; ca: string | Buffer };
  /** Extra check after the certificate: e.g. refuse a disabled device, or a certificate of an earlier enrolment
   *  (`serial`: the client certificate's serial, upper-case hex) (CONNACK 5). */
  authenticate?: (req: { identity: string; clientId: string; serial: string }) => boolean | Promise<boolean>;
  /** Extra check after the topic policy; can only narrow it. A rejection or thrown error denies. */
  authorizePublish?: (req: TopicRequest & { payload: Buffer }) => boolean | Promise<boolean>;
  /** Extra check after the topic policy; can only narrow it. A rejection or thrown error denies. */
  authorizeSubscribe?: (req: TopicRequest) => boolean | Promise<boolean>;
  logger?: BrokerLogger;
  /** An MQTT session was accepted (CONNACK 0 written): who (certificate CN) from which TCP peer. */
  onSession?: (session: BrokerSession) => void;
  /** The plain profile's listener (see the contract). @default none: plain connections are not served */
  plain?: PlainListenerOptions;
  /** Milliseconds allowed for the TLS handshake. @default 10000 */
  handshakeTimeoutMs?: number;
  /** Milliseconds allowed between the handshake and CONNECT. @default 10000 */
  connectTimeoutMs?: number;
}

export interface PlainListenerOptions {
  /** `startEmbeddedBroker` only: listen for plain connections on this port (0 = any free port) of `host`. */
  readonly port?: number;
  /** The CONNECT check of a plain connection; only `true` accepts (a rejection or throw refuses). */
  authenticate(req: PlainLogin): boolean | Promise<boolean>;
}

/** What a plain connection's CONNECT presented. The password is a secret: never log it. */
export interface PlainLogin {
  /** The claimed identity (the CONNECT username). */
  readonly username: string;
  readonly password: Buffer | undefined;
  readonly clientId: string;
  /** The TCP peer address of the connection (behind the gate: the device's own address). */
  readonly remoteAddress: string;
}

/** One accepted MQTT session, as the broker saw it. */
export interface BrokerSession {
  /** The client certificate's CN. */
  readonly identity: string;
  /** The (namespaced) MQTT client id. */
  readonly clientId: string;
  /** The TCP peer of the broker's socket. */
  readonly remoteAddress: string;
  readonly remotePort: number;
}

export interface InProcessBroker {
  aedes: Aedes;
  /** Serves a connection accepted elsewhere in this process (e.g. by the gate) as if it had been accepted here. */
  accept(socket: Duplex): void;
  /** Serves a plain-profile connection (no TLS) accepted elsewhere in this process; needs the `plain` option. */
  acceptPlain(socket: Duplex): void;
  /** A new in-memory connection to the broker: the client's end (TLS is then negotiated over it). */
  connect(): Duplex;
  /** The certificate identity behind an aedes client, or undefined. */
  identityOf(client: Client): string | undefined;
  /**
   * Drops every connection of this identity (e.g. a device was disabled), after sending `farewell` if given.
   * Returns how many were dropped.
   */
  disconnect(identity: string, farewell?: Farewell): number;
  close(): Promise<void>;
}

/** The last message a connection gets before `disconnect` closes it. */
export interface Farewell {
  readonly topic: string;
  readonly payload: Buffer;
}

export interface EmbeddedBroker extends InProcessBroker {
  address(): { host: string; port: number };
  /** The plain listener's address, when `plain.port` was given. */
  plainAddress(): { host: string; port: number } | undefined;
}

const NOT_AUTHORIZED = 5;
/** How long a farewell may take to be written before the socket is destroyed anyway. */
export const FAREWELL_GRACE_MS = 1000;
const silentLogger: BrokerLogger = { info: () => undefined, warn: () => undefined };

export async function startEmbeddedBroker(opts: EmbeddedBrokerOptions): Promise<EmbeddedBroker> {
  const { broker, server } = await createBroker(opts);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (cause) {
    await broker.close();
    throw new BrokerListenError(opts.host, opts.port, listenErrorCode(cause), { cause });
  }
  let plainServer: TcpServer | undefined;
  const plainPort = opts.plain?.port;
  if (plainPort !== undefined) {
    const listening = createTcpServer((socket) => broker.acceptPlain(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        listening.once('error', reject);
        listening.listen(plainPort, opts.host, () => {
          listening.off('error', reject);
          resolve();
        });
      });
    } catch (cause) {
      await broker.close();
      throw new BrokerListenError(opts.host, plainPort, listenErrorCode(cause), { cause });
    }
    plainServer = listening;
  }
  return {
    ...broker,
    address() {
      const info = server.address() as AddressInfo;
      return { host: info.address, port: info.port };
    },
    plainAddress() {
      const info = plainServer?.address() as AddressInfo | undefined | null;
      return info === undefined || info === null ? undefined : { host: info.address, port: info.port };
    },
    async close() {
      const released =
        plainServer?.listening === true
          ? new Promise<void>((resolve) => plainServer?.close(() => resolve()))
          : Promise.resolve();
      await broker.close();
      await released;
    },
  };
}

/** The broker without any listening socket: reachable only through `accept` and `connect` (see the contract). */
export async function startInProcessBroker(
  opts: Omit<EmbeddedBrokerOptions, 'host' | 'port'>,
): Promise<InProcessBroker> {
  return (await createBroker(opts)).broker;
}

async function createBroker(
  opts: Omit<EmbeddedBrokerOptions, 'host' | 'port'>,
): Promise<{ broker: InProcessBroker; server: TlsServer }> {
  const logger = opts.logger ?? silentLogger;
  validateTls(opts.tls);
  /** Identity of each TLS connection, set once the handshake succeeded. */
  const identities = new WeakMap<object, string>();
  /** Serial of each TLS connection's client certificate. */
  const serials = new WeakMap<object, string>();
  /** Connections refused at CONNECT time, with the reason (answered by `authenticate` with CONNACK 5). */
  const refusals = new WeakMap<Client, string>();
  /** Connections served (TLS after its handshake, plain from the start). */
  const tlsSockets = new Set<Duplex>();
  const rawSockets = new Set<Socket | Duplex>();
  /** Plain-profile connections (no TLS): their identity is set only once `plain.authenticate` accepted. */
  const plainSockets = new WeakSet<object>();
  /** The identity a plain connection's CONNECT claims, until it is authenticated. */
  const claims = new WeakMap<Client, string>();
  /** The password a plain connection's CONNECT carried (kept only until `authenticate` runs). */
  const passwords = new WeakMap<Client, Buffer | undefined>();
  /** Connections being closed with a farewell: served nothing more; the value is the farewell's topic. */
  const leaving = new WeakMap<Client, string>();
  /** Sockets `disconnect` is closing (counted once, even while their farewell is still being written). */
  const beingClosed = new WeakSet<Duplex>();

  const identityOf = (client: Client | null): string | undefined =>
    client === null ? undefined : identities.get(client.conn);

  const aedes = await Aedes.createBroker({
    connectTimeout: opts.connectTimeoutMs ?? 10_000,
    preConnect(client: Client, packet: ConnectPacket, callback: (error: Error | null, ok: boolean) => void) {
      if (plainSockets.has(client.conn)) {
        // The plain profile: the username is only a claim until plain.authenticate accepts the password.
        const claimed = packet.username;
        const refuse = (reason: string) => {
          refusals.set(client, reason);
          callback(null, true); // answered in authenticate with CONNACK 5
        };
        passwords.set(client, packet.password === undefined ? undefined : Buffer.from(packet.password));
        packet.password = undefined;
        if (!isValidIdentity(claimed) || claimed === CONTROLLER_IDENTITY) {
          return refuse('plain connection without a device identity as username');
        }
        claims.set(client, claimed);
        packet.clientId = namespacedClientId(claimed, packet.clientId);
        if (packet.will && !mayPublish(claimed, packet.will.topic)) {
          return refuse(`will topic ${JSON.stringify(packet.will.topic)} outside the identity's topics`);
        }
        return callback(null, true);
      }
      const identity = identityOf(client);
      if (identity === undefined)
        return callback(new Error('connection without a certificate identity'), false);
      packet.clientId = namespacedClientId(identity, packet.clientId);
      packet.username = identity;
      packet.password = undefined;
      if (packet.will && !mayPublish(identity, packet.will.topic)) {
        refusals.set(client, `will topic ${JSON.stringify(packet.will.topic)} outside the identity's topics`);
      }
      callback(null, true);
    },
    authenticate(client, _username, _password, done) {
      const deny = (reason: string, identity?: string) => {
        logger.warn({ identity, clientId: client.id, reason }, 'mqtt connect refused');
        const error = new Error(reason) as AuthenticateError;
        error.returnCode = NOT_AUTHORIZED;
        done(error, false);
      };
      if (plainSockets.has(client.conn)) {
        const claimed = claims.get(client);
        const password = passwords.get(client);
        passwords.delete(client);
        const plainRefusal = refusals.get(client);
        if (plainRefusal !== undefined || claimed === undefined) {
          return deny(plainRefusal ?? 'no username', claimed);
        }
        const hook = opts.plain;
        const remoteAddress = (client.conn as Partial<Socket>).remoteAddress;
        if (hook === undefined || remoteAddress === undefined || password === undefined) {
          return deny('plain login refused', claimed);
        }
        return decide(() =>
          hook.authenticate({ username: claimed, password, clientId: client.id, remoteAddress }),
        ).then((allowed) => {
          if (!allowed) return deny('plain login refused', claimed);
          identities.set(client.conn, claimed);
          done(null, true);
        });
      }
      const identity = identityOf(client);
      const refusal = identity === undefined ? 'no certificate identity' : refusals.get(client);
      if (identity === undefined || refusal !== undefined) {
        return deny(refusal ?? 'no certificate identity', identity);
      }
      if (opts.authenticate === undefined) return done(null, true);
      const serial = serials.get(client.conn) ?? '';
      decide(() => opts.authenticate?.({ identity, clientId: client.id, serial }) ?? true).then((allowed) =>
        allowed ? done(null, true) : deny('refused by the authenticate hook', identity),
      );
    },
    authorizePublish(client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void) {
      const identity = identityOf(client);
      const deny = (reason: string) => {
        logger.warn({ identity, clientId: client?.id, topic: packet.topic, reason }, 'mqtt publish refused');
        callback(new Error(`publish to ${JSON.stringify(packet.topic)} refused: ${reason}`));
      };
      if (identity === undefined || client === null) return deny('no certificate identity');
      if (leaving.has(client)) return deny('the session is being closed');
      if (!mayPublish(identity, packet.topic)) return deny('outside the identity topics');
      const hook = opts.authorizePublish;
      if (hook === undefined) return callback(null);
      const payload = Buffer.isBuffer(packet.payload) ? packet.payload : Buffer.from(packet.payload);
      decide(() => hook({ identity, clientId: client.id, topic: packet.topic, payload })).then((allowed) =>
        allowed ? callback(null) : deny('refused by the authorizePublish hook'),
      );
    },
    authorizeSubscribe(
      client: Client,
      sub: Subscription,
      callback: (error: Error | null, subscription?: Subscription | null) => void,
    ) {
      const identity = identityOf(client);
      const deny = (reason: string) => {
        logger.warn({ identity, clientId: client.id, topic: sub.topic, reason }, 'mqtt subscribe refused');
        callback(null, null); // [MQTT-3.9.3-2] SUBACK return code 0x80 for this entry
      };
      if (identity === undefined) return deny('no certificate identity');
      if (leaving.has(client)) return deny('the session is being closed');
      if (!maySubscribe(identity, sub.topic)) return deny('outside the identity topics');
      const hook = opts.authorizeSubscribe;
      if (hook === undefined) return callback(null, sub);
      decide(() => hook({ identity, clientId: client.id, topic: sub.topic })).then((allowed) =>
        allowed ? callback(null, sub) : deny('refused by the authorizeSubscribe hook'),
      );
    },
    authorizeForward(client: Client, packet: AedesPublishPacket) {
      const identity = identityOf(client);
      const farewellTopic = leaving.get(client);
      if (farewellTopic !== undefined && packet.topic !== farewellTopic) return null;
      return identity !== undefined && mayReceive(identity, packet.topic) ? packet : null;
    },
  });
  aedes.on('connackSent', (packet, client: Client) => {
    const identity = identityOf(client);
    const socket = client.conn as Partial<TLSSocket>;
    if (packet.returnCode !== 0 || identity === undefined || opts.onSession === undefined) return;
    if (socket.remoteAddress === undefined || socket.remotePort === undefined) return;
    try {
      opts.onSession({
        identity,
        clientId: client.id,
        remoteAddress: socket.remoteAddress,
        remotePort: socket.remotePort,
      });
    } catch (error) {
      logger.warn({ identity, error: (error as Error).message }, 'session hook failed');
    }
  });
  aedes.on('clientError', (client: Client, error: Error) => {
    logger.info(
      { identity: identityOf(client), clientId: client.id, error: error.message },
      'mqtt client error',
    );
  });

  const server = createServer(
    {
      key: opts.tls.key,
      cert: opts.tls.cert,
      ca: opts.tls.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
    },
    (socket: TLSSocket) => {
      const identity = certificateIdentity(socket);
      if (!identity.ok) {
        logger.warn({ remote: socket.remoteAddress, reason: identity.reason }, 'tls client refused');
        socket.destroy();
        return;
      }
      identities.set(socket, identity.value);
      serials.set(socket, String(socket.getPeerCertificate()?.serialNumber ?? ''));
      tlsSockets.add(socket);
      socket.once('close', () => tlsSockets.delete(socket));
      aedes.handle(socket);
    },
  );
  server.on('connection', (socket: Socket | Duplex) => {
    rawSockets.add(socket);
    socket.once('close', () => rawSockets.delete(socket));
  });
  server.on('tlsClientError', (error: Error, socket: TLSSocket) => {
    logger.info({ remote: socket.remoteAddress, error: error.message }, 'tls handshake failed');
  });

  server.on('error', (error: Error) => logger.warn({ error: error.message }, 'broker listener error'));

  let closing: Promise<void> | undefined;
  const broker: InProcessBroker = {
    aedes,
    accept(socket) {
      server.emit('connection', socket);
    },
    acceptPlain(socket) {
      rawSockets.add(socket);
      socket.once('close', () => rawSockets.delete(socket));
      if (opts.plain === undefined) {
        socket.destroy();
        return;
      }
      (socket as Partial<Socket>).setNoDelay?.(true);
      plainSockets.add(socket);
      tlsSockets.add(socket);
      socket.once('close', () => tlsSockets.delete(socket));
      aedes.handle(socket);
    },
    connect() {
      const [client, served] = duplexPair();
      server.emit('connection', served);
      return client;
    },
    identityOf: (client) => identityOf(client),
    disconnect(identity, farewell) {
      let dropped = 0;
      for (const socket of tlsSockets) {
        if (identities.get(socket) === identity && !socket.destroyed && !beingClosed.has(socket)) {
          dropped += 1;
          beingClosed.add(socket);
          const client = (socket as Duplex & { client?: Client }).client;
          if (farewell === undefined || client === undefined || !client.connected) {
            socket.destroy();
            continue;
          }
          leaving.set(client, farewell.topic);
          setTimeout(() => socket.destroy(), FAREWELL_GRACE_MS).unref();
          client.publish(
            {
              cmd: 'publish',
              topic: farewell.topic,
              payload: farewell.payload,
              qos: 0,
              retain: false,
              dup: false,
            },
            () => socket.end(),
          );
        }
      }
      return dropped;
    },
    close() {
      closing ??= (async () => {
        const released = server.listening
          ? new Promise<void>((resolve) => server.close(() => resolve()))
          : Promise.resolve();
        await new Promise<void>((resolve) => aedes.close(() => resolve()));
        for (const socket of rawSockets) socket.destroy();
        await released;
      })();
      return closing;
    },
  };
  return { broker, server };
}

type IdentityResult = { ok: true; value: string } | { ok: false; reason: string };

/** The single subject CN of a verified peer certificate. */
function certificateIdentity(socket: TLSSocket): IdentityResult {
  if (!socket.authorized)
    return { ok: false, reason: `unverified certificate (${socket.authorizationError})` };
  const cn: unknown = socket.getPeerCertificate()?.subject?.CN;
  if (Array.isArray(cn)) return { ok: false, reason: 'several subject CNs' };
  if (!isValidIdentity(cn)) return { ok: false, reason: `unusable subject CN ${JSON.stringify(cn)}` };
  return { ok: true, value: cn };
}

function namespacedClientId(identity: string, clientId: string): string {
  if (clientId === '' || clientId === identity || clientId.startsWith(`${identity}/`)) return clientId;
  return `${identity}/${clientId}`;
}

/** Runs a hook; false when it throws or rejects (fail closed). */
async function decide(hook: () => boolean | Promise<boolean>): Promise<boolean> {
  try {
    return (await hook()) === true;
  } catch {
    return false;
  }
}

function validateTls(tls: EmbeddedBrokerOptions['tls'] | undefined): void {
  for (const field of ['key', 'cert', 'ca'] as const) {
    const value = tls?.[field];
    if (value === undefined || value.length === 0) {
      throw new BrokerTlsError(
        `tls.${field} is missing: pass the PEM ${field === 'ca' ? 'CA certificate that signs client certificates' : `broker ${field}`} (ensureLocalPki creates them)`,
      );
    }
  }
  try {
    createSecureContext({ key: tls?.key, cert: tls?.cert, ca: tls?.ca });
  } catch (cause) {
    throw new BrokerTlsError(
      `tls.key/tls.cert/tls.ca are not a usable PEM key, certificate and CA (${(cause as Error).message}): ` +
        'pass the files ensureLocalPki created',
      { cause },
    );
  }
}
