/**
 * The kernel pre-filter of the SPA port, as data, as a predicate and as nft text (docs/local.md, "Kernel
 * pre-filter"). Pure: no process, no clock.
 *
 * Contract:
 * - `KNOCK_SHAPES` is the one statement of what a datagram must look like to possibly be a knock, derived from
 *   spa/limits.ts and spa/fwknop-base64.ts only: a BC1 packet is 48..85 bytes whose first byte is the magic
 *   ([BC1-1]); an fwknop wire is 140..399 bytes ([FKO-1]: 400+ is GnuPG, refused) of base64 text ([FKO-2]) whose
 *   first character is one of the four that can follow the stripped `U2FsdGVkX1` of `Salted__` + salt
 *   ([FKO-3], [FKO-5]: the 11th base64 character of `Salted__` holds the low 4 bits of `_` and 2 bits of the
 *   salt, so it is `8`, `9`, `+` or `/`); the next bytes up to `FKO_CHECKED_BYTES` are base64 characters.
 * - `prefilterVerdict(datagram)` applies those shapes: 'pass', or the counter that drops it ('length',
 *   'bc1_magic', 'fwknop_base64'). Every datagram the codecs can accept passes (property-tested against the
 *   encoders); the socket loop would reject every other one at its first, synchronous step.
 * - `prefilterTableText(...)` renders the same shapes as one nftables table: a length rule, one raw-payload rule
 *   (`@th,<bit offset>,8`) per checked byte, then a per-source packet rate (dynamic sets with a `limit` per
 *   element, an element timeout and a bounded size; IPv6 sources per /64 as [BC1-2]), each drop counted in a named
 *   counter (`PREFILTER_COUNTERS`), and `passed` counting what reaches the socket. A rule matches the UDP length
 *   field (the kernel trims or drops a datagram to it before any socket), so it sees exactly the socket's bytes.
 * - The hook: `netdev` ingress on one interface (packets to `address` only: forwarded traffic is never
 *   touched), or `inet` input (every local delivery to the port, loopback included; restricted to `address`
 *   unless it is a wildcard). Values are validated before any text is built (`NftablesInputError`).
 * - The rate sets never drop a knock because of their size: a full set adds no element, and the packet passes.
 */
import { isBase64Byte } from '../../spa/fwknop-base64.ts';
import {
  BC1_MAGIC,
  BC1_MAX_PACKET_LENGTH,
  BC1_MIN_PACKET_LENGTH,
  FKO_GPG_MIN_LENGTH,
  FKO_MIN_WIRE_LENGTH,
  FKO_SALT_LENGTH,
  FKO_SALTED_MAGIC,
  FKO_SALTED_PREFIX_B64,
} from '../../spa/limits.ts';
import { RATE_LIMIT_DEFAULTS } from '../receiver/rate-limiter.ts';
import { canonicalAddress } from './gate-firewall.ts';
import { NftablesInputError } from './nftables-errors.ts';
import { validateTable } from './nftables-ruleset.ts';

/** An inclusive range of byte values. */
export type ByteRange = readonly [number, number];

export interface KnockShape {
  readonly format: 'bc1' | 'fwknop';
  /** Datagram (UDP payload) length bounds, inclusive. */
  readonly minLength: number;
  readonly maxLength: number;
  /** `bytes[i]`: the values byte i may take. */
  readonly bytes: readonly (readonly ByteRange[])[];
  /** The counter a datagram of this length whose bytes do not fit is dropped into. */
  readonly counter: PrefilterCounter;
}

/** How many leading fwknop bytes the kernel checks (one rule each); the receiver checks the rest [FKO-2]. */
export const FKO_CHECKED_BYTES = 16;

export const PREFILTER_COUNTERS = ['length', 'bc1_magic', 'fwknop_base64', 'rate'] as const;
export type PrefilterCounter = (typeof PREFILTER_COUNTERS)[number];
export type PrefilterVerdict = 'pass' | Exclude<PrefilterCounter, 'rate'>;

