/*
 * libFuzzer harness for the addon's receive path (src/framing.c): the same functions socket.c calls around its
 * recvmsg, driven over a real AF_UNIX socketpair with real fds (eventfds) passed by SCM_RIGHTS, so the kernel's
 * own read splitting, fd attachment and MSG_CTRUNC (provoked for real by lowering RLIMIT_NOFILE around one
 * recvmsg) are part of what is fuzzed. Built and run by test/fuzz/native.ts (docs/hardening.md).
 *
 * The input is a configuration byte and then operations (see run_ops): send bytes (with up to 253 fds), send a
 * header plus filler of a chosen size, receive (one step of socket.c's read loop: vu_rx_read_space, recvmsg,
 * vu_collect_fds, vu_rx_received, then vu_rx_next until nothing is complete; or, for exact framing, the recvmmsg
 * that also reads the next header, or at a message boundary a header and what follows it: vu_rx_read_space_ahead,
 * vu_rx_received_ahead), receive under a lowered fd limit,
 * hand the buffer over to a new receiver (takeBuffered/prefill), shut the sender down, change the size limit.
 *
 * A model of the sent stream checks, after every step:
 *   - every message taken is exactly the next bytes sent, its size the one in its header;
 *   - a message is taken as soon as it is complete; a bad size is refused (EPROTO) once its header is in;
 *   - the fds of a read go to the message the framing rule names (exact: the one being read, reads never cross a
 *     message, but for the second entry of a read at a message boundary; bulk, and that entry: the last message
 *     starting before the end of the read), at most 253, in order;
 *   - a read the kernel truncated (MSG_CTRUNC) marks that message: it is taken with no fds and the mark, and the
 *     stream goes on;
 *   - the end of stream is orderly only between messages; a truncated read is refused;
 *   - every fd is closed exactly once by the end of the input (no leak, no double close).
 * A violation aborts with a message, which libFuzzer records as a crash.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../src/framing.h"

#define MAX_TRACKED_FD 65536
#define MAX_READS 1024
#define FILL_MAX (300 * 1024)

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "framing-fuzz: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  abort();
}
#define CHECK(cond, ...)                                                                                           \
  do {                                                                                                             \
    if (!(cond)) fail(__VA_ARGS__);                                                                                \
  } while (0)

static const uint32_t MAX_CHOICES[4] = {64, 4096, 65536 + 64, 1u << 20};

/* One recvmsg as the model sees it: stream range and the fds it carried. */
typedef struct {
  uint64_t a, b;
  int nfds;
  int *fds;
  bool ctrunc; /* the kernel dropped fds of this read */
  bool taken;  /* its fds were handed to a message (or closed by a failure) */
} rread;

typedef struct {
  const uint8_t *in;
  size_t len, pos;
  /* the stream as sent (what the kernel accepted) */
  uint8_t *sent;
  size_t sent_len, sent_cap;
  /* message starts in the sent stream, up to the first bad size (included) */
  uint64_t *starts;
  size_t nstarts, starts_cap;
  uint64_t walk; /* next message start to look at */
  bool walk_bad; /* starts[nstarts-1] has a bad size */
  /* receiver */
  vu_rx rx;
  int sock[2]; /* [0] receiver, [1] sender */
  uint64_t received, taken;
  bool dead, sender_shut;
  rread reads[MAX_READS];
  size_t nreads;
  /* fd numbers seen this run, each must be closed at the end */
  uint8_t seen[MAX_TRACKED_FD / 8];
  int max_seen;
} state;

static void see(state *s, int fd) {
  CHECK(fd >= 0 && fd < MAX_TRACKED_FD, "fd %d out of range", fd);
  s->seen[fd / 8] |= (uint8_t)(1u << (fd % 8));
  if (fd > s->max_seen) s->max_seen = fd;
}

static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static size_t take_in(state *s, size_t n) {
  size_t left = s->len - s->pos;
  return n < left ? n : left;
}

static int in_byte(state *s) { return s->pos < s->len ? s->in[s->pos++] : 0; }

/* Extends the walk of message starts over the bytes sent so far (with the current size limit). */
static void walk(state *s) {
  while (!s->walk_bad && s->walk < s->sent_len) {
    if (s->nstarts == 0 || s->starts[s->nstarts - 1] != s->walk) {
      if (s->nstarts == s->starts_cap) {
        s->starts_cap = s->starts_cap ? s->starts_cap * 2 : 64;
        s->starts = realloc(s->starts, s->starts_cap * sizeof *s->starts);
        CHECK(s->starts, "oom");
      }
      s->starts[s->nstarts++] = s->walk;
    }
    if (s->sent_len - s->walk < VU_HDR_SIZE) return;
    uint32_t size = rd32(s->sent + s->walk + 4);
    if (size < VU_HDR_SIZE || size > s->rx.max_msg) {
      s->walk_bad = true;
      return;
    }
    s->walk += size;
  }
}

