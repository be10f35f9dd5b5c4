/*
 * The reference device program for the C library (docs/device-sdk.md): knock, then MQTT over mutual TLS (or, with
 * -L, plain MQTT with the knock's one-time credential: the plain profile, docs/protocol.md [PC-1]..[PC-6]), publish
 * one message at QoS 1, optionally take one key rotation (a sealed key offer, docs/protocol.md [KO-1]..[KO-8]),
 * disconnect. It runs on a POSIX host (Linux sockets, /dev/urandom, the system clock) with
 * Debian's libmosquitto; on a microcontroller the same three steps use the platform's UDP socket, CSPRNG, SNTP
 * clock and MQTT client (the porting note in docs/device-sdk.md). Unlike the library it may use stdio.
 *
 *   knock_publish -s SPA_HOST -p SPA_PORT -i KEY_ID -k KEY_FILE      the receiver and the device's BC1 key
 *                 -H MQTT_HOST -P MQTT_PORT -a CA -c CERT -e CERT_KEY the broker and the device's certificate
 *                 -I CLIENT_ID -t TOPIC -m MESSAGE [-w KNOCK_WAIT_MS] [-T TIMEOUT_MS] [-n]
 *                 [-D DEVICE_ID -R ROTATE_WAIT_MS]
 *   knock_publish -L -D DEVICE_ID -s SPA_HOST -p SPA_PORT -i KEY_ID -k KEY_FILE -H MQTT_HOST -P MQTT_PORT
 *                 -I CLIENT_ID -t TOPIC -m MESSAGE [-w KNOCK_WAIT_MS] [-T TIMEOUT_MS] [-R ROTATE_WAIT_MS]
 *
 * -L (plain profile, a device that cannot do TLS): no -a/-c/-e; MQTT_PORT is the plain port, the connection is
 * mqtt:// without TLS, username = DEVICE_ID, password = bc_connect_credential of the knock just sent (its key id
 * and the nonce the packet holds at BC_KNOCK_NONCE_OFFSET). The credential is never printed [PC-6] and is wiped
 * once libmosquitto has it.
 *
 * KEY_FILE holds the 32-byte SPA key as 64 hex digits (mode 0600: the key is never on the command line). The knock
 * asks for tcp/MQTT_PORT. -n: do not knock (the broker stays dark, so the connection must fail). TIMEOUT_MS (5000)
 * bounds the wait for the CONNACK and for the PUBACK: libmosquitto 2.0.11 keeps retrying a TLS handshake whose
 * connection was reset, so a closed gate shows as no CONNACK in time.
 * -R: after the publish, wait up to ROTATE_WAIT_MS on blackcloud/keys/DEVICE_ID for a sealed key offer; open it
 * with bc_key_offer_open, store the new key in KEY_FILE (temp file 0600, fsync, rename) BEFORE the ack, then
 * publish the ack (QoS 1) and print "key-id N" on stdout. An offer sealed under another key id (a re-send after a
 * lost ack, [KO-8]) is answered by an ack of the key held; other messages on the topic are ignored.
 * Exit codes: 0 published and acknowledged; 2 usage; 3 the knock could not be built or sent; 4 no MQTT connection
 * (TLS or CONNACK refused: the firewall is closed); 5 the publish was not acknowledged in time; 6 no key offer
 * stored and acknowledged in time (with -R).
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>

#include "blackcloud.h"

static long timeout_ms = 5000;

static int urandom(void *ctx, uint8_t *out, size_t length) {
  FILE *f = fopen("/dev/urandom", "rb");
  size_t got;
  (void)ctx;
  if (f == NULL) return -1;
  got = fread(out, 1, length, f);
  fclose(f);
  return got == length ? 0 : -1;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(long ms) {
  struct timespec ts;
  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (ms % 1000) * 1000000L;
  nanosleep(&ts, NULL);
}

static int read_key(const char *file, uint8_t key[BC_KEY_LENGTH]) {
  char text[2 * BC_KEY_LENGTH + 2];
  FILE *f = fopen(file, "r");
  size_t i;
  int ok;
  if (f == NULL) return -1;
  ok = fgets(text, sizeof text, f) != NULL && strlen(text) >= 2 * BC_KEY_LENGTH;
  fclose(f);
  for (i = 0; ok && i < BC_KEY_LENGTH; i++) {
    unsigned byte;
    ok = sscanf(text + 2 * i, "%2x", &byte) == 1;
    key[i] = (uint8_t)byte;
  }
  memset(text, 0, sizeof text);
  return ok ? 0 : -1;
}

/* Steps 1-2: build a fresh BC1 knock and send it once over UDP; no answer ever comes back. With `device_id` (the
 * plain profile) also derive that knock's connect credential into `credential`. */
