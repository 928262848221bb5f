/* The receive side of a vfio-user stream (framing.h): buffer, message boundaries, which message owns which fds. */
#include "framing.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static inline uint32_t rd32le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* NULL when `size` is a legal message size, else why not. */
static const char *bad_size(uint32_t size, uint32_t max) {
  if (size < VU_HDR_SIZE) return "message size below 16";
  if (size > max) return "message size above the limit";
  return NULL;
}

void vu_close_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++)
    if (fds[i] >= 0) close(fds[i]);
}

bool vu_rx_reserve(vu_rx *rx, size_t want) {
  if (rx->cap - rx->end >= want) return true;
  if (rx->start > 0) {
    memmove(rx->buf, rx->buf + rx->start, rx->end - rx->start);
    rx->base += rx->start;
    rx->end -= rx->start;
    rx->start = 0;
    if (rx->cap - rx->end >= want) return true;
  }
  size_t cap = rx->end + want;
  if (cap < VU_RX_CHUNK) cap = VU_RX_CHUNK;
  cap = (cap + 4095) & ~(size_t)4095;
  uint8_t *p = realloc(rx->buf, cap);
  if (!p) return false;
  rx->buf = p;
  rx->cap = cap;
  return true;
}

int vu_rx_read_space(vu_rx *rx, struct iovec *iov) {
  size_t have = rx->end - rx->start;
  size_t need;
  if (have < VU_HDR_SIZE) {
    need = VU_HDR_SIZE - have;
  } else {
    uint32_t size = rd32le(rx->buf + rx->start + 4);
    /* vu_rx_next has refused a bad size before any read; checked again so a size never sizes the buffer. */
    if (bad_size(size, rx->max_msg)) return EPROTO;
    need = size > have ? size - have : 0;
    if (need == 0) need = VU_HDR_SIZE; /* a complete message not taken yet: cannot happen after vu_rx_next */
  }
  size_t want = rx->exact ? need : (need > VU_RX_CHUNK ? need : VU_RX_CHUNK);
  if (!vu_rx_reserve(rx, want)) return ENOMEM;
  iov->iov_base = rx->buf + rx->end;
  iov->iov_len = rx->exact ? want : rx->cap - rx->end;
  return 0;
}

int vu_rx_read_space_ahead(vu_rx *rx, struct iovec *iov, struct iovec *ahead) {
  ahead->iov_base = NULL;
  ahead->iov_len = 0;
  size_t have = rx->end - rx->start;
  if (rx->exact && have == 0) {
    /* At a message boundary: the header, and VU_RX_BODY_AHEAD bytes of what follows it in the same recvmmsg. */
    if (!vu_rx_reserve(rx, VU_HDR_SIZE + VU_RX_BODY_AHEAD)) return ENOMEM;
    iov->iov_base = rx->buf + rx->end;
    iov->iov_len = VU_HDR_SIZE;
    ahead->iov_base = rx->buf + rx->end + VU_HDR_SIZE;
    ahead->iov_len = VU_RX_BODY_AHEAD;
    return 0;
  }
  if (!rx->exact || have < VU_HDR_SIZE) return vu_rx_read_space(rx, iov);
  uint32_t size = rd32le(rx->buf + rx->start + 4);
  if (bad_size(size, rx->max_msg)) return EPROTO;
  if (size <= have) return vu_rx_read_space(rx, iov); /* a complete message not taken yet: cannot happen */
  size_t need = size - have;
  if (!vu_rx_reserve(rx, need + VU_HDR_SIZE)) return ENOMEM;
  iov->iov_base = rx->buf + rx->end;
  iov->iov_len = need;
  ahead->iov_base = rx->buf + rx->end + need;
  ahead->iov_len = VU_HDR_SIZE;
  return 0;
}

