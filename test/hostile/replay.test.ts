/**
 * Replay storms: one valid packet sent 10,000 times at once is accepted exactly once, for both formats; after a
 * restart it is never accepted again (memory store: its start-time guard; file store: its log); and two receivers
 * sharing one DynamoDB nonce table (moto server) accept it once between them.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamoNonceStore } from '../../functions/aws/dynamo-nonce-store.ts';
import type { RemoteEndpoint } from '../../functions/core/interfaces.ts';
import { FileNonceStore } from '../../functions/local/file-nonce-store.ts';
import { handleDatagram, type Outcome, type ReceiverDeps } from '../../functions/receiver/handle-datagram.ts';
import { MemoryNonceStore } from '../../functions/receiver/memory-nonce-store.ts';
import { bc1Packet, fwknopPacket, harness, T0 } from '../functions/receiver/helpers.ts';
import { createTable, type MotoServer, startMoto } from '../support/moto.ts';
import { VirtualTime } from '../support/virtual-time.ts';

const STORM = 10_000;
/** Against moto each copy is an HTTP round trip: 2,000 in CI, `REPLAY_DYNAMO_COPIES=10000` on demand. */
const DYNAMO_STORM = Number(process.env.REPLAY_DYNAMO_COPIES ?? 2000);

/** Source i of a storm: distinct addresses, so the per-source rate limit is not what stops the copies. */
const source = (i: number): RemoteEndpoint => ({
  address: `10.${(i >> 16) & 0xff}.${(i >> 8) & 0xff}.${i & 0xff}`,
  family: 4,
  port: 1024 + (i % 60_000),
});

/** Sends `copies` of `packet` at once, spread round-robin over `deps` (several receivers); counts outcomes. */
async function storm(
  packet: Uint8Array,
  copies: number,
  deps: readonly ReceiverDeps[],
): Promise<Record<string, number>> {
  const outcomes: Outcome[] = await Promise.all(
    Array.from({ length: copies }, (_, i) => handleDatagram(packet, source(i), deps[i % deps.length]!)),
  );
  const tally: Record<string, number> = {};
  for (const outcome of outcomes) {
    const key = outcome.ok ? 'accepted' : outcome.reason;
    tally[key] = (tally[key] ?? 0) + 1;
  }
  return tally;
}

describe('replay storm on one receiver', () => {
  it('a BC1 packet 10,000 times concurrently: accepted once, 9,999 replays, one grant', async () => {
    const h = harness();
    expect(await storm(bc1Packet({ timestampMs: T0 }), STORM, [h.deps])).toEqual({
      accepted: 1,
      replay: STORM - 1,
    });
    expect(h.firewall.calls.filter((call) => call.op === 'allow')).toHaveLength(1);
    await h.deps.grants.close();
  });

  it('an fwknop packet 10,000 times concurrently: accepted once, 9,999 replays', async () => {
    const h = harness();
    const packet = fwknopPacket({ timestampSeconds: Math.floor(T0 / 1000) });
    expect(await storm(packet, STORM, [h.deps])).toEqual({ accepted: 1, replay: STORM - 1 });
    await h.deps.grants.close();
  });
});

describe('replay storm after a restart', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bc8-replay-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('memory store: the restarted receiver refuses all 10,000 copies (before-start), none accepted', async () => {
    const first = harness();
    const packet = bc1Packet({ timestampMs: T0 });
    expect((await handleDatagram(packet, source(0), first.deps)).ok).toBe(true);
    await first.deps.grants.close();
    // The process restarts 2 s later with an empty memory: its horizon is its start.
    const restarted = harness({ nonces: new MemoryNonceStore({ clock: { now: () => T0 + 2000 } }) });
    await restarted.time.advance(2000);
    expect(await storm(packet, STORM, [restarted.deps])).toEqual({ 'before-start': STORM });
    expect(restarted.firewall.calls).toEqual([]);
    await restarted.deps.grants.close();
  });

  it('file store: a storm accepted once, then after a restart on the same file all 10,000 are replays', async () => {
    const path = join(dir, 'nonces.log');
    const time = new VirtualTime(T0 - 60_000);
    const packet = bc1Packet({ timestampMs: T0 });
    const firstStore = await FileNonceStore.open({ path, clock: time, durability: 'write' });
    const first = harness({ nonces: firstStore });
    expect(await storm(packet, STORM, [first.deps])).toEqual({ accepted: 1, replay: STORM - 1 });
    await first.deps.grants.close();
    await firstStore.close();

    const secondStore = await FileNonceStore.open({ path, clock: time, durability: 'write' });
    const second = harness({ nonces: secondStore });
    expect(await storm(packet, STORM, [second.deps])).toEqual({ replay: STORM });
    expect(second.firewall.calls).toEqual([]);
    await second.deps.grants.close();
    await secondStore.close();
  });
});

describe('replay storm to two receivers sharing a DynamoDB nonce table (moto server)', () => {
  let moto: MotoServer;
  beforeAll(async () => {
    moto = await startMoto();
    await createTable(moto.clients().dynamodb, 'bc8-nonces', 'ttl');
  });
  afterAll(async () => {
    await moto?.stop();
  });

  it(
    `the same packet ${DYNAMO_STORM.toLocaleString('en-US')} times at once, alternating between the receivers: accepted exactly once`,
    async () => {
      // Each receiver has its own DynamoDB client (its own connections), as two processes would.
      const receivers = [0, 1].map(() =>
        harness({
          nonces: new DynamoNonceStore({ dynamodb: moto.clients().dynamodb, tableName: 'bc8-nonces' }),
        }),
      );
      const packet = bc1Packet({ timestampMs: T0 });
      const tally = await storm(
        packet,
        DYNAMO_STORM,
        receivers.map((h) => h.deps),
      );
      expect(tally).toEqual({ accepted: 1, replay: DYNAMO_STORM - 1 });
      expect(receivers.flatMap((h) => h.firewall.calls)).toHaveLength(1);
      // The fwknop format too, and again after both "restart" (DynamoDB has no horizon: the table remembers).
      const fwknop = fwknopPacket({ timestampSeconds: Math.floor(T0 / 1000) });
      expect(
        await storm(
          fwknop,
          200,
          receivers.map((h) => h.deps),
        ),
      ).toEqual({ accepted: 1, replay: 199 });
      const restarted = [0, 1].map(() =>
        harness({
          nonces: new DynamoNonceStore({ dynamodb: moto.clients().dynamodb, tableName: 'bc8-nonces' }),
        }),
      );
      expect(
        await storm(
          packet,
          200,
          restarted.map((h) => h.deps),
        ),
      ).toEqual({ replay: 200 });
      for (const h of [...receivers, ...restarted]) await h.deps.grants.close();
    },
    Math.max(120_000, DYNAMO_STORM * 30),
  );
});
