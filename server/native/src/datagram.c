/*
 * UNIX datagram sockets, which Node cannot open: the server sends systemd's sd_notify messages (READY=1,
 * STATUS=..., STOPPING=1) to $NOTIFY_SOCKET, and tests receive them. A path starting with '@' is in the abstract
 * namespace (the '@' becomes the leading NUL byte), as systemd allows for NOTIFY_SOCKET.
 */
#include "common.h"

#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills `sa` from a path ('@name' = abstract). */
static bool dgram_addr(napi_env env, napi_value v, struct sockaddr_un *sa, socklen_t *len) {
  char path[sizeof sa->sun_path + 1];
  if (!vu_get_string(env, v, "path", path, sizeof path)) return false;
  size_t n = strlen(path);
  if (n == 0 || n > sizeof sa->sun_path - (path[0] == '@' ? 0 : 1)) {
    vu_throw_errno_msg(env, n ? ENAMETOOLONG : EINVAL, "sendto", n ? "socket path too long" : "empty socket path");
    return false;
  }
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, n);
  if (path[0] == '@') {
    sa->sun_path[0] = '\0';
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n); /* abstract: no trailing NUL */
  } else {
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  }
  return true;
}

/*
 * sendDatagramUnix(path, data) -> bytes sent. One datagram on a fresh SOCK_DGRAM socket, never blocking
 * (MSG_DONTWAIT: a receiver whose queue is full gives EAGAIN instead of stalling the event loop).
 */
static napi_value js_send_datagram(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un sa;
  socklen_t salen;
  void *data;
  size_t len;
  if (!vu_args(env, info, 2, argv, NULL) || !dgram_addr(env, argv[0], &sa, &salen) ||
      !vu_get_bytes(env, argv[1], "data", &data, &len))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (!vu_ok(env, fd, "socket")) return NULL;
  ssize_t r = sendto(fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
  int e = errno;
  close(fd);
  if (r < 0) {
    vu_throw_errno(env, e, "sendto");
    return NULL;
  }
  return vu_u32(env, (uint32_t)r);
}

/*
 * bindDatagramUnix(path, mode) -> fd: a non-blocking SOCK_DGRAM socket bound to `path` (a file created with
 * `mode`, or '@name'). Datagrams are read with recvDatagram once FdWatcher reports it readable.
 */
static napi_value js_bind_datagram(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  struct sockaddr_un sa;
  socklen_t salen;
  uint32_t mode;
  if (!vu_args(env, info, 2, argv, NULL) || !dgram_addr(env, argv[0], &sa, &salen) ||
      !vu_get_u32(env, argv[1], "mode", &mode))
    return NULL;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (!vu_ok(env, fd, "socket")) return NULL;
  if (fchmod(fd, (mode_t)(mode & 07777)) < 0 || bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    int e = errno;
    close(fd);
    vu_throw_errno(env, e, "bind");
    return NULL;
  }
  return vu_i32(env, fd);
}

/* recvDatagram(fd) -> Buffer, or null when nothing is queued (never blocks). Datagrams above 64 KiB are cut. */
static napi_value js_recv_datagram(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  char buf[65536];
  ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      napi_value nul;
      NAPI_CALL(env, napi_get_null(env, &nul));
      return nul;
    }
    vu_throw_errno(env, errno, "recv");
    return NULL;
  }
  napi_value out;
  void *dst;
  NAPI_CALL(env, napi_create_buffer_copy(env, (size_t)r, buf, &dst, &out));
  return out;
}

bool vu_init_datagram(napi_env env, napi_value exports) {
  return vu_export_fn(env, exports, "sendDatagramUnix", js_send_datagram) &&
         vu_export_fn(env, exports, "bindDatagramUnix", js_bind_datagram) &&
         vu_export_fn(env, exports, "recvDatagram", js_recv_datagram);
}