/** Defaults of the per-source rate: generous for devices sharing one NAT address, tight for a flood. */
export const PREFILTER_RATE_DEFAULTS = Object.freeze({
  packetsPerSecond: 100,
  burst: 200,
  /** Tracked sources per family; the same bound as the receiver's own buckets ([BC1-2]). */
  maxSources: RATE_LIMIT_DEFAULTS.maxSources,
  /** A source's element is forgotten this long after its last packet. */
  timeoutSeconds: 60,
});

const UDP_HEADER_LENGTH = 8;

function rangesOf(accept: (byte: number) => boolean): ByteRange[] {
  const ranges: [number, number][] = [];
  for (let byte = 0; byte <= 0xff; byte++) {
    if (!accept(byte)) continue;
    const last = ranges.at(-1);
    if (last !== undefined && last[1] === byte - 1) last[1] = byte;
    else ranges.push([byte, byte]);
  }
  return ranges;
}

/** The characters that can follow `U2FsdGVkX1` in base64(`Salted__` + salt): derived, not typed in. */
function firstFwknopBytes(): ByteRange[] {
  const seen = new Set<number>();
  for (let salt0 = 0; salt0 <= 0xff; salt0++) {
    const blob = Buffer.concat([
      Buffer.from(FKO_SALTED_MAGIC, 'latin1'),
      Buffer.from([salt0]),
      Buffer.alloc(FKO_SALT_LENGTH - 1),
    ]);
    seen.add(blob.toString('base64').charCodeAt(FKO_SALTED_PREFIX_B64.length));
  }
  return rangesOf((byte) => seen.has(byte));
}

const BASE64 = rangesOf(isBase64Byte);

export const KNOCK_SHAPES: readonly KnockShape[] = Object.freeze([
  Object.freeze({
    format: 'bc1',
    minLength: BC1_MIN_PACKET_LENGTH,
    maxLength: BC1_MAX_PACKET_LENGTH,
    bytes: [[[BC1_MAGIC, BC1_MAGIC]] as const],
    counter: 'bc1_magic',
  }),
  Object.freeze({
    format: 'fwknop',
    minLength: FKO_MIN_WIRE_LENGTH,
    maxLength: FKO_GPG_MIN_LENGTH - 1,
    bytes: [firstFwknopBytes(), ...Array.from({ length: FKO_CHECKED_BYTES - 1 }, () => BASE64)],
    counter: 'fwknop_base64',
  }),
]);

const inRanges = (byte: number, ranges: readonly ByteRange[]) =>
  ranges.some(([low, high]) => byte >= low && byte <= high);

/** What the kernel does with this datagram, rate aside: the predicate the table encodes. */
export function prefilterVerdict(datagram: Uint8Array): PrefilterVerdict {
  const shape = KNOCK_SHAPES.find((s) => datagram.length >= s.minLength && datagram.length <= s.maxLength);
  if (shape === undefined) return 'length';
  for (let i = 0; i < shape.bytes.length; i++) {
    if (!inRanges(datagram[i]!, shape.bytes[i]!)) return shape.counter as PrefilterVerdict;
  }
  return 'pass';
}

export type PrefilterHook =
  | { readonly kind: 'netdev-ingress'; readonly device: string; readonly address: string }
  | { readonly kind: 'inet-input'; readonly address?: string };

export interface PrefilterRate {
  readonly packetsPerSecond: number;
  readonly burst: number;
  readonly maxSources: number;
  readonly timeoutSeconds: number;
}

export interface PrefilterSpec {
  readonly table: string;
  readonly port: number;
  readonly hook: PrefilterHook;
  readonly rate?: Partial<PrefilterRate>;
}

const DEVICE_PATTERN = /^[A-Za-z0-9_.-]{1,15}$/;
const WILDCARDS = new Set(['0.0.0.0', '::']);

