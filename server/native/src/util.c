/* Helpers: errors with errno/code/syscall, argument parsing, value construction, calling JS safely. */
#include "common.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

/* ---- state ---- */

vu_state *vu_state_get(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return data;
}

void vu_link_add(vu_state *st, vu_link *link) {
  link->next = st->handles.next;
  link->prev = &st->handles;
  st->handles.next->prev = link;
  st->handles.next = link;
}

void vu_link_remove(vu_link *link) {
  if (link->next == NULL) return;
  link->prev->next = link->next;
  link->next->prev = link->prev;
  link->next = link->prev = NULL;
}

/* ---- errors ---- */

const char *vu_errno_name(int err) {
  const char *n = strerrorname_np(err);
  return n ? n : "EUNKNOWN";
}

static bool set_named(napi_env env, napi_value obj, const char *key, napi_value v) {
  return napi_set_named_property(env, obj, key, v) == napi_ok;
}

napi_value vu_errno_error(napi_env env, int err, const char *syscall, const char *message) {
  char text[512];
  const char *code = vu_errno_name(err);
  if (message)
    snprintf(text, sizeof text, "%s: %s (%s)", syscall, message, code);
  else
    snprintf(text, sizeof text, "%s: %s (%s)", syscall, strerror(err), code);
  napi_value msg, code_v, error, errno_v, sys_v;
  if (napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_v) != napi_ok) return NULL;
  if (napi_create_error(env, NULL, msg, &error) != napi_ok) return NULL;
  if (napi_create_int32(env, err, &errno_v) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sys_v) != napi_ok) return NULL;
  if (!set_named(env, error, "errno", errno_v) || !set_named(env, error, "code", code_v) ||
      !set_named(env, error, "syscall", sys_v))
    return NULL;
  return error;
}

static bool exception_pending(napi_env env) {
  bool pending = false;
  NAPI_LOG(env, napi_is_exception_pending(env, &pending));
  return pending;
}

void vu_throw_errno_msg(napi_env env, int err, const char *syscall, const char *message) {
  if (exception_pending(env)) return;
  napi_value e = vu_errno_error(env, err, syscall, message);
  if (e)
    NAPI_LOG(env, napi_throw(env, e));
  else
    NAPI_LOG(env, napi_throw_error(env, vu_errno_name(err), syscall));
}

void vu_throw_errno(napi_env env, int err, const char *syscall) { vu_throw_errno_msg(env, err, syscall, NULL); }

