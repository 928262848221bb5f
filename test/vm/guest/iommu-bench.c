// iommu-bench: the raw-ioctl baseline for `make bench` (test/bench/iommu-bench.mjs). In the guest, against the
// device bound to vfio-pci, it times 4 KiB map+unmap pairs straight on the kernel, the same pattern the Node
// side sends through our vfio-user server: VFIO type1 MAP_DMA/UNMAP_DMA of a memfd mapping, and iommufd
// IOAS_MAP_FILE/IOAS_UNMAP of the memfd (when /dev/iommu and the device's cdev exist).
//
//   usage: iommu-bench <BDF> <pairs> [rounds]
//
// Times `rounds` (default 5) rounds of <pairs> after 200 warm-up pairs and prints one
// `BENCH {"backend":...,"path":"raw-c","pairs":N,"seconds":S,"pairsPerSec":R,"rounds":K,"medianPairsPerSec":M}`
// line per backend: R and S of the fastest round (on a shared host, load only ever slows a round down), M the
// median.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#define PAGE 4096ULL
#define BASE 0x10000000ULL
#define WINDOW 256 // memfd pages cycled through, as the Node side does
#define MAX_ROUNDS 64

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rounds = 5;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* secs[rounds]: the time of each round (sorted here). */
static void report(const char *backend, long pairs, double *secs) {
  qsort(secs, rounds, sizeof *secs, cmp_double);
  printf("BENCH {\"backend\":\"%s\",\"path\":\"raw-c\",\"pairs\":%ld,\"seconds\":%.3f,\"pairsPerSec\":%.0f,"
         "\"rounds\":%ld,\"medianPairsPerSec\":%.0f}\n",
         backend, pairs, secs[0], (double)pairs / secs[0], rounds, (double)pairs / secs[rounds / 2]);
  fflush(stdout);
}

static int die(const char *what) {
  fprintf(stderr, "iommu-bench: %s: %s\n", what, strerror(errno));
  return 1;
}

static int bench_type1(const char *bdf, long pairs, int mfd, uint8_t *mem) {
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
  (void)mfd;
  double t = 0, secs[MAX_ROUNDS];
  long total = pairs * rounds;
  for (long i = -200; i < total; i++) {
    if (i >= 0 && i % pairs == 0) {
      if (i) secs[i / pairs - 1] = now() - t;
      t = now();
    }
    uint64_t iova = BASE + (uint64_t)((i + 200) % 4096) * PAGE;
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m),
                                         .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                                         .vaddr = (uint64_t)(uintptr_t)(mem + ((i + 200) % WINDOW) * PAGE),
                                         .iova = iova,
                                         .size = PAGE};
    if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m)) return die("MAP_DMA");
    struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = iova, .size = PAGE};
    if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u) || u.size != PAGE) return die("UNMAP_DMA");
  }
  secs[rounds - 1] = now() - t;
  report("type1", pairs, secs);
  close(dev);
  close(group);
  close(container);
  return 0;
}

static int bench_iommufd(const char *bdf, long pairs, int mfd) {
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
  double t = 0, secs[MAX_ROUNDS];
  long total = pairs * rounds;
  for (long i = -200; i < total; i++) {
    if (i >= 0 && i % pairs == 0) {
      if (i) secs[i / pairs - 1] = now() - t;
      t = now();
    }
    uint64_t iova = BASE + (uint64_t)((i + 200) % 4096) * PAGE;
    struct iommu_ioas_map_file m = {.size = sizeof(m),
                                    .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
                                    .ioas_id = alloc.out_ioas_id,
                                    .fd = mfd,
                                    .start = (uint64_t)((i + 200) % WINDOW) * PAGE,
                                    .length = PAGE,
                                    .iova = iova};
    if (ioctl(ifd, IOMMU_IOAS_MAP_FILE, &m)) return die("IOAS_MAP_FILE");
    struct iommu_ioas_unmap u = {.size = sizeof(u), .ioas_id = alloc.out_ioas_id, .iova = iova, .length = PAGE};
    if (ioctl(ifd, IOMMU_IOAS_UNMAP, &u)) return die("IOAS_UNMAP");
  }
  secs[rounds - 1] = now() - t;
  report("iommufd", pairs, secs);
  struct vfio_device_detach_iommufd_pt det = {.argsz = sizeof(det)};
  ioctl(dev, VFIO_DEVICE_DETACH_IOMMUFD_PT, &det);
  close(dev);
  close(ifd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s <BDF> <pairs> [rounds]\n", argv[0]);
    return 2;
  }
  long pairs = strtol(argv[2], NULL, 10);
  if (argc == 4) rounds = strtol(argv[3], NULL, 10);
  if (pairs < 1 || rounds < 1 || rounds > MAX_ROUNDS) {
    fprintf(stderr, "iommu-bench: pairs >= 1 and 1 <= rounds <= %d\n", MAX_ROUNDS);
    return 2;
  }
  int mfd = memfd_create("bench", MFD_CLOEXEC);
  if (mfd < 0 || ftruncate(mfd, WINDOW * PAGE)) return die("memfd");
  uint8_t *mem = mmap(NULL, WINDOW * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  if (mem == MAP_FAILED) return die("mmap");
  memset(mem, 0, WINDOW * PAGE);
  if (bench_type1(argv[1], pairs, mfd, mem)) return 1;
  return bench_iommufd(argv[1], pairs, mfd);
}
