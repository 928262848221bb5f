/*
 * VFIO type1 container, group and device ioctls (host IOMMU mirroring and passed-through devices).
 * Typed wrappers only: the structs carry their size in-band, so a raw ioctl(buf) could not check lengths.
 * Errors: Error{errno, code, syscall: '<ioctl name>'}.
 */
#include "common.h"
#include "uapi.h"

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define MAX_INFO_SIZE (1u << 20) /* sanity cap for argsz the kernel asks for */
#define MAX_CAPS 64

static int xioctl_val(int fd, unsigned long req, unsigned long val) {
  int r;
  do r = ioctl(fd, req, val);
  while (r < 0 && errno == EINTR);
  return r;
}

/* getApiVersion(containerFd) -> number (VFIO_API_VERSION = 0) */
static napi_value get_api_version(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  int r = xioctl_val(fd, VFIO_GET_API_VERSION, 0);
  if (!vu_ok(env, r, "VFIO_GET_API_VERSION")) return NULL;
  return vu_i32(env, r);
}

/* checkExtension(containerFd, ext) -> number (0/1; query after SET_IOMMU) */
static napi_value check_extension(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t ext;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "extension", &ext)) return NULL;
  int r = xioctl_val(fd, VFIO_CHECK_EXTENSION, ext);
  if (!vu_ok(env, r, "VFIO_CHECK_EXTENSION")) return NULL;
  return vu_i32(env, r);
}

static napi_value set_iommu(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t type;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "type", &type)) return NULL;
  vu_ok(env, xioctl_val(fd, VFIO_SET_IOMMU, type), "VFIO_SET_IOMMU");
  return NULL;
}

/* groupGetStatus(groupFd) -> flags (VIABLE 1, CONTAINER_SET 2) */
static napi_value group_get_status(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  struct vfio_group_status st = {.argsz = sizeof st};
  if (!vu_ok(env, vu_ioctl(fd, VFIO_GROUP_GET_STATUS, &st), "VFIO_GROUP_GET_STATUS")) return NULL;
  return vu_u32(env, st.flags);
}

static napi_value group_set_container(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd, container;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_fd(env, argv[1], "containerFd", &container)) return NULL;
  __s32 c = container;
  vu_ok(env, vu_ioctl(fd, VFIO_GROUP_SET_CONTAINER, &c), "VFIO_GROUP_SET_CONTAINER");
  return NULL;
}

static napi_value group_unset_container(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  vu_ok(env, xioctl_val(fd, VFIO_GROUP_UNSET_CONTAINER, 0), "VFIO_GROUP_UNSET_CONTAINER");
  return NULL;
}

/* groupGetDeviceFd(groupFd, "0000:00:03.0") -> device fd (close-on-exec) */
static napi_value group_get_device_fd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  char name[256];
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_string(env, argv[1], "device", name, sizeof name)) return NULL;
  int r = vu_ioctl(fd, VFIO_GROUP_GET_DEVICE_FD, name);
  if (!vu_ok(env, r, "VFIO_GROUP_GET_DEVICE_FD")) return NULL;
  return vu_i32(env, r);
}

/*
 * Two-pass argsz protocol: call with the base size; if the kernel raised argsz (caps), call again with that much.
 * Returns a malloc'ed buffer (argsz in the first u32) or NULL with an exception pending.
 */
static void *info_two_pass(napi_env env, int fd, unsigned long req, const char *name, size_t base, size_t index_off,
                           uint32_t index) {
  size_t size = base;
  for (int pass = 0; pass < 3; pass++) {
    uint8_t *buf = calloc(1, size);
    if (!buf) {
      vu_throw_errno(env, ENOMEM, "calloc");
      return NULL;
    }
    uint32_t argsz = (uint32_t)size;
    memcpy(buf, &argsz, 4);
    if (index_off) memcpy(buf + index_off, &index, 4);
    if (vu_ioctl(fd, req, buf) < 0) {
      int e = errno;
      free(buf);
      vu_throw_errno(env, e, name);
      return NULL;
    }
    memcpy(&argsz, buf, 4);
    if (argsz <= size) return buf;
    free(buf);
    if (argsz > MAX_INFO_SIZE) {
      vu_throw_errno_msg(env, EOVERFLOW, name, "kernel asked for an implausible argsz");
      return NULL;
    }
    size = argsz;
  }
  vu_throw_errno_msg(env, EAGAIN, name, "argsz kept growing");
  return NULL;
}

