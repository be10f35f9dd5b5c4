/*
 * The plain profile's one-time MQTT password (docs/protocol.md, "Plain profile: the connect credential",
 * [PC-1]..[PC-6]); the TypeScript twin is functions/core/connect-credential.ts.
 *
 *   credential = lowercase hex( HMAC-SHA256( native key, "blackcloud-connect-v1" | 0x00 | device id | 0x00
 *                                            | key id u32 BE | nonce[12] ) )
 *
 * The key id and nonce are those of the BC1 knock just built (its header: BC_KNOCK_KEY_ID_OFFSET,
 * BC_KNOCK_NONCE_OFFSET). The HMAC goes through the backend, straight into the caller's buffer (the credential is
 * the caller's secret from then on [PC-6]); no copy of it stays on the stack.
 */
#include "blackcloud.h"

#include <string.h> /* memcpy only: the compiler calls it for the library's copies anyway (docs/device-sdk.md) */

#include "bc_internal.h"

#define DEVICE_ID_MAX 64u

static const char CONNECT_LABEL[] = "blackcloud-connect-v1"; /* 21 characters, then the 0x00 */
#define CONNECT_LABEL_LENGTH 22u

/* A nibble as a lowercase hex digit (arithmetic, not a table: fewer bytes of flash). */
static char hex_digit(uint8_t d) { return (char)(d < 10u ? '0' + d : 'a' - 10 + d); }

int bc_connect_credential(const bc_crypto *crypto, const uint8_t key[32], const char *device_id, uint32_t key_id,
                          const uint8_t nonce[12], char *out, size_t capacity) {
  uint8_t message[CONNECT_LABEL_LENGTH + DEVICE_ID_MAX + 1u + 4u + BC_NONCE_LENGTH];
  uint8_t *mac = (uint8_t *)out; /* the MAC lands in out[0..32) and is expanded to hex in place */
  size_t n = 0;
  size_t i;
  if (crypto == NULL || crypto->hmac_sha256 == NULL || key == NULL || device_id == NULL || nonce == NULL ||
      out == NULL)
    return BC_ERR_ARGUMENT;
  memcpy(message, CONNECT_LABEL, CONNECT_LABEL_LENGTH); /* includes the NUL */
  n = CONNECT_LABEL_LENGTH;
  while (device_id[n - CONNECT_LABEL_LENGTH] != '\0') {
    if (n == CONNECT_LABEL_LENGTH + DEVICE_ID_MAX) return BC_ERR_ARGUMENT; /* more than 64 characters */
    message[n] = (uint8_t)device_id[n - CONNECT_LABEL_LENGTH];
    n++;
  }
  if (n == CONNECT_LABEL_LENGTH) return BC_ERR_ARGUMENT; /* empty */
  if (capacity < BC_CONNECT_CREDENTIAL_LENGTH) return BC_ERR_BUFFER;
  message[n++] = 0;
  bc_put_u32(message + n, key_id);
  n += 4u;
  memcpy(message + n, nonce, BC_NONCE_LENGTH);
  n += BC_NONCE_LENGTH;
  /* The message is public (label, device id, key id, nonce): nothing to wipe. */
  if (crypto->hmac_sha256(crypto->ctx, key, BC_KEY_LENGTH, message, n, mac) != 0) return BC_ERR_CRYPTO;
  /* Backwards, so that MAC byte i is read before out[2i], out[2i + 1] (both >= i) are written over it. */
  for (i = 32u; i-- > 0;) {
    uint8_t b = mac[i];
    out[2 * i] = hex_digit((uint8_t)(b >> 4));
    out[2 * i + 1] = hex_digit((uint8_t)(b & 0x0Fu));
  }
  if (capacity > BC_CONNECT_CREDENTIAL_LENGTH) out[BC_CONNECT_CREDENTIAL_LENGTH] = '\0';
  return (int)BC_CONNECT_CREDENTIAL_LENGTH;
}
