/**
 * Packet fuzzing for the hostile suite: a seeded xorshift PRNG (reproducible, cheap: no crypto per packet) and a
 * generator of hostile datagrams mutated from valid native (BC1) and fwknop packets, or random. Every generated
 * datagram is a fresh Uint8Array; the valid originals are never modified.
 *
 * Mutations (picked uniformly): flip 1..8 bits; overwrite 1..4 bytes; truncate; extend with random bytes; swap a
 * base64 character for another (fwknop keeps its shape, so it reaches the HMAC); insert a non-base64 byte; a
 * BC1 header with a known key id and a random body (reaches the AEAD open); splice two packets; random bytes of
 * length 0..1600; the valid packet unchanged (a replay after its first use).
 */

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

export class Xorshift {
  #s: number;

  constructor(seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }

  next(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x >>> 0;
    return this.#s;
  }

  /** Uniform integer in [0, n). */
  below(n: number): number {
    return this.next() % n;
  }

  bytes(length: number): Uint8Array {
    const out = new Uint8Array(length);
    for (let i = 0; i < length; i++) out[i] = this.next() & 0xff;
    return out;
  }
}

export const MUTATIONS = [
  'bit-flip',
  'overwrite',
  'truncate',
  'extend',
  'base64-swap',
  'non-base64',
  'bc1-known-key-random-body',
  'splice',
  'random',
  'unchanged',
] as const;
export type Mutation = (typeof MUTATIONS)[number];

export interface Fuzzed {
  readonly mutation: Mutation;
  readonly bytes: Uint8Array;
}

export class PacketFuzzer {
  readonly #rng: Xorshift;
  readonly #valid: readonly Uint8Array[];
  readonly #bc1KeyId: number;

  constructor(seed: number, valid: readonly Uint8Array[], bc1KeyId: number) {
    if (valid.length === 0) throw new RangeError('PacketFuzzer needs at least one valid packet to mutate');
    this.#rng = new Xorshift(seed);
    this.#valid = valid;
    this.#bc1KeyId = bc1KeyId;
  }

  next(): Fuzzed {
    const rng = this.#rng;
    const mutation = MUTATIONS[rng.below(MUTATIONS.length)]!;
    const base = this.#valid[rng.below(this.#valid.length)]!;
    const copy = base.slice();
    switch (mutation) {
      case 'bit-flip': {
        const flips = 1 + rng.below(8);
        for (let i = 0; i < flips; i++) {
          const at = rng.below(copy.length);
          copy[at] = copy[at]! ^ (1 << rng.below(8));
        }
        return { mutation, bytes: copy };
      }
      case 'overwrite': {
        const count = 1 + rng.below(4);
        for (let i = 0; i < count; i++) copy[rng.below(copy.length)] = rng.below(256);
        return { mutation, bytes: copy };
      }
      case 'truncate':
        return { mutation, bytes: copy.subarray(0, rng.below(copy.length)) };
      case 'extend': {
        const extra = rng.bytes(1 + rng.below(64));
        const out = new Uint8Array(copy.length + extra.length);
        out.set(copy);
        out.set(extra, copy.length);
        return { mutation, bytes: out };
      }
      case 'base64-swap': {
        const at = rng.below(copy.length);
        copy[at] = B64.charCodeAt(rng.below(B64.length));
        return { mutation, bytes: copy };
      }
      case 'non-base64': {
        const at = rng.below(copy.length);
        copy[at] = [0x00, 0x3d, 0x2d, 0x5f, 0x0a, 0xff][rng.below(6)]!;
        return { mutation, bytes: copy };
      }
      case 'bc1-known-key-random-body': {
        const out = rng.bytes(17 + 12 + 3 + 16 + rng.below(40));
        out[0] = 0xb1;
        new DataView(out.buffer).setUint32(1, this.#bc1KeyId);
        return { mutation, bytes: out };
      }
      case 'splice': {
        const other = this.#valid[rng.below(this.#valid.length)]!;
        const cut = rng.below(copy.length);
        const from = rng.below(other.length);
        const out = new Uint8Array(cut + other.length - from);
        out.set(copy.subarray(0, cut));
        out.set(other.subarray(from), cut);
        return { mutation, bytes: out };
      }
      case 'random':
        return { mutation, bytes: rng.bytes(rng.below(1601)) };
      case 'unchanged':
        return { mutation, bytes: copy };
    }
  }
}

/** Bytes equal (not constant time: test code comparing public packets). */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
