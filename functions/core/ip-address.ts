/**
 * The one canonical text of an IP address, wherever addresses are compared or stored (the gate's and nftables'
 * grant tables, the receiver's observed source, operator commands such as `grants revoke ADDRESS`).
 *
 * Contract:
 * - `canonicalAddress(text)`: IPv4 as a dotted quad; IPv6 in RFC 5952 form (lowercase, compressed, spa/bc1-address.ts
 *   `formatIpv6`); an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`, what a dual-stack socket reports for an IPv4
 *   peer) is the IPv4 address. So `0:0:0:0:0:0:0:1` and `::1` are one address. Undefined for anything that is
 *   not an IP address (a zone id `%eth0` or a prefix `/64` included: strip them first if they are expected).
 * Pure.
 */
import { formatIpv4, formatIpv6, parseIpv4, parseIpv6 } from '../../spa/bc1-address.ts';

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] as const;

export function canonicalAddress(text: string): string | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return formatIpv4(v4);
  const v6 = parseIpv6(text);
  if (v6 === undefined) return undefined;
  if (V4_MAPPED_PREFIX.every((value, i) => v6[i] === value)) return formatIpv4(v6, 12);
  return formatIpv6(v6);
}
