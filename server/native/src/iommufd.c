/*
 * iommufd (/dev/iommu) ioctls: IOAS alloc/destroy, IOVA ranges, map (user VA or file), unmap, options.
 * Maps and unmaps run on the threadpool, or inline in their *Sync variants (see job.c). Flag bits differ from
 * type1: READABLE 0x4, WRITEABLE 0x2, FIXED_IOVA 0x1. Unmap of an empty range is ENOENT here (type1 reports
 * success, size 0): normalising is policy.
 */
#include "common.h"
#include "uapi.h"

#include <stdlib.h>
#include <string.h>

#define MAX_RANGES 4096

/* ioasAlloc(iommufd) -> ioas id */
static napi_value ioas_alloc(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  struct vu_iommu_ioas_alloc a = {.size = sizeof a};
  if (!vu_ok(env, vu_ioctl(fd, VU_IOMMU_IOAS_ALLOC, &a), "IOMMU_IOAS_ALLOC")) return NULL;
  return vu_u32(env, a.out_ioas_id);
}

/* destroy(iommufd, id) */
static napi_value destroy(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t id;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "id", &id)) return NULL;
  struct vu_iommu_destroy d = {.size = sizeof d, .id = id};
  vu_ok(env, vu_ioctl(fd, VU_IOMMU_DESTROY, &d), "IOMMU_DESTROY");
  return NULL;
}

/* iovaRanges(iommufd, ioasId) -> { ranges: {start, end (inclusive)}[], alignment: bigint } (EMSGSIZE retry) */
static napi_value iova_ranges(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint32_t ioas;
  if (!vu_args_fd(env, info, 2, argv, &fd) || !vu_get_u32(env, argv[1], "ioasId", &ioas)) return NULL;
  uint32_t cap = 8;
  struct vu_iommu_iova_range *r = NULL;
  struct vu_iommu_ioas_iova_ranges q;
  for (int pass = 0;; pass++) {
    struct vu_iommu_iova_range *nr = realloc(r, cap * sizeof *r);
    if (!nr) {
      free(r);
      vu_throw_errno(env, ENOMEM, "realloc");
      return NULL;
    }
    r = nr;
    memset(&q, 0, sizeof q);
    q.size = sizeof q;
    q.ioas_id = ioas;
    q.num_iovas = cap;
    q.allowed_iovas = (uint64_t)(uintptr_t)r;
    if (vu_ioctl(fd, VU_IOMMU_IOAS_IOVA_RANGES, &q) == 0) break;
    int e = errno;
    if (e != EMSGSIZE || pass > 3 || q.num_iovas <= cap || q.num_iovas > MAX_RANGES) {
      free(r);
      vu_throw_errno(env, e, "IOMMU_IOAS_IOVA_RANGES");
      return NULL;
    }
    cap = q.num_iovas; /* the kernel reports how many there are */
  }
  napi_value out, arr;
  uint32_t n = q.num_iovas < cap ? q.num_iovas : cap;
  bool ok = napi_create_object(env, &out) == napi_ok && napi_create_array_with_length(env, n, &arr) == napi_ok;
  for (uint32_t i = 0; ok && i < n; i++) {
    napi_value o;
    ok = napi_create_object(env, &o) == napi_ok && vu_set_u64(env, o, "start", r[i].start) &&
         vu_set_u64(env, o, "end", r[i].last) && napi_set_element(env, arr, i, o) == napi_ok;
  }
  ok = ok && vu_set_val(env, out, "ranges", arr) && vu_set_u64(env, out, "alignment", q.out_iova_alignment);
  free(r);
  if (!ok) {
    vu_throw_napi(env, napi_generic_failure, "IOMMU_IOAS_IOVA_RANGES result");
    return NULL;
  }
  return out;
}

