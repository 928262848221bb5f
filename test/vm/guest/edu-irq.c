// edu-irq: what a Linux guest sees of an edu device (1234:11e8), and whether its interrupts arrive. Written for our
// vfio-user edu behind QEMU's vfio-user-pci (test/vm/qemu-linux.test.ts) but generic: everything is found from
// the BDF.
//
//   usage: edu-irq <BDF> <rounds> [slow_ms]
//
// 3. edu DMA through the guest's IOMMU before and after the interrupts (RAM -> edu -> RAM, bytes compared).
//
// With slow_ms, the second half of the INTx rounds waits slow_ms before each raise: a window in which the host
// can hand the device over to another process while interrupts keep flowing (test/vm/qemu-linux.test.ts).
//
// 1. sysfs: vendor/device/class/revision/subsystem ids, `resource` (BAR0 = 1 MiB of 32-bit memory, no other BAR,
//    no ROM), the raw `config` file (ids, interrupt pin A, an MSI capability in the list).
// 2. Interrupts through the guest's vfio-pci (the device must already be bound to it; type1 container): for INTx
//    and then MSI, an eventfd is attached with VFIO_DEVICE_SET_IRQS, edu's interrupt-raise register (0x60) is
//    written `rounds` times, each interrupt is awaited on the eventfd and acknowledged (0x64; INTx is then
//    unmasked, as vfio-pci auto-masks it), and the guest kernel's own count in /proc/interrupts
//    (`vfio-intx(BDF)`, `vfio-msi[0](BDF)`) must have grown by exactly `rounds`.
//
// Prints `ok - ...` / `FAIL - ...` per check, `irq <kind> <n> <microseconds>` per interrupt kind (mean latency
// from the raise to the eventfd), and finally `N passed, N failed`; exits 0 when nothing failed.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "guest-check.h"

#define EDU_IDENT 0x00
#define EDU_IRQ_STATUS 0x24
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_BUF 0x40000u
#define DMA_IOVA_A 0x100000u
#define DMA_IOVA_B 0x200000u
#define DMA_SIZE 0x1000u


static char dev_dir[256];

// Reads a sysfs attribute of the device as a number (0x... or decimal); -1 when unreadable.
static long long sysfs_num(const char *attr) {
  char path[PATH_MAX + 64], buf[64] = "";
  snprintf(path, sizeof(path), "%s/%s", dev_dir, attr);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  if (!fgets(buf, sizeof(buf), f)) buf[0] = 0;
  fclose(f);
  return buf[0] ? strtoll(buf, NULL, 0) : -1;
}

static void sysfs_checks(void) {
  check(sysfs_num("vendor") == 0x1234 && sysfs_num("device") == 0x11e8, "sysfs vendor:device %04llx:%04llx",
        sysfs_num("vendor"), sysfs_num("device"));
  check(sysfs_num("class") == 0x00ff00, "sysfs class 0x%06llx", sysfs_num("class"));
  check(sysfs_num("revision") == 0x10, "sysfs revision 0x%02llx", sysfs_num("revision"));
  check(sysfs_num("subsystem_vendor") == 0x1af4 && sysfs_num("subsystem_device") == 0x1100,
        "sysfs subsystem %04llx:%04llx", sysfs_num("subsystem_vendor"), sysfs_num("subsystem_device"));

  // resource: one line per BAR 0-5, then the ROM and the bridge windows: "start end flags" in hex.
  char path[PATH_MAX + 64];
  snprintf(path, sizeof(path), "%s/resource", dev_dir);
  FILE *f = fopen(path, "r");
  check(f != NULL, "open %s", path);
  if (!f) return;
  unsigned long long start[7] = {0}, end[7] = {0}, flags[7] = {0};
  int n = 0;
  while (n < 7 && fscanf(f, "%llx %llx %llx", &start[n], &end[n], &flags[n]) == 3) n++;
  fclose(f);
  check(n == 7, "resource has the 6 BARs and the ROM (%d lines read)", n);
  unsigned long long size0 = end[0] ? end[0] - start[0] + 1 : 0;
  // IORESOURCE_MEM 0x200; IORESOURCE_MEM_64 0x100000 and IORESOURCE_PREFETCH 0x2000 must be clear.
  check(size0 == 0x100000 && (flags[0] & 0x200) && !(flags[0] & 0x100000) && !(flags[0] & 0x2000),
        "BAR0: 0x%llx-0x%llx, size 0x%llx, flags 0x%llx (1 MiB, 32-bit memory, non-prefetchable)", start[0], end[0],
        size0, flags[0]);
  int others = 0;
  for (int i = 1; i < 7; i++) others += end[i] != 0;
  check(others == 0, "no other BAR and no ROM (%d non-empty)", others);

  // The raw config space as the kernel reads it (through QEMU, from our device).
  unsigned char cfg[256];
  snprintf(path, sizeof(path), "%s/config", dev_dir);
  int fd = open(path, O_RDONLY);
  ssize_t got = fd >= 0 ? pread(fd, cfg, sizeof(cfg), 0) : -1;
  if (fd >= 0) close(fd);
  check(got == 256, "config: read %zd bytes", got);
  if (got != 256) return;
  check(cfg[0] == 0x34 && cfg[1] == 0x12 && cfg[2] == 0xe8 && cfg[3] == 0x11, "config ids");
  check(cfg[0x3d] == 1, "config interrupt pin %u (INTA)", cfg[0x3d]);
  int msi = 0, hops = 0;
  if (cfg[6] & 0x10) {
    for (unsigned p = cfg[0x34] & 0xfc; p && hops < 48; p = cfg[p + 1] & 0xfc, hops++) {
      if (cfg[p] == 0x05) msi = (int)p;
    }
  }
  check(msi != 0, "MSI capability in the list (at 0x%x)", msi);
}

