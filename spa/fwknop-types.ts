/**
 * The shapes of the fwknop (FKO 3.0.0) codec: keys, the decoded message, the encoder's input, and the closed set
 * of rejection reasons. spa/fwknop.ts re-exports all of them; docs/protocol-fwknop.md is the normative text.
 */
import type { AccessEntry, FwknopHashType } from './types.ts';

/** One device's fwknop keys, as `fwknop --key-gen` prints them (decoded from base64). Never logged. */
export interface FwknopKeys {
  /** Rijndael key material, 1..32 bytes (KEY_BASE64). */
  readonly encryptionKey: Uint8Array;
  /** HMAC key, 1..128 bytes (HMAC_KEY_BASE64). */
  readonly hmacKey: Uint8Array;
  /** HMAC_DIGEST_TYPE: not on the wire, it says how many trailing characters are the HMAC [FKO-4]. */
  readonly hmacType: FwknopHashType;
}

/**
 * 0 command, 1 access, 2 NAT access, 3 access with client timeout, 4 NAT access with client timeout,
 * 5 local NAT access, 6 local NAT access with client timeout [FKO-10].
 */
export type FwknopMessageType = 0 | 1 | 2 | 3 | 4 | 5 | 6;

/** A parsed access message `IPv4,proto/port[,proto/port...]` [FKO-11]. */
export interface FwknopAccess {
  /** The IPv4 the packet asks to open for; '0.0.0.0' = use the packet's source (fwknop -s). */
  readonly allowIp: string;
  readonly entries: readonly AccessEntry[];
}

export interface FwknopNatAccess {
  /** IPv4 address or host name. */
  readonly host: string;
  readonly port: number;
}

export interface FwknopMessage {
  /** 16 decimal digits. */
  readonly random: string;
  readonly username: string;
  /** Unix seconds, as the client's clock said. */
  readonly timestamp: number;
  /** Always '3.0.0'. */
  readonly version: string;
  readonly messageType: FwknopMessageType;
  /** The decoded message text, e.g. '1.2.3.4,tcp/22', or '1.2.3.4,<command>' for type 0. */
  readonly message: string;
  /** Parsed for the access types 1..6; absent for a command (type 0). */
  readonly access?: FwknopAccess;
  /** Types 2, 4, 5, 6 only. */
  readonly natAccess?: FwknopNatAccess;
  readonly serverAuth?: string;
  /** Seconds; types 3, 4, 6 only. */
  readonly clientTimeout?: number;
  /** The inner digest's type, found from its length and value [FKO-12]. */
  readonly digestType: FwknopHashType;
}

/** What the encoder needs; `random`, `version` and `access` are not inputs. `digestType` defaults to sha256. */
export type FwknopMessageInput = Omit<FwknopMessage, 'random' | 'version' | 'digestType' | 'access'> & {
  readonly digestType?: FwknopHashType;
};

/** The caller's randomness for one packet: an 8-byte salt (CSPRNG) and 16 random decimal digits. */
export interface FwknopRandomness {
  readonly salt: Uint8Array;
  readonly random: string;
}

/** Reasons of the shape rules [FKO-1]..[FKO-3], checked once per datagram by `readFwknopFrame`. */
export type FwknopFrameReason = 'too-short' | 'too-long' | 'gpg-not-supported' | 'bad-base64' | 'bad-prefix';

/** Reasons of the outer layers: shape, HMAC, blob, decryption [FKO-1]..[FKO-7]. */
export type FwknopEnvelopeReason =
  | FwknopFrameReason
  | 'auth-failed'
  | 'bad-salt-header'
  | 'bad-ciphertext-length'
  | 'bad-padding';

/** Reasons of the plaintext and its fields [FKO-8]..[FKO-12]. */
export type FwknopFieldReason =
  | 'bad-plaintext'
  | 'bad-fields'
  | 'bad-random'
  | 'bad-username'
  | 'bad-timestamp'
  | 'bad-version'
  | 'bad-message-type'
  | 'bad-message'
  | 'bad-nat-access'
  | 'bad-server-auth'
  | 'bad-client-timeout'
  | 'bad-digest';

export type FwknopReason = FwknopEnvelopeReason | FwknopFieldReason;

/** Every reason `decodeFwknop` can return, in the order the checks run. */
export const FWKNOP_REASONS: readonly FwknopReason[] = Object.freeze([
  'too-short',
  'too-long',
  'gpg-not-supported',
  'bad-base64',
  'bad-prefix',
  'auth-failed',
  'bad-salt-header',
  'bad-ciphertext-length',
  'bad-padding',
  'bad-plaintext',
  'bad-fields',
  'bad-random',
  'bad-username',
  'bad-timestamp',
  'bad-version',
  'bad-message-type',
  'bad-message',
  'bad-nat-access',
  'bad-server-auth',
  'bad-client-timeout',
  'bad-digest',
] as const);
