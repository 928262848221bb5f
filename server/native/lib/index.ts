/**
 * vfio-user-native: the syscalls Node cannot make — fd passing over UNIX sockets, mmap into ArrayBuffers,
 * memfd/eventfd, VFIO and iommufd ioctls — as a plain-C Node-API addon (src/*.c) with this typed wrapper.
 * C does syscalls; policy (fd ownership, mapping windows, retries, ordering) stays in TypeScript callers.
 *
 * Build: `node server/native/scripts/build.mjs` (run by npm ci and `make native`); it produces
 * build/Release/vfio_user_native.node and the ASan/UBSan variant build/asan/vfio_user_native.node, which is
 * loaded instead when VFIO_USER_NATIVE_BUILD=asan (run node with
 * LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so) ASAN_OPTIONS=detect_leaks=0).
 *
 * Errors: every failing syscall/ioctl throws (or rejects with) an Error carrying `errno` (positive), `code`
 * ('EINVAL'...) and `syscall` (e.g. 'recvmsg', 'mmap', 'VFIO_IOMMU_MAP_DMA'); argument mistakes throw
 * TypeError/RangeError with code ERR_INVALID_ARG_TYPE / ERR_OUT_OF_RANGE.
 *
 * ── Sockets (socket.ts) ────────────────────────────────────────────────────────────────────────────────────────
 *   Connection.connect(path) / Connection.fromFd(fd)      adopt a stream socket; `fd` (-1 once closed), queuedBytes
 *   conn.start({onMessage(data, fds), onClose(err?), onDrain?()}, {maxMessageSize?, framing?: 'bulk'|'exact'})
 *       framing in C (16-byte header, u32 LE size at offset 4; size < 16 or > max => EPROTO + close);
 *       recvmsg(MSG_DONTWAIT|MSG_CMSG_CLOEXEC), room for 253 fds, MSG_CTRUNC => EPROTO + close.
 *       The fds passed to onMessage belong to the handler: close what you do not keep.
 *   conn.send(data, fds?) -> boolean   false = queued (onDrain follows) or closed; fds are dup'ed when queued
 *   conn.peerCredentials() -> {pid, uid, gid}; conn.pause(); conn.resume(); conn.setMaxMessageSize(n)
 *   conn.close()                        idempotent; onClose fires once (no error for close()/EOF)
 *   Listener.listen(path, {mode = 0o600, backlog = 128}) / Listener.adopt(fd); .fd; .path
 *   listener.start(onConnection(conn), onError?(err)); listener.close({unlink = true})
 *   socketpair() -> [fd, fd]
 *   sendDatagram(path, data) -> bytes (non-blocking; '@name' = abstract namespace), bindDatagram(path, mode = 0o600)
 *       -> fd, recvDatagram(fd) -> Buffer | null   (sd_notify to $NOTIFY_SOCKET; datagram.ts)
 *
 * ── Memory and fds (memory.ts) ─────────────────────────────────────────────────────────────────────────────────
 *   mmap(fd, offset: bigint, length, prot = PROT_READ|PROT_WRITE, flags = MAP_SHARED) -> ArrayBuffer
 *   munmap(ab); mapAddress(ab) -> bigint; mappingCount()
 *   memfdCreate(name, size?, {allowSealing = true, cloexec = true}) -> fd
 *   addSeals(fd, seals); getSeals(fd); F_SEAL_SEAL/SHRINK/GROW/WRITE
 *   fdInfo(fd) -> {type, dev, ino, size, mode, flags, blksize, fsType, rdev}
 *   fdInspect(fd, sealed?) -> {format, exact, dev, ino, size, flags, seals}: the DMA_MAP checks in one call, no
 *     allocation (F_GET_SEALS skipped for an fd of a file the caller holds, sealed with F_SEAL_SEAL)
 *   sameOpenFile(a, b) -> whether two fds share one open file description (kcmp; false on any error)
 *   closeIfSameOpenFile(fd, kept) -> true having taken fd (closed at once, or with the read burst's other
 *     duplicates by close_range) when it shares kept's open file description; false, fd untouched, otherwise
 *   pread(fd, buf, offset: bigint); pwrite(fd, buf, offset: bigint); closeFd; closeFdsQuietly(fds); dupFd; openFds(); openPath; fdFlags
 *
 * ── eventfd (eventfd.ts) ───────────────────────────────────────────────────────────────────────────────────────
 *   eventfd(initval = 0, {nonblock = true, semaphore = false}) -> fd (always CLOEXEC)
 *   eventfdWrite(fd, value = 1n); eventfdRead(fd) -> bigint (0n when nothing is pending; never blocks)
 *   new FdWatcher(fd, onReadable(err?)) ; watcher.close()   (stops and reports EPIPE on hang-up/error)
 *
 * ── Hostile fds (guard.ts) ─────────────────────────────────────────────────────────────────────────────────────
 *   guardedCopy(dst, dstOffset, src, srcOffset, length) -> false on SIGBUS (a mapped file shrank under us)
 *   setNonBlocking(fd); signalFd(fd, value?) -> 0 | errno (never blocks); pipe() -> [r, w]
 *   nofileLimit() -> {soft, hard}; setNofileLimit(soft)
 *
 * ── Host IOMMU and devices (vfio.ts, iommufd.ts) ───────────────────────────────────────────────────────────────
 *   vfio.openContainer()/open(), getApiVersion, checkExtension, setIommu, getInfo, mapDma (Promise),
 *        unmapDma (Promise<bigint>), mapDmaSync, unmapDmaSync (-> bigint), iommuGroupOf(bdf), openGroup,
 *        groupGetStatus, groupSetContainer, groupUnsetContainer, getDeviceFd, cdevPathOf(bdf), openDevice,
 *        bindIommufd, attachPt, detachPt, deviceGetInfo, regionInfo, irqInfo, setIrqs, reset, deviceFeature,
 *        regionRead, regionWrite, constants
 *   iommufd.open(), ioasAlloc, destroy, iovaRanges, allowIovas, ioasMap (Promise<iova>),
 *        ioasMapFile (Promise<iova>), ioasUnmap (Promise<bytes>), ioasMapSync, ioasMapFileSync, ioasUnmapSync,
 *        optionGet, optionSet, constants
 *   Async maps run on the threadpool; their *Sync twins run the same ioctl on the calling thread (small sizes
 *   only: the event loop waits for the pinning). Passing `buffer` (an mmap() ArrayBuffer) instead of a raw
 *   address keeps the mapping busy (munmap -> EBUSY) and, when async, referenced until the ioctl completes.
 *   Callers must not munmap a region the host IOMMU still maps, nor close a container/iommufd while its ioctls are
 *   in flight (async calls use private dups of the fds, so the ioctl itself is never redirected).
 * ── Block I/O (blockio.ts) ─────────────────────────────────────────────────────────────────────────────────────
 *   blockRead/blockWrite(fd, offset, segments) (preadv/pwritev on the threadpool, straight into mmapped guest
 *   pages), blockFallocate(fd, mode, offset, length), blockSync(fd) (fdatasync). Promises.
 *   layouts(): ioctl numbers, struct sizes and offsets computed by the compiler (checked against the kernel's layouts by test/vfio.test.ts).
 */
