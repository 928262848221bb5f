// Guest side of the NVMe tests (test/vm/nvme.test.ts): runs inside a Linux guest whose own nvme driver drives
// the controller, on the block device it created.
//
//   nvme-guest write DEV SEED      stamp every 4 KiB block of DEV with (SEED, block number, fill) through O_DIRECT
//                                  1 MiB writes, fsync, then read everything back and compare
//   nvme-guest verify DEV SEED     read every block back and compare (persistence across a power cycle)
//   nvme-guest zero DEV OFF LEN    the range reads zeros (after a discard)
//   nvme-guest bench DEV SECS [T]  4 KiB random read QD1/QD16, 128 KiB sequential read/write QD1/QD16 (O_DIRECT,
//                                  libaio-less: QD16 = 16 threads each doing synchronous pread/pwrite), one line
//                                  "bench NAME IOPS MBps" each
// Prints "ok - ..."/"FAIL - ..." lines and "N passed, N failed" (guest-check.h).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "guest-check.h"

#define BLK 4096
#define CHUNK (1 << 20)

static void stamp(uint8_t *b, uint64_t block, uint32_t seed) {
  uint64_t *w = (uint64_t *)b;
  uint64_t x = (block + 1) * 0x9e3779b97f4a7c15ULL ^ seed;
  for (int i = 0; i < BLK / 8; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    w[i] = x;
  }
  w[0] = block;
  w[1] = seed;
}

