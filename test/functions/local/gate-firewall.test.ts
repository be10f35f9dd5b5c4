/**
 * The userspace gate on loopback with real sockets: a TCP echo server upstream (it counts what reaches it), and
 * the embedded broker behind the gate for one MQTT round trip. Time is a virtual clock.
 */
import { createServer, type Server, type Socket, connect as tcpConnect } from 'node:net';
import { connectAsync } from 'mqtt';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { deviceTopic, startEmbeddedBroker } from '../../../functions/broker/embedded-broker.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import {
  canonicalAddress,
  type GateEvent,
  type GateFirewall,
  GateGrantError,
  GateListenError,
  startGateFirewall,
} from '../../../functions/local/gate-firewall.ts';
import { createCa, issueCertificate } from '../../../functions/pki/local-ca.ts';

const T0 = Date.UTC(2030, 0, 1);

interface Echo {
  server: Server;
  port: number;
  connections: number;
  received: string;
  /** Each upstream connection's peer, as the upstream sees it (the gate's upstream leg). */
  peers: { address: string; port: number }[];
}

async function startEcho(): Promise<Echo> {
  const echo: Echo = { server: createServer(), port: 0, connections: 0, received: '', peers: [] };
  echo.server.on('connection', (socket: Socket) => {
    echo.connections += 1;
    echo.peers.push({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 });
    socket.on('data', (data) => {
      echo.received += data.toString();
      socket.write(data);
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => echo.server.listen(0, '127.0.0.1', resolve));
  echo.port = (echo.server.address() as { port: number }).port;
  return echo;
}

interface Dial {
  socket: Socket;
  received: () => string;
  /** Resolves when the socket closes, with the error code if any. */
  closed: Promise<string | undefined>;
  /** Sends text and resolves with what comes back (the echo). */
  roundTrip(text: string): Promise<string>;
}

function dial(port: number, opts: { host?: string; localAddress?: string } = {}): Dial {
  const socket = tcpConnect({ port, host: opts.host ?? '127.0.0.1', localAddress: opts.localAddress });
  let received = '';
  let error: string | undefined;
  socket.on('data', (data) => {
    received += data.toString();
  });
  socket.on('error', (e: NodeJS.ErrnoException) => {
    error = e.code;
  });
  const closed = new Promise<string | undefined>((resolve) => socket.once('close', () => resolve(error)));
  return {
    socket,
    received: () => received,
    closed,
    roundTrip(text) {
      const start = received.length;
      return new Promise((resolve, reject) => {
        const onData = () => {
          if (received.length - start >= text.length) {
            socket.off('data', onData);
            resolve(received.slice(start));
          }
        };
        socket.on('data', onData);
        socket.once('close', () => reject(new Error(`closed before the echo (${error})`)));
        socket.write(text);
      });
    },
  };
}

function grant(address: string, expiresAt: number, port: number, extra: Partial<Grant> = {}): Grant {
  return {
    deviceId: 'device-1',
    address,
    family: address.includes(':') ? 6 : 4,
    access: [{ protocol: 'tcp', port }],
    openedAt: T0,
    expiresAt,
    ...extra,
  };
}

let echo: Echo;
let gate: GateFirewall | undefined;
let now: number;
let events: GateEvent[];
const dials: Dial[] = [];
const clock = { now: () => now };

async function openGate(host = '127.0.0.1'): Promise<GateFirewall> {
  gate = await startGateFirewall({
    listen: { host, port: 0 },
    upstream: { host: '127.0.0.1', port: echo.port },
    clock,
    onEvent: (e) => events.push(e),
  });
  return gate;
}

function track(d: Dial): Dial {
  dials.push(d);
  return d;
}

beforeEach(async () => {
  now = T0;
  events = [];
  echo = await startEcho();
});

afterEach(async () => {
  for (const d of dials.splice(0)) d.socket.destroy();
  await gate?.close();
  gate = undefined;
  await new Promise<void>((resolve) => echo.server.close(() => resolve()));
});

describe('gate firewall', () => {
  it('resets a connection without a grant: zero bytes back, upstream never sees it', async () => {
    const g = await openGate();
    const d = track(dial(g.address().port));
    d.socket.write('CONNECT');
    const error = await d.closed;
    expect(d.received()).toBe('');
    expect(error === 'ECONNRESET' || error === undefined).toBe(true);
    expect(echo.connections).toBe(0);
    expect(echo.received).toBe('');
    expect(events).toContainEqual({
      type: 'gate.refused',
      time: T0,
      source: '127.0.0.1',
      reason: 'no-grant',
    });
  });

  it('pipes a granted source to the upstream, both ways', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.1', T0 + 30_000, port)]);
    const d = track(dial(port));
    expect(await d.roundTrip('ping')).toBe('ping');
    expect(echo.received).toBe('ping');
    expect(echo.connections).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['gate.allowed', 'gate.piped']);
  });

  it('maps its upstream leg back to the device address while the connection is piped (originOf)', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.2', T0 + 30_000, port)]);
    const d = track(dial(port, { localAddress: '127.0.0.2' }));
    expect(await d.roundTrip('ping')).toBe('ping');
    const [leg] = echo.peers;
    expect(leg?.address).toBe('127.0.0.1');
    expect(g.originOf(leg!.address, leg!.port)).toBe('127.0.0.2');
    expect(g.originOf(`::ffff:${leg!.address}`, leg!.port)).toBe('127.0.0.2'); // canonical form
    expect(g.originOf(leg!.address, leg!.port === 1 ? 2 : 1)).toBeUndefined(); // not a leg of the gate
    d.socket.destroy();
    await d.closed;
    await new Promise((resolve) => setTimeout(resolve, 50)); // the gate's teardown of both legs
    expect(g.originOf(leg!.address, leg!.port)).toBeUndefined();
  });

  it('refuses new connections after expiry while the established one keeps working', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.1', T0 + 30_000, port)]);
    const established = track(dial(port));
    expect(await established.roundTrip('before')).toBe('before');
    now = T0 + 30_000;
    const late = track(dial(port));
    await late.closed;
    expect(late.received()).toBe('');
    expect(echo.connections).toBe(1);
    expect(events).toContainEqual({
      type: 'gate.refused',
      time: T0 + 30_000,
      source: '127.0.0.1',
      reason: 'expired',
    });
    expect(await established.roundTrip('after')).toBe('after');
  });

  it('extends a grant when allowed again with a later expiry', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.1', T0 + 10_000, port)]);
    await g.allow([grant('127.0.0.1', T0 + 60_000, port)]);
    now = T0 + 30_000;
    expect(await track(dial(port)).roundTrip('extended')).toBe('extended');
  });

  it('a second grant with a shorter window does not cut a longer one short', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.1', T0 + 300_000, port)]);
    await g.allow([grant('127.0.0.1', T0 + 10_000, port)]);
    expect(
      events.filter((e) => e.type === 'gate.allowed').map((e) => (e as { expiresAt: number }).expiresAt),
    ).toEqual([T0 + 300_000, T0 + 300_000]);
    now = T0 + 30_000;
    expect(await track(dial(port)).roundTrip('still open')).toBe('still open');
  });

  it('revoke closes new access and is idempotent', async () => {
    const g = await openGate();
    const port = g.address().port;
    const g1 = grant('127.0.0.1', T0 + 30_000, port);
    await g.allow([g1]);
    expect(await track(dial(port)).roundTrip('open')).toBe('open');
    await g.revoke([g1]);
    await g.revoke([g1]);
    const d = track(dial(port));
    await d.closed;
    expect(d.received()).toBe('');
    expect(echo.connections).toBe(1);
  });

  it('admits only the granted source address', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.2', T0 + 30_000, port)]);
    const other = track(dial(port, { localAddress: '127.0.0.1' }));
    await other.closed;
    expect(other.received()).toBe('');
    expect(echo.connections).toBe(0);
    expect(await track(dial(port, { localAddress: '127.0.0.2' })).roundTrip('mine')).toBe('mine');
  });

  it('ignores grants that name another port or protocol', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([
      grant('127.0.0.1', T0 + 30_000, port + 1 > 65_535 ? port - 1 : port + 1),
      { ...grant('127.0.0.1', T0 + 30_000, port), access: [{ protocol: 'udp', port }] },
    ]);
    const d = track(dial(port));
    await d.closed;
    expect(d.received()).toBe('');
    expect(echo.connections).toBe(0);
  });

  it('treats IPv4-mapped IPv6 sources as their IPv4 address on a dual-stack listener', async () => {
    const g = await openGate('::');
    const port = g.address().port;
    await g.allow([grant('127.0.0.1', T0 + 30_000, port)]);
    expect(await track(dial(port, { host: '127.0.0.1' })).roundTrip('v4')).toBe('v4');
    const v6 = track(dial(port, { host: '::1' }));
    await v6.closed;
    expect(v6.received()).toBe('');
    await g.revoke([grant('::ffff:127.0.0.1', T0, port)]);
    const revoked = track(dial(port, { host: '127.0.0.1' }));
    await revoked.closed;
    expect(revoked.received()).toBe('');
    await g.allow([grant('0:0:0:0:0:0:0:1', T0 + 30_000, port)]);
    expect(await track(dial(port, { host: '::1' })).roundTrip('v6')).toBe('v6');
    expect(echo.connections).toBe(2);
  });

  it('refuses a grant whose address is not an IP address', async () => {
    const g = await openGate();
    const port = g.address().port;
    await expect(g.allow([grant('127.0.0.1; drop', T0 + 30_000, port)])).rejects.toBeInstanceOf(
      GateGrantError,
    );
  });

  it('names the busy port and the fix', async () => {
    const error = await startGateFirewall({
      listen: { host: '127.0.0.1', port: echo.port },
      upstream: { host: '127.0.0.1', port: echo.port },
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(GateListenError);
    expect((error as GateListenError).code).toBe('EADDRINUSE');
    expect((error as Error).message).toContain(`port ${echo.port}`);
    expect((error as Error).message).toMatch(/already in use/);
  });

  it('resets the client when the upstream is down, still without a byte', async () => {
    const g = await openGate();
    const port = g.address().port;
    await new Promise<void>((resolve) => echo.server.close(() => resolve()));
    echo.server = createServer();
    await new Promise<void>((resolve) => echo.server.listen(0, '127.0.0.1', resolve));
    await g.allow([grant('127.0.0.1', T0 + 30_000, port)]);
    const d = track(dial(port));
    await d.closed;
    expect(d.received()).toBe('');
    expect(events.some((e) => e.type === 'gate.upstream-failed')).toBe(true);
  });
});

