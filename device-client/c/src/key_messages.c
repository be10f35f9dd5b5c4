/*
 * The key-rotation ack (docs/key-lifecycle.md); the TypeScript twin is functions/core/key-messages.ts. The offer it
 * answers is the sealed BKO1 (src/key_offer.c).
 *
 * Ack:   {"v":1,"keyId":u32,"nonce":base64 of 16 bytes,"proof":base64 of 32 bytes}
 * proof = HMAC-SHA256(new key, "blackcloud-key-ack-v1" | 0x00 | keyId u32 BE | nonce)
 */
#include "blackcloud.h"

#include "bc_internal.h"

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* One loop for the whole groups and the padded tail (fewer bytes of flash than a separate tail). */
static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
  size_t i;
  size_t o = 0;
  for (i = 0; i < n; i += 3) {
    size_t left = n - i;
    uint32_t v = (uint32_t)in[i] << 16;
    if (left > 1) v |= (uint32_t)in[i + 1] << 8;
    if (left > 2) v |= in[i + 2];
    out[o++] = B64[(v >> 18) & 63];
    out[o++] = B64[(v >> 12) & 63];
    out[o++] = left > 1 ? B64[(v >> 6) & 63] : '=';
    out[o++] = left > 2 ? B64[v & 63] : '=';
  }
  return o;
}

static const char ACK_LABEL[] = "blackcloud-key-ack-v1"; /* 21 characters, then the 0x00 */
#define ACK_LABEL_LENGTH 22u

int bc_ack_proof(const bc_crypto *crypto, const uint8_t key[32], uint32_t key_id, const uint8_t nonce[16],
                 uint8_t proof[32]) {
  uint8_t message[ACK_LABEL_LENGTH + 4u + BC_ACK_NONCE_LENGTH];
  size_t i;
  int rc;
  if (crypto == NULL || crypto->hmac_sha256 == NULL || key == NULL || nonce == NULL || proof == NULL)
    return BC_ERR_ARGUMENT;
  for (i = 0; i < ACK_LABEL_LENGTH; i++) message[i] = (uint8_t)ACK_LABEL[i]; /* includes the NUL */
  bc_put_u32(message + ACK_LABEL_LENGTH, key_id);
  for (i = 0; i < BC_ACK_NONCE_LENGTH; i++) message[ACK_LABEL_LENGTH + 4u + i] = nonce[i];
  rc = crypto->hmac_sha256(crypto->ctx, key, BC_KEY_LENGTH, message, sizeof message, proof);
  return rc == 0 ? BC_OK : BC_ERR_CRYPTO;
}

static size_t append(char *out, size_t o, const char *text) {
  while (*text != '\0') out[o++] = *text++;
  return o;
}

int bc_key_ack_build(const bc_crypto *crypto, const uint8_t key[32], uint32_t key_id, const uint8_t *nonce,
                     bc_random_fn random, void *random_ctx, char *out, size_t capacity) {
  uint8_t fresh[BC_ACK_NONCE_LENGTH];
  uint8_t proof[BC_ACK_PROOF_LENGTH];
  char digits_buf[10];
  size_t nd = 0;
  size_t o = 0;
  size_t total;
  uint32_t rest = key_id;
  int rc;
  if (out == NULL || key == NULL || (nonce == NULL && random == NULL)) return BC_ERR_ARGUMENT;
  do {
    digits_buf[nd++] = (char)('0' + rest % 10u);
    rest /= 10u;
  } while (rest != 0);
  /* {"v":1,"keyId": N ,"nonce":" 24 ","proof":" 44 "} */
  total = 15u + nd + 10u + 24u + 11u + 44u + 2u;
  if (capacity < total) return BC_ERR_BUFFER;
  if (nonce == NULL) {
    if (random(random_ctx, fresh, sizeof fresh) != 0) return BC_ERR_RANDOM;
    nonce = fresh;
  }
  rc = bc_ack_proof(crypto, key, key_id, nonce, proof);
  if (rc != BC_OK) return rc;
  o = append(out, o, "{\"v\":1,\"keyId\":");
  while (nd > 0) out[o++] = digits_buf[--nd];
  o = append(out, o, ",\"nonce\":\"");
  o += b64_encode(nonce, BC_ACK_NONCE_LENGTH, out + o);
  o = append(out, o, "\",\"proof\":\"");
  o += b64_encode(proof, BC_ACK_PROOF_LENGTH, out + o);
  o = append(out, o, "\"}");
  bc_wipe(proof, sizeof proof);
  return (int)o;
}
