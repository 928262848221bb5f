/*
 * UNIX stream sockets with fd passing: Connection (framed receive, queued send), Listener, helpers.
 *
 * The addon owns each fd and one uv_poll_t per fd. Receive: recvmsg(MSG_DONTWAIT|MSG_CMSG_CLOEXEC) with room for
 * SCM_MAX_FD (253) fds; MSG_CTRUNC (the kernel dropped fds: RLIMIT_NOFILE) fails that message (onMessage's fourth
 * argument), not the connection. Framing ("bulk" and "exact": which
 * message owns the fds of a read) is plain C in framing.c, shared with the libFuzzer harness; exact framing reads
 * a message's rest and the next header with one recvmmsg (conn_read_burst). All messages of one wakeup are delivered
 * inside one callback scope, so nextTick/microtasks drain once per wakeup.
 *
 * Send: sendmsg(MSG_DONTWAIT|MSG_NOSIGNAL) right away; the unsent rest is queued (fds F_DUPFD_CLOEXEC'd so the
 * caller may close its own copies, sent once with the first byte), WRITABLE is polled until the queue drains, then
 * onDrain. A message is queued whole whenever anything is queued before it, so messages never interleave. Sends
 * without fds from inside a read burst are corked and leave together (conn_read, conn_cork_flush).
 *
 * Lifetime: the C struct is freed when both the uv_close callback and the JS wrapper's finalizer have run
 * (refcount). While started and not closed, the wrapper is held strongly, so callbacks always have a receiver.
 */
#include "common.h"
#include "framing.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define HDR_SIZE VU_HDR_SIZE
#define MAX_FDS VU_MAX_FDS
#define DEFAULT_MAX_MSG (16u * 1024 * 1024)
#define READS_PER_WAKEUP 16
#define CORK_MAX (64 * 1024) /* larger sends, and batches past this size, go out at once */
#define ACCEPTS_PER_WAKEUP 64

#define close_fds vu_close_fds

/* A Connection or Listener fd handed over by JS: made non-blocking and close-on-exec. Throws on failure. */
static bool adopt_fd(napi_env env, int fd) {
  if (vu_set_nonblock(fd) < 0 || vu_set_cloexec(fd) < 0) {
    vu_throw_errno(env, errno, "fcntl");
    return false;
  }
  return true;
}

/*
 * The end of a constructor: wraps the new handle `obj` in `thisv`, registers its `link` for env teardown and makes
 * the weak `self` reference. If the wrap fails, nothing refers to `obj` yet: it is freed and the error thrown.
 * Returns thisv, or NULL with an exception pending.
 */
static napi_value wrap_handle(napi_env env, vu_state *st, napi_value thisv, void *obj, napi_finalize finalize,
                              vu_link *link, napi_ref *self) {
  napi_status s = napi_wrap(env, thisv, obj, finalize, NULL, NULL);
  if (s != napi_ok) {
    free(obj);
    vu_throw_napi(env, s, "napi_wrap");
    return NULL;
  }
  vu_link_add(st, link);
  NAPI_CALL(env, napi_create_reference(env, thisv, 0, self));
  return thisv;
}

/* =============================================================================================== Connection */

typedef struct chunk {
  struct chunk *next;
  size_t len, off;
  int nfds; /* fds still to send with the first byte; 0 once sent */
  int *fds;
  uint8_t data[];
} chunk;

enum { C_NEW, C_OPEN, C_CLOSING, C_CLOSED };

/* Direct reads: at most this many regions, and replies built on the stack (a PCIe config space is 4 KiB). */
#define DIRECT_MAX_REGIONS 16
#define DIRECT_MAX_COUNT 4096
#define RW_HEAD (HDR_SIZE + 16) /* REGION_READ/WRITE: header, then offset u64, region u32, count u32 */

typedef struct {
  const uint8_t *data; /* NULL: not read directly */
  size_t len;
  napi_ref ref; /* keeps the bytes' ArrayBuffer alive */
} direct_region;

typedef struct conn {
  vu_link link;
  napi_env env;
  uv_loop_t *loop;
  int fd;
  int refs; /* JS wrapper + uv handle */
  int state;
  bool detached; /* env torn down: never call into JS again */
  bool poll_inited;
  bool paused;
  bool want_drain;
  int delivering; /* nesting depth of deliver() */
  int events;     /* current uv_poll mask */
  uv_poll_t poll;
  napi_ref self; /* wrapper: weak normally, strong while open */
  napi_ref handlers, on_message, on_close, on_drain;
  napi_async_context actx;
  bool actx_inited;
  vu_rx rx; /* receive buffer and the fds of its messages (framing.c) */
  /* send */
  chunk *q_head, *q_tail;
  size_t q_bytes;
  /* JS-owned buffers (kept alive by refs): small messages are copied into the inbox, sendOutbox() sends from the outbox */
  napi_ref inbox_ref, outbox_ref;
  uint8_t *inbox, *outbox;
  size_t inbox_len, outbox_len;
  /* direct reads (conn_direct_read): REGION_READs of side-effect-free bytes answered here, without JS */
  int32_t *direct_ctl; /* JS-owned: [0] budget (JS arms, each direct read takes one), [1] reads answered */
  napi_ref direct_ctl_ref;
  direct_region direct[DIRECT_MAX_REGIONS];
  uint16_t direct_command;
  uint32_t direct_reply_flags, direct_max_count;
  size_t direct_send_high;
  /* replies of one read burst, sent with one send (see conn_cork_flush) */
  bool corking;
  uint8_t *cork;
  size_t cork_len;
  /* why it closed */
  int close_err;
  const char *close_sys;
  const char *close_msg;
} conn;

static void conn_update_poll(conn *c);
static void conn_on_poll(uv_poll_t *h, int status, int events);
static int conn_send_core(conn *c, const void *data, size_t len, const int *fds, uint32_t nfds, int *err,
                          const char **sys);

static void conn_maybe_free(conn *c) {
  if (--c->refs == 0) free(c);
}

/*
 * Closes the socket and every fd still owned here (undelivered received fds, queued dups). Called right after
 * uv_poll_stop + uv_close (libuv has dropped the fd from epoll by then), so fds never outlive close() even when
 * the loop does not run again (worker teardown).
 */
static void conn_release_fds(conn *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  vu_rx_close_fds(&c->rx);
  for (chunk *k = c->q_head; k; k = k->next) {
    close_fds(k->fds, k->nfds);
    k->nfds = 0;
  }
}

/* Frees buffers; only once no callback can still be walking them (uv_close callback, or never started). */
static void conn_release_mem(conn *c) {
  vu_rx_free(&c->rx);
  while (c->q_head) {
    chunk *k = c->q_head;
    c->q_head = k->next;
    free(k->fds);
    free(k);
  }
  c->q_tail = NULL;
  c->q_bytes = 0;
  free(c->cork);
  c->cork = NULL;
  c->cork_len = 0;
}

static void conn_direct_release(conn *c) {
  napi_env env = c->env;
  if (c->direct_ctl_ref) NAPI_LOG(env, napi_delete_reference(env, c->direct_ctl_ref));
  c->direct_ctl_ref = NULL;
  c->direct_ctl = NULL;
  for (int i = 0; i < DIRECT_MAX_REGIONS; i++) {
    if (c->direct[i].ref) NAPI_LOG(env, napi_delete_reference(env, c->direct[i].ref));
    c->direct[i] = (direct_region){0};
  }
}

static void conn_release_js(conn *c) {
  napi_env env = c->env;
  conn_direct_release(c);
  if (c->handlers) NAPI_LOG(env, napi_delete_reference(env, c->handlers));
  if (c->on_message) NAPI_LOG(env, napi_delete_reference(env, c->on_message));
  if (c->on_close) NAPI_LOG(env, napi_delete_reference(env, c->on_close));
  if (c->on_drain) NAPI_LOG(env, napi_delete_reference(env, c->on_drain));
  c->handlers = c->on_message = c->on_close = c->on_drain = NULL;
  if (c->inbox_ref) NAPI_LOG(env, napi_delete_reference(env, c->inbox_ref));
  if (c->outbox_ref) NAPI_LOG(env, napi_delete_reference(env, c->outbox_ref));
  c->inbox_ref = c->outbox_ref = NULL;
  c->inbox = c->outbox = NULL;
  c->inbox_len = c->outbox_len = 0;
  if (c->actx_inited) NAPI_LOG(env, napi_async_destroy(env, c->actx));
  c->actx_inited = false;
  if (c->self) {
    uint32_t rc = 0;
    NAPI_LOG(env, napi_reference_unref(env, c->self, &rc)); /* back to weak: the wrapper may be collected now */
  }
}

