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
 *   grant's (the latest allow wins: an extension is an allow with a later `expiresAt`); `revoke` removes it and
 *   succeeds when it is already gone. Grants are keyed by source address, so all grants of one address share one
 *   entry.
 * - Established connections outlive the grant (as conntrack and EC2 security groups do). Piped sockets run with
 *   TCP_NODELAY on both sides, so the gate adds no Nagle delay to small MQTT packets (bench/mqtt-overhead.ts).
 * - Addresses are compared in canonical form: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is the IPv4 address, IPv6 is
 *   lower-case and compressed. So a grant for `1.2.3.4` admits a dual-stack socket's `::ffff:1.2.3.4`.
 * - `originOf(address, port)`: the device source address of the piped connection whose upstream leg leaves the
 *   gate from that local address and port (what the broker sees as its peer), while that connection is piped;
 *   undefined otherwise. The broker's session signal (closed on connect, docs/scaling.md) goes through it.
 * - `close()` stops listening and destroys the connections it piped.
 */
import {
  isIPv4,
  isIPv6,
  createServer as netCreateServer,
  type Server,
  type Socket,
  connect as tcpConnect,
} from 'node:net';
import type { Clock, Firewall, Grant } from '../core/interfaces.ts';
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

export interface GateOptions {
  /** The public port devices dial (the broker port their grants name). Port 0 = any free port. */
  listen: GateEndpoint;
  /** The broker behind the gate. */
  upstream: GateEndpoint;
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
  /** The device address behind the upstream leg the broker sees as peer `address`:`port` (while piped). */
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

/**
 * The canonical text of an IP address, or undefined when it is not one: IPv4-mapped IPv6 becomes dotted quad,
 * IPv6 is lower-case and compressed (RFC 5952, via the WHATWG URL serializer).
 */
export function canonicalAddress(address: string): string | undefined {
  if (isIPv4(address)) return address;
  if (!isIPv6(address) || address.includes('%')) return undefined;
  const compressed = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(compressed);
  if (mapped) {
    const high = Number.parseInt(mapped[1] ?? '0', 16);
    const low = Number.parseInt(mapped[2] ?? '0', 16);
    return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
  }
  return compressed;
}

export async function startGateFirewall(opts: GateOptions): Promise<GateFirewall> {
  const clock = opts.clock ?? systemClock;
  const emit = opts.onEvent ?? (() => undefined);
  /** Canonical source address → expiry (ms since the epoch), indexed by expiry. */
  const grants = new ExpiryIndex<string>();
  const piped = new Set<Socket>();
  /** Upstream leg's local `address|port` → the device source address it carries. */
  const origins = new Map<string, string>();
  const legKey = (address: string, port: number) => `${canonicalAddress(address) ?? address}|${port}`;
  let listenPort = opts.listen.port;

  const purgeExpired = (now: number) => {
    grants.expire(now);
  };

  const onConnection = (client: Socket) => {
    const now = clock.now();
    const source = canonicalAddress(client.remoteAddress ?? '') ?? String(client.remoteAddress);
    const expiresAt = grants.get(source);
    if (expiresAt === undefined || expiresAt <= now) {
      if (expiresAt !== undefined) grants.delete(source);
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
    const upstream = tcpConnect({ host: opts.upstream.host, port: opts.upstream.port, noDelay: true });
    piped.add(client);
    piped.add(upstream);
    let upstreamConnected = false;
    let leg: string | undefined;
    upstream.once('connect', () => {
      upstreamConnected = true;
      if (upstream.localAddress !== undefined && upstream.localPort !== undefined) {
        leg = legKey(upstream.localAddress, upstream.localPort);
        origins.set(leg, source);
      }
      emit({ type: 'gate.piped', time: now, source });
    });
    const teardown = () => {
      if (leg !== undefined && origins.get(leg) === source) origins.delete(leg);
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

  /** The canonical address of a grant that names this gate's port, or undefined when it names other ports. */
  const coveredAddress = (grant: Grant): string | undefined => {
    const address = canonicalAddress(grant.address);
    if (address === undefined) {
      throw new GateGrantError(
        `grant for device ${JSON.stringify(grant.deviceId)} has address ${JSON.stringify(grant.address)}, ` +
          'which is not an IPv4 or IPv6 address: pass the source address the socket observed',
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
      return origins.get(legKey(address, port));
    },
    async allow(list) {
      const now = clock.now();
      const covered = list.map((grant) => [grant, coveredAddress(grant)] as const);
      purgeExpired(now);
      for (const [grant, address] of covered) {
        if (address === undefined || grant.expiresAt <= now) continue;
        grants.set(address, grant.expiresAt);
        emit({ type: 'gate.allowed', time: now, source: address, expiresAt: grant.expiresAt });
      }
    },
    async revoke(list) {
      const now = clock.now();
      const covered = list.map((grant) => coveredAddress(grant));
      purgeExpired(now);
      for (const address of covered) {
        if (address !== undefined && grants.delete(address)) {
          emit({ type: 'gate.revoked', time: now, source: address });
        }
      }
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of piped) socket.destroy();
        piped.clear();
      });
      return closing;
    },
  };
}
