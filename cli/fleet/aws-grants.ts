/**
 * Open grants of a deployed black cloud, for `blackcloud grants list|revoke --aws` and `devices disable|remove`:
 * the grants table (functions/aws/dynamo-grant-store.ts) and the broker security groups' `blackcloud:`
 * rules (rule-description.ts).
 *
 * Contract:
 * - `listAwsGrants`: the grants whose expiry is after `now`, by address.
 * - `revokeAwsGrants(selector)`: revokes every `blackcloud:` rule of that address (or whose description names
 *   that device) in the broker groups, then deletes the matching grants items (active or expired, so the sweeper
 *   has nothing left); rules without an item (a crashed receiver) are revoked and reported too. Idempotent: what
 *   is already gone is success. A group whose describe or revoke failed rejects (after retries), with nothing
 *   deleted from the table.
 * - A selector address that is not IPv4/IPv6 is a FleetError naming it and the fix.
 */
import type { EC2Client } from '@aws-sdk/client-ec2';
import { hostAddress } from '../../functions/aws/address.ts';
import type { ActiveGrant, GrantStore } from '../../functions/aws/dynamo-grant-store.ts';
import { addressOfRule, revokeExpiredRules } from '../../functions/aws/expired-rules.ts';
import type { RetryPolicy } from '../../functions/aws/retry.ts';
import { formatAccessSpec } from '../../functions/core/access-spec.ts';
import { explainAwsError } from './aws-clients.ts';
import { FleetError, type FleetGrant, type GrantSelector } from './fleet.ts';

export interface AwsGrantDeps {
  readonly store: GrantStore;
  readonly ec2: EC2Client;
  readonly retry: RetryPolicy;
  readonly securityGroupIds: readonly string[];
  /** Epoch ms. */
  readonly now: number;
}

export function fleetGrantOf(grant: ActiveGrant): FleetGrant {
  return Object.freeze({
    deviceId: grant.deviceId,
    address: hostAddress(grant.address).address,
    access: grant.access.map(formatAccessSpec),
    openedAt: grant.openedAt,
    expiresAt: grant.expiresAt,
  });
}

export async function listAwsGrants(deps: AwsGrantDeps): Promise<FleetGrant[]> {
  const active = await deps.store.listActive(deps.now);
  return active.map(fleetGrantOf).sort((a, b) => a.address.localeCompare(b.address));
}

export async function revokeAwsGrants(deps: AwsGrantDeps, selector: GrantSelector): Promise<FleetGrant[]> {
  let address: string | undefined;
  if ('address' in selector) {
    try {
      address = hostAddress(selector.address).address;
    } catch (error) {
      throw new FleetError(
        `${JSON.stringify(selector.address)} is not an IPv4 or IPv6 address; fix: pass the address shown by ` +
          '"blackcloud grants list", or a device id',
        { cause: error },
      );
    }
  }
  const deviceId = 'deviceId' in selector ? selector.deviceId : undefined;
  // Items still stored (active, or expired and not swept yet) say where the rules are.
  const stored = [
    ...(await deps.store.listActive(deps.now)),
    ...(await deps.store.listExpired(deps.now)),
  ].filter((grant) =>
    address !== undefined ? hostAddress(grant.address).address === address : grant.deviceId === deviceId,
  );
  const sweeps = await revokeExpiredRules({
    ctx: { ec2: deps.ec2, retry: deps.retry },
    groupIds: deps.securityGroupIds,
    dueAtSeconds: Number.MAX_SAFE_INTEGER,
    filter: (rule) =>
      address !== undefined ? addressOfRule(rule) === address : rule.blackcloud?.deviceId === deviceId,
  });
  const failed = sweeps.find((sweep) => sweep.error !== undefined);
  if (failed !== undefined) throw explainAwsError(failed.error);
  for (const grant of stored) await deps.store.delete(hostAddress(grant.address).address);
  const revoked = new Map<string, FleetGrant>();
  for (const grant of stored) revoked.set(hostAddress(grant.address).address, fleetGrantOf(grant));
  // Rules without a grants item (a crashed receiver): reported from their descriptions.
  for (const rule of sweeps.flatMap((sweep) => sweep.revoked)) {
    const ruleAddress = addressOfRule(rule);
    const known = revoked.get(ruleAddress);
    const entry = `${rule.protocol}/${rule.port}`;
    if (known === undefined) {
      revoked.set(ruleAddress, {
        deviceId: rule.blackcloud?.deviceId ?? '?',
        address: ruleAddress,
        access: [entry],
        openedAt: 0,
        expiresAt: (rule.blackcloud?.expiresAtSeconds ?? 0) * 1000,
      });
    } else if (!known.access.includes(entry) && known.openedAt === 0) {
      revoked.set(ruleAddress, { ...known, access: [...known.access, entry] });
    }
  }
  return [...revoked.values()];
}