// ---------------------------------------------------------------------------------------------------------------
// vfio-pci in the guest

static int container = -1, group = -1, devfd = -1;
static uint64_t bar0_off, cfg_off;

static uint32_t rd32(uint64_t reg) {
  uint32_t v = 0xffffffff;
  if (pread(devfd, &v, 4, (off_t)(bar0_off + reg)) != 4) perror("pread bar0");
  return v;
}
static void wr32(uint64_t reg, uint32_t v) {
  if (pwrite(devfd, &v, 4, (off_t)(bar0_off + reg)) != 4) perror("pwrite bar0");
}

static int vfio_open(const char *bdf) {
  char path[PATH_MAX], target[PATH_MAX];
  container = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
  snprintf(path, sizeof(path), "%s/iommu_group", dev_dir);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (container < 0 || n <= 0) {
    check(0, "vfio container and iommu group (%s)", strerror(errno));
    return -1;
  }
  target[n] = 0;
  const char *grp = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
  snprintf(path, sizeof(path), "/dev/vfio/%.32s", grp);
  group = open(path, O_RDWR | O_CLOEXEC);
  int r = group < 0 ? -1 : ioctl(group, VFIO_GROUP_SET_CONTAINER, &container);
  if (r == 0) r = ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
  if (r == 0) devfd = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
  check(r == 0 && devfd >= 0, "vfio type1: group %s, device fd (%s)", grp, devfd < 0 ? strerror(errno) : "ok");
  if (devfd < 0) return -1;

  struct vfio_region_info ri = {.argsz = sizeof(ri), .index = VFIO_PCI_BAR0_REGION_INDEX};
  r = ioctl(devfd, VFIO_DEVICE_GET_REGION_INFO, &ri);
  bar0_off = ri.offset;
  check(r == 0 && ri.size == 0x100000, "vfio BAR0 region: size 0x%llx", (unsigned long long)ri.size);
  struct vfio_region_info ci = {.argsz = sizeof(ci), .index = VFIO_PCI_CONFIG_REGION_INDEX};
  r |= ioctl(devfd, VFIO_DEVICE_GET_REGION_INFO, &ci);
  cfg_off = ci.offset;
  uint16_t cmd = 0;
  if (pread(devfd, &cmd, 2, (off_t)(cfg_off + 4)) != 2) r = -1;
  cmd |= 0x6; // memory decoding, and bus mastering: an MSI is a memory write by the device
  if (pwrite(devfd, &cmd, 2, (off_t)(cfg_off + 4)) != 2) r = -1;
  uint32_t ident = rd32(EDU_IDENT);
  check(r == 0 && ident == 0x010000ed, "edu ident over vfio: 0x%08x", ident);
  return r;
}

