/**
 * Prefix grants for carrier-grade NAT (docs/scaling.md "Prefix grants", docs/threat-model.md): a per-device policy,
 * off by default, under which a grant opens for the source's prefix instead of the single address, because behind
 * a carrier NAT the knock and the TCP session may leave from different public addresses of one pool.
 *
 * Contract:
 * - `GrantPrefixPolicy`: `ipv4` (16..32) and/or `ipv6` (32..128) prefix lengths, and/or `ranges` (carrier ranges as
 *   CIDR text, network-aligned, at most 16 entries, each no wider than the length bounds). `checkGrantPrefixPolicy`
 *   returns the problems (field, what is wrong, the fix), empty when valid; `parseGrantPrefixPolicy` throws a
 *   GrantPrefixError listing them and returns the policy with ranges in canonical text.
 * - `grantPrefixFor(source, policy)` (pure): a source inside a configured range gets that range (the first that
 *   contains it); otherwise the `ipv4` / `ipv6` length of its family, the prefix containing the source; otherwise
 *   (no policy, no length for the family, or a policy of ranges only and a source outside them) the single host.
 *   A host grant has no `prefixLength` (a length of 32 / 128 is a host grant too). The address is the canonical
 *   network address (functions/core/ip-address.ts).
 * - `grantTarget(grant)`: the text a grant is keyed by: the address of a host grant, `network/length` of a prefix
 *   grant. `grantCidr(grant)`: always `network/length` (a host: /32 or /128).
 * - `prefixContains(network, prefixLength, address)`: whether an address lies in the prefix.
 * - `prefixOf(address, prefixLength)`: the `network/length` key containing an address (undefined when the length
 *   does not fit its family or the text is not an address): how a firewall looks a source up among prefix grants.
 */
import { formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from '../../spa/bc1-address.ts';
import type { AddressFamily } from '../../spa/types.ts';
import { canonicalAddress } from './ip-address.ts';

export const GRANT_PREFIX_BOUNDS = Object.freeze({
  ipv4: Object.freeze({ min: 16, max: 32 }),
  ipv6: Object.freeze({ min: 32, max: 128 }),
});
export const MAX_GRANT_PREFIX_RANGES = 16;

export interface GrantPrefixPolicy {
  /** IPv4 prefix length a grant opens for (e.g. 24). */
  readonly ipv4?: number;
  /** IPv6 prefix length a grant opens for (e.g. 64). */
  readonly ipv6?: number;
  /** Carrier ranges (CIDR, e.g. "198.51.100.0/22"): a source inside one gets the whole range. */
  readonly ranges?: readonly string[];
}

/** Where a grant opens: a host (no prefixLength) or a prefix `address/prefixLength`. */
export interface GrantScope {
  readonly address: string;
  readonly family: AddressFamily;
  readonly prefixLength?: number;
}

export class GrantPrefixError extends Error {
  override name = 'GrantPrefixError';
  readonly problems: readonly string[];
  constructor(where: string, problems: readonly string[]) {
    super(`${where}: invalid grantPrefix: ${problems.join('; ')}`);
    this.problems = problems;
  }
}

interface ParsedPrefix {
  readonly family: AddressFamily;
  readonly bytes: Uint8Array;
  readonly prefixLength: number;
}

function parseAddress(text: string): { family: AddressFamily; bytes: Uint8Array } | undefined {
  const canonical = canonicalAddress(text);
  if (canonical === undefined) return undefined;
  const v4 = parseIpv4(canonical);
  if (v4 !== undefined) return { family: 4, bytes: v4 };
  const v6 = parseIpv6(canonical);
  return v6 === undefined ? undefined : { family: 6, bytes: v6 };
}

function format(family: AddressFamily, bytes: Uint8Array): string {
  return family === 4 ? formatIpv4(bytes) : formatIpv6(bytes);
}

/** The bytes of `bytes` with every bit after `prefixLength` cleared. */
function mask(bytes: Uint8Array, prefixLength: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i += 1) {
    const bits = Math.max(0, Math.min(8, prefixLength - i * 8));
    out[i] = bits === 0 ? 0 : bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((value, i) => value === b[i]);
}

function boundsOf(family: AddressFamily) {
  return family === 4 ? GRANT_PREFIX_BOUNDS.ipv4 : GRANT_PREFIX_BOUNDS.ipv6;
}

function parseCidr(text: string): ParsedPrefix | string {
  const slash = text.indexOf('/');
  const example = 'write it as NETWORK/LENGTH, e.g. "198.51.100.0/22" or "2001:db8:40::/48"';
  if (slash < 0) return `${JSON.stringify(text)} has no prefix length: ${example}`;
  const address = parseAddress(text.slice(0, slash));
  const lengthText = text.slice(slash + 1);
  if (address === undefined || !/^\d{1,3}$/.test(lengthText)) {
    return `${JSON.stringify(text)} is not a CIDR range: ${example}`;
  }
  const prefixLength = Number(lengthText);
  const { min, max } = boundsOf(address.family);
  if (prefixLength < min || prefixLength > max) {
    return (
      `${JSON.stringify(text)}: an IPv${address.family} range must be /${min}..${max} ` +
      `(a wider one exposes the broker to too many strangers): split it into /${min} or narrower ranges`
    );
  }
  const network = mask(address.bytes, prefixLength);
  if (!sameBytes(network, address.bytes)) {
    return `${JSON.stringify(text)} has host bits set: write ${format(address.family, network)}/${prefixLength}`;
  }
  return { family: address.family, bytes: network, prefixLength };
}

/** The problems of a grantPrefix value (each names the field and the fix); empty when it is valid. */
export function checkGrantPrefixPolicy(value: unknown): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return ['expected a mapping such as { ipv4: 24, ipv6: 64 } or { ranges: ["198.51.100.0/22"] }'];
  }
  const problems: string[] = [];
  const record = value as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (key !== 'ipv4' && key !== 'ipv6' && key !== 'ranges') {
      problems.push(`grantPrefix.${key} is not a field: use ipv4, ipv6 or ranges`);
    }
  }
  for (const [key, family] of [
    ['ipv4', 4],
    ['ipv6', 6],
  ] as const) {
    const length = record[key];
    if (length === undefined) continue;
    const { min, max } = boundsOf(family);
    if (typeof length !== 'number' || !Number.isInteger(length) || length < min || length > max) {
      problems.push(
        `grantPrefix.${key}: received ${JSON.stringify(length)}; expected an integer ${min}..${max} ` +
          `(e.g. ${family === 4 ? 24 : 64}), or leave it out for single-address grants`,
      );
    }
  }
  const ranges = record.ranges;
  if (ranges !== undefined) {
    if (!Array.isArray(ranges) || ranges.some((item) => typeof item !== 'string')) {
      problems.push('grantPrefix.ranges: expected a list of CIDR ranges such as ["198.51.100.0/22"]');
    } else if (ranges.length === 0 || ranges.length > MAX_GRANT_PREFIX_RANGES) {
      problems.push(
        `grantPrefix.ranges: received ${ranges.length} ranges; expected 1..${MAX_GRANT_PREFIX_RANGES} ` +
          '(leave the field out for none)',
      );
    } else {
      for (const [i, item] of (ranges as string[]).entries()) {
        const parsed = parseCidr(item);
        if (typeof parsed === 'string') problems.push(`grantPrefix.ranges[${i}]: ${parsed}`);
      }
    }
  }
  return problems;
}

