/*
 * The mbedTLS crypto backend: ChaCha20-Poly1305 seal and open (mbedtls/chachapoly.h; the open verifies the tag in
 * constant time before it returns 0) and HMAC-SHA256 (mbedtls/md.h).
 * Works with mbedTLS 2.28 (Debian 12's libmbedtls-dev) and 3.x (ESP-IDF, Zephyr): both keep these functions.
 * Needs MBEDTLS_CHACHAPOLY_C, MBEDTLS_CHACHA20_C, MBEDTLS_POLY1305_C, MBEDTLS_MD_C and MBEDTLS_SHA256_C.
 * Contexts live on the stack and are freed (mbedTLS zeroizes them) before each call returns.
 */
#include "blackcloud.h"

#include <mbedtls/chachapoly.h>
#include <mbedtls/md.h>

static int mbedtls_seal(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                        size_t aad_len, const uint8_t *plaintext, size_t length, uint8_t *ciphertext,
                        uint8_t tag[16]) {
  mbedtls_chachapoly_context aead;
  int rc;
  (void)ctx;
  mbedtls_chachapoly_init(&aead);
  rc = mbedtls_chachapoly_setkey(&aead, key);
  if (rc == 0) rc = mbedtls_chachapoly_encrypt_and_tag(&aead, length, nonce, aad, aad_len, plaintext, ciphertext, tag);
  mbedtls_chachapoly_free(&aead);
  return rc;
}

static int mbedtls_open(void *ctx, const uint8_t key[32], const uint8_t nonce[12], const uint8_t *aad,
                        size_t aad_len, const uint8_t *ciphertext, size_t length, const uint8_t tag[16],
                        uint8_t *plaintext) {
  mbedtls_chachapoly_context aead;
  int rc;
  (void)ctx;
  mbedtls_chachapoly_init(&aead);
  rc = mbedtls_chachapoly_setkey(&aead, key);
  if (rc == 0) rc = mbedtls_chachapoly_auth_decrypt(&aead, length, nonce, aad, aad_len, tag, ciphertext, plaintext);
  mbedtls_chachapoly_free(&aead);
  return rc;
}

static int mbedtls_hmac(void *ctx, const uint8_t *key, size_t key_len, const uint8_t *message, size_t message_len,
                        uint8_t out[32]) {
  const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
  (void)ctx;
  if (info == NULL) return -1;
  return mbedtls_md_hmac(info, key, key_len, message, message_len, out);
}

void bc_crypto_mbedtls(bc_crypto *crypto) {
  if (crypto == NULL) return;
  crypto->ctx = NULL;
  crypto->aead_seal = mbedtls_seal;
  crypto->aead_open = mbedtls_open;
  crypto->hmac_sha256 = mbedtls_hmac;
}
