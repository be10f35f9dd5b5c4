/**
 * The nftables firewall against the real kernel, inside two network namespaces joined by veth (root only):
 * a TCP echo server in the server namespace, the firewall applied there (`ip netns exec NS nft`), probes from the
 * client namespace. Plus the nft text itself and its refusal of malicious input.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { prefixOf } from '../../../functions/core/grant-prefix.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { canonicalAddress } from '../../../functions/core/ip-address.ts';
import {
  NFTABLES_UNAVAILABLE_FIX,
  NftablesCommandError,
  type NftablesFirewall,
  NftablesInputError,
  NftablesUnavailableError,
  nftCommand,
  startNftablesFirewall,
} from '../../../functions/local/nftables-firewall.ts';
import { prefixLayoutText } from '../../../functions/local/nftables-ruleset.ts';
import {
  NftablesSessionError,
  type NftSession,
  type NftSessionEvent,
  startNftSession,
} from '../../../functions/local/nftables-session.ts';
import { createNetnsPair, type JsonLineProcess, type NetnsPair, netnsExists } from '../../support/netns.ts';

const SERVER_CODE = `
import { createServer } from 'node:net';
const server = createServer((socket) => {
  console.log(JSON.stringify({ event: 'connection', remote: socket.remoteAddress }));
  socket.on('data', (data) => socket.write(data));
  socket.on('error', () => {});
});
server.listen(0, '::', () => console.log(JSON.stringify({ event: 'listening', port: server.address().port })));
`;

/**
 * argv: host port connectTimeoutMs [localAddress]. Prints connected | timeout | error{code}, then data lines;
 * stdin → socket.
 */
const CLIENT_CODE = `
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
const [host, port, timeoutMs, localAddress] = process.argv.slice(1);
const out = (o) => console.log(JSON.stringify(o));
const socket = connect({ host, port: Number(port), ...(localAddress ? { localAddress } : {}) });
const timer = setTimeout(() => { out({ event: 'timeout' }); process.exit(0); }, Number(timeoutMs));
socket.on('connect', () => { clearTimeout(timer); out({ event: 'connected' }); });
socket.on('data', (data) => out({ event: 'data', data: data.toString() }));
socket.on('error', (error) => { clearTimeout(timer); out({ event: 'error', code: error.code }); process.exit(0); });
socket.on('close', () => { out({ event: 'closed' }); process.exit(0); });
createInterface({ input: process.stdin }).on('line', (line) => socket.write(line));
`;

const CONNECT_TIMEOUT_MS = 1500;

let pair: NetnsPair;
let serverProcess: JsonLineProcess;
let serverPort: number;
let rulesetBefore: string;
let firewall: NftablesFirewall | undefined;
const table = `bc_${Math.random().toString(16).slice(2, 8)}`;
const clients: JsonLineProcess[] = [];

const inServer = () => nftCommand(['ip', 'netns', 'exec', pair.server.name, 'nft']);
const listRuleset = () => pair.exec(pair.server.name, ['nft', 'list', 'ruleset']);

beforeAll(async () => {
  pair = await createNetnsPair('bcnft');
  // A table that is not ours: it must survive everything below, untouched.
  await pair.exec(
    pair.server.name,
    ['nft', '-f', '-'],
    'table ip keepme {\n  set other { type ipv4_addr; elements = { 192.0.2.1 } }\n' +
      '  chain c { type filter hook input priority 10; policy accept; }\n}\n',
  );
  rulesetBefore = await listRuleset();
  serverProcess = pair.node(pair.server.name, SERVER_CODE);
  serverPort = Number((await serverProcess.waitFor((l) => l.event === 'listening')).port);
});

afterAll(async () => {
  await firewall?.close().catch(() => undefined);
  await pair?.destroy();
  if (pair) expect(await netnsExists(pair.server.name)).toBe(false);
});

beforeEach(async () => {
  firewall = await startNftablesFirewall({
    table,
    ports: [{ protocol: 'tcp', port: serverPort }],
    run: inServer(),
  });
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.kill();
  await firewall?.close();
  firewall = undefined;
});

function grant(address: string, lifetimeMs: number, extra: Partial<Grant> = {}): Grant {
  const now = Date.now();
  return {
    deviceId: 'device-1',
    address,
    family: address.includes(':') ? 6 : 4,
    access: [{ protocol: 'tcp', port: serverPort }],
    openedAt: now,
    expiresAt: now + lifetimeMs,
    ...extra,
  };
}

/**
 * Dials from the client namespace (from `from`, one of its addresses, when given) and reports the first outcome;
 * leaves the connection open when it connects.
 */
async function dial(
  host: string,
  port = serverPort,
  from?: string,
): Promise<{ outcome: string; code?: unknown; proc: JsonLineProcess }> {
  const proc = pair.node(pair.client.name, CLIENT_CODE, [
    host,
    String(port),
    String(CONNECT_TIMEOUT_MS),
    ...(from === undefined ? [] : [from]),
  ]);
  clients.push(proc);
  const first = await proc.waitFor((l) => ['connected', 'timeout', 'error'].includes(String(l.event)));
  return { outcome: String(first.event), code: first.code, proc };
}

let token = 0;
async function roundTrip(proc: JsonLineProcess): Promise<string> {
  token += 1;
  const text = `token-${token}`;
  proc.send(text);
  const line = await proc.waitFor((l) => l.event === 'data' && String(l.data).includes(text));
  return String(line.data);
}