describe('gate in front of the embedded broker', () => {
  it('lets MQTT over mutual TLS through only after the grant', async () => {
    const ca = await createCa('gate test CA');
    const server = await issueCertificate(ca, {
      commonName: 'broker',
      kind: 'server',
      ipAddresses: ['127.0.0.1'],
    });
    const device = await issueCertificate(ca, { commonName: 'device-1', kind: 'client' });
    const broker = await startEmbeddedBroker({
      host: '127.0.0.1',
      port: 0,
      tls: { key: server.key, cert: server.cert, ca: ca.cert },
    });
    let brokerClients = 0;
    broker.aedes.on('client', () => {
      brokerClients += 1;
    });
    const g = await startGateFirewall({
      listen: { host: '127.0.0.1', port: 0 },
      upstream: broker.address(),
      clock,
    });
    try {
      const url = `mqtts://127.0.0.1:${g.address().port}`;
      const tls = {
        ca: ca.cert,
        cert: device.cert,
        key: device.key,
        reconnectPeriod: 0,
        connectTimeout: 5_000,
      };
      await expect(connectAsync(url, tls, false)).rejects.toThrow();
      expect(brokerClients).toBe(0);
      await g.allow([grant('127.0.0.1', T0 + 30_000, g.address().port, { deviceId: 'device-1' })]);
      const client = await connectAsync(url, tls, false);
      const topic = deviceTopic('device-1', 'telemetry');
      await client.subscribeAsync(topic, { qos: 1 });
      const message = new Promise<string>((resolve) =>
        client.once('message', (_t, p) => resolve(p.toString())),
      );
      await client.publishAsync(topic, 'through the gate', { qos: 1 });
      expect(await message).toBe('through the gate');
      await client.endAsync();
    } finally {
      await g.close();
      await broker.close();
    }
  });
});