function positiveInt(value: unknown, field: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw new NftablesInputError(
      field,
      `${field} must be an integer 1..${max}, received ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function hex(byte: number): string {
  return `0x${byte.toString(16).padStart(2, '0')}`;
}

function rangeText([low, high]: ByteRange): string {
  return low === high ? hex(low) : `${hex(low)}-${hex(high)}`;
}

/** `udp length` bounds (header included) of a shape. */
function udpLengths(shape: KnockShape): string {
  return `${shape.minLength + UDP_HEADER_LENGTH}-${shape.maxLength + UDP_HEADER_LENGTH}`;
}

/** Both families, so a stale table of either (a crashed run) goes too; safe when absent. */
export function deletePrefilterText(table: string): string {
  const name = validateTable(table);
  return ['inet', 'netdev'].map((f) => `add table ${f} ${name}\ndelete table ${f} ${name}\n`).join('');
}

export function prefilterFamily(hook: PrefilterHook): 'netdev' | 'inet' {
  return hook.kind === 'netdev-ingress' ? 'netdev' : 'inet';
}

/** The table, (re)created atomically: a stale one of the same name, in either family, is replaced. */
export function prefilterTableText(spec: PrefilterSpec): string {
  const table = validateTable(spec.table);
  const port = positiveInt(spec.port, 'port', 65_535);
  const rate = { ...PREFILTER_RATE_DEFAULTS, ...spec.rate };
  const perSecond = positiveInt(rate.packetsPerSecond, 'rate.packetsPerSecond', 1_000_000);
  const burst = positiveInt(rate.burst, 'rate.burst', 1_000_000);
  const size = positiveInt(rate.maxSources, 'rate.maxSources', 1_048_576);
  const timeout = positiveInt(rate.timeoutSeconds, 'rate.timeoutSeconds', 86_400);
  const family = prefilterFamily(spec.hook);

  let address: string | undefined;
  const given = spec.hook.address;
  if (given !== undefined && !WILDCARDS.has(given)) {
    address = canonicalAddress(given);
    if (address === undefined) {
      throw new NftablesInputError(
        'hook.address',
        `hook.address must be an IP address, received ${JSON.stringify(given)}`,
      );
    }
  } else if (spec.hook.kind === 'netdev-ingress') {
    throw new NftablesInputError(
      'hook.address',
      'a netdev ingress pre-filter needs the address the receiver binds',
    );
  }
  let hookLine: string;
  if (spec.hook.kind === 'netdev-ingress') {
    const device = spec.hook.device;
    if (typeof device !== 'string' || !DEVICE_PATTERN.test(device)) {
      throw new NftablesInputError(
        'hook.device',
        `hook.device must be an interface name, received ${JSON.stringify(device)}`,
      );
    }
    // Before the IP stack, ahead of every other ingress chain of the device.
    hookLine = `    type filter hook ingress device "${device}" priority -500; policy accept;`;
  } else {
    hookLine = '    type filter hook input priority raw; policy accept;';
  }
  const destination =
    address === undefined ? '' : `${address.includes(':') ? 'ip6' : 'ip'} daddr ${address} `;

  const lengths = KNOCK_SHAPES.map(udpLengths).join(', ');
  const shapeRules = KNOCK_SHAPES.flatMap((shape) =>
    shape.bytes.map(
      (ranges, i) =>
        `    udp length ${udpLengths(shape)} @th,${(UDP_HEADER_LENGTH + i) * 8},8 != { ${ranges.map(rangeText).join(', ')} } counter name "${shape.counter}" drop`,
    ),
  );
  const limit = `limit rate over ${perSecond}/second burst ${burst} packets`;
  const rateSet = (name: string, type: string) =>
    `  set ${name} { type ${type}; size ${size}; flags dynamic,timeout; timeout ${timeout}s; }`;
  return [
    deletePrefilterText(table).trimEnd(),
    `table ${family} ${table} {`,
    ...[...PREFILTER_COUNTERS, 'passed'].map((name) => `  counter ${name} { }`),
    rateSet('rate4', 'ipv4_addr'),
    rateSet('rate6', 'ipv6_addr'),
    '  chain spa {',
    `    udp length != { ${lengths} } counter name "length" drop`,
    ...shapeRules,
    `    update @rate4 { ip saddr ${limit} } counter name "rate" drop`,
    `    update @rate6 { ip6 saddr & ffff:ffff:ffff:ffff:: ${limit} } counter name "rate" drop`,
    '    counter name "passed"',
    '  }',
    '  chain screen {',
    hookLine,
    `    ${destination}udp dport ${port} jump spa`,
    '  }',
    '}',
    '',
  ].join('\n');
}