/* allowIovas(iommufd, ioasId, ranges: {start, end}[]) */
static napi_value allow_iovas(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint32_t ioas, n;
  bool is_array;
  if (!vu_args_fd(env, info, 3, argv, &fd) || !vu_get_u32(env, argv[1], "ioasId", &ioas)) return NULL;
  NAPI_CALL(env, napi_is_array(env, argv[2], &is_array));
  if (!is_array) {
    vu_throw_type(env, "ranges must be an array of {start, end}");
    return NULL;
  }
  NAPI_CALL(env, napi_get_array_length(env, argv[2], &n));
  if (n > MAX_RANGES) {
    vu_throw_range(env, "too many ranges");
    return NULL;
  }
  struct vu_iommu_iova_range *r = calloc(n ? n : 1, sizeof *r);
  if (!r) {
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value o, s, e;
    uint64_t start, end;
    if (napi_get_element(env, argv[2], i, &o) != napi_ok || !vu_get_prop(env, o, "start", &s) ||
        !vu_get_prop(env, o, "end", &e) || !vu_get_u64(env, s, "start", &start) || !vu_get_u64(env, e, "end", &end)) {
      free(r);
      vu_throw_type(env, "ranges[%u] must be {start: bigint, end: bigint}", i);
      return NULL;
    }
    r[i].start = start;
    r[i].last = end;
  }
  struct vu_iommu_ioas_allow_iovas a = {
      .size = sizeof a, .ioas_id = ioas, .num_iovas = n, .allowed_iovas = (uint64_t)(uintptr_t)r};
  int rr = vu_ioctl(fd, VU_IOMMU_IOAS_ALLOW_IOVAS, &a);
  int e = errno;
  free(r);
  if (rr < 0) {
    vu_throw_errno(env, e, "IOMMU_IOAS_ALLOW_IOVAS");
    return NULL;
  }
  return NULL;
}

/*
 * ioasMap(iommufd, ioasId, flags, iova, length, buffer|null, bufferOffset, userVa) -> Promise<bigint iova>
 * ioasMapSync(same) -> bigint iova (the ioctl runs on the calling thread; for small sizes, policy in TS)
 * With a buffer (an mmap() ArrayBuffer) user_va = its address + bufferOffset, busy (and, when async, referenced)
 * until done.
 */
static napi_value ioas_map_common(napi_env env, napi_callback_info info, bool sync) {
  napi_value argv[8];
  int fd;
  uint32_t ioas, flags;
  uint64_t iova, length, boff = 0, va = 0;
  if (!vu_args_fd(env, info, 8, argv, &fd) || !vu_get_u32(env, argv[1], "ioasId", &ioas) ||
      !vu_get_u32(env, argv[2], "flags", &flags) || !vu_get_u64(env, argv[3], "iova", &iova) ||
      !vu_get_u64(env, argv[4], "length", &length))
    return NULL;
  bool has_buf;
  if (!vu_job_address_args(env, argv + 5, "userVa", &has_buf, &boff, &va)) return NULL;
  vu_job storage;
  vu_job *j = vu_job_make(env, &storage, sync, fd, VU_IOMMU_IOAS_MAP, "IOMMU_IOAS_MAP");
  if (!j) return NULL;
  if (has_buf && !vu_job_pin_buffer(env, j, argv[5], boff, length, &va)) return NULL;
  struct vu_iommu_ioas_map m = {
      .size = sizeof m, .flags = flags, .ioas_id = ioas, .user_va = va, .length = length, .iova = iova};
  return vu_job_submit_arg(env, j, &m, sizeof m, VU_JOB_U64, offsetof(struct vu_iommu_ioas_map, iova));
}

VU_JOB_ENTRY_POINTS(ioas_map)

/*
 * ioasMapFile(iommufd, ioasId, flags, fileFd, start, length, iova) -> Promise<bigint iova> (Linux 6.13+)
 * ioasMapFileSync(same) -> bigint iova
 */
