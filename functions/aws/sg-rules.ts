/**
 * Security-group rules as blackcloud sees them (pure). One rule = one protocol, one port, one host CIDR
 * (IPv4 /32 or IPv6 /128). Converts grants to rules (only the configured broker ports are ever opened), rules to
 * the EC2 `IpPermissions` shape (grouped per protocol/port, deduplicated per CIDR: the same permission twice in
 * one call is `InvalidParameterValue` on EC2), and described security groups back to rules.
 */
import type { IpPermission } from '@aws-sdk/client-ec2';
import type { AccessEntry, AddressFamily, Protocol } from '../../spa/types.ts';
import type { Grant } from '../core/interfaces.ts';
import { type GrantRange, grantRange, hostOfCidr, rangeOfCidr } from './address.ts';
import { parseRuleDescription, type RuleDescription } from './rule-description.ts';

export interface RuleSpec {
  readonly protocol: Protocol;
  readonly port: number;
  readonly family: AddressFamily;
  readonly cidr: string;
}

export interface RuleWithDescription {
  readonly spec: RuleSpec;
  readonly description?: string | undefined;
}

/** A rule found in a security group. `blackcloud` is undefined for rules blackcloud did not write. */
export interface DescribedRule extends RuleSpec {
  readonly groupId: string;
  readonly description?: string | undefined;
  readonly blackcloud?: RuleDescription | undefined;
}

export const ruleKey = (r: RuleSpec): string => `${r.protocol}/${r.port}/${r.cidr}`;

const accessKey = (a: AccessEntry): string => `${a.protocol}/${a.port}`;

/**
 * The rules a grant opens: its access entries that are broker entries, deduplicated, for its host address (or its
 * prefix, for a prefix grant: functions/core/grant-prefix.ts).
 * `dropped` lists requested entries that are not broker entries (never opened on the broker's groups).
 */
export function rulesForGrant(
  grant: Pick<Grant, 'address' | 'access' | 'prefixLength'>,
  brokerAccess: readonly AccessEntry[],
): { host: GrantRange; rules: RuleSpec[]; dropped: AccessEntry[] } {
  const host = grantRange(grant.address, grant.prefixLength);
  const allowed = new Set(brokerAccess.map(accessKey));
  const seen = new Set<string>();
  const rules: RuleSpec[] = [];
  const dropped: AccessEntry[] = [];
  for (const entry of grant.access) {
    const key = accessKey(entry);
    if (!allowed.has(key)) {
      dropped.push(entry);
      continue;
    }
    if (seen.has(key)) continue;
    seen.add(key);
    rules.push({ protocol: entry.protocol, port: entry.port, family: host.family, cidr: host.cidr });
  }
  return { host, rules, dropped };
}

/** EC2 IpPermissions for rules: one permission per protocol/port, one range per CIDR (the last description wins). */
export function toIpPermissions(rules: readonly RuleWithDescription[]): IpPermission[] {
  const byPort = new Map<
    string,
    {
      protocol: Protocol;
      port: number;
      v4: Map<string, string | undefined>;
      v6: Map<string, string | undefined>;
    }
  >();
  for (const { spec, description } of rules) {
    const key = `${spec.protocol}/${spec.port}`;
    let entry = byPort.get(key);
    if (entry === undefined) {
      entry = { protocol: spec.protocol, port: spec.port, v4: new Map(), v6: new Map() };
      byPort.set(key, entry);
    }
    (spec.family === 4 ? entry.v4 : entry.v6).set(spec.cidr, description);
  }
  return [...byPort.values()].map((p) => ({
    IpProtocol: p.protocol,
    FromPort: p.port,
    ToPort: p.port,
    ...(p.v4.size === 0
      ? {}
      : {
          IpRanges: [...p.v4].map(([CidrIp, Description]) =>
            Description === undefined ? { CidrIp } : { CidrIp, Description },
          ),
        }),
    ...(p.v6.size === 0
      ? {}
      : {
          Ipv6Ranges: [...p.v6].map(([CidrIpv6, Description]) =>
            Description === undefined ? { CidrIpv6 } : { CidrIpv6, Description },
          ),
        }),
  }));
}

/**
 * The single-port host rules (tcp/udp, one port, /32 or /128) of a group's ingress permissions, as returned by
 * DescribeSecurityGroups, plus blackcloud's prefix rules (prefix grants); blackcloud's are marked with their parsed
 * description. Other rules are left out.
 */
export function hostRulesOf(groupId: string, permissions: readonly IpPermission[]): DescribedRule[] {
  const rules: DescribedRule[] = [];
  for (const p of permissions) {
    const protocol = p.IpProtocol;
    if ((protocol !== 'tcp' && protocol !== 'udp') || p.FromPort === undefined || p.FromPort !== p.ToPort)
      continue;
    const ranges = [
      ...(p.IpRanges ?? []).map((r) => ({ cidr: r.CidrIp, description: r.Description })),
      ...(p.Ipv6Ranges ?? []).map((r) => ({ cidr: r.CidrIpv6, description: r.Description })),
    ];
    for (const range of ranges) {
      const blackcloud = parseRuleDescription(range.description);
      // A prefix rule counts only when blackcloud wrote it (a prefix grant); anyone else's wide rule is left out.
      const host =
        hostOfCidr(range.cidr ?? '') ??
        (blackcloud === undefined ? undefined : rangeOfCidr(range.cidr ?? ''));
      if (host === undefined) continue;
      rules.push({
        protocol,
        port: p.FromPort,
        family: host.family,
        cidr: host.cidr,
        groupId,
        description: range.description,
        blackcloud,
      });
    }
  }
  return rules;
}

/**
 * Ingress rules per quota family. EC2 counts IPv4 and IPv6 CIDR rules separately; rules referencing a security
 * group or prefix list are counted as IPv4 here (conservative: they can only make a group look fuller).
 */
export function ruleCounts(permissions: readonly IpPermission[]): Record<AddressFamily, number> {
  const used: Record<AddressFamily, number> = { 4: 0, 6: 0 };
  for (const p of permissions) {
    used[4] += (p.IpRanges?.length ?? 0) + (p.UserIdGroupPairs?.length ?? 0) + (p.PrefixListIds?.length ?? 0);
    used[6] += p.Ipv6Ranges?.length ?? 0;
  }
  return used;
}