static void conn_on_closed(uv_handle_t *h) {
  conn *c = h->data;
  conn_release_mem(c);
  c->state = C_CLOSED;
  vu_link_remove(&c->link);
  if (!c->detached) {
    napi_env env = c->env;
    vu_cbscope sc;
    if (vu_cbscope_open(&sc, env)) {
      if (c->on_close && vu_cbscope_enter(&sc, c->self, c->actx)) {
        napi_value argv[1];
        size_t argc = 0;
        if (c->close_err) {
          argv[0] = vu_errno_error(env, c->close_err, c->close_sys ? c->close_sys : "recvmsg", c->close_msg);
          if (argv[0]) argc = 1;
        }
        vu_call_ref(env, c->handlers, c->on_close, argc, argv);
      }
      vu_cbscope_close(&sc);
    }
    conn_release_js(c);
  }
  conn_maybe_free(c);
}

static void conn_begin_close(conn *c) {
  if (c->state != C_NEW && c->state != C_OPEN) return;
  if (c->poll_inited) {
    c->state = C_CLOSING;
    /* libuv forgets the fd first (uv_poll_stop removes it from epoll), then it is closed. */
    uv_poll_stop(&c->poll);
    uv_close((uv_handle_t *)&c->poll, conn_on_closed);
    conn_release_fds(c);
  } else {
    /* Never started: the only JS references it can hold are setDirectReads()'s (start() takes the others). */
    if (!c->detached) conn_direct_release(c);
    conn_release_fds(c);
    conn_release_mem(c);
    c->state = C_CLOSED;
    vu_link_remove(&c->link);
  }
}

static void conn_fail(conn *c, int err, const char *sys, const char *msg) {
  if (c->state != C_NEW && c->state != C_OPEN) return;
  c->close_err = err;
  c->close_sys = sys;
  c->close_msg = msg;
  conn_begin_close(c);
}

static void conn_teardown(vu_link *l) {
  conn *c = (conn *)l;
  c->detached = true;
  conn_begin_close(c);
}

static void conn_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  conn *c = data;
  if (!c->detached && c->self) NAPI_LOG(env, napi_delete_reference(env, c->self));
  c->self = NULL;
  if (c->state == C_NEW) {
    /* Never started and dropped: nothing else owns the fd. */
    if (!c->detached) conn_direct_release(c);
    conn_release_fds(c);
    conn_release_mem(c);
    c->state = C_CLOSED;
    vu_link_remove(&c->link);
  }
  conn_maybe_free(c);
}

static conn *conn_unwrap(napi_env env, napi_value thisv) {
  void *p = NULL;
  NAPI_CALL(env, napi_unwrap(env, thisv, &p));
  return p;
}

/* The conn behind `this` of a method without arguments; NULL with an exception pending. */
static conn *conn_this(napi_env env, napi_callback_info info) {
  napi_value thisv;
  if (!vu_args(env, info, 0, NULL, &thisv)) return NULL;
  return conn_unwrap(env, thisv);
}

/* new NativeConnection(fd): adopts fd (made non-blocking and close-on-exec). */
static napi_value conn_ctor(napi_env env, napi_callback_info info) {
  napi_value argv[1], thisv;
  int fd;
  if (!vu_args(env, info, 1, argv, &thisv) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  if (!adopt_fd(env, fd)) return NULL;
  vu_state *st = vu_state_get(env);
  conn *c = calloc(1, sizeof *c);
  if (!c || !st) {
    free(c);
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  c->env = env;
  c->loop = st->loop;
  c->fd = fd;
  c->refs = 1;
  c->state = C_NEW;
  c->rx.max_msg = DEFAULT_MAX_MSG;
  c->link.teardown = conn_teardown;
  return wrap_handle(env, st, thisv, c, conn_finalize, &c->link, &c->self);
}

/*
 * Direct reads (docs/native-addon.md): a plain REGION_READ (flags 0, no fds) of a region JS gave bytes for, within
 * them and within the limits, answered from those bytes here, while JS has the budget armed; true when answered
 * (or the connection failed sending). Anything else is left for onMessage. JS sets the budget to 0 whenever the
 * next message might not be answerable this way (something queued or running, an observer, a stopped device) and
 * re-arms it when a message reaches it with nothing of the kind; the budget bounds how long a change JS is not
 * told about (the log level) goes unseen.
 */
static bool conn_direct_read(conn *c, const uint8_t *msg, uint32_t size) {
  if (size != RW_HEAD) return false;
  uint16_t command;
  uint32_t msg_size, flags_error[2], region, count;
  uint64_t offset;
  memcpy(&command, msg + 2, 2);
  memcpy(&msg_size, msg + 4, 4);
  memcpy(flags_error, msg + 8, 8);
  if (command != c->direct_command || msg_size != size || flags_error[0] || flags_error[1]) return false;
  memcpy(&offset, msg + HDR_SIZE, 8);
  memcpy(&region, msg + HDR_SIZE + 8, 4);
  memcpy(&count, msg + HDR_SIZE + 12, 4);
  if (region >= DIRECT_MAX_REGIONS || !c->direct[region].data) return false;
  size_t len = c->direct[region].len;
  if (count == 0 || count > DIRECT_MAX_COUNT || count > c->direct_max_count || offset >= len || count > len - offset)
    return false;
  if (c->q_bytes > c->direct_send_high) return false; /* JS holds reading (a client that does not read) */
  uint8_t reply[RW_HEAD + DIRECT_MAX_COUNT];
  uint32_t reply_size = RW_HEAD + count, zero = 0;
  memcpy(reply, msg, 4); /* id, command */
  memcpy(reply + 4, &reply_size, 4);
  memcpy(reply + 8, &c->direct_reply_flags, 4);
  memcpy(reply + 12, &zero, 4);
  memcpy(reply + HDR_SIZE, msg + HDR_SIZE, 16); /* offset, region, count echoed */
  memcpy(reply + RW_HEAD, c->direct[region].data + offset, count);
  c->direct_ctl[0]--;
  c->direct_ctl[1]++;
  int err = 0;
  const char *sys = NULL;
  if (conn_send_core(c, reply, reply_size, NULL, 0, &err, &sys) < 0) conn_fail(c, err, sys, NULL);
  return true;
}

/* Delivers every complete buffered message. `sc` is NULL when called from JS (flush). False once closed. */
static bool conn_deliver(conn *c, vu_cbscope *sc) {
  napi_env env = c->env;
  c->delivering++;
  while (c->state == C_OPEN && !c->paused) {
    const uint8_t *msg;
    uint32_t size;
    int fds[MAX_FDS];
    int nfds;
    bool truncated;
    const char *why;
    int r = vu_rx_next(&c->rx, &msg, &size, fds, &nfds, &truncated, &why);
    if (r < 0) {
      conn_fail(c, -r, "recvmsg", why);
      break;
    }
    if (r == 0) break;
    if (c->direct_ctl && c->direct_ctl[0] > 0 && nfds == 0 && !truncated && conn_direct_read(c, msg, size)) continue;
    /* consumed before JS runs: JS may pause, close or send from the callback */
    if (sc && !vu_cbscope_enter(sc, c->self, c->actx)) {
      close_fds(fds, nfds);
      conn_fail(c, EIO, "napi_open_callback_scope", "cannot enter a callback scope");
      break;
    }
    napi_handle_scope hs;
    if (napi_open_handle_scope(env, &hs) != napi_ok) {
      close_fds(fds, nfds);
      conn_fail(c, EIO, "napi_open_handle_scope", NULL);
      break;
    }
    /* onMessage(size, fds | undefined, data | undefined[, true]): a message that fits the inbox is copied there (JS
     * copies it out before anything else runs), a bigger one comes as its own Buffer; a fourth argument `true`
     * when the kernel dropped fds of this message (MSG_CTRUNC). */
    napi_value argv[4];
    bool ok = napi_create_uint32(env, size, &argv[0]) == napi_ok;
    if (ok && size <= c->inbox_len) {
      memcpy(c->inbox, msg, size);
      ok = napi_get_undefined(env, &argv[2]) == napi_ok;
    } else if (ok) {
      ok = napi_create_buffer_copy(env, size, msg, NULL, &argv[2]) == napi_ok;
    }
    if (ok)
      ok = (nfds ? napi_create_array_with_length(env, (size_t)nfds, &argv[1]) : napi_get_undefined(env, &argv[1])) ==
           napi_ok;
    if (ok && truncated) ok = napi_get_boolean(env, true, &argv[3]) == napi_ok;
    for (int i = 0; ok && i < nfds; i++) {
      napi_value v;
      ok = napi_create_int32(env, fds[i], &v) == napi_ok && napi_set_element(env, argv[1], (uint32_t)i, v) == napi_ok;
    }
    if (!ok) {
      close_fds(fds, nfds);
      NAPI_LOG(env, napi_close_handle_scope(env, hs));
      conn_fail(c, ENOMEM, "napi_create_buffer_copy", "cannot hand the message to JS");
      break;
    }
    /* From here the fds belong to JS. onMessage may answer by returning a length n > 0: outbox[0, n) is then sent
     * as by sendOutbox(n) (a reply without a second call across the JS boundary). */
    napi_value ret;
    uint32_t reply_len = 0;
    if (vu_call_ref_result(env, c->handlers, c->on_message, truncated ? 4 : 3, argv, &ret) &&
        napi_get_value_uint32(env, ret, &reply_len) != napi_ok)
      reply_len = 0; /* undefined: nothing to send */
    NAPI_LOG(env, napi_close_handle_scope(env, hs));
    if (reply_len) {
      int err = 0;
      const char *sys = NULL;
      if (reply_len > c->outbox_len) {
        conn_fail(c, ERANGE, "onMessage", "the returned reply length exceeds the outbox");
        break;
      }
      if (conn_send_core(c, c->outbox, reply_len, NULL, 0, &err, &sys) < 0) conn_fail(c, err, sys, NULL);
    }
  }
  c->delivering--;
  if (c->state == C_OPEN && !c->delivering) vu_rx_settle(&c->rx);
  return c->state == C_OPEN;
}

/* A chunk holding a copy of `data` and no fds yet, or NULL when malloc fails. */
static chunk *chunk_new(const uint8_t *data, size_t len) {
  chunk *k = malloc(sizeof *k + len);
  if (!k) return NULL;
  k->next = NULL;
  k->len = len;
  k->off = 0;
  k->nfds = 0;
  k->fds = NULL;
  memcpy(k->data, data, len);
  return k;
}

/* Appends a chunk to the connection's send queue. */
static void queue_append(conn *c, chunk *k) {
  if (c->q_tail)
    c->q_tail->next = k;
  else
    c->q_head = k;
  c->q_tail = k;
  c->q_bytes += k->len;
}

/* Queues bytes without fds behind whatever is queued (no JS exception: the connection fails on ENOMEM). */
static bool queue_bytes(conn *c, const uint8_t *data, size_t len) {
  chunk *k = chunk_new(data, len);
  if (!k) {
    conn_fail(c, ENOMEM, "malloc", NULL);
    return false;
  }
  queue_append(c, k);
  return true;
}

/*
 * Sends the corked replies (see conn_read) with one send; what the socket does not take is queued (onDrain
 * follows). False once the connection failed.
 */
static bool conn_cork_flush(conn *c) {
  size_t len = c->cork_len;
  if (!len) return c->state == C_OPEN;
  c->cork_len = 0;
  if (c->state != C_OPEN) return false;
  ssize_t n;
  do n = send(c->fd, c->cork, len, MSG_DONTWAIT | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      conn_fail(c, errno, "sendmsg", NULL);
      return false;
    }
    n = 0;
  }
  if ((size_t)n < len) {
    if (!queue_bytes(c, c->cork + n, len - (size_t)n)) return false;
    c->want_drain = true;
    conn_update_poll(c);
  }
  return c->state == C_OPEN;
}

typedef union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
} cmsg_buf;

