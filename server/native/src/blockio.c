/*
 * Block I/O for emulated storage devices (the NVMe model): preadv/pwritev between a file (the disk image) and a
 * list of memory segments, fallocate (discard, write zeroes) and fdatasync (flush), all on the libuv threadpool,
 * settling a Promise. The segments are Uint8Array views; when a view lies in one of our mmap()s (guest memory
 * mapped from the client's memfd) the kernel copies straight between the page cache and the guest's pages, with
 * no JS buffer in between.
 *
 * While a job is in flight:
 * - every segment's mapping is busy (munmap refuses with EBUSY) and every ArrayBuffer is referenced, so no page
 *   can be unmapped or collected under the kernel;
 * - the file descriptor is the caller's (no dup: one per I/O would cost a syscall on the loop thread); the caller
 *   keeps it open until every job on it has settled (the NVMe model drains its I/O before closing the image).
 * Reads past the end of the file are zero-filled (a sparse image shorter than its namespace reads zeros); short
 * writes are retried until done or an error.
 */
#include "common.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* Budget: a device passes one segment per guest page of one command (NVMe MDTS bounds it far below this). */
#define BIO_MAX_SEGS 4096
#define BIO_IOV_MAX 1024

enum bio_op { BIO_READ, BIO_WRITE, BIO_FALLOCATE, BIO_SYNC };

typedef struct bio_seg {
  struct iovec iov;
  vu_map *map;   /* busy mapping, or NULL for a JS-heap buffer */
  napi_ref keep; /* the ArrayBuffer, referenced until completion */
} bio_seg;

typedef struct bio_job {
  enum bio_op op;
  int fd;
  int mode; /* fallocate mode */
  uint64_t offset, length;
  uint64_t done;
  int err;
  size_t nsegs;
  napi_async_work work;
  napi_deferred deferred;
  bio_seg segs[];
} bio_job;

static void bio_free(napi_env env, bio_job *j) {
  for (size_t i = 0; i < j->nsegs; i++) {
    if (j->segs[i].map) vu_map_release(j->segs[i].map);
    if (j->segs[i].keep) NAPI_LOG(env, napi_delete_reference(env, j->segs[i].keep));
  }
  if (j->work) NAPI_LOG(env, napi_delete_async_work(env, j->work));
  free(j);
}

/* preadv/pwritev over the whole list, advancing through short transfers; zero-fills reads past EOF. */
static void bio_rw(bio_job *j) {
  size_t first = 0;
  uint64_t off = j->offset;
  struct iovec iov[BIO_IOV_MAX];
  while (first < j->nsegs) {
    size_t n = j->nsegs - first;
    if (n > BIO_IOV_MAX) n = BIO_IOV_MAX;
    for (size_t i = 0; i < n; i++) iov[i] = j->segs[first + i].iov;
    ssize_t r;
    do r = j->op == BIO_WRITE ? pwritev(j->fd, iov, (int)n, (off_t)off) : preadv(j->fd, iov, (int)n, (off_t)off);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
      j->err = errno;
      return;
    }
    if (r == 0) {
      if (j->op == BIO_WRITE) {
        j->err = EIO;
        return;
      }
      /* EOF: the rest reads as zeros. */
      for (size_t i = first; i < j->nsegs; i++) {
        memset(j->segs[i].iov.iov_base, 0, j->segs[i].iov.iov_len);
        j->done += j->segs[i].iov.iov_len;
      }
      return;
    }
    j->done += (uint64_t)r;
    off += (uint64_t)r;
    /* Consume r bytes from the segment list. */
    size_t left = (size_t)r;
    while (left > 0 && first < j->nsegs) {
      struct iovec *v = &j->segs[first].iov;
      if (left >= v->iov_len) {
        left -= v->iov_len;
        v->iov_len = 0;
        first++;
      } else {
        v->iov_base = (uint8_t *)v->iov_base + left;
        v->iov_len -= left;
        left = 0;
      }
    }
    while (first < j->nsegs && j->segs[first].iov.iov_len == 0) first++;
  }
}

static void bio_execute(napi_env env, void *data) {
  (void)env;
  bio_job *j = data;
  int r;
  switch (j->op) {
    case BIO_READ:
    case BIO_WRITE:
      bio_rw(j);
      break;
    case BIO_FALLOCATE:
      do r = fallocate(j->fd, j->mode, (off_t)j->offset, (off_t)j->length);
      while (r < 0 && errno == EINTR);
      j->err = r < 0 ? errno : 0;
      break;
    case BIO_SYNC:
      do r = fdatasync(j->fd);
      while (r < 0 && errno == EINTR);
      j->err = r < 0 ? errno : 0;
      break;
  }
}

