/**
 * The slot share leases against DynamoDB (moto), under virtual time (functions/aws/slot-share-lease.ts). Pins:
 * three receivers of 3 hold the three shares, one each; a fourth holds none and takes the share a closing receiver
 * releases at its next tick; a receiver that can no longer renew loses its share (told, before its lease expires)
 * and another takes it only after expiry; the items are `lease#grant-slots-<k>-of-<n>`; bad options are refused.
 */
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { leaseItemKey } from '../../../functions/aws/controller-lease.ts';
import type { SlotShare } from '../../../functions/aws/sg-plan.ts';
import { SlotShareLease, slotShareLeaseName } from '../../../functions/aws/slot-share-lease.ts';
import { createTable, type MotoServer, startMoto } from '../../support/moto.ts';
import { VirtualTime } from '../../support/virtual-time.ts';

let moto: MotoServer;
let time: VirtualTime;
let table = 0;
let tableName = '';
const running: SlotShareLease[] = [];

beforeAll(async () => {
  moto = await startMoto();
});

afterAll(async () => {
  await Promise.all(running.map((lease) => lease.close()));
  await moto.stop();
});

beforeEach(async () => {
  time = new VirtualTime(1_800_000_000_000);
  tableName = `devices-${++table}`;
  await createTable(moto.clients().dynamodb, tableName);
});

interface Receiver {
  readonly lease: SlotShareLease;
  readonly changes: (SlotShare | undefined)[];
  readonly errors: unknown[];
  /** While set, every DynamoDB request of this receiver fails. */
  link: { fail: boolean };
}

function receiver(holderId: string, of: number, firstIndex = 0): Receiver {
  const dynamodb = moto.clients().dynamodb;
  const link = { fail: false };
  dynamodb.middlewareStack.add(
    (next) => async (args) => {
      if (link.fail) throw new Error('simulated: DynamoDB unreachable');
      return next(args);
    },
    { step: 'initialize', name: 'failingLink' },
  );
  const changes: (SlotShare | undefined)[] = [];
  const errors: unknown[] = [];
  const lease = new SlotShareLease({
    dynamodb,
    table: tableName,
    holderId,
    of,
    firstIndex,
    clock: time,
    timers: time,
    onShareChange: (share) => changes.push(share),
    onError: (error) => errors.push(error),
  });
  running.push(lease);
  return { lease, changes, errors, link };
}

/** Advance virtual time and let the ticks it fires finish their DynamoDB round trips. */
async function pass(ms: number, ...all: Receiver[]): Promise<void> {
  time.tick(ms);
  for (let i = 0; i < 3; i++) await Promise.all(all.map((r) => r.lease.tick()));
}

async function holderOf(index: number, of: number): Promise<string | undefined> {
  const key = { pk: { S: leaseItemKey(slotShareLeaseName(index, of)) } };
  const answer = await moto.clients().dynamodb.send(new GetItemCommand({ TableName: tableName, Key: key }));
  return answer.Item?.holder?.S;
}

describe('slot share leases (DynamoDB via moto, virtual time)', () => {
  it('GIVEN three receivers of 3 and a fourth WHEN they start THEN each of the three holds its own share, the fourth none', async () => {
    // All try index 0 first: the conditional puts still give each a different share.
    const [a, b, c, d] = ['holder-a', 'holder-b', 'holder-c', 'holder-d'].map((id) => receiver(id, 3)) as [
      Receiver,
      Receiver,
      Receiver,
      Receiver,
    ];
    for (const r of [a, b, c, d]) await r.lease.start();
    expect([a, b, c].map((r) => r.lease.share?.index)).toEqual([0, 1, 2]);
    expect(d.lease.share).toBeUndefined();
    expect(a.changes).toEqual([{ index: 0, of: 3 }]);
    expect(d.changes).toEqual([]);
    expect(await holderOf(1, 3)).toBe('holder-b');
    // Renewals keep it so.
    for (let i = 0; i < 4; i++) await pass(20_000, a, b, c, d);
    expect([a, b, c, d].map((r) => r.lease.share?.index)).toEqual([0, 1, 2, undefined]);
    expect([...a.errors, ...b.errors, ...c.errors, ...d.errors]).toEqual([]);

    // b closes (a rolling replacement): its share is released and d takes it at its next tick.
    await b.lease.close();
    expect(b.changes).toEqual([{ index: 1, of: 3 }, undefined]);
    expect(await holderOf(1, 3)).toBeUndefined();
    await pass(20_000, a, c, d);
    expect(d.lease.share).toEqual({ index: 1, of: 3 });
    expect(d.changes).toEqual([{ index: 1, of: 3 }]);
  });

  it('GIVEN a receiver whose DynamoDB fails WHEN it cannot renew THEN it loses its share first, and another takes it only after expiry', async () => {
    const a = receiver('holder-a', 2, 1);
    const b = receiver('holder-b', 2, 0);
    const c = receiver('holder-c', 2, 1);
    await a.lease.start();
    await b.lease.start();
    await c.lease.start();
    expect([a, b, c].map((r) => r.lease.share?.index)).toEqual([1, 0, undefined]);
    a.link.fail = true;
    const failedAt = time.now();
    await pass(20_000, a, b, c); // a's renewal fails: it steps down at once (ControllerLease fails safe)
    expect(a.lease.share).toBeUndefined();
    expect(a.changes).toEqual([{ index: 1, of: 2 }, undefined]);
    expect(a.errors.length).toBeGreaterThan(0);
    // c tries both shares at each tick; share 1 is still a's until its lease (60 s) expires.
    await pass(20_000, b, c);
    expect(c.lease.share).toBeUndefined();
    await pass(failedAt + 60_000 - time.now() + 1, b, c);
    await pass(20_000, b, c);
    expect(c.lease.share).toEqual({ index: 1, of: 2 });
    expect(b.lease.share).toEqual({ index: 0, of: 2 });
    // a, reachable again, finds both shares held.
    a.link.fail = false;
    await pass(20_000, a, b, c);
    expect(a.lease.share).toBeUndefined();
  });

  it.each([
    [{ of: 0 }, /of must be a whole number >= 1, got 0/],
    [{ of: 2, firstIndex: -1 }, /firstIndex must be a whole number >= 0, got -1/],
  ])('refuses %j', (bad, message) => {
    expect(
      () =>
        new SlotShareLease({
          dynamodb: moto.clients().dynamodb,
          table: tableName,
          holderId: 'h',
          clock: time,
          timers: time,
          onShareChange: () => {},
          ...bad,
        } as never),
    ).toThrow(message);
  });
});
