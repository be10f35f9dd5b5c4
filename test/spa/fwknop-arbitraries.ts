/**
 * fast-check arbitraries of valid fwknop inputs, keys and randomness, and `encodeOrDiscard` (the real encoder, a
 * discarded run when the fields do not fit a Rijndael packet). Shared by the codec's properties and the kernel
 * pre-filter's (test/functions/local/prefilter-ruleset.test.ts).
 */
import fc from 'fast-check';
import {
  encodeFwknop,
  FWKNOP_HASH_TYPES,
  type FwknopKeys,
  type FwknopMessageInput,
  type FwknopMessageType,
  type FwknopRandomness,
  FwknopUsageError,
} from '../../spa/fwknop.ts';
import type { AccessEntry } from '../../spa/types.ts';

export const BASE64_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
export const FORBIDDEN_IN_USERNAME = '"/\\[]:;|=,+*?<>';

export const hashType = fc.constantFrom(...FWKNOP_HASH_TYPES);
export const keysArb: fc.Arbitrary<FwknopKeys> = fc.record({
  encryptionKey: fc.uint8Array({ minLength: 1, maxLength: 32 }),
  hmacKey: fc.uint8Array({ minLength: 1, maxLength: 128 }),
  hmacType: hashType,
});
export const randArb = fc.record({
  salt: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  random: fc.stringMatching(/^[0-9]{16}$/),
});
const printable = (min: number, max: number) =>
  fc
    .array(fc.integer({ min: 0x20, max: 0x7e }), { minLength: min, maxLength: max })
    .map((codes) => String.fromCharCode(...codes));
const username = printable(1, 16).filter((u) => ![...u].some((c) => FORBIDDEN_IN_USERNAME.includes(c)));
const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));
const entry: fc.Arbitrary<AccessEntry> = fc.record({
  protocol: fc.constantFrom('tcp' as const, 'udp' as const),
  port: fc.integer({ min: 1, max: 65_535 }),
});
const hostname = fc.oneof(
  ipv4,
  fc.domain().filter((d) => d.length <= 30),
);

export const inputArb: fc.Arbitrary<FwknopMessageInput> = fc
  .record({
    type: fc.integer({ min: 0, max: 6 }).map((t) => t as FwknopMessageType),
    username,
    timestamp: fc.integer({ min: 0, max: 0xffff_ffff }),
    allowIp: ipv4,
    entries: fc.array(entry, { minLength: 1, maxLength: 4 }),
    command: printable(1, 30),
    nat: fc.record({ host: hostname, port: fc.integer({ min: 1, max: 65_535 }) }),
    timeout: fc.integer({ min: 1, max: 65_535 }),
    serverAuth: fc.option(printable(1, 20), { nil: undefined }),
    digestType: hashType,
  })
  .map((r) => {
    const message =
      r.type === 0
        ? `${r.allowIp},${r.command}`
        : [r.allowIp, ...r.entries.map((e) => `${e.protocol}/${e.port}`)].join(',');
    return {
      username: r.username,
      timestamp: r.timestamp,
      messageType: r.type,
      message,
      digestType: r.digestType,
      ...([2, 4, 5, 6].includes(r.type) ? { natAccess: r.nat } : {}),
      ...([3, 4, 6].includes(r.type) ? { clientTimeout: r.timeout } : {}),
      ...(r.serverAuth === undefined ? {} : { serverAuth: r.serverAuth }),
    };
  });

/**
 * encodeFwknop, or a discarded run when the generated fields do not fit the format: fwknopd takes a packet of 400
 * characters or more as GnuPG, which leaves a Rijndael plaintext of about 220 bytes (less with SHA-512 HMAC and
 * digest). That limit is tested on its own in fwknop.test.ts ('input').
 */
export function encodeOrDiscard(
  input: FwknopMessageInput,
  keys: FwknopKeys,
  rand: FwknopRandomness,
): Uint8Array {
  try {
    return encodeFwknop(input, keys, rand);
  } catch (error) {
    if (error instanceof FwknopUsageError && error.field === 'input') fc.pre(false);
    throw error;
  }
}
