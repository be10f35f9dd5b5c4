/*
 * Opens the sealed key offer BKO1 (docs/protocol.md, "Sealed key offer (BKO1)", [KO-1]..[KO-8]); the TypeScript
 * twin is functions/core/sealed-key-offer.ts. 80 bytes: "BKO" | 0x01 | sealing key id u32 BE | nonce[12] |
 * ChaCha20-Poly1305 ciphertext of (new key id u32 BE | new key[32] | oldKeyNotAfter u64 BE ms) | tag[16], with
 * AAD = "blackcloud-key-offer-v1" | 0x00 | device id | 0x00 | header[20]. The AEAD goes through the backend.
 * Checks in the TypeScript order: length, magic, version, sealing key id, tag, time. No copy of the message.
 */
#include "blackcloud.h"

#include "bc_internal.h"

#define OFFER_HEADER_LENGTH 20u
#define OFFER_PLAINTEXT_LENGTH 44u
#define OFFER_VERSION 0x01u
#define DEVICE_ID_MAX 64u

static const char OFFER_LABEL[] = "blackcloud-key-offer-v1"; /* 23 characters, then the 0x00 */
#define OFFER_LABEL_LENGTH 24u

static uint32_t get_u32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

int bc_key_offer_open(const bc_crypto *crypto, uint32_t key_id, const uint8_t key[32], const char *device_id,
                      const uint8_t *message, size_t length, bc_key_offer *offer) {
  uint8_t aad[OFFER_LABEL_LENGTH + DEVICE_ID_MAX + 1u + OFFER_HEADER_LENGTH];
  uint8_t plaintext[OFFER_PLAINTEXT_LENGTH];
  size_t id_length = 0;
  size_t n;
  size_t i;
  uint32_t high;
  int rc;
  if (crypto == NULL || crypto->aead_open == NULL || key == NULL || device_id == NULL || message == NULL ||
      offer == NULL)
    return BC_ERR_ARGUMENT;
  while (id_length <= DEVICE_ID_MAX && device_id[id_length] != '\0') id_length++;
  if (id_length == 0 || id_length > DEVICE_ID_MAX) return BC_ERR_ARGUMENT;
  if (length != BC_KEY_OFFER_LENGTH) return BC_ERR_OFFER_LENGTH;                              /* [KO-2] */
  if (message[0] != 'B' || message[1] != 'K' || message[2] != 'O') return BC_ERR_OFFER_MAGIC; /* [KO-1] */
  if (message[3] != OFFER_VERSION) return BC_ERR_OFFER_VERSION;
  if (get_u32(message + 4) != key_id) return BC_ERR_OFFER_SEALING_KEY; /* [KO-8]: ack the current key again */

  n = 0;
  for (i = 0; i < OFFER_LABEL_LENGTH; i++) aad[n++] = (uint8_t)OFFER_LABEL[i]; /* includes the NUL */
  for (i = 0; i < id_length; i++) aad[n++] = (uint8_t)device_id[i];
  aad[n++] = 0;
  for (i = 0; i < OFFER_HEADER_LENGTH; i++) aad[n++] = message[i];
  rc = crypto->aead_open(crypto->ctx, key, message + 8, aad, n, message + OFFER_HEADER_LENGTH,
                         OFFER_PLAINTEXT_LENGTH, message + OFFER_HEADER_LENGTH + OFFER_PLAINTEXT_LENGTH, plaintext);
  if (rc != 0) {
    bc_wipe(plaintext, sizeof plaintext);
    return BC_ERR_OFFER_UNAUTHENTIC;
  }
  high = get_u32(plaintext + 36);
  if (high > (uint32_t)(BC_TIMESTAMP_MAX >> 32)) {
    rc = BC_ERR_OFFER_TIME;
  } else {
    offer->key_id = get_u32(plaintext);
    for (i = 0; i < BC_KEY_LENGTH; i++) offer->key[i] = plaintext[4 + i];
    offer->old_key_not_after = (int64_t)(((uint64_t)high << 32) | get_u32(plaintext + 40));
    rc = BC_OK;
  }
  bc_wipe(plaintext, sizeof plaintext);
  return rc;
}
