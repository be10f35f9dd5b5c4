/**
 * The one model of the EC2 security-group API, for conditions moto cannot produce at scale: EC2's request token
 * buckets and the per-group, per-family inbound-rule quota, behind a real `EC2Client` whose `send` is answered by
 * the model (aws-sdk-client-mock). Used by every bench (grant-coalescing, grant-storm, fleet-sim), the hostile
 * suite and test/bench/fleet-sim-model.test.ts. Not a general EC2: single-port TCP/UDP rules with IPv4/IPv6
 * ranges, in a non-default VPC.
 *
 * Model (docs/operations-aws.md; AWS "Request throttling for the Amazon EC2 API"):
 * - Throttling: one token bucket per action (`EC2_BUCKETS`: Authorize and Revoke 50 tokens refilled 5/s each,
 *   Update descriptions 200 and 5/s, Describe 100 and 20/s), each the receiver's own token bucket
 *   (functions/receiver/rate-limiter.ts). A call with an empty bucket fails with `RequestLimitExceeded` (HTTP 503)
 *   and changes nothing.
 * - Per call: an Authorize or Revoke carrying more than EC2_MAX_RANGES_PER_CALL (100, functions/aws/sg-api.ts;
 *   docs/scaling.md) IP ranges, IPv4 and IPv6 together over all its permissions, is `InvalidParameterValue` and
 *   changes nothing. The code is an assumption: no public source we could find names EC2's answer to an
 *   over-long call (`RulesPerSecurityGroupLimitExceeded` is the per-group quota, below, not this), so the model
 *   answers the code EC2 gives other malformed parameters.
 * - Authorize: a permission already present is `InvalidPermission.Duplicate`; the same permission twice in one
 *   call is `InvalidParameterValue`; exceeding `rulesPerGroup` for a family is
 *   `RulesPerSecurityGroupLimitExceeded`. Each adds nothing.
 * - Revoke of any rule that is not there is `InvalidPermission.NotFound` (nothing revoked); so is Update of a
 *   missing rule. An unknown group is `InvalidGroup.NotFound`.
 * - Time comes from the injected clock; each call answers `latencyMs` (default 0: at once) later on the injected
 *   timers, so a bench models EC2's round trip in real time and the fleet simulation in virtual time.
 * It counts every call and error code per action, the largest number of ranges in one call, the rules added and
 * removed by successful calls, and the most rules open at once; `callLog()` lists every call with its group,
 * ranges, and when (on the injected clock) it was sent and answered, for tests of call ordering.
 */
import {
  AuthorizeSecurityGroupIngressCommand,
  DescribeSecurityGroupsCommand,
  EC2Client,
  EC2ServiceException,
  type IpPermission,
  RevokeSecurityGroupIngressCommand,
  UpdateSecurityGroupRuleDescriptionsIngressCommand,
} from '@aws-sdk/client-ec2';
import { mockClient } from 'aws-sdk-client-mock';
import { EC2_MAX_RANGES_PER_CALL } from '../../functions/aws/sg-api.ts';
import type { Clock, Timers } from '../../functions/core/interfaces.ts';
import { TokenBucketRateLimiter } from '../../functions/receiver/rate-limiter.ts';
import { answerAfter, modelTimers } from './modelled-latency.ts';
import { forgetStubHistory } from './stub-history.ts';

/** The description of the rules `fill` adds (another writer's, e.g. an operator's). */
const OUT_OF_BAND = 'operator';

export interface BucketSpec {
  /** Bucket size. */
  readonly burst: number;
  /** Tokens added per second. */
  readonly ratePerSecond: number;
}

export type Ec2Action =
  | 'AuthorizeSecurityGroupIngress'
  | 'RevokeSecurityGroupIngress'
  | 'UpdateSecurityGroupRuleDescriptionsIngress'
  | 'DescribeSecurityGroups';

/** The documented buckets of the actions blackcloud calls. */
export const EC2_BUCKETS: Readonly<Record<Ec2Action, BucketSpec>> = Object.freeze({
  // "Resource-intensive" actions: 50 burst, 5/s refill, each its own bucket.
  AuthorizeSecurityGroupIngress: { burst: 50, ratePerSecond: 5 },
  RevokeSecurityGroupIngress: { burst: 50, ratePerSecond: 5 },
  // Other mutating actions.
  UpdateSecurityGroupRuleDescriptionsIngress: { burst: 200, ratePerSecond: 5 },
  // Non-mutating (filtered by group id).
  DescribeSecurityGroups: { burst: 100, ratePerSecond: 20 },
});

