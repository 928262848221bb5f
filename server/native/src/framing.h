/*
 * The receive side of a vfio-user stream as plain C over a buffer: no Node-API, no libuv. socket.c calls these
 * around its recvmsg, and the libFuzzer harness (server/native/fuzz/framing-fuzz.c) drives the very same
 * functions over a real socketpair, so what is fuzzed is what runs.
 *
 * Framing: a 16-byte header whose little-endian u32 at offset 4 is the total size (header included); a size below
 * 16 or above `max_msg` is a protocol error (EPROTO). Which message the fds of a read belong to:
 *   exact: a read never spans two messages, so its fds belong to the message being read (the rest of a message
 *          and the next header are read by one recvmmsg, two entries: vu_rx_read_space_ahead). One exception, for
 *          one read per small message: at a message boundary the recvmmsg reads the header and, as its second
 *          entry, the VU_RX_BODY_AHEAD bytes after it; fds that come with that entry go by the bulk rule. That
 *          differs from the message being read only for a sender whose fds ride on a sendmsg that starts inside
 *          a message (after its header) and runs on into the next one, or for a message with fds that is, with
 *          the message before it, shorter than 16 + VU_RX_BODY_AHEAD bytes (no vfio-user message with fds is:
 *          a DMA_MAP is 48 bytes, a SET_IRQS with one eventfd 40, any message before them at least 16);
 *   bulk:  a read takes up to 64 KiB; its fds belong to the last message that starts before the end of the read.
 * Every received fd has one owner: the buffer (groups) until the message is taken with vu_rx_next, the caller
 * after that. Errors close the fds of the read that caused them; vu_rx_close_fds closes what is still held.
 *
 * MSG_CTRUNC (the kernel could not install every fd of a read: the process is at RLIMIT_NOFILE) fails the
 * message, not the stream: the bytes are kept, the fds that did arrive are closed, and the message they belong to
 * (by the rule above) is taken with no fds and `fds_truncated` set, for the session to answer EMFILE.
 */
#ifndef VU_FRAMING_H
#define VU_FRAMING_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define VU_HDR_SIZE 16
#define VU_RX_CHUNK (64 * 1024)
#define VU_RX_SHRINK (1024 * 1024)
#define VU_MAX_FDS 253 /* SCM_MAX_FD: the most one sendmsg can carry */
/* Bytes read behind a header at a message boundary (exact framing): REGION_READ, DMA_UNMAP and DMA_MAP in one read. */
#define VU_RX_BODY_AHEAD 32

typedef struct vu_fdgroup {
  uint64_t off;   /* stream offset of the first byte of the message these fds belong to */
  bool truncated; /* the kernel dropped fds of this message (MSG_CTRUNC) */
  int n;
  int fds[];
} vu_fdgroup;

typedef struct vu_rx {
  uint8_t *buf;
  size_t cap, start, end; /* buf[start, end) is received and not yet taken */
  uint64_t base;          /* stream offset of buf[0] */
  uint32_t max_msg;
  bool exact;
  vu_fdgroup **groups; /* by increasing offset */
  size_t ngroups, groups_cap;
} vu_rx;

/* Result of vu_rx_received for an orderly end of stream (nothing pending). */
#define VU_RX_EOF (-1)

void vu_close_fds(const int *fds, int n);

/* Room for `want` more bytes at buf[end]. False on ENOMEM. */
bool vu_rx_reserve(vu_rx *rx, size_t want);

/* Where the next recvmsg reads to (exact: at most the rest of the current header or message). 0 or ENOMEM. */
int vu_rx_read_space(vu_rx *rx, struct iovec *iov);

/*
 * Exact framing's read-ahead. When the header of the current message is buffered and its rest is still to come,
 * `ahead` is set to 16 bytes of room right behind `iov` (reserved) for the next message's header, read in the same
 * recvmmsg as a second entry; at a message boundary (nothing buffered), `iov` is the 16-byte header and `ahead`
 * the VU_RX_BODY_AHEAD bytes behind it; otherwise ahead->iov_len is 0. Like vu_rx_read_space otherwise. 0, EPROTO
 * or ENOMEM. Each recvmmsg entry is a recvmsg of its own, so fds arrive with the entry whose bytes their sendmsg
 * started in.
 */
int vu_rx_read_space_ahead(vu_rx *rx, struct iovec *iov, struct iovec *ahead);

/*
 * Accounts the read-ahead entry, after vu_rx_received accounted the first one (`n0` of `want0` bytes): moves its
 * `n` bytes behind the first entry's and files its fds under the next message, or under the current one when the
 * first entry came back short and this one stays inside the current message (a short first entry lets the second
 * cross into the next message: its fds then go to the next message, the bulk rule; MSG_CTRUNC marks that message
 * as vu_rx_received does). n == 0 (end of stream) is left to the next read. 0, or an errno with `*why` (the fds
 * are closed then).
 */
int vu_rx_received_ahead(vu_rx *rx, size_t n0, size_t want0, size_t n, const int *fds, int nfds, int msg_flags,
                         const char **why);
/*
 * Whether what is buffered ends exactly where a message ends (or nothing is buffered): after a short read, more
 * of the stream may come at once only in answer to a reply (worth one more read); otherwise the sender is in the
 * middle of a message.
 */
bool vu_rx_at_boundary(const vu_rx *rx);

/* The fds of SCM_RIGHTS messages in `msg` into out[] (at most VU_MAX_FDS; any more are closed). */
int vu_collect_fds(struct msghdr *msg, int *out);

/*
 * Accounts a recvmsg that returned `n` bytes (written at the space vu_rx_read_space gave) with `fds` and the
 * msg_flags it reported. Returns 0, VU_RX_EOF (n == 0, nothing pending), or an errno (EPROTO: end of stream
 * mid-message; ENOMEM) with `*why` set. On any non-zero result the fds are closed; on 0 they belong to the buffer
 * (with MSG_CTRUNC they are closed and their message marked, see above).
 */
int vu_rx_received(vu_rx *rx, size_t n, const int *fds, int nfds, int msg_flags, const char **why);

/*
 * The next complete message: returns 1 and consumes it (`*data` points into the buffer until the next call that
 * changes it; fds[0..*nfds) belong to the caller now, fds must have room for VU_MAX_FDS; `*fds_truncated`: the
 * kernel dropped some of its fds, none are given), 0 when none is complete, or -EPROTO for a bad size (`*why`
 * set; nothing consumed).
 */
int vu_rx_next(vu_rx *rx, const uint8_t **data, uint32_t *size, int *fds, int *nfds, bool *fds_truncated,
               const char **why);

/* Drops the buffer once everything was taken (caller: not while a message pointer is in use). */
void vu_rx_settle(vu_rx *rx);

/*
 * Appends bytes, with fds belonging to the message starting at data[0] (taken on success; `fds_truncated`: that
 * message lost fds to MSG_CTRUNC before a hand-over). 0 or ENOMEM.
 */
int vu_rx_prefill(vu_rx *rx, const uint8_t *data, size_t len, const int *fds, int nfds, bool fds_truncated);

/* Forgets every pending byte and group without closing the fds (their ownership moved elsewhere). */
void vu_rx_forget(vu_rx *rx);

/* Closes every fd still held. */
void vu_rx_close_fds(vu_rx *rx);

/* Frees the buffer and groups (after vu_rx_close_fds, or vu_rx_forget). */
void vu_rx_free(vu_rx *rx);

#endif
