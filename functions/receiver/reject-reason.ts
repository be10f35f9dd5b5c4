/**
 * Why the receiver dropped a datagram: a closed set, one value per pipeline step that can fail, in the order the
 * steps run ([BC1-1]..[BC1-9], docs/protocol.md). Rejections are counted and audited by reason, never sent back.
 */
export const REJECT_REASONS = Object.freeze([
  // [BC1-1] frame: length and magic / format
  'too-short',
  'too-long',
  'bad-magic',
  // [BC1-2] per-source limit on packets that failed authentication (keyed by source and BC1 key id)
  'rate-limited',
  // [BC1-3] key lookup (fwknop: no candidate device); a directory that cannot answer fails closed
  'unknown-key',
  'directory-unavailable',
  'device-disabled',
  'key-inactive',
  // [BC1-4] AEAD tag / fwknop HMAC
  'auth-failed',
  // [BC1-5] payload well formed (fwknop: decryption and fields)
  'malformed',
  // [BC1-6] clock window; and the nonce store's start-time guard
  'stale',
  'before-start',
  // [BC1-7] policy
  'username-mismatch',
  'unsupported-message',
  'port-not-allowed',
  'source-mismatch',
  // [BC1-8] replay record
  'replay',
  'nonce-store-unavailable',
  // [BC1-8] the device's share of the replay store is full (one key cannot fill the store for everyone)
  'nonce-share-full',
  // [BC1-9] the device's accepted knocks per minute; the grant
  'device-rate-limited',
  'grant-failed',
  // a bug or an adapter throwing where it must not: the packet is dropped, the receiver lives on
  'internal-error',
] as const);

export type RejectReason = (typeof REJECT_REASONS)[number];
