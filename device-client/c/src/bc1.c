/*
 * BC1 knock builder (docs/protocol.md, "Native format BC1"; the TypeScript twin is spa/bc1.ts + spa/bc1-payload.ts).
 * Refuses every payload the receiver would reject under [BC1-5], so it never sends a packet decodeBc1 drops.
 */
#include "blackcloud.h"

#include "bc_internal.h"

#define BC1_MAGIC 0xB1u
#define PAYLOAD_FIXED 12u
#define ENTRY_LENGTH 3u
#define FLAG_CLAIM 0x01u
#define FLAG_IPV6 0x02u

static size_t claim_length(uint8_t family) { return family == 4 ? 4u : family == 6 ? 16u : 0u; }

/* [BC1-5] 6: a claim is neither the unspecified address nor (IPv6) IPv4-mapped ::ffff:0:0/96. */
static int claim_valid(uint8_t family, const uint8_t *a) {
  size_t n = claim_length(family);
  size_t i;
  uint8_t any = 0;
  if (n == 0) return 0;
  for (i = 0; i < n; i++) any |= a[i];
  if (any == 0) return 0;
  if (family == 6) {
    uint8_t high = 0;
    for (i = 0; i < 10; i++) high |= a[i];
    if (high == 0 && a[10] == 0xFFu && a[11] == 0xFFu) return 0;
  }
  return 1;
}

int bc_knock_length(const bc_knock *k) {
  size_t i;
  if (k == NULL || k->key == NULL) return BC_ERR_ARGUMENT;
  if (k->timestamp_ms > BC_TIMESTAMP_MAX) return BC_ERR_TIMESTAMP;
  if (k->access_count < 1 || k->access_count > BC_MAX_ENTRIES) return BC_ERR_ENTRY_COUNT;
  if (k->access == NULL) return BC_ERR_ARGUMENT;
  for (i = 0; i < k->access_count; i++) {
    uint8_t p = k->access[i].protocol;
    if (p != BC_PROTOCOL_TCP && p != BC_PROTOCOL_UDP) return BC_ERR_PROTOCOL;
    if (k->access[i].port == 0) return BC_ERR_PORT;
  }
  if (k->claim_family != 0 && !claim_valid(k->claim_family, k->claim)) return BC_ERR_ADDRESS;
  if (k->nonce == NULL && k->random == NULL) return BC_ERR_ARGUMENT;
  return (int)(BC_HEADER_LENGTH + PAYLOAD_FIXED + k->access_count * ENTRY_LENGTH + claim_length(k->claim_family) +
               BC_TAG_LENGTH);
}

int bc_knock_build(const bc_crypto *crypto, const bc_knock *k, uint8_t *out, size_t capacity) {
  uint8_t plaintext[PAYLOAD_FIXED + BC_MAX_ENTRIES * ENTRY_LENGTH + 16u];
  size_t plen;
  size_t i;
  size_t claim;
  int total = bc_knock_length(k);
  int rc;
  if (total < 0) return total;
  if (crypto == NULL || crypto->aead_seal == NULL || out == NULL) return BC_ERR_ARGUMENT;
  if (capacity < (size_t)total) return BC_ERR_BUFFER;
  claim = claim_length(k->claim_family);

  /* Header (the AAD): magic, key id u32 BE, nonce. */
  out[0] = BC1_MAGIC;
  bc_put_u32(out + 1, k->key_id);
  if (k->nonce != NULL) {
    for (i = 0; i < BC_NONCE_LENGTH; i++) out[5 + i] = k->nonce[i];
  } else if (k->random(k->random_ctx, out + 5, BC_NONCE_LENGTH) != 0) {
    return BC_ERR_RANDOM;
  }

  /* Payload: timestamp u64 BE, duration u16 BE, flags, N, entries, claim. */
  bc_put_u32(plaintext, (uint32_t)(k->timestamp_ms >> 32));
  bc_put_u32(plaintext + 4, (uint32_t)(k->timestamp_ms & 0xFFFFFFFFu));
  plaintext[8] = (uint8_t)(k->duration_s >> 8);
  plaintext[9] = (uint8_t)(k->duration_s & 0xFFu);
  plaintext[10] = (uint8_t)(claim == 0 ? 0u : claim == 16 ? (FLAG_CLAIM | FLAG_IPV6) : FLAG_CLAIM);
  plaintext[11] = (uint8_t)k->access_count;
  plen = PAYLOAD_FIXED;
  for (i = 0; i < k->access_count; i++) {
    plaintext[plen] = k->access[i].protocol;
    plaintext[plen + 1] = (uint8_t)(k->access[i].port >> 8);
    plaintext[plen + 2] = (uint8_t)(k->access[i].port & 0xFFu);
    plen += ENTRY_LENGTH;
  }
  for (i = 0; i < claim; i++) plaintext[plen + i] = k->claim[i];
  plen += claim;

  rc = crypto->aead_seal(crypto->ctx, k->key, out + 5, out, BC_HEADER_LENGTH, plaintext, plen,
                         out + BC_HEADER_LENGTH, out + BC_HEADER_LENGTH + plen);
  bc_wipe(plaintext, sizeof plaintext);
  if (rc != 0) {
    bc_wipe(out, (size_t)total);
    return BC_ERR_CRYPTO;
  }
  return total;
}