static napi_value ioas_map_file_common(napi_env env, napi_callback_info info, bool sync) {
  napi_value argv[7];
  int fd, mfd;
  uint32_t ioas, flags;
  uint64_t start, length, iova;
  if (!vu_args_fd(env, info, 7, argv, &fd) || !vu_get_u32(env, argv[1], "ioasId", &ioas) ||
      !vu_get_u32(env, argv[2], "flags", &flags) || !vu_get_fd(env, argv[3], "fileFd", &mfd) ||
      !vu_get_u64(env, argv[4], "start", &start) || !vu_get_u64(env, argv[5], "length", &length) ||
      !vu_get_u64(env, argv[6], "iova", &iova))
    return NULL;
  vu_job storage;
  vu_job *j = vu_job_make(env, &storage, sync, fd, VU_IOMMU_IOAS_MAP_FILE, "IOMMU_IOAS_MAP_FILE");
  if (!j) return NULL;
  int file = vu_job_aux_fd(env, j, mfd);
  if (file < 0) return NULL;
  struct vu_iommu_ioas_map_file m = {.size = sizeof m,
                                     .flags = flags,
                                     .ioas_id = ioas,
                                     .fd = file,
                                     .start = start,
                                     .length = length,
                                     .iova = iova};
  return vu_job_submit_arg(env, j, &m, sizeof m, VU_JOB_U64, offsetof(struct vu_iommu_ioas_map_file, iova));
}

VU_JOB_ENTRY_POINTS(ioas_map_file)

/*
 * ioasUnmap(iommufd, ioasId, iova, length) -> Promise<bigint bytes unmapped> (iova 0, length 2^64-1 = all)
 * ioasUnmapSync(same) -> bigint
 */
static napi_value ioas_unmap_common(napi_env env, napi_callback_info info, bool sync) {
  napi_value argv[4];
  int fd;
  uint32_t ioas;
  uint64_t iova, length;
  if (!vu_args_fd(env, info, 4, argv, &fd) || !vu_get_u32(env, argv[1], "ioasId", &ioas) ||
      !vu_get_u64(env, argv[2], "iova", &iova) || !vu_get_u64(env, argv[3], "length", &length))
    return NULL;
  vu_job storage;
  vu_job *j = vu_job_make(env, &storage, sync, fd, VU_IOMMU_IOAS_UNMAP, "IOMMU_IOAS_UNMAP");
  if (!j) return NULL;
  struct vu_iommu_ioas_unmap u = {.size = sizeof u, .ioas_id = ioas, .iova = iova, .length = length};
  return vu_job_submit_arg(env, j, &u, sizeof u, VU_JOB_U64, offsetof(struct vu_iommu_ioas_unmap, length));
}

VU_JOB_ENTRY_POINTS(ioas_unmap)

/*
 * The lean synchronous forms (job.c): no arguments, every operand in the argument block ([FD] = the iommufd,
 * [ID] = the IOAS, [FLAGS]); [IOVA] holds the IOVA the kernel used after a map (see vfio.c for why no arguments).
 * ioasMapArgs() -> undefined: IOAS_MAP of [IOVA], [SIZE] = length, [ADDR] = user_va.
 * ioasMapFileArgs() -> undefined: IOAS_MAP_FILE of [IOVA], [SIZE], [ADDR] = start, [FILE_FD].
 * ioasUnmapArgs() -> boolean: IOAS_UNMAP of [IOVA], [SIZE]; [SIZE] = the bytes unmapped after it, true when that
 * is the whole length asked for.
 */
static napi_value ioas_map_args(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t *a = vu_ioctl_args(env);
  if (!a) return NULL;
  int fd = vu_ioctl_fd(env, a, VU_INT_FD, "fd");
  if (fd < 0) return NULL;
  const int32_t *n = vu_ioctl_ints(a);
  struct vu_iommu_ioas_map m = {.size = sizeof m,
                                .flags = (uint32_t)n[VU_INT_FLAGS],
                                .ioas_id = (uint32_t)n[VU_INT_ID],
                                .user_va = a[VU_ARG_ADDR],
                                .length = a[VU_ARG_SIZE],
                                .iova = a[VU_ARG_IOVA]};
  if (vu_ok(env, vu_ioctl(fd, VU_IOMMU_IOAS_MAP, &m), "IOMMU_IOAS_MAP")) a[VU_ARG_IOVA] = m.iova;
  return NULL;
}

