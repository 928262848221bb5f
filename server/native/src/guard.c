/*
 * Defences against a hostile client's fds (docs/hardening.md): guest-memory copies that survive a file shrinking
 * under its mapping, interrupt-fd writes that never block, the fd limit, and a pipe() for tests.
 *
 * Guarded copies. A client may ftruncate the memfd it handed over with DMA_MAP after we mapped it; touching a
 * page past the new end of file raises SIGBUS, which would kill the process. guardedCopy() runs memcpy with a
 * thread-local sigjmp_buf armed: the process-wide SIGBUS handler (installed once) siglongjmps back when the
 * faulting thread has a guard armed, and otherwise restores the previous disposition and returns, so the fault
 * re-executes and behaves as it did before we were loaded (a genuine bug still crashes with a core). The handler
 * is installed with SA_NODEFER, so jumping out of it leaves SIGBUS unblocked and sigsetjmp need not save the mask
 * (no syscall on the fast path). Files sealed with F_SEAL_SHRINK cannot shrink: policy (TS) copies those in JS.
 *
 * Interrupt fds. signalFd() writes an eventfd/pipe without ever blocking: the fd is O_NONBLOCK from SET_IRQS on
 * (setNonBlocking), and since the client shares the file description and could clear the flag, every signal
 * checks it first (one fcntl) and sets it again if it was cleared. A full eventfd counter or a full pipe answers
 * EAGAIN, which the caller counts as a failed signal.
 */
#include "common.h"

#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- SIGBUS guard ---- */

/* volatile: the compiler must not drop the arming store as dead (memcpy is a builtin it sees through). */
static __thread sigjmp_buf *volatile guard_jmp;
static struct sigaction prev_bus;
static pthread_once_t bus_once = PTHREAD_ONCE_INIT;
static int bus_install_err;

static void on_sigbus(int sig, siginfo_t *si, void *uc) {
  sigjmp_buf *j = guard_jmp;
  if (j) {
    guard_jmp = NULL;
    siglongjmp(*j, 1);
  }
  /* Not a guarded copy: hand the fault to whoever had SIGBUS before us (default: die with a core). */
  if (prev_bus.sa_flags & SA_SIGINFO) {
    if (prev_bus.sa_sigaction) {
      prev_bus.sa_sigaction(sig, si, uc);
      return;
    }
  } else if (prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN) {
    prev_bus.sa_handler(sig);
    return;
  }
  sigaction(SIGBUS, &prev_bus, NULL); /* returning re-executes the access under the old disposition */
}

static void install_bus(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, &prev_bus) < 0) bus_install_err = errno;
}

/* memcpy that returns false instead of dying when a page of src or dst is gone (SIGBUS). */
static bool copy_guarded(void *dst, const void *src, size_t n) {
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0)) return false; /* the handler disarmed the guard */
  guard_jmp = &jb;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  memcpy(dst, src, n);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  guard_jmp = NULL;
  return true;
}

static bool view_range(napi_env env, napi_value v, const char *name, uint64_t off, uint64_t len, uint8_t **p) {
  void *data;
  size_t size;
  if (!vu_get_bytes(env, v, name, &data, &size)) return false;
  if (off > size || len > size - off) {
    vu_throw_range(env, "%s: range %llu+%llu is outside its %zu bytes", name, (unsigned long long)off,
                   (unsigned long long)len, size);
    return false;
  }
  *p = (uint8_t *)data + off;
  return true;
}

/* guardedCopy(dst, dstOffset, src, srcOffset, length) -> boolean (false: SIGBUS, nothing else changed) */
static napi_value js_guarded_copy(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  uint64_t doff, soff, len;
  uint8_t *d, *s;
  if (!vu_args(env, info, 5, argv, NULL) || !vu_get_u64(env, argv[1], "dstOffset", &doff) ||
      !vu_get_u64(env, argv[3], "srcOffset", &soff) || !vu_get_u64(env, argv[4], "length", &len) ||
      !view_range(env, argv[0], "dst", doff, len, &d) || !view_range(env, argv[2], "src", soff, len, &s))
    return NULL;
  pthread_once(&bus_once, install_bus);
  if (bus_install_err) {
    vu_throw_errno(env, bus_install_err, "sigaction(SIGBUS)");
    return NULL;
  }
  napi_value r;
  NAPI_CALL(env, napi_get_boolean(env, len == 0 || copy_guarded(d, s, (size_t)len), &r));
  return r;
}

