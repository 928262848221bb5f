/*
 * A minimal QEMU-like vfio-user client for test/bench/hot-paths.mjs. One connection, blocking I/O, one process:
 * the server under test is the only thing that varies between rows.
 *
 *   client <sock> rtt <region> <offset> <count> <warmup> <n>
 *     VERSION, then <warmup>+<n> REGION_READs of <count> bytes, one outstanding. Prints
 *     {"n":..,"medianUs":..,"p99Us":..,"meanUs":..}.
 *   client <sock> dma <warmup> <pairs> <depth>
 *     VERSION, then DMA_MAP (4 KiB of a 1 MiB memfd sealed like QEMU's guest RAM, the memfd sent with every map
 *     as QEMU does under a vIOMMU)
 *     + DMA_UNMAP of the same page, with up to <depth> pairs in flight (depth 1: QEMU outside a memory
 *     transaction). Prints {"pairs":..,"pairsPerSec":..}.
 *   client <sock> huge <gib>
 *     VERSION, then one DMA_MAP of a <gib> GiB sparse memfd and its DMA_UNMAP. Prints {"mapMs":..,"unmapMs":..}.
 *
 * Against an echo server (any reply to anything) the same loops give the socket floor. An error reply is fatal.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

enum { VERSION = 1, DMA_MAP = 2, DMA_UNMAP = 3, REGION_READ = 9 };
#define FLAG_REPLY 0x1
#define FLAG_ERROR 0x20

static int sock;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "vfio-user-bench-client: %s: %s\n", what, errno ? strerror(errno) : "protocol");
  exit(1);
}

static void hdr(uint8_t *p, uint16_t id, uint16_t cmd, uint32_t size) {
  memset(p, 0, 16);
  memcpy(p, &id, 2);
  memcpy(p + 2, &cmd, 2);
  memcpy(p + 4, &size, 4);
}

static void send_msg(const uint8_t *p, size_t n, int fd) {
  struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int))];
  } c;
  struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
  if (fd >= 0) {
    memset(&c, 0, sizeof c);
    m.msg_control = c.buf;
    m.msg_controllen = sizeof c.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
  }
  ssize_t r;
  do r = sendmsg(sock, &m, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  if (r != (ssize_t)n) die("sendmsg");
}

static void read_full(uint8_t *p, size_t n) {
  while (n) {
    ssize_t r = read(sock, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) die("read");
    p += r;
    n -= (size_t)r;
  }
}

/* Reads one reply; returns its id. */
static uint16_t recv_reply(void) {
  static uint8_t buf[1 << 16];
  read_full(buf, 16);
  uint32_t size, flags;
  memcpy(&size, buf + 4, 4);
  memcpy(&flags, buf + 8, 4);
  if (size < 16 || size > sizeof buf) die("reply size");
  if (size > 16) read_full(buf + 16, size - 16);
  if (flags & FLAG_ERROR) {
    uint32_t e;
    memcpy(&e, buf + 12, 4);
    errno = (int)e;
    die("error reply");
  }
  uint16_t id;
  memcpy(&id, buf, 2);
  return id;
}

static void version(void) {
  static const char json[] = "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576}}";
  uint8_t m[16 + 4 + sizeof json];
  hdr(m, 0, VERSION, sizeof m);
  uint16_t major = 0, minor = 0;
  memcpy(m + 16, &major, 2);
  memcpy(m + 18, &minor, 2);
  memcpy(m + 20, json, sizeof json);
  send_msg(m, sizeof m, -1);
  recv_reply();
}