/*
 * Reads and delivers what the socket has, up to READS_PER_WAKEUP reads. With exact framing the rest of a message
 * and the next message's header are read by one recvmmsg (framing.c: vu_rx_read_space_ahead), so a client that
 * pipelines costs one read per message; at a message boundary the header and the 32 bytes behind it are, so a
 * message of up to 48 bytes (REGION_READ, DMA_MAP, DMA_UNMAP) from a client that waits for each reply does too.
 */
static void conn_read_burst(conn *c, vu_cbscope *sc) {
  if (!conn_deliver(c, sc)) return;
  int budget = READS_PER_WAKEUP;
  static _Thread_local cmsg_buf cbuf[2]; /* per loop thread; used only between a read and vu_collect_fds */
  while (budget > 0 && c->state == C_OPEN && !c->paused) {
    /* No next message known: the replies corked so far go out before a read that may find nothing. */
    if (c->rx.end - c->rx.start < HDR_SIZE && !conn_cork_flush(c)) return;
    struct iovec iov[2];
    int e = vu_rx_read_space_ahead(&c->rx, &iov[0], &iov[1]);
    if (e) {
      conn_fail(c, e, e == ENOMEM ? "malloc" : "recvmsg", NULL);
      return;
    }
    bool ahead = iov[1].iov_len > 0;
    struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    for (int i = 0; i < 2; i++) {
      mm[i].msg_hdr.msg_iov = &iov[i];
      mm[i].msg_hdr.msg_iovlen = 1;
      mm[i].msg_hdr.msg_control = cbuf[i].buf;
      mm[i].msg_hdr.msg_controllen = sizeof cbuf[i].buf;
    }
    int got = 1;
    ssize_t n;
    if (ahead) {
      got = recvmmsg(c->fd, mm, 2, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, NULL);
      n = got < 0 ? -1 : (ssize_t)mm[0].msg_len;
    } else {
      n = recvmsg(c->fd, &mm[0].msg_hdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      conn_fail(c, errno, ahead ? "recvmmsg" : "recvmsg", NULL);
      return;
    }
    budget--;
    int fds[MAX_FDS];
    int nfds = vu_collect_fds(&mm[0].msg_hdr, fds);
    const char *why;
    size_t want0 = iov[0].iov_len;
    e = vu_rx_received(&c->rx, (size_t)n, fds, nfds, mm[0].msg_hdr.msg_flags, &why);
    if (e) {
      if (got == 2) { /* the read-ahead's fds, if any, have no message to go to now */
        nfds = vu_collect_fds(&mm[1].msg_hdr, fds);
        close_fds(fds, nfds);
      }
      if (e == VU_RX_EOF)
        conn_fail(c, 0, NULL, NULL); /* orderly EOF: onClose() without an error */
      else
        conn_fail(c, e, e == ENOMEM ? "malloc" : "recvmsg", why);
      return;
    }
    /* A short read means the socket was drained (or a read ended at an fd-carrying segment): level-triggered
     * polling wakes us again if more is there, so skip the recvmsg that would only say EAGAIN. A read-ahead that
     * found nothing, or that ended exactly at the end of a message, is not short: the reply about to be sent may
     * bring the client's next message at once. */
    bool drained = (size_t)n < want0;
    if (got == 2) {
      size_t n1 = mm[1].msg_len;
      nfds = vu_collect_fds(&mm[1].msg_hdr, fds);
      e = vu_rx_received_ahead(&c->rx, (size_t)n, want0, n1, fds, nfds, mm[1].msg_hdr.msg_flags, &why);
      if (e) {
        conn_fail(c, e, e == ENOMEM ? "malloc" : "recvmmsg", why);
        return;
      }
      drained = n1 < iov[1].iov_len && !vu_rx_at_boundary(&c->rx);
    }
    if (!conn_deliver(c, sc)) return;
    if (drained) return;
  }
}

/* The replies JS sends while the messages of one read burst are delivered are corked and sent together. */
static void conn_read(conn *c, vu_cbscope *sc) {
  vu_burst_begin();
  c->corking = true;
  conn_read_burst(c, sc);
  c->corking = false;
  conn_cork_flush(c);
  vu_burst_end(); /* after the replies went: the deferred closes (fd.c) cost the client no latency */
}

/* Sends queued chunks until EAGAIN. False if the connection failed. */
static bool conn_flush_queue(conn *c) {
  while (c->q_head) {
    chunk *k = c->q_head;
    struct iovec iov = {.iov_base = k->data + k->off, .iov_len = k->len - k->off};
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } cbuf;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (k->nfds) {
      memset(cbuf.buf, 0, sizeof cbuf.buf);
      msg.msg_control = cbuf.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)k->nfds);
      struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)k->nfds);
      memcpy(CMSG_DATA(cm), k->fds, sizeof(int) * (size_t)k->nfds);
    }
    ssize_t n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      conn_fail(c, errno, "sendmsg", NULL);
      return false;
    }
    if (k->nfds) {
      /* The fds went with the first byte; our duplicates are no longer needed. */
      close_fds(k->fds, k->nfds);
      k->nfds = 0;
    }
    k->off += (size_t)n;
    c->q_bytes -= (size_t)n;
    if (k->off == k->len) {
      c->q_head = k->next;
      if (!c->q_head) c->q_tail = NULL;
      free(k->fds);
      free(k);
    }
  }
  return true;
}

