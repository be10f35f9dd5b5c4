/**
 * The BC1 payload (the plaintext inside the AEAD), big-endian:
 *
 *   0     8   timestamp, ms since the Unix epoch (u64; at most Number.MAX_SAFE_INTEGER)
 *   8     2   requested open duration, seconds (0 = the receiver's default)
 *   10    1   flags: bit0 a claimed source follows, bit1 it is IPv6; other bits 0
 *   11    1   N, number of access entries, 1..8
 *   12    3N  entries: protocol (6 tcp, 17 udp), port (u16, 1..65535)
 *   12+3N 4/16 claimed source address, only when flag bit0 is set
 *
 * Contract:
 * - `serializeBc1Payload` validates every field and throws `Bc1UsageError` (naming the field) on anything the
 *   format cannot carry; it never produces a payload that `parseBc1Payload` would reject.
 * - `parseBc1Payload` never throws. It checks structure first (flags, N, exact length), then values in layout
 *   order (timestamp, entries, claimed address), and returns the first failure as a reason [BC1-5].
 *   Every accepted payload has exactly one encoding: serialize(parse(p)) === p.
 */

import { formatIpv4, formatIpv6, isClaimableAddress, parseIpv4, parseIpv6 } from './bc1-address.ts';
import { Bc1UsageError, describeValue } from './bc1-error.ts';
import { readU16BE, readU32BE, writeU16BE, writeU32BE } from './bytes.ts';
import {
  BC1_DURATION_MAX,
  BC1_ENTRY_LENGTH,
  BC1_FLAG_CLAIMED_SOURCE,
  BC1_FLAG_IPV6,
  BC1_FLAGS_KNOWN,
  BC1_IPV4_LENGTH,
  BC1_IPV6_LENGTH,
  BC1_MAX_ENTRIES,
  BC1_MIN_ENTRIES,
  BC1_PAYLOAD_FIXED_LENGTH,
  BC1_PAYLOAD_OFFSET_COUNT,
  BC1_PAYLOAD_OFFSET_DURATION,
  BC1_PAYLOAD_OFFSET_ENTRIES,
  BC1_PAYLOAD_OFFSET_FLAGS,
  BC1_PAYLOAD_OFFSET_TIMESTAMP,
  BC1_PROTOCOL_TCP,
  BC1_PROTOCOL_UDP,
  PORT_MAX,
  PORT_MIN,
} from './limits.ts';
import { ok, type Result, reject } from './result.ts';
import type { AccessEntry, IpAddress } from './types.ts';

export interface Bc1Payload {
  /** Milliseconds since the Unix epoch (integer, 0..Number.MAX_SAFE_INTEGER). */
  readonly timestampMs: number;
  /** Requested open duration in seconds, 0..65535; 0 asks for the receiver's default. */
  readonly durationSeconds: number;
  /** 1..8 entries. */
  readonly access: readonly AccessEntry[];
  /** The address the device believes it sends from; the receiver requires it to equal the observed one [BC1-7]. */
  readonly claimedSource?: IpAddress;
}

export type Bc1PayloadReason =
  | 'bad-length'
  | 'bad-flags'
  | 'bad-entry-count'
  | 'bad-protocol'
  | 'bad-port'
  | 'bad-timestamp'
  | 'bad-address';

const TWO_POW_32 = 0x1_0000_0000;
/** Largest high word of a u64 that keeps the value <= Number.MAX_SAFE_INTEGER (2^53 - 1). */
const MAX_SAFE_HIGH_WORD = 0x1f_ffff;

/** Bytes of the claimed-source field for a payload (0 when there is no claim). */
function claimLength(claimedSource: IpAddress | undefined): number {
  if (claimedSource === undefined) return 0;
  return claimedSource.family === 6 ? BC1_IPV6_LENGTH : BC1_IPV4_LENGTH;
}

