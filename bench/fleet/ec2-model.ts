/**
 * An in-process model of the EC2 security-group API for the fleet simulation, answering the SDK commands the
 * firewall, the revoker and the sweeper send (`send(command)`, like an EC2Client) with EC2's documented
 * semantics in a non-default VPC:
 *   - throttling: one token bucket per action (token-bucket.ts); an empty bucket → RequestLimitExceeded;
 *   - quota: at most `rulesPerGroup` inbound rules per group and IP family → RulesPerSecurityGroupLimitExceeded,
 *     nothing added;
 *   - Authorize: a rule that already exists → InvalidPermission.Duplicate, nothing added; the same permission
 *     twice in one call → InvalidParameterValue;
 *   - Revoke: any rule not there → InvalidPermission.NotFound, nothing revoked;
 *   - UpdateSecurityGroupRuleDescriptionsIngress: a rule not there → InvalidPermission.NotFound.
 * Each call takes `latencyMs` of virtual time (Timers) before it answers; calls are counted per action, with
 * the error codes answered. Not a general EC2: only single-port TCP/UDP rules with IPv4/IPv6 ranges.
 */
import type { Clock, Timers } from '../../functions/core/interfaces.ts';
import { EC2_BUCKETS, TokenBucket } from './token-bucket.ts';

interface Range {
  readonly cidr: string;
  description: string;
}

interface Permission {
  readonly IpProtocol?: string;
  readonly FromPort?: number;
  readonly ToPort?: number;
  readonly IpRanges?: readonly { CidrIp?: string; Description?: string }[];
  readonly Ipv6Ranges?: readonly { CidrIpv6?: string; Description?: string }[];
}

export interface Ec2ModelOptions {
  readonly clock: Clock;
  readonly timers: Timers;
  readonly groupIds: readonly string[];
  /** Inbound rules per group and family. @default 60 */
  readonly rulesPerGroup?: number;
  /** Virtual time per call. @default 100 */
  readonly latencyMs?: number;
}

export interface Ec2CallCount {
  readonly calls: number;
  readonly errors: Readonly<Record<string, number>>;
}

class Ec2Error extends Error {
  readonly Code: string;
  readonly $metadata = { httpStatusCode: 400 };
  constructor(code: string, message: string) {
    super(message);
    this.name = code;
    this.Code = code;
  }
}

/** key = protocol/port/cidr */
type GroupRules = Map<string, { protocol: string; port: number; family: 4 | 6; range: Range }>;

export class Ec2Model {
  readonly #o: Required<Ec2ModelOptions>;
  readonly #groups = new Map<string, GroupRules>();
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #counts = new Map<string, { calls: number; errors: Record<string, number> }>();
  #peakRules = 0;

  constructor(options: Ec2ModelOptions) {
    this.#o = { rulesPerGroup: 60, latencyMs: 100, ...options };
    for (const id of options.groupIds) this.#groups.set(id, new Map());
  }

