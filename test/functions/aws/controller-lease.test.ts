/**
 * The controller lease against DynamoDB (moto), under virtual time: a manual clock and timers shared by the
 * contenders, so expiry and failover are exercised without waiting. Pins: two contenders -> exactly one leader;
 * a release hands over at the other's next tick; a silent leader steps down before its lease expires and the
 * other takes over only after expiry; DynamoDB unreachable -> not leader (reported); the item is a `lease#` item.
 */
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createAwsClients } from '../../../functions/aws/clients.ts';
import {
  ControllerLease,
  type ControllerLeaseOptions,
  leaseItemKey,
} from '../../../functions/aws/controller-lease.ts';
import {
  createTable,
  MOTO_CREDENTIALS,
  MOTO_REGION,
  type MotoServer,
  startMoto,
} from '../../support/moto.ts';
import { VirtualTime } from '../../support/virtual-time.ts';

let moto: MotoServer;
let time: VirtualTime;
let table = 0;
let tableName = '';
const leases: ControllerLease[] = [];

beforeAll(async () => {
  moto = await startMoto();
});

afterAll(async () => {
  for (const lease of leases) void lease.stop();
  await moto.stop();
});

beforeEach(async () => {
  time = new VirtualTime(1_800_000_000_000);
  tableName = `devices-${++table}`;
  await createTable(moto.clients().dynamodb, tableName);
});

interface Contender {
  readonly lease: ControllerLease;
  readonly changes: boolean[];
  readonly errors: unknown[];
}

function contender(holderId: string, overrides: Partial<ControllerLeaseOptions> = {}): Contender {
  const changes: boolean[] = [];
  const errors: unknown[] = [];
  const lease = new ControllerLease({
    dynamodb: moto.clients().dynamodb,
    table: tableName,
    holderId,
    clock: time,
    timers: time,
    onLeadershipChange: (leader) => changes.push(leader),
    onError: (error) => errors.push(error),
    ...overrides,
  });
  leases.push(lease);
  return { lease, changes, errors };
}

/** A DynamoDB client to moto whose requests can be made to hang (until `resume`) or fail. */
function controllableLink() {
  const dynamodb = moto.clients().dynamodb;
  let waiting: (() => void)[] = [];
  const link = {
    dynamodb,
    hang: false,
    fail: false,
    resume() {
      for (const go of waiting) go();
      waiting = [];
    },
  };
  dynamodb.middlewareStack.add(
    (next) => async (args) => {
      if (link.fail) throw new Error('simulated: DynamoDB unreachable');
      if (link.hang) await new Promise<void>((resolve) => waiting.push(resolve));
      return next(args);
    },
    { step: 'initialize', name: 'controllableLink' },
  );
  return link;
}

/** Lets ticks fired by virtual timers finish their DynamoDB round trip. */
async function settle(...all: Contender[]): Promise<void> {
  for (let i = 0; i < 3; i++) await Promise.all(all.map((c) => c.lease.tick()));
}

