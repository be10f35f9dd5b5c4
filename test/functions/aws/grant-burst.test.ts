/**
 * Two AWS-path properties the issue pins and moto cannot show:
 *  1. A burst of 1,000 knocks from distinct addresses arriving within one second costs at most 40 EC2 calls
 *     (coalescing), and every grant is opened exactly once: asserted on the exact requests, with
 *     aws-sdk-client-mock answering each call after a modelled 50 ms (EC2 calls take longer in practice, which
 *     only makes batches larger). Virtual time: no real sleeps.
 *  2. Fail closed: with DynamoDB unreachable (a real SDK client pointed at a closed port), a valid knock opens
 *     nothing and is audited with its reason.
 */
import { createServer } from 'node:net';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import {
  AuthorizeSecurityGroupIngressCommand,
  type AuthorizeSecurityGroupIngressCommandInput,
  DescribeSecurityGroupsCommand,
  EC2Client,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { DynamoNonceStore } from '../../../functions/aws/dynamo-nonce-store.ts';
import type { Metrics } from '../../../functions/aws/metrics.ts';
import { SecurityGroupFirewall } from '../../../functions/aws/security-group-firewall.ts';
import type { Grant } from '../../../functions/core/interfaces.ts';
import { handleDatagram } from '../../../functions/receiver/handle-datagram.ts';
import { VirtualTime } from '../../support/virtual-time.ts';
import { bc1Packet, harness, T0 } from '../receiver/helpers.ts';

const GROUP = 'sg-0aaaaaaaaaaaaaaaa';
const KNOCKS = 1000;
const EC2_LATENCY_MS = 50;

const address = (i: number): string => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

let ec2Mock: ReturnType<typeof mockClient> | undefined;
afterEach(() => {
  ec2Mock?.restore();
  ec2Mock = undefined;
});

describe('SecurityGroupFirewall under a burst of knocks (aws-sdk-client-mock, virtual time)', () => {
  it('1,000 knocks from distinct addresses within one second: at most 40 EC2 calls, every rule exactly once', async () => {
    const time = new VirtualTime(T0);
    const ec2 = new EC2Client({
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    });
    ec2Mock = mockClient(ec2);
    const afterLatency = <T>(value: T): Promise<T> =>
      new Promise((resolve) => time.setTimeout(() => resolve(value), EC2_LATENCY_MS));
    ec2Mock
      .on(DescribeSecurityGroupsCommand)
      .callsFake(() => afterLatency({ SecurityGroups: [{ GroupId: GROUP, IpPermissions: [] }] }));
    ec2Mock.on(AuthorizeSecurityGroupIngressCommand).callsFake(() => afterLatency({ Return: true }));
    const metrics: Metrics = { put: () => undefined };
    const firewall = new SecurityGroupFirewall({
      ec2,
      securityGroupIds: [GROUP],
      brokerAccess: [{ protocol: 'tcp', port: 8883 }],
      clock: time,
      timers: time,
      retry: {
        maxAttempts: 3,
        baseDelayMs: 100,
        maxDelayMs: 1000,
        sleep: (ms) => new Promise((resolve) => time.setTimeout(resolve, ms)),
        random: () => 0.5,
      },
      metrics,
      // A group whose rules-per-group quota was raised to hold the whole burst (quota handling is tested apart).
      rulesPerGroup: KNOCKS,
    });

    const grants: Grant[] = [];
    const settled: Promise<void>[] = [];
    for (let i = 0; i < KNOCKS; i++) {
      // One knock per millisecond: the burst spans the whole second.
      time.setTimeout(() => {
        const grant: Grant = {
          deviceId: `dev-${i}`,
          address: address(i + 1),
          family: 4,
          access: [{ protocol: 'tcp', port: 8883 }],
          openedAt: time.now(),
          expiresAt: time.now() + 30_000,
        };
        grants.push(grant);
        settled.push(firewall.allow([grant]));
      }, i);
    }
    await time.advance(3_000);
    expect(grants).toHaveLength(KNOCKS);
    await expect(Promise.all(settled)).resolves.toBeDefined();

    const calls = ec2Mock
      .calls()
      .map((call) => call.args[0] as { constructor: { name: string }; input: unknown });
    expect(calls.length).toBeLessThanOrEqual(40);
    expect(calls[0]?.constructor.name).toBe('DescribeSecurityGroupsCommand');
    expect(calls[0]?.input).toEqual({ GroupIds: [GROUP] });
    const authorizes = calls.slice(1);
    expect(authorizes.every((call) => call.constructor.name === 'AuthorizeSecurityGroupIngressCommand')).toBe(
      true,
    );
    const sentRanges: { CidrIp?: string; Description?: string }[] = [];
    for (const call of authorizes) {
      const input = call.input as AuthorizeSecurityGroupIngressCommandInput;
      expect(input.GroupId).toBe(GROUP);
      expect(input.IpPermissions).toHaveLength(1);
      const permission = input.IpPermissions?.[0];
      expect(permission).toMatchObject({ IpProtocol: 'tcp', FromPort: 8883, ToPort: 8883 });
      const ranges = permission?.IpRanges ?? [];
      // The same permission twice in one call is InvalidParameterValue on EC2.
      expect(new Set(ranges.map((r) => r.CidrIp)).size).toBe(ranges.length);
      sentRanges.push(...ranges);
    }
    // Every grant's rule exactly once, with its device and expiry (rounded up: never early) in the description.
    expect(sentRanges).toHaveLength(KNOCKS);
    const expected = grants.map((g) => ({
      CidrIp: `${g.address}/32`,
      Description: `blackcloud:${g.deviceId}:exp=${Math.ceil(g.expiresAt / 1000)}`,
    }));
    const byCidr = (a: { CidrIp?: string }, b: { CidrIp?: string }) =>
      (a.CidrIp ?? '').localeCompare(b.CidrIp ?? '');
    expect([...sentRanges].sort(byCidr)).toEqual([...expected].sort(byCidr));
    expect(firewall.openRules()).toHaveLength(KNOCKS);
    await firewall.close();
  });
});

describe('fail closed on AWS', () => {
  it('with DynamoDB unreachable, a valid knock opens nothing and is audited as nonce-store-unavailable', async () => {
    // A port that was just free: nothing listens there.
    const closedPort = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    const dynamodb = new DynamoDBClient({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${closedPort}`,
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
      maxAttempts: 1,
    });
    const nonces = new DynamoNonceStore({ dynamodb, tableName: 'blackcloud-nonces' });
    const h = harness({ nonces });
    const outcome = await handleDatagram(
      bc1Packet({ timestampMs: T0 }),
      {
        address: '198.51.100.7',
        family: 4,
        port: 40000,
      },
      h.deps,
    );
    expect(outcome).toEqual({ ok: false, reason: 'nonce-store-unavailable' });
    expect(h.firewall.calls).toEqual([]);
    expect(h.audit.events).toEqual([
      expect.objectContaining({
        type: 'packet.rejected',
        reason: 'nonce-store-unavailable',
        source: '198.51.100.7',
      }),
    ]);
    dynamodb.destroy();
  });
});