/* Bounds-checked view of a cap at `off` (from the buffer start) of at least `need` bytes. */
static const uint8_t *cap_at(const uint8_t *buf, size_t len, uint32_t off, size_t need) {
  if (off < 8 || off > len || need > len - off) return NULL;
  return buf + off;
}

static uint16_t rd16(const uint8_t *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}
static uint32_t rd32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint64_t rd64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* {k0, k1}[] (bigints) from n records of two u64 at p: IOVA ranges {start, end}, sparse areas {offset, size}. */
static napi_value u64_pairs(napi_env env, const uint8_t *p, uint32_t n, const char *k0, const char *k1) {
  napi_value arr;
  NAPI_CALL(env, napi_create_array_with_length(env, n, &arr));
  for (uint32_t i = 0; i < n; i++) {
    napi_value r;
    NAPI_CALL(env, napi_create_object(env, &r));
    if (!vu_set_u64(env, r, k0, rd64(p + 16 * i)) || !vu_set_u64(env, r, k1, rd64(p + 16 * i + 8))) return NULL;
    NAPI_CALL(env, napi_set_element(env, arr, i, r));
  }
  return arr;
}

/* Sets caps[i] = {id, version, offset} for the cap header at c (offset `off` in the info buffer). */
static bool list_cap(napi_env env, napi_value caps, uint32_t i, const uint8_t *c, uint32_t off) {
  napi_value cv;
  return napi_create_object(env, &cv) == napi_ok && vu_set_u32(env, cv, "id", rd16(c)) &&
         vu_set_u32(env, cv, "version", rd16(c + 2)) && vu_set_u32(env, cv, "offset", off) &&
         napi_set_element(env, caps, i, cv) == napi_ok;
}

/*
 * iommuGetInfo(containerFd) -> { flags, pgsizes: bigint, iovaRanges: {start, end (inclusive)}[], dmaAvail?,
 *   migration?: {flags, pgsizeBitmap, maxDirtyBitmapSize}, caps: {id, version, offset}[] }
 */
static napi_value iommu_get_info(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  uint8_t *buf = info_two_pass(env, fd, VFIO_IOMMU_GET_INFO, "VFIO_IOMMU_GET_INFO",
                               sizeof(struct vfio_iommu_type1_info), 0, 0);
  if (!buf) return NULL;
  napi_value out = NULL, ranges, caps;
  struct vfio_iommu_type1_info hdr;
  memcpy(&hdr, buf, sizeof hdr);
  size_t len = hdr.argsz;
  if (napi_create_object(env, &out) != napi_ok || napi_create_array(env, &ranges) != napi_ok ||
      napi_create_array(env, &caps) != napi_ok)
    goto fail;
  if (!vu_set_u32(env, out, "flags", hdr.flags) ||
      !vu_set_u64(env, out, "pgsizes", hdr.flags & VFIO_IOMMU_INFO_PGSIZES ? hdr.iova_pgsizes : 0))
    goto fail;
  uint32_t off = hdr.flags & VFIO_IOMMU_INFO_CAPS ? hdr.cap_offset : 0;
  for (uint32_t ncap = 0; off && ncap < MAX_CAPS; ncap++) {
    const uint8_t *c = cap_at(buf, len, off, 8);
    if (!c) break;
    if (!list_cap(env, caps, ncap, c, off)) goto fail;
    uint16_t id = rd16(c);
    if (id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE && cap_at(buf, len, off, 16)) {
      uint32_t n = rd32(c + 8);
      if (cap_at(buf, len, off, 16 + (size_t)n * 16)) {
        ranges = u64_pairs(env, c + 16, n, "start", "end");
        if (!ranges) goto fail;
      }
    } else if (id == VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION && cap_at(buf, len, off, 32)) {
      napi_value m;
      if (napi_create_object(env, &m) != napi_ok || !vu_set_u32(env, m, "flags", rd32(c + 8)) ||
          !vu_set_u64(env, m, "pgsizeBitmap", rd64(c + 16)) || !vu_set_u64(env, m, "maxDirtyBitmapSize", rd64(c + 24)) ||
          !vu_set_val(env, out, "migration", m))
        goto fail;
    } else if (id == VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL && cap_at(buf, len, off, 12)) {
      if (!vu_set_u32(env, out, "dmaAvail", rd32(c + 8))) goto fail;
    }
    off = rd32(c + 4);
  }
  if (!vu_set_val(env, out, "iovaRanges", ranges) || !vu_set_val(env, out, "caps", caps)) goto fail;
  free(buf);
  return out;
fail:
  free(buf);
  vu_throw_napi(env, napi_generic_failure, "VFIO_IOMMU_GET_INFO result");
  return NULL;
}