static void conn_on_poll(uv_poll_t *h, int status, int events) {
  conn *c = h->data;
  if (c->state != C_OPEN || c->detached) return;
  vu_cbscope sc;
  if (!vu_cbscope_open(&sc, c->env)) return;
  if (status < 0) {
    conn_fail(c, -status, "uv_poll", NULL);
    goto out;
  }
  if (events & UV_WRITABLE) {
    if (!conn_flush_queue(c)) goto out;
    if (!c->q_head) {
      conn_update_poll(c);
      if (c->want_drain && c->on_drain) {
        c->want_drain = false;
        if (vu_cbscope_enter(&sc, c->self, c->actx)) vu_call_ref(c->env, c->handlers, c->on_drain, 0, NULL);
      }
    }
  }
  if ((events & (UV_READABLE | UV_DISCONNECT)) && c->state == C_OPEN && !c->paused) conn_read(c, &sc);
out:
  vu_cbscope_close(&sc);
}

static void conn_update_poll(conn *c) {
  if (c->state != C_OPEN || !c->poll_inited) return;
  int mask = (c->paused ? 0 : UV_READABLE | UV_DISCONNECT) | (c->q_head ? UV_WRITABLE : 0);
  if (mask == c->events) return;
  int r = mask ? uv_poll_start(&c->poll, mask, conn_on_poll) : uv_poll_stop(&c->poll);
  if (r < 0) {
    conn_fail(c, -r, "uv_poll_start", NULL);
    return;
  }
  c->events = mask;
}

static bool ref_fn(napi_env env, napi_value v, const char *name, bool optional, napi_ref *out) {
  napi_valuetype t;
  NAPI_CALL_R(env, napi_typeof(env, v, &t), false);
  if (optional && (t == napi_undefined || t == napi_null)) {
    *out = NULL;
    return true;
  }
  if (t != napi_function) {
    vu_throw_type(env, "%s must be a function", name);
    return false;
  }
  NAPI_CALL_R(env, napi_create_reference(env, v, 1, out), false);
  return true;
}

/* An ArrayBuffer argument: its memory and a strong reference that keeps it alive. */
static bool get_box(napi_env env, napi_value v, const char *name, uint8_t **data, size_t *len, napi_ref *ref) {
  bool is_ab;
  NAPI_CALL_R(env, napi_is_arraybuffer(env, v, &is_ab), false);
  if (!is_ab) {
    vu_throw_type(env, "%s must be an ArrayBuffer", name);
    return false;
  }
  void *p;
  NAPI_CALL_R(env, napi_get_arraybuffer_info(env, v, &p, len), false);
  *data = p;
  NAPI_CALL_R(env, napi_create_reference(env, v, 1, ref), false);
  return true;
}

/*
 * start(handlers, onMessage(size, fds|undefined, data|undefined), onClose, onDrain|undefined, maxMessageSize, exact,
 *       inbox: ArrayBuffer, outbox: ArrayBuffer)
 */
static napi_value conn_start(napi_env env, napi_callback_info info) {
  napi_value argv[8], thisv;
  if (!vu_args(env, info, 8, argv, &thisv)) return NULL;
  conn *c = conn_unwrap(env, thisv);
  if (!c) return NULL;
  if (c->state != C_NEW) {
    vu_throw_errno_msg(env, c->state == C_OPEN ? EALREADY : EBADF, "start",
                       c->state == C_OPEN ? "connection already started" : "connection is closed");
    return NULL;
  }
  napi_valuetype t;
  NAPI_CALL(env, napi_typeof(env, argv[0], &t));
  if (t != napi_object && t != napi_function) {
    vu_throw_type(env, "handlers must be an object");
    return NULL;
  }
  uint32_t max_msg;
  bool exact;
  if (!vu_get_u32(env, argv[4], "maxMessageSize", &max_msg) || !vu_get_bool(env, argv[5], "exact", false, &exact))
    return NULL;
  if (max_msg < HDR_SIZE) {
    vu_throw_range(env, "maxMessageSize must be at least 16");
    return NULL;
  }
  napi_ref r_on_message = NULL, r_on_close = NULL, r_on_drain = NULL, r_handlers = NULL;
  if (!ref_fn(env, argv[1], "onMessage", false, &r_on_message)) goto fail;
  if (!ref_fn(env, argv[2], "onClose", false, &r_on_close)) goto fail;
  if (!ref_fn(env, argv[3], "onDrain", true, &r_on_drain)) goto fail;
  if (!get_box(env, argv[6], "inbox", &c->inbox, &c->inbox_len, &c->inbox_ref)) goto fail;
  if (!get_box(env, argv[7], "outbox", &c->outbox, &c->outbox_len, &c->outbox_ref)) goto fail;
  if (napi_create_reference(env, argv[0], 1, &r_handlers) != napi_ok) goto fail;
  napi_value name;
  if (napi_create_string_utf8(env, "VfioUserConnection", NAPI_AUTO_LENGTH, &name) != napi_ok) goto fail;
  if (napi_async_init(env, thisv, name, &c->actx) != napi_ok) goto fail;
  c->actx_inited = true;
  int r = uv_poll_init(c->loop, &c->poll, c->fd);
  if (r < 0) {
    NAPI_LOG(env, napi_async_destroy(env, c->actx));
    c->actx_inited = false;
    vu_throw_errno(env, -r, "uv_poll_init");
    goto fail;
  }
  c->poll.data = c;
  c->poll_inited = true;
  c->refs++;
  c->handlers = r_handlers;
  c->on_message = r_on_message;
  c->on_close = r_on_close;
  c->on_drain = r_on_drain;
  c->rx.max_msg = max_msg;
  c->rx.exact = exact;
  c->state = C_OPEN;
  uint32_t rc;
  NAPI_CALL(env, napi_reference_ref(env, c->self, &rc)); /* strong while open */
  conn_update_poll(c);
  return NULL;
fail:
  if (c->inbox_ref) NAPI_LOG(env, napi_delete_reference(env, c->inbox_ref));
  if (c->outbox_ref) NAPI_LOG(env, napi_delete_reference(env, c->outbox_ref));
  c->inbox_ref = c->outbox_ref = NULL;
  c->inbox = c->outbox = NULL;
  c->inbox_len = c->outbox_len = 0;
  if (r_on_message) NAPI_LOG(env, napi_delete_reference(env, r_on_message));
  if (r_on_close) NAPI_LOG(env, napi_delete_reference(env, r_on_close));
  if (r_on_drain) NAPI_LOG(env, napi_delete_reference(env, r_on_drain));
  if (r_handlers) NAPI_LOG(env, napi_delete_reference(env, r_handlers));
  if (!c->poll_inited) vu_throw_napi(env, napi_generic_failure, "start");
  return NULL;
}

