/*
 * eventfd (interrupts, doorbells) and FdWatcher (uv_poll readability of any fd).
 * Never read an eventfd through fs: a blocking read would hold a threadpool thread (or the loop).
 */
#include "common.h"

#include <poll.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* eventfd(initval, nonblock, semaphore) -> fd (always close-on-exec) */
static napi_value js_eventfd(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  uint32_t init = 0;
  bool nonblock, sem;
  if (!vu_args(env, info, 3, argv, NULL)) return NULL;
  if (!vu_is_nullish(env, argv[0]) && !vu_get_u32(env, argv[0], "initval", &init)) return NULL;
  if (!vu_get_bool(env, argv[1], "nonblock", true, &nonblock) || !vu_get_bool(env, argv[2], "semaphore", false, &sem))
    return NULL;
  int fd = eventfd(init, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0) | (sem ? EFD_SEMAPHORE : 0));
  if (!vu_ok(env, fd, "eventfd")) return NULL;
  return vu_i32(env, fd);
}

static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  uint64_t v = 1;
  if (!vu_args(env, info, 2, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!vu_is_nullish(env, argv[1]) && !vu_get_u64(env, argv[1], "value", &v)) return NULL;
  ssize_t n;
  do n = write(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
  if (!vu_ok(env, n, "write(eventfd)")) return NULL;
  if (n != sizeof v) {
    vu_throw_errno_msg(env, EIO, "write(eventfd)", "short write: not an eventfd?");
    return NULL;
  }
  return NULL;
}

/* eventfdRead(fd) -> bigint; 0n when nothing is pending. Never blocks, even on a blocking eventfd. */
static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int r;
  do r = poll(&p, 1, 0);
  while (r < 0 && errno == EINTR);
  if (!vu_ok(env, r, "poll")) return NULL;
  if (p.revents & POLLNVAL) {
    vu_throw_errno(env, EBADF, "read(eventfd)");
    return NULL;
  }
  if (r == 0 || !(p.revents & POLLIN)) return vu_u64(env, 0);
  uint64_t v = 0;
  ssize_t n;
  do n = read(fd, &v, sizeof v);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return vu_u64(env, 0);
    vu_throw_errno(env, errno, "read(eventfd)");
    return NULL;
  }
  if (n != sizeof v) {
    vu_throw_errno_msg(env, EIO, "read(eventfd)", "short read: not an eventfd?");
    return NULL;
  }
  return vu_u64(env, v);
}

/* ---- NativeWatcher(fd, onReadable): uv_poll READABLE; does not read and does not own the fd; stops with an error
 * (EPIPE) on hang-up, with the poll error on POLLERR ---- */

typedef struct watcher {
  vu_link link;
  napi_env env;
  int refs;
  int fd; /* watched, not owned */
  bool closing, detached;
  uv_poll_t poll;
  napi_ref self, cb;
  napi_async_context actx;
} watcher;

static void w_maybe_free(watcher *w) {
  if (--w->refs == 0) free(w);
}

static void w_on_closed(uv_handle_t *h) {
  watcher *w = h->data;
  vu_link_remove(&w->link);
  if (!w->detached) {
    uint32_t rc;
    if (w->cb) NAPI_LOG(w->env, napi_delete_reference(w->env, w->cb));
    if (w->actx) NAPI_LOG(w->env, napi_async_destroy(w->env, w->actx));
    if (w->self) NAPI_LOG(w->env, napi_reference_unref(w->env, w->self, &rc));
  }
  w_maybe_free(w);
}

static void w_close(watcher *w) {
  if (w->closing) return;
  w->closing = true;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, w_on_closed);
}

static void w_teardown(vu_link *l) {
  watcher *w = (watcher *)l;
  w->detached = true;
  w_close(w);
}

static void w_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  watcher *w = data;
  if (!w->detached && w->self) NAPI_LOG(env, napi_delete_reference(env, w->self));
  w->self = NULL;
  w_maybe_free(w);
}

