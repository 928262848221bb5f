// edu-vfio: drives a QEMU `edu` device (1234:11e8) bound to vfio-pci through the guest's IOMMU, with either the
// VFIO type1 container or iommufd + the VFIO device cdev, and checks that DMA lands only where it is mapped.
//
//   usage: edu-vfio <type1|iommufd> <BDF, e.g. 0000:00:03.0>
//
// Prints one line per check (`ok - ...` / `FAIL - ...`) and finally `N passed, N failed`; exits 0 when nothing
// failed. Generic on purpose: the same binary later drives our own vfio-user edu in a guest (QEMU vfio-user-pci),
// so it finds everything from the BDF and only relies on the edu register set (QEMU's docs/specs/edu.rst).
//
// Build: gcc -static -O2 -isystem <linux-libc-dev 7.x>/usr/include ... (IOMMU_IOAS_MAP_FILE needs >= 6.13 headers).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest-check.h"

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_IDENT 0x00
#define EDU_LIVENESS 0x04
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_CMD_START 0x1
#define EDU_CMD_TO_RAM 0x2
#define EDU_BUF 0x40000ULL
#define EDU_BUF_SIZE 0x1000ULL

#define PAGE 4096UL
#define IOVA_A 0x100000ULL
#define IOVA_B 0x200000ULL
#define IOVA_C 0x300000ULL
#define BUF_SIZE (2 * PAGE)


// The device: its fd and where BAR0 and config space sit in it.
static int devfd = -1;
static uint64_t bar0_off, cfg_off;

static uint32_t rd32(uint64_t reg) {
  uint32_t v = 0xffffffff;
  if (pread(devfd, &v, 4, (off_t)(bar0_off + reg)) != 4) perror("pread bar0");
  return v;
}
static void wr32(uint64_t reg, uint32_t v) {
  if (pwrite(devfd, &v, 4, (off_t)(bar0_off + reg)) != 4) perror("pwrite bar0");
}
static uint64_t rd64(uint64_t reg) {
  uint64_t v = ~0ULL;
  if (pread(devfd, &v, 8, (off_t)(bar0_off + reg)) != 8) perror("pread64 bar0");
  return v;
}
static void wr64(uint64_t reg, uint64_t v) {
  if (pwrite(devfd, &v, 8, (off_t)(bar0_off + reg)) != 8) perror("pwrite64 bar0");
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

// One edu transfer. The edu-side address and count are validated here: an out-of-range edu DMA aborts QEMU.
static int edu_dma(uint64_t src, uint64_t dst, uint64_t count, int to_ram) {
  uint64_t edu = to_ram ? src : dst;
  if (count == 0 || count > EDU_BUF_SIZE || edu < EDU_BUF || edu + count > EDU_BUF + EDU_BUF_SIZE) {
    fprintf(stderr, "edu_dma: refusing out-of-range transfer\n");
    return -1;
  }
  wr64(EDU_DMA_SRC, src);
  wr64(EDU_DMA_DST, dst);
  wr64(EDU_DMA_CNT, count);
  wr64(EDU_DMA_CMD, EDU_CMD_START | (to_ram ? EDU_CMD_TO_RAM : 0));
  // Completion comes from a 100 ms virtual-clock timer: poll every 5 ms, 10 s at most.
  for (int i = 0; i < 2000; i++) {
    if (!(rd64(EDU_DMA_CMD) & EDU_CMD_START)) return 0;
    sleep_ms(5);
  }
  fprintf(stderr, "edu_dma: timeout\n");
  return -1;
}

// RAM(iova src) -> edu buffer -> RAM(iova dst), n bytes.
static int edu_roundtrip(uint64_t src, uint64_t dst, uint64_t n) {
  if (edu_dma(src, EDU_BUF, n, 0)) return -1;
  return edu_dma(EDU_BUF, dst, n, 1);
}

static void fill(uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

static int all_bytes(const uint8_t *p, size_t n, uint8_t v) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) return 0;
  return 1;
}