static napi_value conn_set_max(napi_env env, napi_callback_info info) {
  napi_value argv[1], thisv;
  uint32_t v;
  if (!vu_args(env, info, 1, argv, &thisv)) return NULL;
  conn *c = conn_unwrap(env, thisv);
  if (!c || !vu_get_u32(env, argv[0], "maxMessageSize", &v)) return NULL;
  if (v < HDR_SIZE) {
    vu_throw_range(env, "maxMessageSize must be at least 16");
    return NULL;
  }
  c->rx.max_msg = v;
  return NULL;
}

/*
 * setDirectReads(control: Int32Array(2+), regions: (Uint8Array | undefined)[], command, replyFlags, maxCount,
 * sendHigh): see conn_direct_read. Replaces an earlier table; regions past DIRECT_MAX_REGIONS are not read directly.
 */
static napi_value conn_set_direct(napi_env env, napi_callback_info info) {
  napi_value argv[6], thisv;
  if (!vu_args(env, info, 6, argv, &thisv)) return NULL;
  conn *c = conn_unwrap(env, thisv);
  uint32_t command, reply_flags, max_count, send_high, n;
  if (!c || !vu_get_u32(env, argv[2], "command", &command) || !vu_get_u32(env, argv[3], "replyFlags", &reply_flags) ||
      !vu_get_u32(env, argv[4], "maxCount", &max_count) || !vu_get_u32(env, argv[5], "sendHigh", &send_high))
    return NULL;
  if (c->state != C_NEW && c->state != C_OPEN) {
    vu_throw_errno_msg(env, EBADF, "setDirectReads", "connection is closed");
    return NULL;
  }
  bool is;
  napi_typedarray_type type;
  size_t length, boff;
  void *p;
  napi_value ab;
  NAPI_CALL(env, napi_is_typedarray(env, argv[0], &is));
  if (is) NAPI_CALL(env, napi_get_typedarray_info(env, argv[0], &type, &length, &p, &ab, &boff));
  if (!is || type != napi_int32_array || length < 2) {
    vu_throw_type(env, "control must be an Int32Array of at least 2 elements");
    return NULL;
  }
  NAPI_CALL(env, napi_is_array(env, argv[1], &is));
  if (!is) {
    vu_throw_type(env, "regions must be an array");
    return NULL;
  }
  NAPI_CALL(env, napi_get_array_length(env, argv[1], &n));
  conn_direct_release(c);
  c->direct_command = (uint16_t)command;
  c->direct_reply_flags = reply_flags;
  c->direct_max_count = max_count;
  c->direct_send_high = send_high;
  for (uint32_t i = 0; i < n && i < DIRECT_MAX_REGIONS; i++) {
    napi_value v, rab;
    NAPI_CALL(env, napi_get_element(env, argv[1], i, &v));
    bool ta;
    NAPI_CALL(env, napi_is_typedarray(env, v, &ta));
    if (!ta) continue; /* undefined: not read directly */
    napi_typedarray_type t;
    size_t len, off;
    void *data;
    NAPI_CALL(env, napi_get_typedarray_info(env, v, &t, &len, &data, &rab, &off));
    if (t != napi_uint8_array) {
      conn_direct_release(c);
      vu_throw_type(env, "regions[%u] must be a Uint8Array", i);
      return NULL;
    }
    NAPI_CALL(env, napi_create_reference(env, rab, 1, &c->direct[i].ref));
    c->direct[i].data = data;
    c->direct[i].len = len;
  }
  NAPI_CALL(env, napi_create_reference(env, ab, 1, &c->direct_ctl_ref));
  c->direct_ctl = p;
  return NULL;
}

/* Queues a chunk with dups of `fds` behind whatever is queued: 0, or an errno with *sys naming the call. */
static int queue_chunk(conn *c, const uint8_t *data, size_t len, const int *fds, int nfds, const char **sys) {
  chunk *k = chunk_new(data, len);
  *sys = "malloc";
  if (!k) return ENOMEM;
  if (nfds) {
    k->fds = malloc(sizeof(int) * (size_t)nfds);
    if (!k->fds) {
      free(k);
      return ENOMEM;
    }
    for (int i = 0; i < nfds; i++) {
      int d = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
      if (d < 0) {
        int e = errno;
        close_fds(k->fds, i);
        free(k->fds);
        free(k);
        *sys = "fcntl(F_DUPFD_CLOEXEC)";
        return e;
      }
      k->fds[i] = d;
    }
    k->nfds = nfds;
  }
  queue_append(c, k);
  return 0;
}

/*
 * Reads an optional array of at most MAX_FDS fds (undefined/null: none) into fds/nfds. `name` labels a bad
 * element; with `check_open` each fd must be open (EBADF thrown as from `syscall`).
 */
static bool get_fd_array(napi_env env, napi_value arr, const char *name, bool check_open, const char *syscall,
                         int fds[MAX_FDS], uint32_t *nfds) {
  *nfds = 0;
  if (vu_is_nullish(env, arr)) return true;
  bool is_array;
  NAPI_CALL_R(env, napi_is_array(env, arr, &is_array), false);
  if (!is_array) {
    vu_throw_type(env, "fds must be an array of file descriptors");
    return false;
  }
  uint32_t n;
  NAPI_CALL_R(env, napi_get_array_length(env, arr, &n), false);
  if (n > MAX_FDS) {
    vu_throw_range(env, "at most %d fds per message", MAX_FDS);
    return false;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value v;
    NAPI_CALL_R(env, napi_get_element(env, arr, i, &v), false);
    if (!vu_get_fd(env, v, name, &fds[i])) return false;
    if (check_open && fcntl(fds[i], F_GETFD) < 0) {
      vu_throw_errno(env, errno, syscall);
      return false;
    }
  }
  *nfds = n;
  return true;
}

static napi_value conn_send_bytes(napi_env env, conn *c, void *data, size_t len, napi_value fds_arr);

/* send(data, fds|undefined) -> boolean: true when written completely now (or corked: see conn_read). */
static napi_value conn_send(napi_env env, napi_callback_info info) {
  napi_value argv[2], thisv;
  if (!vu_args(env, info, 2, argv, &thisv)) return NULL;
  conn *c = conn_unwrap(env, thisv);
  if (!c) return NULL;
  void *data;
  size_t len;
  if (!vu_get_bytes(env, argv[0], "data", &data, &len)) return NULL;
  return conn_send_bytes(env, c, data, len, argv[1]);
}

/* sendOutbox(length, fds|undefined) -> boolean: send() of the first `length` bytes of the outbox. */
static napi_value conn_send_outbox(napi_env env, napi_callback_info info) {
  napi_value argv[2], thisv;
  if (!vu_args(env, info, 2, argv, &thisv)) return NULL;
  conn *c = conn_unwrap(env, thisv);
  if (!c) return NULL;
  uint32_t len;
  if (!vu_get_u32(env, argv[0], "length", &len)) return NULL;
  if (len > c->outbox_len) {
    vu_throw_range(env, "length exceeds the outbox");
    return NULL;
  }
  return conn_send_bytes(env, c, c->outbox, len, argv[1]);
}

/*
 * The rules of send() without Node-API: 1 when written completely now (or corked), 0 when (part of) it is queued
 * (onDrain follows) or the connection is closed (data dropped), -1 with *err and *sys for what the caller throws
 * (nothing was sent). Shared by send()/sendOutbox() and the reply onMessage returns (conn_deliver).
 */
