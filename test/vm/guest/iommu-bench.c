// iommu-bench: the raw-ioctl baseline for `make bench` (test/bench/iommu-bench.mjs). In the guest, against the
// device bound to vfio-pci, it times 4 KiB map+unmap pairs straight on the kernel, the same pattern the Node
// side sends: VFIO type1 MAP_DMA/UNMAP_DMA of a memfd mapping, and iommufd IOAS_MAP_FILE/IOAS_UNMAP of the memfd
// (when /dev/iommu and the device's cdev exist).
//
//   usage: iommu-bench <BDF> <pairs> [rounds]
//          iommu-bench --fds type1|iommufd <pairs> <rounds> <ioasId> [--serve CMD RES]
//
// The first form sets up its own container/IOAS and memfd, times `rounds` (default 5) rounds of <pairs> after
// 200 warm-up pairs, and prints one line per backend:
// `BENCH {"backend":...,"path":"raw-c-own","pairs":N,"seconds":S,"pairsPerSec":R,"rounds":K,"medianPairsPerSec":M}`
// (R and S of the fastest round: on a shared host load only ever slows a round down; M the median).
//
// The second form is the fair floor the Node bench interleaves with its own rounds (mirror-guest.ts, bench()):
// it maps through the caller's objects, inherited as fd 3 (the type1 container, or the iommufd with the IOAS
// `ioasId`) and fd 4 (the memfd the caller maps: same file, same pages, same IOVAs, same flags and sizes), so
// both sides make exactly the same ioctls on exactly the same kernel objects. It prints
// `RAW {"backend":...,"pairs":N,"secs":[s0,s1,...]}` with each round's time; with --serve it runs one round per
// byte the caller writes to the FIFO CMD and writes that round's time (a double) to the FIFO RES, so the caller
// can interleave its own rounds with the C loop's.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ULL
#define BASE 0x10000000ULL
#define WINDOW 256 // memfd pages cycled through, as the Node side does
#define IOVAS 4096 // IOVA pages cycled through, as the Node side does
#define WARM_UP 200
#define MAX_ROUNDS 64

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int die(const char *what) {
  fprintf(stderr, "iommu-bench: %s: %s\n", what, strerror(errno));
  return 1;
}

/* What one pair maps through: a type1 container (mem: the process mapping of the memfd), or an iommufd IOAS. */
struct target {
  const char *backend;
  int iommufd; /* 1: IOAS_MAP_FILE/IOAS_UNMAP, 0: type1 */
  int fd;      /* the container or the iommufd */
  uint32_t ioas;
  int mfd;
  uint8_t *mem;
};

/* Pair number i: page i % WINDOW of the memfd at IOVA page i % IOVAS (the Node side's pattern). */
static int pair(const struct target *t, long i) {
  uint64_t iova = BASE + (uint64_t)(i % IOVAS) * PAGE;
  uint64_t off = (uint64_t)(i % WINDOW) * PAGE;
  if (t->iommufd) {
    struct iommu_ioas_map_file m = {.size = sizeof(m),
                                    .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
                                             IOMMU_IOAS_MAP_WRITEABLE,
                                    .ioas_id = t->ioas,
                                    .fd = t->mfd,
                                    .start = off,
                                    .length = PAGE,
                                    .iova = iova};
    if (ioctl(t->fd, IOMMU_IOAS_MAP_FILE, &m)) return die("IOAS_MAP_FILE");
    struct iommu_ioas_unmap u = {.size = sizeof(u), .ioas_id = t->ioas, .iova = iova, .length = PAGE};
    if (ioctl(t->fd, IOMMU_IOAS_UNMAP, &u) || u.length != PAGE) return die("IOAS_UNMAP");
    return 0;
  }
  struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m),
                                       .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                                       .vaddr = (uint64_t)(uintptr_t)(t->mem + off),
                                       .iova = iova,
                                       .size = PAGE};
  if (ioctl(t->fd, VFIO_IOMMU_MAP_DMA, &m)) return die("MAP_DMA");
  struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = iova, .size = PAGE};
  if (ioctl(t->fd, VFIO_IOMMU_UNMAP_DMA, &u) || u.size != PAGE) return die("UNMAP_DMA");
  return 0;
}