static int knock(const char *host, const char *port, uint32_t key_id, const uint8_t *key, uint16_t mqtt_port,
                 const char *device_id, char credential[BC_CONNECT_CREDENTIAL_SIZE]) {
  bc_access access[1];
  bc_knock k;
  bc_crypto crypto;
  uint8_t packet[BC_MAX_PACKET_LENGTH];
  struct addrinfo hints;
  struct addrinfo *server;
  int n;
  int fd;
  ssize_t sent;
  memset(&k, 0, sizeof k);
  access[0].protocol = BC_PROTOCOL_TCP;
  access[0].port = mqtt_port;
  bc_crypto_mbedtls(&crypto);
  k.key_id = key_id;
  k.key = key;
  k.timestamp_ms = now_ms();
  k.duration_s = 0;
  k.access = access;
  k.access_count = 1;
  k.random = urandom;
  n = bc_knock_build(&crypto, &k, packet, sizeof packet);
  if (n < 0) {
    fprintf(stderr, "knock_publish: bc_knock_build failed: %d\n", n);
    return -1;
  }
  if (device_id != NULL) {
    int rc = bc_connect_credential(&crypto, key, device_id, key_id, packet + BC_KNOCK_NONCE_OFFSET, credential,
                                   BC_CONNECT_CREDENTIAL_SIZE);
    if (rc < 0) {
      fprintf(stderr, "knock_publish: bc_connect_credential failed: %d (-D must be 1..64 characters)\n", rc);
      return -1;
    }
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_DGRAM;
  if (getaddrinfo(host, port, &hints, &server) != 0) {
    fprintf(stderr, "knock_publish: cannot resolve %s\n", host);
    return -1;
  }
  fd = socket(server->ai_family, SOCK_DGRAM, 0);
  sent = fd < 0 ? -1 : sendto(fd, packet, (size_t)n, 0, server->ai_addr, server->ai_addrlen);
  if (fd >= 0) close(fd);
  freeaddrinfo(server);
  if (sent != n) {
    fprintf(stderr, "knock_publish: the knock was not sent\n");
    return -1;
  }
  fprintf(stderr, "knock_publish: knocked %s:%s (%d bytes, key id %lu)\n", host, port, n, (unsigned long)key_id);
  return 0;
}

struct session {
  int connack; /* -1 waiting, -2 connection lost, else the CONNACK reason code */
  int mid;
  int acknowledged;
  /* key rotation (-R) */
  const char *device_id;
  const char *key_file;
  uint32_t key_id;
  uint8_t key[BC_KEY_LENGTH];
  int ack_mid;
  int ack_done; /* 0 waiting, 1 the ack of a stored key was acknowledged */
  int stored;
  /* plain profile (-L): the knock's one-time credential, the CONNECT password */
  int plain;
  char credential[BC_CONNECT_CREDENTIAL_SIZE];
};

/* Writes the key as 64 hex digits to a temp file (0600), fsyncs it, renames it over `file`: old or new, never torn. */
static int store_key(const char *file, const uint8_t key[BC_KEY_LENGTH]) {
  char tmp[4096];
  char text[2 * BC_KEY_LENGTH + 1];
  size_t i;
  int fd;
  int ok;
  if (snprintf(tmp, sizeof tmp, "%s.tmp", file) >= (int)sizeof tmp) return -1;
  for (i = 0; i < BC_KEY_LENGTH; i++) snprintf(text + 2 * i, 3, "%02x", key[i]);
  text[2 * BC_KEY_LENGTH] = '\n';
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return -1;
  ok = write(fd, text, sizeof text) == (ssize_t)sizeof text && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  memset(text, 0, sizeof text);
  return ok && rename(tmp, file) == 0 ? 0 : -1;
}

/* A message on the key topic: open the sealed offer, store, then ack ([KO-7]); or re-ack the held key ([KO-8]). */
static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *message) {
  struct session *s = obj;
  bc_crypto crypto;
  bc_key_offer offer;
  char ack[BC_KEY_ACK_MAX_LENGTH];
  char topic[128];
  int rc;
  int n;
  bc_crypto_mbedtls(&crypto);
  snprintf(topic, sizeof topic, "blackcloud/keys/%s", s->device_id);
  if (s->stored || strcmp(message->topic, topic) != 0 || message->payloadlen < 0) return;
  rc = bc_key_offer_open(&crypto, s->key_id, s->key, s->device_id, (const uint8_t *)message->payload,
                         (size_t)message->payloadlen, &offer);
  if (rc == BC_OK) {
    if (store_key(s->key_file, offer.key) != 0) {
      fprintf(stderr, "knock_publish: the new key could not be stored; no ack\n");
      memset(&offer, 0, sizeof offer);
      return;
    }
    s->key_id = offer.key_id;
    memcpy(s->key, offer.key, BC_KEY_LENGTH);
    s->stored = 1;
    fprintf(stderr, "knock_publish: stored the new key %lu\n", (unsigned long)offer.key_id);
  } else if (rc == BC_ERR_OFFER_SEALING_KEY) {
    fprintf(stderr, "knock_publish: an offer sealed under a key this device no longer holds: ack of the held key\n");
  } else {
    fprintf(stderr, "knock_publish: not a key offer for this device (%d), ignored\n", rc);
    return;
  }
  memset(&offer, 0, sizeof offer);
  n = bc_key_ack_build(&crypto, s->key, s->key_id, NULL, urandom, NULL, ack, sizeof ack);
  if (n < 0) return;
  snprintf(topic, sizeof topic, "blackcloud/keys/%s/ack", s->device_id);
  mosquitto_publish(mosq, &s->ack_mid, topic, n, ack, 1, false);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc) {
  (void)mosq;
  ((struct session *)obj)->connack = rc;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc) {
  struct session *s = obj;
  (void)mosq;
  (void)rc;
  if (s->connack == -1) s->connack = -2; /* e.g. the gate reset the connection: no grant */
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid) {
  struct session *s = obj;
  (void)mosq;
  if (mid == s->mid) s->acknowledged = 1;
  if (s->ack_mid != 0 && mid == s->ack_mid && s->stored) s->ack_done = 1;
}

