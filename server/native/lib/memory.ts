// Shared memory and fd utilities: mmap into external ArrayBuffers, memfd + seals, fstat summary, pread/pwrite,
// close/dup, fd counting.
import { constants as bufferConstants } from 'node:buffer';
import { addon } from './addon.js';

// The calls of every DMA_MAP/DMA_UNMAP, loaded from the addon's exports once: that object has too many properties
// for V8 to keep in fast mode, so `addon.x` is a generic LoadIC call (about 60 instructions) every time.
const addonFdInspect: (fd: number, out: Float64Array) => number = addon.fdInspect;
const addonCloseFd: (fd: number) => void = addon.closeFd;
const addonSameOpenFile: (a: number, b: number) => boolean = addon.sameOpenFile;
const addonCloseIfSameOpenFile: (fd: number, kept: number) => boolean = addon.closeIfSameOpenFile;

export const PROT_READ: number = addon.PROT_READ;
export const PROT_WRITE: number = addon.PROT_WRITE;
export const MAP_SHARED: number = addon.MAP_SHARED;
export const MAP_PRIVATE: number = addon.MAP_PRIVATE;
export const MAP_POPULATE: number = addon.MAP_POPULATE;
export const MAP_NORESERVE: number = addon.MAP_NORESERVE;

/** Largest ArrayBuffer one mapping may be (buffer.constants.MAX_LENGTH: 2^32 on Node 20). Map larger files in windows. */
export const MAX_MAPPING_LENGTH: number = bufferConstants.MAX_LENGTH;

/**
 * Maps [offset, offset+length) of `fd` and returns it as an ArrayBuffer (zero-copy).
 * - An unaligned offset is mapped from the page (huge page on hugetlbfs) below; the view starts at the remainder.
 * - Regular files (memfd included): offset+length past EOF is refused (EOVERFLOW) — touching it would SIGBUS.
 * - prot must include PROT_READ. A JS write into a PROT_READ-only view kills the process (SIGSEGV): for read-only
 *   DMA hand out MAP_PRIVATE|PROT_READ|PROT_WRITE views (stray writes go to private copies).
 * - length > MAX_MAPPING_LENGTH is refused (RangeError ERR_OUT_OF_RANGE); map windows instead.
 * - Read-only fd + PROT_WRITE|MAP_SHARED: EACCES (MAP_PRIVATE works).
 * The mapping lives until munmap(ab) or until the ArrayBuffer is garbage-collected.
 */
export function mmap(
  fd: number,
  offset: bigint,
  length: number,
  prot: number = PROT_READ | PROT_WRITE,
  flags: number = MAP_SHARED,
): ArrayBuffer {
  if (!Number.isSafeInteger(length) || length <= 0) {
    throw new RangeError(`mmap length must be a positive integer, got ${length}`);
  }
  if (length > MAX_MAPPING_LENGTH) {
    const err = new RangeError(
      `mmap length ${length} exceeds buffer.constants.MAX_LENGTH (${MAX_MAPPING_LENGTH}); map in windows`,
    ) as RangeError & { code: string };
    err.code = 'ERR_OUT_OF_RANGE';
    throw err;
  }
  return addon.mmap(fd, BigInt(offset), length, prot, flags);
}

/**
 * Unmaps a mapping made by mmap(): every view of it drops to length 0 first (stale references read nothing and
 * cannot reach freed memory), then munmap. EINVAL for foreign or already-unmapped buffers; EBUSY while an async
 * DMA ioctl (vfio.mapDma, iommufd.ioasMap) is using its address.
 */
export function munmap(ab: ArrayBuffer): void {
  addon.munmap(ab);
}

/**
 * Process address of the first byte of a live mapping's view (the vaddr for VFIO_IOMMU_MAP_DMA / user_va for
 * IOMMU_IOAS_MAP). The address is only valid until munmap(ab): pass `buffer` to the DMA wrappers instead of raw
 * addresses where possible, so the mapping is pinned for the duration of the ioctl.
 */
export function mapAddress(ab: ArrayBuffer): bigint {
  return addon.mapAddress(ab);
}

/** Live mappings made by mmap() in this process (for leak tests). */
export function mappingCount(): number {
  return addon.mappingCount();
}

export interface MemfdOptions {
  /** MFD_ALLOW_SEALING (default true). */
  allowSealing?: boolean;
  /** MFD_CLOEXEC (default true). */
  cloexec?: boolean;
}

