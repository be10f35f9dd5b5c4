/**
 * Revokes blackcloud rules whose description says they have expired (shared by the sweeper and the revoker).
 * Per group: one DescribeSecurityGroups, then the due rules revoked in calls of at most EC2_MAX_RANGES_PER_CALL
 * ranges, one after the other (sg-api.ts revokeIngressIdempotent, which also handles rules that vanish
 * meanwhile): a group holding 150 due rules takes two Revoke calls. A rule is due when its description expiry
 * (epoch seconds) is <= `dueAtSeconds`; rules without a `blackcloud:` description are never touched.
 * Idempotent: a second run finds nothing due. A failing group does not stop the others; its error is returned
 * with its result.
 */
import { targetOfCidr } from './address.ts';
import { describeIngress, revokeIngressIdempotent, type SgContext } from './sg-api.ts';
import type { DescribedRule } from './sg-rules.ts';

export interface GroupSweep {
  readonly groupId: string;
  /** Rules revoked by this run (or that vanished while it ran). */
  readonly revoked: readonly DescribedRule[];
  /** Blackcloud rules that matched the filter but are not due yet. */
  readonly live: readonly DescribedRule[];
  readonly error?: unknown;
}

export interface RevokeExpiredOptions {
  readonly ctx: SgContext;
  readonly groupIds: readonly string[];
  readonly dueAtSeconds: number;
  /** Only rules passing this filter are considered (the revoker limits itself to its messages' addresses). */
  readonly filter?: (rule: DescribedRule) => boolean;
}

/** The grant target of a rule: its host address, or `network/length` for a prefix grant (address.ts). */
export const addressOfRule = (rule: Pick<DescribedRule, 'cidr'>): string => targetOfCidr(rule.cidr);

export async function revokeExpiredRules(options: RevokeExpiredOptions): Promise<GroupSweep[]> {
  return Promise.all(
    options.groupIds.map(async (groupId): Promise<GroupSweep> => {
      const revoked: DescribedRule[] = [];
      const live: DescribedRule[] = [];
      try {
        const snapshot = await describeIngress(options.ctx, groupId);
        for (const rule of snapshot.rules) {
          if (rule.blackcloud === undefined || options.filter?.(rule) === false) continue;
          (rule.blackcloud.expiresAtSeconds <= options.dueAtSeconds ? revoked : live).push(rule);
        }
        if (revoked.length > 0) await revokeIngressIdempotent(options.ctx, groupId, revoked);
        return { groupId, revoked, live };
      } catch (error) {
        return { groupId, revoked: [], live, error };
      }
    }),
  );
}
