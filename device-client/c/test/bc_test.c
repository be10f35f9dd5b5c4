/*
 * Test driver for the C library (test/device-client/c-library.test.ts feeds it). One command per stdin line, one
 * answer per stdout line: "ok ..." or "err <code>". Hex everywhere. This program may use stdio; the library may not.
 *
 *   knock <cap> <keyId> <keyHex> <nonceHex|-> <timestampMs> <duration> <claimFamily> <claimHex|-> <proto>:<port>...
 *         nonce "-" draws it from the test's random callback (a counter: 0x40, 0x41, ...)
 *   offer <keyId> <keyHex> <deviceId> <messageHex|->   open a sealed offer with the current key ("-": empty)
 *   proof <keyHex> <keyId> <nonceHex>
 *   ack <cap> <keyHex> <keyId> <nonceHex|->
 *   credential <cap> <keyHex> <deviceId> <keyId> <nonceHex>
 *         the connect credential into a heap block of exactly cap bytes: "ok <64 chars> nul|no-nul"
 *   plain <keyHex> <deviceId> <keyId>   a knock (nonce from the random callback) and the credential computed from
 *         the nonce the packet holds: "ok <packetHex> <credential>"
 *   nulls                          (NULL pointers and a failing random callback: prints the codes)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blackcloud.h"

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static long from_hex(const char *text, uint8_t *out, size_t capacity) {
  size_t n = strlen(text);
  size_t i;
  if (strcmp(text, "-") == 0) return 0;
  if (n % 2 != 0 || n / 2 > capacity) return -1;
  for (i = 0; i < n / 2; i++) {
    int hi = hex_digit(text[2 * i]);
    int lo = hex_digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return -1;
    out[i] = (uint8_t)(hi * 16 + lo);
  }
  return (long)(n / 2);
}

static void print_hex(const uint8_t *bytes, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) printf("%02x", bytes[i]);
}

static int counter_random(void *ctx, uint8_t *out, size_t length) {
  uint8_t *next = (uint8_t *)ctx;
  size_t i;
  for (i = 0; i < length; i++) out[i] = (*next)++;
  return 0;
}

static int failing_random(void *ctx, uint8_t *out, size_t length) {
  (void)ctx;
  (void)out;
  (void)length;
  return -1;
}

static char *next_token(char **cursor) {
  char *token = strtok(*cursor, " \n");
  *cursor = NULL;
  return token;
}

static void cmd_knock(char *rest, const bc_crypto *crypto) {
  uint8_t key[32];
  uint8_t nonce[12];
  uint8_t claim[16];
  uint8_t packet[128];
  bc_access access[16];
  bc_knock knock;
  uint8_t random_state = 0x40;
  char *cursor = rest;
  char *tok;
  size_t count = 0;
  unsigned long cap = strtoul(next_token(&cursor), NULL, 10);
  long claim_len;
  int rc;
  memset(&knock, 0, sizeof knock);
  knock.key_id = (uint32_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  if (from_hex(strtok(NULL, " \n"), key, sizeof key) != 32) {
    puts("bad-input key");
    return;
  }
  knock.key = key;
  tok = strtok(NULL, " \n");
  if (strcmp(tok, "-") == 0) {
    knock.random = counter_random;
    knock.random_ctx = &random_state;
  } else if (from_hex(tok, nonce, sizeof nonce) == 12) {
    knock.nonce = nonce;
  } else {
    puts("bad-input nonce");
    return;
  }
  knock.timestamp_ms = strtoull(strtok(NULL, " \n"), NULL, 10);
  knock.duration_s = (uint16_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  knock.claim_family = (uint8_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  claim_len = from_hex(strtok(NULL, " \n"), claim, sizeof claim);
  if (claim_len < 0) {
    puts("bad-input claim");
    return;
  }
  memcpy(knock.claim, claim, (size_t)claim_len);
  while ((tok = strtok(NULL, " \n")) != NULL && count < 16) {
    char *colon = strchr(tok, ':');
    if (colon == NULL) {
      puts("bad-input entry");
      return;
    }
    access[count].protocol = (uint8_t)strtoul(tok, NULL, 10);
    access[count].port = (uint16_t)strtoul(colon + 1, NULL, 10);
    count++;
  }
  knock.access = access;
  knock.access_count = count;
  if (cap > sizeof packet) cap = sizeof packet;
  rc = bc_knock_build(crypto, &knock, packet, cap);
  if (rc < 0) {
    printf("err %d\n", rc);
    return;
  }
  if (rc != bc_knock_length(&knock)) {
    printf("length-mismatch %d %d\n", rc, bc_knock_length(&knock));
    return;
  }
  printf("ok ");
  print_hex(packet, (size_t)rc);
  printf("\n");
}

static void cmd_offer(char *rest, const bc_crypto *crypto) {
  static uint8_t message[4096];
  uint8_t key[32];
  bc_key_offer offer;
  uint32_t key_id = (uint32_t)strtoul(strtok(rest, " \n"), NULL, 10);
  const char *device_id;
  char *tok;
  long n;
  int rc;
  if (from_hex(strtok(NULL, " \n"), key, sizeof key) != 32) {
    puts("bad-input key");
    return;
  }
  device_id = strtok(NULL, " \n");
  tok = strtok(NULL, " \n");
  n = from_hex(tok == NULL ? "-" : tok, message, sizeof message);
  if (device_id == NULL || n < 0) {
    puts("bad-input message");
    return;
  }
  /* Exactly n bytes: a copy at the end of a heap block lets the sanitizer catch any over-read. */
  {
    uint8_t *exact = (uint8_t *)malloc(n == 0 ? 1u : (size_t)n);
    if (exact == NULL) return;
    memcpy(exact, message, (size_t)n);
    rc = bc_key_offer_open(crypto, key_id, key, device_id, exact, (size_t)n, &offer);
    free(exact);
  }
  if (rc != BC_OK) {
    printf("err %d\n", rc);
    return;
  }
  printf("ok %lu ", (unsigned long)offer.key_id);
  print_hex(offer.key, sizeof offer.key);
  printf(" %lld\n", (long long)offer.old_key_not_after);
}

