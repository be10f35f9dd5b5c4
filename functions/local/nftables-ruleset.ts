/**
 * The nft text of the nftables firewall, built from validated values only. Pure: no process, no clock.
 *
 * The table (family inet, so one table covers IPv4 and IPv6) is ours alone:
 * ```
 * table inet blackcloud {
 *   set allow4 { type ipv4_addr . inet_proto . inet_service; flags timeout; }
 *   set allow6 { type ipv6_addr . inet_proto . inet_service; flags timeout; }
 *   chain input {
 *     type filter hook input priority filter; policy accept;
 *     ct state established,related accept          # established connections outlive their grant
 *     ip saddr . meta l4proto . th dport @allow4 accept
 *     ip6 saddr . meta l4proto . th dport @allow6 accept
 *     meta l4proto . th dport { tcp . 8883 } drop    # the guarded ports: silence for everyone else
 *   }
 * }
 * ```
 * Its `accept` verdicts end only this chain: other tables' chains still see the packet, so the table can only
 * ever drop traffic to the guarded ports, never open anything another table closes.
 *
 * Every value is validated before it is written (table name pattern, ports 1..65535, protocol tcp|udp,
 * addresses parsed as IPv4/IPv6 and re-rendered canonically), so no caller-supplied text reaches `nft` verbatim:
 * a string with a space, `;`, `}` or newline never gets through.
 */
import type { AccessEntry, AddressFamily, Protocol } from '../../spa/types.ts';
import type { Grant } from '../core/interfaces.ts';
import { canonicalAddress } from '../core/ip-address.ts';
import { NftablesInputError } from './nftables-errors.ts';

export const DEFAULT_TABLE = 'blackcloud';
const TABLE_PATTERN = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
const SET_FOR_FAMILY: Record<AddressFamily, string> = { 4: 'allow4', 6: 'allow6' };

/** One set element: a source address allowed to one guarded protocol/port, for `timeoutMs`. */
export interface NftElement {
  readonly family: AddressFamily;
  readonly address: string;
  readonly protocol: Protocol;
  readonly port: number;
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
 * The set elements of grants, restricted to the guarded ports. Throws `NftablesInputError` for any grant that
 * is malformed, or is a prefix grant (not supported here yet), before anything is built. Duplicates collapse to the last grant (the latest allow wins).
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
    if (grant.prefixLength !== undefined) {
      // Never open only the network address of a prefix grant as if it were a host (docs/scaling.md "Prefix grants").
      throw new NftablesInputError(
        `grants[${i}].prefixLength`,
        `grants[${i}] is a prefix grant (${address}/${String(grant.prefixLength)}), which the nftables firewall ` +
          'does not open yet: use the gate (--firewall gate) for devices with grantPrefix, or remove grantPrefix ' +
          'from the device entry',
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
    grant.access.forEach((entry, j) => {
      const protocol = validateProtocol(entry?.protocol, `grants[${i}].access[${j}].protocol`);
      const port = validatePort(entry?.port, `grants[${i}].access[${j}].port`);
      if (!guarded.some((g) => g.protocol === protocol && g.port === port)) return;
      byKey.set(`${address} ${protocol} ${port}`, { element: { family, address, protocol, port }, grant });
    });
  });
  return [...byKey.values()];
}

function elementKey(e: NftElement): string {
  return `${e.address} . ${e.protocol} . ${e.port}`;
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
    '  chain input {',
    '    type filter hook input priority filter; policy accept;',
    '    ct state established,related accept',
    ...(opts.exemptLoopback ? ['    iif "lo" accept'] : []),
    '    ip saddr . meta l4proto . th dport @allow4 accept',
    '    ip6 saddr . meta l4proto . th dport @allow6 accept',
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

function perSet<T extends { element: NftElement }>(
  items: readonly T[],
  fn: (set: string, items: T[]) => string[],
) {
  const lines: string[] = [];
  for (const family of [4, 6] as const) {
    const ofFamily = items.filter((item) => item.element.family === family);
    if (ofFamily.length > 0) lines.push(...fn(SET_FOR_FAMILY[family], ofFamily));
  }
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