static int conn_send_core(conn *c, const void *data, size_t len, const int *fds, uint32_t nfds, int *err,
                          const char **sys) {
  /* Closed: the data is dropped (onClose has fired or will); the caller keeps its fds. */
  if (c->state != C_NEW && c->state != C_OPEN) return 0;
  if (len == 0) return c->q_head == NULL;
  if (c->corking && !c->q_head && nfds == 0 && len <= CORK_MAX && c->state == C_OPEN) {
    /* Inside a read burst: while the next message is already here (a client that pipelines), the reply waits to
     * leave with the replies to come; otherwise it leaves now, with any waiting before it, in one send (a client
     * that waits for each reply gets it at once, before the server reads again). */
    if (c->cork_len + len > CORK_MAX && !conn_cork_flush(c)) return 0;
    if (!c->q_head) {
      if (!c->cork && !(c->cork = malloc(CORK_MAX))) {
        *err = ENOMEM;
        *sys = "malloc";
        return -1;
      }
      memcpy(c->cork + c->cork_len, data, len);
      c->cork_len += len;
      if (c->rx.end - c->rx.start < HDR_SIZE) return conn_cork_flush(c) && !c->q_head;
      return 1;
    }
  }
  /* Messages never overtake each other: corked replies go first. */
  if (c->cork_len && !conn_cork_flush(c)) return 0;
  bool done = false;
  if (!c->q_head) {
    union {
      struct cmsghdr align;
      char buf[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } cbuf;
    struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
      memset(cbuf.buf, 0, sizeof cbuf.buf);
      msg.msg_control = cbuf.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
      struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
      cm->cmsg_level = SOL_SOCKET;
      cm->cmsg_type = SCM_RIGHTS;
      cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
      memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
    }
    ssize_t n;
    do n = sendmsg(c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        if ((*err = queue_chunk(c, data, len, fds, (int)nfds, sys))) return -1;
      } else if (e == EBADF || e == EINVAL || e == ETOOMANYREFS || e == ENOMEM || e == ENOBUFS) {
        /* Nothing was sent, the stream is intact: the caller's arguments or a transient limit. */
        *err = e;
        *sys = "sendmsg";
        return -1;
      } else {
        conn_fail(c, e, "sendmsg", NULL);
        return 0;
      }
    } else if ((size_t)n == len) {
      done = true;
    } else {
      /* Partial: the fds went with the first byte; queue the rest without them. */
      if ((*err = queue_chunk(c, (const uint8_t *)data + n, len - (size_t)n, NULL, 0, sys))) {
        conn_fail(c, ENOMEM, "malloc", NULL); /* the stream is now broken mid-message */
        return -1;
      }
    }
  } else if ((*err = queue_chunk(c, data, len, fds, (int)nfds, sys))) {
    return -1;
  }
  if (!done) {
    c->want_drain = true;
    conn_update_poll(c);
  }
  return done;
}

static napi_value conn_send_bytes(napi_env env, conn *c, void *data, size_t len, napi_value fds_arr) {
  napi_value result;
  int fds[MAX_FDS];
  uint32_t nfds;
  if (!get_fd_array(env, fds_arr, "fds[i]", true, "sendmsg", fds, &nfds)) return NULL;
  if (nfds && len == 0) {
    vu_throw_range(env, "fds need at least one byte of data to travel with");
    return NULL;
  }
  int err = 0;
  const char *sys = NULL;
  int r = conn_send_core(c, data, len, fds, nfds, &err, &sys);
  if (r < 0) {
    vu_throw_errno(env, err, sys);
    return NULL;
  }
  NAPI_CALL(env, napi_get_boolean(env, r == 1, &result));
  return result;
}

static napi_value conn_pause(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  c->paused = true;
  conn_update_poll(c);
  return NULL;
}

static napi_value conn_resume(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  c->paused = false;
  conn_update_poll(c);
  return NULL;
}

/* flush(): delivers complete messages still buffered (after resume); JS calls it from setImmediate. */
static napi_value conn_flush(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  if (c->state == C_OPEN && !c->paused && !c->delivering) {
    c->corking = true;
    conn_deliver(c, NULL);
    c->corking = false;
    conn_cork_flush(c);
  }
  return NULL;
}

/*
 * Hand-over (server/src/handover): takeBuffered() returns what was read from the socket but not delivered (a
 * paused connection may hold complete messages and the start of one more) as {data, groups: [{at, fds,
 * fdsTruncated?}]}, `at` being the offset in `data` of the message the fds came with; the fds now belong to JS and
 * the buffer is empty. prefill(data, fds, fdsTruncated) appends bytes (and the fds of the message starting at the
 * first of them) to the receive buffer of a connection not started yet: they are delivered before anything read
 * from the socket.
 */
static napi_value conn_take_buffered(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  if ((c->state != C_NEW && c->state != C_OPEN) || c->delivering || (c->state == C_OPEN && !c->paused)) {
    vu_throw_errno_msg(env, EBUSY, "takeBuffered", "the connection must be paused (or not started), outside onMessage");
    return NULL;
  }
  napi_value out, data, groups;
  vu_rx *rx = &c->rx;
  size_t have = rx->end - rx->start;
  uint64_t base = rx->base + rx->start;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_buffer_copy(env, have, rx->buf + rx->start, NULL, &data));
  NAPI_CALL(env, napi_create_array_with_length(env, rx->ngroups, &groups));
  for (size_t i = 0; i < rx->ngroups; i++) {
    vu_fdgroup *g = rx->groups[i];
    napi_value go, arr;
    NAPI_CALL(env, napi_create_object(env, &go));
    NAPI_CALL(env, napi_create_array_with_length(env, (size_t)g->n, &arr));
    for (int k = 0; k < g->n; k++) NAPI_CALL(env, napi_set_element(env, arr, (uint32_t)k, vu_i32(env, g->fds[k])));
    if (!vu_set_val(env, go, "at", vu_double(env, (double)(g->off - base))) || !vu_set_val(env, go, "fds", arr))
      return NULL;
    if (g->truncated) {
      napi_value t;
      NAPI_CALL(env, napi_get_boolean(env, true, &t));
      if (!vu_set_val(env, go, "fdsTruncated", t)) return NULL;
    }
    NAPI_CALL(env, napi_set_element(env, groups, (uint32_t)i, go));
  }
  if (!vu_set_val(env, out, "data", data) || !vu_set_val(env, out, "groups", groups)) return NULL;
  /* Ownership of the fds moved to JS: drop the groups without closing. */
  vu_rx_forget(rx);
  return out;
}

static napi_value conn_prefill(napi_env env, napi_callback_info info) {
  napi_value argv[3], thisv;
  if (!vu_args(env, info, 3, argv, &thisv)) return NULL;
  conn *c = conn_unwrap(env, thisv);
  if (!c) return NULL;
  if (c->state != C_NEW) {
    vu_throw_errno_msg(env, EALREADY, "prefill", "prefill() only before start()");
    return NULL;
  }
  void *data;
  size_t len;
  if (!vu_get_bytes(env, argv[0], "data", &data, &len)) return NULL;
  int fds[MAX_FDS];
  uint32_t nfds;
  bool truncated;
  if (!get_fd_array(env, argv[1], "fd", false, NULL, fds, &nfds) ||
      !vu_get_bool(env, argv[2], "fdsTruncated", false, &truncated))
    return NULL;
  if ((nfds || truncated) && len == 0) {
    vu_throw_range(env, "fds need at least the first byte of their message");
    return NULL;
  }
  if (vu_rx_prefill(&c->rx, data, len, fds, (int)nfds, truncated)) {
    vu_throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  return NULL; /* the connection owns the fds now */
}

static napi_value conn_close(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  /* What was sent before close() leaves as it would have without the cork (an error reply before a close). */
  conn_cork_flush(c);
  conn_begin_close(c);
  return NULL;
}

static napi_value conn_get_fd(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  return vu_i32(env, c->state == C_NEW || c->state == C_OPEN ? c->fd : -1);
}

static napi_value conn_get_queued(napi_env env, napi_callback_info info) {
  conn *c = conn_this(env, info);
  if (!c) return NULL;
  return vu_double(env, (double)c->q_bytes);
}

/* ================================================================================================= Listener */

typedef struct lis {
  vu_link link;
  napi_env env;
  uv_loop_t *loop;
  int fd;
  int refs;
  int state;
  bool detached, poll_inited, paused;
  uv_poll_t poll;
  napi_ref self, on_conn, on_error;
  napi_async_context actx;
  bool actx_inited;
} lis;

static void lis_maybe_free(lis *l) {
  if (--l->refs == 0) free(l);
}

static void lis_on_closed(uv_handle_t *h) {
  lis *l = h->data;
  l->state = C_CLOSED;
  vu_link_remove(&l->link);
  if (!l->detached) {
    if (l->on_conn) NAPI_LOG(l->env, napi_delete_reference(l->env, l->on_conn));
    if (l->on_error) NAPI_LOG(l->env, napi_delete_reference(l->env, l->on_error));
    l->on_conn = l->on_error = NULL;
    if (l->actx_inited) NAPI_LOG(l->env, napi_async_destroy(l->env, l->actx));
    l->actx_inited = false;
    uint32_t rc;
    if (l->self) NAPI_LOG(l->env, napi_reference_unref(l->env, l->self, &rc));
  }
  lis_maybe_free(l);
}

static void lis_begin_close(lis *l) {
  if (l->state != C_NEW && l->state != C_OPEN) return;
  if (l->poll_inited) {
    l->state = C_CLOSING;
    uv_poll_stop(&l->poll);
    uv_close((uv_handle_t *)&l->poll, lis_on_closed);
    close(l->fd); /* libuv has already dropped it from epoll */
    l->fd = -1;
  } else {
    if (l->fd >= 0) close(l->fd);
    l->fd = -1;
    l->state = C_CLOSED;
    vu_link_remove(&l->link);
  }
}

static void lis_teardown(vu_link *link) {
  lis *l = (lis *)link;
  l->detached = true;
  lis_begin_close(l);
}

static void lis_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  lis *l = data;
  if (!l->detached && l->self) NAPI_LOG(env, napi_delete_reference(env, l->self));
  l->self = NULL;
  if (l->state == C_NEW) lis_begin_close(l);
  lis_maybe_free(l);
}