static void w_on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  watcher *w = h->data;
  if (w->closing || w->detached) return;
  vu_cbscope sc;
  if (!vu_cbscope_open(&sc, w->env)) return;
  napi_value argv[1];
  size_t argc = 0;
  /* A hang-up (a pipe whose write end is closed) stays "readable" forever without data: level-triggered polling
   * would wake us on every loop turn. Once nothing is left to read (POLLHUP/POLLERR without POLLIN), stop. Checked
   * with poll() rather than by adding UV_DISCONNECT to the watch mask, which would change how libuv registers an
   * fd another handle of this process may also watch. */
  bool hung = false;
  if (status >= 0) {
    struct pollfd p = {.fd = w->fd, .events = POLLIN};
    int r;
    do r = poll(&p, 1, 0);
    while (r < 0 && errno == EINTR);
    hung = r > 0 && (p.revents & (POLLHUP | POLLERR | POLLNVAL)) && !(p.revents & POLLIN);
  }
  if (status < 0 || hung) {
    /* Do not spin on a broken fd: stop, and tell the callback why. */
    uv_poll_stop(&w->poll);
    argv[0] = status < 0 ? vu_errno_error(w->env, -status, "uv_poll", NULL)
                         : vu_errno_error(w->env, EPIPE, "uv_poll", "the fd hung up (nothing left to read)");
    if (argv[0]) argc = 1;
  }
  if (vu_cbscope_enter(&sc, w->self, w->actx)) vu_call_ref(w->env, w->self, w->cb, argc, argv);
  vu_cbscope_close(&sc);
}

static napi_value w_ctor(napi_env env, napi_callback_info info) {
  napi_value argv[2], thisv;
  int fd;
  if (!vu_args(env, info, 2, argv, &thisv) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[1], &t));
  if (t != napi_function) {
    vu_throw_type(env, "onReadable must be a function");
    return NULL;
  }
  vu_state *st = vu_state_get(env);
  watcher *w = calloc(1, sizeof *w);
  if (!w || !st) {
    free(w);
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  w->env = env;
  w->fd = fd;
  w->link.teardown = w_teardown;
  /* Note: libuv makes the fd non-blocking (shared with every holder of the file description). */
  int r = uv_poll_init(st->loop, &w->poll, fd);
  if (r < 0) {
    free(w);
    vu_throw_errno(env, -r, "uv_poll_init");
    return NULL;
  }
  w->poll.data = w;
  w->refs = 2; /* wrapper + handle */
  napi_value name;
  napi_status s = napi_wrap(env, thisv, w, w_finalize, NULL, NULL);
  if (s != napi_ok) {
    w->refs = 1;
    w->closing = true;
    w->detached = true; /* nothing JS-side to release */
    uv_close((uv_handle_t *)&w->poll, w_on_closed);
    vu_throw_napi(env, s, "napi_wrap");
    return NULL;
  }
  vu_link_add(st, &w->link);
  /* Strong while watching: the callback keeps firing even if JS drops the watcher object. */
  if (napi_create_reference(env, thisv, 1, &w->self) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &w->cb) != napi_ok ||
      napi_create_string_utf8(env, "VfioUserFdWatcher", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, thisv, name, &w->actx) != napi_ok) {
    w_close(w);
    vu_throw_napi(env, napi_generic_failure, "FdWatcher");
    return NULL;
  }
  r = uv_poll_start(&w->poll, UV_READABLE, w_on_poll);
  if (r < 0) {
    w_close(w);
    vu_throw_errno(env, -r, "uv_poll_start");
    return NULL;
  }
  return thisv;
}

static napi_value w_close_js(napi_env env, napi_callback_info info) {
  napi_value thisv;
  if (!vu_args(env, info, 0, NULL, &thisv)) return NULL;
  void *p;
  NAPI_CALL(env, napi_unwrap(env, thisv, &p));
  w_close(p);
  return NULL;
}

bool vu_init_eventfd(napi_env env, napi_value exports) {
  vu_state *st = vu_state_get(env);
  if (!st) return false;
  const napi_property_descriptor props[] = {
      {"close", NULL, w_close_js, NULL, NULL, NULL, napi_default_method, NULL},
  };
  napi_value cls;
  NAPI_CALL_R(env, napi_define_class(env, "NativeWatcher", NAPI_AUTO_LENGTH, w_ctor, NULL, 1, props, &cls), false);
  NAPI_CALL_R(env, napi_create_reference(env, cls, 1, &st->ctor_watcher), false);
  return vu_set_val(env, exports, "NativeWatcher", cls) && vu_export_fn(env, exports, "eventfd", js_eventfd) &&
         vu_export_fn(env, exports, "eventfdWrite", js_eventfd_write) &&
         vu_export_fn(env, exports, "eventfdRead", js_eventfd_read);
}