/* The last message start below `end` (the owner of a read ending there). */
static uint64_t owner(state *s, uint64_t end) {
  walk(s);
  uint64_t o = 0;
  for (size_t i = 0; i < s->nstarts && s->starts[i] < end; i++) o = s->starts[i];
  return o;
}

/* The model's verdict on the stream received so far: offset of a bad header fully received, or UINT64_MAX. */
static uint64_t bad_header_in(state *s, uint64_t upto) {
  walk(s);
  if (!s->walk_bad) return UINT64_MAX;
  uint64_t b = s->starts[s->nstarts - 1];
  return b + VU_HDR_SIZE <= upto ? b : UINT64_MAX;
}

static void append_sent(state *s, const uint8_t *p, size_t n) {
  if (s->sent_len + n > s->sent_cap) {
    size_t cap = s->sent_cap ? s->sent_cap : 4096;
    while (cap < s->sent_len + n) cap *= 2;
    s->sent = realloc(s->sent, cap);
    CHECK(s->sent, "oom");
    s->sent_cap = cap;
  }
  memcpy(s->sent + s->sent_len, p, n);
  s->sent_len += n;
}

static void do_send(state *s, const uint8_t *p, size_t n, int nfds) {
  if (s->sender_shut || n == 0) return;
  int fds[VU_MAX_FDS];
  int made = 0;
  for (; made < nfds; made++) {
    fds[made] = eventfd(0, EFD_CLOEXEC);
    if (fds[made] < 0) break; /* the fd limit: send what we have */
    see(s, fds[made]);
  }
  union {
    struct cmsghdr align;
    char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
  } cbuf;
  struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (made) {
    memset(cbuf.buf, 0, sizeof cbuf.buf);
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)made);
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)made);
    memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)made);
  }
  ssize_t r = sendmsg(s->sock[1], &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  vu_close_fds(fds, made); /* in flight, the kernel holds its own references */
  if (r < 0) {
    CHECK(errno == EAGAIN || errno == ETOOMANYREFS || errno == ENOBUFS || errno == EPIPE, "sendmsg: %s",
          strerror(errno));
    return;
  }
  append_sent(s, p, (size_t)r);
}

static void close_taken(state *s, const int *fds, int n) {
  for (int i = 0; i < n; i++) CHECK(close(fds[i]) == 0, "fd %d handed over twice or already closed", fds[i]);
  (void)s;
}

/* vu_rx_next until nothing is complete, checking each message against the model. */
static void deliver(state *s) {
  while (!s->dead) {
    const uint8_t *data;
    uint32_t size;
    int fds[VU_MAX_FDS];
    int nfds = 0;
    bool truncated = false;
    const char *why = NULL;
    int r = vu_rx_next(&s->rx, &data, &size, fds, &nfds, &truncated, &why);
    uint64_t at = s->taken;
    if (r < 0) {
      CHECK(r == -EPROTO && why, "vu_rx_next: %d", r);
      CHECK(bad_header_in(s, s->received) == at, "EPROTO (%s) at %llu, model has no bad header there", why,
            (unsigned long long)at);
      s->dead = true;
      return;
    }
    if (r == 0) {
      /* nothing complete: either no full header, or the message is longer than what was received */
      uint64_t have = s->received - at;
      if (have >= VU_HDR_SIZE) {
        uint32_t sz = rd32(s->sent + at + 4);
        CHECK(sz >= VU_HDR_SIZE && sz <= s->rx.max_msg, "bad size %u at %llu not refused", sz,
              (unsigned long long)at);
        CHECK(have < sz, "complete message at %llu (%u bytes, %llu in) not taken", (unsigned long long)at, sz,
              (unsigned long long)have);
      }
      return;
    }
    CHECK(at + size <= s->received, "message of %u bytes at %llu past what was received", size,
          (unsigned long long)at);
    CHECK(size == rd32(s->sent + at + 4) && memcmp(data, s->sent + at, size) == 0,
          "message at %llu differs from the bytes sent", (unsigned long long)at);
    CHECK(owner(s, at + 1) == at, "message taken at %llu, which does not start a message", (unsigned long long)at);
    /* the fds the rule gives this message: reads whose owner is `at`, in order, at most 253 */
    int want[VU_MAX_FDS];
    int nwant = 0, extra = 0;
    bool want_trunc = false;
    for (size_t i = 0; i < s->nreads; i++) {
      rread *rd = &s->reads[i];
      if (rd->taken || !(rd->nfds || rd->ctrunc) || owner(s, rd->b) != at) continue;
      want_trunc |= rd->ctrunc;
      for (int k = 0; k < rd->nfds; k++) {
        if (nwant < VU_MAX_FDS)
          want[nwant++] = rd->fds[k];
        else
          extra++; /* closed by the framing */
      }
      rd->taken = true;
    }
    (void)extra;
    CHECK(truncated == want_trunc, "message at %llu: truncation mark %d, the reads say %d", (unsigned long long)at,
          truncated, want_trunc);
    if (want_trunc) nwant = 0; /* the framing closed them: a part of a set is no use */
    CHECK(nfds == nwant, "message at %llu got %d fds, the rule gives %d", (unsigned long long)at, nfds, nwant);
    for (int i = 0; i < nfds; i++)
      CHECK(fds[i] == want[i], "message at %llu: fd %d where %d was expected", (unsigned long long)at, fds[i],
            want[i]);
    close_taken(s, fds, nfds);
    s->taken += size;
  }
  if (!s->dead) vu_rx_settle(&s->rx);
}