static int set_irq(unsigned index, uint32_t flags, int fd) {
  char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
  struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
  s->argsz = sizeof(struct vfio_irq_set) + ((flags & VFIO_IRQ_SET_DATA_EVENTFD) ? sizeof(int) : 0);
  s->flags = flags;
  s->index = index;
  s->start = 0;
  s->count = (flags & VFIO_IRQ_SET_DATA_EVENTFD) || (flags & VFIO_IRQ_SET_ACTION_UNMASK) ? 1 : 0;
  if (flags & VFIO_IRQ_SET_DATA_EVENTFD) memcpy(s->data, &fd, sizeof(int));
  return ioctl(devfd, VFIO_DEVICE_SET_IRQS, s);
}

// Sum of the per-CPU counts of the /proc/interrupts line whose name is `name`; -1 when there is none.
static long long proc_interrupts(const char *name) {
  FILE *f = fopen("/proc/interrupts", "r");
  if (!f) return -1;
  char line[1024];
  long long total = -1;
  int cpus = 0;
  if (fgets(line, sizeof(line), f)) {
    for (char *t = strtok(line, " \t\n"); t; t = strtok(NULL, " \t\n")) cpus++;
  }
  while (fgets(line, sizeof(line), f)) {
    if (!strstr(line, name)) continue;
    char *p = strchr(line, ':');
    if (!p) continue;
    p++;
    total = 0;
    for (int i = 0; i < cpus; i++) total += strtoll(p, &p, 10);
  }
  fclose(f);
  return total;
}

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

