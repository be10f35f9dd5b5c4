import { createCipheriv } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { DeviceDirectory, RemoteEndpoint } from '../../../functions/core/interfaces.ts';
import {
  handleDatagram,
  type Outcome,
  type ReceiverDeps,
} from '../../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../../../functions/receiver/memory-nonce-store.ts';
import { REJECT_REASONS, type RejectReason } from '../../../functions/receiver/reject-reason.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import {
  BC1_KEY,
  BC1_KEY_ID,
  bc1Packet,
  bytesFrom,
  fwknopPacket,
  type Harness,
  harness,
  makeDevice,
  T0,
  TCP_1883,
  TCP_8883,
  UDP_5683,
  UnavailableNonceStore,
} from './helpers.ts';

const REMOTE: RemoteEndpoint = { address: '192.0.2.10', family: 4, port: 40_000 };
const SECONDS = Math.floor(T0 / 1000);

function send(
  h: Harness,
  bytes: Uint8Array,
  remote: RemoteEndpoint = REMOTE,
  deps?: ReceiverDeps,
): Promise<Outcome> {
  return handleDatagram(bytes, remote, deps ?? h.deps);
}

/** An authentic BC1 packet (right key, right AAD) around any plaintext, to reach the parser with bad payloads. */
function bc1AroundPlaintext(plaintext: Uint8Array): Uint8Array {
  const nonce = bytesFrom('malformed nonce', 12);
  const header = new Uint8Array(17);
  header[0] = 0xb1;
  new DataView(header.buffer).setUint32(1, BC1_KEY_ID);
  header.set(nonce, 5);
  const cipher = createCipheriv('chacha20-poly1305', BC1_KEY, nonce, { authTagLength: 16 });
  cipher.setAAD(header, { plaintextLength: plaintext.length });
  const body = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return new Uint8Array(Buffer.concat([header, body]));
}

function plaintextWithFlags(flags: number): Uint8Array {
  const out = new Uint8Array(15);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(T0));
  view.setUint16(8, 0);
  out[10] = flags;
  out[11] = 1;
  out[12] = 6;
  view.setUint16(13, 8883);
  return out;
}

const unavailableDirectory: DeviceDirectory = {
  byKeyId: () => Promise.reject(new Error('IoT registry: ThrottlingException')),
  fwknopCandidates: () => Promise.reject(new Error('IoT registry: ThrottlingException')),
};

type Want = RejectReason | 'opened' | 'extended';

interface Case {
  readonly title: string;
  readonly want: Want;
  readonly setup?: Parameters<typeof harness>[0];
  /** Sends what the case needs; the outcome of the LAST datagram is checked. */
  readonly send: (h: Harness) => Promise<Outcome>;
}