/* WARM_UP pairs, then `rounds` timed rounds of `pairs`: secs[k] is round k's time. */
static int time_rounds(const struct target *t, long pairs, long rounds, double *secs) {
  long i = 0;
  for (; i < WARM_UP; i++)
    if (pair(t, i)) return 1;
  for (long k = 0; k < rounds; k++) {
    double t0 = now();
    for (long n = 0; n < pairs; n++, i++)
      if (pair(t, i)) return 1;
    secs[k] = now() - t0;
  }
  return 0;
}

static int report(const struct target *t, long pairs, long rounds) {
  double secs[MAX_ROUNDS];
  if (time_rounds(t, pairs, rounds, secs)) return 1;
  qsort(secs, rounds, sizeof *secs, cmp_double);
  printf("BENCH {\"backend\":\"%s\",\"path\":\"raw-c-own\",\"pairs\":%ld,\"seconds\":%.3f,\"pairsPerSec\":%.0f,"
         "\"rounds\":%ld,\"medianPairsPerSec\":%.0f}\n",
         t->backend, pairs, secs[0], (double)pairs / secs[0], rounds, (double)pairs / secs[rounds / 2]);
  fflush(stdout);
  return 0;
}

static int bench_type1(const char *bdf, long pairs, long rounds, int mfd, uint8_t *mem) {
  char path[PATH_MAX], target[PATH_MAX];
  int container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  if (container < 0) return die("open /dev/vfio/vfio");
  snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n <= 0) return die("iommu_group");
  target[n] = 0;
  snprintf(path, sizeof(path), "/dev/vfio/%.32s", strrchr(target, '/') + 1);
  int group = open(path, O_RDWR | O_CLOEXEC);
  if (group < 0) return die("open group");
  if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container)) return die("GROUP_SET_CONTAINER");
  if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)) return die("SET_IOMMU");
  // Same as the server: the device is open while mapping (a device fd keeps the container in use).
  int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
  if (dev < 0) return die("GET_DEVICE_FD");
  struct target t = {.backend = "type1", .fd = container, .mfd = mfd, .mem = mem};
  int rc = report(&t, pairs, rounds);
  close(dev);
  close(group);
  close(container);
  return rc;
}

static int bench_iommufd(const char *bdf, long pairs, long rounds, int mfd) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
  DIR *d = opendir(path);
  if (!d) return 0; // no cdev: type1 only
  struct dirent *e;
  char cdev[300] = "";
  while ((e = readdir(d)))
    if (strncmp(e->d_name, "vfio", 4) == 0) snprintf(cdev, sizeof(cdev), "/dev/vfio/devices/%s", e->d_name);
  closedir(d);
  int ifd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
  if (!cdev[0] || ifd < 0) return 0;
  int dev = open(cdev, O_RDWR | O_CLOEXEC);
  if (dev < 0) return die("open cdev");
  struct vfio_device_bind_iommufd bind = {.argsz = 16, .iommufd = ifd};
  if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind)) return die("BIND_IOMMUFD");
  struct iommu_ioas_alloc alloc = {.size = sizeof(alloc)};
  if (ioctl(ifd, IOMMU_IOAS_ALLOC, &alloc)) return die("IOAS_ALLOC");
  struct vfio_device_attach_iommufd_pt att = {.argsz = sizeof(att), .pt_id = alloc.out_ioas_id};
  if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &att)) return die("ATTACH_PT");
  struct target t = {.backend = "iommufd", .iommufd = 1, .fd = ifd, .ioas = alloc.out_ioas_id, .mfd = mfd};
  int rc = report(&t, pairs, rounds);
  struct vfio_device_detach_iommufd_pt det = {.argsz = sizeof(det)};
  ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &det);
  close(dev);
  close(ifd);
  return rc;
}

/*
 * --fds: the caller's container or iommufd (fd 3) and memfd (fd 4). Without --serve: WARM_UP pairs and `rounds`
 * rounds, each round's time on one line. With --serve CMD RES (two FIFOs): WARM_UP pairs, then one round per byte
 * read from CMD, its time written to RES as a double, until CMD ends: the caller times its own rounds in between.
 */
