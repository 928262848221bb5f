/* Module entry: per-environment state, cleanup hook, registration of every part. */
#include "common.h"

#include <stdlib.h>

static void state_cleanup(void *arg) {
  vu_state *st = arg;
  /* From here on no JS runs for this env: close every live handle (uv_close; fds closed in the close callbacks
   * or right away) so a worker's loop can close and nothing leaks into the next env. */
  st->dying = true;
  while (st->handles.next != &st->handles) {
    vu_link *l = st->handles.next;
    vu_link_remove(l);
    l->teardown(l);
  }
}

static void state_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  /* Runs after the cleanup hook. The references themselves are owned by the dying env. */
  free(data);
}

NAPI_MODULE_INIT(/* napi_env env, napi_value exports */) {
  vu_state *st = calloc(1, sizeof *st);
  if (!st) {
    NAPI_LOG(env, napi_throw_error(env, "ENOMEM", "vfio-user-native: out of memory"));
    return NULL;
  }
  st->env = env;
  st->handles.next = st->handles.prev = &st->handles;
  napi_status s = napi_get_uv_event_loop(env, &st->loop);
  if (s != napi_ok) {
    free(st);
    vu_throw_napi(env, s, "napi_get_uv_event_loop");
    return NULL;
  }
  s = napi_set_instance_data(env, st, state_finalize, NULL);
  if (s != napi_ok) {
    free(st);
    vu_throw_napi(env, s, "napi_set_instance_data");
    return NULL;
  }
  NAPI_CALL(env, napi_add_env_cleanup_hook(env, state_cleanup, st));

  if (!vu_init_socket(env, exports) || !vu_init_mmap(env, exports) || !vu_init_fd(env, exports) ||
      !vu_init_eventfd(env, exports) || !vu_init_vfio(env, exports) || !vu_init_iommufd(env, exports) ||
      !vu_init_layouts(env, exports) || !vu_init_blockio(env, exports) || !vu_init_guard(env, exports) ||
      !vu_init_datagram(env, exports))
    return NULL;
  return exports;
}