/* Runs the network loop until *flag changes or the timeout passes; returns 0 when it changed. */
static int loop_until(struct mosquitto *mosq, const int *flag, int initial) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  while (*flag == initial) {
    if (now_ms() > deadline || mosquitto_loop(mosq, 100, 1) != MOSQ_ERR_SUCCESS) return -1;
  }
  return 0;
}

/* Steps 3-4: mutual TLS (the broker verified against the CA, the device's certificate) or, plain, the device id
 * and the knock's credential; MQTT, QoS 1 publish;
 * with rotate_ms > 0, step 5: one key rotation. `s` holds the device's key for it. */
static int publish(const char *host, int port, const char *ca, const char *cert, const char *cert_key,
                   const char *client_id, const char *topic, const char *message, struct session *s,
                   long rotate_ms) {
  struct mosquitto *mosq = mosquitto_new(client_id, true, s);
  int rc;
  if (mosq == NULL) return 4;
  mosquitto_connect_callback_set(mosq, on_connect);
  mosquitto_disconnect_callback_set(mosq, on_disconnect);
  mosquitto_publish_callback_set(mosq, on_publish);
  mosquitto_message_callback_set(mosq, on_message);
  if (s->plain) {
    rc = mosquitto_username_pw_set(mosq, s->device_id, s->credential); /* libmosquitto keeps its own copy */
    memset(s->credential, 0, sizeof s->credential);
  } else {
    rc = mosquitto_tls_set(mosq, ca, NULL, cert, cert_key, NULL);
  }
  if (rc == MOSQ_ERR_SUCCESS) rc = mosquitto_connect(mosq, host, port, 30);
  if (rc != MOSQ_ERR_SUCCESS || loop_until(mosq, &s->connack, -1) != 0 || s->connack != 0) {
    fprintf(stderr, "knock_publish: no MQTT session with %s:%d (%s)\n", host, port,
            rc != MOSQ_ERR_SUCCESS ? mosquitto_strerror(rc) : s->connack > 0 ? "CONNACK refused" : s->connack == -2 ? "connection lost" : "timed out");
    mosquitto_destroy(mosq);
    return 4;
  }
  rc = mosquitto_publish(mosq, &s->mid, topic, (int)strlen(message), message, 1, false);
  if (rc != MOSQ_ERR_SUCCESS || loop_until(mosq, &s->acknowledged, 0) != 0) {
    fprintf(stderr, "knock_publish: the publish was not acknowledged (%s)\n", mosquitto_strerror(rc));
    mosquitto_destroy(mosq);
    return 5;
  }
  fprintf(stderr, "knock_publish: published to %s\n", topic);
  if (rotate_ms > 0) {
    char key_topic[128];
    long saved = timeout_ms;
    snprintf(key_topic, sizeof key_topic, "blackcloud/keys/%s", s->device_id);
    rc = mosquitto_subscribe(mosq, NULL, key_topic, 1);
    timeout_ms = rotate_ms;
    if (rc == MOSQ_ERR_SUCCESS) fprintf(stderr, "knock_publish: waiting for a key offer on %s\n", key_topic);
    rc = rc != MOSQ_ERR_SUCCESS ? -1 : loop_until(mosq, &s->ack_done, 0);
    timeout_ms = saved;
    if (rc != 0) {
      fprintf(stderr, "knock_publish: no key offer stored and acknowledged within %ld ms\n", rotate_ms);
      mosquitto_destroy(mosq);
      return 6;
    }
    printf("key-id %lu\n", (unsigned long)s->key_id);
  }
  mosquitto_disconnect(mosq);
  mosquitto_destroy(mosq);
  return 0;
}