static napi_value ioas_map_file_args(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t *a = vu_ioctl_args(env);
  if (!a) return NULL;
  int fd = vu_ioctl_fd(env, a, VU_INT_FD, "fd");
  int mfd = fd < 0 ? -1 : vu_ioctl_fd(env, a, VU_INT_FILE_FD, "fileFd");
  if (mfd < 0) return NULL;
  const int32_t *n = vu_ioctl_ints(a);
  struct vu_iommu_ioas_map_file m = {.size = sizeof m,
                                     .flags = (uint32_t)n[VU_INT_FLAGS],
                                     .ioas_id = (uint32_t)n[VU_INT_ID],
                                     .fd = mfd,
                                     .start = a[VU_ARG_ADDR],
                                     .length = a[VU_ARG_SIZE],
                                     .iova = a[VU_ARG_IOVA]};
  if (vu_ok(env, vu_ioctl(fd, VU_IOMMU_IOAS_MAP_FILE, &m), "IOMMU_IOAS_MAP_FILE")) a[VU_ARG_IOVA] = m.iova;
  return NULL;
}

static napi_value ioas_unmap_args(napi_env env, napi_callback_info info) {
  (void)info;
  uint64_t *a = vu_ioctl_args(env);
  if (!a) return NULL;
  int fd = vu_ioctl_fd(env, a, VU_INT_FD, "fd");
  if (fd < 0) return NULL;
  struct vu_iommu_ioas_unmap u = {
      .size = sizeof u, .ioas_id = (uint32_t)vu_ioctl_ints(a)[VU_INT_ID], .iova = a[VU_ARG_IOVA], .length = a[VU_ARG_SIZE]};
  if (!vu_ok(env, vu_ioctl(fd, VU_IOMMU_IOAS_UNMAP, &u), "IOMMU_IOAS_UNMAP")) return NULL;
  bool whole = u.length == a[VU_ARG_SIZE];
  a[VU_ARG_SIZE] = u.length;
  napi_value r;
  return napi_get_boolean(env, whole, &r) == napi_ok ? r : NULL;
}

/* option(iommufd, optionId, op, objectId, val64) -> bigint val64 after the call */
static napi_value option(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  uint32_t id, op, obj;
  uint64_t val = 0;
  if (!vu_args_fd(env, info, 5, argv, &fd) || !vu_get_u32(env, argv[1], "optionId", &id) ||
      !vu_get_u32(env, argv[2], "op", &op) || !vu_get_u32(env, argv[3], "objectId", &obj))
    return NULL;
  if (!vu_is_nullish(env, argv[4]) && !vu_get_u64(env, argv[4], "val64", &val)) return NULL;
  if (op > 0xffff) {
    vu_throw_range(env, "op must fit in 16 bits");
    return NULL;
  }
  struct vu_iommu_option o = {.size = sizeof o, .option_id = id, .op = (__u16)op, .object_id = obj, .val64 = val};
  if (!vu_ok(env, vu_ioctl(fd, VU_IOMMU_OPTION, &o), "IOMMU_OPTION")) return NULL;
  return vu_u64(env, o.val64);
}

bool vu_init_iommufd(napi_env env, napi_value exports) {
  return vu_export_fn(env, exports, "iommufdIoasAlloc", ioas_alloc) &&
         vu_export_fn(env, exports, "iommufdDestroy", destroy) &&
         vu_export_fn(env, exports, "iommufdIovaRanges", iova_ranges) &&
         vu_export_fn(env, exports, "iommufdAllowIovas", allow_iovas) &&
         vu_export_fn(env, exports, "iommufdIoasMap", ioas_map) &&
         vu_export_fn(env, exports, "iommufdIoasMapFile", ioas_map_file) &&
         vu_export_fn(env, exports, "iommufdIoasUnmap", ioas_unmap) &&
         vu_export_fn(env, exports, "iommufdIoasMapSync", ioas_map_sync) &&
         vu_export_fn(env, exports, "iommufdIoasMapFileSync", ioas_map_file_sync) &&
         vu_export_fn(env, exports, "iommufdIoasUnmapSync", ioas_unmap_sync) &&
         vu_export_fn(env, exports, "iommufdIoasMapArgs", ioas_map_args) &&
         vu_export_fn(env, exports, "iommufdIoasMapFileArgs", ioas_map_file_args) &&
         vu_export_fn(env, exports, "iommufdIoasUnmapArgs", ioas_unmap_args) &&
         vu_export_fn(env, exports, "iommufdOption", option);
}