/*
 * mapDma(containerFd, flags, iova, size, buffer|null, bufferOffset, vaddr) -> Promise<void>
 * mapDmaSync(same) -> undefined (the ioctl runs on the calling thread; for small sizes, policy in TS)
 * With a buffer (an mmap() ArrayBuffer), vaddr = its address + bufferOffset and the mapping stays busy (and, when
 * async, referenced) until the ioctl completes. Without one, the raw vaddr is used (caller's responsibility).
 */
static napi_value map_dma_common(napi_env env, napi_callback_info info, bool sync) {
  napi_value argv[7];
  int fd;
  uint32_t flags;
  uint64_t iova, size, boff = 0, vaddr = 0;
  if (!vu_args_fd(env, info, 7, argv, &fd) || !vu_get_u32(env, argv[1], "flags", &flags) ||
      !vu_get_u64(env, argv[2], "iova", &iova) || !vu_get_u64(env, argv[3], "size", &size))
    return NULL;
  bool has_buf;
  if (!vu_job_address_args(env, argv + 4, "vaddr", &has_buf, &boff, &vaddr)) return NULL;
  vu_job storage;
  vu_job *j = vu_job_make(env, &storage, sync, fd, VFIO_IOMMU_MAP_DMA, "VFIO_IOMMU_MAP_DMA");
  if (!j) return NULL;
  if (has_buf && !vu_job_pin_buffer(env, j, argv[4], boff, size, &vaddr)) return NULL;
  struct vfio_iommu_type1_dma_map m = {
      .argsz = sizeof m, .flags = flags, .vaddr = vaddr, .iova = iova, .size = size};
  return vu_job_submit_arg(env, j, &m, sizeof m, VU_JOB_VOID, 0);
}

VU_JOB_ENTRY_POINTS(map_dma)

/*
 * unmapDma(containerFd, flags, iova, size) -> Promise<bigint> (bytes unmapped; 0 when nothing was mapped)
 * unmapDmaSync(same) -> bigint
 */
static napi_value unmap_dma_common(napi_env env, napi_callback_info info, bool sync) {
  napi_value argv[4];
  int fd;
  uint32_t flags;
  uint64_t iova, size;
  if (!vu_args_fd(env, info, 4, argv, &fd) || !vu_get_u32(env, argv[1], "flags", &flags) ||
      !vu_get_u64(env, argv[2], "iova", &iova) || !vu_get_u64(env, argv[3], "size", &size))
    return NULL;
  if (flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) {
    vu_throw_errno_msg(env, EINVAL, "VFIO_IOMMU_UNMAP_DMA", "GET_DIRTY_BITMAP is not supported by this wrapper");
    return NULL;
  }
  vu_job storage;
  vu_job *j = vu_job_make(env, &storage, sync, fd, VFIO_IOMMU_UNMAP_DMA, "VFIO_IOMMU_UNMAP_DMA");
  if (!j) return NULL;
  struct vfio_iommu_type1_dma_unmap u = {.argsz = sizeof u, .flags = flags, .iova = iova, .size = size};
  return vu_job_submit_arg(env, j, &u, sizeof u, VU_JOB_U64, offsetof(struct vfio_iommu_type1_dma_unmap, size));
}

