/**
 * A modelled EC2 security-group API for conditions moto cannot produce at scale: EC2's request token buckets
 * (`RequestLimitExceeded` when empty) and the per-group, per-family inbound-rule quota
 * (`RulesPerSecurityGroupLimitExceeded`), behind a real `EC2Client` intercepted with aws-sdk-client-mock.
 * Shared by bench/grant-coalescing.ts, bench/grant-storm.ts and test/hostile/ec2-faults.test.ts.
 *
 * Model (docs/operations-aws.md; AWS "Request throttling for the Amazon EC2 API"):
 * - Authorize and Revoke each own a bucket (default 50 tokens, refilled 5/s); Update descriptions shares a
 *   "mutating" bucket (default 200, 5/s); Describe a "non-mutating" one (default 100, 20/s). A call with an empty
 *   bucket fails with `RequestLimitExceeded` (HTTP 503) and changes nothing.
 * - Authorize: a permission already present is `InvalidPermission.Duplicate` (nothing added); exceeding
 *   `rulesPerGroup` for the family is `RulesPerSecurityGroupLimitExceeded` (nothing added). Revoke of a rule that
 *   is not there is `InvalidPermission.NotFound` (nothing revoked: a non-default VPC). Update of a missing rule is
 *   `InvalidPermission.NotFound`.
 * - Time comes from the injected clock, so a test can run the buckets on a virtual clock; `latencyMs` (default 0)
 *   delays every answer by real time (a bench models EC2's round trip with it).
 * The model keeps every call's name and range count, the largest number of ranges in one call and the error codes.
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

export interface BucketSpec {
  readonly burst: number;
  readonly perSecond: number;
}

export interface ModelledEc2Options {
  readonly groupIds: readonly string[];
  /** Inbound rules per group and family. @default 60 (EC2's default quota) */
  readonly rulesPerGroup?: number;
  readonly clock: { now(): number };
  /** @default { burst: 50, perSecond: 5 } for Authorize and for Revoke (each its own bucket) */
  readonly resourceIntensive?: BucketSpec;
  /** @default { burst: 200, perSecond: 5 } */
  readonly mutating?: BucketSpec;
  /** @default { burst: 100, perSecond: 20 } */
  readonly nonMutating?: BucketSpec;
  /** Real delay before each answer, ms. @default 0 */
  readonly latencyMs?: number;
}

export interface ModelStats {
  /** Calls per API name (throttled ones included). */
  readonly calls: Record<string, number>;
  /** Error answers per code. */
  readonly errors: Record<string, number>;
  /** Most IP ranges carried by one Authorize / Revoke call. */
  largestCall: number;
}

class Bucket {
  #tokens: number;
  #at: number;

  constructor(
    private readonly spec: BucketSpec,
    private readonly clock: { now(): number },
  ) {
    this.#tokens = spec.burst;
    this.#at = clock.now();
  }

  take(): boolean {
    const now = this.clock.now();
    this.#tokens = Math.min(
      this.spec.burst,
      this.#tokens + (Math.max(0, now - this.#at) * this.spec.perSecond) / 1000,
    );
    this.#at = Math.max(this.#at, now);
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}

function ec2Error(code: string, status: number): EC2ServiceException {
  return new EC2ServiceException({
    name: code,
    $fault: 'client',
    $metadata: { httpStatusCode: status },
    message: code,
  });
}

interface Range {
  readonly protocol: string;
  readonly port: number;
  readonly family: 4 | 6;
  readonly cidr: string;
  readonly description: string | undefined;
}

function rangesOf(permissions: readonly IpPermission[] | undefined): Range[] {
  const out: Range[] = [];
  for (const p of permissions ?? []) {
    const protocol = p.IpProtocol ?? '';
    const port = p.FromPort ?? -1;
    for (const r of p.IpRanges ?? [])
      out.push({ protocol, port, family: 4, cidr: r.CidrIp ?? '', description: r.Description });
    for (const r of p.Ipv6Ranges ?? [])
      out.push({ protocol, port, family: 6, cidr: r.CidrIpv6 ?? '', description: r.Description });
  }
  return out;
}

const keyOf = (r: Range): string => `${r.protocol}/${r.port}/${r.cidr}`;

export class ModelledEc2 {
  readonly client: EC2Client;
  readonly stats: ModelStats = { calls: {}, errors: {}, largestCall: 0 };
  readonly #groups = new Map<string, Map<string, Range>>();
  readonly #mock: ReturnType<typeof mockClient>;
  readonly #rulesPerGroup: number;
  readonly #latencyMs: number;