/* Files a read [a, b) and the fds it brought with the model (a truncated read's fds are closed by the framing). */
static void record_read(state *s, uint64_t a, uint64_t b, const int *fds, int nfds, bool ctrunc) {
  rread *rd = &s->reads[s->nreads++];
  rd->a = a;
  rd->b = b;
  rd->nfds = ctrunc ? 0 : nfds;
  rd->ctrunc = ctrunc;
  rd->taken = false;
  rd->fds = NULL;
  if (rd->nfds) {
    rd->fds = malloc(sizeof(int) * (size_t)nfds);
    CHECK(rd->fds, "oom");
    memcpy(rd->fds, fds, sizeof(int) * (size_t)nfds);
  }
}

typedef union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(int) * VU_MAX_FDS)];
} cmsg_buf;

/*
 * One step of socket.c's conn_read_burst: `count` reads, each followed by delivery. `squeeze` >= 0: fd limit room.
 * With `ahead` (exact framing), a read of a message's rest also reads the next header in the same recvmmsg
 * (vu_rx_read_space_ahead, vu_rx_received_ahead), as the addon does; otherwise one recvmsg (vu_rx_read_space).
 */
static void receive(state *s, int count, int squeeze, bool ahead) {
  deliver(s);
  for (int i = 0; i < count && !s->dead; i++) {
    if (s->nreads + 2 > MAX_READS) return;
    struct iovec iov[2] = {{0}};
    int e = ahead && s->rx.exact ? vu_rx_read_space_ahead(&s->rx, &iov[0], &iov[1]) : vu_rx_read_space(&s->rx, &iov[0]);
    CHECK(e == 0, "vu_rx_read_space: %d", e);
    bool two = iov[1].iov_len > 0;
    /* exact, nothing buffered: the header, and VU_RX_BODY_AHEAD bytes behind it as the second entry */
    bool boundary = two && s->rx.end == s->rx.start;
    static cmsg_buf cbuf[2];
    struct mmsghdr mm[2];
    memset(mm, 0, sizeof mm);
    for (int k = 0; k < 2; k++) {
      mm[k].msg_hdr.msg_iov = &iov[k];
      mm[k].msg_hdr.msg_iovlen = 1;
      mm[k].msg_hdr.msg_control = cbuf[k].buf;
      mm[k].msg_hdr.msg_controllen = sizeof cbuf[k].buf;
    }
    struct rlimit saved;
    if (squeeze >= 0) {
      int probe = dup(0);
      CHECK(probe >= 0, "dup: %s", strerror(errno));
      close(probe);
      getrlimit(RLIMIT_NOFILE, &saved);
      struct rlimit low = {.rlim_cur = (rlim_t)probe + (rlim_t)squeeze, .rlim_max = saved.rlim_max};
      setrlimit(RLIMIT_NOFILE, &low);
    }
    int got = 1;
    ssize_t n;
    if (two) {
      got = recvmmsg(s->sock[0], mm, 2, MSG_DONTWAIT | MSG_CMSG_CLOEXEC, NULL);
      n = got < 0 ? -1 : (ssize_t)mm[0].msg_len;
    } else {
      n = recvmsg(s->sock[0], &mm[0].msg_hdr, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    }
    int rerr = errno;
    if (squeeze >= 0) setrlimit(RLIMIT_NOFILE, &saved);
    if (n < 0) {
      CHECK(rerr == EAGAIN || rerr == EINTR, "recvmsg: %s", strerror(rerr));
      return;
    }
    int fds[VU_MAX_FDS];
    int nfds = vu_collect_fds(&mm[0].msg_hdr, fds);
    for (int k = 0; k < nfds; k++) see(s, fds[k]);
    bool ctrunc = mm[0].msg_hdr.msg_flags & MSG_CTRUNC;
    uint64_t a = s->received, b = s->received + (uint64_t)n;
    size_t want0 = iov[0].iov_len;
    CHECK(b <= s->sent_len, "received more than was sent");
    CHECK(n == 0 || memcmp(iov[0].iov_base, s->sent + a, (size_t)n) == 0, "recvmsg bytes differ (harness bug)");
    if (s->rx.exact && n > 0) {
      CHECK(owner(s, a + 1) == owner(s, b), "exact framing read [%llu, %llu) across a message boundary",
            (unsigned long long)a, (unsigned long long)b);
      CHECK((size_t)n <= want0, "read past the space given");
    }
    const char *why = NULL;
    uint64_t pending = s->received - s->taken;
    e = vu_rx_received(&s->rx, (size_t)n, fds, nfds, mm[0].msg_hdr.msg_flags, &why);
    if (n == 0) {
      if (pending == 0) {
        CHECK(e == VU_RX_EOF, "end of stream between messages: got %d, want EOF", e);
      } else {
        CHECK(e == EPROTO && why, "end of stream mid-message not refused (%d)", e);
      }
      if (got == 2) { /* as the addon: the read-ahead's fds have no message to go to */
        int n1 = vu_collect_fds(&mm[1].msg_hdr, fds);
        for (int k = 0; k < n1; k++) see(s, fds[k]);
        vu_close_fds(fds, n1);
      }
      s->dead = true;
      return;
    }
    s->received = b;
    CHECK(e == 0, "vu_rx_received: %d (%s)", e, why ? why : "");
    record_read(s, a, b, fds, nfds, ctrunc);
    bool drained = (size_t)n < want0;
    if (got == 2) {
      size_t n1 = mm[1].msg_len;
      nfds = vu_collect_fds(&mm[1].msg_hdr, fds);
      for (int k = 0; k < nfds; k++) see(s, fds[k]);
      ctrunc = mm[1].msg_hdr.msg_flags & MSG_CTRUNC;
      uint64_t b1 = b + n1;
      CHECK(b1 <= s->sent_len, "read-ahead received more than was sent");
      e = vu_rx_received_ahead(&s->rx, (size_t)n, want0, n1, fds, nfds, mm[1].msg_hdr.msg_flags, &why);
      CHECK(e == 0, "vu_rx_received_ahead: %d (%s)", e, why ? why : "");
      if (n1 > 0) {
        /* both entries end up contiguous in the buffer */
        CHECK(memcmp(s->rx.buf + s->rx.end - (size_t)(b1 - a), s->sent + a, (size_t)(b1 - a)) == 0,
              "read-ahead bytes misplaced in the buffer");
        /* a full first entry: the read-ahead is the next header alone (at a boundary: what follows the header) */
        if ((size_t)n == want0 && !boundary)
          CHECK(owner(s, b + 1) == owner(s, b1) && owner(s, b + 1) == b, "read-ahead [%llu, %llu) is not a header",
                (unsigned long long)b, (unsigned long long)b1);
        s->received = b1;
        record_read(s, b, b1, fds, nfds, ctrunc);
      }
      drained = n1 < iov[1].iov_len && !vu_rx_at_boundary(&s->rx);
    }
    deliver(s);
    if (drained) return;
  }
}

/* The hand-over: takeBuffered on this receiver, prefill of a new one (one piece per fd group). */
static void handover(state *s) {
  if (s->dead) return;
  vu_rx *old = &s->rx;
  vu_rx nrx = {.max_msg = old->max_msg, .exact = old->exact};
  size_t have = old->end - old->start;
  uint64_t base = old->base + old->start;
  size_t piece_at = 0;
  int *gfds = NULL;
  int gn = 0;
  bool gtrunc = false;
  for (size_t i = 0; i <= old->ngroups; i++) {
    size_t next = i < old->ngroups ? (size_t)(old->groups[i]->off - base) : have;
    CHECK(next >= piece_at && next <= have, "group offset %zu outside the buffer", next);
    if (next > piece_at || gn || gtrunc) {
      const uint8_t *piece = next > piece_at ? old->buf + old->start + piece_at : NULL;
      CHECK(vu_rx_prefill(&nrx, piece, next - piece_at, gfds, gn, gtrunc) == 0, "prefill");
    }
    if (i < old->ngroups) {
      gfds = old->groups[i]->fds;
      gn = old->groups[i]->n;
      gtrunc = old->groups[i]->truncated;
      piece_at = next;
    }
  }
  /* prefill copied the fds into groups of its own: the old groups are forgotten, not closed */
  vu_rx_forget(old);
  vu_rx_free(old);
  s->rx = nrx;
  deliver(s);
}

static void run_ops(state *s) {
  while (s->pos < s->len && !s->dead) {
    int op = in_byte(s);
    switch (op & 7) {
    case 0: /* bytes from the input */
    case 1: { /* the same with fds */
      size_t n = (size_t)in_byte(s) | (size_t)(op >> 3) << 8;
      int nfds = (op & 7) == 1 ? in_byte(s) % (VU_MAX_FDS + 1) : 0;
      n = take_in(s, n + 1);
      do_send(s, s->in + s->pos, n, nfds);
      s->pos += n;
      break;
    }
    case 2: { /* a header of a chosen size and filler up to that size (fds if bit 3) */
      uint8_t hdr[VU_HDR_SIZE] = {0};
      size_t n = take_in(s, VU_HDR_SIZE);
      memcpy(hdr, s->in + s->pos, n);
      s->pos += n;
      uint32_t size = rd32(hdr + 4);
      int nfds = (op & 8) ? in_byte(s) % 8 : 0;
      size_t total = size < VU_HDR_SIZE ? VU_HDR_SIZE : size;
      if (total > FILL_MAX) total = FILL_MAX;
      uint8_t *buf = calloc(1, total);
      CHECK(buf, "oom");
      memcpy(buf, hdr, VU_HDR_SIZE);
      for (size_t i = VU_HDR_SIZE; i < total; i++) buf[i] = (uint8_t)(i * 31 + (op >> 4));
      do_send(s, buf, total, nfds);
      free(buf);
      break;
    }
    case 3: /* receive (bit 7: with exact framing's read-ahead) */
      receive(s, ((op >> 3) & 15) + 1, -1, op & 0x80);
      break;
    case 4: /* receive with room for only a few more fds: the kernel truncates SCM_RIGHTS (MSG_CTRUNC) */
      receive(s, 1, (op >> 3) & 7, op & 0x80);
      break;
    case 5:
      handover(s);
      break;
    case 6:
      if (!s->sender_shut) shutdown(s->sock[1], SHUT_WR);
      s->sender_shut = true;
      break;
    case 7: /* setMaxMessageSize between messages (the server raises it after VERSION) */
      if (s->received == s->taken) {
        s->rx.max_msg = MAX_CHOICES[(op >> 3) & 3];
        /* the model's walk from here on uses the new limit */
        s->walk_bad = false;
        s->nstarts = 0;
        s->walk = s->taken;
      }
      break;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static state st;
  state *s = &st;
  memset(s, 0, sizeof *s);
  s->in = data;
  s->len = size;
  s->pos = 1;
  s->rx.exact = data[0] & 1;
  s->rx.max_msg = MAX_CHOICES[(data[0] >> 1) & 3];
  s->max_seen = -1;
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s->sock) == 0, "socketpair: %s", strerror(errno));
  see(s, s->sock[0]);
  see(s, s->sock[1]);
  run_ops(s);
  /* drain what is left, as the poll loop would */
  for (int i = 0; i < 256 && !s->dead; i++) {
    uint64_t before = s->received;
    receive(s, 16, -1, i & 1);
    if (s->received == before) break;
  }
  /* the connection closes: what the buffer still holds is closed by it */
  vu_rx_close_fds(&s->rx);
  vu_rx_free(&s->rx);
  close(s->sock[0]);
  close(s->sock[1]);
  for (size_t i = 0; i < s->nreads; i++) free(s->reads[i].fds);
  free(s->sent);
  free(s->starts);
  for (int fd = 0; fd <= s->max_seen; fd++) {
    if (!(s->seen[fd / 8] & (1u << (fd % 8)))) continue;
    CHECK(fcntl(fd, F_GETFD) < 0 && errno == EBADF, "fd %d still open after the connection closed", fd);
  }
  return 0;
}
