/**
 * The userspace TCP gate: the embedded default firewall, works anywhere without root.
 *
 * It listens on the broker's public port and pipes a connection to the upstream broker only when the source
 * address holds an unexpired grant whose access list names `tcp/<listen port>`. Contract:
 * - A refused connection is reset (`socket.resetAndDestroy()`: RST, not FIN) at once and never sees a byte from
 *   the gate or the upstream; the upstream never sees the connection. RST rather than a graceful FIN: the gate
 *   holds no TIME_WAIT or half-closed state for scanners, and the client gets the same ECONNRESET whatever it sent.
 *   What a userspace gate cannot hide is that the port completes the TCP handshake: for a port that answers
 *   nothing at all, use the nftables firewall.
 * - Grants expire by themselves at `expiresAt` (checked against the injected clock on every accept; expired entries
 *   are also purged by accept/allow/revoke, so the table stays bounded). The table is an expiry index
 *   (expiry-index.ts: a map by address and a min-heap by expiry), so an allow, a revoke or an accept costs
 *   O(log n) plus the entries that actually expired, never a scan of every open grant; `stats()` reports it. `allow` sets the entry's expiry to the
 *   grant's when that is later (an extension is an allow with a later `expiresAt`; a shorter grant for the same
 *   address never cuts a longer one short); `revoke` removes it and succeeds when it is already gone. Grants are keyed by source address, so all grants of one address share one
 *   entry.
 * - Prefix grants (`Grant.prefixLength`, functions/core/grant-prefix.ts, docs/scaling.md "Prefix grants") are
 *   entries keyed `network/length`: a source with no entry of its own is admitted when the prefix of it at one of
 *   the lengths currently granted has a live entry (one lookup per distinct length in use, never a scan).
 * - Established connections outlive the grant (as conntrack and EC2 security groups do). Piped sockets run with
 *   TCP_NODELAY on both sides, so the gate adds no Nagle delay to small MQTT packets (bench/mqtt-overhead.ts).
 * - Addresses are compared in canonical form: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is the IPv4 address, IPv6 is
 *   lower-case and compressed. So a grant for `1.2.3.4` admits a dual-stack socket's `::ffff:1.2.3.4`.
 * - The upstream is a TCP endpoint (the gate pipes to it) or an in-process handoff (`{ handoff }`): the granted
 *   connection itself, not a byte read from it, is handed to a broker in this process (embedded-broker.ts
 *   `startInProcessBroker`), which then has no listening socket another process could reach without a knock.
 * - `originOf(address, port)`: for a TCP upstream, the device address behind one of the gate's own upstream legs
 *   (the local address and port the upstream broker sees as its peer), while that connection is piped; undefined
 *   for any other endpoint. It is how a broker's session signal behind the gate (Mosquitto's log for `up --broker`,
 *   docs/scaling.md "The signal, locally") names the device's address rather than the gate's loopback leg.
 * - `close()` stops listening and destroys the connections it piped or handed off.
 */