VU_JOB_ENTRY_POINTS(unmap_dma)

/*
 * The lean synchronous forms (job.c): no arguments, every operand in the argument block ([FD] = the container).
 * mapDmaArgs() -> undefined: MAP_DMA of [IOVA] = iova, [SIZE] = size, [ADDR] = vaddr, [FLAGS].
 * unmapDmaArgs() -> boolean: UNMAP_DMA of [IOVA], [SIZE], [FLAGS]; [SIZE] = the bytes unmapped after it, true when
 * that is the whole size asked for.
 * Why no arguments: under Node-API each one costs a type check and a conversion call (napi_typeof +
 * napi_get_value_*), the largest part of a bare call (docs/iommu-mirroring.md, "Cost per map").
 */
static napi_value map_dma_args(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t *a = vu_ioctl_args(env);
  if (!a) return NULL;
  int fd = vu_ioctl_fd(env, a, VU_INT_FD, "fd");
  if (fd < 0) return NULL;
  struct vfio_iommu_type1_dma_map m = {.argsz = sizeof m,
                                       .flags = (uint32_t)vu_ioctl_ints(a)[VU_INT_FLAGS],
                                       .vaddr = a[VU_ARG_ADDR],
                                       .iova = a[VU_ARG_IOVA],
                                       .size = a[VU_ARG_SIZE]};
  vu_ok(env, vu_ioctl(fd, VFIO_IOMMU_MAP_DMA, &m), "VFIO_IOMMU_MAP_DMA");
  return NULL;
}

static napi_value unmap_dma_args(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t *a = vu_ioctl_args(env);
  if (!a) return NULL;
  int fd = vu_ioctl_fd(env, a, VU_INT_FD, "fd");
  if (fd < 0) return NULL;
  uint32_t flags = (uint32_t)vu_ioctl_ints(a)[VU_INT_FLAGS];
  if (flags & VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) {
    vu_throw_errno_msg(env, EINVAL, "VFIO_IOMMU_UNMAP_DMA", "GET_DIRTY_BITMAP is not supported by this wrapper");
    return NULL;
  }
  struct vfio_iommu_type1_dma_unmap u = {
      .argsz = sizeof u, .flags = flags, .iova = a[VU_ARG_IOVA], .size = a[VU_ARG_SIZE]};
  if (!vu_ok(env, vu_ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u), "VFIO_IOMMU_UNMAP_DMA")) return NULL;
  bool whole = u.size == a[VU_ARG_SIZE];
  a[VU_ARG_SIZE] = u.size;
  napi_value r;
  return napi_get_boolean(env, whole, &r) == napi_ok ? r : NULL;
}

/* deviceGetInfo(deviceFd) -> { flags, numRegions, numIrqs, capOffset } */
static napi_value device_get_info(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  struct vu_vfio_device_info di = {.argsz = sizeof di};
  if (!vu_ok(env, vu_ioctl(fd, VFIO_DEVICE_GET_INFO, &di), "VFIO_DEVICE_GET_INFO")) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  if (!vu_set_u32(env, out, "flags", di.flags) || !vu_set_u32(env, out, "numRegions", di.num_regions) ||
      !vu_set_u32(env, out, "numIrqs", di.num_irqs) ||
      !vu_set_u32(env, out, "capOffset", di.flags & VFIO_DEVICE_FLAGS_CAPS ? di.cap_offset : 0))
    return NULL;
  return out;
}

