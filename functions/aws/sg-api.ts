/**
 * The EC2 security-group calls blackcloud makes, with EC2's error semantics turned into outcomes. Shared by the
 * receiver's firewall, the revoker and the sweeper. Every call goes through the retry policy (throttling and
 * transient errors back off with jitter) and, when the context has one, the client-side pacing (call-pacer.ts:
 * every attempt waits for its action's turn); codes that are outcomes (not failures) are not counted as ApiErrors.
 *
 *   authorize: `InvalidPermission.Duplicate` → 'duplicate' (some rule is already open; EC2 adds nothing from the
 *              call, moto may add the ranges before the duplicate), `RulesPerSecurityGroupLimitExceeded` → 'full'.
 *   update:    `InvalidPermission.NotFound` → 'not-found' (moto instead ignores unknown rules silently).
 *   revoke:    `InvalidPermission.NotFound` → nothing from the call was revoked (non-default VPC);
 *              `UnknownIpPermissions` in the response (default VPC) → those were already gone.
 *              revokeIngressIdempotent: any number of rules, in calls of at most EC2_MAX_RANGES_PER_CALL, one
 *              after the other; on NotFound, describe the group and revoke that call's rest in one call; if that
 *              races again, revoke per rule. Afterwards every given rule is gone.
 *   Per call:  EC2 takes at most EC2_MAX_RANGES_PER_CALL IP ranges in one Authorize or Revoke. authorizeIngress
 *              and revokeIngress are one call each: given rules that make more ranges, they throw a RangeError
 *              (a caller's bug) before sending anything; callers split with sg-plan.ts callChunks.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  DescribeSecurityGroupsCommand,
  type EC2Client,
  type IpPermission,
  RevokeSecurityGroupIngressCommand,
  UpdateSecurityGroupRuleDescriptionsIngressCommand,
} from '@aws-sdk/client-ec2';
import type { AddressFamily } from '../../spa/types.ts';
import type { Ec2Pacing } from './call-pacer.ts';
import { awsErrorCode } from './errors.ts';
import { type RetryPolicy, withRetry } from './retry.ts';
import { callChunks } from './sg-plan.ts';
import {
  type DescribedRule,
  hostRulesOf,
  type RuleSpec,
  type RuleWithDescription,
  ruleCounts,
  ruleKey,
  toIpPermissions,
} from './sg-rules.ts';

export interface SgContext {
  readonly ec2: EC2Client;
  readonly retry: RetryPolicy;
  /** Client-side pacing per action (call-pacer.ts): each attempt waits for its turn. @default none */
  readonly pacing?: Ec2Pacing | undefined;
}

export interface GroupSnapshot {
  readonly groupId: string;
  /** Host rules on single ports (blackcloud's and others'). */
  readonly rules: readonly DescribedRule[];
  /** Every ingress rule counted against the per-group quota, per family. */
  readonly used: Readonly<Record<AddressFamily, number>>;
}

/**
 * EC2 takes at most this many IP ranges (IPv4 and IPv6 together, over all the call's permissions) in one
 * Authorize or Revoke call (docs/scaling.md, "Staying inside the EC2 API budget"). One rule spec is one range.
 */
export const EC2_MAX_RANGES_PER_CALL = 100;

const DUPLICATE = 'InvalidPermission.Duplicate';
const NOT_FOUND = 'InvalidPermission.NotFound';
const FULL = 'RulesPerSecurityGroupLimitExceeded';

/** The permissions of one Authorize / Revoke call; more ranges than EC2 takes in one call is a RangeError. */
function callPermissions(operation: string, rules: readonly RuleWithDescription[]): IpPermission[] {
  const permissions = toIpPermissions(rules);
  const ranges = permissions.reduce((n, p) => n + (p.IpRanges?.length ?? 0) + (p.Ipv6Ranges?.length ?? 0), 0);
  if (ranges > EC2_MAX_RANGES_PER_CALL)
    throw new RangeError(
      `${operation}: ${ranges} IP ranges in one call, EC2 takes at most ${EC2_MAX_RANGES_PER_CALL}: ` +
        'split the rules with callChunks (sg-plan.ts)',
    );
  return permissions;
}

/** A retried call whose `outcomes` codes are answers, not errors (not reported to onError). */
function call<T>(
  ctx: SgContext,
  operation: string,
  outcomes: readonly string[],
  fn: () => Promise<T>,
): Promise<T> {
  const onError = ctx.retry.onError;
  const pacing = ctx.pacing;
  const attempt = pacing === undefined ? fn : () => pacing.send(operation, fn);
  return withRetry(operation, attempt, {
    ...ctx.retry,
    onError: (op, code) => {
      if (!outcomes.includes(code)) onError?.(op, code);
    },
  });
}

/**
 * One group's ingress rules (DescribeSecurityGroups with its id: unlike a DescribeSecurityGroupRules filter, a
 * missing group is an error, `InvalidGroup.NotFound`, so a wrong group id cannot pass for an empty group).
 */