import { createServer as netCreateServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { grantTarget, prefixOf } from '../core/grant-prefix.ts';
import type { Clock, Firewall, Grant } from '../core/interfaces.ts';
import { canonicalAddress } from '../core/ip-address.ts';
import { ListenError, listenErrorCode, listenFix, portInUse } from '../core/listen-error.ts';
import { ExpiryIndex } from './expiry-index.ts';

export interface GateEndpoint {
  host: string;
  port: number;
}

export type GateEvent =
  | { readonly type: 'gate.piped'; readonly time: number; readonly source: string }
  | {
      readonly type: 'gate.refused';
      readonly time: number;
      readonly source: string;
      readonly reason: 'no-grant' | 'expired';
    }
  | {
      readonly type: 'gate.upstream-failed';
      readonly time: number;
      readonly source: string;
      readonly error: string;
    }
  | {
      readonly type: 'gate.allowed';
      readonly time: number;
      readonly source: string;
      readonly expiresAt: number;
    }
  | { readonly type: 'gate.revoked'; readonly time: number; readonly source: string };

/** A broker in this process that takes over a granted connection (`InProcessBroker.accept`). */
export interface GateHandoff {
  handoff(socket: Socket): void;
}

export interface GateOptions {
  /** The public port devices dial (the broker port their grants name). Port 0 = any free port. */
  listen: GateEndpoint;
  /** The broker behind the gate: a TCP endpoint, or a broker in this process. */
  upstream: GateEndpoint | GateHandoff;
  /** @default Date */
  clock?: Clock;
  onEvent?: (e: GateEvent) => void;
}

export interface GateStats {
  /** Addresses holding a grant (expired ones not yet purged included). */
  readonly grants: number;
  /** Work done by the expiry index since the gate started (heap steps): grows with log n per operation. */
  readonly indexSteps: number;
}

export interface GateFirewall extends Firewall {
  address(): GateEndpoint;
  /** The device address behind the gate's upstream leg `address`:`port` (see the contract), if it is one. */
  originOf(address: string, port: number): string | undefined;
  stats(): GateStats;
  close(): Promise<void>;
}

/** The gate cannot listen on its public port. */
export class GateListenError extends ListenError {
  override readonly name: string = 'GateListenError';

  constructor(host: string, port: number, code: string | undefined, options?: { cause?: unknown }) {
    const fix = listenFix(code, {
      inUse:
        'stop the process holding it (e.g. another broker or blackcloud) or choose another public MQTT port',
      permission: 'run as root for ports below 1024, or choose a public MQTT port of 1024 or more',
      notLocal: 'choose an address of this host, such as 0.0.0.0 or 127.0.0.1',
      other: 'check the listen host and port',
    });
    super(
      host,
      port,
      code,
      `the gate firewall cannot listen on ${host} port ${port}` +
        `${portInUse(code) ? ': the port is already in use' : ` (${code ?? 'unknown error'})`}: ${fix}`,
      options,
    );
  }
}

/** A grant the gate cannot understand (misuse by the caller, not untrusted input). */
export class GateGrantError extends Error {
  override readonly name: string = 'GateGrantError';
}

const systemClock: Clock = { now: () => Date.now() };

/** The canonical text of an IP address (functions/core/ip-address.ts), re-exported for the gate's callers. */
export { canonicalAddress };

export async function startGateFirewall(opts: GateOptions): Promise<GateFirewall> {
  const clock = opts.clock ?? systemClock;
  const emit = opts.onEvent ?? (() => undefined);
  /** Canonical source address → expiry (ms since the epoch), indexed by expiry. */
  const grants = new ExpiryIndex<string>();
  const piped = new Set<Socket>();
  /** `address:port` of each upstream leg, as the upstream sees its peer → the device address it carries. */
  const legs = new Map<string, string>();
  const legKey = (address: string, port: number) => `${canonicalAddress(address) ?? address}:${port}`;
  let listenPort = opts.listen.port;

  /** Prefix length → how many `network/length` entries of it the table holds (the lengths a source is tried at). */
  const prefixLengths = new Map<number, number>();
  const lengthOf = (key: string): number | undefined => {
    const slash = key.indexOf('/');
    return slash < 0 ? undefined : Number(key.slice(slash + 1));
  };
  const forgot = (key: string) => {
    const length = lengthOf(key);
    if (length === undefined) return;
    const count = (prefixLengths.get(length) ?? 1) - 1;
    if (count <= 0) prefixLengths.delete(length);
    else prefixLengths.set(length, count);
  };
  const extend = (key: string, expiresAt: number) => {
    const length = lengthOf(key);
    if (length !== undefined && grants.get(key) === undefined) {
      prefixLengths.set(length, (prefixLengths.get(length) ?? 0) + 1);
    }
    grants.extend(key, expiresAt);
  };
  const remove = (key: string): boolean => {
    if (!grants.delete(key)) return false;
    forgot(key);
    return true;
  };

  const purgeExpired = (now: number) => {
    for (const key of grants.expire(now)) forgot(key);
  };

  /** The table key admitting `source`: its own entry, else the longest granted prefix containing it. */
  const grantKeyOf = (source: string): string => {
    if (grants.get(source) !== undefined || prefixLengths.size === 0) return source;
    let best: string | undefined;
    let bestLength = -1;
    for (const length of prefixLengths.keys()) {
      const key = prefixOf(source, length);
      if (key !== undefined && length > bestLength && grants.get(key) !== undefined) {
        best = key;
        bestLength = length;
      }
    }
    return best ?? source;
  };

  const onConnection = (client: Socket) => {
    const now = clock.now();
    const source = canonicalAddress(client.remoteAddress ?? '') ?? String(client.remoteAddress);
    const key = grantKeyOf(source);
    const expiresAt = grants.get(key);
    if (expiresAt === undefined || expiresAt <= now) {
      if (expiresAt !== undefined) remove(key);
      client.on('error', () => undefined);
      client.resetAndDestroy();
      emit({
        type: 'gate.refused',
        time: now,
        source,
        reason: expiresAt === undefined ? 'no-grant' : 'expired',
      });
      return;
    }
    pipe(client, source, now);
  };

  const pipe = (client: Socket, source: string, now: number) => {
    // TCP_NODELAY both ways: MQTT packets are small, and Nagle + delayed ACK would stall each one ~40 ms.
    client.setNoDelay(true);
    const target = opts.upstream;
    if ('handoff' in target) {
      piped.add(client);
      client.once('close', () => piped.delete(client));
      client.on('error', () => undefined); // the broker's TLS socket reports it; never an unhandled 'error'
      emit({ type: 'gate.piped', time: now, source });
      target.handoff(client);
      return;
    }
    const upstream = tcpConnect({ host: target.host, port: target.port, noDelay: true });
    piped.add(client);
    piped.add(upstream);
    let upstreamConnected = false;
    let leg: string | undefined;
    upstream.once('connect', () => {
      upstreamConnected = true;
      if (upstream.localAddress !== undefined && upstream.localPort !== undefined) {
        leg = legKey(upstream.localAddress, upstream.localPort);
        legs.set(leg, source);
      }
      emit({ type: 'gate.piped', time: now, source });
    });
    const teardown = () => {
      if (leg !== undefined) legs.delete(leg);
      leg = undefined;
      piped.delete(client);
      piped.delete(upstream);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', teardown);
    client.on('close', teardown);
    upstream.on('error', (error) => {
      if (!upstreamConnected) {
        emit({ type: 'gate.upstream-failed', time: clock.now(), source, error: error.message });
        client.resetAndDestroy();
      }
      teardown();
    });
    upstream.on('close', teardown);
    client.pipe(upstream);
    upstream.pipe(client);
  };

  const server: Server = netCreateServer(onConnection);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.listen.port, opts.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (cause) {
    throw new GateListenError(opts.listen.host, opts.listen.port, listenErrorCode(cause), { cause });
  }
  const bound = server.address();
  if (bound !== null && typeof bound === 'object') listenPort = bound.port;

  /** The table key (canonical address, or `network/length` of a prefix grant) of a grant that names this gate's
   *  port, or undefined when it names other ports. */
  const coveredAddress = (grant: Grant): string | undefined => {
    const canonical = canonicalAddress(grant.address);
    let address = canonical;
    if (canonical !== undefined && grant.prefixLength !== undefined) {
      const target = grantTarget({ address: canonical, prefixLength: grant.prefixLength });
      address = prefixOf(canonical, grant.prefixLength) === target ? target : undefined; // a network address only
    }
    if (address === undefined) {
      throw new GateGrantError(
        `grant for device ${JSON.stringify(grant.deviceId)} has address ${JSON.stringify(grant.address)}, ` +
          `${grant.prefixLength === undefined ? '' : ` and prefix length ${grant.prefixLength}`}, ` +
          'which is not an IPv4 or IPv6 address (or a network address of that length): pass the source address ' +
          'the socket observed, or the network address of its prefix (functions/core/grant-prefix.ts)',
      );
    }
    const covers = grant.access.some((entry) => entry.protocol === 'tcp' && entry.port === listenPort);
    return covers ? address : undefined;
  };

  let closing: Promise<void> | undefined;
  return {
    address() {
      const info = server.address();
      return info !== null && typeof info === 'object'
        ? { host: info.address, port: info.port }
        : { host: opts.listen.host, port: listenPort };
    },
    stats() {
      return { grants: grants.size, indexSteps: grants.steps };
    },
    originOf(address, port) {
      return legs.get(legKey(address, port));
    },
    async allow(list) {
      const now = clock.now();
      const covered = list.map((grant) => [grant, coveredAddress(grant)] as const);
      purgeExpired(now);
      for (const [grant, address] of covered) {
        if (address === undefined || grant.expiresAt <= now) continue;
        extend(address, grant.expiresAt);
        emit({ type: 'gate.allowed', time: now, source: address, expiresAt: grants.get(address)! });
      }
    },
    async revoke(list) {
      const now = clock.now();
      const covered = list.map((grant) => coveredAddress(grant));
      purgeExpired(now);
      for (const address of covered) {
        if (address !== undefined && remove(address)) {
          emit({ type: 'gate.revoked', time: now, source: address });
        }
      }
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of piped) socket.destroy();
        piped.clear();
        legs.clear();
      });
      return closing;
    },
  };
}