static const char *bio_name(const bio_job *j) {
  switch (j->op) {
    case BIO_READ:
      return "preadv";
    case BIO_WRITE:
      return "pwritev";
    case BIO_FALLOCATE:
      return "fallocate";
    default:
      return "fdatasync";
  }
}

static void bio_complete(napi_env env, napi_status status, void *data) {
  bio_job *j = data;
  if (status != napi_ok) j->err = ECANCELED;
  napi_value v = j->err ? vu_errno_error(env, j->err, bio_name(j), NULL) : vu_double(env, (double)j->done);
  if (v) {
    if (j->err)
      NAPI_LOG(env, napi_reject_deferred(env, j->deferred, v));
    else
      NAPI_LOG(env, napi_resolve_deferred(env, j->deferred, v));
  } else {
    napi_value e, msg;
    if (napi_create_string_utf8(env, "vfio-user-native: cannot build the result", NAPI_AUTO_LENGTH, &msg) ==
            napi_ok &&
        napi_create_error(env, NULL, msg, &e) == napi_ok)
      NAPI_LOG(env, napi_reject_deferred(env, j->deferred, e));
  }
  bio_free(env, j);
}

static napi_value bio_queue(napi_env env, bio_job *j) {
  napi_value promise, name;
  if (napi_create_string_utf8(env, bio_name(j), NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, bio_execute, bio_complete, j, &j->work) != napi_ok) {
    bio_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_create_async_work");
    return NULL;
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    bio_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_create_promise");
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    bio_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_queue_async_work");
    return NULL;
  }
  return promise;
}

/* Pins one Uint8Array segment: a busy mapping when it is one of our mmaps, a reference either way. */
static bool bio_pin(napi_env env, napi_value view, bio_seg *seg) {
  bool is;
  NAPI_CALL_R(env, napi_is_typedarray(env, view, &is), false);
  napi_typedarray_type type;
  size_t length = 0, offset = 0;
  napi_value ab;
  void *p = NULL;
  if (is) NAPI_CALL_R(env, napi_get_typedarray_info(env, view, &type, &length, &p, &ab, &offset), false);
  if (!is || type != napi_uint8_array) {
    vu_throw_type(env, "segments must be Uint8Arrays");
    return false;
  }
  if (length > 0 && !p) {
    vu_throw_type(env, "segment over a detached buffer");
    return false;
  }
  uint64_t addr;
  seg->map = vu_map_acquire(env, ab, offset, length, &addr);
  if (!seg->map) {
    /* Not one of our mappings: a JS-heap buffer (its backing store does not move), kept by the reference. */
    napi_value ignored;
    NAPI_CALL_R(env, napi_get_and_clear_last_exception(env, &ignored), false);
    addr = (uint64_t)(uintptr_t)p;
  }
  NAPI_CALL_R(env, napi_create_reference(env, ab, 1, &seg->keep), false);
  seg->iov.iov_base = (void *)(uintptr_t)addr;
  seg->iov.iov_len = length;
  return true;
}

static bio_job *bio_new(napi_env env, size_t nsegs, enum bio_op op, int fd) {
  bio_job *j = calloc(1, sizeof *j + nsegs * sizeof(bio_seg));
  if (!j) {
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  j->op = op;
  j->fd = fd;
  return j;
}

/* blockIo(fd, write, offset: bigint, segments: Uint8Array[]) -> Promise<number of bytes> */
static napi_value js_block_io(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd;
  bool write;
  uint64_t off;
  if (!vu_args_fd(env, info, 4, argv, &fd) || !vu_get_bool(env, argv[1], "write", false, &write) ||
      !vu_get_u64(env, argv[2], "offset", &off))
    return NULL;
  bool is;
  NAPI_CALL(env, napi_is_array(env, argv[3], &is));
  uint32_t n = 0;
  if (is) NAPI_CALL(env, napi_get_array_length(env, argv[3], &n));
  if (!is || n > BIO_MAX_SEGS) {
    vu_throw_range(env, "segments must be an array of at most %d Uint8Arrays", BIO_MAX_SEGS);
    return NULL;
  }
  if (off > (uint64_t)INT64_MAX) {
    vu_throw_errno(env, EINVAL, write ? "pwritev" : "preadv");
    return NULL;
  }
  bio_job *j = bio_new(env, n, write ? BIO_WRITE : BIO_READ, fd);
  if (!j) return NULL;
  j->offset = off;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    if (napi_get_element(env, argv[3], i, &v) != napi_ok || !bio_pin(env, v, &j->segs[i])) {
      j->nsegs = i + 1; /* release what was pinned, including a half-pinned segment */
      bio_free(env, j);
      return NULL;
    }
    j->nsegs = i + 1;
  }
  return bio_queue(env, j);
}