/** memfd_create(name) and ftruncate(size) (sparse). */
export function memfdCreate(name: string, size?: bigint | number, opts: MemfdOptions = {}): number {
  return addon.memfdCreate(name, size, opts.allowSealing ?? true, opts.cloexec ?? true);
}

export const F_SEAL_SEAL: number = addon.F_SEAL_SEAL;
export const F_SEAL_SHRINK: number = addon.F_SEAL_SHRINK;
export const F_SEAL_GROW: number = addon.F_SEAL_GROW;
export const F_SEAL_WRITE: number = addon.F_SEAL_WRITE;

/** fcntl(F_ADD_SEALS). EPERM once F_SEAL_SEAL is set; EBUSY for F_SEAL_WRITE with writable shared mappings. */
export function addSeals(fd: number, seals: number): void {
  addon.addSeals(fd, seals);
}

/** fcntl(F_GET_SEALS). EINVAL for files that do not support sealing (not a memfd/shmem). */
export function getSeals(fd: number): number {
  return addon.getSeals(fd);
}

export type FdType = 'file' | 'dir' | 'socket' | 'fifo' | 'char' | 'block' | 'link' | 'unknown';

export interface FdInfo {
  /** From st_mode; anonymous inodes (eventfd, VFIO device fds from a group) may read 'unknown'. */
  type: FdType;
  /** st_dev + st_ino identify the file behind an fd (dedup of QEMU's per-DMA_MAP duplicates). */
  dev: bigint;
  ino: bigint;
  size: bigint;
  mode: number;
  /** F_GETFL: O_ACCMODE bits (O_RDONLY 0, O_WRONLY 1, O_RDWR 2), O_NONBLOCK... */
  flags: number;
  /** st_blksize: the huge page size on hugetlbfs. */
  blksize: number;
  /** statfs f_type (TMPFS_MAGIC 0x01021994, HUGETLBFS_MAGIC 0x958458f6...). */
  fsType: number;
  rdev: bigint;
}

export function fdInfo(fd: number): FdInfo {
  return addon.fdInfo(fd) as FdInfo;
}

/** st_mode & S_IFMT of a regular file (fdInspect's result). */
export const S_IFREG: number = addon.S_IFREG;

/** What fdInspect() reports, reused between calls (no allocation on the DMA_MAP path). */
export interface FdFacts {
  /** st_mode & S_IFMT (S_IFREG for regular files, memfds included). */
  format: number;
  /** dev, ino and size are exact (all below 2^53); otherwise use fdInfo()'s bigints. */
  exact: boolean;
  dev: number;
  ino: number;
  size: number;
  /** F_GETFL. */
  flags: number;
  /** F_GET_SEALS (0 for files that cannot be sealed). */
  seals: number;
}

/** fdInspect's results [dev, ino, size, flags, seals], then its hint [given, dev, ino, seals] (fd.c). */
const inspectOut = new Float64Array(9);
const inspectFacts: FdFacts = { format: 0, exact: true, dev: 0, ino: 0, size: 0, flags: 0, seals: 0 };

/** A file the caller holds whose seals include F_SEAL_SEAL (fdInspect's hint); dev and ino below 2^53. */
export interface SealedFile {
  readonly dev: number;
  readonly ino: number;
  readonly seals: number;
}

/**
 * fstat + fcntl(F_GETFL) + fcntl(F_GET_SEALS), each once, in one call: what a DMA_MAP needs to know about its fd.
 * With `sealed` (a file the caller holds a mapping or fd of, sealed with F_SEAL_SEAL), an fd of that same file
 * (same st_dev and st_ino) skips F_GET_SEALS and reports `sealed.seals`: seals belong to the inode and F_SEAL_SEAL
 * freezes them. Returns a shared object overwritten by the next call (copy what you keep). Throws like fstat
 * (EBADF...).
 */
export function fdInspect(fd: number, sealed?: SealedFile): Readonly<FdFacts> {
  const out = inspectOut;
  const f = inspectFacts;
  if (sealed === undefined) {
    out[5] = 0;
  } else {
    out[5] = 1;
    out[6] = sealed.dev;
    out[7] = sealed.ino;
    out[8] = sealed.seals;
  }
  f.format = addonFdInspect(fd, out);
  f.dev = out[0]!;
  f.ino = out[1]!;
  f.size = out[2]!;
  f.flags = out[3]!;
  f.seals = out[4]!;
  f.exact =
    f.dev <= Number.MAX_SAFE_INTEGER && f.ino <= Number.MAX_SAFE_INTEGER && f.size <= Number.MAX_SAFE_INTEGER;
  return f;
}

