/**
 * The nft text of the nftables firewall, built from validated values only. Pure: no process, no clock.
 *
 * The table (family inet, so one table covers IPv4 and IPv6) is ours alone:
 * ```
 * table inet blackcloud {
 *   set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
 *   set allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
 *   chain prefixes { }                            # prefix grants: one rule per prefix set in use (below)
 *   chain input {
 *     type filter hook input priority filter; policy accept;
 *     ct state established,related accept          # established connections outlive their grant
 *     ip saddr . meta l4proto . th dport @allow4 accept
 *     ip6 saddr . meta l4proto . th dport @allow6 accept
 *     jump prefixes
 *     meta l4proto . th dport { tcp . 8883 } drop    # the guarded ports: silence for everyone else
 *   }
 * }
 * ```
 * Its `accept` verdicts end only this chain: other tables' chains still see the packet, so the table can only
 * ever drop traffic to the guarded ports, never open anything another table closes.
 *
 * Prefix grants (`Grant.prefixLength`, docs/scaling.md "Prefix grants") are elements such as
 * `198.51.100.0/24 . tcp . 8883` of interval sets with per-element timeouts, one set per family and prefix length
 * (`allow4_24`, `allow6_64`; created when a length is first granted, kept until the table goes): an interval set
 * refuses overlapping elements, and prefixes of one length never overlap unless equal, while a /24 and a /22 (or a
 * host of allow4 inside a /24) may. So a host grant and a prefix grant containing it, or two nested prefixes, are
 * independent elements that expire and are revoked on their own. `prefixLayoutText` writes every prefix set in use
 * and rewrites the `prefixes` chain with one rule per set, in one idempotent transaction (safe to send again).
 * Lengths are bounded as the devices file bounds them (functions/core/grant-prefix.ts: IPv4 /16..32, IPv6
 * /32..128), so at most 16 + 96 prefix sets exist; a /32 or /128 is a host element.
 *
 * Every value is validated before it is written (table name pattern, ports 1..65535, protocol tcp|udp,
 * addresses parsed as IPv4/IPv6 and re-rendered canonically, a prefix's address its network address), so no
 * caller-supplied text reaches `nft` verbatim: a string with a space, `;`, `}` or newline never gets through.
 */
import type { AccessEntry, AddressFamily, Protocol } from '../../spa/types.ts';
import { GRANT_PREFIX_BOUNDS, grantTarget, prefixOf } from '../core/grant-prefix.ts';
import type { Grant } from '../core/interfaces.ts';
import { canonicalAddress } from '../core/ip-address.ts';
import { NftablesInputError } from './nftables-errors.ts';

export const DEFAULT_TABLE = 'blackcloud';
const TABLE_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const SET_FOR_FAMILY: Record<AddressFamily, string> = { 4: 'allow4', 6: 'allow6' };
const ADDRESS_TYPE: Record<AddressFamily, string> = { 4: 'ipv4_addr', 6: 'ipv6_addr' };
const SADDR: Record<AddressFamily, string> = { 4: 'ip saddr', 6: 'ip6 saddr' };
const HOST_LENGTH: Record<AddressFamily, number> = { 4: 32, 6: 128 };
const PREFIX_CHAIN = 'prefixes';

/** One set element: a source address (or, with `prefixLength`, a prefix) allowed to one guarded protocol/port. */
export interface NftElement {
  readonly family: AddressFamily;
  /** Canonical; for a prefix its network address. */
  readonly address: string;
  /** Set for a prefix grant (shorter than a host); undefined: the single host `address`. */
  readonly prefixLength?: number;
  readonly protocol: Protocol;
  readonly port: number;
}

/** The interval set holding the prefixes of one family and length, e.g. `allow4_24`. */
export function prefixSetName(family: AddressFamily, prefixLength: number): string {
  return `${SET_FOR_FAMILY[family]}_${prefixLength}`;
}

/** The set an element belongs in: allow4 / allow6 for a host, the prefix set of its length for a prefix. */
export function elementSet(element: NftElement): string {
  return element.prefixLength === undefined
    ? SET_FOR_FAMILY[element.family]
    : prefixSetName(element.family, element.prefixLength);
}

/** One prefix set: the prefixes of one family and length. */
export interface PrefixSet {
  readonly family: AddressFamily;
  readonly prefixLength: number;
}

export function validateTable(table: unknown): string {
  if (typeof table !== 'string' || !TABLE_PATTERN.test(table)) {
    throw new NftablesInputError(
      'table',
      `table must be a letter followed by up to 31 letters, digits or underscores, received ${JSON.stringify(table)}`,
    );
  }
  return table;
}