export interface ModelledEc2Options {
  readonly groupIds: readonly string[];
  /** Inbound rules per group and family. @default 60 (EC2's default quota) */
  readonly rulesPerGroup?: number;
  readonly clock: Clock;
  /** Where the latency passes. @default Node's timers */
  readonly timers?: Timers;
  /** Delay before each answer, ms. @default 0 */
  readonly latencyMs?: number;
  /** Other buckets than EC2_BUCKETS' for some actions (e.g. a tiny Authorize bucket in a test). */
  readonly buckets?: Partial<Record<Ec2Action, BucketSpec>>;
}

export interface Ec2CallCount {
  readonly calls: number;
  /** Error answers per code. */
  readonly errors: Readonly<Record<string, number>>;
}

/** One call as the model saw it (times on the injected clock, ms). */
export interface Ec2CallRecord {
  readonly action: Ec2Action;
  readonly groupId: string | undefined;
  /** IP ranges in the call (0 for Describe). */
  readonly ranges: number;
  readonly sentAt: number;
  /** When it was answered; undefined while in flight. */
  answeredAt: number | undefined;
  /** 'ok' or the error code answered. */
  outcome: string | undefined;
}

function ec2Error(code: string, message: string, status = 400): EC2ServiceException {
  return new EC2ServiceException({
    name: code,
    $fault: status >= 500 ? 'server' : 'client',
    $metadata: { httpStatusCode: status },
    message,
  });
}

interface Rule {
  readonly key: string;
  readonly protocol: string;
  readonly port: number;
  readonly family: 4 | 6;
  readonly cidr: string;
  description: string | undefined;
}

/** key = protocol/port/cidr */
type GroupRules = Map<string, Rule>;

function rulesOf(permissions: readonly IpPermission[] | undefined): Rule[] {
  const out: Rule[] = [];
  const rule = (protocol: string, port: number, family: 4 | 6, cidr: string, description?: string): Rule => ({
    key: `${protocol}/${port}/${cidr}`,
    protocol,
    port,
    family,
    cidr,
    description,
  });
  for (const p of permissions ?? []) {
    const protocol = p.IpProtocol ?? '';
    const port = p.FromPort ?? 0;
    for (const r of p.IpRanges ?? []) out.push(rule(protocol, port, 4, r.CidrIp ?? '', r.Description));
    for (const r of p.Ipv6Ranges ?? []) out.push(rule(protocol, port, 6, r.CidrIpv6 ?? '', r.Description));
  }
  return out;
}

export class ModelledEc2 {
  readonly client: EC2Client;
  readonly #groups = new Map<string, GroupRules>();
  readonly #buckets = new Map<Ec2Action, TokenBucketRateLimiter>();
  readonly #counts = new Map<string, { calls: number; errors: Record<string, number> }>();
  readonly #mock: ReturnType<typeof mockClient>;
  readonly #rulesPerGroup: number;
  readonly #latencyMs: number;
  readonly #timers: Timers;
  readonly #clock: Clock;
  readonly #log: Ec2CallRecord[] = [];
  #largestCall = 0;
  #peakRules = 0;
  readonly #applied = { authorized: 0, revoked: 0 };

