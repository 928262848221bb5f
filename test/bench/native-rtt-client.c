/*
 * Round-trip client for test/bench/native-rtt.mjs: connects to a UNIX socket, sends a 24-byte vfio-user-shaped
 * request (16-byte header + 8 bytes), waits for the 16-byte reply, one outstanding. Prints one JSON line:
 * {"n":..,"medianUs":..,"p99Us":..,"meanUs":..}.
 * Usage: native-rtt-client <path> <warmup> <iterations>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int read_full(int fd, uint8_t *p, size_t n) {
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int rtt(int fd, uint16_t id) {
  uint8_t req[24] = {0}, rep[16];
  memcpy(req, &id, 2);
  uint16_t cmd = 9; /* REGION_READ-like */
  memcpy(req + 2, &cmd, 2);
  uint32_t size = sizeof req;
  memcpy(req + 4, &size, 4);
  if (write(fd, req, sizeof req) != (ssize_t)sizeof req) return -1;
  if (read_full(fd, rep, sizeof rep) < 0) return -1;
  uint16_t rid;
  memcpy(&rid, rep, 2);
  return rid == id ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s <path> <warmup> <iterations>\n", argv[0]);
    return 2;
  }
  long warm = atol(argv[2]), n = atol(argv[3]);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, argv[1], sizeof sa.sun_path - 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    perror("connect");
    return 1;
  }
  uint64_t *lat = calloc((size_t)n, sizeof *lat);
  if (!lat) return 1;
  for (long i = 0; i < warm; i++)
    if (rtt(fd, (uint16_t)i) < 0) {
      fprintf(stderr, "warm-up round trip %ld failed\n", i);
      return 1;
    }
  double sum = 0;
  for (long i = 0; i < n; i++) {
    uint64_t t0 = now_ns();
    if (rtt(fd, (uint16_t)i) < 0) {
      fprintf(stderr, "round trip %ld failed\n", i);
      return 1;
    }
    lat[i] = now_ns() - t0;
    sum += (double)lat[i];
  }
  close(fd);
  qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
  printf("{\"n\":%ld,\"medianUs\":%.3f,\"p99Us\":%.3f,\"meanUs\":%.3f}\n", n, lat[n / 2] / 1000.0,
         lat[(size_t)((double)n * 0.99)] / 1000.0, sum / (double)n / 1000.0);
  return 0;
}
