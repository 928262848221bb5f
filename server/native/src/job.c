/*
 * Long ioctls (MAP_DMA / IOAS_MAP pin pages; GiBs take a while) run on the libuv threadpool through
 * napi_create_async_work and settle a Promise. While one is in flight:
 * - the target fd is a private dup, so JS closing (and the number being reused) cannot redirect the ioctl;
 * - a mapping whose address the ioctl uses is busy (munmap refuses with EBUSY) and its ArrayBuffer is referenced,
 *   so the pages cannot be unmapped or collected under the kernel;
 * - a file the ioctl reads by fd (IOAS_MAP_FILE) is a private dup as well.
 * Completion order equals submission order only if the caller awaits each; keeping replies ordered is policy (TS).
 *
 * Every such ioctl also has a synchronous variant (a job on the caller's stack, run inline by vu_job_submit): for
 * small maps the ioctl takes microseconds while a threadpool hop costs far more. Same argument handling, same
 * Error; the caller's fd and buffer are used directly since nothing can close or collect them during the call.
 * Which variant to use for which size is policy (TS).
 *
 * The synchronous variants also have a lean form (the `*Args` entry points in vfio.c and iommufd.c) for the page-
 * sized maps a vIOMMU guest sends one by one: the u64 operands (iova, size, address or file offset) are not napi
 * arguments but slots of a per-environment argument block, an ArrayBuffer the JS wrapper keeps as a BigUint64Array
 * and fills before each call (storing a bigint there converts it without allocating; reading it as a napi bigint
 * costs a type check and a word copy per operand). The remaining arguments are small numbers. Results come back in
 * the block and as a boolean, so a successful call allocates nothing; the Error is built only on failure.
 */
#include "common.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * ioctlArgs() -> ArrayBuffer of VU_ARG_COUNT u64 slots then VU_INT_COUNT int32 slots: this environment's argument
 * block (the same each call).
 */
napi_value vu_ioctl_args_buffer(napi_env env, napi_callback_info info) {
  (void)info;
  vu_state *st = vu_state_get(env);
  napi_value ab;
  if (!st) {
    vu_throw_napi(env, napi_generic_failure, "napi_get_instance_data");
    return NULL;
  }
  if (st->ioctl_args_ref) {
    if (napi_get_reference_value(env, st->ioctl_args_ref, &ab) != napi_ok || !ab) {
      vu_throw_napi(env, napi_generic_failure, "napi_get_reference_value");
      return NULL;
    }
    return ab;
  }
  void *data;
  if (napi_create_arraybuffer(env, VU_IOCTL_BLOCK_SIZE, &data, &ab) != napi_ok ||
      napi_create_reference(env, ab, 1, &st->ioctl_args_ref) != napi_ok) {
    vu_throw_napi(env, napi_generic_failure, "napi_create_arraybuffer");
    return NULL;
  }
  /* A V8 ArrayBuffer's backing store never moves; the strong reference keeps it for the env's lifetime. */
  st->ioctl_args = data;
  return ab;
}

uint64_t *vu_ioctl_args(napi_env env) {
  vu_state *st = vu_state_get(env);
  if (!st || !st->ioctl_args) {
    vu_throw_type(env, "the ioctl argument block was not created (ioctlArgs())");
    return NULL;
  }
  return st->ioctl_args;
}

int vu_ioctl_fd(napi_env env, uint64_t *a, int slot, const char *name) {
  int fd = vu_ioctl_ints(a)[slot];
  if (fd < 0) vu_throw_range(env, "%s must be a file descriptor (>= 0)", name);
  return fd;
}