int main(int argc, char **argv) {
  const char *spa_host = NULL, *spa_port = NULL, *key_file = NULL, *mqtt_host = NULL, *ca = NULL, *cert = NULL,
             *cert_key = NULL, *client_id = NULL, *topic = NULL, *message = NULL;
  unsigned long key_id = 0;
  long mqtt_port = 0;
  long wait_ms = 250;
  long rotate_ms = 0;
  int no_knock = 0;
  static struct session session; /* zeroed; holds the key from the knock to the rotation */
  uint8_t *key = session.key;
  int opt;
  int rc;
  session.connack = -1;
  while ((opt = getopt(argc, argv, "s:p:i:k:H:P:a:c:e:I:t:m:w:T:nD:R:L")) != -1) {
    switch (opt) {
    case 's': spa_host = optarg; break;
    case 'p': spa_port = optarg; break;
    case 'i': key_id = strtoul(optarg, NULL, 10); break;
    case 'k': key_file = optarg; break;
    case 'H': mqtt_host = optarg; break;
    case 'P': mqtt_port = strtol(optarg, NULL, 10); break;
    case 'a': ca = optarg; break;
    case 'c': cert = optarg; break;
    case 'e': cert_key = optarg; break;
    case 'I': client_id = optarg; break;
    case 't': topic = optarg; break;
    case 'm': message = optarg; break;
    case 'w': wait_ms = strtol(optarg, NULL, 10); break;
    case 'T': timeout_ms = strtol(optarg, NULL, 10); break;
    case 'n': no_knock = 1; break;
    case 'D': session.device_id = optarg; break;
    case 'R': rotate_ms = strtol(optarg, NULL, 10); break;
    case 'L': session.plain = 1; break;
    default: return 2;
    }
  }
  if (timeout_ms < 1 || mqtt_host == NULL || mqtt_port < 1 || mqtt_port > 65535 ||
      (!session.plain && (ca == NULL || cert == NULL || cert_key == NULL)) ||
      (session.plain && (session.device_id == NULL || no_knock)) ||
      client_id == NULL || topic == NULL || message == NULL ||
      (!no_knock && (spa_host == NULL || spa_port == NULL || key_file == NULL || key_id > 0xFFFFFFFFul)) ||
      rotate_ms < 0 || (rotate_ms > 0 && (session.device_id == NULL || no_knock))) {
    fprintf(stderr, "usage: knock_publish -s SPA_HOST -p SPA_PORT -i KEY_ID -k KEY_FILE -H MQTT_HOST -P MQTT_PORT "
                    "-a CA -c CERT -e CERT_KEY -I CLIENT_ID -t TOPIC -m MESSAGE [-w KNOCK_WAIT_MS] [-T TIMEOUT_MS] [-n] "
                    "[-D DEVICE_ID -R ROTATE_WAIT_MS]\n"
                    "       knock_publish -L -D DEVICE_ID (plain profile: no -a/-c/-e, no -n) ...\n");
    return 2;
  }
  if (!no_knock) {
    if (read_key(key_file, key) != 0) {
      fprintf(stderr, "knock_publish: %s does not hold a 32-byte key as 64 hex digits\n", key_file);
      return 2;
    }
    rc = knock(spa_host, spa_port, (uint32_t)key_id, key, (uint16_t)mqtt_port,
               session.plain ? session.device_id : NULL, session.credential);
    session.key_id = (uint32_t)key_id;
    session.key_file = key_file;
    if (rotate_ms == 0) memset(session.key, 0, sizeof session.key); /* kept only for a rotation */
    if (rc != 0) return 3;
    sleep_ms(wait_ms); /* let the firewall open */
  }
  mosquitto_lib_init();
  rc = publish(mqtt_host, (int)mqtt_port, ca, cert, cert_key, client_id, topic, message, &session, rotate_ms);
  mosquitto_lib_cleanup();
  memset(session.key, 0, sizeof session.key);
  memset(session.credential, 0, sizeof session.credential);
  return rc;
}