/* blockFallocate(fd, mode, offset: bigint, length: bigint) -> Promise<0> */
static napi_value js_block_fallocate(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  int fd;
  int32_t mode;
  uint64_t off, len;
  if (!vu_args_fd(env, info, 4, argv, &fd) || !vu_get_i32(env, argv[1], "mode", &mode) ||
      !vu_get_u64(env, argv[2], "offset", &off) || !vu_get_u64(env, argv[3], "length", &len))
    return NULL;
  if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off) {
    vu_throw_errno(env, EINVAL, "fallocate");
    return NULL;
  }
  bio_job *j = bio_new(env, 0, BIO_FALLOCATE, fd);
  if (!j) return NULL;
  j->mode = mode;
  j->offset = off;
  j->length = len;
  return bio_queue(env, j);
}

/* blockSync(fd) -> Promise<0>: fdatasync */
static napi_value js_block_sync(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  bio_job *j = bio_new(env, 0, BIO_SYNC, fd);
  if (!j) return NULL;
  return bio_queue(env, j);
}

/*
 * blockReadNowait(fd, offset: bigint, segments: Uint8Array[]) -> bytes read, or -1 when the data is not all in the
 * page cache (preadv2 RWF_NOWAIT: EAGAIN, or a short read). Synchronous on the calling thread, and never blocks on
 * the disk: a hit costs a memory copy instead of two threadpool hops; a miss costs one failed syscall.
 */
static napi_value js_block_read_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  uint64_t off;
  if (!vu_args_fd(env, info, 3, argv, &fd) || !vu_get_u64(env, argv[1], "offset", &off)) return NULL;
  bool is;
  NAPI_CALL(env, napi_is_array(env, argv[2], &is));
  uint32_t n = 0;
  if (is) NAPI_CALL(env, napi_get_array_length(env, argv[2], &n));
  if (!is || n > BIO_IOV_MAX || off > (uint64_t)INT64_MAX) {
    vu_throw_range(env, "segments must be an array of at most %d Uint8Arrays", BIO_IOV_MAX);
    return NULL;
  }
  struct iovec iov[BIO_IOV_MAX];
  size_t total = 0;
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    napi_typedarray_type type;
    size_t length, boff;
    napi_value ab;
    void *p;
    NAPI_CALL(env, napi_get_element(env, argv[2], i, &v));
    NAPI_CALL(env, napi_is_typedarray(env, v, &is));
    if (is) NAPI_CALL(env, napi_get_typedarray_info(env, v, &type, &length, &p, &ab, &boff));
    if (!is || type != napi_uint8_array || (length > 0 && !p)) {
      vu_throw_type(env, "segments must be Uint8Arrays");
      return NULL;
    }
    iov[i].iov_base = p;
    iov[i].iov_len = length;
    total += length;
  }
  ssize_t r;
  do r = preadv2(fd, iov, (int)n, (off_t)off, RWF_NOWAIT);
  while (r < 0 && errno == EINTR);
  if (r < 0 && errno != EAGAIN && errno != EOPNOTSUPP) {
    vu_throw_errno(env, errno, "preadv2");
    return NULL;
  }
  return vu_double(env, r < 0 || (size_t)r != total ? -1 : (double)r);
}

bool vu_init_blockio(napi_env env, napi_value exports) {
  return vu_export_fn(env, exports, "blockIo", js_block_io) &&
         vu_export_fn(env, exports, "blockReadNowait", js_block_read_nowait) &&
         vu_export_fn(env, exports, "blockFallocate", js_block_fallocate) &&
         vu_export_fn(env, exports, "blockSync", js_block_sync) &&
         vu_export_u32(env, exports, "FALLOC_FL_KEEP_SIZE", FALLOC_FL_KEEP_SIZE) &&
         vu_export_u32(env, exports, "FALLOC_FL_PUNCH_HOLE", FALLOC_FL_PUNCH_HOLE) &&
         vu_export_u32(env, exports, "FALLOC_FL_ZERO_RANGE", FALLOC_FL_ZERO_RANGE);
}
