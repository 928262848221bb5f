/* File-descriptor utilities: memfd and seals, fstat summary, positioned I/O, close/dup, counting, open. */
#include "common.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <linux/kcmp.h>

/* memfdCreate(name, size: bigint|number, allowSealing, cloexec) -> fd */
static napi_value js_memfd_create(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  char name[250];
  uint64_t size = 0;
  bool sealing, cloexec;
  if (!vu_args(env, info, 4, argv, NULL) || !vu_get_string(env, argv[0], "name", name, sizeof name)) return NULL;
  if (!vu_is_nullish(env, argv[1]) && !vu_get_u64(env, argv[1], "size", &size)) return NULL;
  if (!vu_get_bool(env, argv[2], "allowSealing", true, &sealing) ||
      !vu_get_bool(env, argv[3], "cloexec", true, &cloexec))
    return NULL;
  if (size > (uint64_t)INT64_MAX) {
    vu_throw_errno(env, EFBIG, "ftruncate");
    return NULL;
  }
  unsigned flags = (sealing ? MFD_ALLOW_SEALING : 0) | (cloexec ? MFD_CLOEXEC : 0);
  int fd = memfd_create(name, flags);
  if (!vu_ok(env, fd, "memfd_create")) return NULL;
  if (size && ftruncate(fd, (off_t)size) < 0) {
    int e = errno;
    close(fd);
    vu_throw_errno(env, e, "ftruncate");
    return NULL;
  }
  return vu_i32(env, fd);
}

static napi_value js_add_seals(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  int32_t seals;
  if (!vu_args(env, info, 2, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd) ||
      !vu_get_i32(env, argv[1], "seals", &seals))
    return NULL;
  vu_ok(env, fcntl(fd, F_ADD_SEALS, seals), "fcntl(F_ADD_SEALS)");
  return NULL;
}

static napi_value js_get_seals(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  int r = fcntl(fd, F_GET_SEALS);
  if (!vu_ok(env, r, "fcntl(F_GET_SEALS)")) return NULL;
  return vu_i32(env, r);
}

static const char *type_name(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFSOCK:
      return "socket";
    case S_IFIFO:
      return "fifo";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
    case S_IFLNK:
      return "link";
    default:
      return "unknown";
  }
}

/* fdInfo(fd) -> { type, dev, ino, size, mode, flags, blksize, fsType, rdev } */
static napi_value js_fd_info(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  struct stat st;
  if (!vu_ok(env, fstat(fd, &st), "fstat")) return NULL;
  int fl = fcntl(fd, F_GETFL);
  if (!vu_ok(env, fl, "fcntl(F_GETFL)")) return NULL;
  struct statfs sfs;
  uint64_t fstype = fstatfs(fd, &sfs) == 0 ? (uint64_t)(unsigned long)sfs.f_type : 0;
  napi_value out;
  NAPI_CALL(env, napi_create_object(env, &out));
  if (!vu_set_str(env, out, "type", type_name(st.st_mode)) || !vu_set_u64(env, out, "dev", st.st_dev) ||
      !vu_set_u64(env, out, "ino", st.st_ino) || !vu_set_u64(env, out, "size", (uint64_t)st.st_size) ||
      !vu_set_u32(env, out, "mode", st.st_mode) || !vu_set_i32(env, out, "flags", fl) ||
      !vu_set_u32(env, out, "blksize", (uint32_t)st.st_blksize) ||
      !vu_set_val(env, out, "fsType", vu_double(env, (double)fstype)) || !vu_set_u64(env, out, "rdev", st.st_rdev))
    return NULL;
  return out;
}

/*
 * fdInspect(fd, out: Float64Array(9)) -> st_mode & S_IFMT. What a DMA_MAP needs to know about its fd, in one
 * call and without allocating: out[0..5) = [dev, ino, size, F_GETFL flags, seals]
 * (seals 0 for files that have none). Each syscall runs once (fstat, fcntl(F_GETFL), fcntl(F_GET_SEALS) for
 * regular files). dev/ino/size above 2^53 are not exact as doubles: the caller checks and falls back to fdInfo().
 * Throws only when fstat fails.
 *
 * The optional hint, out[5..9) = [1, sealedDev, sealedIno, sealedSeals] (out[5] = 0: none; in the array rather
 * than as three arguments, each of which costs a napi_get_value_double per DMA_MAP), names a file the caller holds
 * whose seals include F_SEAL_SEAL: seals belong to the inode and F_SEAL_SEAL forbids any change, so when fstat
 * shows that same (st_dev, st_ino) (both exact as doubles) the F_GET_SEALS call is skipped and `sealedSeals`
 * reported. The caller must hold a reference to that file (a
 * mapping or an fd), so that its inode number cannot have been reused by another file.
 */