static void *alloc_buf(void) {
  void *p = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  return p;
}

// Region info for `index` (first pass only: the fixed part is all we need).
static int region_info(int index, struct vfio_region_info *ri) {
  memset(ri, 0, sizeof(*ri));
  ri->argsz = sizeof(*ri);
  ri->index = (uint32_t)index;
  return ioctl(devfd, VFIO_DEVICE_GET_REGION_INFO, ri);
}

// Checks shared by both backends once the device fd is open: identity, BAR0, bus mastering, edu registers.
static int device_checks(void) {
  struct vfio_device_info di = {.argsz = sizeof(di)};
  int r = ioctl(devfd, VFIO_DEVICE_GET_INFO, &di);
  check(r == 0 && (di.flags & VFIO_DEVICE_FLAGS_PCI) && di.num_regions >= 8, "DEVICE_GET_INFO: flags 0x%x, %u regions, %u irqs",
        di.flags, di.num_regions, di.num_irqs);
  if (r) return -1;

  struct vfio_region_info bar0, cfg;
  r = region_info(VFIO_PCI_BAR0_REGION_INDEX, &bar0);
  check(r == 0 && bar0.size >= 0x100 && (bar0.flags & VFIO_REGION_INFO_FLAG_READ) && (bar0.flags & VFIO_REGION_INFO_FLAG_WRITE),
        "BAR0 region: size 0x%llx, flags 0x%x, offset 0x%llx", (unsigned long long)bar0.size, bar0.flags,
        (unsigned long long)bar0.offset);
  if (r) return -1;
  r = region_info(VFIO_PCI_CONFIG_REGION_INDEX, &cfg);
  check(r == 0 && cfg.size >= 256, "config region: size 0x%llx", (unsigned long long)cfg.size);
  if (r) return -1;
  bar0_off = bar0.offset;
  cfg_off = cfg.offset;

  uint16_t ids[2] = {0, 0};
  r = pread(devfd, ids, 4, (off_t)cfg_off) == 4 ? 0 : -1;
  check(r == 0 && ids[0] == EDU_VENDOR && ids[1] == EDU_DEVICE, "config ids %04x:%04x", ids[0], ids[1]);
  if (r || ids[0] != EDU_VENDOR || ids[1] != EDU_DEVICE) return -1;

  // Bus mastering (and memory decoding) before any DMA.
  uint16_t cmd = 0;
  if (pread(devfd, &cmd, 2, (off_t)(cfg_off + 4)) != 2) perror("pread command");
  cmd |= 0x6;
  if (pwrite(devfd, &cmd, 2, (off_t)(cfg_off + 4)) != 2) perror("pwrite command");
  cmd = 0;
  if (pread(devfd, &cmd, 2, (off_t)(cfg_off + 4)) != 2) perror("pread command");
  check((cmd & 0x6) == 0x6, "PCI_COMMAND memory+master enabled (0x%x)", cmd);

  uint32_t ident = rd32(EDU_IDENT);
  check((ident & 0xff) == 0xed, "edu ident 0x%08x", ident);
  wr32(EDU_LIVENESS, 0x12345678);
  uint32_t live = rd32(EDU_LIVENESS);
  check(live == (uint32_t)~0x12345678u, "edu liveness: wrote 0x12345678, read 0x%08x", live);
  return 0;
}

// The DMA checks with a backend-specific map/unmap.
struct backend {
  const char *name;
  int (*map)(void *va, uint64_t iova, uint64_t size);
  int (*unmap)(uint64_t iova, uint64_t size, uint64_t *unmapped);
};