static int bench_fds(const char *backend, long pairs, long rounds, long ioas, const char *cmd, const char *res) {
  struct target t = {.backend = backend, .iommufd = strcmp(backend, "iommufd") == 0, .fd = 3, .mfd = 4};
  if (!t.iommufd && strcmp(backend, "type1") != 0) {
    fprintf(stderr, "iommu-bench: --fds type1|iommufd\n");
    return 2;
  }
  t.ioas = (uint32_t)ioas;
  struct stat st;
  if (fstat(t.mfd, &st) || st.st_size < (off_t)(WINDOW * PAGE)) return die("fd 4: a memfd of at least 1 MiB");
  if (!t.iommufd) {
    // type1 pins through a process address: this process's own mapping of the same file (same pages).
    t.mem = mmap(NULL, WINDOW * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, t.mfd, 0);
    if (t.mem == MAP_FAILED) return die("mmap fd 4");
  }
  if (cmd) {
    int in = open(cmd, O_RDONLY | O_CLOEXEC), out = in < 0 ? -1 : open(res, O_WRONLY | O_CLOEXEC);
    if (in < 0 || out < 0) return die("open the FIFOs");
    long i = 0;
    for (; i < WARM_UP; i++)
      if (pair(&t, i)) return 1;
    char c;
    while (read(in, &c, 1) == 1) {
      double t0 = now();
      for (long n = 0; n < pairs; n++, i++)
        if (pair(&t, i)) return 1;
      double s = now() - t0;
      if (write(out, &s, sizeof s) != sizeof s) return die("write RES");
    }
    return 0;
  }
  double secs[MAX_ROUNDS];
  if (time_rounds(&t, pairs, rounds, secs)) return 1;
  printf("RAW {\"backend\":\"%s\",\"pairs\":%ld,\"secs\":[", backend, pairs);
  for (long k = 0; k < rounds; k++) printf("%s%.6f", k ? "," : "", secs[k]);
  printf("]}\n");
  fflush(stdout);
  if (t.mem) munmap(t.mem, WINDOW * PAGE);
  return 0;
}

int main(int argc, char **argv) {
  long pairs, rounds = 5;
  if (argc >= 6 && strcmp(argv[1], "--fds") == 0) {
    pairs = strtol(argv[3], NULL, 10);
    rounds = strtol(argv[4], NULL, 10);
    if (pairs < 1 || rounds < 1 || rounds > MAX_ROUNDS) goto usage;
    bool serve = argc == 9 && strcmp(argv[6], "--serve") == 0;
    if (argc != 6 && !serve) goto usage;
    return bench_fds(argv[2], pairs, rounds, strtol(argv[5], NULL, 10), serve ? argv[7] : NULL,
                     serve ? argv[8] : NULL);
  }
  if (argc != 3 && argc != 4) goto usage;
  pairs = strtol(argv[2], NULL, 10);
  if (argc == 4) rounds = strtol(argv[3], NULL, 10);
  if (pairs < 1 || rounds < 1 || rounds > MAX_ROUNDS) goto usage;
  int mfd = memfd_create("bench", MFD_CLOEXEC);
  if (mfd < 0 || ftruncate(mfd, WINDOW * PAGE)) return die("memfd");
  uint8_t *mem = mmap(NULL, WINDOW * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (mem == MAP_FAILED) return die("mmap");
  memset(mem, 0, WINDOW * PAGE);
  if (bench_type1(argv[1], pairs, rounds, mfd, mem)) return 1;
  return bench_iommufd(argv[1], pairs, rounds, mfd);
usage:
  fprintf(stderr,
          "usage: %s <BDF> <pairs> [rounds]\n"
          "       %s --fds type1|iommufd <pairs> <rounds> <ioasId> [--serve CMD RES]\n"
          "  pairs >= 1, 1 <= rounds <= %d\n",
          argv[0], argv[0], MAX_ROUNDS);
  return 2;
}