void vu_throw_type(napi_env env, const char *fmt, ...) {
  if (exception_pending(env)) return;
  char text[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  NAPI_LOG(env, napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", text));
}

void vu_throw_range(napi_env env, const char *fmt, ...) {
  if (exception_pending(env)) return;
  char text[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  NAPI_LOG(env, napi_throw_range_error(env, "ERR_OUT_OF_RANGE", text));
}

void vu_throw_napi(napi_env env, napi_status s, const char *what) {
  if (exception_pending(env)) return;
  const napi_extended_error_info *info = NULL;
  char text[512];
  NAPI_LOG(env, napi_get_last_error_info(env, &info));
  snprintf(text, sizeof text, "Node-API call failed (status %d%s%s): %s", (int)s,
           info && info->error_message ? ", " : "", info && info->error_message ? info->error_message : "", what);
  NAPI_LOG(env, napi_throw_error(env, "ERR_NAPI", text));
}

void vu_report_napi(napi_env env, napi_status s, const char *what) {
  (void)env;
  fprintf(stderr, "vfio-user-native: Node-API call failed (status %d): %s\n", (int)s, what);
}

/* ---- arguments ---- */

bool vu_args(napi_env env, napi_callback_info info, size_t n, napi_value *argv, napi_value *thisv) {
  size_t argc = n;
  NAPI_CALL_R(env, napi_get_cb_info(env, info, &argc, argv, thisv, NULL), false);
  if (argc < n) {
    napi_value undef;
    NAPI_CALL_R(env, napi_get_undefined(env, &undef), false);
    for (size_t i = argc; i < n; i++) argv[i] = undef;
  }
  return true;
}

bool vu_is_nullish(napi_env env, napi_value v) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return true;
  return t == napi_undefined || t == napi_null;
}

static bool get_number(napi_env env, napi_value v, const char *name, double *out) {
  napi_valuetype t;
  NAPI_CALL_R(env, napi_typeof(env, v, &t), false);
  if (t != napi_number) {
    vu_throw_type(env, "%s must be a number", name);
    return false;
  }
  NAPI_CALL_R(env, napi_get_value_double(env, v, out), false);
  return true;
}

bool vu_get_i32(napi_env env, napi_value v, const char *name, int32_t *out) {
  double d;
  if (!get_number(env, v, name, &d)) return false;
  if (d != (double)(int32_t)d) {
    vu_throw_range(env, "%s must be a 32-bit integer", name);
    return false;
  }
  *out = (int32_t)d;
  return true;
}

bool vu_get_u32(napi_env env, napi_value v, const char *name, uint32_t *out) {
  double d;
  if (!get_number(env, v, name, &d)) return false;
  if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d) {
    vu_throw_range(env, "%s must be an unsigned 32-bit integer", name);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

bool vu_get_fd(napi_env env, napi_value v, const char *name, int *out) {
  int32_t fd;
  if (!vu_get_i32(env, v, name, &fd)) return false;
  if (fd < 0) {
    vu_throw_range(env, "%s must be a file descriptor (>= 0)", name);
    return false;
  }
  *out = fd;
  return true;
}

bool vu_args_fd(napi_env env, napi_callback_info info, size_t n, napi_value *argv, int *fd) {
  return vu_args(env, info, n, argv, NULL) && vu_get_fd(env, argv[0], "fd", fd);
}

bool vu_get_u64(napi_env env, napi_value v, const char *name, uint64_t *out) {
  napi_valuetype t;
  NAPI_CALL_R(env, napi_typeof(env, v, &t), false);
  if (t == napi_bigint) {
    int sign = 0;
    size_t words = 2;
    uint64_t w[2] = {0, 0};
    NAPI_CALL_R(env, napi_get_value_bigint_words(env, v, &sign, &words, w), false);
    if (sign || words > 1) {
      vu_throw_range(env, "%s must be a bigint in [0, 2^64)", name);
      return false;
    }
    *out = w[0];
    return true;
  }
  if (t == napi_number) {
    double d;
    NAPI_CALL_R(env, napi_get_value_double(env, v, &d), false);
    if (!(d >= 0 && d <= 9007199254740991.0) || d != (double)(uint64_t)d) {
      vu_throw_range(env, "%s must be a non-negative safe integer or a bigint", name);
      return false;
    }
    *out = (uint64_t)d;
    return true;
  }
  vu_throw_type(env, "%s must be a bigint", name);
  return false;
}

bool vu_get_bool(napi_env env, napi_value v, const char *name, bool dflt, bool *out) {
  napi_valuetype t;
  NAPI_CALL_R(env, napi_typeof(env, v, &t), false);
  if (t == napi_undefined || t == napi_null) {
    *out = dflt;
    return true;
  }
  if (t != napi_boolean) {
    vu_throw_type(env, "%s must be a boolean", name);
    return false;
  }
  NAPI_CALL_R(env, napi_get_value_bool(env, v, out), false);
  return true;
}

bool vu_get_string(napi_env env, napi_value v, const char *name, char *buf, size_t cap) {
  napi_valuetype t;
  NAPI_CALL_R(env, napi_typeof(env, v, &t), false);
  if (t != napi_string) {
    vu_throw_type(env, "%s must be a string", name);
    return false;
  }
  size_t len = 0;
  NAPI_CALL_R(env, napi_get_value_string_utf8(env, v, NULL, 0, &len), false);
  if (len + 1 > cap) {
    vu_throw_errno_msg(env, ENAMETOOLONG, name, "string too long");
    return false;
  }
  NAPI_CALL_R(env, napi_get_value_string_utf8(env, v, buf, cap, &len), false);
  if (strlen(buf) != len) {
    vu_throw_type(env, "%s must not contain NUL characters", name);
    return false;
  }
  return true;
}

bool vu_get_prop(napi_env env, napi_value obj, const char *key, napi_value *out) {
  NAPI_CALL_R(env, napi_get_named_property(env, obj, key, out), false);
  return true;
}

bool vu_get_bytes(napi_env env, napi_value v, const char *name, void **data, size_t *len) {
  bool is;
  NAPI_CALL_R(env, napi_is_typedarray(env, v, &is), false);
  if (is) {
    napi_typedarray_type type;
    size_t length, offset;
    napi_value ab;
    void *p;
    NAPI_CALL_R(env, napi_get_typedarray_info(env, v, &type, &length, &p, &ab, &offset), false);
    size_t elt = 1;
    switch (type) {
      case napi_int16_array:
      case napi_uint16_array:
        elt = 2;
        break;
      case napi_int32_array:
      case napi_uint32_array:
      case napi_float32_array:
        elt = 4;
        break;
      case napi_float64_array:
      case napi_bigint64_array:
      case napi_biguint64_array:
        elt = 8;
        break;
      default:
        break;
    }
    *data = p;
    *len = length * elt;
    return true;
  }
  NAPI_CALL_R(env, napi_is_dataview(env, v, &is), false);
  if (is) {
    napi_value ab;
    size_t offset;
    NAPI_CALL_R(env, napi_get_dataview_info(env, v, len, data, &ab, &offset), false);
    return true;
  }
  NAPI_CALL_R(env, napi_is_arraybuffer(env, v, &is), false);
  if (is) {
    NAPI_CALL_R(env, napi_get_arraybuffer_info(env, v, data, len), false);
    return true;
  }
  vu_throw_type(env, "%s must be a Buffer, TypedArray, DataView or ArrayBuffer", name);
  return false;
}

/* ---- values ---- */

napi_value vu_u64(napi_env env, uint64_t v) {
  napi_value r;
  NAPI_CALL(env, napi_create_bigint_uint64(env, v, &r));
  return r;
}

napi_value vu_i32(napi_env env, int32_t v) {
  napi_value r;
  NAPI_CALL(env, napi_create_int32(env, v, &r));
  return r;
}

napi_value vu_u32(napi_env env, uint32_t v) {
  napi_value r;
  NAPI_CALL(env, napi_create_uint32(env, v, &r));
  return r;
}

napi_value vu_double(napi_env env, double v) {
  napi_value r;
  NAPI_CALL(env, napi_create_double(env, v, &r));
  return r;
}

napi_value vu_undefined(napi_env env) {
  napi_value r;
  NAPI_CALL(env, napi_get_undefined(env, &r));
  return r;
}

bool vu_set_val(napi_env env, napi_value obj, const char *key, napi_value v) {
  if (!v) return false;
  NAPI_CALL_R(env, napi_set_named_property(env, obj, key, v), false);
  return true;
}

bool vu_set_u64(napi_env env, napi_value obj, const char *key, uint64_t v) {
  return vu_set_val(env, obj, key, vu_u64(env, v));
}

bool vu_set_u32(napi_env env, napi_value obj, const char *key, uint32_t v) {
  return vu_set_val(env, obj, key, vu_u32(env, v));
}

bool vu_set_i32(napi_env env, napi_value obj, const char *key, int32_t v) {
  return vu_set_val(env, obj, key, vu_i32(env, v));
}

bool vu_set_bool(napi_env env, napi_value obj, const char *key, bool v) {
  napi_value b;
  NAPI_CALL_R(env, napi_get_boolean(env, v, &b), false);
  return vu_set_val(env, obj, key, b);
}

bool vu_set_str(napi_env env, napi_value obj, const char *key, const char *v) {
  napi_value s;
  NAPI_CALL_R(env, napi_create_string_utf8(env, v, NAPI_AUTO_LENGTH, &s), false);
  return vu_set_val(env, obj, key, s);
}

bool vu_export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  NAPI_CALL_R(env, napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn), false);
  return vu_set_val(env, exports, name, fn);
}

bool vu_export_u32(napi_env env, napi_value exports, const char *name, uint32_t v) {
  return vu_set_u32(env, exports, name, v);
}

/* ---- calling JS ---- */

bool vu_cbscope_open(vu_cbscope *s, napi_env env) {
  memset(s, 0, sizeof *s);
  s->env = env;
  NAPI_CALL_GOTO(env, napi_open_handle_scope(env, &s->hs), fail);
  s->hs_open = true;
  return true;
fail:
  return false;
}

napi_value vu_ref_value(napi_env env, napi_ref ref) {
  napi_value v = NULL;
  if (!ref) return NULL;
  if (napi_get_reference_value(env, ref, &v) != napi_ok) return NULL;
  return v;
}

bool vu_cbscope_enter(vu_cbscope *s, napi_ref resource, napi_async_context ctx) {
  if (s->cs_open) return true;
  napi_value res = vu_ref_value(s->env, resource);
  if (!res) {
    /* The resource must be an object (Node-API checks it); a fresh one is fine. */
    NAPI_CALL_GOTO(s->env, napi_create_object(s->env, &res), fail);
  }
  NAPI_CALL_GOTO(s->env, napi_open_callback_scope(s->env, res, ctx, &s->cs), fail);
  s->cs_open = true;
  return true;
fail:
  return false;
}

void vu_cbscope_close(vu_cbscope *s) {
  /* Closing the callback scope runs process.nextTick callbacks and microtasks queued by the calls. */
  if (s->cs_open) {
    napi_status st = napi_close_callback_scope(s->env, s->cs);
    if (st != napi_ok) vu_report_napi(s->env, st, "napi_close_callback_scope");
    s->cs_open = false;
  }
  if (s->hs_open) {
    napi_status st = napi_close_handle_scope(s->env, s->hs);
    if (st != napi_ok) vu_report_napi(s->env, st, "napi_close_handle_scope");
    s->hs_open = false;
  }
}

static void route_exception(napi_env env) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) != napi_ok || !pending) return;
  napi_value exc;
  if (napi_get_and_clear_last_exception(env, &exc) != napi_ok) return;
  /* Same as an exception thrown from any other event-loop callback: 'uncaughtException', or exit. */
  napi_status st = napi_fatal_exception(env, exc);
  if (st != napi_ok) vu_report_napi(env, st, "napi_fatal_exception");
}