static void dma_checks(const struct backend *be) {
  uint8_t *a = alloc_buf(), *b = alloc_buf();
  fill(a, BUF_SIZE, 0x11);
  memset(b, 0, BUF_SIZE);

  int r = be->map(a, IOVA_A, BUF_SIZE);
  check(r == 0, "%s: map A at iova 0x%llx (%s)", be->name, IOVA_A, r ? strerror(errno) : "0");
  r = be->map(b, IOVA_B, BUF_SIZE);
  check(r == 0, "%s: map B at iova 0x%llx (%s)", be->name, IOVA_B, r ? strerror(errno) : "0");

  r = edu_roundtrip(IOVA_A, IOVA_B, EDU_BUF_SIZE);
  check(r == 0 && memcmp(a, b, EDU_BUF_SIZE) == 0 && all_bytes(b + EDU_BUF_SIZE, BUF_SIZE - EDU_BUF_SIZE, 0),
        "%s: edu DMA A -> edu -> B, 4096 bytes arrived, nothing beyond", be->name);

  // Inside the mappings, across the page boundary of A and at an offset in B.
  memset(b, 0, BUF_SIZE);
  r = edu_roundtrip(IOVA_A + PAGE - 0x80, IOVA_B + 0x800, 0x100);
  check(r == 0 && memcmp(a + PAGE - 0x80, b + 0x800, 0x100) == 0 && all_bytes(b, 0x800, 0),
        "%s: edu DMA at offsets inside the mappings (across a page boundary)", be->name);

  uint64_t unmapped = 0;
  r = be->unmap(IOVA_B, BUF_SIZE, &unmapped);
  check(r == 0 && unmapped == BUF_SIZE, "%s: unmap B (%s, 0x%llx bytes)", be->name, r ? strerror(errno) : "0",
        (unsigned long long)unmapped);

  // A DMA to the unmapped IOVA must not land (the IOMMU faults; edu still "completes").
  memset(b, 0xee, BUF_SIZE);
  r = edu_dma(EDU_BUF, IOVA_B, EDU_BUF_SIZE, 1);
  check(r == 0 && all_bytes(b, BUF_SIZE, 0xee), "%s: DMA to the unmapped IOVA is blocked (B unchanged)", be->name);

  // The still-mapped A keeps working after that fault. The edu buffer still holds the 0x100 bytes of the
  // second transfer: A's pattern from offset PAGE - 0x80.
  uint8_t expect[BUF_SIZE];
  fill(expect, sizeof(expect), 0x11);
  memset(a, 0, BUF_SIZE);
  r = edu_dma(EDU_BUF, IOVA_A, 0x100, 1);
  check(r == 0 && memcmp(a, expect + PAGE - 0x80, 0x100) == 0 && all_bytes(a + 0x100, BUF_SIZE - 0x100, 0),
        "%s: DMA to the still-mapped A works after the fault", be->name);

  r = be->unmap(IOVA_A, BUF_SIZE, &unmapped);
  check(r == 0 && unmapped == BUF_SIZE, "%s: unmap A", be->name);
  munmap(a, BUF_SIZE);
  munmap(b, BUF_SIZE);
}

// ---------------------------------------------------------------------------------------------------------------
// type1

static int container = -1;

static int t1_map(void *va, uint64_t iova, uint64_t size) {
  struct vfio_iommu_type1_dma_map m = {
      .argsz = sizeof(m),
      .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
      .vaddr = (uint64_t)(uintptr_t)va,
      .iova = iova,
      .size = size,
  };
  return ioctl(container, VFIO_IOMMU_MAP_DMA, &m);
}

static int t1_unmap(uint64_t iova, uint64_t size, uint64_t *unmapped) {
  struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof(u), .iova = iova, .size = size};
  int r = ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u);
  *unmapped = r == 0 ? u.size : 0;
  return r;
}