static lis *lis_unwrap(napi_env env, napi_value thisv) {
  void *p = NULL;
  NAPI_CALL(env, napi_unwrap(env, thisv, &p));
  return p;
}

/* The lis behind `this` of a method without arguments; NULL with an exception pending. */
static lis *lis_this(napi_env env, napi_callback_info info) {
  napi_value thisv;
  if (!vu_args(env, info, 0, NULL, &thisv)) return NULL;
  return lis_unwrap(env, thisv);
}

static napi_value lis_ctor(napi_env env, napi_callback_info info) {
  napi_value argv[1], thisv;
  int fd;
  if (!vu_args(env, info, 1, argv, &thisv) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  int acc = 0;
  socklen_t sl = sizeof acc;
  if (!vu_ok(env, getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl), "getsockopt(SO_ACCEPTCONN)")) return NULL;
  if (!acc) {
    vu_throw_errno_msg(env, EINVAL, "listen", "fd is not a listening socket");
    return NULL;
  }
  if (!adopt_fd(env, fd)) return NULL;
  vu_state *st = vu_state_get(env);
  lis *l = calloc(1, sizeof *l);
  if (!l || !st) {
    free(l);
    vu_throw_errno(env, ENOMEM, "calloc");
    return NULL;
  }
  l->env = env;
  l->loop = st->loop;
  l->fd = fd;
  l->refs = 1;
  l->state = C_NEW;
  l->link.teardown = lis_teardown;
  return wrap_handle(env, st, thisv, l, lis_finalize, &l->link, &l->self);
}

static void lis_on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  lis *l = h->data;
  if (l->state != C_OPEN || l->detached) return;
  vu_cbscope sc;
  if (!vu_cbscope_open(&sc, l->env)) return;
  int err = status < 0 ? -status : 0;
  const char *sys = "uv_poll";
  for (int i = 0; !err && i < ACCEPTS_PER_WAKEUP && l->state == C_OPEN && !l->paused; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) break;
      /* The peer gave up, or a per-connection error: try the next one. */
      if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM || e == ENETDOWN || e == ENOPROTOOPT ||
          e == EHOSTDOWN || e == ENONET || e == EHOSTUNREACH || e == EOPNOTSUPP || e == ENETUNREACH)
        continue;
      err = e; /* EMFILE, ENFILE, ENOBUFS, ENOMEM, ...: report and stop until resumed */
      sys = "accept4";
      break;
    }
    napi_value v;
    if (!vu_cbscope_enter(&sc, l->self, l->actx) || napi_create_int32(l->env, fd, &v) != napi_ok) {
      close(fd);
      break;
    }
    vu_call_ref(l->env, l->self, l->on_conn, 1, &v); /* JS owns fd now */
  }
  if (err && l->state == C_OPEN) {
    /* Level-triggered polling would spin on a persistent EMFILE: stop; the JS side resumes after a delay. */
    l->paused = true;
    uv_poll_stop(&l->poll);
    napi_value e = vu_errno_error(l->env, err, sys, NULL);
    if (e && l->on_error && vu_cbscope_enter(&sc, l->self, l->actx)) vu_call_ref(l->env, l->self, l->on_error, 1, &e);
  }
  vu_cbscope_close(&sc);
}

/* start(onConnection(fd), onError(err)|undefined) */
static napi_value lis_start(napi_env env, napi_callback_info info) {
  napi_value argv[2], thisv;
  if (!vu_args(env, info, 2, argv, &thisv)) return NULL;
  lis *l = lis_unwrap(env, thisv);
  if (!l) return NULL;
  if (l->state != C_NEW) {
    vu_throw_errno_msg(env, l->state == C_OPEN ? EALREADY : EBADF, "start",
                       l->state == C_OPEN ? "listener already started" : "listener is closed");
    return NULL;
  }
  napi_ref on_conn = NULL, on_error = NULL;
  if (!ref_fn(env, argv[0], "onConnection", false, &on_conn)) return NULL;
  if (!ref_fn(env, argv[1], "onError", true, &on_error)) {
    NAPI_LOG(env, napi_delete_reference(env, on_conn));
    return NULL;
  }
  napi_value name;
  if (napi_create_string_utf8(env, "VfioUserListener", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, thisv, name, &l->actx) != napi_ok) {
    NAPI_LOG(env, napi_delete_reference(env, on_conn));
    if (on_error) NAPI_LOG(env, napi_delete_reference(env, on_error));
    vu_throw_napi(env, napi_generic_failure, "napi_async_init");
    return NULL;
  }
  l->actx_inited = true;
  int r = uv_poll_init(l->loop, &l->poll, l->fd);
  if (r < 0) {
    NAPI_LOG(env, napi_delete_reference(env, on_conn));
    if (on_error) NAPI_LOG(env, napi_delete_reference(env, on_error));
    NAPI_LOG(env, napi_async_destroy(env, l->actx));
    l->actx_inited = false;
    vu_throw_errno(env, -r, "uv_poll_init");
    return NULL;
  }
  l->poll.data = l;
  l->poll_inited = true;
  l->refs++;
  l->on_conn = on_conn;
  l->on_error = on_error;
  l->state = C_OPEN;
  uint32_t rc;
  NAPI_CALL(env, napi_reference_ref(env, l->self, &rc)); /* strong while open */
  r = uv_poll_start(&l->poll, UV_READABLE, lis_on_poll);
  if (r < 0) {
    lis_begin_close(l);
    vu_throw_errno(env, -r, "uv_poll_start");
  }
  return NULL;
}

static napi_value lis_resume(napi_env env, napi_callback_info info) {
  lis *l = lis_this(env, info);
  if (!l) return NULL;
  if (l->state == C_OPEN && l->paused) {
    l->paused = false;
    int r = uv_poll_start(&l->poll, UV_READABLE, lis_on_poll);
    if (r < 0) {
      vu_throw_errno(env, -r, "uv_poll_start");
      return NULL;
    }
  }
  return NULL;
}

/* pause(): stop accepting (connections wait in the backlog) until resume(). */
static napi_value lis_pause(napi_env env, napi_callback_info info) {
  lis *l = lis_this(env, info);
  if (!l) return NULL;
  if (l->state == C_OPEN && !l->paused) {
    l->paused = true;
    uv_poll_stop(&l->poll);
  }
  return NULL;
}