static void cmd_proof(char *rest, const bc_crypto *crypto) {
  uint8_t key[32];
  uint8_t nonce[16];
  uint8_t proof[32];
  uint32_t key_id;
  int rc;
  if (from_hex(strtok(rest, " \n"), key, sizeof key) != 32) {
    puts("bad-input key");
    return;
  }
  key_id = (uint32_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  if (from_hex(strtok(NULL, " \n"), nonce, sizeof nonce) != 16) {
    puts("bad-input nonce");
    return;
  }
  rc = bc_ack_proof(crypto, key, key_id, nonce, proof);
  if (rc != BC_OK) {
    printf("err %d\n", rc);
    return;
  }
  printf("ok ");
  print_hex(proof, sizeof proof);
  printf("\n");
}

static void cmd_ack(char *rest, const bc_crypto *crypto) {
  uint8_t key[32];
  uint8_t nonce[16];
  char out[256];
  uint8_t random_state = 0x40;
  unsigned long cap = strtoul(strtok(rest, " \n"), NULL, 10);
  uint32_t key_id;
  const char *tok;
  int rc;
  if (from_hex(strtok(NULL, " \n"), key, sizeof key) != 32) {
    puts("bad-input key");
    return;
  }
  key_id = (uint32_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  tok = strtok(NULL, " \n");
  if (strcmp(tok, "-") != 0 && from_hex(tok, nonce, sizeof nonce) != 16) {
    puts("bad-input nonce");
    return;
  }
  if (cap > sizeof out) cap = sizeof out;
  rc = bc_key_ack_build(crypto, key, key_id, strcmp(tok, "-") == 0 ? NULL : nonce, counter_random, &random_state,
                        out, cap);
  if (rc < 0) {
    printf("err %d\n", rc);
    return;
  }
  printf("ok ");
  print_hex((const uint8_t *)out, (size_t)rc);
  printf("\n");
}

static void cmd_credential(char *rest, const bc_crypto *crypto) {
  uint8_t key[32];
  uint8_t nonce[12];
  unsigned long cap = strtoul(strtok(rest, " \n"), NULL, 10);
  const char *device_id;
  uint32_t key_id;
  char *out;
  int rc;
  if (from_hex(strtok(NULL, " \n"), key, sizeof key) != 32) {
    puts("bad-input key");
    return;
  }
  device_id = strtok(NULL, " \n");
  key_id = (uint32_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  if (device_id == NULL || from_hex(strtok(NULL, " \n"), nonce, sizeof nonce) != 12) {
    puts("bad-input nonce");
    return;
  }
  /* Exactly cap bytes: the sanitizer catches any write past them (a NUL the caller did not make room for). */
  out = (char *)malloc(cap == 0 ? 1u : cap);
  if (out == NULL) return;
  memset(out, 'X', cap == 0 ? 1u : cap);
  rc = bc_connect_credential(crypto, key, device_id, key_id, nonce, out, cap);
  if (rc < 0) {
    printf("err %d\n", rc);
  } else {
    printf("ok %d %.*s %s\n", rc, rc, out, cap > (unsigned long)rc ? (out[rc] == '\0' ? "nul" : "no-nul") : "-");
  }
  free(out);
}

static void cmd_plain(char *rest, const bc_crypto *crypto) {
  static const bc_access access[1] = {{BC_PROTOCOL_TCP, 1883}};
  uint8_t key[32];
  uint8_t packet[BC_MAX_PACKET_LENGTH];
  char credential[BC_CONNECT_CREDENTIAL_LENGTH + 1u];
  uint8_t random_state = 0x40;
  bc_knock knock;
  const char *device_id;
  int length;
  int rc;
  memset(&knock, 0, sizeof knock);
  if (from_hex(strtok(rest, " \n"), key, sizeof key) != 32) {
    puts("bad-input key");
    return;
  }
  device_id = strtok(NULL, " \n");
  if (device_id == NULL) {
    puts("bad-input device");
    return;
  }
  knock.key_id = (uint32_t)strtoul(strtok(NULL, " \n"), NULL, 10);
  knock.key = key;
  knock.timestamp_ms = 1767225600000ull;
  knock.access = access;
  knock.access_count = 1;
  knock.random = counter_random;
  knock.random_ctx = &random_state;
  length = bc_knock_build(crypto, &knock, packet, sizeof packet);
  if (length < 0) {
    printf("err %d\n", length);
    return;
  }
  rc = bc_connect_credential(crypto, key, device_id, knock.key_id, packet + BC_KNOCK_NONCE_OFFSET, credential,
                             sizeof credential);
  if (rc < 0) {
    printf("err %d\n", rc);
    return;
  }
  printf("ok ");
  print_hex(packet, (size_t)length);
  printf(" %s\n", credential);
}

#define LONG_ID "a1234567890123456789012345678901234567890123456789012345678901234" /* 65 characters */

static void cmd_nulls(const bc_crypto *crypto) {
  static const uint8_t key[32] = {1};
  static const uint8_t nonce[16] = {2};
  static const bc_access access[1] = {{BC_PROTOCOL_TCP, 8883}};
  uint8_t out[128] = {0};
  uint8_t proof[32];
  char text[128];
  bc_key_offer offer;
  bc_knock knock;
  bc_crypto empty;
  memset(&empty, 0, sizeof empty);
  memset(&knock, 0, sizeof knock);
  knock.key = key;
  knock.access = access;
  knock.access_count = 1;
  knock.random = failing_random;
  printf("ok");
  printf(" %d", bc_knock_build(crypto, &knock, out, sizeof out));   /* failing random */
  printf(" %d", bc_knock_build(NULL, &knock, out, sizeof out));     /* no backend */
  printf(" %d", bc_knock_build(&empty, &knock, out, sizeof out));   /* backend without functions */
  printf(" %d", bc_knock_build(crypto, NULL, out, sizeof out));     /* no knock */
  printf(" %d", bc_knock_build(crypto, &knock, NULL, sizeof out));  /* no output */
  knock.random = NULL;
  printf(" %d", bc_knock_build(crypto, &knock, out, sizeof out));   /* neither nonce nor random */
  knock.random = counter_random;
  knock.key = NULL;
  printf(" %d", bc_knock_build(crypto, &knock, out, sizeof out));   /* no key */
  knock.key = key;
  knock.access = NULL;
  printf(" %d", bc_knock_build(crypto, &knock, out, sizeof out));   /* no entries */
  printf(" %d", bc_key_offer_open(crypto, 1, key, "d", NULL, 80, &offer));     /* no message */
  printf(" %d", bc_key_offer_open(crypto, 1, key, "d", out, 80, NULL));      /* no offer */
  printf(" %d", bc_key_offer_open(&empty, 1, key, "d", out, 80, &offer));    /* backend without aead_open */
  printf(" %d", bc_key_offer_open(crypto, 1, NULL, "d", out, 80, &offer));   /* no key */
  printf(" %d", bc_key_offer_open(crypto, 1, key, NULL, out, 80, &offer));   /* no device id */
  printf(" %d", bc_key_offer_open(crypto, 1, key, "", out, 80, &offer));     /* empty device id */
  printf(" %d", bc_key_offer_open(crypto, 1, key, LONG_ID, out, 80, &offer)); /* 65-character device id */
  printf(" %d", bc_ack_proof(NULL, key, 1, nonce, proof));
  printf(" %d", bc_ack_proof(&empty, key, 1, nonce, proof));
  printf(" %d", bc_ack_proof(crypto, NULL, 1, nonce, proof));
  printf(" %d", bc_key_ack_build(crypto, key, 1, NULL, failing_random, NULL, text, sizeof text));
  printf(" %d", bc_key_ack_build(crypto, key, 1, NULL, NULL, NULL, text, sizeof text));
  printf(" %d", bc_key_ack_build(crypto, key, 1, nonce, NULL, NULL, NULL, sizeof text));
  printf(" %d", bc_connect_credential(NULL, key, "d", 1, nonce, text, sizeof text));    /* no backend */
  printf(" %d", bc_connect_credential(&empty, key, "d", 1, nonce, text, sizeof text));  /* no hmac_sha256 */
  printf(" %d", bc_connect_credential(crypto, NULL, "d", 1, nonce, text, sizeof text)); /* no key */
  printf(" %d", bc_connect_credential(crypto, key, NULL, 1, nonce, text, sizeof text)); /* no device id */
  printf(" %d", bc_connect_credential(crypto, key, "", 1, nonce, text, sizeof text));   /* empty device id */
  printf(" %d", bc_connect_credential(crypto, key, LONG_ID, 1, nonce, text, sizeof text)); /* 65 characters */
  printf(" %d", bc_connect_credential(crypto, key, "d", 1, NULL, text, sizeof text));   /* no nonce */
  printf(" %d", bc_connect_credential(crypto, key, "d", 1, nonce, NULL, sizeof text));  /* no output */
  printf(" %d", bc_connect_credential(crypto, key, "d", 1, nonce, text, 63));           /* 63 bytes */
  printf("\n");
}

int main(void) {
  static char line[16384];
  bc_crypto crypto;
  bc_crypto_mbedtls(&crypto);
  while (fgets(line, sizeof line, stdin) != NULL) {
    char *space = strchr(line, ' ');
    char *rest = space == NULL ? line + strlen(line) : space + 1;
    if (space != NULL) *space = '\0';
    else line[strcspn(line, "\n")] = '\0';
    if (strcmp(line, "knock") == 0) cmd_knock(rest, &crypto);
    else if (strcmp(line, "offer") == 0) cmd_offer(rest, &crypto);
    else if (strcmp(line, "proof") == 0) cmd_proof(rest, &crypto);
    else if (strcmp(line, "ack") == 0) cmd_ack(rest, &crypto);
    else if (strcmp(line, "credential") == 0) cmd_credential(rest, &crypto);
    else if (strcmp(line, "plain") == 0) cmd_plain(rest, &crypto);
    else if (strcmp(line, "nulls") == 0) cmd_nulls(&crypto);
    else printf("unknown-command %s\n", line);
    fflush(stdout);
  }
  return 0;
}