describe('controller lease (DynamoDB via moto, virtual time)', () => {
  it('GIVEN two contenders WHEN both start THEN exactly one is leader; the item is lease#, never a device/key', async () => {
    const a = contender('holder-a');
    const b = contender('holder-b');
    await Promise.all([a.lease.start(), b.lease.start()]);
    expect([a.lease.isLeader, b.lease.isLeader].filter(Boolean)).toHaveLength(1);
    // Renewals keep it that way.
    for (let i = 0; i < 5; i++) {
      time.tick(20_000);
      await settle(a, b);
      expect([a.lease.isLeader, b.lease.isLeader].filter(Boolean)).toHaveLength(1);
    }
    const leader = a.lease.isLeader ? a : b;
    expect(leader.changes).toEqual([true]);
    const item = await moto.clients().dynamodb.send(
      new GetItemCommand({
        TableName: tableName,
        Key: { pk: { S: leaseItemKey('key-rotation-controller') } },
      }),
    );
    expect(item.Item?.pk?.S).toBe('lease#key-rotation-controller');
    expect(item.Item?.holder?.S).toBe(leader.lease.holderId);
    expect(Number(item.Item?.expiresAt?.N)).toBe(time.now() + 60_000);
    expect([...a.errors, ...b.errors]).toEqual([]);
  });

  it('GIVEN a leader WHEN it releases THEN the other takes over at its next tick', async () => {
    const a = contender('holder-a');
    await a.lease.start();
    const b = contender('holder-b');
    await b.lease.start();
    expect(a.lease.isLeader).toBe(true);
    expect(b.lease.isLeader).toBe(false);

    await a.lease.close();
    expect(a.lease.isLeader).toBe(false);
    expect(a.changes).toEqual([true, false]);
    expect(b.lease.isLeader).toBe(false); // not before its tick
    time.tick(20_000);
    await settle(b);
    expect(b.lease.isLeader).toBe(true);
    expect(b.changes).toEqual([true]);
  });

  it('GIVEN a leader whose renewal hangs THEN it steps down at expiresAt - safety, before the other can take over', async () => {
    const link = controllableLink();
    const a = contender('holder-a', { dynamodb: link.dynamodb });
    await a.lease.start();
    const b = contender('holder-b');
    await b.lease.start();
    expect(a.lease.isLeader).toBe(true);
    link.hang = true; // a's next renewal never gets an answer

    time.tick(49_999);
    await settle(b);
    expect(a.lease.isLeader).toBe(true);
    expect(b.lease.isLeader).toBe(false);
    time.tick(1); // 50 s after a's write: its deadline timer
    expect(a.lease.isLeader).toBe(false);
    expect(a.changes).toEqual([true, false]);
    time.tick(10_000); // 60 s: expiresAt is not yet past
    await settle(b);
    expect(b.lease.isLeader).toBe(false);
    time.tick(20_000); // b's next tick after expiry
    await settle(b);
    expect(b.lease.isLeader).toBe(true);

    // The hung renewal finally goes out: it cannot take the lease back, nor make a leader again.
    link.hang = false;
    link.resume();
    await a.lease.tick();
    expect(a.lease.isLeader).toBe(false);
    expect(a.changes).toEqual([true, false]);
    expect(b.lease.isLeader).toBe(true);
  });

  it('GIVEN a leader that stops renewing without release THEN the other takes over only after expiry', async () => {
    const a = contender('holder-a');
    await a.lease.start();
    const b = contender('holder-b');
    await b.lease.start();
    await a.lease.stop(); // a silent leader: no more renewals, the item stays
    expect(a.lease.isLeader).toBe(false);
    time.tick(40_000); // b ticked at 20 s and 40 s
    await settle(b);
    expect(b.lease.isLeader).toBe(false);
    time.tick(40_000); // b's tick at 80 s (> 60 s)
    await settle(b);
    expect(b.lease.isLeader).toBe(true);
    expect(b.changes).toEqual([true]);
  });

  it('GIVEN a leader whose process stalls (clock jump, no timer ran) THEN it is not leader past expiresAt - safety', async () => {
    const a = contender('holder-a');
    await a.lease.start();
    const b = contender('holder-b');
    time.jump(49_999);
    expect(a.lease.isLeader).toBe(true);
    time.jump(1);
    expect(a.lease.isLeader).toBe(false);
    await b.lease.start();
    expect(b.lease.isLeader).toBe(false); // 50 s: still a's lease
    time.jump(10_001);
    await b.lease.tick();
    expect(b.lease.isLeader).toBe(true);
  });

  it('GIVEN DynamoDB unreachable THEN not leader, the failure reported; a leader that loses it steps down at its next tick', async () => {
    const unreachable = createAwsClients({
      region: MOTO_REGION,
      endpoint: 'http://127.0.0.1:9', // discard port: nothing listens
      credentials: MOTO_CREDENTIALS,
      maxAttempts: 1,
    });
    const cut = contender('holder-cut', { dynamodb: unreachable.dynamodb });
    await cut.lease.start();
    expect(cut.lease.isLeader).toBe(false);
    expect(cut.errors).toHaveLength(1);
    expect(cut.changes).toEqual([]);
    unreachable.dynamodb.destroy();

    const link = controllableLink();
    const a = contender('holder-a', { dynamodb: link.dynamodb });
    await a.lease.start();
    expect(a.lease.isLeader).toBe(true);
    link.fail = true;
    time.tick(20_000);
    await a.lease.tick();
    expect(a.lease.isLeader).toBe(false);
    expect(a.changes).toEqual([true, false]);
    expect(a.errors.length).toBeGreaterThan(0);
    // Back: it wins again at its next tick (it still holds the item).
    link.fail = false;
    time.tick(20_000);
    await a.lease.tick();
    expect(a.lease.isLeader).toBe(true);
    expect(a.changes).toEqual([true, false, true]);
  });

  it('GIVEN inconsistent timings THEN the lease refuses them', () => {
    expect(() => contender('x', { renewMs: 50_000 })).toThrow(RangeError);
    expect(() => contender('x', { leaseMs: 0 })).toThrow(RangeError);
    expect(() => contender('')).toThrow(RangeError);
  });
});