const connections = () => serverProcess.lines.filter((l) => l.event === 'connection');
const connectionsSeen = () => connections().length;

describe('nftables firewall in a network namespace', () => {
  it('before any grant: a SYN to the guarded port gets no answer at all (timeout, not RST)', async () => {
    const seen = connectionsSeen();
    const probe = await dial(pair.server.ipv4);
    expect(probe.outcome).toBe('timeout');
    expect(connectionsSeen()).toBe(seen);
    // Contrast: an unguarded closed port in the same namespace answers with RST (the drop is ours).
    const closedPort = serverPort === 65_535 ? serverPort - 1 : serverPort + 1;
    expect(await dial(pair.server.ipv4, closedPort)).toMatchObject({
      outcome: 'error',
      code: 'ECONNREFUSED',
    });
  });

  it('after allow: the granted address connects and data flows; other families stay closed', async () => {
    await firewall!.allow([grant(pair.client.ipv4, 30_000)]);
    const probe = await dial(pair.server.ipv4);
    expect(probe.outcome).toBe('connected');
    expect(await roundTrip(probe.proc)).toContain('token-');
    expect((await dial(pair.server.ipv6)).outcome).toBe('timeout');
    await firewall!.allow([grant(pair.client.ipv6, 30_000)]);
    const v6 = await dial(pair.server.ipv6);
    expect(v6.outcome).toBe('connected');
    expect(await roundTrip(v6.proc)).toContain('token-');
  });

  it('after the element timeout: new SYNs get no answer while the established connection still works', async () => {
    await firewall!.allow([grant(pair.client.ipv4, 3_000)]);
    const established = await dial(pair.server.ipv4);
    expect(established.outcome).toBe('connected');
    expect(await roundTrip(established.proc)).toContain('token-');
    // Bounded wait for the kernel to expire the element (3 s): dial until a SYN goes unanswered.
    let outcome = 'connected';
    const deadline = Date.now() + 15_000;
    while (outcome !== 'timeout' && Date.now() < deadline) {
      const probe = await dial(pair.server.ipv4);
      outcome = probe.outcome;
      probe.proc.kill();
    }
    expect(outcome).toBe('timeout');
    expect(await roundTrip(established.proc)).toContain('token-');
  }, 30_000);

  it('allowing again replaces the element timeout (extension)', async () => {
    await firewall!.allow([grant(pair.client.ipv4, 2_500)]);
    await firewall!.allow([grant(pair.client.ipv4, 600_000)]);
    const set = await pair.exec(pair.server.name, ['nft', 'list', 'set', 'inet', table, 'allow4']);
    // 600 000 ms less the few ms between building the grant and applying it: nft prints 10m or 9m59s9xxms.
    expect(set).toMatch(
      new RegExp(`${pair.client.ipv4.replaceAll('.', '\\.')} \\. tcp \\. ${serverPort} timeout (10m|9m59s)`),
    );
    expect(set.match(new RegExp(pair.client.ipv4.replaceAll('.', '\\.'), 'g'))).toHaveLength(1);
  });

  it('a second grant with a shorter window does not cut a longer one short', async () => {
    await firewall!.allow([grant(pair.client.ipv4, 600_000)]);
    await firewall!.allow([grant(pair.client.ipv4, 2_500), grant(pair.client.ipv4, 1_000)]);
    const set = await pair.exec(pair.server.name, ['nft', 'list', 'set', 'inet', table, 'allow4']);
    expect(set).toMatch(
      new RegExp(`${pair.client.ipv4.replaceAll('.', '\\.')} \\. tcp \\. ${serverPort} timeout (10m|9m59s)`),
    );
    // Revoked, it is forgotten: a short grant then applies as given.
    await firewall!.revoke([grant(pair.client.ipv4, 0)]);
    await firewall!.allow([grant(pair.client.ipv4, 20_000)]);
    const after = await pair.exec(pair.server.name, ['nft', 'list', 'set', 'inet', table, 'allow4']);
    expect(after).toMatch(
      new RegExp(`${pair.client.ipv4.replaceAll('.', '\\.')} \\. tcp \\. ${serverPort} timeout (20s|19s)`),
    );
  });

  it('revoke removes access; revoking again or revoking the never-granted succeeds', async () => {
    const g = grant(pair.client.ipv4, 30_000);
    await firewall!.allow([g]);
    expect((await dial(pair.server.ipv4)).outcome).toBe('connected');
    await firewall!.revoke([g]);
    expect((await dial(pair.server.ipv4)).outcome).toBe('timeout');
    await firewall!.revoke([g]);
    await firewall!.revoke([grant('192.0.2.77', 30_000), grant('2001:db8::77', 30_000)]);
  });

  it('ignores grant entries for unguarded ports and skips expired grants', async () => {
    await firewall!.allow([
      grant(pair.client.ipv4, 30_000, { access: [{ protocol: 'tcp', port: serverPort === 1 ? 2 : 1 }] }),
      grant(pair.client.ipv6, -1_000),
    ]);
    const sets = await pair.exec(pair.server.name, ['nft', 'list', 'table', 'inet', table]);
    expect(sets).not.toContain('elements');
    expect((await dial(pair.server.ipv4)).outcome).toBe('timeout');
  });

  it('refuses malicious grant values before nft runs, leaving the ruleset as it was', async () => {
    const before = await listRuleset();
    const evil = `${pair.client.ipv4} . tcp . ${serverPort} }; flush ruleset; add element inet ${table} allow4 { 1.2.3.4`;
    await expect(firewall!.allow([grant(evil, 30_000)])).rejects.toBeInstanceOf(NftablesInputError);
    expect(await listRuleset()).toBe(before);
  });

  it('close() deletes only its table: the pre-existing table and the rest of the ruleset are untouched', async () => {
    await firewall!.allow([grant(pair.client.ipv4, 30_000)]);
    expect(await pair.exec(pair.server.name, ['nft', 'list', 'tables'])).toContain(`table inet ${table}`);
    await firewall!.close();
    await firewall!.close();
    firewall = undefined;
    const tables = await pair.exec(pair.server.name, ['nft', 'list', 'tables']);
    expect(tables).not.toContain(table);
    expect(tables).toContain('table ip keepme');
    expect(await listRuleset()).toBe(rulesetBefore);
  });

  it('filters loopback too, unless exemptLoopback is set', async () => {
    const local = (host: string) =>
      pair.node(pair.server.name, CLIENT_CODE, [host, String(serverPort), String(CONNECT_TIMEOUT_MS)]);
    const strict = local('127.0.0.1');
    clients.push(strict);
    expect(
      (await strict.waitFor((l) => ['connected', 'timeout', 'error'].includes(String(l.event)))).event,
    ).toBe('timeout');
    firewall = await startNftablesFirewall({
      table,
      ports: [{ protocol: 'tcp', port: serverPort }],
      run: inServer(),
      exemptLoopback: true,
    });
    const exempt = local('127.0.0.1');
    clients.push(exempt);
    expect(
      (await exempt.waitFor((l) => ['connected', 'timeout', 'error'].includes(String(l.event)))).event,
    ).toBe('connected');
    expect((await dial(pair.server.ipv4)).outcome).toBe('timeout');
  });

  it('replaces a stale table of the same name left by a crashed run', async () => {
    await firewall!.allow([grant(pair.client.ipv4, 30_000)]);
    const restarted = await startNftablesFirewall({
      table,
      ports: [{ protocol: 'tcp', port: serverPort }],
      run: inServer(),
    });
    expect(await pair.exec(pair.server.name, ['nft', 'list', 'table', 'inet', table])).not.toContain(
      'elements',
    );
    expect((await dial(pair.server.ipv4)).outcome).toBe('timeout');
    firewall = restarted;
  });
});