// edu DMA through the guest's IOMMU: two 4 KiB buffers mapped once with VFIO_IOMMU_MAP_DMA (QEMU's vIOMMU turns
// that into DMA_MAPs to the vfio-user server), then RAM(A) -> edu -> RAM(B) with a pattern seeded by `seed`. The
// edu DMA registers take 32-bit writes (the IOVAs are below 4 GiB).
static uint8_t *dma_a, *dma_b;
static void dma_check(const char *when, uint8_t seed) {
  if (!dma_a) {
    dma_a = mmap(NULL, DMA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    dma_b = mmap(NULL, DMA_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    struct vfio_iommu_type1_dma_map m = {.argsz = sizeof(m),
                                         .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                                         .vaddr = (uint64_t)(uintptr_t)dma_a,
                                         .iova = DMA_IOVA_A,
                                         .size = DMA_SIZE};
    int r = dma_a == MAP_FAILED || dma_b == MAP_FAILED ? -1 : ioctl(container, VFIO_IOMMU_MAP_DMA, &m);
    m.vaddr = (uint64_t)(uintptr_t)dma_b;
    m.iova = DMA_IOVA_B;
    if (r == 0) r = ioctl(container, VFIO_IOMMU_MAP_DMA, &m);
    check(r == 0, "DMA buffers mapped in the guest IOMMU (%s)", r ? strerror(errno) : "ok");
    if (r) {
      dma_a = NULL;
      return;
    }
  }
  for (unsigned i = 0; i < DMA_SIZE; i++) dma_a[i] = (uint8_t)(seed + i * 7 + (i >> 8));
  memset(dma_b, 0, DMA_SIZE);
  int ok = 1;
  const uint32_t steps[2][4] = {{DMA_IOVA_A, EDU_BUF, DMA_SIZE, 1}, {EDU_BUF, DMA_IOVA_B, DMA_SIZE, 3}};
  for (int s = 0; s < 2 && ok; s++) {
    wr32(EDU_DMA_SRC, steps[s][0]);
    wr32(EDU_DMA_DST, steps[s][1]);
    wr32(EDU_DMA_CNT, steps[s][2]);
    wr32(EDU_DMA_CMD, steps[s][3]);
    int i = 0;
    while ((rd32(EDU_DMA_CMD) & 1) && i++ < 2000) {
      struct timespec ts = {0, 5000000L};
      nanosleep(&ts, NULL);
    }
    if (rd32(EDU_DMA_CMD) & 1) ok = 0;
  }
  check(ok && memcmp(dma_a, dma_b, DMA_SIZE) == 0, "edu DMA %s: 4096 bytes RAM -> edu -> RAM through the IOMMU", when);
}

// `rounds` interrupts of IRQ index `index` (VFIO_PCI_INTX_IRQ_INDEX or _MSI_), counted by the eventfd and by
// /proc/interrupts under `name`.
static void irq_rounds(const char *kind, unsigned index, const char *name, int rounds, int slow_ms) {
  struct vfio_irq_info info = {.argsz = sizeof(info), .index = index};
  int r = ioctl(devfd, VFIO_DEVICE_GET_IRQ_INFO, &info);
  check(r == 0 && info.count >= 1 && (info.flags & VFIO_IRQ_INFO_EVENTFD), "%s: IRQ info count %u, flags 0x%x", kind,
        info.count, info.flags);
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  r = set_irq(index, VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER, efd);
  check(r == 0, "%s: eventfd attached (%s)", kind, r ? strerror(errno) : "ok");
  if (r) {
    close(efd);
    return;
  }
  long long before = proc_interrupts(name);
  check(before >= 0, "%s: /proc/interrupts has '%s'", kind, name);
  int got = 0, spurious = 0;
  long long total_us = 0;
  for (int i = 0; i < rounds; i++) {
    uint32_t bit = 1u << (i % 8);
    if (slow_ms > 0 && i >= rounds / 2) {
      struct timespec ts = {.tv_sec = slow_ms / 1000, .tv_nsec = (long)(slow_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    long long t0 = now_us();
    wr32(EDU_IRQ_RAISE, bit);
    struct pollfd p = {.fd = efd, .events = POLLIN};
    int pr = poll(&p, 1, 5000);
    uint64_t cnt = 0;
    if (pr == 1 && read(efd, &cnt, sizeof(cnt)) == sizeof(cnt) && cnt >= 1) {
      got++;
      total_us += now_us() - t0;
      if (cnt > 1) spurious++;
    }
    uint32_t status = rd32(EDU_IRQ_STATUS);
    if (!(status & bit)) fprintf(stderr, "%s round %d: irq status 0x%x lacks 0x%x\n", kind, i, status, bit);
    wr32(EDU_IRQ_ACK, status);
    if (index == VFIO_PCI_INTX_IRQ_INDEX) set_irq(index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK, -1);
  }
  // Nothing more may come once everything is acknowledged.
  struct pollfd p = {.fd = efd, .events = POLLIN};
  int extra = poll(&p, 1, 200);
  check(got == rounds && spurious == 0 && extra == 0, "%s: %d/%d interrupts on the eventfd (%d doubled, %d late)", kind,
        got, rounds, spurious, extra);
  long long after = proc_interrupts(name);
  check(after - before == rounds, "%s: /proc/interrupts '%s' grew by %lld (%lld -> %lld)", kind, name, after - before,
        before, after);
  check(rd32(EDU_IRQ_STATUS) == 0, "%s: interrupt status clear", kind);
  printf("irq %s %d %lld\n", kind, got, got ? total_us / got : 0);
  r = set_irq(index, VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER, -1);
  check(r == 0, "%s: disabled (%s)", kind, r ? strerror(errno) : "ok");
  close(efd);
}

int main(int argc, char **argv) {
  if ((argc != 3 && argc != 4) || atoi(argv[2]) <= 0) {
    fprintf(stderr, "usage: %s <BDF> <rounds> [slow_ms]\n", argv[0]);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  const char *bdf = argv[1];
  int rounds = atoi(argv[2]);
  int slow_ms = argc == 4 ? atoi(argv[3]) : 0;
  snprintf(dev_dir, sizeof(dev_dir), "/sys/bus/pci/devices/%.64s", bdf);
  printf("edu-irq: %s, %d rounds\n", bdf, rounds);
  sysfs_checks();
  if (vfio_open(bdf) == 0) {
    dma_check("before the interrupts", 0x17);
    char name[128];
    snprintf(name, sizeof(name), "vfio-intx(%.64s)", bdf);
    irq_rounds("INTx", VFIO_PCI_INTX_IRQ_INDEX, name, rounds, slow_ms);
    snprintf(name, sizeof(name), "vfio-msi[0](%.64s)", bdf);
    irq_rounds("MSI", VFIO_PCI_MSI_IRQ_INDEX, name, rounds, 0);
    dma_check("after the interrupts", 0x5a);
  }
  if (devfd >= 0) close(devfd);
  if (group >= 0) close(group);
  if (container >= 0) close(container);
  return finish();
}