export async function describeIngress(ctx: SgContext, groupId: string): Promise<GroupSnapshot> {
  const result = await call(ctx, 'DescribeSecurityGroups', [], () =>
    ctx.ec2.send(new DescribeSecurityGroupsCommand({ GroupIds: [groupId] })),
  );
  const group = result.SecurityGroups?.find((g) => g.GroupId === groupId);
  if (group === undefined) {
    throw Object.assign(new Error(`security group ${groupId} was not in the DescribeSecurityGroups answer`), {
      name: 'InvalidGroup.NotFound',
    });
  }
  const permissions = group.IpPermissions ?? [];
  return { groupId, rules: hostRulesOf(groupId, permissions), used: ruleCounts(permissions) };
}

export type AuthorizeOutcome = 'ok' | 'duplicate' | 'full';

/**
 * `rules` given as a function is asked again as each attempt leaves (after the pacer's wait, after a throttled
 * try), so the caller can drop rules no longer wanted; an attempt with none left sends nothing and answers 'ok'.
 */
export async function authorizeIngress(
  ctx: SgContext,
  groupId: string,
  rules: readonly RuleWithDescription[] | (() => readonly RuleWithDescription[]),
): Promise<AuthorizeOutcome> {
  const current = typeof rules === 'function' ? rules : () => rules;
  if (typeof rules !== 'function') {
    if (rules.length === 0) return 'ok';
    callPermissions('AuthorizeSecurityGroupIngress', rules); // too many ranges: refused before any wait
  }
  try {
    await call(ctx, 'AuthorizeSecurityGroupIngress', [DUPLICATE], async () => {
      const sending = current();
      if (sending.length === 0) return;
      await ctx.ec2.send(
        new AuthorizeSecurityGroupIngressCommand({
          GroupId: groupId,
          IpPermissions: callPermissions('AuthorizeSecurityGroupIngress', sending),
        }),
      );
    });
    return 'ok';
  } catch (error) {
    const code = awsErrorCode(error);
    if (code === DUPLICATE) return 'duplicate';
    if (code === FULL) return 'full';
    throw error;
  }
}

export type UpdateOutcome = 'ok' | 'not-found';

export async function updateIngressDescriptions(
  ctx: SgContext,
  groupId: string,
  rules: readonly RuleWithDescription[],
): Promise<UpdateOutcome> {
  if (rules.length === 0) return 'ok';
  try {
    await call(ctx, 'UpdateSecurityGroupRuleDescriptionsIngress', [NOT_FOUND], () =>
      ctx.ec2.send(
        new UpdateSecurityGroupRuleDescriptionsIngressCommand({
          GroupId: groupId,
          IpPermissions: toIpPermissions(rules),
        }),
      ),
    );
    return 'ok';
  } catch (error) {
    if (awsErrorCode(error) === NOT_FOUND) return 'not-found';
    throw error;
  }
}

/** One revoke call (at most EC2_MAX_RANGES_PER_CALL ranges). 'not-found' = nothing from this call was revoked. */
export async function revokeIngress(
  ctx: SgContext,
  groupId: string,
  specs: readonly RuleSpec[],
): Promise<'ok' | 'not-found'> {
  if (specs.length === 0) return 'ok';
  const permissions = callPermissions(
    'RevokeSecurityGroupIngress',
    specs.map((spec) => ({ spec })),
  );
  try {
    // UnknownIpPermissions in the response (default VPC) lists rules that were already gone: nothing to do.
    await call(ctx, 'RevokeSecurityGroupIngress', [NOT_FOUND], () =>
      ctx.ec2.send(new RevokeSecurityGroupIngressCommand({ GroupId: groupId, IpPermissions: permissions })),
    );
    return 'ok';
  } catch (error) {
    if (awsErrorCode(error) === NOT_FOUND) return 'not-found';
    throw error;
  }
}

/**
 * Revoke rules so that afterwards none of them exists in the group, whichever were already gone: any number of
 * them, in calls of at most EC2_MAX_RANGES_PER_CALL ranges (one rule spec is one range), sent one after the other.
 */
export async function revokeIngressIdempotent(
  ctx: SgContext,
  groupId: string,
  specs: readonly RuleSpec[],
): Promise<void> {
  for (const chunk of callChunks(specs, EC2_MAX_RANGES_PER_CALL))
    await revokeCallIdempotent(ctx, groupId, chunk);
}

/** One call's worth of rules (at most EC2_MAX_RANGES_PER_CALL): gone afterwards, whichever were already gone. */
async function revokeCallIdempotent(
  ctx: SgContext,
  groupId: string,
  specs: readonly RuleSpec[],
): Promise<void> {
  if ((await revokeIngress(ctx, groupId, specs)) === 'ok') return;
  // Nothing was revoked. Revoke the ones still present in one call.
  const present = new Set((await describeIngress(ctx, groupId)).rules.map(ruleKey));
  const rest = specs.filter((s) => present.has(ruleKey(s)));
  if ((await revokeIngress(ctx, groupId, rest)) === 'ok') return;
  // Someone else is revoking too: per rule, where NotFound simply means gone.
  for (const spec of rest) await revokeIngress(ctx, groupId, [spec]);
}