static napi_value lis_close(napi_env env, napi_callback_info info) {
  lis *l = lis_this(env, info);
  if (!l) return NULL;
  lis_begin_close(l);
  return NULL;
}

static napi_value lis_get_fd(napi_env env, napi_callback_info info) {
  lis *l = lis_this(env, info);
  if (!l) return NULL;
  return vu_i32(env, l->state == C_NEW || l->state == C_OPEN ? l->fd : -1);
}

/* ================================================================================================== helpers */

static bool fill_addr(napi_env env, napi_value v, struct sockaddr_un *sa, socklen_t *len) {
  char path[sizeof sa->sun_path];
  if (!vu_get_string(env, v, "path", path, sizeof path)) return false;
  if (!path[0]) {
    vu_throw_errno_msg(env, EINVAL, "bind", "empty socket path");
    return false;
  }
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  strcpy(sa->sun_path, path);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
  return true;
}

/*
 * listenUnix(path, mode, backlog) -> { fd, dev, ino }. The socket file is created with `mode` (fchmod on the
 * socket before bind, so it is never wider than requested, then chmod for the exact bits despite the umask).
 * A stale socket file (connect() gets ECONNREFUSED) is replaced; a live one or a non-socket gives EADDRINUSE.
 */
static napi_value listen_unix(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  struct sockaddr_un sa;
  socklen_t salen;
  uint32_t mode, backlog;
  if (!vu_args(env, info, 3, argv, NULL) || !fill_addr(env, argv[0], &sa, &salen) ||
      !vu_get_u32(env, argv[1], "mode", &mode) || !vu_get_u32(env, argv[2], "backlog", &backlog))
    return NULL;
  if (mode > 07777) {
    vu_throw_range(env, "mode must be a permission mask");
    return NULL;
  }
  if (backlog > 65535) backlog = 65535;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (!vu_ok(env, fd, "socket")) return NULL;
  const char *sys = "bind";
  int err = 0;
  if (fchmod(fd, (mode_t)mode) < 0) {
    err = errno;
    sys = "fchmod";
    goto fail;
  }
  for (int attempt = 0;; attempt++) {
    if (bind(fd, (struct sockaddr *)&sa, salen) == 0) break;
    err = errno;
    if (err != EADDRINUSE || attempt > 0) goto fail;
    struct stat st;
    if (lstat(sa.sun_path, &st) < 0) {
      if (errno == ENOENT) continue; /* vanished meanwhile: retry */
      goto fail;
    }
    if (!S_ISSOCK(st.st_mode)) goto fail; /* never remove something that is not a socket */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (probe < 0) {
      err = errno;
      sys = "socket";
      goto fail;
    }
    int r = connect(probe, (struct sockaddr *)&sa, salen);
    int ce = errno;
    close(probe);
    if (r == 0 || ce != ECONNREFUSED) goto fail; /* someone is listening (or backlog full: EAGAIN) */
    if (unlink(sa.sun_path) < 0 && errno != ENOENT) {
      err = errno;
      sys = "unlink";
      goto fail;
    }
  }
  err = 0;
  struct stat st;
  if (chmod(sa.sun_path, (mode_t)mode) < 0) {
    err = errno;
    sys = "chmod";
  } else if (listen(fd, (int)backlog) < 0) {
    err = errno;
    sys = "listen";
  } else if (stat(sa.sun_path, &st) < 0) {
    err = errno;
    sys = "stat";
  }
  if (err) {
    unlink(sa.sun_path);
    goto fail;
  }
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  if (!vu_set_i32(env, out, "fd", fd) || !vu_set_u64(env, out, "dev", st.st_dev) ||
      !vu_set_u64(env, out, "ino", st.st_ino)) {
    unlink(sa.sun_path);
    close(fd);
    return NULL;
  }
  return out;
fail:
  close(fd);
  vu_throw_errno(env, err, sys);
  return NULL;
}

/* connectUnix(path) -> fd (blocking connect; the fd is then made non-blocking). */
static napi_value connect_unix(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  struct sockaddr_un sa;
  socklen_t salen;
  if (!vu_args(env, info, 1, argv, NULL) || !fill_addr(env, argv[0], &sa, &salen)) return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (!vu_ok(env, fd, "socket")) return NULL;
  if (connect(fd, (struct sockaddr *)&sa, salen) < 0) {
    int e = errno;
    close(fd);
    vu_throw_errno(env, e, "connect");
    return NULL;
  }
  if (vu_set_nonblock(fd) < 0) {
    int e = errno;
    close(fd);
    vu_throw_errno(env, e, "fcntl");
    return NULL;
  }
  return vu_i32(env, fd);
}

static napi_value socket_pair(napi_env env, napi_callback_info info) {
  (void)info;
  int sv[2];
  if (!vu_ok(env, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), "socketpair")) return NULL;
  napi_value arr, a, b;
  if (napi_create_array_with_length(env, 2, &arr) != napi_ok || napi_create_int32(env, sv[0], &a) != napi_ok ||
      napi_create_int32(env, sv[1], &b) != napi_ok || napi_set_element(env, arr, 0, a) != napi_ok ||
      napi_set_element(env, arr, 1, b) != napi_ok) {
    close(sv[0]);
    close(sv[1]);
    vu_throw_napi(env, napi_generic_failure, "socketpair result");
    return NULL;
  }
  return arr;
}

static napi_value peer_cred(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  struct ucred cr;
  socklen_t len = sizeof cr;
  if (!vu_ok(env, getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len), "getsockopt(SO_PEERCRED)")) return NULL;
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  if (!vu_set_i32(env, out, "pid", cr.pid) || !vu_set_u32(env, out, "uid", cr.uid) ||
      !vu_set_u32(env, out, "gid", cr.gid))
    return NULL;
  return out;
}

static bool define_class(napi_env env, napi_value exports, const char *name, napi_callback ctor,
                         const napi_property_descriptor *props, size_t n, napi_ref *ref) {
  napi_value cls;
  NAPI_CALL_R(env, napi_define_class(env, name, NAPI_AUTO_LENGTH, ctor, NULL, n, props, &cls), false);
  NAPI_CALL_R(env, napi_create_reference(env, cls, 1, ref), false);
  return vu_set_val(env, exports, name, cls);
}

#define METHOD(name, fn) {name, NULL, fn, NULL, NULL, NULL, napi_default_method, NULL}
#define GETTER(name, fn) {name, NULL, NULL, fn, NULL, NULL, napi_enumerable, NULL}

bool vu_init_socket(napi_env env, napi_value exports) {
  vu_state *st = vu_state_get(env);
  if (!st) return false;
  const napi_property_descriptor conn_props[] = {
      METHOD("start", conn_start),   METHOD("send", conn_send), METHOD("sendOutbox", conn_send_outbox),       METHOD("pause", conn_pause),
      METHOD("resume", conn_resume), METHOD("flush", conn_flush),     METHOD("close", conn_close),
      METHOD("setMaxMessageSize", conn_set_max), GETTER("fd", conn_get_fd), GETTER("queuedBytes", conn_get_queued),
      METHOD("takeBuffered", conn_take_buffered), METHOD("prefill", conn_prefill),
      METHOD("setDirectReads", conn_set_direct),
  };
  const napi_property_descriptor lis_props[] = {
      METHOD("start", lis_start),
      METHOD("resume", lis_resume),
      METHOD("pause", lis_pause),
      METHOD("close", lis_close),
      GETTER("fd", lis_get_fd),
  };
  return define_class(env, exports, "NativeConnection", conn_ctor, conn_props, VU_ARRAY_LEN(conn_props),
                      &st->ctor_connection) &&
         define_class(env, exports, "NativeListener", lis_ctor, lis_props, VU_ARRAY_LEN(lis_props),
                      &st->ctor_listener) &&
         vu_export_fn(env, exports, "listenUnix", listen_unix) &&
         vu_export_fn(env, exports, "connectUnix", connect_unix) &&
         vu_export_fn(env, exports, "socketpair", socket_pair) && vu_export_fn(env, exports, "peerCred", peer_cred);
}