int vu_collect_fds(struct msghdr *msg, int *out) {
  int n = 0;
  for (struct cmsghdr *cm = CMSG_FIRSTHDR(msg); cm; cm = CMSG_NXTHDR(msg, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
    size_t cnt = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const unsigned char *p = CMSG_DATA(cm);
    for (size_t i = 0; i < cnt; i++) {
      int fd;
      memcpy(&fd, p + i * sizeof(int), sizeof fd);
      if (n < VU_MAX_FDS)
        out[n++] = fd;
      else
        close(fd);
    }
  }
  return n;
}

static int file_fds(vu_rx *rx, uint64_t off, const int *fds, int n, bool truncated, const char **why);

/*
 * The bulk rule: the buffer offset of the last message that starts before buf[end]. A bad size ends the walk:
 * the fds go with the bad message, so the whole messages before it are still delivered (vu_rx_next refuses the
 * bad header when it reaches it, and the connection closing closes its fds), as protocol's Framer does.
 */
static size_t last_start(const vu_rx *rx) {
  size_t at = rx->start, pos = rx->start;
  while (pos < rx->end) {
    at = pos;
    if (rx->end - pos < VU_HDR_SIZE) break;
    uint32_t size = rd32le(rx->buf + pos + 4);
    if (bad_size(size, rx->max_msg)) break;
    pos += size;
  }
  return at;
}

bool vu_rx_at_boundary(const vu_rx *rx) {
  size_t pos = rx->start;
  while (pos < rx->end) {
    if (rx->end - pos < VU_HDR_SIZE) return false;
    uint32_t size = rd32le(rx->buf + pos + 4);
    if (bad_size(size, rx->max_msg)) return false;
    pos += size;
  }
  return pos == rx->end;
}

/*
 * Files the fds of the read that ended at buf[end] under the message they belong to (`truncated`: the kernel
 * dropped some; those that came are closed and the message marked). 0 or ENOMEM.
 */
static int attach_fds(vu_rx *rx, const int *fds, int n, bool truncated, const char **why) {
  size_t at = rx->exact ? rx->start : last_start(rx);
  return file_fds(rx, rx->base + at, fds, n, truncated, why);
}

/* Appends a new fd group for the message at stream offset `off`: 0, or ENOMEM with the fds left to the caller. */
static int push_group(vu_rx *rx, uint64_t off, const int *fds, int n, bool truncated) {
  if (rx->ngroups == rx->groups_cap) {
    size_t cap = rx->groups_cap ? rx->groups_cap * 2 : 8;
    vu_fdgroup **p = realloc(rx->groups, cap * sizeof *p);
    if (!p) return ENOMEM;
    rx->groups = p;
    rx->groups_cap = cap;
  }
  vu_fdgroup *g = malloc(sizeof *g + (size_t)n * sizeof(int));
  if (!g) return ENOMEM;
  g->off = off;
  g->truncated = truncated;
  g->n = n;
  memcpy(g->fds, fds, (size_t)n * sizeof(int));
  rx->groups[rx->ngroups++] = g;
  return 0;
}

/*
 * Files fds under the message starting at stream offset `off` (`truncated`: MSG_CTRUNC, the fds are closed and
 * the message marked). 0 or ENOMEM (the fds closed).
 */
static int file_fds(vu_rx *rx, uint64_t off, const int *fds, int n, bool truncated, const char **why) {
  if (truncated) {
    vu_close_fds(fds, n);
    n = 0;
  }
  if (rx->ngroups && rx->groups[rx->ngroups - 1]->off == off) {
    vu_fdgroup *g = rx->groups[rx->ngroups - 1];
    vu_fdgroup *ng = realloc(g, sizeof *g + (size_t)(g->n + n) * sizeof(int));
    if (!ng) goto oom;
    memcpy(ng->fds + ng->n, fds, (size_t)n * sizeof(int));
    ng->n += n;
    ng->truncated |= truncated;
    rx->groups[rx->ngroups - 1] = ng;
    return 0;
  }
  if (push_group(rx, off, fds, n, truncated) == 0) return 0;
oom:
  vu_close_fds(fds, n);
  *why = NULL;
  return ENOMEM;
}

int vu_rx_received(vu_rx *rx, size_t n, const int *fds, int nfds, int msg_flags, const char **why) {
  *why = NULL;
  if (n == 0) {
    vu_close_fds(fds, nfds);
    if (rx->end == rx->start) return VU_RX_EOF;
    *why = "connection closed in the middle of a message";
    return EPROTO;
  }
  rx->end += n;
  bool truncated = msg_flags & MSG_CTRUNC;
  return nfds || truncated ? attach_fds(rx, fds, nfds, truncated, why) : 0;
}

int vu_rx_received_ahead(vu_rx *rx, size_t n0, size_t want0, size_t n, const int *fds, int nfds, int msg_flags,
                         const char **why) {
  *why = NULL;
  if (n == 0) {
    vu_close_fds(fds, nfds); /* end of stream after the first entry: the next read sees it again */
    return 0;
  }
  /* The entry was read to buf[end - n0 + want0]; close the gap a short first entry left. */
  if (n0 < want0) memmove(rx->buf + rx->end, rx->buf + rx->end - n0 + want0, n);
  rx->end += n;
  bool truncated = msg_flags & MSG_CTRUNC;
  if (!nfds && !truncated) return 0;
  /* The bulk rule over what is buffered: the current message while this entry stayed inside it, else the last
   * message it reached into (framing.h: when that differs from exact attribution). */
  return file_fds(rx, rx->base + last_start(rx), fds, nfds, truncated, why);
}

/*
 * Takes the fds of the message at stream offset `off` (closing any stale group before it); for a message marked
 * truncated, closes them all and sets *truncated.
 */
static int take_fds(vu_rx *rx, uint64_t off, int *out, bool *truncated) {
  int n = 0;
  *truncated = false;
  size_t used = 0;
  while (used < rx->ngroups && rx->groups[used]->off <= off) {
    vu_fdgroup *g = rx->groups[used++];
    if (g->off < off) {
      vu_close_fds(g->fds, g->n); /* cannot happen: groups always name a message start */
    } else if (g->truncated) {
      vu_close_fds(g->fds, g->n); /* fds that came before the truncation: a part of a set is no use */
      *truncated = true;
    } else {
      for (int i = 0; i < g->n; i++) {
        if (n < VU_MAX_FDS)
          out[n++] = g->fds[i];
        else
          close(g->fds[i]);
      }
    }
    free(g);
  }
  if (used) {
    memmove(rx->groups, rx->groups + used, (rx->ngroups - used) * sizeof *rx->groups);
    rx->ngroups -= used;
  }
  return n;
}

int vu_rx_next(vu_rx *rx, const uint8_t **data, uint32_t *size, int *fds, int *nfds, bool *fds_truncated,
               const char **why) {
  size_t have = rx->end - rx->start;
  if (have < VU_HDR_SIZE) return 0;
  uint32_t sz = rd32le(rx->buf + rx->start + 4);
  if ((*why = bad_size(sz, rx->max_msg))) return -EPROTO;
  if (have < sz) return 0;
  *nfds = take_fds(rx, rx->base + rx->start, fds, fds_truncated);
  if (*fds_truncated) {
    vu_close_fds(fds, *nfds);
    *nfds = 0;
  }
  *data = rx->buf + rx->start;
  *size = sz;
  rx->start += sz;
  return 1;
}

void vu_rx_settle(vu_rx *rx) {
  if (rx->start != rx->end) return;
  rx->base += rx->start;
  rx->start = rx->end = 0;
  if (rx->cap > VU_RX_SHRINK) {
    free(rx->buf);
    rx->buf = NULL;
    rx->cap = 0;
  }
}

int vu_rx_prefill(vu_rx *rx, const uint8_t *data, size_t len, const int *fds, int nfds, bool fds_truncated) {
  if (!vu_rx_reserve(rx, len)) return ENOMEM;
  size_t at = rx->end;
  if ((nfds || fds_truncated) && push_group(rx, rx->base + at, fds, nfds, fds_truncated)) return ENOMEM;
  if (len) memcpy(rx->buf + at, data, len);
  rx->end += len;
  return 0;
}

void vu_rx_forget(vu_rx *rx) {
  for (size_t i = 0; i < rx->ngroups; i++) free(rx->groups[i]);
  rx->ngroups = 0;
  rx->start = rx->end;
  vu_rx_settle(rx);
}

void vu_rx_close_fds(vu_rx *rx) {
  for (size_t i = 0; i < rx->ngroups; i++) {
    vu_close_fds(rx->groups[i]->fds, rx->groups[i]->n);
    rx->groups[i]->n = 0;
  }
}

void vu_rx_free(vu_rx *rx) {
  for (size_t i = 0; i < rx->ngroups; i++) free(rx->groups[i]);
  free(rx->groups);
  rx->groups = NULL;
  rx->ngroups = rx->groups_cap = 0;
  free(rx->buf);
  rx->buf = NULL;
  rx->cap = rx->start = rx->end = 0;
}