function validateProtocol(protocol: unknown, field: string): Protocol {
  if (protocol !== 'tcp' && protocol !== 'udp') {
    throw new NftablesInputError(
      field,
      `${field} must be 'tcp' or 'udp', received ${JSON.stringify(protocol)}`,
    );
  }
  return protocol;
}

function validatePort(port: unknown, field: string): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new NftablesInputError(
      field,
      `${field} must be an integer 1..65535, received ${JSON.stringify(port)}`,
    );
  }
  return port;
}

/** The guarded ports, validated and deduplicated. */
export function validatePorts(ports: unknown): AccessEntry[] {
  if (!Array.isArray(ports) || ports.length === 0) {
    throw new NftablesInputError(
      'ports',
      `ports must list the broker ports to guard, e.g. [{ protocol: 'tcp', port: 8883 }], received ${JSON.stringify(ports)}`,
    );
  }
  const seen = new Map<string, AccessEntry>();
  ports.forEach((entry: Partial<AccessEntry> | undefined, i) => {
    const protocol = validateProtocol(entry?.protocol, `ports[${i}].protocol`);
    const port = validatePort(entry?.port, `ports[${i}].port`);
    seen.set(`${protocol}/${port}`, { protocol, port });
  });
  return [...seen.values()];
}

/**
 * The prefix length of grants[i] as an element: undefined for a host (no prefixLength, or /32 / /128). Throws
 * `NftablesInputError` for a length that is not an integer within the bounds of its family, or an address that is
 * not the network address of its prefix (never opened as a bare host, never widened to a guess).
 */
function validatePrefix(grant: Grant, address: string, family: AddressFamily, i: number): number | undefined {
  const length: unknown = grant.prefixLength;
  if (length === undefined) return undefined;
  const { min, max } = family === 4 ? GRANT_PREFIX_BOUNDS.ipv4 : GRANT_PREFIX_BOUNDS.ipv6;
  if (typeof length !== 'number' || !Number.isInteger(length) || length < min || length > max) {
    throw new NftablesInputError(
      `grants[${i}].prefixLength`,
      `grants[${i}].prefixLength must be an integer ${min}..${max} for an IPv${family} prefix grant ` +
        `(functions/core/grant-prefix.ts), received ${JSON.stringify(length)}`,
    );
  }
  if (length === HOST_LENGTH[family]) return undefined;
  const network = prefixOf(address, length);
  if (network !== grantTarget({ address, prefixLength: length })) {
    throw new NftablesInputError(
      `grants[${i}].address`,
      `grants[${i}].address of a prefix grant must be the network address of its prefix: received ` +
        `${address}/${length}, write ${String(network)}`,
    );
  }
  return length;
}

/**
 * The set elements of grants, restricted to the guarded ports. Throws `NftablesInputError` for any grant that
 * is malformed before anything is built. Duplicates collapse to the last grant (the latest allow wins); a host
 * and a prefix containing it are different elements.
 */
export function grantElements(
  grants: readonly Grant[],
  guarded: readonly AccessEntry[],
): { element: NftElement; grant: Grant }[] {
  const byKey = new Map<string, { element: NftElement; grant: Grant }>();
  grants.forEach((grant, i) => {
    const address = typeof grant?.address === 'string' ? canonicalAddress(grant.address) : undefined;
    if (address === undefined) {
      throw new NftablesInputError(
        `grants[${i}].address`,
        `grants[${i}].address must be an IPv4 or IPv6 address, received ${JSON.stringify(grant?.address)}`,
      );
    }
    if (typeof grant.expiresAt !== 'number' || !Number.isFinite(grant.expiresAt)) {
      throw new NftablesInputError(
        `grants[${i}].expiresAt`,
        `grants[${i}].expiresAt must be milliseconds since the epoch, received ${JSON.stringify(grant.expiresAt)}`,
      );
    }
    if (!Array.isArray(grant.access)) {
      throw new NftablesInputError(
        `grants[${i}].access`,
        `grants[${i}].access must be a list of {protocol, port}`,
      );
    }
    const family: AddressFamily = address.includes(':') ? 6 : 4;
    const prefixLength = validatePrefix(grant, address, family, i);
    grant.access.forEach((entry, j) => {
      const protocol = validateProtocol(entry?.protocol, `grants[${i}].access[${j}].protocol`);
      const port = validatePort(entry?.port, `grants[${i}].access[${j}].port`);
      if (!guarded.some((g) => g.protocol === protocol && g.port === port)) return;
      const element: NftElement =
        prefixLength === undefined
          ? { family, address, protocol, port }
          : { family, address, prefixLength, protocol, port };
      byKey.set(`${elementSet(element)} ${elementKey(element)}`, { element, grant });
    });
  });
  return [...byKey.values()];
}