/**
 * Whether fds `a` and `b` refer to the same open file description (kcmp(2) KCMP_FILE, one syscall): then they
 * name the same file with the same access mode. An fd received over a socket is a new fd of the sender's open
 * file description, so a client that sends the same fd again and again (QEMU's RAM memfd with every DMA_MAP) is
 * recognised without an fstat. false on any error (a kernel without kcmp, a bad fd): inspect the fd instead.
 */
export function sameOpenFile(a: number, b: number): boolean {
  return addonSameOpenFile(a, b);
}

/**
 * When `fd` is of the same open file description as `kept` (sameOpenFile), takes it and returns true: it is
 * closed now or, inside a connection's read burst (a message handler), at the end of that burst, when the
 * duplicates of the whole burst go with one close_range() per run of consecutive fd numbers. Otherwise returns
 * false and `fd` stays the caller's. A DMA_MAP of a file already held (QEMU's RAM memfd, page after page) in one
 * call.
 */
export function closeIfSameOpenFile(fd: number, kept: number): boolean {
  return addonCloseIfSameOpenFile(fd, kept);
}

/** pread(2) at a 64-bit offset; returns bytes read (short at EOF). */
export function pread(fd: number, buf: Uint8Array, offset: bigint): number {
  return addon.pread(fd, buf, BigInt(offset));
}

/** pwrite(2) at a 64-bit offset; returns bytes written. */
export function pwrite(fd: number, buf: Uint8Array, offset: bigint): number {
  return addon.pwrite(fd, buf, BigInt(offset));
}

/** close(2). Never retried (Linux frees the fd even on EINTR). */
export function closeFd(fd: number): void {
  addonCloseFd(fd);
}

/**
 * Closes every fd of `fds` (negative entries are skipped), ignoring errors: for an owner giving fds up on an error
 * or teardown path, where an fd that is already closed leaks nothing and there is nobody to tell.
 */
export function closeFdsQuietly(fds: Iterable<number>): void {
  for (const fd of fds) {
    if (fd < 0) continue;
    try {
      addonCloseFd(fd);
    } catch {
      // already closed or never valid: nothing leaks
    }
  }
}

/** F_DUPFD_CLOEXEC: a new close-on-exec fd for the same file. */
export function dupFd(fd: number): number {
  return addon.dupFd(fd);
}

/** Entries of /proc/self/fd (for leak tests). */
export function openFds(): number {
  return addon.openFds();
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * openFds() once closes in flight have landed (a socket fd is closed from its uv_close callback, a loop turn after
 * close()): the first count that repeats 5 ms later, or the last one after 200 ms.
 */
export async function openFdsSettled(): Promise<number> {
  let last = -1;
  for (let i = 0; i < 40; i++) {
    await pause(5);
    const n = openFds();
    if (n === last) return n;
    last = n;
  }
  return last;
}

/** Polls openFds() every 5 ms until it is back to `expected` or `timeoutMs` passed; returns the count reached. */
export async function openFdsBackTo(expected: number, timeoutMs = 2000): Promise<number> {
  const t0 = Date.now();
  let n = openFds();
  while (n !== expected && Date.now() - t0 < timeoutMs) {
    await pause(5);
    n = openFds();
  }
  return n;
}

export const O_RDONLY: number = addon.O_RDONLY;
export const O_WRONLY: number = addon.O_WRONLY;
export const O_RDWR: number = addon.O_RDWR;
/** F_GETFL bit (fdInfo(fd).flags). */
export const O_NONBLOCK: number = addon.O_NONBLOCK;

/** open(path, flags|O_CLOEXEC); errors carry syscall 'open' (ENOENT when a device node is absent). */
export function openPath(path: string, flags: number = O_RDWR): number {
  return addon.openPath(path, flags);
}

/** F_GETFD flags (FD_CLOEXEC = 1). */
export function fdFlags(fd: number): number {
  return addon.fdFlags(fd);
}
export const FD_CLOEXEC: number = addon.FD_CLOEXEC;