const CASES: readonly Case[] = [
  // --- BC1 -------------------------------------------------------------------------------------
  { title: 'BC1 valid knock', want: 'opened', send: (h) => send(h, bc1Packet({ timestampMs: T0 })) },
  { title: 'BC1 empty datagram', want: 'too-short', send: (h) => send(h, new Uint8Array(0)) },
  { title: 'BC1 47 bytes', want: 'too-short', send: (h) => send(h, new Uint8Array(47).fill(0xb1)) },
  { title: 'BC1 86 bytes', want: 'too-long', send: (h) => send(h, new Uint8Array(86).fill(0xb1)) },
  {
    title: 'first byte neither 0xB1 nor base64',
    want: 'bad-magic',
    send: (h) => send(h, new Uint8Array(60)),
  },
  {
    // [BC1-2] the per-source bucket is spent only by failed authentication (keyed by source and key id): an
    // accepted knock spends nothing, a forged one with the same key id spends the only token.
    title: 'BC1 knock after a failed one from the same source and key id (burst 1)',
    want: 'rate-limited',
    setup: { rateLimit: { burst: 1, ratePerSecond: 0.001 } },
    send: async (h) => {
      expect((await send(h, bc1Packet({ timestampMs: T0 }))).ok).toBe(true);
      expect((await send(h, bc1Packet({ timestampMs: T0, key: bytesFrom('not the key', 32) }))).ok).toBe(
        false,
      );
      return send(h, bc1Packet({ timestampMs: T0 }));
    },
  },
  {
    title: 'BC1 unknown key id',
    want: 'unknown-key',
    send: (h) => send(h, bc1Packet({ timestampMs: T0, keyId: 7 })),
  },
  {
    title: 'BC1 directory cannot answer',
    want: 'directory-unavailable',
    send: (h) =>
      send(h, bc1Packet({ timestampMs: T0 }), REMOTE, { ...h.deps, directory: unavailableDirectory }),
  },
  {
    title: 'BC1 device disabled',
    want: 'device-disabled',
    setup: { devices: [makeDevice({ enabled: false })] },
    send: (h) => send(h, bc1Packet({ timestampMs: T0 })),
  },
  {
    title: 'BC1 key past notAfter',
    want: 'key-inactive',
    setup: { devices: [makeDevice({ nativeKeys: [{ keyId: BC1_KEY_ID, key: BC1_KEY, notAfter: T0 - 1 }] })] },
    send: (h) => send(h, bc1Packet({ timestampMs: T0 })),
  },
  {
    title: 'BC1 sealed with another key under a known key id',
    want: 'auth-failed',
    send: (h) => send(h, bc1Packet({ timestampMs: T0, key: bytesFrom('someone else', 32) })),
  },
  {
    title: 'BC1 one ciphertext bit flipped',
    want: 'auth-failed',
    send: (h) => {
      const packet = bc1Packet({ timestampMs: T0 });
      packet[20]! ^= 0x01;
      return send(h, packet);
    },
  },
  {
    title: 'BC1 authentic but unknown flag bits',
    want: 'malformed',
    send: (h) => send(h, bc1AroundPlaintext(plaintextWithFlags(0x80))),
  },
  {
    title: 'BC1 stamped 61 s ago',
    want: 'stale',
    send: (h) => send(h, bc1Packet({ timestampMs: T0 - 61_000 })),
  },
  {
    title: 'BC1 stamped 61 s ahead',
    want: 'stale',
    send: (h) => send(h, bc1Packet({ timestampMs: T0 + 61_000 })),
  },
  {
    title: 'BC1 stamped before the nonce store started (restart guard)',
    want: 'before-start',
    setup: { nonces: new MemoryNonceStore({ clock: { now: () => T0 } }) },
    send: (h) => send(h, bc1Packet({ timestampMs: T0 - 1000 })),
  },
  {
    title: 'BC1 asks for a port the device may not open',
    want: 'port-not-allowed',
    send: (h) => send(h, bc1Packet({ timestampMs: T0, access: [TCP_8883, { protocol: 'tcp', port: 22 }] })),
  },
  {
    title: 'BC1 claimed source differs from the observed one',
    want: 'source-mismatch',
    send: (h) => send(h, bc1Packet({ timestampMs: T0, claimedSource: { family: 4, address: '10.0.0.9' } })),
  },
  {
    title: 'BC1 same packet twice',
    want: 'replay',
    send: async (h) => {
      const packet = bc1Packet({ timestampMs: T0 });
      expect((await send(h, packet)).ok).toBe(true);
      return send(h, packet);
    },
  },
  {
    title: "BC1 knock when the device's share of the nonce store is full (share 1)",
    want: 'nonce-share-full',
    setup: { nonces: new MemoryNonceStore({ clock: { now: () => T0 - 3_600_000 }, maxEntriesPerOwner: 1 }) },
    send: async (h) => {
      expect((await send(h, bc1Packet({ timestampMs: T0 }))).ok).toBe(true);
      return send(h, bc1Packet({ timestampMs: T0 }));
    },
  },
  {
    title: 'BC1 knock over the device budget of accepted knocks (burst 1)',
    want: 'device-rate-limited',
    setup: { deviceBounds: { knockBurst: 1, knocksPerMinute: 1 } },
    send: async (h) => {
      expect((await send(h, bc1Packet({ timestampMs: T0 }))).ok).toBe(true);
      return send(h, bc1Packet({ timestampMs: T0 }));
    },
  },
  {
    title: 'BC1 nonce store down (fail closed)',
    want: 'nonce-store-unavailable',
    setup: { nonces: new UnavailableNonceStore() },
    send: (h) => send(h, bc1Packet({ timestampMs: T0 })),
  },
  {
    title: 'BC1 firewall refuses the grant',
    want: 'grant-failed',
    send: (h) => {
      h.firewall.failAllow = new Error('RulesPerSecurityGroupLimitExceeded');
      return send(h, bc1Packet({ timestampMs: T0 }));
    },
  },
  {
    title: 'BC1 a second knock from the same source extends the grant',
    want: 'extended',
    send: async (h) => {
      expect((await send(h, bc1Packet({ timestampMs: T0 }))).ok).toBe(true);
      return send(h, bc1Packet({ timestampMs: T0 + 1 }));
    },
  },
  {
    title: 'an adapter breaking its never-throw contract',
    want: 'internal-error',
    send: (h) =>
      send(h, bc1Packet({ timestampMs: T0 }), REMOTE, {
        ...h.deps,
        grants: {
          open: () => {
            throw new TypeError('bug');
          },
        },
      }),
  },
  // --- fwknop ----------------------------------------------------------------------------------
  {
    title: 'fwknop valid knock (access, 0.0.0.0)',
    want: 'opened',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS })),
  },
  {
    title: 'fwknop valid knock naming the observed source',
    want: 'opened',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS, message: '192.0.2.10,tcp/8883' })),
  },
  {
    title: 'fwknop 139 characters',
    want: 'too-short',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS }).subarray(0, 139)),
  },
  {
    title: 'fwknop 400 characters (GnuPG length, not accepted)',
    want: 'too-long',
    send: (h) => send(h, new TextEncoder().encode('A'.repeat(400))),
  },
  {
    title: 'fwknop with a non-base64 character',
    want: 'bad-magic',
    send: (h) => {
      const packet = fwknopPacket({ timestampSeconds: SECONDS });
      packet[50] = 0x2e; // '.'
      return send(h, packet);
    },
  },
  {
    title: "fwknop that keeps the blob's U2FsdGVkX1 prefix",
    want: 'bad-magic',
    send: (h) => send(h, new TextEncoder().encode(`U2FsdGVkX1${'A'.repeat(200)}`)),
  },
  {
    title: 'fwknop when no device has fwknop settings',
    want: 'unknown-key',
    setup: { devices: [makeDevice({ fwknop: undefined })] },
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS })),
  },
  {
    title: 'fwknop directory cannot answer',
    want: 'directory-unavailable',
    send: (h) =>
      send(h, fwknopPacket({ timestampSeconds: SECONDS }), REMOTE, {
        ...h.deps,
        directory: unavailableDirectory,
      }),
  },
  {
    title: 'fwknop HMAC by an unknown key',
    want: 'auth-failed',
    send: (h) =>
      send(h, fwknopPacket({ timestampSeconds: SECONDS }, { hmacKey: bytesFrom('other hmac', 64) })),
  },
  {
    title: 'fwknop device disabled',
    want: 'device-disabled',
    setup: { devices: [makeDevice({ enabled: false })] },
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS })),
  },
  {
    title: 'fwknop right HMAC key, wrong encryption key',
    want: 'malformed',
    send: (h) =>
      send(h, fwknopPacket({ timestampSeconds: SECONDS }, { encryptionKey: bytesFrom('other enc', 32) })),
  },
  {
    title: 'fwknop username of another user',
    want: 'username-mismatch',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS, username: 'mallory' })),
  },
  {
    title: 'fwknop command message (type 0)',
    want: 'unsupported-message',
    send: (h) =>
      send(h, fwknopPacket({ timestampSeconds: SECONDS, messageType: 0, message: '0.0.0.0,touch /tmp/x' })),
  },
  {
    title: 'fwknop NAT access (type 2)',
    want: 'unsupported-message',
    send: (h) =>
      send(
        h,
        fwknopPacket({
          timestampSeconds: SECONDS,
          messageType: 2,
          natAccess: { host: '10.0.0.5', port: 22 },
        }),
      ),
  },
  {
    title: 'fwknop allow IP of another host',
    want: 'source-mismatch',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS, message: '198.51.100.7,tcp/8883' })),
  },
  {
    title: 'fwknop stamped 61 s ago',
    want: 'stale',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS - 61 })),
  },
  {
    title: 'fwknop asks for a port the device may not open',
    want: 'port-not-allowed',
    send: (h) => send(h, fwknopPacket({ timestampSeconds: SECONDS, message: '0.0.0.0,tcp/22' })),
  },
  {
    title: 'fwknop same packet twice',
    want: 'replay',
    send: async (h) => {
      const packet = fwknopPacket({ timestampSeconds: SECONDS });
      expect((await send(h, packet)).ok).toBe(true);
      return send(h, packet);
    },
  },
];

