/**
 * Source addresses as security-group CIDRs. A grant is always for one host: IPv4 /32 or IPv6 /128.
 * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack socket reports IPv4 peers) become IPv4.
 * IPv6 text is canonicalised (lower case, longest zero run compressed) because EC2 compares CIDR text as given
 * (moto does too): the same host written two ways would otherwise be two rules.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { AddressFamily } from '../../spa/types.ts';
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