/*
 * deviceGetRegionInfo(deviceFd, index) -> { index, flags, size, offset, caps: {id, version, offset}[],
 *   sparseMmap?: {offset, size}[], type?: {type, subtype}, msixMappable: boolean }
 * Region data lives at info.offset in the device fd (pread/pwrite/mmap); the index<<40 layout is not uAPI.
 */
static napi_value device_get_region_info(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t index;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "index", &index)) return NULL;
  uint8_t *buf = info_two_pass(env, fd, VFIO_DEVICE_GET_REGION_INFO, "VFIO_DEVICE_GET_REGION_INFO",
                               sizeof(struct vfio_region_info), offsetof(struct vfio_region_info, index), index);
  if (!buf) return NULL;
  struct vfio_region_info ri;
  memcpy(&ri, buf, sizeof ri);
  size_t len = ri.argsz;
  napi_value out, caps;
  bool msix = false;
  if (napi_create_object(env, &out) != napi_ok || napi_create_array(env, &caps) != napi_ok) goto fail;
  if (!vu_set_u32(env, out, "index", ri.index) || !vu_set_u32(env, out, "flags", ri.flags) ||
      !vu_set_u64(env, out, "size", ri.size) || !vu_set_u64(env, out, "offset", ri.offset))
    goto fail;
  uint32_t off = ri.flags & VFIO_REGION_INFO_FLAG_CAPS ? ri.cap_offset : 0;
  for (uint32_t ncap = 0; off && ncap < MAX_CAPS; ncap++) {
    const uint8_t *c = cap_at(buf, len, off, 8);
    if (!c) break;
    if (!list_cap(env, caps, ncap, c, off)) goto fail;
    uint16_t id = rd16(c);
    if (id == VFIO_REGION_INFO_CAP_SPARSE_MMAP && cap_at(buf, len, off, 16)) {
      uint32_t n = rd32(c + 8);
      if (cap_at(buf, len, off, 16 + (size_t)n * 16)) {
        napi_value areas = u64_pairs(env, c + 16, n, "offset", "size");
        if (!areas || !vu_set_val(env, out, "sparseMmap", areas)) goto fail;
      }
    } else if (id == VFIO_REGION_INFO_CAP_TYPE && cap_at(buf, len, off, 16)) {
      napi_value t;
      if (napi_create_object(env, &t) != napi_ok || !vu_set_u32(env, t, "type", rd32(c + 8)) ||
          !vu_set_u32(env, t, "subtype", rd32(c + 12)) || !vu_set_val(env, out, "type", t))
        goto fail;
    } else if (id == VFIO_REGION_INFO_CAP_MSIX_MAPPABLE) {
      msix = true;
    }
    off = rd32(c + 4);
  }
  if (!vu_set_val(env, out, "caps", caps) || !vu_set_bool(env, out, "msixMappable", msix)) goto fail;
  free(buf);
  return out;
fail:
  free(buf);
  vu_throw_napi(env, napi_generic_failure, "VFIO_DEVICE_GET_REGION_INFO result");
  return NULL;
}

/* deviceGetIrqInfo(deviceFd, index) -> { index, flags, count } */
static napi_value device_get_irq_info(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t index;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "index", &index)) return NULL;
  struct vfio_irq_info ii = {.argsz = sizeof ii, .index = index};
  if (!vu_ok(env, vu_ioctl(fd, VFIO_DEVICE_GET_IRQ_INFO, &ii), "VFIO_DEVICE_GET_IRQ_INFO")) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  if (!vu_set_u32(env, out, "index", ii.index) || !vu_set_u32(env, out, "flags", ii.flags) ||
      !vu_set_u32(env, out, "count", ii.count))
    return NULL;
  return out;
}

