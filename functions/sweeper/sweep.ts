/**
 * The sweeper's logic (every minute): the backstop that makes a crashed receiver or a lost message leave
 * nothing open for long.
 *   1. In every broker security group, revoke each blackcloud rule whose description expiry
 *      (`blackcloud:<deviceId>:exp=<epochSeconds>`) is at or before now, unless the grants table (the single
 *      record of what is open) says the address's grant runs past now: with several receivers, two extensions
 *      racing can leave the shorter expiry in the description while the table keeps the later one. Other rules
 *      are never touched. If the table cannot be read, the descriptions alone decide (closing is the safe side).
 *   2. Delete the grants-table items of revoked addresses and every item already expired, each only if it has
 *      not been extended meanwhile (conditional delete). Items naming a group whose sweep failed are kept.
 * Idempotent: a second run at the same instant revokes and deletes nothing. A failing group does not stop the
 * others; its error is in the report (the handler then fails the invocation so it is alarmed on).
 */
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { GrantStore } from '../aws/dynamo-grant-store.ts';
import { describeError } from '../aws/errors.ts';
import { addressOfRule, revokeExpiredRules } from '../aws/expired-rules.ts';
import type { RetryPolicy } from '../aws/retry.ts';
import { grantTarget } from '../core/grant-prefix.ts';
import type { Clock } from '../core/interfaces.ts';

export interface SweeperDeps {
  readonly ec2: EC2Client;
  readonly grants: GrantStore;
  readonly securityGroupIds: readonly string[];
  readonly clock: Clock;
  readonly retry: RetryPolicy;
}

export interface SweptRule {
  readonly groupId: string;
  readonly address: string;
  readonly protocol: string;
  readonly port: number;
  readonly deviceId: string;
  readonly expiresAtSeconds: number;
}

export interface SweepReport {
  readonly now: number;
  readonly revoked: readonly SweptRule[];
  /** Grants-table items this run deleted. */
  readonly deletedGrants: readonly string[];
  /** Items kept: extended meanwhile, or in a group whose sweep failed. */
  readonly keptGrants: readonly string[];
  readonly failures: readonly { readonly where: string; readonly error: string }[];
}

export async function sweepExpiredGrants(deps: SweeperDeps): Promise<SweepReport> {
  const now = deps.clock.now();
  const failures: { where: string; error: string }[] = [];
  const extended = new Set<string>();
  try {
    for (const grant of await deps.grants.listActive(now)) extended.add(grantTarget(grant));
  } catch (error) {
    failures.push({ where: 'grants table scan (active)', error: describeError(error) });
  }
  const sweeps = await revokeExpiredRules({
    ctx: { ec2: deps.ec2, retry: deps.retry },
    groupIds: deps.securityGroupIds,
    dueAtSeconds: Math.floor(now / 1000),
    filter: (rule) => !extended.has(addressOfRule(rule)),
  });
  const failedGroups = new Set<string>();
  for (const s of sweeps) {
    if (s.error !== undefined) {
      failedGroups.add(s.groupId);
      failures.push({ where: s.groupId, error: describeError(s.error) });
    }
  }
  const revoked: SweptRule[] = sweeps.flatMap((s) =>
    s.revoked.map((r) => ({
      groupId: s.groupId,
      address: addressOfRule(r),
      protocol: r.protocol,
      port: r.port,
      deviceId: r.blackcloud?.deviceId ?? '',
      expiresAtSeconds: r.blackcloud?.expiresAtSeconds ?? 0,
    })),
  );

  // address → the groups its grants item depends on
  const candidates = new Map<string, Set<string>>();
  const note = (address: string, groups: readonly string[]) =>
    candidates.set(address, new Set([...(candidates.get(address) ?? []), ...groups]));
  for (const r of revoked) note(r.address, [r.groupId]);
  try {
    for (const item of await deps.grants.listExpired(now)) {
      note(
        grantTarget(item),
        item.securityGroupIds.length > 0 ? item.securityGroupIds : deps.securityGroupIds,
      );
    }
  } catch (error) {
    failures.push({ where: 'grants table scan', error: describeError(error) });
  }

  const deletedGrants: string[] = [];
  const keptGrants: string[] = [];
  await Promise.all(
    [...candidates].map(async ([address, groups]) => {
      if ([...groups].some((g) => failedGroups.has(g))) {
        keptGrants.push(address);
        return;
      }
      try {
        const result = await deps.grants.delete(address, { ifExpiredBy: now });
        if (result === 'deleted') deletedGrants.push(address);
        else if (result === 'kept') keptGrants.push(address);
      } catch (error) {
        failures.push({ where: `grants table item ${address}`, error: describeError(error) });
      }
    }),
  );
  deletedGrants.sort();
  keptGrants.sort();
  return { now, revoked, deletedGrants, keptGrants, failures };
}