  /** Calls per action (and the error codes answered). */
  counts(): Readonly<Record<string, Ec2CallCount>> {
    return Object.fromEntries(this.#counts);
  }

  /** Rules in all groups now, and the most there ever were at once. */
  rules(): { now: number; peak: number } {
    return { now: this.#ruleCount(), peak: this.#peakRules };
  }

  /** Every rule's cidr (diagnostics). */
  cidrs(): string[] {
    return [...this.#groups.values()].flatMap((g) => [...g.values()].map((r) => r.range.cidr));
  }

  /** The SDK client surface: `send(command)` with `command.constructor.name` and `command.input`. */
  send(command: { constructor: { name: string }; input: unknown }): Promise<unknown> {
    const action = command.constructor.name.replace(/Command$/, '');
    return new Promise((resolve, reject) => {
      this.#o.timers.setTimeout(() => {
        try {
          resolve(this.#answer(action, command.input as Record<string, unknown>));
        } catch (error) {
          reject(error);
        }
      }, this.#o.latencyMs);
    });
  }

  #answer(action: string, input: Record<string, unknown>): unknown {
    const count = this.#counts.get(action) ?? { calls: 0, errors: {} };
    this.#counts.set(action, count);
    count.calls++;
    try {
      const spec = EC2_BUCKETS[action];
      if (spec === undefined) throw new Ec2Error('InvalidAction', `the model does not implement ${action}`);
      let bucket = this.#buckets.get(action);
      if (bucket === undefined) {
        bucket = new TokenBucket(spec, this.#o.clock);
        this.#buckets.set(action, bucket);
      }
      if (!bucket.take()) throw new Ec2Error('RequestLimitExceeded', 'Request limit exceeded.');
      switch (action) {
        case 'DescribeSecurityGroups':
          return this.#describe(input.GroupIds as string[]);
        case 'AuthorizeSecurityGroupIngress':
          return this.#authorize(this.#group(input.GroupId), input.IpPermissions as Permission[]);
        case 'RevokeSecurityGroupIngress':
          return this.#revoke(this.#group(input.GroupId), input.IpPermissions as Permission[]);
        case 'UpdateSecurityGroupRuleDescriptionsIngress':
          return this.#update(this.#group(input.GroupId), input.IpPermissions as Permission[]);
        default:
          throw new Ec2Error('InvalidAction', `the model does not implement ${action}`);
      }
    } catch (error) {
      const code = error instanceof Ec2Error ? error.Code : 'InternalError';
      count.errors[code] = (count.errors[code] ?? 0) + 1;
      throw error;
    }
  }

  #group(id: unknown): GroupRules {
    const group = typeof id === 'string' ? this.#groups.get(id) : undefined;
    if (group === undefined)
      throw new Ec2Error('InvalidGroup.NotFound', `The security group '${String(id)}' does not exist`);
    return group;
  }

  #ruleCount(): number {
    let n = 0;
    for (const g of this.#groups.values()) n += g.size;
    return n;
  }

  #flatten(permissions: readonly Permission[]) {
    const out: {
      key: string;
      protocol: string;
      port: number;
      family: 4 | 6;
      cidr: string;
      description: string;
    }[] = [];
    for (const p of permissions) {
      const protocol = p.IpProtocol ?? '';
      const port = p.FromPort ?? 0;
      for (const r of p.IpRanges ?? []) {
        const cidr = r.CidrIp ?? '';
        out.push({
          key: `${protocol}/${port}/${cidr}`,
          protocol,
          port,
          family: 4,
          cidr,
          description: r.Description ?? '',
        });
      }
      for (const r of p.Ipv6Ranges ?? []) {
        const cidr = r.CidrIpv6 ?? '';
        out.push({
          key: `${protocol}/${port}/${cidr}`,
          protocol,
          port,
          family: 6,
          cidr,
          description: r.Description ?? '',
        });
      }
    }
    return out;
  }

  #authorize(group: GroupRules, permissions: readonly Permission[]): unknown {
    const rules = this.#flatten(permissions);
    const keys = new Set<string>();
    for (const r of rules) {
      if (keys.has(r.key))
        throw new Ec2Error('InvalidParameterValue', `The same permission must not appear multiple times`);
      keys.add(r.key);
      if (group.has(r.key)) {
        throw new Ec2Error(
          'InvalidPermission.Duplicate',
          `the specified rule "peer: ${r.cidr}, ${r.protocol}, from port: ${r.port}" already exists`,
        );
      }
    }
    for (const family of [4, 6] as const) {
      const used = [...group.values()].filter((r) => r.family === family).length;
      const adding = rules.filter((r) => r.family === family).length;
      if (used + adding > this.#o.rulesPerGroup) {
        throw new Ec2Error(
          'RulesPerSecurityGroupLimitExceeded',
          'The maximum number of rules per security group has been reached.',
        );
      }
    }
    for (const r of rules) {
      group.set(r.key, {
        protocol: r.protocol,
        port: r.port,
        family: r.family,
        range: { cidr: r.cidr, description: r.description },
      });
    }
    this.#peakRules = Math.max(this.#peakRules, this.#ruleCount());
    return { Return: true };
  }

  #revoke(group: GroupRules, permissions: readonly Permission[]): unknown {
    const rules = this.#flatten(permissions);
    for (const r of rules) {
      if (!group.has(r.key)) {
        throw new Ec2Error(
          'InvalidPermission.NotFound',
          `The specified rule does not exist in this security group.`,
        );
      }
    }
    for (const r of rules) group.delete(r.key);
    return { Return: true };
  }

  #update(group: GroupRules, permissions: readonly Permission[]): unknown {
    const rules = this.#flatten(permissions);
    for (const r of rules) {
      if (!group.has(r.key)) {
        throw new Ec2Error(
          'InvalidPermission.NotFound',
          `The specified rule does not exist in this security group.`,
        );
      }
    }
    for (const r of rules) {
      const rule = group.get(r.key);
      if (rule !== undefined) rule.range.description = r.description;
    }
    return { Return: true };
  }

  #describe(groupIds: readonly string[]): unknown {
    return {
      SecurityGroups: groupIds.map((id) => {
        const group = this.#group(id);
        const byPort = new Map<
          string,
          Permission & {
            IpRanges: { CidrIp: string; Description: string }[];
            Ipv6Ranges: { CidrIpv6: string; Description: string }[];
          }
        >();
        for (const r of group.values()) {
          const k = `${r.protocol}/${r.port}`;
          let p = byPort.get(k);
          if (p === undefined) {
            p = { IpProtocol: r.protocol, FromPort: r.port, ToPort: r.port, IpRanges: [], Ipv6Ranges: [] };
            byPort.set(k, p);
          }
          if (r.family === 4) p.IpRanges.push({ CidrIp: r.range.cidr, Description: r.range.description });
          else p.Ipv6Ranges.push({ CidrIpv6: r.range.cidr, Description: r.range.description });
        }
        return { GroupId: id, IpPermissions: [...byPort.values()] };
      }),
    };
  }
}