describe('canonicalAddress', () => {
  it.each([
    ['1.2.3.4', '1.2.3.4'],
    ['::ffff:1.2.3.4', '1.2.3.4'],
    ['::FFFF:1.2.3.4', '1.2.3.4'],
    ['::ffff:0102:0304', '1.2.3.4'],
    ['0:0:0:0:0:ffff:102:304', '1.2.3.4'],
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['::1', '::1'],
    ['fe80::1%eth0', undefined],
    ['1.2.3.4 ', undefined],
    ['1.2.3', undefined],
    ['', undefined],
    ['localhost', undefined],
  ])('%j → %j', (input, expected) => {
    expect(canonicalAddress(input)).toBe(expected);
  });
});

describe('gate firewall: prefix grants (carrier-grade NAT, docs/scaling.md "Prefix grants")', () => {
  it('admits another address of a granted prefix and refuses one outside it, until the revoke', async () => {
    const g = await openGate();
    const port = g.address().port;
    const prefix = grant('127.0.0.0', T0 + 30_000, port, { prefixLength: 24 });
    await g.allow([prefix]);
    expect(g.stats().grants).toBe(1);
    expect(await track(dial(port, { localAddress: '127.0.0.2' })).roundTrip('a')).toBe('a');
    expect(await track(dial(port, { localAddress: '127.0.0.77' })).roundTrip('b')).toBe('b');
    const outside = track(dial(port, { localAddress: '127.0.1.2' }));
    await outside.closed;
    expect(outside.received()).toBe('');
    expect(echo.connections).toBe(2);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'gate.refused', source: '127.0.1.2', reason: 'no-grant' }),
    );
    await g.revoke([prefix]);
    expect(g.stats().grants).toBe(0);
    const after = track(dial(port, { localAddress: '127.0.0.2' }));
    await after.closed;
    expect(after.received()).toBe('');
    expect(echo.connections).toBe(2);
  });

  it('lets a prefix grant expire by itself, and refuses a prefix that is not a network address', async () => {
    const g = await openGate();
    const port = g.address().port;
    await g.allow([grant('127.0.0.0', T0 + 30_000, port, { prefixLength: 24 })]);
    now = T0 + 30_000;
    const late = track(dial(port, { localAddress: '127.0.0.9' }));
    await late.closed;
    expect(late.received()).toBe('');
    expect(echo.connections).toBe(0);
    await expect(g.allow([grant('127.0.0.5', T0 + 60_000, port, { prefixLength: 24 })])).rejects.toThrow(
      GateGrantError,
    );
  });
});