static int run_type1(const char *bdf) {
  char path[PATH_MAX], target[PATH_MAX];
  container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  check(container >= 0, "open /dev/vfio/vfio (%s)", container < 0 ? strerror(errno) : "ok");
  if (container < 0) return -1;
  int v = ioctl(container, VFIO_GET_API_VERSION);
  check(v == VFIO_API_VERSION, "VFIO_GET_API_VERSION = %d", v);
  v = ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU);
  check(v == 1, "TYPE1v2 extension = %d", v);

  snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/iommu_group", bdf);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  check(n > 0, "iommu group link of %s", bdf);
  if (n <= 0) return -1;
  target[n] = 0;
  const char *grp = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
  snprintf(path, sizeof(path), "/dev/vfio/%.32s", grp);
  int group = open(path, O_RDWR | O_CLOEXEC);
  check(group >= 0, "open %s (%s)", path, group < 0 ? strerror(errno) : "ok");
  if (group < 0) return -1;
  struct vfio_group_status st = {.argsz = sizeof(st)};
  int r = ioctl(group, VFIO_GROUP_GET_STATUS, &st);
  check(r == 0 && (st.flags & VFIO_GROUP_FLAGS_VIABLE), "group %s viable (flags 0x%x)", grp, st.flags);
  r = ioctl(group, VFIO_GROUP_SET_CONTAINER, &container);
  check(r == 0, "GROUP_SET_CONTAINER (%s)", r ? strerror(errno) : "ok");
  r = ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
  check(r == 0, "SET_IOMMU TYPE1v2 (%s)", r ? strerror(errno) : "ok");
  if (r) return -1;
  devfd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
  check(devfd >= 0, "GROUP_GET_DEVICE_FD %s (%s)", bdf, devfd < 0 ? strerror(errno) : "ok");
  if (devfd < 0 || device_checks()) return -1;

  const struct backend be = {"type1", t1_map, t1_unmap};
  dma_checks(&be);
  close(devfd);
  close(group);
  close(container);
  return 0;
}

// ---------------------------------------------------------------------------------------------------------------
// iommufd

static int iommufd = -1;
static uint32_t ioas_id;

static int ifd_map(void *va, uint64_t iova, uint64_t size) {
  struct iommu_ioas_map m = {
      .size = sizeof(m),
      .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      .ioas_id = ioas_id,
      .user_va = (uint64_t)(uintptr_t)va,
      .length = size,
      .iova = iova,
  };
  return ioctl(iommufd, IOMMU_IOAS_MAP, &m);
}

static int ifd_unmap(uint64_t iova, uint64_t size, uint64_t *unmapped) {
  struct iommu_ioas_unmap u = {.size = sizeof(u), .ioas_id = ioas_id, .iova = iova, .length = size};
  int r = ioctl(iommufd, IOMMU_IOAS_UNMAP, &u);
  *unmapped = r == 0 ? u.length : 0;
  return r;
}

