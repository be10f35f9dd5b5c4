/**
 * Every size, offset and limit of both wire formats, in one place (as fwknop's lib/fko_limits.h).
 * docs/protocol.md is the normative text; rule numbers are cited where the code enforces them.
 */

// ---------------------------------------------------------------------------------------------
// Native format BC1 (binary, ChaCha20-Poly1305). All integers big-endian.
// ---------------------------------------------------------------------------------------------

/** First byte of every BC1 packet: magic and version in one. */
export const BC1_MAGIC = 0xb1;

// Header (also the AEAD additional data).
export const BC1_OFFSET_MAGIC = 0;
export const BC1_OFFSET_KEY_ID = 1;
export const BC1_KEY_ID_LENGTH = 4;
export const BC1_OFFSET_NONCE = 5;
export const BC1_NONCE_LENGTH = 12;
export const BC1_HEADER_LENGTH = 17;
export const BC1_OFFSET_CIPHERTEXT = BC1_HEADER_LENGTH;
export const BC1_TAG_LENGTH = 16;
export const BC1_KEY_LENGTH = 32;

// Payload (plaintext) layout.
export const BC1_PAYLOAD_OFFSET_TIMESTAMP = 0;
export const BC1_PAYLOAD_TIMESTAMP_LENGTH = 8;
export const BC1_PAYLOAD_OFFSET_DURATION = 8;
export const BC1_PAYLOAD_OFFSET_FLAGS = 10;
export const BC1_PAYLOAD_OFFSET_COUNT = 11;
export const BC1_PAYLOAD_FIXED_LENGTH = 12;
export const BC1_PAYLOAD_OFFSET_ENTRIES = BC1_PAYLOAD_FIXED_LENGTH;
export const BC1_ENTRY_LENGTH = 3;
export const BC1_MIN_ENTRIES = 1;
export const BC1_MAX_ENTRIES = 8;
export const BC1_IPV4_LENGTH = 4;
export const BC1_IPV6_LENGTH = 16;

export const BC1_FLAG_CLAIMED_SOURCE = 0b0000_0001;
export const BC1_FLAG_IPV6 = 0b0000_0010;
export const BC1_FLAGS_KNOWN = BC1_FLAG_CLAIMED_SOURCE | BC1_FLAG_IPV6;

export const BC1_PROTOCOL_TCP = 6;
export const BC1_PROTOCOL_UDP = 17;
export const PORT_MIN = 1;
export const PORT_MAX = 65_535;
export const BC1_DURATION_MAX = 65_535;

export const BC1_MIN_PAYLOAD_LENGTH = BC1_PAYLOAD_FIXED_LENGTH + BC1_MIN_ENTRIES * BC1_ENTRY_LENGTH;
export const BC1_MAX_PAYLOAD_LENGTH =
  BC1_PAYLOAD_FIXED_LENGTH + BC1_MAX_ENTRIES * BC1_ENTRY_LENGTH + BC1_IPV6_LENGTH;
/** [BC1-1] smallest packet: header + one entry, no claim + tag = 48 bytes. */
export const BC1_MIN_PACKET_LENGTH = BC1_HEADER_LENGTH + BC1_MIN_PAYLOAD_LENGTH + BC1_TAG_LENGTH;
/** [BC1-1] largest packet: header + eight entries + IPv6 claim + tag = 85 bytes. */
export const BC1_MAX_PACKET_LENGTH = BC1_HEADER_LENGTH + BC1_MAX_PAYLOAD_LENGTH + BC1_TAG_LENGTH;

// ---------------------------------------------------------------------------------------------
// fwknop format (FKO protocol 3.0.0, Rijndael + HMAC), for interoperability.
// ---------------------------------------------------------------------------------------------

export const FKO_PROTOCOL_VERSION = '3.0.0';
/** fwknopd accepts 140..1500 bytes of base64 on the wire; 400+ characters it treats as GnuPG. */
export const FKO_MIN_WIRE_LENGTH = 140;
export const FKO_MAX_WIRE_LENGTH = 1500;
export const FKO_GPG_MIN_LENGTH = 400;
/** Every Rijndael blob starts with base64("Salted__"); the wire omits these 10 characters. */
export const FKO_SALTED_PREFIX_B64 = 'U2FsdGVkX1';
export const FKO_SALTED_MAGIC = 'Salted__';
export const FKO_SALT_LENGTH = 8;
export const FKO_AES_BLOCK_LENGTH = 16;
export const FKO_MAX_RIJNDAEL_KEY_LENGTH = 32;
export const FKO_RANDOM_DIGITS = 16;
export const FKO_MIN_MESSAGE_TYPE = 0;
export const FKO_MAX_MESSAGE_TYPE = 6;
/** libfko caps the HMAC key at 128 bytes (`fwknop --key-gen` gives 64). */
export const FKO_MAX_HMAC_KEY_LENGTH = 128;
/** [FKO-9] the plaintext splits on ':' into 7..10 fields: 6 mandatory + digest, then NAT, server_auth, timeout. */
export const FKO_MIN_FIELDS = 7;
export const FKO_MAX_FIELDS = 10;
/** Largest base64 username field fwknopd parses (MAX_SPA_USERNAME_SIZE): a username of at most 48 bytes. */
export const FKO_MAX_USERNAME_B64_LENGTH = 64;
export const FKO_MAX_USERNAME_LENGTH = 48;
/** Largest timestamp field (MAX_SPA_TIMESTAMP_SIZE) and value (libfko keeps it in an unsigned int). */
export const FKO_MAX_TIMESTAMP_DIGITS = 12;
export const FKO_MAX_TIMESTAMP = 0xffff_ffff;
/** Largest base64 message, NAT access or server_auth field (MAX_SPA_MESSAGE_SIZE). */
export const FKO_MAX_FIELD_B64_LENGTH = 256;
/** Largest decoded server_auth (MAX_SPA_SERVER_AUTH_SIZE, NUL excluded). */
export const FKO_MAX_SERVER_AUTH_LENGTH = 63;
/** Client timeout range on the wire (types 3, 4, 6); fwknopd also takes 65536, blackcloud a u16. */
export const FKO_MIN_CLIENT_TIMEOUT = 1;
export const FKO_MAX_CLIENT_TIMEOUT = 65_535;

// ---------------------------------------------------------------------------------------------
// Policy defaults shared by receiver and client.
// ---------------------------------------------------------------------------------------------

/** Default SPA UDP port (as fwknop). */
export const DEFAULT_SPA_PORT = 62_201;
/** [BC1-6] default clock window: |now - timestamp| must not exceed this. */
export const DEFAULT_CLOCK_WINDOW_MS = 60_000;
/** Default grant window when the device asks for 0 seconds. */
export const DEFAULT_GRANT_SECONDS = 30;