bool vu_call(napi_env env, napi_value recv, napi_value fn, size_t argc, const napi_value *argv) {
  napi_value result;
  return vu_call_result(env, recv, fn, argc, argv, &result);
}

bool vu_call_result(napi_env env, napi_value recv, napi_value fn, size_t argc, const napi_value *argv,
                    napi_value *result) {
  napi_status st = napi_call_function(env, recv, fn, argc, argv, result);
  if (st == napi_ok) return true;
  if (st == napi_pending_exception)
    route_exception(env);
  else
    vu_report_napi(env, st, "napi_call_function");
  return false;
}

bool vu_call_ref(napi_env env, napi_ref recv, napi_ref fn, size_t argc, const napi_value *argv) {
  napi_value result;
  return vu_call_ref_result(env, recv, fn, argc, argv, &result);
}

bool vu_call_ref_result(napi_env env, napi_ref recv, napi_ref fn, size_t argc, const napi_value *argv,
                        napi_value *result) {
  napi_value f = vu_ref_value(env, fn);
  if (!f) return false;
  napi_value r = vu_ref_value(env, recv);
  if (!r) {
    if (napi_get_global(env, &r) != napi_ok) return false;
  }
  return vu_call_result(env, r, f, argc, argv, result);
}

/* ---- syscall helpers ---- */

int vu_set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -1;
  if (fl & O_NONBLOCK) return 0;
  return fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

int vu_set_cloexec(int fd) {
  int fl = fcntl(fd, F_GETFD);
  if (fl < 0) return -1;
  if (fl & FD_CLOEXEC) return 0;
  return fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
}

bool vu_ok(napi_env env, long r, const char *syscall) {
  if (r >= 0) return true;
  vu_throw_errno(env, errno, syscall);
  return false;
}

int vu_ioctl(int fd, unsigned long req, void *arg) {
  int r;
  do r = ioctl(fd, req, arg);
  while (r < 0 && errno == EINTR);
  return r;
}
