/*
 * vfio-user-native: shared declarations for the Node-API addon.
 *
 * The addon does syscalls only; ownership, windows and retries are policy in lib/ (TypeScript).
 * Every napi_status is checked: on failure a JS exception is made pending (if none is already) and the
 * function returns NULL, which Node-API turns into `undefined` plus the pending exception.
 */
#ifndef VU_COMMON_H
#define VU_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define VU_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Check a napi call; on failure throw (unless an exception is pending) and return NULL. */
#define NAPI_CALL(env, call)                                                                                      \
  do {                                                                                                          \
    napi_status vu_s_ = (call);                                                                                 \
    if (vu_s_ != napi_ok) {                                                                                     \
      vu_throw_napi((env), vu_s_, #call);                                                                       \
      return NULL;                                                                                              \
    }                                                                                                           \
  } while (0)

/* Same, returning `ret` (for helpers that return bool/int). */
#define NAPI_CALL_R(env, call, ret)                                                                               \
  do {                                                                                                          \
    napi_status vu_s_ = (call);                                                                                 \
    if (vu_s_ != napi_ok) {                                                                                     \
      vu_throw_napi((env), vu_s_, #call);                                                                       \
      return (ret);                                                                                             \
    }                                                                                                           \
  } while (0)

/* Same, for contexts that cannot throw (libuv callbacks): log to stderr and goto `label`. */
#define NAPI_CALL_GOTO(env, call, label)                                                                          \
  do {                                                                                                          \
    napi_status vu_s_ = (call);                                                                                 \
    if (vu_s_ != napi_ok) {                                                                                     \
      vu_report_napi((env), vu_s_, #call);                                                                      \
      goto label;                                                                                               \
    }                                                                                                           \
  } while (0)

/* For calls whose failure cannot be thrown (cleanup paths, or throwing itself): report it on stderr. */
#define NAPI_LOG(env, call)                                                                                       \
  do {                                                                                                          \
    napi_status vu_s_ = (call);                                                                                 \
    if (vu_s_ != napi_ok) vu_report_napi((env), vu_s_, #call);                                                  \
  } while (0)

/* ---- per-environment state (napi_set_instance_data) ---- */

/* Intrusive list of live handles so the env cleanup hook can close them (worker exit, process exit). */
typedef struct vu_link {
  struct vu_link *prev, *next;
  void (*teardown)(struct vu_link *link); /* close the handle without calling into JS */
} vu_link;

typedef struct vu_state {
  napi_env env;
  uv_loop_t *loop;
  bool dying; /* set by the cleanup hook: no more calls into JS, finalizers only free memory */
  vu_link handles;
  napi_ref ctor_connection, ctor_listener, ctor_watcher;
  napi_ref ioctl_args_ref; /* the argument block of the lean map/unmap calls (job.c), or NULL until asked for */
  uint64_t *ioctl_args;
} vu_state;

vu_state *vu_state_get(napi_env env);
void vu_link_add(vu_state *st, vu_link *link);
void vu_link_remove(vu_link *link);

/* ---- errors ---- */

/* Throws Error{message: "<syscall>: <strerror> (<CODE>)", errno: err (positive), code, syscall}. */
void vu_throw_errno(napi_env env, int err, const char *syscall);
void vu_throw_errno_msg(napi_env env, int err, const char *syscall, const char *message);
/* Builds such an Error without throwing. Returns NULL on failure. */
napi_value vu_errno_error(napi_env env, int err, const char *syscall, const char *message);
void vu_throw_type(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vu_throw_range(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void vu_throw_napi(napi_env env, napi_status s, const char *what);
/*
 * For a syscall's result r (>= 0 success, -1 with errno): true on success; otherwise throws the errno Error for
 * `syscall` and returns false. Call it right after the syscall, before anything can change errno:
 * `if (!vu_ok(env, fstat(fd, &st), "fstat")) return NULL;`, or, in a function that returns undefined either way,
 * `vu_ok(env, close(fd), "close"); return NULL;`.
 */
bool vu_ok(napi_env env, long r, const char *syscall);
void vu_report_napi(napi_env env, napi_status s, const char *what);
const char *vu_errno_name(int err);

/* ---- arguments ---- */

/* Fetches up to n arguments (missing ones are `undefined`) and `this`. */
bool vu_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *thisv);
bool vu_is_nullish(napi_env env, napi_value v);
bool vu_get_i32(napi_env env, napi_value v, const char *name, int32_t *out);
bool vu_get_u32(napi_env env, napi_value v, const char *name, uint32_t *out);
bool vu_get_fd(napi_env env, napi_value v, const char *name, int *out);
/* vu_args for a function whose first argument is an fd (named "fd" in errors), stored in *fd. */
bool vu_args_fd(napi_env env, napi_callback_info info, size_t n, napi_value *argv, int *fd);
/* Accepts a bigint or a non-negative safe-integer number. */
bool vu_get_u64(napi_env env, napi_value v, const char *name, uint64_t *out);
bool vu_get_bool(napi_env env, napi_value v, const char *name, bool dflt, bool *out);
/* Copies a string into buf (NUL-terminated); fails if it does not fit or contains NUL. */
bool vu_get_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap);
/* Reads property `key` of object `obj` (undefined when absent). */
bool vu_get_prop(napi_env env, napi_value obj, const char *key, napi_value *out);
/* Gets the bytes of a Buffer/TypedArray/DataView/ArrayBuffer. */
bool vu_get_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len);

/* ---- values ---- */

napi_value vu_u64(napi_env env, uint64_t v);
napi_value vu_i32(napi_env env, int32_t v);
napi_value vu_u32(napi_env env, uint32_t v);
napi_value vu_double(napi_env env, double v);
napi_value vu_undefined(napi_env env);
bool vu_set_u64(napi_env env, napi_value obj, const char *key, uint64_t v);
bool vu_set_u32(napi_env env, napi_value obj, const char *key, uint32_t v);
bool vu_set_i32(napi_env env, napi_value obj, const char *key, int32_t v);
bool vu_set_bool(napi_env env, napi_value obj, const char *key, bool v);
bool vu_set_str(napi_env env, napi_value obj, const char *key, const char *v);
bool vu_set_val(napi_env env, napi_value obj, const char *key, napi_value v);
bool vu_export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);
bool vu_export_u32(napi_env env, napi_value exports, const char *name, uint32_t v);

/* ---- calling JS from libuv callbacks ---- */

/* A handle scope plus (lazily) a callback scope, so nextTick/microtasks run once when it closes. */
typedef struct vu_cbscope {
  napi_env env;
  napi_handle_scope hs;
  napi_callback_scope cs;
  bool hs_open, cs_open;
} vu_cbscope;

bool vu_cbscope_open(vu_cbscope *s, napi_env env);
/* Enters the callback scope for `resource` (a JS object) and `ctx` if not yet entered. */
bool vu_cbscope_enter(vu_cbscope *s, napi_ref resource, napi_async_context ctx);
void vu_cbscope_close(vu_cbscope *s);
/* Calls fn(recv, ...argv); an exception thrown by JS goes to napi_fatal_exception. False if it threw. */
bool vu_call(napi_env env, napi_value recv, napi_value fn, size_t argc, const napi_value *argv);
bool vu_call_ref(napi_env env, napi_ref recv, napi_ref fn, size_t argc, const napi_value *argv);
/* vu_call / vu_call_ref with the function's return value in *result (valid only when true is returned). */
bool vu_call_result(napi_env env, napi_value recv, napi_value fn, size_t argc, const napi_value *argv,
                    napi_value *result);
bool vu_call_ref_result(napi_env env, napi_ref recv, napi_ref fn, size_t argc, const napi_value *argv,
                        napi_value *result);
napi_value vu_ref_value(napi_env env, napi_ref ref);

/* ---- syscall helpers ---- */

int vu_set_nonblock(int fd);
int vu_set_cloexec(int fd);
/* ioctl(2), retried on EINTR; -1 with errno on failure. */
int vu_ioctl(int fd, unsigned long req, void *arg);

/* ---- module parts (each file's init registers its exports) ---- */

/* A connection read burst (socket.c) runs between these: closes deferred in it happen at its end (fd.c). */
void vu_burst_begin(void);
void vu_burst_end(void);

bool vu_init_socket(napi_env env, napi_value exports);
bool vu_init_mmap(napi_env env, napi_value exports);
bool vu_init_fd(napi_env env, napi_value exports);
bool vu_init_eventfd(napi_env env, napi_value exports);
bool vu_init_vfio(napi_env env, napi_value exports);
bool vu_init_iommufd(napi_env env, napi_value exports);
bool vu_init_layouts(napi_env env, napi_value exports);
bool vu_init_blockio(napi_env env, napi_value exports);
bool vu_init_guard(napi_env env, napi_value exports);
bool vu_init_datagram(napi_env env, napi_value exports);

/* ---- mapping registry (mmap.c), used by the async DMA ioctls ---- */

typedef struct vu_map vu_map;
/*
 * Resolves [offset, offset+len) of one of our live mappings (ArrayBuffer `ab`) to a process address and marks the
 * mapping busy, so munmap() refuses it (EBUSY) until vu_map_release. Throws and returns NULL on failure.
 */
vu_map *vu_map_acquire(napi_env env, napi_value ab, uint64_t offset, uint64_t len, uint64_t *addr);
void vu_map_release(vu_map *m);

/* ---- DMA map/unmap ioctls, on the threadpool or inline (job.c) ---- */

enum vu_job_result { VU_JOB_VOID, VU_JOB_U64 /* resolve with the u64 at result_off of arg */ };

typedef struct vu_job {
  /*
   * Async: a dup of the caller's fd (closing the caller's fd mid-flight cannot retarget the ioctl).
   * Sync: the caller's fd itself, used only during the call.
   */
  int fd;
  int aux_fd; /* async: a dup of a file the ioctl reads (IOAS_MAP_FILE), or -1; sync: always -1 */
  bool sync;  /* made by vu_job_init_sync: lives on the caller's stack, owns no fd and no reference */
  unsigned long request;
  const char *name; /* the ioctl's name, for Error.syscall */
  enum vu_job_result result;
  size_t result_off;
  vu_map *map;     /* busy mapping (released at completion), or NULL */
  napi_ref keep;   /* async: the ArrayBuffer kept alive while the kernel may use its address, or NULL */
  int err;
  napi_async_work work;
  napi_deferred deferred;
  uint64_t arg[8]; /* the ioctl struct (<= 64 bytes), 8-byte aligned */
} vu_job;

/* Allocates an async job (fd duplicated). Throws and returns NULL on failure. */
vu_job *vu_job_new(napi_env env, int fd, unsigned long request, const char *name);
/*
 * Prepares `j` (caller's storage) for a synchronous run of the same ioctl on the calling thread: no fd dup, no
 * reference (the caller's arguments stay alive for the duration of the call). Returns j.
 */
vu_job *vu_job_init_sync(vu_job *j, int fd, unsigned long request, const char *name);
/* Either of the above: the one entry point the map/unmap wrappers use for both of their variants. */
vu_job *vu_job_make(napi_env env, vu_job *storage, bool sync, int fd, unsigned long request, const char *name);
/*
 * The (buffer|null, bufferOffset, rawAddress) arguments of the map ioctls, args[0..2]: with a buffer (an mmap()
 * ArrayBuffer), *boff = bufferOffset (default 0); without one, *va = rawAddress (named `va_name` in errors).
 * Throws and returns false on a bad value.
 */
bool vu_job_address_args(napi_env env, const napi_value *args, const char *va_name, bool *has_buf, uint64_t *boff,
                         uint64_t *va);
/*
 * For an ioctl that hands the kernel [boff, boff+len) of `buf` (an mmap() ArrayBuffer): stores its address in *va
 * and marks the mapping busy until the job completes; an async job also keeps `buf` referenced. On failure frees
 * the job, throws and returns false.
 */
bool vu_job_pin_buffer(napi_env env, vu_job *job, napi_value buf, uint64_t boff, uint64_t len, uint64_t *va);
/*
 * The fd of a file the ioctl reads (IOAS_MAP_FILE): a private dup kept in aux_fd for an async job, `fd` itself
 * for a sync one. On failure frees the job, throws and returns -1.
 */
int vu_job_aux_fd(napi_env env, vu_job *job, int fd);
/*
 * Async job: queues it and returns the promise. Sync job: runs the ioctl now and returns its result (or throws
 * the same Error the promise would reject with). Either way the job is consumed; NULL on failure.
 */
napi_value vu_job_submit(napi_env env, vu_job *job);
/*
 * vu_job_submit with the ioctl struct `arg` (len <= sizeof job->arg) copied in, resolving with undefined
 * (VU_JOB_VOID) or with the u64 at `result_off` of the struct after the call (VU_JOB_U64).
 */
napi_value vu_job_submit_arg(napi_env env, vu_job *job, const void *arg, size_t len, enum vu_job_result result,
                             size_t result_off);
void vu_job_free(napi_env env, vu_job *job);
/*
 * The argument block of the lean synchronous map/unmap calls (job.c): VU_ARG_* u64 slots, then VU_INT_* int32 slots
 * (fds, ids, flags), all of which the JS side fills before the call (and reads results from after it): the call
 * itself takes no argument. NULL, with an exception pending, until ioctlArgs() created it.
 */
enum { VU_ARG_IOVA, VU_ARG_SIZE, VU_ARG_ADDR, VU_ARG_COUNT };
enum { VU_INT_FD, VU_INT_ID, VU_INT_FLAGS, VU_INT_FILE_FD, VU_INT_COUNT };
#define VU_IOCTL_BLOCK_SIZE (VU_ARG_COUNT * sizeof(uint64_t) + VU_INT_COUNT * sizeof(int32_t))
uint64_t *vu_ioctl_args(napi_env env);
/* The int32 slots of block `a` (they follow its u64 slots). */
static inline int32_t *vu_ioctl_ints(uint64_t *a) { return (int32_t *)(a + VU_ARG_COUNT); }
/* The block's fd slot `slot`, or -1 with a RangeError pending when it holds no fd (< 0). */
int vu_ioctl_fd(napi_env env, uint64_t *a, int slot, const char *name);
napi_value vu_ioctl_args_buffer(napi_env env, napi_callback_info info);
/*
 * Defines the two entry points of a job ioctl from `name##_common(env, info, bool sync)`: `name` (async, a Promise)
 * and `name##_sync`.
 */
#define VU_JOB_ENTRY_POINTS(name)                                                                              \
  static napi_value name(napi_env env, napi_callback_info info) { return name##_common(env, info, false); }    \
  static napi_value name##_sync(napi_env env, napi_callback_info info) { return name##_common(env, info, true); }

#endif