/*
 * deviceSetIrqs(deviceFd, flags, index, start, count, data)
 *   DATA_EVENTFD: data = number[] of `count` eventfds (-1 de-assigns); DATA_BOOL: data = boolean[] of `count`;
 *   DATA_NONE: data ignored.
 */
static napi_value device_set_irqs(napi_env env, napi_callback_info info) {
  napi_value argv[6];
  int fd;
  uint32_t flags, index, start, count;
  if (!vu_args_fd(env, info, 6, argv, &fd) || !vu_get_u32(env, argv[1], "flags", &flags) ||
      !vu_get_u32(env, argv[2], "index", &index) || !vu_get_u32(env, argv[3], "start", &start) ||
      !vu_get_u32(env, argv[4], "count", &count))
    return NULL;
  uint32_t dtype = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
  size_t elt = dtype == VFIO_IRQ_SET_DATA_EVENTFD ? 4 : dtype == VFIO_IRQ_SET_DATA_BOOL ? 1 : 0;
  if (dtype != VFIO_IRQ_SET_DATA_NONE && dtype != VFIO_IRQ_SET_DATA_BOOL && dtype != VFIO_IRQ_SET_DATA_EVENTFD) {
    vu_throw_errno_msg(env, EINVAL, "VFIO_DEVICE_SET_IRQS", "exactly one DATA_* flag is required");
    return NULL;
  }
  if (count > 65536) {
    vu_throw_errno_msg(env, EINVAL, "VFIO_DEVICE_SET_IRQS", "count too large");
    return NULL;
  }
  size_t total = sizeof(struct vfio_irq_set) + elt * count;
  struct vfio_irq_set *s = calloc(1, total);
  if (!s) {
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  s->argsz = (uint32_t)total;
  s->flags = flags;
  s->index = index;
  s->start = start;
  s->count = count;
  if (elt) {
    bool is_array;
    uint32_t n = 0;
    if (napi_is_array(env, argv[5], &is_array) != napi_ok || !is_array ||
        napi_get_array_length(env, argv[5], &n) != napi_ok || n != count) {
      free(s);
      vu_throw_type(env, "data must be an array of `count` %s", elt == 4 ? "fds" : "booleans");
      return NULL;
    }
    for (uint32_t i = 0; i < count; i++) {
      napi_value v;
      if (napi_get_element(env, argv[5], i, &v) != napi_ok) {
        free(s);
        vu_throw_napi(env, napi_generic_failure, "napi_get_element");
        return NULL;
      }
      if (elt == 4) {
        int32_t efd;
        if (!vu_get_i32(env, v, "data[i]", &efd)) {
          free(s);
          return NULL;
        }
        memcpy(s->data + 4 * i, &efd, 4);
      } else {
        bool b;
        if (!vu_get_bool(env, v, "data[i]", false, &b)) {
          free(s);
          return NULL;
        }
        s->data[i] = b ? 1 : 0;
      }
    }
  }
  int r = vu_ioctl(fd, VFIO_DEVICE_SET_IRQS, s);
  int e = errno;
  free(s);
  if (r < 0) {
    vu_throw_errno(env, e, "VFIO_DEVICE_SET_IRQS");
    return NULL;
  }
  return NULL;
}

static napi_value device_reset(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  vu_ok(env, xioctl_val(fd, VFIO_DEVICE_RESET, 0), "VFIO_DEVICE_RESET");
  return NULL;
}

/* deviceFeature(deviceFd, flags, data: Uint8Array|undefined) -> Buffer (the data area after the call) */
static napi_value device_feature(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint32_t flags;
  void *data = NULL;
  size_t len = 0;
  if (!vu_args_fd(env, info, 3, argv, &fd) || !vu_get_u32(env, argv[1], "flags", &flags)) return NULL;
  if (!vu_is_nullish(env, argv[2]) && !vu_get_bytes(env, argv[2], "data", &data, &len)) return NULL;
  if (len > MAX_INFO_SIZE) {
    vu_throw_errno(env, EINVAL, "VFIO_DEVICE_FEATURE");
    return NULL;
  }
  struct vfio_device_feature *f = calloc(1, sizeof *f + len);
  if (!f) {
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  f->argsz = (uint32_t)(sizeof *f + len);
  f->flags = flags;
  if (len) memcpy(f->data, data, len);
  int r = vu_ioctl(fd, VFIO_DEVICE_FEATURE, f);
  if (r < 0) {
    int e = errno;
    free(f);
    vu_throw_errno(env, e, "VFIO_DEVICE_FEATURE");
    return NULL;
  }
  napi_value out;
  napi_status s = napi_create_buffer_copy(env, len, f->data, NULL, &out);
  free(f);
  NAPI_CALL(env, s);
  return out;
}

/* deviceBindIommufd(cdevFd, iommufd) -> devid */
static napi_value device_bind_iommufd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd, ifd;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_fd(env, argv[1], "iommufd", &ifd)) return NULL;
  struct vu_vfio_device_bind_iommufd b = {.argsz = sizeof b, .iommufd = ifd};
  if (!vu_ok(env, vu_ioctl(fd, VU_VFIO_DEVICE_BIND_IOMMUFD, &b), "VFIO_DEVICE_BIND_IOMMUFD")) return NULL;
  return vu_u32(env, b.out_devid);
}