  constructor(options: ModelledEc2Options) {
    this.#rulesPerGroup = options.rulesPerGroup ?? 60;
    this.#latencyMs = options.latencyMs ?? 0;
    this.#timers = options.timers ?? modelTimers;
    this.#clock = options.clock;
    for (const id of options.groupIds) this.#groups.set(id, new Map());
    for (const [action, spec] of Object.entries(EC2_BUCKETS) as [Ec2Action, BucketSpec][]) {
      const { burst, ratePerSecond } = options.buckets?.[action] ?? spec;
      this.#buckets.set(
        action,
        new TokenBucketRateLimiter({ clock: options.clock, burst, ratePerSecond, maxSources: 1 }),
      );
    }
    this.client = new EC2Client({
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    });
    this.#mock = mockClient(this.client);
    this.#mock
      .on(DescribeSecurityGroupsCommand)
      .callsFake((input) =>
        this.#answer('DescribeSecurityGroups', input.GroupIds?.join(','), undefined, () =>
          this.#describe(input.GroupIds ?? []),
        ),
      );
    this.#mock
      .on(AuthorizeSecurityGroupIngressCommand)
      .callsFake((input) =>
        this.#answer('AuthorizeSecurityGroupIngress', input.GroupId, input.IpPermissions, () =>
          this.#authorize(this.#group(input.GroupId), input.IpPermissions),
        ),
      );
    this.#mock
      .on(RevokeSecurityGroupIngressCommand)
      .callsFake((input) =>
        this.#answer('RevokeSecurityGroupIngress', input.GroupId, input.IpPermissions, () =>
          this.#revoke(this.#group(input.GroupId), input.IpPermissions),
        ),
      );
    this.#mock
      .on(UpdateSecurityGroupRuleDescriptionsIngressCommand)
      .callsFake((input) =>
        this.#answer('UpdateSecurityGroupRuleDescriptionsIngress', input.GroupId, input.IpPermissions, () =>
          this.#update(this.#group(input.GroupId), input.IpPermissions),
        ),
      );
  }

  /** Every call so far, in the order sent (throttled ones included). */
  callLog(): readonly Readonly<Ec2CallRecord>[] {
    return this.#log;
  }

  /** Calls per action (throttled ones included) and the error codes answered. */
  counts(): Readonly<Record<string, Ec2CallCount>> {
    return Object.fromEntries(this.#counts);
  }

  /** Calls, and error answers per code, over every action; the most IP ranges one Authorize / Revoke carried. */
  get stats(): { calls: Record<string, number>; errors: Record<string, number>; largestCall: number } {
    const calls: Record<string, number> = {};
    const errors: Record<string, number> = {};
    for (const [action, count] of this.#counts) {
      calls[action] = count.calls;
      for (const [code, n] of Object.entries(count.errors)) errors[code] = (errors[code] ?? 0) + n;
    }
    return { calls, errors, largestCall: this.#largestCall };
  }

  /** Rules added by successful Authorize calls and removed by successful Revoke calls, in total. */
  get applied(): { readonly authorized: number; readonly revoked: number } {
    return { ...this.#applied };
  }

  /** Total calls made (every action). */
  get totalCalls(): number {
    let n = 0;
    for (const count of this.#counts.values()) n += count.calls;
    return n;
  }

  /** Rules in all groups now, and the most there ever were at once. */
  rules(): { now: number; peak: number } {
    return { now: this.#ruleCount(), peak: this.#peakRules };
  }

  /** Whether some group holds a rule for `cidr` on `protocol`/`port` (a device about to connect). */
  hasRule(cidr: string, port = 8883, protocol = 'tcp'): boolean {
    const key = `${protocol}/${port}/${cidr}`;
    for (const group of this.#groups.values()) if (group.has(key)) return true;
    return false;
  }

  /** Every rule's cidr (diagnostics). */
  cidrs(): string[] {
    return [...this.#groups.values()].flatMap((g) => [...g.values()].map((r) => r.cidr));
  }

  /** Adds `count` rules out of band (another writer, e.g. an operator), without a call or a token. */
  fill(groupId: string, count: number, port = 8883): void {
    const group = this.#group(groupId);
    for (let i = 0; i < count; i++) {
      const cidr = `172.16.${i >> 8}.${i & 0xff}/32`;
      const key = `tcp/${port}/${cidr}`;
      group.set(key, { key, protocol: 'tcp', port, family: 4, cidr, description: OUT_OF_BAND });
    }
    this.#peakRules = Math.max(this.#peakRules, this.#ruleCount());
  }

  /** Removes the rules `fill` added to the group (the other writer revokes them), without a call or a token. */
  unfill(groupId: string): void {
    const group = this.#group(groupId);
    for (const [key, rule] of group) if (rule.description === OUT_OF_BAND) group.delete(key);
  }

  restore(): void {
    this.#mock.restore();
  }

  #answer<T>(
    action: Ec2Action,
    groupId: string | undefined,
    permissions: readonly IpPermission[] | undefined,
    run: () => T,
  ): Promise<T> {
    const count = this.#counts.get(action) ?? { calls: 0, errors: {} };
    this.#counts.set(action, count);
    count.calls++;
    forgetStubHistory(this.#mock, count.calls);
    const record: Ec2CallRecord = {
      action,
      groupId,
      ranges: rulesOf(permissions).length,
      sentAt: this.#clock.now(),
      answeredAt: undefined,
      outcome: undefined,
    };
    this.#log.push(record);
    const respond = (): T => {
      record.answeredAt = this.#clock.now();
      try {
        if (this.#buckets.get(action)?.take(action) !== true)
          throw ec2Error('RequestLimitExceeded', 'Request limit exceeded.', 503);
        const result = run();
        record.outcome = 'ok';
        return result;
      } catch (error) {
        const code = (error as Error).name;
        count.errors[code] = (count.errors[code] ?? 0) + 1;
        record.outcome = code;
        throw error;
      }
    };
    return answerAfter(this.#timers, this.#latencyMs, respond);
  }

  #group(id: string | undefined): GroupRules {
    const group = id === undefined ? undefined : this.#groups.get(id);
    if (group === undefined)
      throw ec2Error('InvalidGroup.NotFound', `The security group '${String(id)}' does not exist`);
    return group;
  }

  #ruleCount(): number {
    let n = 0;
    for (const g of this.#groups.values()) n += g.size;
    return n;
  }

  /** The ranges of one Authorize / Revoke call, refused (InvalidParameterValue) past EC2's per-call limit. */
  #callRules(permissions: readonly IpPermission[] | undefined): Rule[] {
    const rules = rulesOf(permissions);
    this.#largestCall = Math.max(this.#largestCall, rules.length);
    if (rules.length > EC2_MAX_RANGES_PER_CALL)
      throw ec2Error(
        'InvalidParameterValue',
        `The request carries ${rules.length} IP ranges; at most ${EC2_MAX_RANGES_PER_CALL} are allowed in one call`,
      );
    return rules;
  }

  #authorize(group: GroupRules, permissions: readonly IpPermission[] | undefined) {
    const rules = this.#callRules(permissions);
    const keys = new Set<string>();
    for (const r of rules) {
      if (keys.has(r.key))
        throw ec2Error('InvalidParameterValue', 'The same permission must not appear multiple times');
      keys.add(r.key);
      if (group.has(r.key)) {
        throw ec2Error(
          'InvalidPermission.Duplicate',
          `the specified rule "peer: ${r.cidr}, ${r.protocol}, from port: ${r.port}" already exists`,
        );
      }
    }
    for (const family of [4, 6] as const) {
      let used = 0;
      for (const r of group.values()) if (r.family === family) used++;
      if (used + rules.filter((r) => r.family === family).length > this.#rulesPerGroup) {
        throw ec2Error(
          'RulesPerSecurityGroupLimitExceeded',
          'The maximum number of rules per security group has been reached.',
        );
      }
    }
    for (const r of rules) group.set(r.key, r);
    this.#applied.authorized += rules.length;
    this.#peakRules = Math.max(this.#peakRules, this.#ruleCount());
    return { Return: true };
  }

  #revoke(group: GroupRules, permissions: readonly IpPermission[] | undefined) {
    const rules = this.#callRules(permissions);
    this.#mustExist(group, rules);
    for (const r of rules) group.delete(r.key);
    this.#applied.revoked += rules.length;
    return { Return: true };
  }

  #update(group: GroupRules, permissions: readonly IpPermission[] | undefined) {
    const rules = rulesOf(permissions);
    this.#mustExist(group, rules);
    for (const r of rules) {
      const rule = group.get(r.key);
      if (rule !== undefined) rule.description = r.description;
    }
    return { Return: true };
  }

  #mustExist(group: GroupRules, rules: readonly Rule[]): void {
    if (rules.some((r) => !group.has(r.key)))
      throw ec2Error(
        'InvalidPermission.NotFound',
        'The specified rule does not exist in this security group.',
      );
  }

  #describe(groupIds: readonly string[]) {
    return {
      SecurityGroups: groupIds.map((id) => {
        const byPort = new Map<
          string,
          IpPermission & {
            IpRanges: { CidrIp: string; Description?: string }[];
            Ipv6Ranges: { CidrIpv6: string; Description?: string }[];
          }
        >();
        for (const r of this.#group(id).values()) {
          const k = `${r.protocol}/${r.port}`;
          let p = byPort.get(k);
          if (p === undefined) {
            p = { IpProtocol: r.protocol, FromPort: r.port, ToPort: r.port, IpRanges: [], Ipv6Ranges: [] };
            byPort.set(k, p);
          }
          const description = r.description === undefined ? {} : { Description: r.description };
          if (r.family === 4) p.IpRanges.push({ CidrIp: r.cidr, ...description });
          else p.Ipv6Ranges.push({ CidrIpv6: r.cidr, ...description });
        }
        return { GroupId: id, IpPermissions: [...byPort.values()] };
      }),
    };
  }
}
