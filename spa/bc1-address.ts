/**
 * IP addresses as BC1 carries them: 4 or 16 raw bytes on the wire, text everywhere else.
 *
 * Contract:
 * - `formatIpv4` / `formatIpv6` render raw bytes as canonical text: dotted quad without leading zeros; IPv6 in
 *   RFC 5952 §4 form (lowercase, no leading zeros, the longest run of two or more zero groups, the first on a tie,
 *   replaced by `::`, never an embedded dotted quad).
 * - `parseIpv4` / `parseIpv6` accept any valid textual form (IPv6 may use `::` once and may end in a dotted quad;
 *   no zone ids, no prefixes; IPv4 octets without leading zeros) and return the raw bytes, or undefined.
 * - `isClaimableAddress` says whether raw bytes may be a BC1 claimed source [BC1-5]: not the unspecified address
 *   (0.0.0.0, ::) and, for IPv6, not IPv4-mapped (::ffff:0:0/96: such a device claims IPv4 instead), so that every
 *   claim has exactly one encoding.
 * Pure; imports nothing (spa/ imports node:crypto only, so node:net is not used here).
 */
import { BC1_IPV4_LENGTH, BC1_IPV6_LENGTH } from './limits.ts';

const IPV6_GROUPS = 8;
const IPV4_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const IPV6_GROUP = /^[0-9a-fA-F]{1,4}$/;

export function formatIpv4(bytes: Uint8Array, offset = 0): string {
  return `${bytes[offset]!}.${bytes[offset + 1]!}.${bytes[offset + 2]!}.${bytes[offset + 3]!}`;
}

export function formatIpv6(bytes: Uint8Array, offset = 0): string {
  const groups: number[] = new Array(IPV6_GROUPS);
  for (let i = 0; i < IPV6_GROUPS; i++)
    groups[i] = (bytes[offset + 2 * i]! << 8) | bytes[offset + 2 * i + 1]!;
  // RFC 5952 §4.2: compress the longest run of zero groups (length >= 2), the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < IPV6_GROUPS; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < IPV6_GROUPS && groups[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  let out = '';
  for (let i = 0; i < IPV6_GROUPS; i++) {
    if (i === bestStart) {
      out += i === 0 ? '::' : ':';
      i += bestLength - 1;
      continue;
    }
    out += groups[i]!.toString(16);
    if (i < IPV6_GROUPS - 1) out += ':';
  }
  return out;
}

export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split('.');
  if (parts.length !== BC1_IPV4_LENGTH) return undefined;
  const out = new Uint8Array(BC1_IPV4_LENGTH);
  for (let i = 0; i < BC1_IPV4_LENGTH; i++) {
    const part = parts[i]!;
    if (!IPV4_OCTET.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    out[i] = value;
  }
  return out;
}

export function parseIpv6(text: string): Uint8Array | undefined {
  let body = text;
  let tail: Uint8Array | undefined;
  if (body.includes('.')) {
    // An embedded dotted quad stands for the last two groups (RFC 4291 §2.2 form 3).
    const cut = body.lastIndexOf(':');
    if (cut < 0) return undefined;
    tail = parseIpv4(body.slice(cut + 1));
    if (tail === undefined) return undefined;
    body = `${body.slice(0, cut + 1)}0:0`;
  }
  const halves = body.split('::');
  if (halves.length > 2) return undefined;
  const groupsOf = (part: string): string[] => (part === '' ? [] : part.split(':'));
  const head = groupsOf(halves[0]!);
  const rest = halves.length === 2 ? groupsOf(halves[1]!) : [];
  const compressed = halves.length === 2;
  const count = head.length + rest.length;
  if (compressed ? count > IPV6_GROUPS - 1 : count !== IPV6_GROUPS) return undefined;
  const groups = [...head, ...new Array<string>(IPV6_GROUPS - count).fill('0'), ...rest];
  const out = new Uint8Array(BC1_IPV6_LENGTH);
  for (let i = 0; i < IPV6_GROUPS; i++) {
    const group = groups[i]!;
    if (!IPV6_GROUP.test(group)) return undefined;
    const value = Number.parseInt(group, 16);
    out[2 * i] = value >>> 8;
    out[2 * i + 1] = value & 0xff;
  }
  if (tail !== undefined) out.set(tail, BC1_IPV6_LENGTH - BC1_IPV4_LENGTH);
  return out;
}

/** [BC1-5] Whether `length` raw bytes at `offset` may be a claimed source (see the module contract). */
export function isClaimableAddress(bytes: Uint8Array, offset: number, length: number): boolean {
  let allZero = true;
  for (let i = 0; i < length; i++) {
    if (bytes[offset + i] !== 0) {
      allZero = false;
      break;
    }
  }
  if (allZero) return false;
  if (length === BC1_IPV6_LENGTH) {
    for (let i = 0; i < 10; i++) if (bytes[offset + i] !== 0) return true;
    return !(bytes[offset + 10] === 0xff && bytes[offset + 11] === 0xff);
  }
  return true;
}
