/*
 * mmap into external ArrayBuffers, explicit munmap, addresses for the host IOMMU.
 *
 * Traps handled here (see docs/native-addon.md):
 * - If creating the external ArrayBuffer fails, Node still runs the finalizer: the finalizer owns the record.
 * - munmap(ab): registry lookup, napi_detach_arraybuffer (every view drops to length 0), then munmap. Stale JS
 *   references cannot reach freed memory. The finalizer only frees the record, or unmaps if JS never did.
 * - SIGBUS past EOF: regular files are fstat'ed and offset+length > st_size is refused (EOVERFLOW).
 * - Unaligned offsets: map from the page (or huge page) below; the view starts at the remainder.
 * - A mapping whose address an async ioctl is using is "busy": munmap refuses it with EBUSY.
 * The registry is process-wide (workers) behind a mutex.
 */
#include "common.h"

#include <linux/magic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

struct vu_map {
  struct vu_map *prev, *next;
  void *base;    /* what mmap returned */
  size_t maplen; /* what was mapped */
  uint8_t *view; /* ArrayBuffer data */
  size_t len;    /* ArrayBuffer length */
  int busy;      /* in-flight async ioctls using the address */
  bool registered;
  bool unmapped;
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct vu_map registry = {.prev = &registry, .next = &registry};
static size_t registry_count;

static void reg_insert(struct vu_map *m) {
  m->next = registry.next;
  m->prev = &registry;
  registry.next->prev = m;
  registry.next = m;
  m->registered = true;
  registry_count++;
}

static void reg_remove(struct vu_map *m) {
  if (!m->registered) return;
  m->prev->next = m->next;
  m->next->prev = m->prev;
  m->registered = false;
  registry_count--;
}

/* Caller holds the lock. Only live (registered) mappings match. */
static struct vu_map *reg_find(const void *view) {
  if (!view) return NULL;
  for (struct vu_map *m = registry.next; m != &registry; m = m->next)
    if (m->view == view) return m;
  return NULL;
}

static void map_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  struct vu_map *m = hint;
  pthread_mutex_lock(&registry_mu);
  reg_remove(m);
  pthread_mutex_unlock(&registry_mu);
  if (!m->unmapped) munmap(m->base, m->maplen);
  free(m);
}

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/* mmap(fd, offset: bigint, length, prot, flags) -> ArrayBuffer */
static napi_value js_mmap(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int fd;
  uint64_t offset, length;
  int32_t prot, flags;
  if (!vu_args(env, info, 5, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd) ||
      !vu_get_u64(env, argv[1], "offset", &offset) || !vu_get_u64(env, argv[2], "length", &length) ||
      !vu_get_i32(env, argv[3], "prot", &prot) || !vu_get_i32(env, argv[4], "flags", &flags))
    return NULL;
  if (length == 0) {
    vu_throw_errno_msg(env, EINVAL, "mmap", "length must be > 0");
    return NULL;
  }
  if (prot & ~(PROT_READ | PROT_WRITE) || !(prot & PROT_READ)) {
    /* PROT_NONE or PROT_EXEC would make a JS access fault: refuse. */
    vu_throw_errno_msg(env, EINVAL, "mmap", "prot must be PROT_READ or PROT_READ|PROT_WRITE");
    return NULL;
  }
  int type = flags & (MAP_SHARED | MAP_PRIVATE);
  if ((type != MAP_SHARED && type != MAP_PRIVATE) ||
      (flags & ~(MAP_SHARED | MAP_PRIVATE | MAP_POPULATE | MAP_NORESERVE))) {
    vu_throw_errno_msg(env, EINVAL, "mmap",
                       "flags must be MAP_SHARED or MAP_PRIVATE (optionally with MAP_POPULATE, MAP_NORESERVE)");
    return NULL;
  }
  if (offset > (uint64_t)INT64_MAX || length > (uint64_t)INT64_MAX - offset || length > SIZE_MAX / 2) {
    vu_throw_errno_msg(env, EOVERFLOW, "mmap", "offset + length overflows");
    return NULL;
  }
  struct stat st;
  if (!vu_ok(env, fstat(fd, &st), "fstat")) return NULL;
  uint64_t align = (uint64_t)sysconf(_SC_PAGESIZE);
  if (S_ISREG(st.st_mode)) {
    /* Touching a mapping past EOF raises SIGBUS, which JS cannot catch. */
    if (offset + length > (uint64_t)st.st_size) {
      vu_throw_errno_msg(env, EOVERFLOW, "mmap", "offset + length is past the end of the file");
      return NULL;
    }
    struct statfs sfs;
    if (fstatfs(fd, &sfs) == 0 && (unsigned long)sfs.f_type == (unsigned long)HUGETLBFS_MAGIC && st.st_blksize > 0)
      align = (uint64_t)st.st_blksize; /* hugetlbfs: offsets must be huge-page aligned */
  }
  uint64_t aligned = offset & ~(align - 1);
  size_t delta = (size_t)(offset - aligned);
  size_t maplen = (size_t)length + delta;
  void *base = mmap(NULL, maplen, prot, flags, fd, (off_t)aligned);
  if (base == MAP_FAILED) {
    vu_throw_errno(env, errno, "mmap");
    return NULL;
  }
  struct vu_map *m = calloc(1, sizeof *m);
  if (!m) {
    munmap(base, maplen);
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  m->base = base;
  m->maplen = maplen;
  m->view = (uint8_t *)base + delta;
  m->len = (size_t)length;
  napi_value ab;
  napi_status s = napi_create_external_arraybuffer(env, m->view, m->len, map_finalize, m, &ab);
  if (s != napi_ok) {
    if (s == napi_no_external_buffers_allowed) {
      /* Refused before Node took ownership (V8 sandbox): still ours. */
      munmap(base, maplen);
      free(m);
      vu_throw_errno_msg(env, ENOTSUP, "napi_create_external_arraybuffer",
                         "external ArrayBuffers are not allowed in this runtime (V8 sandbox)");
      return NULL;
    }
    /* Node runs the finalizer even when creation fails: it owns (and frees) the record now. */
    vu_throw_napi(env, s, "napi_create_external_arraybuffer");
    return NULL;
  }
  pthread_mutex_lock(&registry_mu);
  reg_insert(m);
  pthread_mutex_unlock(&registry_mu);
  return ab;
}

static bool get_ab(napi_env env, napi_value v, void **data, size_t *len) {
  bool is;
  NAPI_CALL_R(env, napi_is_arraybuffer(env, v, &is), false);
  if (!is) {
    vu_throw_type(env, "expected an ArrayBuffer returned by mmap()");
    return false;
  }
  NAPI_CALL_R(env, napi_get_arraybuffer_info(env, v, data, len), false);
  return true;
}

/* munmap(ab): detach every view, then unmap. */
static napi_value js_munmap(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *data;
  size_t len;
  if (!vu_args(env, info, 1, argv, NULL) || !get_ab(env, argv[0], &data, &len)) return NULL;
  pthread_mutex_lock(&registry_mu);
  struct vu_map *m = reg_find(data);
  if (!m || m->len != len) {
    pthread_mutex_unlock(&registry_mu);
    vu_throw_errno_msg(env, EINVAL, "munmap", "not a live mapping made by mmap() (foreign or already unmapped)");
    return NULL;
  }
  if (m->busy) {
    pthread_mutex_unlock(&registry_mu);
    vu_throw_errno_msg(env, EBUSY, "munmap", "an asynchronous ioctl is still using this mapping's address");
    return NULL;
  }
  napi_status s = napi_detach_arraybuffer(env, argv[0]);
  if (s != napi_ok) {
    pthread_mutex_unlock(&registry_mu);
    vu_throw_napi(env, s, "napi_detach_arraybuffer");
    return NULL;
  }
  reg_remove(m);
  m->unmapped = true;
  void *base = m->base;
  size_t maplen = m->maplen;
  pthread_mutex_unlock(&registry_mu);
  /* The record stays until the finalizer; the memory goes now. */
  vu_ok(env, munmap(base, maplen), "munmap");
  return NULL;
}

static napi_value js_map_address(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  void *data;
  size_t len;
  if (!vu_args(env, info, 1, argv, NULL) || !get_ab(env, argv[0], &data, &len)) return NULL;
  pthread_mutex_lock(&registry_mu);
  struct vu_map *m = reg_find(data);
  pthread_mutex_unlock(&registry_mu);
  if (!m) {
    vu_throw_errno_msg(env, EINVAL, "mapAddress", "not a live mapping made by mmap()");
    return NULL;
  }
  return vu_u64(env, (uint64_t)(uintptr_t)data);
}

static napi_value js_mapping_count(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_mutex_lock(&registry_mu);
  size_t n = registry_count;
  pthread_mutex_unlock(&registry_mu);
  return vu_double(env, (double)n);
}

vu_map *vu_map_acquire(napi_env env, napi_value ab, uint64_t offset, uint64_t len, uint64_t *addr) {
  void *data;
  size_t ablen;
  if (!get_ab(env, ab, &data, &ablen)) return NULL;
  pthread_mutex_lock(&registry_mu);
  struct vu_map *m = reg_find(data);
  if (!m) {
    pthread_mutex_unlock(&registry_mu);
    vu_throw_errno_msg(env, EINVAL, "mapAddress", "buffer is not a live mapping made by mmap()");
    return NULL;
  }
  if (offset > m->len || len > m->len - offset) {
    pthread_mutex_unlock(&registry_mu);
    vu_throw_errno_msg(env, EINVAL, "mapAddress", "range is outside the mapping");
    return NULL;
  }
  m->busy++;
  pthread_mutex_unlock(&registry_mu);
  *addr = (uint64_t)(uintptr_t)(m->view + offset);
  return m;
}

void vu_map_release(vu_map *m) {
  pthread_mutex_lock(&registry_mu);
  m->busy--;
  pthread_mutex_unlock(&registry_mu);
}

bool vu_init_mmap(napi_env env, napi_value exports) {
  return vu_export_fn(env, exports, "mmap", js_mmap) && vu_export_fn(env, exports, "munmap", js_munmap) &&
         vu_export_fn(env, exports, "mapAddress", js_map_address) &&
         vu_export_fn(env, exports, "mappingCount", js_mapping_count) &&
         vu_export_u32(env, exports, "PROT_READ", PROT_READ) && vu_export_u32(env, exports, "PROT_WRITE", PROT_WRITE) &&
         vu_export_u32(env, exports, "MAP_SHARED", MAP_SHARED) &&
         vu_export_u32(env, exports, "MAP_PRIVATE", MAP_PRIVATE) &&
         vu_export_u32(env, exports, "MAP_POPULATE", MAP_POPULATE) &&
         vu_export_u32(env, exports, "MAP_NORESERVE", MAP_NORESERVE);
}