static void connect_to(const char *path) {
  sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strncpy(sa.sun_path, path, sizeof sa.sun_path - 1);
  if (sock < 0 || connect(sock, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int rtt(uint32_t region, uint64_t offset, uint32_t count, long warm, long n) {
  uint8_t m[32];
  uint64_t *lat = calloc((size_t)n + 1, sizeof *lat);
  if (!lat) die("calloc");
  double sum = 0;
  for (long i = 0; i < warm + n; i++) {
    hdr(m, (uint16_t)i, REGION_READ, sizeof m);
    memcpy(m + 16, &offset, 8);
    memcpy(m + 24, &region, 4);
    memcpy(m + 28, &count, 4);
    uint64_t t0 = now_ns();
    send_msg(m, sizeof m, -1);
    if (recv_reply() != (uint16_t)i) die("reply id");
    if (i >= warm) {
      lat[i - warm] = now_ns() - t0;
      sum += (double)lat[i - warm];
    }
  }
  if (n == 0) {
    printf("{\"n\":0}\n");
    return 0;
  }
  qsort(lat, (size_t)n, sizeof *lat, cmp_u64);
  printf("{\"n\":%ld,\"medianUs\":%.3f,\"p99Us\":%.3f,\"meanUs\":%.3f}\n", n, lat[n / 2] / 1000.0,
         lat[(size_t)((double)n * 0.99)] / 1000.0, sum / (double)n / 1000.0);
  return 0;
}

static void send_map(int memfd, uint16_t id, uint64_t iova, uint64_t off, uint64_t size) {
  uint8_t m[48];
  hdr(m, id, DMA_MAP, sizeof m);
  uint32_t argsz = 32, flags = 3;
  memcpy(m + 16, &argsz, 4);
  memcpy(m + 20, &flags, 4);
  memcpy(m + 24, &off, 8);
  memcpy(m + 32, &iova, 8);
  memcpy(m + 40, &size, 8);
  send_msg(m, sizeof m, memfd);
}

static void send_unmap(uint16_t id, uint64_t iova, uint64_t size) {
  uint8_t m[40];
  hdr(m, id, DMA_UNMAP, sizeof m);
  uint32_t argsz = 24, flags = 0;
  memcpy(m + 16, &argsz, 4);
  memcpy(m + 20, &flags, 4);
  memcpy(m + 24, &iova, 8);
  memcpy(m + 32, &size, 8);
  send_msg(m, sizeof m, -1);
}

/* Slot s maps page (s + 256 * k) of IOVA space, from page (k % 256) of the memfd; ids encode slot and phase. */
static long pairs_run(int memfd, long pairs, int depth) {
  long started = 0, done = 0;
  long round[256] = {0};
  for (int s = 0; s < depth && started < pairs; s++, started++)
    send_map(memfd, (uint16_t)(s * 2), (uint64_t)s << 12, 0, 4096);
  while (done < pairs) {
    uint16_t id = recv_reply();
    int s = id / 2;
    uint64_t iova = ((uint64_t)s + 256 * (uint64_t)(round[s] & 0xff)) << 12;
    if ((id & 1) == 0) {
      send_unmap((uint16_t)(s * 2 + 1), iova, 4096);
    } else {
      done++;
      round[s]++;
      if (started < pairs) {
        started++;
        uint64_t next = ((uint64_t)s + 256 * (uint64_t)(round[s] & 0xff)) << 12;
        send_map(memfd, (uint16_t)(s * 2), next, (uint64_t)(round[s] & 0xff) << 12, 4096);
      }
    }
  }
  return done;
}

static int dma(long warm, long pairs, int depth) {
  if (depth < 1 || depth > 256) die("depth must be 1..256");
  /* Sealed as QEMU's memory-backend-memfd seals guest RAM by default (seal=on): no grow, no shrink, no more seals. */
  int memfd = memfd_create("bench-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0 || ftruncate(memfd, 1 << 20) < 0 ||
      fcntl(memfd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
    die("memfd");
  if (warm) pairs_run(memfd, warm, depth);
  uint64_t t0 = now_ns();
  pairs_run(memfd, pairs, depth);
  double s = (double)(now_ns() - t0) / 1e9;
  printf("{\"pairs\":%ld,\"depth\":%d,\"pairsPerSec\":%.0f}\n", pairs, depth, pairs ? (double)pairs / s : 0.0);
  return 0;
}

static int huge(long gib) {
  int memfd = memfd_create("bench-huge", MFD_CLOEXEC);
  uint64_t size = (uint64_t)gib << 30;
  if (memfd < 0 || ftruncate(memfd, (off_t)size) < 0) die("memfd");
  uint64_t t0 = now_ns();
  send_map(memfd, 1, 1ull << 44, 0, size);
  recv_reply();
  uint64_t t1 = now_ns();
  send_unmap(2, 1ull << 44, size);
  recv_reply();
  uint64_t t2 = now_ns();
  printf("{\"gib\":%ld,\"mapMs\":%.3f,\"unmapMs\":%.3f}\n", gib, (t1 - t0) / 1e6, (t2 - t1) / 1e6);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s <sock> rtt|dma|huge ...\n", argv[0]);
    return 2;
  }
  connect_to(argv[1]);
  version();
  if (!strcmp(argv[2], "rtt") && argc == 8)
    return rtt((uint32_t)atol(argv[3]), (uint64_t)atoll(argv[4]), (uint32_t)atol(argv[5]), atol(argv[6]),
               atol(argv[7]));
  if (!strcmp(argv[2], "dma") && argc == 6) return dma(atol(argv[3]), atol(argv[4]), atoi(argv[5]));
  if (!strcmp(argv[2], "huge") && argc == 4) return huge(atol(argv[3]));
  fprintf(stderr, "bad arguments\n");
  return 2;
}
