/**
 * Faults on the AWS path:
 * - the receiver killed (SIGKILL) while a grant is open leaves the rule in the broker security group, and the
 *   sweeper's first run after the expiry closes it (a run before the expiry leaves it alone); moto server;
 * - the nonce store down (DynamoDB unreachable) fails closed over real UDP: no grant, 'nonce-store-unavailable';
 * - EC2 throttling and quota errors while a storm of grants arrives: queued and retried, none lost (the modelled
 *   EC2 API of bench/support/modelled-ec2.ts, on a virtual clock: moto cannot throttle or run out of rules).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { createInterface } from 'node:readline';
import { DynamoDBClient, PutItemCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { DescribeSecurityGroupsCommand } from '@aws-sdk/client-ec2';
import { AddThingToThingGroupCommand, CreateThingCommand } from '@aws-sdk/client-iot';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ModelledEc2 } from '../../bench/support/modelled-ec2.ts';
import type { AwsClients } from '../../functions/aws/clients.ts';
import { deviceItem, keyItem } from '../../functions/aws/device-record.ts';
import { DynamoGrantStore } from '../../functions/aws/dynamo-grant-store.ts';
import { DynamoNonceStore } from '../../functions/aws/dynamo-nonce-store.ts';
import type { Metrics } from '../../functions/aws/metrics.ts';
import { SecurityGroupFirewall } from '../../functions/aws/security-group-firewall.ts';
import type { Grant, Timers } from '../../functions/core/interfaces.ts';
import { startReceiver } from '../../functions/receiver/udp-receiver.ts';
import { sweepExpiredGrants } from '../../functions/sweeper/sweep.ts';
import { encodeBc1 } from '../../spa/bc1.ts';
import { PROJECT_ROOT } from '../functions/local/helpers.ts';
import { bc1Packet, harness, T0 } from '../functions/receiver/helpers.ts';
import {
  createStackResources,
  MOTO_CREDENTIALS,
  MOTO_REGION,
  type MotoServer,
  stackReceiverEnv,
  startMoto,
} from '../support/moto.ts';
import { immediateRetry } from '../support/retry.ts';

const noSleepRetry = immediateRetry(3);

function sendUdp(port: number, bytes: Uint8Array): Promise<void> {
  const socket = createSocket('udp4');
  return new Promise<void>((resolve, reject) =>
    socket.send(bytes, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())),
  ).finally(() => socket.close());
}

describe('the AWS receiver killed with SIGKILL while a grant is open (moto server)', () => {
  let moto: MotoServer;
  let clients: AwsClients;
  let groupId: string;
  let child: ChildProcessWithoutNullStreams | undefined;
  const KEY = new Uint8Array(32).fill(0x38);

  beforeAll(async () => {
    moto = await startMoto();
    clients = moto.clients();
    groupId = (await createStackResources(clients)).groupIds[0] ?? '';
    await clients.iot.send(
      new CreateThingCommand({
        thingName: 'dev-8',
        attributePayload: {
          attributes: { enabled: 'true', allowedAccess: 'tcp/8883', maxOpenSeconds: '60' },
        },
      }),
    );
    await clients.iot.send(new AddThingToThingGroupCommand({ thingGroupName: 'fleet', thingName: 'dev-8' }));
    await clients.dynamodb.send(new PutItemCommand({ TableName: 'devices', Item: deviceItem('dev-8', [8]) }));
    await clients.dynamodb.send(
      new PutItemCommand({ TableName: 'devices', Item: keyItem('dev-8', { keyId: 8, key: KEY }) }),
    );
  });
  afterAll(async () => {
    child?.kill('SIGKILL');
    await moto?.stop();
  });

  async function brokerRules(): Promise<string[]> {
    const result = await clients.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] }));
    return (result.SecurityGroups?.[0]?.IpPermissions ?? []).flatMap((p) =>
      (p.IpRanges ?? []).map((r) => `${p.FromPort} ${r.CidrIp} ${r.Description}`),
    );
  }

  it('the rule outlives the process; the first sweep after its expiry closes it', async () => {
    const queueUrl = `${moto.endpoint}/123456789012/revoke`;
    const spawned = spawn(process.execPath, ['test/hostile/support/aws-receiver-child.ts'], {
      cwd: PROJECT_ROOT,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        AWS_ACCESS_KEY_ID: MOTO_CREDENTIALS.accessKeyId,
        AWS_SECRET_ACCESS_KEY: MOTO_CREDENTIALS.secretAccessKey,
        AWS_EC2_METADATA_DISABLED: 'true',
        ...stackReceiverEnv(moto.endpoint, groupId, queueUrl),
      },
    });
    child = spawned;
    let stderr = '';
    spawned.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const lines: Record<string, unknown>[] = [];
    createInterface({ input: spawned.stdout }).on('line', (line) => {
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not JSON: ignored
      }
    });
    const port = await vi.waitFor(
      () => {
        if (spawned.exitCode !== null) throw new Error(`receiver exited: ${stderr}`);
        const found = lines.find((line) => typeof line.port === 'number');
        expect(found, `receiver port (stderr: ${stderr})`).toBeDefined();
        return found!.port as number;
      },
      { timeout: 30_000, interval: 50 },
    );

    const knock = encodeBc1(
      { timestampMs: Date.now(), durationSeconds: 0, access: [{ protocol: 'tcp', port: 8883 }] },
      { keyId: 8, key: KEY, nonce: randomBytes(12) },
    );
    await sendUdp(port, knock);
    const opened = await vi.waitFor(
      () => {
        const line = lines.find((l) => l.type === 'grant.opened');
        expect(line).toBeDefined();
        return line as { expiresAt: number };
      },
      { timeout: 15_000, interval: 20 },
    );
    const exited = new Promise((resolve) => spawned.once('exit', (_code, signal) => resolve(signal)));
    spawned.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    child = undefined;

    const expirySeconds = Math.ceil(opened.expiresAt / 1000);
    expect(await brokerRules()).toEqual([`8883 127.0.0.1/32 blackcloud:dev-8:exp=${expirySeconds}`]);
    const sweep = (now: number) =>
      sweepExpiredGrants({
        ec2: clients.ec2,
        grants: new DynamoGrantStore({ dynamodb: clients.dynamodb, tableName: 'grants' }),
        securityGroupIds: [groupId],
        clock: { now: () => now },
        retry: noSleepRetry,
      });
    // A sweep before the expiry leaves the live grant alone (no real waiting: the sweeper's clock is injected).
    expect((await sweep(opened.expiresAt - 1000)).revoked).toEqual([]);
    expect(await brokerRules()).toHaveLength(1);
    // The first sweep after the expiry closes it and forgets the grant.
    const after = await sweep(expirySeconds * 1000 + 1000);
    expect(after.revoked.map((r) => [r.address, r.deviceId])).toEqual([['127.0.0.1', 'dev-8']]);
    expect(after.failures).toEqual([]);
    expect(await brokerRules()).toEqual([]);
    const items = await clients.dynamodb.send(new ScanCommand({ TableName: 'grants' }));
    expect(items.Items).toEqual([]);
  }, 90_000);
});

describe('the nonce store down', () => {
  it('DynamoDB unreachable: the knock over real UDP fails closed (no grant, nonce-store-unavailable)', async () => {
    // An endpoint where nothing listens: a port the OS gave us, then closed again.
    const dead = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const dynamodb = new DynamoDBClient({
      region: MOTO_REGION,
      endpoint: `http://127.0.0.1:${dead}`,
      credentials: MOTO_CREDENTIALS,
      maxAttempts: 1,
    });
    const h = harness({ nonces: new DynamoNonceStore({ dynamodb, tableName: 'nonces' }) });
    const receiver = await startReceiver({ host: '127.0.0.1', port: 0, deps: h.deps });
    try {
      await sendUdp(receiver.address.port, bc1Packet({ timestampMs: T0 }));
      await vi.waitFor(() => expect(receiver.counters()['rejected.nonce-store-unavailable']).toBe(1), {
        timeout: 10_000,
        interval: 20,
      });
      expect(receiver.counters().accepted).toBeUndefined();
      expect(h.firewall.calls).toEqual([]);
      expect(h.audit.events.filter((e) => e.type === 'packet.rejected')).toMatchObject([
        { reason: 'nonce-store-unavailable', deviceId: 'demo-device' },
      ]);
    } finally {
      await receiver.close();
      await h.deps.grants.close();
      dynamodb.destroy();
    }
  });
});

describe('EC2 throttling and quota errors during a grant storm (modelled EC2 on a virtual clock)', () => {
  it('300 grants at once into 2 groups x 50 rules, one group filled behind our back: all open in the end', async () => {
    let now = 1_700_000_000_000;
    const clock = { now: () => now };
    const groups = ['sg-0hostile000000001', 'sg-0hostile000000002'];
    const model = new ModelledEc2({
      groupIds: groups,
      rulesPerGroup: 50,
      clock,
      buckets: {
        AuthorizeSecurityGroupIngress: { burst: 3, ratePerSecond: 1 },
        RevokeSecurityGroupIngress: { burst: 3, ratePerSecond: 1 },
      },
    });
    const timers: Timers = {
      setTimeout: (fn, ms) => setTimeout(fn, Math.min(ms, 5)),
      clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
    };
    const queueDepths: number[] = [];
    const apiErrors: string[] = [];
    const metrics: Metrics = {
      put: (name, value, dimensions) => {
        if (name === 'GrantQueueDepth') queueDepths.push(value);
        if (name === 'ApiErrors' && dimensions?.Code !== undefined) apiErrors.push(dimensions.Code);
      },
    };
    const firewall = new SecurityGroupFirewall({
      // Every grant waits for its slot here, however long (the quota logic under test, not the device's patience).
      maxWaitMs: Number.POSITIVE_INFINITY,
      maxSlotWaitMs: Number.POSITIVE_INFINITY,
      ec2: model.client,
      securityGroupIds: groups,
      brokerAccess: [{ protocol: 'tcp', port: 8883 }],
      clock,
      timers,
      // Backoff advances the virtual clock instead of sleeping: the buckets refill as EC2's would.
      retry: {
        maxAttempts: 20,
        baseDelayMs: 200,
        maxDelayMs: 5000,
        sleep: async (ms) => {
          now += Math.max(ms, 1);
        },
        random: () => 0.5,
      },
      metrics,
      rulesPerGroup: 50,
      maxQueuedRules: 1000,
      queueRetryMs: 10,
      coalesceWindowMs: 1,
      maxBatchRules: 20,
    });
    try {
      // The firewall describes the groups first; then someone else takes 30 slots of the first group.
      await firewall.allow([grantFor(0, now)]);
      model.fill(groups[0]!, 30);
      const grants = Array.from({ length: 300 }, (_, i) => grantFor(i + 1, now));
      const results: ('open' | Error)[] = new Array(grants.length);
      const all = Promise.all(
        grants.map((grant, i) =>
          firewall.allow([grant]).then(
            () => {
              results[i] = 'open';
            },
            (error: Error) => {
              results[i] = error;
            },
          ),
        ),
      );
      // Free slots as grants expire: revoke whatever is open (not the out-of-band rules) until all were open.
      const openedOnce = new Set<string>();
      await vi.waitFor(
        async () => {
          await firewall.idle();
          const ours = firewall.openRules();
          for (const rule of ours) openedOnce.add(rule.spec.cidr);
          if (ours.length > 0) {
            await firewall.revoke(
              ours.map((rule) => ({ ...grantFor(0, now), address: rule.spec.cidr.replace('/32', '') })),
            );
          }
          expect(openedOnce.size).toBe(301);
        },
        { timeout: 20_000, interval: 10 },
      );
      await all;
      expect(results.filter((r) => r !== 'open')).toEqual([]);
      expect(apiErrors).toContain('RequestLimitExceeded');
      expect(model.stats.errors.RulesPerSecurityGroupLimitExceeded ?? 0).toBeGreaterThan(0);
      expect(Math.max(...queueDepths)).toBeGreaterThan(0);
      console.log(
        `EC2 storm: 301 grants through 100 slots (30 taken out of band): calls ${JSON.stringify(model.stats.calls)}, ` +
          `errors ${JSON.stringify(model.stats.errors)}, largest queue ${Math.max(...queueDepths)}, none lost`,
      );
    } finally {
      await firewall.close();
      model.restore();
    }
  }, 60_000);
});

function grantFor(i: number, now: number): Grant {
  return {
    deviceId: `dev-${i}`,
    address: `198.18.${i >> 8}.${i & 0xff}`,
    family: 4,
    access: [{ protocol: 'tcp', port: 8883 }],
    openedAt: now,
    // Long-lived: this test is about throttling and quota, not about grants expiring while they wait.
    expiresAt: now + 3_600_000,
  };
}