/** A valid policy with canonical ranges; throws GrantPrefixError naming each problem and its fix. */
export function parseGrantPrefixPolicy(value: unknown, where: string): GrantPrefixPolicy {
  const problems = checkGrantPrefixPolicy(value);
  if (problems.length > 0) throw new GrantPrefixError(where, problems);
  const record = value as GrantPrefixPolicy;
  return Object.freeze({
    ...(record.ipv4 === undefined ? {} : { ipv4: record.ipv4 }),
    ...(record.ipv6 === undefined ? {} : { ipv6: record.ipv6 }),
    ...(record.ranges === undefined
      ? {}
      : {
          ranges: Object.freeze(
            record.ranges.map((text) => {
              const parsed = parseCidr(text) as ParsedPrefix;
              return `${format(parsed.family, parsed.bytes)}/${parsed.prefixLength}`;
            }),
          ),
        }),
  });
}

/** Where a grant for `source` opens under `policy` (see the contract). Throws for a source that is not an address. */
export function grantPrefixFor(source: string, policy: GrantPrefixPolicy | undefined): GrantScope {
  const parsed = parseAddress(source);
  if (parsed === undefined) {
    throw new GrantPrefixError('grant source', [`${JSON.stringify(source)} is not an IPv4 or IPv6 address`]);
  }
  const host: GrantScope = { address: format(parsed.family, parsed.bytes), family: parsed.family };
  if (policy === undefined) return host;
  for (const text of policy.ranges ?? []) {
    const range = parseCidr(text);
    if (typeof range === 'string' || range.family !== parsed.family) continue;
    if (sameBytes(mask(parsed.bytes, range.prefixLength), range.bytes)) return scope(range);
  }
  const length = parsed.family === 4 ? policy.ipv4 : policy.ipv6;
  if (length === undefined) return host;
  return scope({ family: parsed.family, bytes: mask(parsed.bytes, length), prefixLength: length });
}

function scope(prefix: ParsedPrefix): GrantScope {
  const address = format(prefix.family, prefix.bytes);
  const hostLength = prefix.family === 4 ? 32 : 128;
  return prefix.prefixLength === hostLength
    ? { address, family: prefix.family }
    : { address, family: prefix.family, prefixLength: prefix.prefixLength };
}

/** The key of a grant's scope: the host address, or `network/length`. */
export function grantTarget(scope: { readonly address: string; readonly prefixLength?: number }): string {
  return scope.prefixLength === undefined ? scope.address : `${scope.address}/${scope.prefixLength}`;
}

/** The scope as CIDR text: `network/length`, a host as /32 or /128. */
export function grantCidr(scope: {
  readonly address: string;
  readonly family: AddressFamily;
  readonly prefixLength?: number;
}): string {
  return `${scope.address}/${scope.prefixLength ?? (scope.family === 4 ? 32 : 128)}`;
}

/** Whether `address` (any IP text) lies in `network/prefixLength`. False for anything not an address. */
export function prefixContains(network: string, prefixLength: number, address: string): boolean {
  const net = parseAddress(network);
  const candidate = parseAddress(address);
  if (net === undefined || candidate === undefined || net.family !== candidate.family) return false;
  return sameBytes(mask(candidate.bytes, prefixLength), mask(net.bytes, prefixLength));
}

/** The `network/length` text of the prefix of `address` (see the contract). */
export function prefixOf(address: string, prefixLength: number): string | undefined {
  const parsed = parseAddress(address);
  if (parsed === undefined || prefixLength < 0 || prefixLength > parsed.bytes.length * 8) return undefined;
  return `${format(parsed.family, mask(parsed.bytes, prefixLength))}/${prefixLength}`;
}
