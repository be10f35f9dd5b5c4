/**
 * The packet's observed source address, in one canonical form for policy, rate limiting and grants.
 *
 * Contract:
 * - `canonicalSource` maps an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack udp6 socket reports
 *   for IPv4 senders) to plain IPv4, drops an IPv6 zone id (`%eth0`) and renders IPv6 in RFC 5952 form (the one
 *   helper, functions/core/ip-address.ts); anything
 *   it cannot parse is returned unchanged (the socket is the authority on what it saw).
 * - `sameAddress` compares two addresses by their bytes (so `::1` equals `0:0:0:0:0:0:0:1`).
 * - `rateLimitKey` is the source's IPv4 address, or its IPv6 /64 prefix (one subscriber typically holds a whole
 *   /64, so per-address IPv6 limits would be trivially evaded).
 * Pure.
 */
import { formatIpv6, parseIpv4, parseIpv6 } from '../../spa/bc1-address.ts';
import type { IpAddress } from '../../spa/types.ts';
import type { RemoteEndpoint } from '../core/interfaces.ts';
import { canonicalAddress } from '../core/ip-address.ts';

function addressBytes(address: IpAddress): Uint8Array | undefined {
  return address.family === 4 ? parseIpv4(address.address) : parseIpv6(address.address.split('%')[0]!);
}

export function canonicalSource(remote: RemoteEndpoint): RemoteEndpoint {
  if (remote.family !== 6) return remote;
  const address = canonicalAddress(remote.address.split('%')[0]!);
  if (address === undefined) return remote;
  return { address, family: address.includes(':') ? 6 : 4, port: remote.port };
}

export function sameAddress(a: IpAddress, b: IpAddress): boolean {
  if (a.family !== b.family) return false;
  const left = addressBytes(a);
  const right = addressBytes(b);
  if (left === undefined || right === undefined) return a.address === b.address;
  return left.length === right.length && left.every((value, i) => value === right[i]);
}

export function rateLimitKey(source: IpAddress): string {
  if (source.family !== 6) return source.address;
  const bytes = parseIpv6(source.address.split('%')[0]!);
  if (bytes === undefined) return source.address;
  const prefix = new Uint8Array(16);
  prefix.set(bytes.subarray(0, 8));
  return `${formatIpv6(prefix)}/64`;
}