describe('prefix grants in a network namespace (docs/scaling.md "Prefix grants")', () => {
  // The client's link is a /24 (IPv4) and a /64 (IPv6); extra client addresses give sources inside and outside
  // a granted prefix: .77 and .90 lie in .64/26, .2 (the client's own) and .200 outside it.
  const v4 = (last: number) => pair.client.ipv4.replace(/\.\d+$/, `.${last}`);
  const inside = () => v4(77);
  const alsoInside = () => v4(90);
  const outside = () => v4(200);
  const v6Link = () => (prefixOf(pair.client.ipv6, 64) as string).split('/')[0] as string;
  const v6Inside = () => `${v6Link()}77`;
  const pattern = (text: string) => text.replace(/[.:/]/g, (c) => `\\${c}`);
  const listSet = (set: string) => pair.exec(pair.server.name, ['nft', 'list', 'set', 'inet', table, set]);
  const prefixGrant = (address: string, prefixLength: number, lifetimeMs: number) =>
    grant(address, lifetimeMs, { prefixLength });
  /**
   * The remote address the server saw for its connection after the first `before` (its line comes on its own),
   * canonical (an IPv4 peer of the dual-stack socket is its IPv4 address).
   */
  const remoteAfter = async (before: number) => {
    await vi.waitFor(() => expect(connectionsSeen()).toBeGreaterThan(before), { timeout: 5000 });
    return canonicalAddress(String(connections()[before]?.remote));
  };

  beforeAll(async () => {
    for (const address of [inside(), alsoInside(), outside()]) {
      await pair.exec(pair.client.name, ['ip', 'addr', 'add', `${address}/24`, 'dev', pair.client.iface]);
    }
    await pair.exec(pair.client.name, [
      'ip',
      'addr',
      'add',
      `${v6Inside()}/64`,
      'dev',
      pair.client.iface,
      'nodad',
    ]);
  });

  it('a source inside the prefix connects and data flows; sources outside it get no answer', async () => {
    await firewall!.allow([prefixGrant(v4(64), 26, 30_000)]);
    const before = connectionsSeen();
    const probe = await dial(pair.server.ipv4, serverPort, inside());
    expect(probe.outcome).toBe('connected');
    expect(await roundTrip(probe.proc)).toContain('token-');
    expect(await remoteAfter(before)).toBe(inside());
    expect((await dial(pair.server.ipv4, serverPort, alsoInside())).outcome).toBe('connected');
    expect((await dial(pair.server.ipv4, serverPort, outside())).outcome).toBe('timeout');
    expect((await dial(pair.server.ipv4, serverPort, pair.client.ipv4)).outcome).toBe('timeout');
    expect(await listSet('allow4_26')).toMatch(
      new RegExp(`${pattern(v4(64))}/26 \\. tcp \\. ${serverPort} timeout (30s|29s)`),
    );
    // Not opened as a host either: the host set stays empty.
    expect(await listSet('allow4')).not.toContain('elements');
  });

  it('an IPv6 /64 opens every address of the /64, and a /64 elsewhere opens none of them', async () => {
    await firewall!.allow([prefixGrant('fd00:bc:ffff:ffff::', 64, 30_000)]);
    expect((await dial(pair.server.ipv6)).outcome).toBe('timeout');
    await firewall!.allow([prefixGrant(v6Link(), 64, 30_000)]);
    const before = connectionsSeen();
    const own = await dial(pair.server.ipv6, serverPort, pair.client.ipv6);
    expect(own.outcome).toBe('connected');
    expect(await roundTrip(own.proc)).toContain('token-');
    expect(await remoteAfter(before)).toBe(canonicalAddress(pair.client.ipv6));
    expect((await dial(pair.server.ipv6, serverPort, v6Inside())).outcome).toBe('connected');
    expect(await remoteAfter(before + 1)).toBe(canonicalAddress(v6Inside()));
    const set = await listSet('allow6_64');
    expect(set).toContain(`${v6Link()}/64 . tcp . ${serverPort} timeout`);
    expect(set).toContain(`fd00:bc:ffff:ffff::/64 . tcp . ${serverPort} timeout`);
  });

  it('allowing the prefix again extends it; a shorter grant does not cut it short', async () => {
    await firewall!.allow([prefixGrant(v4(64), 26, 2_500)]);
    await firewall!.allow([prefixGrant(v4(64), 26, 600_000)]);
    await firewall!.allow([prefixGrant(v4(64), 26, 1_000)]);
    const set = await listSet('allow4_26');
    expect(set).toMatch(new RegExp(`${pattern(v4(64))}/26 \\. tcp \\. ${serverPort} timeout (10m|9m59s)`));
    expect(set.match(new RegExp(pattern(v4(64)), 'g'))).toHaveLength(1);
  });

  it('revoke closes the prefix; a host grant inside it and the prefix are independent', async () => {
    await firewall!.allow([grant(inside(), 30_000), prefixGrant(v4(64), 26, 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, alsoInside())).outcome).toBe('connected');
    await firewall!.revoke([prefixGrant(v4(64), 26, 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, alsoInside())).outcome).toBe('timeout');
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('connected'); // its host grant
    await firewall!.allow([prefixGrant(v4(64), 26, 30_000)]);
    await firewall!.revoke([grant(inside(), 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('connected'); // the prefix again
    expect(await listSet('allow4')).not.toContain('elements');
    // Revoking again, or a prefix of a length never granted, succeeds.
    await firewall!.revoke([prefixGrant(v4(64), 26, 30_000)]);
    await firewall!.revoke([prefixGrant(v4(64), 26, 30_000), prefixGrant(v4(0), 24, 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('timeout');
  });

  it('nested prefixes of different lengths are separate grants (an interval set refuses overlaps)', async () => {
    await firewall!.allow([prefixGrant(v4(0), 24, 30_000), prefixGrant(v4(64), 26, 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, outside())).outcome).toBe('connected');
    await firewall!.revoke([prefixGrant(v4(0), 24, 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, outside())).outcome).toBe('timeout');
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('connected');
    const chain = await pair.exec(pair.server.name, ['nft', 'list', 'chain', 'inet', table, 'prefixes']);
    expect(chain.match(/@allow4_2[46] accept/g)).toHaveLength(2);
    // The layout sent again (a session line resent after a restart) changes nothing: no second rule, no element lost.
    const sets = [
      { family: 4, prefixLength: 24 },
      { family: 4, prefixLength: 26 },
    ] as const;
    await pair.exec(pair.server.name, ['nft', '-f', '-'], prefixLayoutText(table, sets));
    expect(await pair.exec(pair.server.name, ['nft', 'list', 'chain', 'inet', table, 'prefixes'])).toBe(
      chain,
    );
    expect(await listSet('allow4_26')).toContain(`${v4(64)}/26 . tcp . ${serverPort} timeout`);
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('connected');
  });

  it('the prefix expires by itself: new SYNs get no answer, the established connection and a host grant stay', async () => {
    await firewall!.allow([prefixGrant(v4(64), 26, 3_000), grant(alsoInside(), 30_000)]);
    const established = await dial(pair.server.ipv4, serverPort, inside());
    expect(established.outcome).toBe('connected');
    let outcome = 'connected';
    const deadline = Date.now() + 15_000;
    while (outcome !== 'timeout' && Date.now() < deadline) {
      const probe = await dial(pair.server.ipv4, serverPort, inside());
      outcome = probe.outcome;
      probe.proc.kill();
    }
    expect(outcome).toBe('timeout');
    expect(await listSet('allow4_26')).not.toContain('elements');
    expect(await roundTrip(established.proc)).toContain('token-');
    expect((await dial(pair.server.ipv4, serverPort, alsoInside())).outcome).toBe('connected');
  }, 30_000);

  it('close() removes the prefix sets with the table; a restart starts with no prefix open', async () => {
    await firewall!.allow([prefixGrant(v4(64), 26, 30_000), prefixGrant(v6Link(), 64, 30_000)]);
    const restarted = await startNftablesFirewall({
      table,
      ports: [{ protocol: 'tcp', port: serverPort }],
      run: inServer(),
    });
    firewall = restarted;
    const listed = await pair.exec(pair.server.name, ['nft', 'list', 'table', 'inet', table]);
    expect(listed).not.toContain('allow4_26');
    expect(listed).not.toContain('allow6_64');
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('timeout');
    await firewall.allow([prefixGrant(v4(64), 26, 30_000)]);
    expect((await dial(pair.server.ipv4, serverPort, inside())).outcome).toBe('connected');
    await firewall.close();
    firewall = undefined;
    expect(await listRuleset()).toBe(rulesetBefore);
  });
});

/** Kills one process by id and waits until it is gone. */
async function killAndWait(pid: number | undefined): Promise<void> {
  expect(pid).toBeTypeOf('number');
  process.kill(pid as number, 'SIGKILL');
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    try {
      process.kill(pid as number, 0);
    } catch {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`process ${pid} still alive`);
}

describe('grants through the long-lived nft session, in a network namespace', () => {
  /** The namespace's command, with the session it opens captured (to find and kill its nft). */
  // These tests bring their own table: the shared one (beforeEach) would drop what theirs grants.
  beforeEach(async () => {
    await firewall?.close();
    firewall = undefined;
  });

  function capturing(sessionOpts: { maxRestarts?: number } = {}) {
    const inner = inServer();
    const captured: { session?: NftSession; events: NftSessionEvent[] } = { events: [] };
    const run = Object.assign((args: string[], stdin?: string) => inner(args, stdin), {
      openSession: (opts: Parameters<typeof inner.openSession>[0] = {}) => {
        captured.session = startNftSession({
          ...opts,
          ...sessionOpts,
          prefix: ['ip', 'netns', 'exec', pair.server.name, 'nft'],
          onEvent: (event) => {
            captured.events.push(event);
            opts.onEvent?.(event);
          },
        });
        return captured.session;
      },
    });
    return { run, captured };
  }

  it('grants and revokes without a process per grant: the same nft serves every change', async () => {
    const { run, captured } = capturing();
    const fw = await startNftablesFirewall({
      table: `${table}s`,
      ports: [{ protocol: 'tcp', port: serverPort }],
      run,
    });
    try {
      const pid = captured.session?.pid;
      expect(pid).toBeTypeOf('number');
      const g = grant(pair.client.ipv4, 30_000);
      await fw.allow([g]);
      const probe = await dial(pair.server.ipv4);
      expect(probe.outcome).toBe('connected');
      probe.proc.kill();
      for (let i = 1; i <= 50; i++) await fw.allow([grant(`192.0.2.${i}`, 30_000)]);
      const set = await pair.exec(pair.server.name, ['nft', 'list', 'set', 'inet', `${table}s`, 'allow4']);
      expect(set.match(/192\.0\.2\.\d+ \. tcp/g)).toHaveLength(50);
      await fw.revoke([g]);
      expect((await dial(pair.server.ipv4)).outcome).toBe('timeout');
      expect(captured.session?.pid).toBe(pid);
      expect(captured.events).toEqual([]);
    } finally {
      await fw.close();
    }
    expect(await pair.exec(pair.server.name, ['nft', 'list', 'tables'])).not.toContain(`${table}s`);
  }, 60_000);

  it('a killed nft is replaced and reported; grants keep working', async () => {
    const notes: NftSessionEvent[] = [];
    const { run, captured } = capturing();
    const fw = await startNftablesFirewall({
      table: `${table}k`,
      ports: [{ protocol: 'tcp', port: serverPort }],
      run,
      onSessionEvent: (event) => notes.push(event),
    });
    try {
      await fw.allow([grant('192.0.2.1', 30_000)]);
      const first = captured.session?.pid;
      await killAndWait(first);
      await fw.allow([grant(pair.client.ipv4, 30_000)]);
      expect(captured.session?.pid).not.toBe(first);
      expect(notes).toEqual([{ type: 'restarted', restarts: 1, reason: 'nft exited (SIGKILL)' }]);
      expect((await dial(pair.server.ipv4)).outcome).toBe('connected');
    } finally {
      await fw.close();
    }
  }, 60_000);

  it('past the restart bound the session gives up, reported, and grants fall back to nft -f - per batch', async () => {
    const notes: NftSessionEvent[] = [];
    const { run, captured } = capturing({ maxRestarts: 0 });
    const fw = await startNftablesFirewall({
      table: `${table}g`,
      ports: [{ protocol: 'tcp', port: serverPort }],
      run,
      onSessionEvent: (event) => notes.push(event),
    });
    try {
      await killAndWait(captured.session?.pid);
      await expect(captured.session?.apply('')).rejects.toBeInstanceOf(NftablesSessionError);
      expect(notes).toEqual([{ type: 'gave-up', restarts: 0, reason: 'nft exited (SIGKILL)' }]);
      expect(captured.session?.pid).toBeUndefined();
      await fw.allow([grant(pair.client.ipv4, 30_000)]);
      expect((await dial(pair.server.ipv4)).outcome).toBe('connected');
    } finally {
      await fw.close();
    }
    expect(await pair.exec(pair.server.name, ['nft', 'list', 'tables'])).not.toContain(`${table}g`);
  }, 60_000);

  it("acknowledges each line: a refused line rejects with nft's message, the next one succeeds", async () => {
    const session = startNftSession({ prefix: ['ip', 'netns', 'exec', pair.server.name, 'nft'] });
    try {
      const name = `${table}a`;
      const results = await Promise.allSettled([
        session.apply(`add table inet ${name}`),
        session.apply(`add element inet ${name} nosuch { 192.0.2.1 }; add chain inet ${name} never`),
        session.apply(`add set inet ${name} s { type ipv4_addr; }`),
        session.apply(`add element inet ${name} s { 192.0.2.300 }`),
        session.apply(`add element inet ${name} s { 192.0.2.3 }`),
      ]);
      expect(results.map((r) => r.status)).toEqual([
        'fulfilled',
        'rejected',
        'fulfilled',
        'rejected',
        'fulfilled',
      ]);
      const refused = (results[1] as PromiseRejectedResult).reason as NftablesCommandError;
      expect(refused).toBeInstanceOf(NftablesCommandError);
      expect(refused.stderr).toContain('No such file or directory');
      expect(refused.stderr).toContain('nosuch');
      expect(refused.stderr).not.toContain('bcack');
      const listed = await pair.exec(pair.server.name, ['nft', 'list', 'table', 'inet', name]);
      expect(listed).toContain('192.0.2.3');
      expect(listed).not.toContain('never'); // the refused line was one transaction: nothing of it applied
      await session.apply(`delete table inet ${name}`);
      await expect(session.apply('list ruleset\nflush ruleset')).rejects.toBeInstanceOf(TypeError);
    } finally {
      await session.close();
    }
    await expect(session.apply('')).rejects.toBeInstanceOf(NftablesSessionError);
  }, 60_000);
});

describe('nftables firewall without root or without nft', () => {
  it('names the fix when not root', async () => {
    const asNobody = nftCommand(['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'nft']);
    const error = await startNftablesFirewall({
      ports: [{ protocol: 'tcp', port: 8883 }],
      run: asNobody,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NftablesUnavailableError);
    expect((error as Error).message).toContain(NFTABLES_UNAVAILABLE_FIX);
  });

  it('names the fix when nft is missing', async () => {
    const missing = nftCommand(['/nonexistent/bin/nft']);
    const error = await startNftablesFirewall({
      ports: [{ protocol: 'tcp', port: 8883 }],
      run: missing,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NftablesUnavailableError);
    expect((error as Error).message).toBe(
      'nftables firewall needs root and the nft command: run as root, or use --firewall gate (/nonexistent/bin/nft not found)',
    );
  });
});

describe('nft text', () => {
  /** Records what would reach nft: an injected `run`, the same seam the namespace tests use. */
  function recorder() {
    const calls: { args: string[]; stdin: string | undefined }[] = [];
    const run = async (args: string[], stdin?: string) => {
      calls.push({ args, stdin });
      return '';
    };
    return { calls, run };
  }
  const T = Date.UTC(2030, 0, 1);
  const fixed = { now: () => T };

  it('creates the table atomically from stdin, then adds, refreshes and deletes elements', async () => {
    const { calls, run } = recorder();
    const fw = await startNftablesFirewall({
      table: 'bc_test',
      ports: [
        { protocol: 'tcp', port: 8883 },
        { protocol: 'udp', port: 8883 },
      ],
      run,
      clock: fixed,
    });
    const g: Grant = {
      deviceId: 'd',
      address: '::ffff:203.0.113.7',
      family: 6,
      access: [
        { protocol: 'tcp', port: 8883 },
        { protocol: 'tcp', port: 22 },
      ],
      openedAt: T,
      expiresAt: T + 30_000,
    };
    const g6: Grant = { ...g, address: '2001:DB8:0:0::1', expiresAt: T + 2_500 };
    await fw.allow([g, g6]);
    await fw.revoke([g]);
    await fw.close();
    expect(calls.map((c) => c.args)).toEqual([
      ['-f', '-'],
      ['-f', '-'],
      ['-f', '-'],
      ['-f', '-'],
    ]);
    expect(calls[0]?.stdin).toBe(
      [
        'add table inet bc_test',
        'delete table inet bc_test',
        'table inet bc_test {',
        '  set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }',
        '  set allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }',
        '  chain prefixes {',
        '  }',
        '  chain input {',
        '    type filter hook input priority filter; policy accept;',
        '    ct state established,related accept',
        '    ip saddr . meta l4proto . th dport @allow4 accept',
        '    ip6 saddr . meta l4proto . th dport @allow6 accept',
        '    jump prefixes',
        '    meta l4proto . th dport { tcp . 8883, udp . 8883 } drop',
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    expect(calls[1]?.stdin).toBe(
      [
        'add element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }',
        'delete element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }',
        'add element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 timeout 30000ms }',
        'add element inet bc_test allow6 { 2001:db8::1 . tcp . 8883 }',
        'delete element inet bc_test allow6 { 2001:db8::1 . tcp . 8883 }',
        'add element inet bc_test allow6 { 2001:db8::1 . tcp . 8883 timeout 2500ms }',
        '',
      ].join('\n'),
    );
    expect(calls[2]?.stdin).toBe(
      [
        'add element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }',
        'delete element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }',
        '',
      ].join('\n'),
    );
    expect(calls[3]?.stdin).toBe('add table inet bc_test\ndelete table inet bc_test\n');
  });

  it('with a session, each batch is one line of the session; table creation and deletion stay nft -f -', async () => {
    const { calls, run } = recorder();
    const lines: string[] = [];
    const session: NftSession = {
      pid: undefined,
      apply: async (line) => {
        lines.push(line);
      },
      close: async () => {
        lines.push('<closed>');
      },
    };
    const fw = await startNftablesFirewall({
      table: 'bc_test',
      ports: [{ protocol: 'tcp', port: 8883 }],
      run: Object.assign(run, { openSession: () => session }),
      clock: fixed,
    });
    const g: Grant = {
      deviceId: 'd',
      address: '203.0.113.7',
      family: 4,
      access: [{ protocol: 'tcp', port: 8883 }],
      openedAt: T,
      expiresAt: T + 30_000,
    };
    await fw.allow([g, { ...g, address: '2001:db8::1' }]);
    await fw.revoke([g]);
    await fw.allow([{ ...g, expiresAt: T - 1 }]); // nothing left to send
    await fw.close();
    expect(lines).toEqual([
      'add element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }; ' +
        'delete element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }; ' +
        'add element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 timeout 30000ms }; ' +
        'add element inet bc_test allow6 { 2001:db8::1 . tcp . 8883 }; ' +
        'delete element inet bc_test allow6 { 2001:db8::1 . tcp . 8883 }; ' +
        'add element inet bc_test allow6 { 2001:db8::1 . tcp . 8883 timeout 30000ms }',
      'add element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }; delete element inet bc_test allow4 { 203.0.113.7 . tcp . 8883 }',
      '<closed>',
    ]);
    expect(calls.map((c) => c.stdin?.split('\n')[0])).toEqual([
      'add table inet bc_test',
      'add table inet bc_test',
    ]);
  });

  describe('prefix grants (docs/scaling.md "Prefix grants")', () => {
    const base: Grant = {
      deviceId: 'd',
      address: '198.51.100.0',
      family: 4,
      prefixLength: 24,
      access: [{ protocol: 'tcp', port: 8883 }],
      openedAt: T,
      expiresAt: T + 30_000,
    };
    const layout4 = [
      'add set inet bc_test allow4_24 { type ipv4_addr . inet_proto . inet_service; flags interval, timeout; }',
      'flush chain inet bc_test prefixes',
      'add rule inet bc_test prefixes ip saddr . meta l4proto . th dport @allow4_24 accept',
    ];

    it("writes the set and the prefixes rule in the element's transaction, once per length", async () => {
      const { calls, run } = recorder();
      const fw = await startNftablesFirewall({
        table: 'bc_test',
        ports: [{ protocol: 'tcp', port: 8883 }],
        run,
        clock: fixed,
      });
      await fw.allow([base]);
      // Same length again, with a host inside it and a /32 "prefix" (a host): no layout, host set first.
      await fw.allow([
        { ...base, address: '203.0.113.0', expiresAt: T + 10_000 },
        { ...base, address: '198.51.100.7', prefixLength: undefined },
        { ...base, address: '198.51.100.8', prefixLength: 32 },
      ]);
      await fw.allow([{ ...base, address: '2001:DB8:40::', family: 6, prefixLength: 48 }]);
      await fw.revoke([{ ...base, prefixLength: 22 }]); // a length never granted: nothing to send
      await fw.revoke([base]);
      expect(calls.map((c) => c.stdin)).toEqual([
        expect.stringContaining('jump prefixes'),
        [
          ...layout4,
          'add element inet bc_test allow4_24 { 198.51.100.0/24 . tcp . 8883 }',
          'delete element inet bc_test allow4_24 { 198.51.100.0/24 . tcp . 8883 }',
          'add element inet bc_test allow4_24 { 198.51.100.0/24 . tcp . 8883 timeout 30000ms }',
          '',
        ].join('\n'),
        [
          'add element inet bc_test allow4 { 198.51.100.7 . tcp . 8883, 198.51.100.8 . tcp . 8883 }',
          'delete element inet bc_test allow4 { 198.51.100.7 . tcp . 8883, 198.51.100.8 . tcp . 8883 }',
          'add element inet bc_test allow4 { 198.51.100.7 . tcp . 8883 timeout 30000ms, 198.51.100.8 . tcp . 8883 timeout 30000ms }',
          'add element inet bc_test allow4_24 { 203.0.113.0/24 . tcp . 8883 }',
          'delete element inet bc_test allow4_24 { 203.0.113.0/24 . tcp . 8883 }',
          'add element inet bc_test allow4_24 { 203.0.113.0/24 . tcp . 8883 timeout 10000ms }',
          '',
        ].join('\n'),
        [
          layout4[0],
          'add set inet bc_test allow6_48 { type ipv6_addr . inet_proto . inet_service; flags interval, timeout; }',
          layout4[1],
          layout4[2],
          'add rule inet bc_test prefixes ip6 saddr . meta l4proto . th dport @allow6_48 accept',
          'add element inet bc_test allow6_48 { 2001:db8:40::/48 . tcp . 8883 }',
          'delete element inet bc_test allow6_48 { 2001:db8:40::/48 . tcp . 8883 }',
          'add element inet bc_test allow6_48 { 2001:db8:40::/48 . tcp . 8883 timeout 30000ms }',
          '',
        ].join('\n'),
        [
          'add element inet bc_test allow4_24 { 198.51.100.0/24 . tcp . 8883 }',
          'delete element inet bc_test allow4_24 { 198.51.100.0/24 . tcp . 8883 }',
          '',
        ].join('\n'),
      ]);
    });

    it('sends the layout again after a batch that carried it failed', async () => {
      const { calls, run } = recorder();
      let fail = false;
      const failing = async (args: string[], stdin?: string) => {
        await run(args, stdin);
        if (fail) throw new NftablesCommandError(args, 1, 'Error: Could not process rule\n');
        return '';
      };
      const fw = await startNftablesFirewall({
        table: 'bc_test',
        ports: [{ protocol: 'tcp', port: 8883 }],
        run: failing,
        clock: fixed,
      });
      fail = true;
      await expect(fw.allow([base])).rejects.toBeInstanceOf(NftablesCommandError);
      fail = false;
      await fw.allow([base]);
      await fw.allow([base, { ...base, address: '203.0.113.0' }]);
      expect(calls.slice(1).map((c) => c.stdin?.split('\n').slice(0, 3))).toEqual([
        layout4,
        layout4,
        [
          'add element inet bc_test allow4_24 { 203.0.113.0/24 . tcp . 8883 }',
          'delete element inet bc_test allow4_24 { 203.0.113.0/24 . tcp . 8883 }',
          'add element inet bc_test allow4_24 { 203.0.113.0/24 . tcp . 8883 timeout 30000ms }',
        ],
      ]);
    });

    it('names the network address to write for a prefix with host bits set', async () => {
      const { calls, run } = recorder();
      const fw = await startNftablesFirewall({ ports: [{ protocol: 'tcp', port: 8883 }], run, clock: fixed });
      const error = await fw.allow([{ ...base, address: '198.51.100.77' }]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NftablesInputError);
      expect((error as Error).message).toBe(
        'grants[0].address of a prefix grant must be the network address of its prefix: received ' +
          '198.51.100.77/24, write 198.51.100.0/24',
      );
      expect(calls).toHaveLength(1);
    });
  });

  it.each([
    ['space', '1.2.3.4 5.6.7.8'],
    ['semicolon', '1.2.3.4;flush ruleset'],
    ['closing brace', '1.2.3.4 } ; delete table inet filter ; add element inet x allow4 {'],
    ['newline', '1.2.3.4\nflush ruleset'],
    ['IPv6 zone', 'fe80::1%eth0'],
    ['CIDR', '10.0.0.0/8'],
    ['host name', 'example.com'],
    ['empty', ''],
    ['not a string', 42],
  ])('refuses an address with a %s before anything reaches nft', async (_label, address) => {
    const { calls, run } = recorder();
    const fw = await startNftablesFirewall({ ports: [{ protocol: 'tcp', port: 8883 }], run, clock: fixed });
    const good: Grant = {
      deviceId: 'd',
      address: '198.51.100.1',
      family: 4,
      access: [{ protocol: 'tcp', port: 8883 }],
      openedAt: T,
      expiresAt: T + 30_000,
    };
    const bad = { ...good, address } as unknown as Grant;
    for (const op of ['allow', 'revoke'] as const) {
      const error = await fw[op]([good, bad]).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(NftablesInputError);
      expect((error as NftablesInputError).field).toBe('grants[1].address');
    }
    expect(calls).toHaveLength(1); // only the table creation
  });

  it.each([
    ['port 0', { access: [{ protocol: 'tcp', port: 0 }] }, 'grants[0].access[0].port'],
    ['port 65536', { access: [{ protocol: 'tcp', port: 65_536 }] }, 'grants[0].access[0].port'],
    ['fractional port', { access: [{ protocol: 'tcp', port: 88.5 }] }, 'grants[0].access[0].port'],
    [
      'port as text',
      { access: [{ protocol: 'tcp', port: '8883 } ; flush ruleset' }] },
      'grants[0].access[0].port',
    ],
    ['unknown protocol', { access: [{ protocol: 'tcp;', port: 8883 }] }, 'grants[0].access[0].protocol'],
    ['non-numeric expiry', { expiresAt: '30s' }, 'grants[0].expiresAt'],
    // Prefix grants (docs/scaling.md "Prefix grants"): a network address, a length within the devices file's bounds.
    ['a prefix with host bits set', { address: '198.51.100.7', prefixLength: 24 }, 'grants[0].address'],
    ['an IPv4 prefix wider than /16', { address: '198.0.0.0', prefixLength: 8 }, 'grants[0].prefixLength'],
    [
      'an IPv4 prefix longer than /32',
      { address: '198.51.100.0', prefixLength: 33 },
      'grants[0].prefixLength',
    ],
    ['an IPv6 prefix wider than /32', { address: '2001:db8::', prefixLength: 16 }, 'grants[0].prefixLength'],
    ['a fractional prefix length', { address: '198.51.100.0', prefixLength: 24.5 }, 'grants[0].prefixLength'],
    ['a prefix length as text', { address: '198.51.100.0', prefixLength: '24' }, 'grants[0].prefixLength'],
  ])('refuses a grant with %s', async (_label, patch, field) => {
    const { calls, run } = recorder();
    const fw = await startNftablesFirewall({ ports: [{ protocol: 'tcp', port: 8883 }], run, clock: fixed });
    const bad = {
      deviceId: 'd',
      address: '198.51.100.1',
      family: 4,
      access: [{ protocol: 'tcp', port: 8883 }],
      openedAt: T,
      expiresAt: T + 30_000,
      ...patch,
    } as unknown as Grant;
    const error = await fw.allow([bad]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NftablesInputError);
    expect((error as NftablesInputError).field).toBe(field);
    expect(calls).toHaveLength(1);
  });

  it.each([
    ['table with a space', { table: 'black cloud' }, 'table'],
    ['table with a semicolon', { table: 'x;flush ruleset' }, 'table'],
    ['table starting with a digit', { table: '1table' }, 'table'],
    ['no ports', { ports: [] }, 'ports'],
    ['port 0', { ports: [{ protocol: 'tcp', port: 0 }] }, 'ports[0].port'],
    ['protocol icmp', { ports: [{ protocol: 'icmp', port: 1 }] }, 'ports[0].protocol'],
  ])('refuses options with a %s before running nft', async (_label, patch, field) => {
    const { calls, run } = recorder();
    const error = await startNftablesFirewall({
      ports: [{ protocol: 'tcp', port: 8883 }],
      run,
      ...(patch as object),
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NftablesInputError);
    expect((error as NftablesInputError).field).toBe(field);
    expect(calls).toHaveLength(0);
  });
});
