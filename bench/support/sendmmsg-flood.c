/*
 * The fastest sender the machine allows, for bench/support/flood-at-limit.ts (compiled at bench time with gcc into
 * a temporary folder, one process per core, run inside the client network namespace):
 *   sendmmsg-flood PACKETFILE SRC_IP DST_IP PORT SECONDS
 * PACKETFILE holds length-prefixed datagrams (u16 big-endian length, then the bytes), as udp-blaster.ts reads them;
 * they are sent in order, cycling, 64 per sendmmsg(2) call on one connected socket bound to SRC_IP (port 0), for
 * SECONDS. Prints one JSON line: {"sent":N,"seconds":S,"errors":E}. IPv4 only; sends nothing but the file's bytes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_PACKETS 4096

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s PACKETFILE SRC_IP DST_IP PORT SECONDS\n", argv[0]);
    return 2;
  }
  FILE *file = fopen(argv[1], "rb");
  if (file == NULL) { perror("PACKETFILE"); return 2; }
  static unsigned char data[1 << 22];
  size_t size = fread(data, 1, sizeof data, file);
  fclose(file);
  static struct iovec packets[MAX_PACKETS];
  int count = 0;
  for (size_t at = 0; at + 2 <= size && count < MAX_PACKETS;) {
    size_t length = ((size_t)data[at] << 8) | data[at + 1];
    if (at + 2 + length > size) break;
    packets[count].iov_base = data + at + 2;
    packets[count].iov_len = length;
    count++;
    at += 2 + length;
  }
  if (count == 0) { fprintf(stderr, "PACKETFILE holds no datagram\n"); return 2; }

  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) { perror("socket"); return 1; }
  struct sockaddr_in src = { .sin_family = AF_INET, .sin_port = 0 };
  struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[4])) };
  if (inet_pton(AF_INET, argv[2], &src.sin_addr) != 1 || inet_pton(AF_INET, argv[3], &dst.sin_addr) != 1) {
    fprintf(stderr, "SRC_IP and DST_IP must be IPv4 addresses\n");
    return 2;
  }
  if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { perror("bind"); return 1; }
  if (connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0) { perror("connect"); return 1; }

  double seconds = atof(argv[5]);
  struct mmsghdr messages[BATCH];
  unsigned long long sent = 0, errors = 0;
  int next = 0;
  double started = now_seconds(), elapsed = 0;
  while ((elapsed = now_seconds() - started) < seconds) {
    for (int i = 0; i < BATCH; i++) {
      memset(&messages[i], 0, sizeof messages[i]);
      messages[i].msg_hdr.msg_iov = &packets[next];
      messages[i].msg_hdr.msg_iovlen = 1;
      next = (next + 1) % count;
    }
    int done = sendmmsg(fd, messages, BATCH, 0);
    if (done < 0) errors++;
    else sent += (unsigned long long)done;
  }
  close(fd);
  printf("{\"sent\":%llu,\"seconds\":%.3f,\"errors\":%llu}\n", sent, elapsed, errors);
  return 0;
}
