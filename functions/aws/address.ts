/**
 * Source addresses as security-group CIDRs. A grant is for one host (IPv4 /32 or IPv6 /128) or, under a device's
 * prefix-grant policy (functions/core/grant-prefix.ts, docs/scaling.md "Prefix grants"), for one network prefix.
 * A grant's *target* is the text it is keyed by in the grants table, SQS messages and rule bookkeeping: the host
 * address, or `network/length` (grant-prefix.ts `grantTarget`).
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) become IPv4.
 * IPv6 text is canonicalised (lower case, longest zero run compressed) because EC2 compares CIDR text as given
 * (moto does too): the same host written two ways would otherwise be two rules.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { AddressFamily } from '../../spa/types.ts';
import { GRANT_PREFIX_BOUNDS, grantTarget, prefixOf } from '../core/grant-prefix.ts';
import { AwsAdapterError } from './errors.ts';

export class InvalidAddressError extends AwsAdapterError {
  override name = 'InvalidAddressError';
}

export interface HostAddress {
  readonly family: AddressFamily;
  /** Canonical text: dotted quad, or compressed lower-case IPv6. */
  readonly address: string;
  /** `address/32` or `address/128`. */
  readonly cidr: string;
}

const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** The canonical host address of a grant's source. Throws InvalidAddressError for anything not a plain host address. */
export function hostAddress(address: string): HostAddress {
  const mapped = MAPPED_V4.exec(address);
  const text = mapped?.[1] ?? address;
  if (isIPv4(text)) return { family: 4, address: text, cidr: `${text}/32` };
  if (isIPv6(text) && !text.includes('%')) {
    const canonical = new URL(`http://[${text}]/`).hostname.slice(1, -1);
    return { family: 6, address: canonical, cidr: `${canonical}/128` };
  }
  throw new InvalidAddressError(
    `grant address ${JSON.stringify(address)} is not an IPv4 or IPv6 host address: pass the observed source address ` +
      '(e.g. "203.0.113.7" or "2001:db8::7"), without a zone id or prefix length',
  );
}

/** The host address of a security-group CIDR if it is a single-host range (/32 or /128), else undefined. */
export function hostOfCidr(cidr: string): HostAddress | undefined {
  const slash = cidr.lastIndexOf('/');
  if (slash < 0) return undefined;
  const prefix = cidr.slice(slash + 1);
  const host = cidr.slice(0, slash);
  try {
    const parsed = hostAddress(host);
    if ((parsed.family === 4 && prefix === '32') || (parsed.family === 6 && prefix === '128')) return parsed;
  } catch {
    return undefined;
  }
  return undefined;
}

/** A grant's range: a host (no prefixLength, cidr /32 or /128) or a network prefix. */
export interface GrantRange extends HostAddress {
  readonly prefixLength?: number;
  /** The host address, or `network/length`. */
  readonly target: string;
}

/** The range of a grant (address, optional prefixLength). Throws InvalidAddressError for a misaligned or too wide prefix. */
export function grantRange(address: string, prefixLength?: number): GrantRange {
  const host = hostAddress(address);
  if (prefixLength === undefined || prefixLength === (host.family === 4 ? 32 : 128)) {
    return { ...host, target: host.address };
  }
  const { min } = host.family === 4 ? GRANT_PREFIX_BOUNDS.ipv4 : GRANT_PREFIX_BOUNDS.ipv6;
  const cidr = grantTarget({ address: host.address, prefixLength });
  if (
    !Number.isInteger(prefixLength) ||
    prefixLength < min ||
    prefixOf(host.address, prefixLength) !== cidr
  ) {
    throw new InvalidAddressError(
      `grant range ${JSON.stringify(`${address}/${String(prefixLength)}`)} is not a network prefix of /${min} or ` +
        'narrower: pass the network address and length grant-prefix.ts computed (e.g. "198.51.100.0/24")',
    );
  }
  return { family: host.family, address: host.address, prefixLength, cidr, target: cidr };
}

/** The range of a target (`address` or `network/length`). Throws InvalidAddressError like grantRange. */
export function parseTarget(target: string): GrantRange {
  const slash = target.lastIndexOf('/');
  if (slash < 0) return grantRange(target);
  const length = target.slice(slash + 1);
  return grantRange(target.slice(0, slash), /^\d{1,3}$/.test(length) ? Number(length) : Number.NaN);
}

/** The range of a security-group CIDR if it is a host or a prefix blackcloud could have granted, else undefined. */
export function rangeOfCidr(cidr: string): GrantRange | undefined {
  try {
    const range = parseTarget(cidr);
    return cidr.includes('/') ? range : undefined;
  } catch {
    return undefined;
  }
}

/** The target of a CIDR blackcloud wrote: the host address of a /32 or /128, else the CIDR itself. */
export function targetOfCidr(cidr: string): string {
  return rangeOfCidr(cidr)?.target ?? cidr.slice(0, cidr.lastIndexOf('/'));
}