/** Plaintext length for a payload; does not validate it. */
export function bc1PayloadLength(payload: Bc1Payload): number {
  return (
    BC1_PAYLOAD_FIXED_LENGTH + payload.access.length * BC1_ENTRY_LENGTH + claimLength(payload.claimedSource)
  );
}

function isIntegerIn(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

function claimBytes(claimedSource: IpAddress): Uint8Array {
  const field = 'payload.claimedSource';
  const { family, address } = claimedSource;
  if (family !== 4 && family !== 6) {
    throw new Bc1UsageError(`${field}.family`, `must be 4 or 6; received ${describeValue(family)}.`);
  }
  const bytes =
    typeof address === 'string' ? (family === 4 ? parseIpv4(address) : parseIpv6(address)) : undefined;
  if (bytes === undefined) {
    throw new Bc1UsageError(
      `${field}.address`,
      `must be an IPv${family} address in text form; received ${describeValue(address)}. ` +
        'Pass the address the device sends from, or omit claimedSource.',
    );
  }
  if (!isClaimableAddress(bytes, 0, bytes.length)) {
    throw new Bc1UsageError(
      `${field}.address`,
      `cannot be claimed: received ${describeValue(address)} (the unspecified address, or an IPv4-mapped IPv6 ` +
        'address). Claim the IPv4 address with family 4, or omit claimedSource.',
    );
  }
  return bytes;
}

/** Validates `payload` and returns its plaintext encoding. Throws `Bc1UsageError` on misuse. */
export function serializeBc1Payload(payload: Bc1Payload): Uint8Array {
  if (payload === null || typeof payload !== 'object') {
    throw new Bc1UsageError('payload', `must be an object; received ${describeValue(payload)}.`);
  }
  const { timestampMs, durationSeconds, access, claimedSource } = payload;
  if (!isIntegerIn(timestampMs, 0, Number.MAX_SAFE_INTEGER)) {
    throw new Bc1UsageError(
      'payload.timestampMs',
      `must be an integer number of milliseconds in 0..${Number.MAX_SAFE_INTEGER}; received ` +
        `${describeValue(timestampMs)}. Pass the clock's Date.now()-style value.`,
    );
  }
  if (!isIntegerIn(durationSeconds, 0, BC1_DURATION_MAX)) {
    throw new Bc1UsageError(
      'payload.durationSeconds',
      `must be an integer in 0..${BC1_DURATION_MAX} (0 = the receiver's default); received ` +
        `${describeValue(durationSeconds)}.`,
    );
  }
  if (!Array.isArray(access) || access.length < BC1_MIN_ENTRIES || access.length > BC1_MAX_ENTRIES) {
    throw new Bc1UsageError(
      'payload.access',
      `must hold ${BC1_MIN_ENTRIES}..${BC1_MAX_ENTRIES} entries; received ${describeValue(access)}. ` +
        'Split larger requests into several knocks.',
    );
  }
  const claim = claimedSource === undefined ? undefined : claimBytes(claimedSource);
  const count = access.length;
  const out = new Uint8Array(
    BC1_PAYLOAD_FIXED_LENGTH + count * BC1_ENTRY_LENGTH + (claim === undefined ? 0 : claim.length),
  );
  const high = Math.floor(timestampMs / TWO_POW_32);
  writeU32BE(out, BC1_PAYLOAD_OFFSET_TIMESTAMP, high);
  writeU32BE(out, BC1_PAYLOAD_OFFSET_TIMESTAMP + 4, timestampMs - high * TWO_POW_32);
  writeU16BE(out, BC1_PAYLOAD_OFFSET_DURATION, durationSeconds);
  out[BC1_PAYLOAD_OFFSET_FLAGS] =
    claim === undefined
      ? 0
      : BC1_FLAG_CLAIMED_SOURCE | (claim.length === BC1_IPV6_LENGTH ? BC1_FLAG_IPV6 : 0);
  out[BC1_PAYLOAD_OFFSET_COUNT] = count;
  for (let i = 0; i < count; i++) {
    const entry: AccessEntry | undefined = access[i];
    const offset = BC1_PAYLOAD_OFFSET_ENTRIES + i * BC1_ENTRY_LENGTH;
    const protocol = entry?.protocol;
    if (protocol !== 'tcp' && protocol !== 'udp') {
      throw new Bc1UsageError(
        `payload.access[${i}].protocol`,
        `must be 'tcp' or 'udp'; received ${describeValue(protocol)}.`,
      );
    }
    const port = entry?.port;
    if (!isIntegerIn(port, PORT_MIN, PORT_MAX)) {
      throw new Bc1UsageError(
        `payload.access[${i}].port`,
        `must be an integer in ${PORT_MIN}..${PORT_MAX}; received ${describeValue(port)}.`,
      );
    }
    out[offset] = protocol === 'tcp' ? BC1_PROTOCOL_TCP : BC1_PROTOCOL_UDP;
    writeU16BE(out, offset + 1, port);
  }
  if (claim !== undefined) out.set(claim, BC1_PAYLOAD_FIXED_LENGTH + count * BC1_ENTRY_LENGTH);
  return out;
}

/** [BC1-5] Strict parse of an authenticated plaintext. Never throws. */
export function parseBc1Payload(plaintext: Uint8Array): Result<Bc1Payload, Bc1PayloadReason> {
  if (plaintext.length < BC1_PAYLOAD_FIXED_LENGTH) return reject('bad-length');
  // Structure: flags, N, exact length.
  const flags = plaintext[BC1_PAYLOAD_OFFSET_FLAGS]!;
  if ((flags & ~BC1_FLAGS_KNOWN) !== 0) return reject('bad-flags');
  const claimed = (flags & BC1_FLAG_CLAIMED_SOURCE) !== 0;
  const ipv6 = (flags & BC1_FLAG_IPV6) !== 0;
  if (ipv6 && !claimed) return reject('bad-flags');
  const count = plaintext[BC1_PAYLOAD_OFFSET_COUNT]!;
  if (count < BC1_MIN_ENTRIES || count > BC1_MAX_ENTRIES) return reject('bad-entry-count');
  const claimOffset = BC1_PAYLOAD_OFFSET_ENTRIES + count * BC1_ENTRY_LENGTH;
  const addressLength = claimed ? (ipv6 ? BC1_IPV6_LENGTH : BC1_IPV4_LENGTH) : 0;
  if (plaintext.length !== claimOffset + addressLength) return reject('bad-length');
  // Values, in layout order.
  const high = readU32BE(plaintext, BC1_PAYLOAD_OFFSET_TIMESTAMP);
  if (high > MAX_SAFE_HIGH_WORD) return reject('bad-timestamp');
  const timestampMs = high * TWO_POW_32 + readU32BE(plaintext, BC1_PAYLOAD_OFFSET_TIMESTAMP + 4);
  const durationSeconds = readU16BE(plaintext, BC1_PAYLOAD_OFFSET_DURATION);
  const access: AccessEntry[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const offset = BC1_PAYLOAD_OFFSET_ENTRIES + i * BC1_ENTRY_LENGTH;
    const code = plaintext[offset];
    if (code !== BC1_PROTOCOL_TCP && code !== BC1_PROTOCOL_UDP) return reject('bad-protocol');
    const port = readU16BE(plaintext, offset + 1);
    if (port < PORT_MIN) return reject('bad-port');
    access[i] = { protocol: code === BC1_PROTOCOL_TCP ? 'tcp' : 'udp', port };
  }
  if (!claimed) return ok({ timestampMs, durationSeconds, access });
  if (!isClaimableAddress(plaintext, claimOffset, addressLength)) return reject('bad-address');
  const claimedSource: IpAddress = ipv6
    ? { family: 6, address: formatIpv6(plaintext, claimOffset) }
    : { family: 4, address: formatIpv4(plaintext, claimOffset) };
  return ok({ timestampMs, durationSeconds, access, claimedSource });
}