/* ---- interrupt fds ---- */

static napi_value js_set_nonblocking(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args_fd(env, info, 1, argv, &fd)) return NULL;
  vu_ok(env, vu_set_nonblock(fd), "fcntl(O_NONBLOCK)");
  return NULL;
}

/* signalFd(fd, value?: bigint) -> 0 | errno (EAGAIN: counter or pipe full). Never blocks, never throws for I/O. */
static napi_value js_signal_fd(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t v = 1;
  if (!vu_args_fd(env, info, 2, argv, &fd)) return NULL;
  if (!vu_is_nullish(env, argv[1]) && !vu_get_u64(env, argv[1], "value", &v)) return NULL;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return vu_i32(env, errno);
  if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return vu_i32(env, errno);
  ssize_t n;
  do n = write(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
  if (n < 0) return vu_i32(env, errno == EWOULDBLOCK ? EAGAIN : errno);
  return vu_i32(env, n == sizeof v ? 0 : EIO);
}

/* pipe() -> [readFd, writeFd], both close-on-exec (test support: a client's interrupt fd that is not an eventfd) */
static napi_value js_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int p[2];
  if (!vu_ok(env, pipe2(p, O_CLOEXEC), "pipe2")) return NULL;
  napi_value arr;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok ||
      napi_set_element(env, arr, 0, vu_i32(env, p[0])) != napi_ok ||
      napi_set_element(env, arr, 1, vu_i32(env, p[1])) != napi_ok) {
    close(p[0]);
    close(p[1]);
    vu_throw_napi(env, napi_generic_failure, "pipe");
    return NULL;
  }
  return arr;
}

/* ---- fd limit ---- */

static napi_value limit_obj(napi_env env, const struct rlimit *rl) {
  napi_value o;
  NAPI_CALL(env, napi_create_object(env, &o));
  double soft = rl->rlim_cur == RLIM_INFINITY ? -1 : (double)rl->rlim_cur;
  double hard = rl->rlim_max == RLIM_INFINITY ? -1 : (double)rl->rlim_max;
  if (!vu_set_val(env, o, "soft", vu_double(env, soft)) || !vu_set_val(env, o, "hard", vu_double(env, hard)))
    return NULL;
  return o;
}

/* nofileLimit() -> {soft, hard} (-1: unlimited) */
static napi_value js_nofile_limit(napi_env env, napi_callback_info info) {
  (void)info;
  struct rlimit rl;
  if (!vu_ok(env, getrlimit(RLIMIT_NOFILE, &rl), "getrlimit")) return NULL;
  return limit_obj(env, &rl);
}

/* setNofileLimit(soft) -> {soft, hard}: sets the soft limit (at most the hard one). */
static napi_value js_set_nofile_limit(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  uint64_t want;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_u64(env, argv[0], "soft", &want)) return NULL;
  struct rlimit rl;
  if (!vu_ok(env, getrlimit(RLIMIT_NOFILE, &rl), "getrlimit")) return NULL;
  if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
  rl.rlim_cur = (rlim_t)want;
  if (!vu_ok(env, setrlimit(RLIMIT_NOFILE, &rl), "setrlimit")) return NULL;
  return limit_obj(env, &rl);
}

bool vu_init_guard(napi_env env, napi_value exports) {
  return vu_export_fn(env, exports, "guardedCopy", js_guarded_copy) &&
         vu_export_fn(env, exports, "setNonBlocking", js_set_nonblocking) &&
         vu_export_fn(env, exports, "signalFd", js_signal_fd) && vu_export_fn(env, exports, "pipe", js_pipe) &&
         vu_export_fn(env, exports, "nofileLimit", js_nofile_limit) &&
         vu_export_fn(env, exports, "setNofileLimit", js_set_nofile_limit);
}
