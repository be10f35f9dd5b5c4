/*
 * blackcloud device library for microcontrollers (C99): the BC1 knock (docs/protocol.md) and the device side of
 * key rotation (docs/key-lifecycle.md): opening the sealed key offer BKO1 (docs/protocol.md [KO-1]..[KO-8],
 * functions/core/sealed-key-offer.ts) and the ack (functions/core/key-messages.ts), and the plain profile's
 * connect credential (docs/protocol.md [PC-1]..[PC-6], functions/core/connect-credential.ts).
 *
 * Contract:
 * - No heap, no stdio, no global state: everything lives in the caller's buffers and the structs passed in.
 * - Every function validates its inputs and returns a negative BC_ERR_* code on any failure (never crashes on
 *   untrusted bytes); on success a length (>= 0) or BC_OK. Output buffers are left unspecified on failure.
 * - Cryptography, randomness and the clock come from the caller: a bc_crypto backend (src/backend_mbedtls.c
 *   ships one for mbedTLS 2.28 and 3.x), a bc_random_fn, and the timestamp as a parameter.
 * - Key material on the library's stack is wiped before return; the library never copies keys elsewhere.
 */
#ifndef BLACKCLOUD_H
#define BLACKCLOUD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Sizes (spa/limits.ts). */
#define BC_KEY_LENGTH 32u
#define BC_NONCE_LENGTH 12u
#define BC_TAG_LENGTH 16u
#define BC_HEADER_LENGTH 17u
#define BC_MIN_PACKET_LENGTH 48u
#define BC_MAX_PACKET_LENGTH 85u
#define BC_MAX_ENTRIES 8u
#define BC_PROTOCOL_TCP 6u
#define BC_PROTOCOL_UDP 17u
#define BC_TIMESTAMP_MAX 9007199254740991ull /* 2^53 - 1 [BC1-5] */

/* Key rotation (functions/core/sealed-key-offer.ts, functions/core/key-messages.ts). */
#define BC_KEY_OFFER_LENGTH 80u /* the only length a sealed offer has [KO-2] */
#define BC_ACK_NONCE_LENGTH 16u
#define BC_ACK_PROOF_LENGTH 32u
/* {"v":1,"keyId":4294967295,"nonce":"<24 chars>","proof":"<44 chars>"} is at most 116 bytes. */
#define BC_KEY_ACK_MAX_LENGTH 116u

/* Plain profile (functions/core/connect-credential.ts): 64 lowercase hex characters. */
#define BC_CONNECT_CREDENTIAL_LENGTH 64u
#define BC_CONNECT_CREDENTIAL_SIZE 65u /* a buffer for the 64 characters and a NUL (the C string libraries want) */
/* Where a built BC1 packet holds its header fields (magic, key id u32 BE, nonce[12]): the nonce the knock used,
 * whether passed in or drawn from `random`, is packet + BC_KNOCK_NONCE_OFFSET. */
#define BC_KNOCK_KEY_ID_OFFSET 1u
#define BC_KNOCK_NONCE_OFFSET 5u

/* Return codes. */
#define BC_OK 0
#define BC_ERR_ARGUMENT (-1)      /* a NULL pointer or an impossible size */
#define BC_ERR_BUFFER (-2)        /* the output buffer is too small */
#define BC_ERR_TIMESTAMP (-3)     /* timestamp above 2^53 - 1 */
#define BC_ERR_ENTRY_COUNT (-4)   /* access entries not within 1..8 */
#define BC_ERR_PROTOCOL (-5)      /* an entry's protocol is neither 6 (tcp) nor 17 (udp) */
#define BC_ERR_PORT (-6)          /* an entry's port is 0 */
#define BC_ERR_ADDRESS (-7)       /* claimed address family not 4/6, unspecified, or IPv4-mapped IPv6 */
#define BC_ERR_RANDOM (-8)        /* the random callback failed */
#define BC_ERR_CRYPTO (-9)        /* the crypto backend failed */
/* Sealed key offer refusals, in the order they are checked (the TypeScript reasons in parentheses). */
#define BC_ERR_OFFER_LENGTH (-20)      /* not exactly 80 bytes ('bad-length'); the broker's JSON notice too */
#define BC_ERR_OFFER_MAGIC (-21)       /* does not start with "BKO" ('bad-magic') */
#define BC_ERR_OFFER_VERSION (-22)     /* version byte not 0x01 ('bad-version') */
#define BC_ERR_OFFER_SEALING_KEY (-23) /* sealed under another key id ('unknown-sealing-key'): [KO-8], ack the
                                          current key again with bc_key_ack_build */
#define BC_ERR_OFFER_UNAUTHENTIC (-24) /* the tag does not verify: wrong key or device id, changed bytes */
#define BC_ERR_OFFER_TIME (-25)        /* authentic, but oldKeyNotAfter above 2^53 - 1 ('bad-time') */

/*
 * The crypto backend. Each function returns 0 on success, non-zero on failure. `ctx` is passed through unchanged.
 * aead_seal: ChaCha20-Poly1305 (RFC 8439) encryption of `plaintext` into `ciphertext` (same length, never the
 * same buffer as `plaintext` when called by this library) and the 16-byte tag.
 * aead_open: ChaCha20-Poly1305 decryption of `ciphertext` into `plaintext` (same length, never the same buffer),
 * returning 0 only when `tag` verifies (in constant time); non-zero means "not authentic" (or a failure), and the
 * library then discards `plaintext`.
 * hmac_sha256: HMAC-SHA256(key, message) into 32 bytes.
 */