export type { Layouts } from './addon.js';
export {
  BLOCK_IO_MAX_SEGMENTS,
  blockFallocate,
  blockRead,
  blockReadNowait,
  blockSync,
  blockWrite,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
} from './blockio.js';
export { bindDatagram, recvDatagram, sendDatagram } from './datagram.js';
export { type ErrnoError, errnoError, isErrno } from './errors.js';
export { type EventfdOptions, eventfd, eventfdRead, eventfdWrite, FdWatcher } from './eventfd.js';
export {
  guardedCopy,
  type NofileLimit,
  nofileLimit,
  pipe,
  setNofileLimit,
  setNonBlocking,
  signalFd,
} from './guard.js';
export {
  type IoasMapArgs,
  type IoasMapFileArgs,
  type IoasUnmapArgs,
  iommufd,
  U64_MAX,
} from './iommufd.js';
export {
  addSeals,
  closeFd,
  closeFdsQuietly,
  closeIfSameOpenFile,
  dupFd,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  FD_CLOEXEC,
  type FdFacts,
  type FdInfo,
  type FdType,
  fdFlags,
  fdInfo,
  fdInspect,
  getSeals,
  MAP_NORESERVE,
  MAP_POPULATE,
  MAP_PRIVATE,
  MAP_SHARED,
  MAX_MAPPING_LENGTH,
  type MemfdOptions,
  mapAddress,
  mappingCount,
  memfdCreate,
  mmap,
  munmap,
  O_NONBLOCK,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  openFds,
  openFdsBackTo,
  openFdsSettled,
  openPath,
  PROT_READ,
  PROT_WRITE,
  pread,
  pwrite,
  S_IFREG,
  type SealedFile,
  sameOpenFile,
} from './memory.js';
export {
  type BufferedInput,
  Connection,
  type ConnectionHandlers,
  type ConnectionOptions,
  DEFAULT_MAX_MESSAGE_SIZE,
  Listener,
  type ListenOptions,
  MAX_FDS_PER_MESSAGE,
  socketpair,
} from './socket.js';
export {
  type DeviceInfo,
  type DmaMapArgs,
  type DmaUnmapArgs,
  type InfoCap,
  type IommuInfo,
  type IovaRange,
  type IrqInfo,
  type RegionInfo,
  type SetIrqsArgs,
  vfio,
} from './vfio.js';

import { addon, type Layouts } from './addon.js';

export { addonPath, buildVariant } from './addon.js';

/** Compiler-computed ioctl numbers, struct sizes and field offsets ('struct.field'), and uAPI constants. */
export function layouts(): Layouts {
  return addon.layouts();
}