static int open_dev(const char *dev, int flags, uint64_t *size) {
  int fd = open(dev, flags | O_DIRECT);
  if (fd < 0) {
    check(0, "open %s: %s", dev, strerror(errno));
    return -1;
  }
  if (ioctl(fd, BLKGETSIZE64, size) < 0) {
    check(0, "BLKGETSIZE64: %s", strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

static int verify_all(int fd, uint64_t size, uint32_t seed, const char *what) {
  uint8_t *buf, *want;
  if (posix_memalign((void **)&buf, BLK, CHUNK) || posix_memalign((void **)&want, BLK, BLK)) return -1;
  uint64_t bad = 0, first_bad = UINT64_MAX;
  for (uint64_t off = 0; off < size; off += CHUNK) {
    size_t n = size - off < CHUNK ? size - off : CHUNK;
    ssize_t r = pread(fd, buf, n, off);
    if (r != (ssize_t)n) {
      check(0, "%s: pread at %llu: %zd (%s)", what, (unsigned long long)off, r, strerror(errno));
      return -1;
    }
    for (size_t i = 0; i < n; i += BLK) {
      uint64_t block = (off + i) / BLK;
      stamp(want, block, seed);
      if (memcmp(buf + i, want, BLK)) {
        if (first_bad == UINT64_MAX) first_bad = block;
        bad++;
      }
    }
  }
  check(bad == 0, "%s: %llu blocks of 4 KiB match the pattern (%llu differ, first %lld)", what,
        (unsigned long long)(size / BLK), (unsigned long long)bad,
        first_bad == UINT64_MAX ? -1LL : (long long)first_bad);
  free(buf);
  free(want);
  return bad ? -1 : 0;
}

static int do_write(const char *dev, uint32_t seed) {
  uint64_t size;
  int fd = open_dev(dev, O_RDWR, &size);
  if (fd < 0) return finish();
  uint8_t *buf;
  if (posix_memalign((void **)&buf, BLK, CHUNK)) return 1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int ok = 1;
  for (uint64_t off = 0; off < size && ok; off += CHUNK) {
    size_t n = size - off < CHUNK ? size - off : CHUNK;
    for (size_t i = 0; i < n; i += BLK) stamp(buf + i, (off + i) / BLK, seed);
    ssize_t w = pwrite(fd, buf, n, off);
    if (w != (ssize_t)n) {
      check(0, "pwrite at %llu: %zd (%s)", (unsigned long long)off, w, strerror(errno));
      ok = 0;
    }
  }
  check(ok && fsync(fd) == 0, "wrote the pattern over all %llu bytes and fsync'ed", (unsigned long long)size);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("write %.1f MB/s\n", size / s / 1e6);
  verify_all(fd, size, seed, "read back");
  close(fd);
  return finish();
}

static int do_verify(const char *dev, uint32_t seed) {
  uint64_t size;
  int fd = open_dev(dev, O_RDONLY, &size);
  if (fd < 0) return finish();
  verify_all(fd, size, seed, "after a power cycle");
  close(fd);
  return finish();
}

static int do_zero(const char *dev, uint64_t off, uint64_t len) {
  uint64_t size;
  int fd = open_dev(dev, O_RDONLY, &size);
  if (fd < 0) return finish();
  uint8_t *buf;
  if (posix_memalign((void **)&buf, BLK, CHUNK)) return 1;
  uint64_t nonzero = 0;
  for (uint64_t at = off; at < off + len; at += CHUNK) {
    size_t n = off + len - at < CHUNK ? off + len - at : CHUNK;
    if (pread(fd, buf, n, at) != (ssize_t)n) {
      check(0, "pread at %llu: %s", (unsigned long long)at, strerror(errno));
      return finish();
    }
    for (size_t i = 0; i < n; i++) nonzero += buf[i] != 0;
  }
  check(nonzero == 0, "discarded range [%llu, +%llu) reads zeros (%llu non-zero bytes)", (unsigned long long)off,
        (unsigned long long)len, (unsigned long long)nonzero);
  close(fd);
  return finish();
}

// ---- benchmark ----------------------------------------------------------------------------------------------

struct job {
  int fd;
  uint64_t size;
  size_t bs;
  int write, random;
  unsigned id, qd;
  volatile int *stop;
  uint64_t ops;
  int err;
};

static void *worker(void *arg) {
  struct job *j = arg;
  uint8_t *buf;
  if (posix_memalign((void **)&buf, BLK, j->bs)) return NULL;
  memset(buf, 0x5a, j->bs);
  uint64_t span = j->size / j->bs;
  uint64_t x = 0x12345678u + j->id * 7919u, seq = j->id;
  while (!*j->stop) {
    uint64_t blk;
    if (j->random) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      blk = x % span;
    } else {
      blk = seq % span;
      seq += j->qd;
    }
    ssize_t r = j->write ? pwrite(j->fd, buf, j->bs, blk * j->bs) : pread(j->fd, buf, j->bs, blk * j->bs);
    if (r != (ssize_t)j->bs) {
      j->err = errno ? errno : EIO;
      break;
    }
    j->ops++;
  }
  free(buf);
  return NULL;
}

static void bench_one(const char *dev, const char *name, size_t bs, int write, int random, unsigned qd, double secs) {
  uint64_t size;
  int fd = open_dev(dev, write ? O_RDWR : O_RDONLY, &size);
  if (fd < 0) return;
  volatile int stop = 0;
  struct job jobs[64];
  pthread_t th[64];
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (unsigned i = 0; i < qd; i++) {
    jobs[i] = (struct job){.fd = fd, .size = size, .bs = bs, .write = write, .random = random, .id = i, .qd = qd,
                           .stop = &stop};
    pthread_create(&th[i], NULL, worker, &jobs[i]);
  }
  struct timespec d = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
  nanosleep(&d, NULL);
  stop = 1;
  uint64_t ops = 0;
  int err = 0;
  for (unsigned i = 0; i < qd; i++) {
    pthread_join(th[i], NULL);
    ops += jobs[i].ops;
    if (jobs[i].err) err = jobs[i].err;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  check(err == 0 && ops > 0, "%s: %llu ops", name, (unsigned long long)ops);
  printf("bench %s %.1f %.2f\n", name, ops / s, ops * (double)bs / s / 1e6);
  fflush(stdout);
  close(fd);
}

static const struct {
  const char *name;
  size_t bs;
  int write, random;
  unsigned qd;
} benches[] = {
    {"randread-4k-qd1", 4096, 0, 1, 1},           {"randread-4k-qd16", 4096, 0, 1, 16},
    {"seqread-128k-qd1", 128 << 10, 0, 0, 1},     {"seqread-128k-qd16", 128 << 10, 0, 0, 16},
    {"seqwrite-128k-qd1", 128 << 10, 1, 0, 1},    {"seqwrite-128k-qd16", 128 << 10, 1, 0, 16},
};

/* All tests, or only the one named `only` (the host interleaves devices test by test). */
static int do_bench(const char *dev, double secs, const char *only) {
  for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
    if (!only || !strcmp(only, benches[i].name))
      bench_one(dev, benches[i].name, benches[i].bs, benches[i].write, benches[i].random, benches[i].qd, secs);
  return finish();
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc >= 4 && !strcmp(argv[1], "write")) return do_write(argv[2], (uint32_t)strtoul(argv[3], NULL, 0));
  if (argc >= 4 && !strcmp(argv[1], "verify")) return do_verify(argv[2], (uint32_t)strtoul(argv[3], NULL, 0));
  if (argc >= 5 && !strcmp(argv[1], "zero"))
    return do_zero(argv[2], strtoull(argv[3], NULL, 0), strtoull(argv[4], NULL, 0));
  if (argc >= 4 && !strcmp(argv[1], "bench")) return do_bench(argv[2], atof(argv[3]), argc >= 5 ? argv[4] : NULL);
  fprintf(stderr, "usage: nvme-guest write|verify DEV SEED | zero DEV OFF LEN | bench DEV SECS\n");
  return 2;
}