static napi_value js_fd_inspect(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd;
  if (!vu_args(env, info, 2, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  napi_typedarray_type t;
  size_t n;
  void *data;
  bool is_ta = false;
  NAPI_CALL(env, napi_is_typedarray(env, argv[1], &is_ta));
  if (is_ta) NAPI_CALL(env, napi_get_typedarray_info(env, argv[1], &t, &n, &data, NULL, NULL));
  if (!is_ta || t != napi_float64_array || n < 9) {
    vu_throw_type(env, "out must be a Float64Array of at least 9 elements");
    return NULL;
  }
  double *out = data;
  bool hinted = out[5] != 0;
  const double hint[3] = {out[6], out[7], out[8]};
  struct stat st;
  if (!vu_ok(env, fstat(fd, &st), "fstat")) return NULL;
  int fl = fcntl(fd, F_GETFL);
  int seals = 0;
  if (S_ISREG(st.st_mode)) {
    const uint64_t exact = 1ull << 53;
    if (hinted && (uint64_t)st.st_dev <= exact && (uint64_t)st.st_ino <= exact && (double)st.st_dev == hint[0] &&
        (double)st.st_ino == hint[1] && ((int)hint[2] & F_SEAL_SEAL)) {
      seals = (int)hint[2];
    } else {
      seals = fcntl(fd, F_GET_SEALS);
      if (seals < 0) seals = 0; /* EINVAL: not a memfd/shmem file, no seals */
    }
  }
  out[0] = (double)st.st_dev;
  out[1] = (double)st.st_ino;
  out[2] = (double)st.st_size;
  out[3] = (double)(fl < 0 ? 0 : fl);
  out[4] = (double)seals;
  return vu_i32(env, (int32_t)(st.st_mode & S_IFMT));
}

static napi_value pio(napi_env env, napi_callback_info info, bool write) {
  napi_value argv[3];
  int fd;
  void *data;
  size_t len;
  uint64_t off;
  if (!vu_args(env, info, 3, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd) ||
      !vu_get_bytes(env, argv[1], "buf", &data, &len) || !vu_get_u64(env, argv[2], "offset", &off))
    return NULL;
  if (off > (uint64_t)INT64_MAX) {
    vu_throw_errno(env, EINVAL, write ? "pwrite" : "pread");
    return NULL;
  }
  ssize_t n;
  do n = write ? pwrite(fd, data, len, (off_t)off) : pread(fd, data, len, (off_t)off);
  while (n < 0 && errno == EINTR);
  if (!vu_ok(env, n, write ? "pwrite" : "pread")) return NULL;
  return vu_double(env, (double)n);
}

static napi_value js_pread(napi_env env, napi_callback_info info) { return pio(env, info, false); }
static napi_value js_pwrite(napi_env env, napi_callback_info info) { return pio(env, info, true); }

static napi_value js_close_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  /* Linux releases the fd even when close() reports EINTR: never retry. */
  if (close(fd) < 0 && errno != EINTR) {
    vu_throw_errno(env, errno, "close");
    return NULL;
  }
  return NULL;
}

static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (!vu_ok(env, r, "fcntl(F_DUPFD_CLOEXEC)")) return NULL;
  return vu_i32(env, r);
}

/* openFds(): entries of /proc/self/fd, not counting the directory's own fd. */
static napi_value js_open_fds(napi_env env, napi_callback_info info) {
  (void)info;
  DIR *d = opendir("/proc/self/fd");
  if (!d) {
    vu_throw_errno(env, errno, "opendir");
    return NULL;
  }
  int self = dirfd(d), n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (atoi(e->d_name) == self) continue;
    n++;
  }
  closedir(d);
  return vu_i32(env, n);
}

/* openPath(path, flags) -> fd; O_CLOEXEC always. Errors carry syscall 'open' (ENOENT when a node is absent). */
static napi_value js_open_path(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  char path[4096];
  int32_t flags;
  if (!vu_args(env, info, 2, argv, NULL) || !vu_get_string(env, argv[0], "path", path, sizeof path) ||
      !vu_get_i32(env, argv[1], "flags", &flags))
    return NULL;
  int fd;
  do fd = open(path, flags | O_CLOEXEC);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    char msg[4200];
    snprintf(msg, sizeof msg, "%s: %s", path, strerror(errno));
    vu_throw_errno_msg(env, errno, "open", msg);
    return NULL;
  }
  return vu_i32(env, fd);
}

/* This process's pid for kcmp(), read once: Node does not fork without exec, and getpid() is a syscall. */
static pid_t self_pid;

/*
 * Closes deferred to the end of the connection read burst that is running (socket.c: conn_read between
 * vu_burst_begin and vu_burst_end): a client that sends one fd with every message (QEMU's RAM memfd with every
 * DMA_MAP) has the duplicates closed by one close_range() per run of consecutive fd numbers, and the kernel gives
 * each received fd the lowest free number, so one burst's duplicates are one run. Only fds this list owns are in
 * a run, so close_range() closes nothing else. Per thread: each worker's loop runs read bursts of its own.
 */
#define CLOSE_LATER_MAX 64
static _Thread_local int later[CLOSE_LATER_MAX];
static _Thread_local int nlater;
static _Thread_local int burst_depth;