describe('handleDatagram: one case per outcome ([BC1-1]..[BC1-9], docs/protocol.md)', () => {
  CASES.forEach((testCase, index) => {
    it(`#${index + 1} ${testCase.title} → ${testCase.want}`, async () => {
      const h = harness(testCase.setup);
      const outcome = await testCase.send(h);
      if (testCase.want === 'opened' || testCase.want === 'extended') {
        expect(outcome).toMatchObject({ ok: true, value: { status: testCase.want } });
        const accepted = h.audit.ofType('packet.accepted').at(-1);
        expect(accepted).toMatchObject({ source: REMOTE.address, deviceId: 'demo-device' });
        expect(h.firewall.isOpen(REMOTE.address, 'tcp/8883')).toBe(true);
        return;
      }
      expect(outcome).toEqual({ ok: false, reason: testCase.want });
      // Counted by reason and audited, never granted.
      expect(h.deps.counters.snapshot()[`rejected.${testCase.want}`]).toBe(1);
      expect(h.audit.events.at(-1)).toMatchObject({
        type: 'packet.rejected',
        reason: testCase.want,
        source: '192.0.2.10',
      });
      // Nothing reached the firewall, except the attempt that failed (grant-failed) and the cases whose first,
      // valid packet was accepted before the rejected one (rate-limited, replay).
      const allows = h.firewall.calls.filter((call) => call.op === 'allow').length;
      const wantAllows = [
        'grant-failed',
        'rate-limited',
        'replay',
        'nonce-share-full',
        'device-rate-limited',
      ].includes(testCase.want)
        ? 1
        : 0;
      expect(allows).toBe(wantAllows);
    });
  });

  it('covers every RejectReason and both accept statuses', () => {
    const covered = new Set(CASES.map((testCase) => testCase.want));
    for (const reason of REJECT_REASONS) expect(covered.has(reason), reason).toBe(true);
    expect(covered.has('opened') && covered.has('extended')).toBe(true);
  });
});