/** The element as nft writes it: `ADDRESS . PROTOCOL . PORT`, a prefix as `NETWORK/LENGTH`. */
export function elementKey(e: NftElement): string {
  return `${grantTarget(e)} . ${e.protocol} . ${e.port}`;
}

/**
 * Creates (or atomically re-creates) the table with empty sets. With `exemptLoopback`, traffic arriving on the
 * loopback interface (local processes, e.g. an in-host controller) is not filtered.
 */
export function tableText(
  table: string,
  guarded: readonly AccessEntry[],
  opts: { exemptLoopback?: boolean } = {},
): string {
  const ports = guarded.map((entry) => `${entry.protocol} . ${entry.port}`).join(', ');
  return [
    // `add` then `delete` makes the delete safe when the table does not exist; all in one atomic transaction.
    `add table inet ${table}`,
    `delete table inet ${table}`,
    `table inet ${table} {`,
    '  set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }',
    '  set allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }',
    `  chain ${PREFIX_CHAIN} {`,
    '  }',
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    '    ct state established,related accept',
    ...(opts.exemptLoopback ? ['    iif "lo" accept'] : []),
    '    ip saddr . meta l4proto . th dport @allow4 accept',
    '    ip6 saddr . meta l4proto . th dport @allow6 accept',
    `    jump ${PREFIX_CHAIN}`,
    `    meta l4proto . th dport { ${ports} } drop`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** Deletes the table; succeeds when it is already gone. */
export function deleteTableText(table: string): string {
  return `add table inet ${table}\ndelete table inet ${table}\n`;
}

/**
 * Every prefix set of `sets` (`add set` is a no-op for one that exists), and the `prefixes` chain rewritten with
 * one accept rule per set. One transaction, idempotent: sent again it changes nothing, so a resent session line
 * is harmless. Sets in family, then length order; empty text for no sets.
 */
export function prefixLayoutText(table: string, sets: Iterable<PrefixSet>): string {
  const byName = new Map<string, PrefixSet>();
  for (const set of sets) byName.set(prefixSetName(set.family, set.prefixLength), set);
  if (byName.size === 0) return '';
  const ordered = [...byName].sort(([, a], [, b]) => a.family - b.family || a.prefixLength - b.prefixLength);
  const type = (family: AddressFamily) => `${ADDRESS_TYPE[family]} . inet_proto . inet_service`;
  return `${[
    ...ordered.map(
      ([name, { family }]) =>
        `add set inet ${table} ${name} { type ${type(family)}; flags interval, timeout; }`,
    ),
    `flush chain inet ${table} ${PREFIX_CHAIN}`,
    ...ordered.map(
      ([name, { family }]) =>
        `add rule inet ${table} ${PREFIX_CHAIN} ${SADDR[family]} . meta l4proto . th dport @${name} accept`,
    ),
  ].join('\n')}\n`;
}

/** Items grouped by their set: host sets first (allow4, allow6), then prefix sets by family and length. */
function perSet<T extends { element: NftElement }>(
  items: readonly T[],
  fn: (set: string, items: T[]) => string[],
) {
  const bySet = new Map<string, T[]>();
  const rank = (e: NftElement) =>
    (e.prefixLength === undefined ? 0 : 1_000) + e.family * 200 + (e.prefixLength ?? 0);
  for (const item of [...items].sort((a, b) => rank(a.element) - rank(b.element))) {
    const set = elementSet(item.element);
    bySet.set(set, [...(bySet.get(set) ?? []), item]);
  }
  const lines: string[] = [];
  for (const [set, list] of bySet) lines.push(...fn(set, list));
  return lines;
}

/**
 * Adds or refreshes elements with their own timeouts. An existing element's timeout is not changed by `add`, so
 * each element is added (no-op when present), deleted and added again with the new timeout, atomically.
 */
export function allowText(
  table: string,
  items: readonly { element: NftElement; timeoutMs: number }[],
): string {
  const lines = perSet(items, (set, list) => {
    const keys = list.map((item) => elementKey(item.element)).join(', ');
    const timed = list
      .map((item) => `${elementKey(item.element)} timeout ${Math.max(1, Math.ceil(item.timeoutMs))}ms`)
      .join(', ');
    return [
      `add element inet ${table} ${set} { ${keys} }`,
      `delete element inet ${table} ${set} { ${keys} }`,
      `add element inet ${table} ${set} { ${timed} }`,
    ];
  });
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/** Removes elements; a missing element is success (added, then deleted, in one transaction). */
export function revokeText(table: string, items: readonly { element: NftElement }[]): string {
  const lines = perSet(items, (set, list) => {
    const keys = list.map((item) => elementKey(item.element)).join(', ');
    return [
      `add element inet ${table} ${set} { ${keys} }`,
      `delete element inet ${table} ${set} { ${keys} }`,
    ];
  });
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}