static int cmp_fd(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

static void flush_later(void) {
  int n = nlater;
  nlater = 0;
  if (n > 1) qsort(later, (size_t)n, sizeof *later, cmp_fd);
  for (int i = 0; i < n;) {
    int j = i;
    while (j + 1 < n && later[j + 1] == later[j] + 1) j++;
#ifdef SYS_close_range
    if (j > i && syscall(SYS_close_range, (unsigned)later[i], (unsigned)later[j], 0u) == 0) {
      i = j + 1;
      continue;
    }
#endif
    for (; i <= j; i++) close(later[i]); /* one fd, or a kernel without close_range */
  }
}

void vu_burst_begin(void) { burst_depth++; }

void vu_burst_end(void) {
  if (--burst_depth == 0 && nlater) flush_later();
}

/* close(fd) now, or at the end of the running read burst. */
static void close_later(int fd) {
  if (burst_depth == 0) {
    close(fd);
    return;
  }
  if (nlater == CLOSE_LATER_MAX) flush_later();
  later[nlater++] = fd;
}

/*
 * sameOpenFile(a, b) -> whether fds a and b refer to the same open file description (kcmp(KCMP_FILE)): one
 * syscall where fstat + fcntl(F_GETFL) are two. An fd passed over a socket is a new fd of the sender's open file
 * description, so a client sending the same fd with every DMA_MAP (QEMU's RAM memfd) is recognised without
 * inspecting it again. false on any error (ENOSYS without CONFIG_KCMP, EPERM under a restrictive ptrace policy,
 * EBADF): the caller then inspects the fd the long way.
 */
static napi_value js_same_open_file(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int a, b;
  if (!vu_args(env, info, 2, argv, NULL) || !vu_get_fd(env, argv[0], "a", &a) || !vu_get_fd(env, argv[1], "b", &b))
    return NULL;
  long r = syscall(SYS_kcmp, (long)self_pid, (long)self_pid, (long)KCMP_FILE, (long)a, (long)b);
  napi_value v;
  NAPI_CALL(env, napi_get_boolean(env, r == 0, &v));
  return v;
}

/*
 * closeIfSameOpenFile(fd, kept) -> true, having taken `fd` (closed now, or at the end of the running read burst),
 * when it is of the same open file description as `kept` (kcmp, as sameOpenFile); false, `fd` untouched,
 * otherwise or on any error. The DMA_MAP of a file already held, in one call and, per read burst, one close.
 */
static napi_value js_close_if_same_open_file(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int fd, kept;
  if (!vu_args(env, info, 2, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd) ||
      !vu_get_fd(env, argv[1], "kept", &kept))
    return NULL;
  bool same = fd != kept && syscall(SYS_kcmp, (long)self_pid, (long)self_pid, (long)KCMP_FILE, (long)fd, (long)kept) == 0;
  if (same) close_later(fd);
  napi_value v;
  NAPI_CALL(env, napi_get_boolean(env, same, &v));
  return v;
}

static napi_value js_fd_flags(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!vu_args(env, info, 1, argv, NULL) || !vu_get_fd(env, argv[0], "fd", &fd)) return NULL;
  int r = fcntl(fd, F_GETFD);
  if (!vu_ok(env, r, "fcntl(F_GETFD)")) return NULL;
  return vu_i32(env, r);
}

bool vu_init_fd(napi_env env, napi_value exports) {
  self_pid = getpid();
  return vu_export_fn(env, exports, "sameOpenFile", js_same_open_file) &&
         vu_export_fn(env, exports, "closeIfSameOpenFile", js_close_if_same_open_file) &&
         vu_export_fn(env, exports, "memfdCreate", js_memfd_create) &&
         vu_export_fn(env, exports, "addSeals", js_add_seals) && vu_export_fn(env, exports, "getSeals", js_get_seals) &&
         vu_export_fn(env, exports, "fdInfo", js_fd_info) && vu_export_fn(env, exports, "fdInspect", js_fd_inspect) &&
         vu_export_u32(env, exports, "S_IFREG", S_IFREG) && vu_export_fn(env, exports, "pread", js_pread) &&
         vu_export_fn(env, exports, "pwrite", js_pwrite) && vu_export_fn(env, exports, "closeFd", js_close_fd) &&
         vu_export_fn(env, exports, "dupFd", js_dup_fd) && vu_export_fn(env, exports, "openFds", js_open_fds) &&
         vu_export_fn(env, exports, "openPath", js_open_path) && vu_export_fn(env, exports, "fdFlags", js_fd_flags) &&
         vu_export_u32(env, exports, "F_SEAL_SEAL", F_SEAL_SEAL) &&
         vu_export_u32(env, exports, "F_SEAL_SHRINK", F_SEAL_SHRINK) &&
         vu_export_u32(env, exports, "F_SEAL_GROW", F_SEAL_GROW) &&
         vu_export_u32(env, exports, "F_SEAL_WRITE", F_SEAL_WRITE) &&
         vu_export_u32(env, exports, "FD_CLOEXEC", FD_CLOEXEC) && vu_export_u32(env, exports, "O_RDONLY", O_RDONLY) &&
         vu_export_u32(env, exports, "O_WRONLY", O_WRONLY) && vu_export_u32(env, exports, "O_RDWR", O_RDWR) &&
         vu_export_u32(env, exports, "O_NONBLOCK", O_NONBLOCK);
}