typedef struct bc_crypto {
  void *ctx;
  int (*aead_seal)(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
                   const uint8_t *plaintext, size_t length, uint8_t *ciphertext, uint8_t tag[16]);
  int (*aead_open)(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad, size_t aad_len,
                   const uint8_t *ciphertext, size_t length, const uint8_t tag[16], uint8_t *plaintext);
  int (*hmac_sha256)(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *message, size_t message_len,
                     uint8_t out[32]);
} bc_crypto;

/* Fills `out` with `length` bytes from a CSPRNG; returns 0 on success. */
typedef int (*bc_random_fn)(void *ctx, uint8_t *out, size_t length);

/* The mbedTLS backend (src/backend_mbedtls.c): ChaCha20-Poly1305 (seal and open) from mbedtls/chachapoly.h,
 * HMAC from md.h. */
void bc_crypto_mbedtls(bc_crypto *crypto);

typedef struct bc_access {
  uint8_t protocol; /* BC_PROTOCOL_TCP or BC_PROTOCOL_UDP */
  uint16_t port;    /* 1..65535 */
} bc_access;

typedef struct bc_knock {
  uint32_t key_id;
  const uint8_t *key;         /* 32 bytes: the device's native SPA key */
  uint64_t timestamp_ms;      /* the device's clock, ms since the Unix epoch (synchronised: [BC1-6]) */
  uint16_t duration_s;        /* 0 = the receiver's default */
  const bc_access *access;    /* 1..8 entries */
  size_t access_count;
  uint8_t claim_family;       /* 0 = no claimed source, 4 = IPv4 (claim[0..3]), 6 = IPv6 (claim[0..15]) */
  uint8_t claim[16];
  const uint8_t *nonce;       /* 12 fresh CSPRNG bytes, or NULL: the library draws them from `random` */
  bc_random_fn random;        /* used only when nonce is NULL */
  void *random_ctx;
} bc_knock;

/* Total packet length the knock will have (17 + 12 + 3N + claim + 16), or a negative error if invalid. */
int bc_knock_length(const bc_knock *knock);

/* Builds the BC1 packet into out[0..capacity); returns its length (48..85) or a negative BC_ERR_*. The nonce used
 * (given or drawn) is out + BC_KNOCK_NONCE_OFFSET (12 bytes): pass it to bc_connect_credential. */
int bc_knock_build(const bc_crypto *crypto, const bc_knock *knock, uint8_t *out, size_t capacity);

typedef struct bc_key_offer {
  uint32_t key_id;
  uint8_t key[32];            /* the new key: store it (atomically, privately) before sending the ack */
  int64_t old_key_not_after;  /* ms since the Unix epoch */
} bc_key_offer;

/*
 * Opens a sealed key offer (BKO1, 80 bytes) received on blackcloud/keys/<device_id>, with the device's current
 * key (`key_id`, `key`) and its own id (`device_id`, NUL-terminated, 1..64 characters: it is in the AAD). Untrusted
 * bytes; returns BC_OK (offer filled) or a BC_ERR_OFFER_* (BC_ERR_ARGUMENT for NULL pointers, a backend without
 * aead_open, or a device id of 0 or more than 64 characters). On BC_ERR_OFFER_SEALING_KEY, send
 * bc_key_ack_build for the current key: the controller re-sent an offer of the key this device already stored,
 * sealed under the key it replaced, because the first ack was lost [KO-8].
 */
int bc_key_offer_open(const bc_crypto *crypto, uint32_t key_id, const uint8_t key[32], const char *device_id,
                      const uint8_t *message, size_t length, bc_key_offer *offer);

/* proof = HMAC-SHA256(new key, "blackcloud-key-ack-v1" | 0x00 | key id u32 BE | nonce[16]). */
int bc_ack_proof(const bc_crypto *crypto, const uint8_t key[32], uint32_t key_id, const uint8_t nonce[16],
                 uint8_t proof[32]);

/*
 * Writes the ack {"v":1,"keyId":...,"nonce":"...","proof":"..."} (no NUL terminator) for `key`/`key_id` into
 * out; the nonce is `nonce` (16 bytes) or, when NULL, drawn from `random`. Returns the length or BC_ERR_*.
 */
int bc_key_ack_build(const bc_crypto *crypto, const uint8_t key[32], uint32_t key_id, const uint8_t *nonce,
                     bc_random_fn random, void *random_ctx, char *out, size_t capacity);

/*
 * The plain profile's one-time MQTT password [PC-2]: lowercase hex of HMAC-SHA256(key, "blackcloud-connect-v1" |
 * 0x00 | device_id | 0x00 | key_id u32 BE | nonce[12]), for the knock just sent with `key`/`key_id` and
 * `nonce` = that packet + BC_KNOCK_NONCE_OFFSET. `device_id` is NUL-terminated, 1..64 characters (the MQTT
 * username). Writes the 64 characters into out; with capacity >= BC_CONNECT_CREDENTIAL_SIZE (65) also a NUL at
 * out[64], so out is a C string (capacity 64: exactly the 64 characters, no NUL). Returns 64, BC_ERR_BUFFER
 * (capacity < 64), BC_ERR_ARGUMENT (a NULL pointer, a backend without hmac_sha256, a
 * device id of 0 or more than 64 characters) or BC_ERR_CRYPTO. The credential is a secret: never log it [PC-6].
 */
int bc_connect_credential(const bc_crypto *crypto, const uint8_t key[32], const char *device_id, uint32_t key_id,
                          const uint8_t nonce[12], char *out, size_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* BLACKCLOUD_H */