vu_job *vu_job_new(napi_env env, int fd, unsigned long request, const char *name) {
  vu_job *j = calloc(1, sizeof *j);
  if (!j) {
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  j->aux_fd = -1;
  j->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (j->fd < 0) {
    int e = errno;
    free(j);
    vu_throw_errno(env, e, name);
    return NULL;
  }
  j->request = request;
  j->name = name;
  return j;
}

vu_job *vu_job_init_sync(vu_job *j, int fd, unsigned long request, const char *name) {
  memset(j, 0, sizeof *j);
  j->fd = fd;
  j->aux_fd = -1;
  j->sync = true;
  j->request = request;
  j->name = name;
  return j;
}

vu_job *vu_job_make(napi_env env, vu_job *storage, bool sync, int fd, unsigned long request, const char *name) {
  return sync ? vu_job_init_sync(storage, fd, request, name) : vu_job_new(env, fd, request, name);
}

void vu_job_free(napi_env env, vu_job *j) {
  if (!j) return;
  if (j->map) vu_map_release(j->map);
  j->map = NULL;
  if (j->sync) return; /* borrowed fds, no references, caller's storage */
  if (j->fd >= 0) close(j->fd);
  if (j->aux_fd >= 0) close(j->aux_fd);
  if (j->keep) NAPI_LOG(env, napi_delete_reference(env, j->keep));
  if (j->work) NAPI_LOG(env, napi_delete_async_work(env, j->work));
  free(j);
}

bool vu_job_address_args(napi_env env, const napi_value *args, const char *va_name, bool *has_buf, uint64_t *boff,
                         uint64_t *va) {
  *has_buf = !vu_is_nullish(env, args[0]);
  if (*has_buf) return vu_is_nullish(env, args[1]) || vu_get_u64(env, args[1], "bufferOffset", boff);
  return vu_get_u64(env, args[2], va_name, va);
}

bool vu_job_pin_buffer(napi_env env, vu_job *j, napi_value buf, uint64_t boff, uint64_t len, uint64_t *va) {
  j->map = vu_map_acquire(env, buf, boff, len, va);
  /* A sync job needs no reference: `buf` is one of the arguments of the running call. */
  if (!j->map || (!j->sync && napi_create_reference(env, buf, 1, &j->keep) != napi_ok)) {
    vu_job_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_create_reference");
    return false;
  }
  return true;
}

int vu_job_aux_fd(napi_env env, vu_job *j, int fd) {
  if (j->sync) return fd;
  j->aux_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (j->aux_fd < 0) {
    int e = errno;
    vu_job_free(env, j);
    vu_throw_errno(env, e, j->name);
    return -1;
  }
  return j->aux_fd;
}

static void job_execute(napi_env env, void *data) {
  (void)env;
  vu_job *j = data;
  int r = vu_ioctl(j->fd, j->request, j->arg);
  j->err = r < 0 ? errno : 0;
}

/* The value a successful job resolves with (or returns, when sync); NULL with an exception pending. */
static napi_value job_result(napi_env env, const vu_job *j) {
  if (j->result != VU_JOB_U64) return vu_undefined(env);
  uint64_t out;
  memcpy(&out, (const uint8_t *)j->arg + j->result_off, sizeof out);
  return vu_u64(env, out);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  vu_job *j = data;
  napi_value v = NULL;
  if (status != napi_ok) j->err = ECANCELED;
  if (j->err) {
    v = vu_errno_error(env, j->err, j->name, NULL);
    if (v) NAPI_LOG(env, napi_reject_deferred(env, j->deferred, v));
  } else {
    v = job_result(env, j);
    if (v) NAPI_LOG(env, napi_resolve_deferred(env, j->deferred, v));
  }
  if (!v) {
    /* Settle anyway so no caller hangs. */
    napi_value e;
    napi_value msg;
    if (napi_create_string_utf8(env, "vfio-user-native: cannot build the result", NAPI_AUTO_LENGTH, &msg) ==
            napi_ok &&
        napi_create_error(env, NULL, msg, &e) == napi_ok)
      NAPI_LOG(env, napi_reject_deferred(env, j->deferred, e));
  }
  vu_job_free(env, j);
}

static napi_value job_queue(napi_env env, vu_job *j) {
  napi_value promise, name;
  if (napi_create_string_utf8(env, j->name, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, job_execute, job_complete, j, &j->work) != napi_ok) {
    vu_job_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_create_async_work");
    return NULL;
  }
  if (napi_create_promise(env, &j->deferred, &promise) != napi_ok) {
    vu_job_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_create_promise");
    return NULL;
  }
  if (napi_queue_async_work(env, j->work) != napi_ok) {
    /* The deferred is never settled; the promise is dropped with it. */
    vu_job_free(env, j);
    vu_throw_napi(env, napi_generic_failure, "napi_queue_async_work");
    return NULL;
  }
  return promise;
}

/* Runs a sync job's ioctl on the calling thread: the fast path for small maps and unmaps. */
static napi_value job_run(napi_env env, vu_job *j) {
  job_execute(env, j);
  vu_job_free(env, j); /* releases the busy mapping; nothing else to free */
  if (j->err) {
    vu_throw_errno(env, j->err, j->name);
    return NULL;
  }
  return job_result(env, j);
}

napi_value vu_job_submit(napi_env env, vu_job *j) { return j->sync ? job_run(env, j) : job_queue(env, j); }

napi_value vu_job_submit_arg(napi_env env, vu_job *j, const void *arg, size_t len, enum vu_job_result result,
                             size_t result_off) {
  memcpy(j->arg, arg, len < sizeof j->arg ? len : sizeof j->arg);
  j->result = result;
  j->result_off = result_off;
  return vu_job_submit(env, j);
}