static int run_iommufd(const char *bdf) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
  char cdev[64] = "";
  FILE *ls = NULL;
  {
    // The cdev name (vfioN) is the only entry of the vfio-dev directory.
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "ls %s", path);
    ls = popen(cmd, "r");
    if (ls && fgets(cdev, sizeof(cdev), ls)) cdev[strcspn(cdev, "\n")] = 0;
    if (ls) pclose(ls);
  }
  check(strncmp(cdev, "vfio", 4) == 0, "VFIO cdev of %s: %s", bdf, cdev[0] ? cdev : "(none)");
  if (strncmp(cdev, "vfio", 4) != 0) return -1;
  snprintf(path, sizeof(path), "/dev/vfio/devices/%s", cdev);
  devfd = open(path, O_RDWR | O_CLOEXEC);
  check(devfd >= 0, "open %s (%s)", path, devfd < 0 ? strerror(errno) : "ok");
  iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
  check(iommufd >= 0, "open /dev/iommu (%s)", iommufd < 0 ? strerror(errno) : "ok");
  if (devfd < 0 || iommufd < 0) return -1;

  // argsz up to out_devid: accepted by every kernel with the cdev (6.6+), newer ones added a token field.
  struct vfio_device_bind_iommufd bind = {.argsz = 16, .iommufd = iommufd};
  int r = ioctl(devfd, VFIO_DEVICE_BIND_IOMMUFD, &bind);
  check(r == 0, "VFIO_DEVICE_BIND_IOMMUFD (%s), devid %u", r ? strerror(errno) : "ok", bind.out_devid);
  struct iommu_ioas_alloc alloc = {.size = sizeof(alloc)};
  r |= ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc);
  ioas_id = alloc.out_ioas_id;
  check(r == 0, "IOMMU_IOAS_ALLOC: ioas %u", ioas_id);
  struct vfio_device_attach_iommufd_pt att = {.argsz = sizeof(att), .pt_id = ioas_id};
  r |= ioctl(devfd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &att);
  check(r == 0, "VFIO_DEVICE_ATTACH_IOMMUFD_PT: hwpt %u (%s)", att.pt_id, r ? strerror(errno) : "ok");
  if (r || device_checks()) return -1;

  const struct backend be = {"iommufd", ifd_map, ifd_unmap};
  dma_checks(&be);

  // IOAS_MAP_FILE: the (fd, offset, length, iova) tuple a vfio-user DMA_MAP carries, from a memfd at an offset.
  int mfd = memfd_create("edu-vfio", MFD_CLOEXEC);
  if (mfd < 0 || ftruncate(mfd, 4 * PAGE)) perror("memfd");
  uint8_t *mem = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
  uint8_t *a = alloc_buf();
  fill(a, BUF_SIZE, 0x33);
  memset(mem, 0, 4 * PAGE);
  struct iommu_ioas_map_file mf = {
      .size = sizeof(mf),
      .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
      .ioas_id = ioas_id,
      .fd = mfd,
      .start = 2 * PAGE,
      .length = 2 * PAGE,
      .iova = IOVA_C,
  };
  r = ioctl(iommufd, IOMMU_IOAS_MAP_FILE, &mf);
  check(r == 0, "iommufd: IOAS_MAP_FILE memfd offset 0x2000 at iova 0x%llx (%s)", IOVA_C, r ? strerror(errno) : "ok");
  r |= ifd_map(a, IOVA_A, BUF_SIZE);
  r |= edu_roundtrip(IOVA_A, IOVA_C + 0x100, 0x400);
  check(r == 0 && mem != MAP_FAILED && memcmp(mem + 2 * PAGE + 0x100, a, 0x400) == 0 && all_bytes(mem, 2 * PAGE + 0x100, 0),
        "iommufd: edu DMA into the memfd mapping landed at file offset 0x2100");
  struct iommu_ioas_unmap all = {.size = sizeof(all), .ioas_id = ioas_id, .iova = 0, .length = UINT64_MAX};
  r = ioctl(iommufd, IOMMU_IOAS_UNMAP, &all);
  check(r == 0 && all.length == 2 * BUF_SIZE, "iommufd: unmap all (0x%llx bytes)", (unsigned long long)all.length);
  memset(mem, 0, 4 * PAGE);
  r = edu_dma(EDU_BUF, IOVA_C, 0x400, 1);
  check(r == 0 && all_bytes(mem, 4 * PAGE, 0), "iommufd: DMA after unmap-all is blocked (memfd unchanged)");

  struct vfio_device_detach_iommufd_pt det = {.argsz = sizeof(det)};
  r = ioctl(devfd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &det);
  check(r == 0, "VFIO_DEVICE_DETACH_IOMMUFD_PT (%s)", r ? strerror(errno) : "ok");
  munmap(a, BUF_SIZE);
  if (mem != MAP_FAILED) munmap(mem, 4 * PAGE);
  close(mfd);
  close(devfd);
  close(iommufd);
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3 || (strcmp(argv[1], "type1") && strcmp(argv[1], "iommufd"))) {
    fprintf(stderr, "usage: %s <type1|iommufd> <BDF>\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("edu-vfio: %s on %s\n", argv[1], argv[2]);
  int r = strcmp(argv[1], "type1") == 0 ? run_type1(argv[2]) : run_iommufd(argv[2]);
  if (r) check(0, "%s setup aborted; later checks skipped", argv[1]);
  return finish();
}
