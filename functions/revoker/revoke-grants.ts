/**
 * The revoker's logic: close the grants carried by delayed SQS messages (sqs-expiry-scheduler.ts).
 *
 * For each message (a batch is handled together: one describe and at most one revoke call per group):
 *   1. decode the grant; a malformed body is a batch item failure (it ends in the DLQ for inspection);
 *   2. read the grants table: if the stored grant (or the message's own) ends after now, it was extended (or the
 *      message came early because grants > 900 s are capped): do nothing — that grant's own message, the
 *      receiver's timer or the sweeper closes it later;
 *   3. otherwise revoke the address's blackcloud rules whose description expiry has passed (rules whose
 *      description was moved forward by an extension are kept), in the groups the grants table names (all
 *      broker groups when it names none), then delete the grants item if it has not been extended meanwhile.
 * Idempotent: the same message twice (SQS is at-least-once) revokes nothing the second time and succeeds.
 * A message fails (batchItemFailures → SQS redelivers it) only when AWS calls for its grant failed.
 */
import type { EC2Client } from '@aws-sdk/client-ec2';
import { grantRange } from '../aws/address.ts';
import type { ActiveGrant, GrantStore } from '../aws/dynamo-grant-store.ts';
import { describeError } from '../aws/errors.ts';
import { addressOfRule, revokeExpiredRules } from '../aws/expired-rules.ts';
import { decodeGrantMessage } from '../aws/grant-message.ts';
import type { RetryPolicy } from '../aws/retry.ts';
import type { Clock, Grant } from '../core/interfaces.ts';

export interface RevokerDeps {
  readonly ec2: EC2Client;
  readonly grants: GrantStore;
  readonly securityGroupIds: readonly string[];
  readonly clock: Clock;
  readonly retry: RetryPolicy;
}

export interface RevokeMessage {
  readonly messageId: string;
  readonly body: string;
}

export type RevokeResult = 'revoked' | 'already-gone' | 'extended' | 'not-due' | 'invalid' | 'failed';

export interface MessageOutcome {
  readonly messageId: string;
  readonly result: RevokeResult;
  readonly deviceId?: string;
  readonly address?: string;
  readonly revokedRules: number;
  readonly error?: string;
}

export interface RevokeBatchResult {
  readonly outcomes: readonly MessageOutcome[];
  readonly batchItemFailures: readonly { readonly itemIdentifier: string }[];
}

interface Due {
  readonly messageId: string;
  readonly grant: Grant;
  readonly address: string;
  readonly groups: readonly string[];
}

export async function revokeGrantMessages(
  messages: readonly RevokeMessage[],
  deps: RevokerDeps,
): Promise<RevokeBatchResult> {
  const now = deps.clock.now();
  const outcomes: MessageOutcome[] = [];
  const due: Due[] = [];

  await Promise.all(
    messages.map(async ({ messageId, body }) => {
      let grant: Grant;
      let address: string;
      try {
        grant = decodeGrantMessage(body);
        address = grantRange(grant.address, grant.prefixLength).target; // a prefix grant: network/length
      } catch (error) {
        outcomes.push({ messageId, result: 'invalid', revokedRules: 0, error: describeError(error) });
        return;
      }
      const base = { messageId, deviceId: grant.deviceId, address };
      let stored: ActiveGrant | undefined;
      try {
        stored = await deps.grants.get(address);
      } catch (error) {
        outcomes.push({ ...base, result: 'failed', revokedRules: 0, error: describeError(error) });
        return;
      }
      if (stored !== undefined && stored.expiresAt > now) {
        outcomes.push({ ...base, result: 'extended', revokedRules: 0 });
        return;
      }
      if (grant.expiresAt > now) {
        outcomes.push({ ...base, result: 'not-due', revokedRules: 0 });
        return;
      }
      const named = (stored?.securityGroupIds ?? []).filter((g) => deps.securityGroupIds.includes(g));
      due.push({ messageId, grant, address, groups: named.length > 0 ? named : deps.securityGroupIds });
    }),
  );

  if (due.length > 0) {
    const wanted = new Map<string, Set<string>>();
    for (const d of due) {
      for (const g of d.groups) {
        const set = wanted.get(g) ?? new Set<string>();
        set.add(d.address);
        wanted.set(g, set);
      }
    }
    const sweeps = await revokeExpiredRules({
      ctx: { ec2: deps.ec2, retry: deps.retry },
      groupIds: [...wanted.keys()],
      // The description rounds the expiry up to the second; the grant itself has ended (checked above).
      dueAtSeconds: Math.ceil(now / 1000),
      filter: (rule) => wanted.get(rule.groupId)?.has(addressOfRule(rule)) === true,
    });

    await Promise.all(
      due.map(async (d) => {
        const base = { messageId: d.messageId, deviceId: d.grant.deviceId, address: d.address };
        const mine = sweeps.filter((s) => d.groups.includes(s.groupId));
        const failed = mine.find((s) => s.error !== undefined);
        if (failed !== undefined) {
          outcomes.push({ ...base, result: 'failed', revokedRules: 0, error: describeError(failed.error) });
          return;
        }
        const revokedRules = mine
          .flatMap((s) => s.revoked)
          .filter((r) => addressOfRule(r) === d.address).length;
        const live = mine.flatMap((s) => s.live).some((r) => addressOfRule(r) === d.address);
        if (live) {
          outcomes.push({ ...base, result: 'extended', revokedRules });
          return;
        }
        try {
          await deps.grants.delete(d.address, { ifExpiredBy: now });
        } catch (error) {
          outcomes.push({ ...base, result: 'failed', revokedRules, error: describeError(error) });
          return;
        }
        outcomes.push({ ...base, result: revokedRules > 0 ? 'revoked' : 'already-gone', revokedRules });
      }),
    );
  }

  const order = new Map(messages.map((m, i) => [m.messageId, i]));
  outcomes.sort((a, b) => (order.get(a.messageId) ?? 0) - (order.get(b.messageId) ?? 0));
  return {
    outcomes,
    batchItemFailures: outcomes
      .filter((o) => o.result === 'failed' || o.result === 'invalid')
      .map((o) => ({ itemIdentifier: o.messageId })),
  };
}