/* deviceAttachPt(cdevFd, ptId) -> the HWPT id the kernel attached (auto-allocated for an IOAS) */
static napi_value device_attach_pt(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t pt;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "ptId", &pt)) return NULL;
  struct vu_vfio_device_attach_iommufd_pt a = {.argsz = sizeof a, .pt_id = pt};
  if (!vu_ok(env, vu_ioctl(fd, VU_VFIO_DEVICE_ATTACH_IOMMUFD_PT, &a), "VFIO_DEVICE_ATTACH_IOMMUFD_PT")) return NULL;
  return vu_u32(env, a.pt_id);
}

static napi_value device_detach_pt(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  struct vu_vfio_device_detach_iommufd_pt d = {.argsz = sizeof d};
  vu_ok(env, vu_ioctl(fd, VU_VFIO_DEVICE_DETACH_IOMMUFD_PT, &d), "VFIO_DEVICE_DETACH_IOMMUFD_PT");
  return NULL;
}

bool vu_init_vfio(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"vfioGetApiVersion", get_api_version},
      {"vfioCheckExtension", check_extension},
      {"vfioSetIommu", set_iommu},
      {"vfioGroupGetStatus", group_get_status},
      {"vfioGroupSetContainer", group_set_container},
      {"vfioGroupUnsetContainer", group_unset_container},
      {"vfioGroupGetDeviceFd", group_get_device_fd},
      {"vfioIommuGetInfo", iommu_get_info},
      {"vfioMapDma", map_dma},
      {"vfioUnmapDma", unmap_dma},
      {"vfioMapDmaSync", map_dma_sync},
      {"vfioUnmapDmaSync", unmap_dma_sync},
      {"vfioMapDmaArgs", map_dma_args},
      {"vfioUnmapDmaArgs", unmap_dma_args},
      {"ioctlArgs", vu_ioctl_args_buffer},
      {"vfioDeviceGetInfo", device_get_info},
      {"vfioDeviceGetRegionInfo", device_get_region_info},
      {"vfioDeviceGetIrqInfo", device_get_irq_info},
      {"vfioDeviceSetIrqs", device_set_irqs},
      {"vfioDeviceReset", device_reset},
      {"vfioDeviceFeature", device_feature},
      {"vfioDeviceBindIommufd", device_bind_iommufd},
      {"vfioDeviceAttachPt", device_attach_pt},
      {"vfioDeviceDetachPt", device_detach_pt},
  };
  for (size_t i = 0; i < VU_ARRAY_LEN(fns); i++)
    if (!vu_export_fn(env, exports, fns[i].name, fns[i].cb)) return false;
  return true;
}