describe('handleDatagram: what an accepted packet produces', () => {
  it('BC1: grant for the observed address, default 30 s, audit with a replay id hash, counters', async () => {
    const h = harness();
    const outcome = await send(h, bc1Packet({ timestampMs: T0 - 5000 }));
    expect(outcome.ok).toBe(true);
    if (!outcome.ok) return;
    expect(outcome.value.grantSeconds).toBe(30);
    expect(outcome.value.grant).toMatchObject({
      deviceId: 'demo-device',
      address: '192.0.2.10',
      family: 4,
      access: [TCP_8883],
      openedAt: T0,
      expiresAt: T0 + 30_000,
    });
    expect(outcome.value.replayIdHash).toMatch(/^[0-9a-f]{16}$/);
    expect(h.audit.ofType('packet.accepted')).toEqual([
      {
        type: 'packet.accepted',
        time: T0,
        deviceId: 'demo-device',
        source: '192.0.2.10',
        format: 'bc1',
        access: [TCP_8883],
        grantSeconds: 30,
        replayIdHash: outcome.value.replayIdHash,
      },
    ]);
    expect(h.deps.counters.snapshot()).toEqual({ received: 1, accepted: 1, 'accepted.bc1': 1 });
  });

  it.each([
    [0, 30],
    [1, 1],
    [100, 100],
    [300, 300],
    [65_535, 300],
  ])('BC1 asks for %i s → granted %i s (default 30, device max 300)', async (asked, granted) => {
    const h = harness();
    const outcome = await send(h, bc1Packet({ timestampMs: T0, durationSeconds: asked }));
    expect(outcome).toMatchObject({ ok: true, value: { grantSeconds: granted } });
    expect(h.firewall.calls[0]!.grants[0]!.expiresAt).toBe(T0 + granted * 1000);
  });

  it('a device with grantPrefix gets a grant for its source prefix; devices of one prefix share it', async () => {
    const h = harness({
      devices: [makeDevice({ grantPrefix: { ipv4: 24 } })],
    });
    const first = await send(h, bc1Packet({ timestampMs: T0 - 5000 }));
    expect(first).toMatchObject({
      ok: true,
      value: { status: 'opened', grant: { address: '192.0.2.0', prefixLength: 24, family: 4 } },
    });
    const second = await send(h, bc1Packet({ timestampMs: T0 - 4000 }), {
      address: '192.0.2.77',
      family: 4,
      port: 40_000,
    });
    expect(second).toMatchObject({ ok: true, value: { status: 'extended', grant: { prefixLength: 24 } } });
    expect(h.firewall.calls.map((call) => call.grants.map((g) => `${g.address}/${g.prefixLength}`))).toEqual([
      ['192.0.2.0/24'],
      ['192.0.2.0/24'],
    ]);
  });

  it('fwknop type 3: the client timeout is the requested duration, capped by the device', async () => {
    const h = harness({ devices: [makeDevice({ maxOpenSeconds: 120 })] });
    const short = await send(
      h,
      fwknopPacket({ timestampSeconds: SECONDS, messageType: 3, clientTimeout: 45 }),
    );
    expect(short).toMatchObject({ ok: true, value: { grantSeconds: 45, format: 'fwknop' } });
    const long = await send(
      h,
      fwknopPacket({
        timestampSeconds: SECONDS,
        messageType: 3,
        clientTimeout: 1000,
        message: '0.0.0.0,udp/5683',
      }),
      { address: '192.0.2.11', family: 4, port: 1 },
    );
    expect(long).toMatchObject({ ok: true, value: { grantSeconds: 120, grant: { access: [UDP_5683] } } });
  });

  it('the claimed source may be written differently from the socket address (bytes are compared)', async () => {
    const h = harness();
    const remote: RemoteEndpoint = { address: '2001:db8:0:0:0:0:0:1', family: 6, port: 5 };
    const outcome = await send(
      h,
      bc1Packet({ timestampMs: T0, claimedSource: { family: 6, address: '2001:db8::1' } }),
      remote,
    );
    expect(outcome).toMatchObject({ ok: true, value: { source: '2001:db8::1', grant: { family: 6 } } });
  });

  it('an IPv4 sender seen by a dual-stack socket (::ffff:a.b.c.d) gets an IPv4 grant', async () => {
    const h = harness();
    const outcome = await send(
      h,
      bc1Packet({ timestampMs: T0, claimedSource: { family: 4, address: '192.0.2.10' } }),
      { address: '::ffff:192.0.2.10', family: 6, port: 5 },
    );
    expect(outcome).toMatchObject({ ok: true, value: { grant: { address: '192.0.2.10', family: 4 } } });
  });

  it('steps run in rule order: the clock [BC1-6] is checked before the policy [BC1-7]', async () => {
    const h = harness();
    const staleAndWrongUser = fwknopPacket({ timestampSeconds: SECONDS - 120, username: 'mallory' });
    expect(await send(h, staleAndWrongUser)).toEqual({ ok: false, reason: 'stale' });
    const staleAndWrongSource = bc1Packet({
      timestampMs: T0 - 120_000,
      claimedSource: { family: 4, address: '10.9.9.9' },
    });
    expect(await send(h, staleAndWrongSource)).toEqual({ ok: false, reason: 'stale' });
    // ...and authentication before the key's state is even looked at twice: a forged packet for a disabled
    // device is refused by the cheap key step, never decrypted.
    const disabled = harness({ devices: [makeDevice({ enabled: false })] });
    expect(await send(disabled, bc1Packet({ timestampMs: T0, key: bytesFrom('x', 32) }))).toEqual({
      ok: false,
      reason: 'device-disabled',
    });
  });

  it('a device may hold two keys during a rotation; either opens', async () => {
    const newKey = bytesFrom('rotated', 32);
    const h = harness({
      devices: [
        makeDevice({
          nativeKeys: [
            { keyId: BC1_KEY_ID, key: BC1_KEY, notAfter: T0 + 60_000 },
            { keyId: 99, key: newKey },
          ],
        }),
      ],
    });
    expect((await send(h, bc1Packet({ timestampMs: T0 }))).ok).toBe(true);
    expect(
      (await send(h, bc1Packet({ timestampMs: T0, keyId: 99, key: newKey, access: [TCP_8883] }))).ok,
    ).toBe(true);
  });

  it('a rejected packet leaves no nonce behind: the same bytes pass once the device is allowed the port', async () => {
    const restricted = makeDevice({ allowedAccess: [TCP_8883] });
    const h = harness({ devices: [restricted] });
    const packet = bc1Packet({ timestampMs: T0, access: [TCP_8883, TCP_1883] });
    expect(await send(h, packet)).toEqual({ ok: false, reason: 'port-not-allowed' });
    const widened = harness({
      devices: [makeDevice({ allowedAccess: [TCP_8883, TCP_1883] })],
      nonces: h.nonces,
    });
    expect((await send(widened, packet)).ok).toBe(true);
  });

  it('with a reject-audit limiter, a flood is counted but audited only up to the limit', async () => {
    const h = harness();
    const time = new VirtualTime(T0);
    const { TokenBucketRateLimiter } = await import('../../../functions/receiver/rate-limiter.ts');
    const deps = {
      ...h.deps,
      rejectAuditLimiter: new TokenBucketRateLimiter({ clock: time, burst: 3, ratePerSecond: 1 }),
    };
    for (let i = 0; i < 10; i++) await send(h, new Uint8Array(5), REMOTE, deps);
    expect(h.audit.ofType('packet.rejected')).toHaveLength(3);
    expect(h.deps.counters.snapshot()).toMatchObject({ 'rejected.bad-magic': 10, 'audit.suppressed': 7 });
  });

  it('never throws, even when the audit sink and the clock do', async () => {
    const h = harness();
    const deps: ReceiverDeps = {
      ...h.deps,
      audit: {
        write: () => {
          throw new Error('disk full');
        },
      },
    };
    await expect(send(h, bc1Packet({ timestampMs: T0 }), REMOTE, deps)).resolves.toMatchObject({ ok: true });
    const brokenClock: ReceiverDeps = {
      ...h.deps,
      clock: {
        now: () => {
          throw new Error('clock');
        },
      },
    };
    await expect(send(h, bc1Packet({ timestampMs: T0 }), REMOTE, brokenClock)).resolves.toEqual({
      ok: false,
      reason: 'internal-error',
    });
  });
});
