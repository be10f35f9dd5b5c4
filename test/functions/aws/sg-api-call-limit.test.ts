/**
 * sg-api.ts keeps every Authorize and Revoke within EC2's EC2_MAX_RANGES_PER_CALL ranges: a single call given more
 * throws a RangeError before anything is sent; revokeIngressIdempotent splits any number of rules into calls of at
 * most that many, and a call that races (NotFound) is retried on its own. On the EC2 model
 * (bench/support/modelled-ec2.ts): a group of more than 100 rules is one moto cannot hold (60 per VPC group).
 */
import { AuthorizeSecurityGroupIngressCommand } from '@aws-sdk/client-ec2';
import { afterEach, describe, expect, it } from 'vitest';
import { ModelledEc2 } from '../../../bench/support/modelled-ec2.ts';
import {
  authorizeIngress,
  EC2_MAX_RANGES_PER_CALL,
  revokeIngress,
  revokeIngressIdempotent,
  type SgContext,
} from '../../../functions/aws/sg-api.ts';
import { callChunks } from '../../../functions/aws/sg-plan.ts';
import type { RuleSpec } from '../../../functions/aws/sg-rules.ts';
import { immediateRetry } from '../../support/retry.ts';

const GROUP = 'sg-0123456789abcdef0';
const models: ModelledEc2[] = [];
afterEach(() => {
  for (const m of models.splice(0)) m.restore();
});

function setup(): { ec2: ModelledEc2; ctx: SgContext } {
  const ec2 = new ModelledEc2({ groupIds: [GROUP], rulesPerGroup: 500, clock: { now: () => 0 } });
  models.push(ec2);
  return { ec2, ctx: { ec2: ec2.client, retry: immediateRetry(2) } };
}

/** `n` host rules on tcp/8883: every fifth one IPv6. */
const specs = (n: number): RuleSpec[] =>
  Array.from({ length: n }, (_, i) =>
    i % 5 === 4
      ? { protocol: 'tcp', port: 8883, family: 6, cidr: `2001:db8:7::${(i + 1).toString(16)}/128` }
      : { protocol: 'tcp', port: 8883, family: 4, cidr: `198.18.${i >> 8}.${i & 0xff}/32` },
  );

async function open(ec2: ModelledEc2, rules: readonly RuleSpec[]): Promise<void> {
  for (const chunk of callChunks(rules, EC2_MAX_RANGES_PER_CALL)) {
    await ec2.client.send(
      new AuthorizeSecurityGroupIngressCommand({
        GroupId: GROUP,
        IpPermissions: [
          {
            IpProtocol: 'tcp',
            FromPort: 8883,
            ToPort: 8883,
            IpRanges: chunk.filter((s) => s.family === 4).map((s) => ({ CidrIp: s.cidr })),
            Ipv6Ranges: chunk.filter((s) => s.family === 6).map((s) => ({ CidrIpv6: s.cidr })),
          },
        ],
      }),
    );
  }
}

const revokeRanges = (ec2: ModelledEc2, from = 0) =>
  ec2
    .callLog()
    .slice(from)
    .filter((c) => c.action === 'RevokeSecurityGroupIngress')
    .map((c) => [c.ranges, c.outcome]);

describe('EC2_MAX_RANGES_PER_CALL in sg-api.ts', () => {
  it('is 100 (docs/scaling.md)', () => {
    expect(EC2_MAX_RANGES_PER_CALL).toBe(100);
  });

  it('one Authorize or Revoke of more than 100 ranges is a RangeError and sends nothing; 100 go out', async () => {
    const { ec2, ctx } = setup();
    await expect(
      authorizeIngress(
        ctx,
        GROUP,
        specs(101).map((spec) => ({ spec })),
      ),
    ).rejects.toThrow(/AuthorizeSecurityGroupIngress: 101 IP ranges in one call, EC2 takes at most 100/);
    await expect(revokeIngress(ctx, GROUP, specs(101))).rejects.toThrow(
      /RevokeSecurityGroupIngress: 101 IP ranges in one call/,
    );
    expect(ec2.callLog()).toEqual([]);
    // The same rule twice is one range (toIpPermissions deduplicates): 100 distinct + 1 repeat pass.
    const hundred = specs(100);
    expect(
      await authorizeIngress(
        ctx,
        GROUP,
        [...hundred, hundred[0] as RuleSpec].map((spec) => ({ spec })),
      ),
    ).toBe('ok');
    expect(ec2.rules().now).toBe(100);
    expect(await revokeIngress(ctx, GROUP, hundred)).toBe('ok');
    expect(ec2.rules().now).toBe(0);
  });

  it('revokeIngressIdempotent revokes 250 rules in calls of 100, 100, 50; a call that races is redone on its own', async () => {
    const { ec2, ctx } = setup();
    const all = specs(250);
    await open(ec2, all);
    let from = ec2.callLog().length;
    await revokeIngressIdempotent(ctx, GROUP, all);
    expect(ec2.rules().now).toBe(0);
    expect(revokeRanges(ec2, from)).toEqual([
      [100, 'ok'],
      [100, 'ok'],
      [50, 'ok'],
    ]);

    // 10 of the second hundred already gone: that call is NotFound, then its other 90 go in one call.
    await open(ec2, all);
    await revokeIngress(ctx, GROUP, all.slice(120, 130));
    from = ec2.callLog().length;
    await revokeIngressIdempotent(ctx, GROUP, all);
    expect(ec2.rules().now).toBe(0);
    expect(revokeRanges(ec2, from)).toEqual([
      [100, 'ok'],
      [100, 'InvalidPermission.NotFound'],
      [90, 'ok'],
      [50, 'ok'],
    ]);
  });
});