  constructor(options: ModelledEc2Options) {
    this.#rulesPerGroup = options.rulesPerGroup ?? 60;
    this.#latencyMs = options.latencyMs ?? 0;
    for (const id of options.groupIds) this.#groups.set(id, new Map());
    const bucket = (spec: BucketSpec | undefined, fallback: BucketSpec) =>
      new Bucket(spec ?? fallback, options.clock);
    const authorize = bucket(options.resourceIntensive, { burst: 50, perSecond: 5 });
    const revoke = bucket(options.resourceIntensive, { burst: 50, perSecond: 5 });
    const mutating = bucket(options.mutating, { burst: 200, perSecond: 5 });
    const describe = bucket(options.nonMutating, { burst: 100, perSecond: 20 });
    this.client = new EC2Client({
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    });
    this.#mock = mockClient(this.client);
    this.#mock
      .on(DescribeSecurityGroupsCommand)
      .callsFake((input) =>
        this.#answer('DescribeSecurityGroups', describe, () => this.#describe(input.GroupIds)),
      );
    this.#mock
      .on(AuthorizeSecurityGroupIngressCommand)
      .callsFake((input) =>
        this.#answer('AuthorizeSecurityGroupIngress', authorize, () =>
          this.#authorize(input.GroupId, input.IpPermissions),
        ),
      );
    this.#mock
      .on(RevokeSecurityGroupIngressCommand)
      .callsFake((input) =>
        this.#answer('RevokeSecurityGroupIngress', revoke, () =>
          this.#revoke(input.GroupId, input.IpPermissions),
        ),
      );
    this.#mock
      .on(UpdateSecurityGroupRuleDescriptionsIngressCommand)
      .callsFake((input) =>
        this.#answer('UpdateSecurityGroupRuleDescriptionsIngress', mutating, () =>
          this.#update(input.GroupId, input.IpPermissions),
        ),
      );
  }

  /** Rules open in a group (or in all groups), as `proto/port/cidr` keys. */
  rules(groupId?: string): string[] {
    const groups =
      groupId === undefined ? [...this.#groups.values()] : [this.#groups.get(groupId) ?? new Map()];
    return groups.flatMap((g) => [...g.keys()]);
  }

  /** Adds `count` rules out of band (another writer, e.g. an operator), without a call or a token. */
  fill(groupId: string, count: number, port = 8883): void {
    const group = this.#group(groupId);
    for (let i = 0; i < count; i++) {
      const r: Range = {
        protocol: 'tcp',
        port,
        family: 4,
        cidr: `172.16.${i >> 8}.${i & 0xff}/32`,
        description: 'operator',
      };
      group.set(keyOf(r), r);
    }
  }

  /** Total calls made (every API). */
  get totalCalls(): number {
    return Object.values(this.stats.calls).reduce((a, b) => a + b, 0);
  }

  restore(): void {
    this.#mock.restore();
  }

  async #answer<T>(api: string, bucket: Bucket, run: () => T): Promise<T> {
    this.stats.calls[api] = (this.stats.calls[api] ?? 0) + 1;
    if (this.#latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, this.#latencyMs));
    try {
      if (!bucket.take()) throw ec2Error('RequestLimitExceeded', 503);
      return run();
    } catch (error) {
      const code = (error as Error).name;
      this.stats.errors[code] = (this.stats.errors[code] ?? 0) + 1;
      throw error;
    }
  }

  #group(groupId: string | undefined): Map<string, Range> {
    const group = this.#groups.get(groupId ?? '');
    if (group === undefined) throw ec2Error('InvalidGroup.NotFound', 400);
    return group;
  }

  #describe(groupIds: readonly string[] | undefined) {
    return {
      SecurityGroups: (groupIds ?? []).map((id) => {
        const byPort = new Map<string, IpPermission>();
        for (const r of this.#group(id).values()) {
          const k = `${r.protocol}/${r.port}`;
          let p = byPort.get(k);
          if (p === undefined) {
            p = { IpProtocol: r.protocol, FromPort: r.port, ToPort: r.port, IpRanges: [], Ipv6Ranges: [] };
            byPort.set(k, p);
          }
          if (r.family === 4) p.IpRanges!.push({ CidrIp: r.cidr, Description: r.description });
          else p.Ipv6Ranges!.push({ CidrIpv6: r.cidr, Description: r.description });
        }
        return { GroupId: id, IpPermissions: [...byPort.values()] };
      }),
    };
  }

  #authorize(groupId: string | undefined, permissions: readonly IpPermission[] | undefined) {
    const group = this.#group(groupId);
    const ranges = rangesOf(permissions);
    this.stats.largestCall = Math.max(this.stats.largestCall, ranges.length);
    if (ranges.some((r) => group.has(keyOf(r)))) throw ec2Error('InvalidPermission.Duplicate', 400);
    for (const family of [4, 6] as const) {
      const used = [...group.values()].filter((r) => r.family === family).length;
      if (used + ranges.filter((r) => r.family === family).length > this.#rulesPerGroup)
        throw ec2Error('RulesPerSecurityGroupLimitExceeded', 400);
    }
    for (const r of ranges) group.set(keyOf(r), r);
    return { Return: true };
  }

  #revoke(groupId: string | undefined, permissions: readonly IpPermission[] | undefined) {
    const group = this.#group(groupId);
    const ranges = rangesOf(permissions);
    this.stats.largestCall = Math.max(this.stats.largestCall, ranges.length);
    if (ranges.some((r) => !group.has(keyOf(r)))) throw ec2Error('InvalidPermission.NotFound', 400);
    for (const r of ranges) group.delete(keyOf(r));
    return { Return: true };
  }

  #update(groupId: string | undefined, permissions: readonly IpPermission[] | undefined) {
    const group = this.#group(groupId);
    const ranges = rangesOf(permissions);
    if (ranges.some((r) => !group.has(keyOf(r)))) throw ec2Error('InvalidPermission.NotFound', 400);
    for (const r of ranges) group.set(keyOf(r), r);
    return { Return: true };
  }
}
