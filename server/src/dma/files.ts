// Backing files of fd-carrying DMA maps: one mapping per underlying file, shared by every DMA region cut from it.
//
// Why: under a guest vIOMMU QEMU sends one DMA_MAP per 4 KiB page, each with a *fresh dup* of the same RAM memfd.
// An mmap per message would cost two syscalls per map/unmap pair and one kernel VMA each, and 65,535 live maps
// would exhaust vm.max_map_count (65,530) before the protocol's own limit. So each file is identified by
// (st_dev, st_ino), kept open once (one fd per file, for pread/pwrite and for the host IOMMU's IOAS_MAP_FILE), the
// duplicate fds are closed as soon as they are identified, and each DMA region is a sub-view of the file's
// mapping. Regions reference-count the mappings they use and the file; the file's fd is closed when its last
// region goes (one fd per file only while it backs a region: the fd budget does not grow with the cache below),
// except the latest file's, kept for a moment (one fd at most; see "Same fd again" below).
//
// Windows: Node 20 cannot create an external ArrayBuffer above 4 GiB, so a file is mapped in fixed windows of
// `windowSize` bytes (1 GiB by default) of file offset; a region crossing a window boundary gets one piece per
// window. Windows are mapped LAZILY: a region spanning at most EAGER_WINDOWS windows has them mapped at DMA_MAP
// time (so an mmap failure is the DMA_MAP's errno, as before), a larger one (a 1 TiB guest's RAM) maps a window
// only when a device or the host IOMMU first touches it. A DMA_MAP is thus O(1) in the number of GiB: no mmap, no
// external ArrayBuffer (each of which V8 counts as external memory and answers with a full GC), nothing per
// window. A window is mapped only as far as the file extends when it is first needed; if the file grew and a
// later region needs more, a new, longer mapping of that window replaces it for new regions while the old one
// lives on until its own regions are gone (live views are never remapped under a device).
//
// Idle cache: a mapping whose last region went is not unmapped at once but kept (unmapped: munmap + the detach
// of its ArrayBuffer, which also costs Node a cross-thread finalizer wake-up, i.e. an extra event-loop turn) for
// `idle.ms` (default 2 s), bounded by `idle.count` mappings (default 64) and `idle.bytes` (default 16 GiB),
// oldest evicted first. QEMU's vIOMMU path maps and unmaps single pages of guest RAM, each DMA_MAP with the RAM
// memfd: with the cache that file is mapped once, not once per page. A cached mapping keeps the file's inode
// alive, so (st_dev, st_ino) cannot be reused by another file while it is cached; the next DMA_MAP of that file
// adopts its fd as the file's fd. unmapAll (DMA_UNMAP FLAG_ALL, disconnect, shutdown) flushes the cache.
// State for a hand-over: `cacheState()` lists what is cached (file identity, window, kind, length); nothing in
// it is needed for correctness, so a new process may start with an empty cache.
//
// Two kinds of mapping per window:
// - `shared` (MAP_SHARED, PROT_READ|PROT_WRITE when the fd is writable, else PROT_READ): the view device models
//   use for writable regions, and the process address handed to the host IOMMU (type1 pins through it);
// - `private` (MAP_PRIVATE, PROT_READ|PROT_WRITE): the view JS gets for READ-only regions. A stray JS write into a
//   PROT_READ mapping is a SIGSEGV that kills the process; into a private writable mapping it only dirties a
//   copy-on-write page nobody else sees. Pages JS never writes keep reading the file's current contents.
//   (The access API refuses writes to READ-only regions anyway; this is the belt to that pair of braces.)
//
// Truncation: a region is refused when the file is shorter than offset+size at map time (mapping past EOF would
// SIGBUS on first touch). A client may still shrink its file *afterwards*; touching a page past the new end is a
// SIGBUS that would kill the process. So the file's seals are recorded (`seals`, refreshed on every DMA_MAP of the
// file; seals are never removed) and `canShrink` tells the access paths which copies need the addon's SIGBUS guard
// (guardedCopy: the fault becomes an EFAULT DMA error, docs/hardening.md). Files sealed with F_SEAL_SHRINK (QEMU's
// memory-backend-memfd seals grow/shrink by default) cannot shrink: their views may be touched directly, which is
// the only case in which a mapping may be handed out as a plain view (zero-copy device access).
//
// Each fd is inspected once per DMA_MAP (fstat, F_GETFL, F_GET_SEALS in one addon call, native.fdInspect);
// F_GET_SEALS is skipped for an fd of the previous DMA_MAP's file when its seals are frozen (F_SEAL_SEAL).
//
// Same fd again: a client passes the same fd with every DMA_MAP (QEMU its RAM memfd), and each one we receive is
// a new fd of the client's one open file description. When it is the description of the latest file's kept fd
// (native.closeIfSameOpenFile: one kcmp, where fstat + F_GETFL are two syscalls), the file, its access mode and
// its frozen seals are known; if those seals also forbid shrinking (QEMU's memfds are sealed against grow and
// shrink) and the range lies inside the size known, the size check needs no fstat either. The duplicate is then
// closed with the others of the same connection read burst (one close_range for a run of pipelined maps). To have
// a kept fd to compare with after the last region went, the latest file keeps its fd for KEEP_FD_MS while its
// mappings are cached.

import * as native from 'vfio-user-native';
// The per-DMA_MAP calls as plain bindings: a property load from a module namespace object (`native.x`) is not
// optimized away by V8 and costs an inline-cache call on every use.
import { closeFd, closeIfSameOpenFile, fdInspect, S_IFREG } from 'vfio-user-native';
import { Errno, errnoOf } from 'vfio-user-protocol';
import { DmaMapError } from './errors.js';

/**
 * The default window size: a guest-memory file is mapped in windows of this many bytes of file offset (1 GiB; Node
 * cannot create an external ArrayBuffer above 4 GiB).
 */
export const DEFAULT_WINDOW_SIZE = 1 << 30;
/** Regions spanning at most this many windows are mapped at DMA_MAP time; larger ones lazily. */
export const EAGER_WINDOWS = 4;
/** windowStart() keeps the start offsets of this many windows (64 GiB of a file at the default size). */
const WINDOW_STARTS_KEPT = 64;

const O_ACCMODE = 3;
const O_RDONLY = 0;
const F_SEAL_SEAL = 0x1;
const F_SEAL_SHRINK = 0x2;
const F_SEAL_WRITE = 0x8;
const F_SEAL_FUTURE_WRITE = 0x10;
/** Seals under which a file's size can only grow and its seals never change. */
const SIZE_FROZEN = F_SEAL_SEAL | F_SEAL_SHRINK;
/**
 * How long the latest file keeps its fd after its last region went (release()): long enough for a guest's next
 * page-sized DMA_MAP, short enough that an idle server holds no fd a client has let go of.
 */
const KEEP_FD_MS = 250;

export type MappingKind = 'shared' | 'private';

/** A BackingFile whose dev/ino are numbers, as native.fdInspect's hint. */
type SealedHint = BackingFile & native.SealedFile;

/** One mmap of (part of) a window. */
export class FileMapping {
  /** Regions using it. At 0 it is idle (cached) or gone. */
  refs = 0;
  /** When it became idle (performance.now()), for the cache's age bound. */
  idleSince = 0;
  readonly bytes: Uint8Array;
  /** File offset after the last mapped byte. */
  readonly end: bigint;
  private address: bigint | undefined;
  constructor(
    readonly file: BackingFile,
    readonly window: number,
    readonly kind: MappingKind,
    /** File offset of the first mapped byte (the window start). */
    readonly start: bigint,
    readonly buffer: ArrayBuffer,
    /** Mapped PROT_WRITE (private mappings always are). */
    readonly writable: boolean,
  ) {
    this.bytes = new Uint8Array(buffer);
    this.end = start + BigInt(this.bytes.length);
  }
  get length(): number {
    return this.bytes.length; // not byteLength: a getter call in V8 (Node 20), and this runs per DMA_UNMAP
  }
  /** Process virtual address of file offset `start` (for the host IOMMU). */
  addressOf(fileOffset: bigint): bigint {
    this.address ??= native.mapAddress(this.buffer);
    return this.address + (fileOffset - this.start);
  }
  covers(from: bigint, to: bigint): boolean {
    return from >= this.start && to <= this.end;
  }
}

/** The part of a region that falls inside one window. */
export interface FilePiece {
  /** File offset of the piece. */
  readonly fileOffset: bigint;
  readonly length: number;
  /** Offset of the piece inside `view.bytes`. */
  readonly viewOffset: number;
  /** The mapping JS reads/writes through (shared for writable regions, private for READ-only ones). */
  readonly view: FileMapping;
  /** The shared mapping (host IOMMU address source). Same object as `view` for writable regions. */
  readonly shared: FileMapping;
}

/** What a region holds of its file: which windows it touched. Owned by the FileTable's calls. */
export interface FileUse {
  readonly file: BackingFile;
  /** Offset of the region in the file, and its length. */
  readonly fileOffset: bigint;
  readonly size: bigint;
  /** Whether device models may write (shared view) or only read (private view). */
  readonly writable: boolean;
  /**
   * The pieces mapped so far: the one in the region's first window in `firstPiece`, the others by window index
   * in `touched` (most regions lie inside one window: no Map for them).
   */
  firstPiece: FilePiece | undefined;
  touched: Map<number, FilePiece> | undefined;
}

export class BackingFile {
  /** Regions using this file. */
  refs = 0;
  /** Current mapping per window index and kind (idle cached ones included). */
  readonly windows = new Map<number, { shared?: FileMapping; private?: FileMapping }>();
  constructor(
    readonly key: string,
    /**
     * The one fd kept for this file while a region uses it (pread/pwrite, host IOMMU MAP_FILE), and while it is
     * the latest file with mappings cached, for KEEP_FD_MS (FileTable.release); -1 otherwise.
     */
    public fd: number,
    readonly dev: number | bigint,
    readonly ino: number | bigint,
    /** Whether `fd` was opened for writing (O_RDWR/O_WRONLY): a shared writable mapping is possible. */
    public writable: boolean,
    public size: bigint,
    public seals: number,
  ) {
    this.sizeNumber = Number(size);
  }

  /**
   * `size` as a number (for comparing with fdInspect's without a bigint), kept with it: a Number() of a bigint is
   * a runtime call, and this is read on every DMA_MAP.
   */
  sizeNumber: number;

  /**
   * Whether the client can still shrink the file under our mappings (no F_SEAL_SHRINK): every access to its
   * mapped bytes must then go through the SIGBUS guard, and no plain view of it may reach device code.
   */
  get canShrink(): boolean {
    return (this.seals & F_SEAL_SHRINK) === 0;
  }
}

export interface IdleCacheOptions {
  /** Idle mappings kept at most (default 64; 0 disables the cache). */
  count?: number;
  /** Bytes of idle mappings kept at most (default 16 GiB). */
  bytes?: number;
  /** How long an idle mapping is kept (default 2000 ms). */
  ms?: number;
}

export interface FileTableOptions {
  windowSize?: number;
  /** Map windows into the process (default true). false: every fd region is reached with pread/pwrite. */
  mapViews?: boolean;
  idle?: IdleCacheOptions;
  onWarn?: (msg: string, err: unknown) => void;
}

/** One cached mapping, as cacheState() reports it (for logs and a hand-over). */
export interface CachedMappingState {
  file: string;
  window: number;
  kind: MappingKind;
  length: number;
  idleMs: number;
}

export class FileTable {
  private readonly files = new Map<string, BackingFile>();
  readonly windowSize: number;
  private readonly ws: bigint;
  /** prepare()'s last one-window region: its window and that window's file offsets (none yet: an empty range). */
  private one = 0;
  private oneStart = 0n;
  private oneEnd = 0n;
  /** windowStart()'s kept values. */
  private readonly starts: bigint[] = [];
  private readonly mapViews: boolean;
  private readonly onWarn: (msg: string, err: unknown) => void;
  private readonly idleMax: { count: number; bytes: number; ms: number };
  /** The file of the latest acquire(), while it is in `files` (the next DMA_MAP is most likely of it again). */
  private last: BackingFile | undefined;
  /** Idle mappings, oldest first (Map iteration order is insertion order). */
  private readonly idle = new Set<FileMapping>();
  private idleBytes = 0;
  private sweepTimer: NodeJS.Timeout | undefined;
  /** When the latest file's last region went (its fd kept, release()), and the timer that closes that fd. */
  private keptSince = 0;
  private keptTimer: NodeJS.Timeout | undefined;
  /** Live mmaps, cached ones included (for stats and tests). */
  mappings = 0;
  /** Files backing at least one region. */
  liveFiles = 0;
  /**
   * Distinct files held at most (each keeps one fd open). A DMA_MAP that would add one more fails with EMFILE,
   * instead of the process running out of fds and the kernel truncating the next message's fds (the server sets
   * this from RLIMIT_NOFILE with headroom; maps of a file already held cost no fd).
   */
  maxFiles = Number.POSITIVE_INFINITY;

  constructor(opts: FileTableOptions = {}) {
    this.windowSize = opts.windowSize ?? DEFAULT_WINDOW_SIZE;
    this.mapViews = opts.mapViews ?? true;
    this.onWarn = opts.onWarn ?? (() => {});
    if (!Number.isInteger(this.windowSize) || this.windowSize <= 0 || this.windowSize > 2 ** 31) {
      throw new RangeError('windowSize must be an integer in (0, 2^31]');
    }
    this.ws = BigInt(this.windowSize);
    this.idleMax = {
      count: opts.idle?.count ?? 64,
      bytes: opts.idle?.bytes ?? 16 * 2 ** 30,
      ms: opts.idle?.ms ?? 2000,
    };
  }

  /** Files backing at least one region. */
  get fileCount(): number {
    return this.liveFiles;
  }

  /** Mappings used by at least one region. */
  get liveMappings(): number {
    return this.mappings - this.idle.size;
  }

  /** Idle mappings kept in the cache. */
  get cachedMappings(): number {
    return this.idle.size;
  }

  /**
   * Validates `fd` for a DMA region [offset, offset+size) with protection `writable`, identifies its file and
   * takes a reference on it. On success the fd is consumed (kept as the file's fd, or closed as a duplicate);
   * on failure (DmaMapError with the errno for the reply) the caller still owns it. Maps nothing: see use().
   */
  acquire(fd: number, offset: bigint, size: bigint, writable: boolean): BackingFile {
    // Same fd again (above): an fd of the latest file's kept open file description, for a range and an access
    // that file allows and a reference the fd budget allows, is taken (closed with the read burst's other
    // duplicates) with one kcmp; anything else, a refusal included, takes the long way below.
    const last = this.last;
    if (
      last !== undefined &&
      last.fd >= 0 &&
      (last.seals & SIZE_FROZEN) === SIZE_FROZEN &&
      offset + size <= last.size &&
      (!writable || (last.writable && (last.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) === 0)) &&
      (last.refs > 0 || this.liveFiles < this.maxFiles) &&
      closeIfSameOpenFile(fd, last.fd)
    ) {
      if (last.refs++ === 0) this.liveFiles++;
      return last;
    }
    let isFile: boolean;
    let dev: number | bigint;
    let ino: number | bigint;
    let fileSize: bigint;
    let flags: number;
    let seals: number;
    try {
      // The previous DMA_MAP's file, if its seals are frozen (F_SEAL_SEAL: QEMU's memfds, and any memfd made
      // without MFD_ALLOW_SEALING): an fd of that same file needs no F_GET_SEALS (native fdInspect). We hold
      // a mapping or the fd of every file in `files`, so its (st_dev, st_ino) names no other file meanwhile.
      const last = this.last;
      const f = fdInspect(
        fd,
        last !== undefined &&
          (last.seals & F_SEAL_SEAL) !== 0 &&
          typeof last.dev === 'number' &&
          typeof last.ino === 'number'
          ? (last as SealedHint)
          : undefined,
      );
      isFile = f.format === S_IFREG;
      if (f.exact) {
        dev = f.dev;
        ino = f.ino;
        // The same file at the same size as last time (QEMU's RAM memfd, page after page): reuse its bigint.
        fileSize =
          last !== undefined && last.ino === ino && last.dev === dev && last.sizeNumber === f.size
            ? last.size
            : BigInt(f.size);
      } else {
        const info = native.fdInfo(fd); // beyond 2^53: the exact bigints
        dev = info.dev;
        ino = info.ino;
        fileSize = info.size;
      }
      flags = f.flags;
      seals = f.seals;
    } catch (err) {
      throw new DmaMapError(errnoOf(err, Errno.EBADF), `fd ${fd}: fstat failed`);
    }
    if (!isFile) {
      // Sockets, pipes, eventfds, directories, devices: nothing we can map as guest memory.
      throw new DmaMapError(Errno.ENODEV, `fd ${fd} is not a regular file`);
    }
    if (offset + size > fileSize) {
      // Mapping past EOF would SIGBUS on the first touch.
      throw new DmaMapError(
        Errno.EINVAL,
        `region [0x${offset.toString(16)}, +0x${size.toString(16)}) exceeds file size 0x${fileSize.toString(16)}`,
      );
    }
    const fdWritable = (flags & O_ACCMODE) !== O_RDONLY;
    if (writable && !fdWritable)
      throw new DmaMapError(Errno.EACCES, `fd ${fd} is read-only but WRITE was requested`);
    if (writable && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0) {
      throw new DmaMapError(Errno.EPERM, `fd ${fd} is write-sealed but WRITE was requested`);
    }

    // The file of the previous DMA_MAP first (QEMU sends the same RAM memfd with every page): no key to build.
    let file = this.last;
    if (file === undefined || file.ino !== ino || file.dev !== dev) file = this.files.get(`${dev}:${ino}`);
    if (file && file.refs > 0 && writable && !file.writable) {
      // The kept fd is read-only but this one could write: we would need a writable mapping through an fd
      // we are about to close. Refuse rather than juggle fds (QEMU always sends O_RDWR memfds).
      throw new DmaMapError(Errno.EACCES, `file ${file.key} was first mapped through a read-only fd`);
    }
    if ((!file || file.refs === 0) && this.liveFiles >= this.maxFiles) {
      // This DMA_MAP would keep one more fd open (a new file, or an idle one whose fd went with its last region).
      throw new DmaMapError(
        Errno.EMFILE,
        `${this.liveFiles} distinct guest-memory files held: the fd budget (RLIMIT_NOFILE less headroom) is spent`,
      );
    }
    if (!file) {
      file = new BackingFile(`${dev}:${ino}`, fd, dev, ino, fdWritable, fileSize, seals);
      this.files.set(file.key, file);
    } else {
      if (file.size !== fileSize) {
        // The latest truth: new mappings never reach past the current EOF.
        file.size = fileSize;
        file.sizeNumber = Number(fileSize);
      }
      file.seals = seals;
      if (file.refs === 0) {
        // Idle (only cached mappings left): this fd becomes the file's fd (the latest file's kept one, of
        // another open file description, goes).
        if (file.fd >= 0) closeQuietly(file.fd, this.onWarn);
        file.fd = fd;
        file.writable = fdWritable;
      } else {
        closeQuietly(fd, this.onWarn);
      }
    }
    if (file.refs++ === 0) this.liveFiles++;
    this.setLast(file);
    return file;
  }

  /**
   * `file` becomes the latest file. The previous one's fd, if it was kept only for being the latest (release()),
   * is closed now.
   */
  private setLast(file: BackingFile): void {
    const prev = this.last;
    if (prev !== undefined && prev !== file && prev.refs === 0 && prev.fd >= 0) {
      closeQuietly(prev.fd, this.onWarn);
      prev.fd = -1;
    }
    this.last = file;
  }

  /**
   * Hand-over: another region of a file acquire()d before (its fd was checked then): takes a reference without
   * another fd. Follow with prepare() like acquire().
   */
  attach(file: BackingFile, offset: bigint, size: bigint, writable: boolean): BackingFile {
    if (offset + size > file.size) {
      throw new DmaMapError(Errno.EINVAL, `region exceeds file size 0x${file.size.toString(16)}`);
    }
    if (writable && !file.writable) throw new DmaMapError(Errno.EACCES, `file ${file.key} is read-only`);
    if (file.fd < 0) throw new DmaMapError(Errno.EBADF, `file ${file.key} has no region left`);
    if (file.refs++ === 0) this.liveFiles++;
    return file;
  }

  /**
   * Makes `use` ready for access after acquire(): with mapping enabled, a region of at most EAGER_WINDOWS
   * windows has them all mapped now. Returns whether the region is reached through mappings ('mmap') or with
   * pread/pwrite. On a mapping failure of a file nothing else uses (or EACCES/EPERM) throws DmaMapError after
   * undoing this use; out of address space on a file in use degrades the region to pread/pwrite.
   */
  prepare(use: FileUse): boolean {
    if (!this.mapViews) return false;
    let first: number;
    let last: number;
    const end = use.fileOffset + use.size;
    if (use.fileOffset >= this.oneStart && end <= this.oneEnd) {
      // Inside the window the previous region lay in (page after page of guest RAM): no bigint division and no
      // Number() of one, each a call into V8's runtime.
      first = last = this.one;
    } else {
      first = Number(use.fileOffset / this.ws);
      last = Number((end - 1n) / this.ws);
      if (last - first + 1 > EAGER_WINDOWS) return true; // lazily, window by window
      if (first === last) {
        this.one = first;
        this.oneStart = this.windowStart(first);
        this.oneEnd = this.oneStart + this.ws;
      }
    }
    try {
      for (let w = first; w <= last; w++) this.pieceAt(use, w);
      return true;
    } catch (err) {
      const errno = errnoOf(err, Errno.ENOMEM);
      const alone = use.file.refs === 1;
      if (errno === Errno.EACCES || errno === Errno.EPERM || alone) {
        this.release(use, true);
        throw new DmaMapError(errno, `mmap of file ${use.file.key} failed: ${(err as Error).message}`);
      }
      // Out of address space or VMAs on an existing file: degrade to pread/pwrite for this region.
      this.onWarn('mmap failed, region falls back to pread/pwrite', err);
      this.dropPieces(use);
      return false;
    }
  }

  /** The piece of `use` in window `w`, mapping the window on first touch. Throws the mmap error. */
  pieceAt(use: FileUse, w: number): FilePiece {
    const first = use.firstPiece;
    if (first !== undefined && first.view.window === w) return first;
    const have = use.touched?.get(w);
    if (have) return have;
    const wStart = this.windowStart(w);
    const wEnd = wStart + this.ws;
    const end = use.fileOffset + use.size;
    const from = use.fileOffset > wStart ? use.fileOffset : wStart;
    const to = end < wEnd ? end : wEnd;
    const file = use.file;
    const shared = this.mappingFor(file, w, 'shared', from, to, use.writable);
    this.take(shared);
    let view = shared;
    if (!use.writable) {
      try {
        view = this.mappingFor(file, w, 'private', from, to, false);
      } catch (err) {
        this.unref(shared);
        throw err;
      }
      this.take(view);
    }
    const piece: FilePiece = {
      fileOffset: from,
      length: Number(to - from),
      viewOffset: Number(from - view.start),
      view,
      shared,
    };
    if (from === use.fileOffset) {
      use.firstPiece = piece;
    } else {
      use.touched ??= new Map();
      use.touched.set(w, piece);
    }
    return piece;
  }

  /** Every piece of `use`, in order (maps every window: only for regions whose host address is needed). */
  allPieces(use: FileUse): FilePiece[] {
    const first = Number(use.fileOffset / this.ws);
    const last = Number((use.fileOffset + use.size - 1n) / this.ws);
    const out: FilePiece[] = [];
    for (let w = first; w <= last; w++) out.push(this.pieceAt(use, w));
    return out;
  }

  /**
   * File offset of window `w`'s first byte. The first windows' are kept: BigInt() of a number is a runtime call,
   * and every DMA_MAP of a small region asks for one.
   */
  private windowStart(w: number): bigint {
    if (w >= WINDOW_STARTS_KEPT) return BigInt(w) * this.ws;
    let v = this.starts[w];
    if (v === undefined) {
      v = BigInt(w) * this.ws;
      this.starts[w] = v;
    }
    return v;
  }

  /** Window index of a file offset. */
  windowOf(fileOffset: bigint): number {
    return Number(fileOffset / this.ws);
  }

  /** The current mapping of window `w` of `kind` covering [from, to), creating a longer one when needed. */
  private mappingFor(
    file: BackingFile,
    w: number,
    kind: MappingKind,
    from: bigint,
    to: bigint,
    needWrite: boolean,
  ): FileMapping {
    let slot = file.windows.get(w);
    if (!slot) {
      slot = {};
      file.windows.set(w, slot);
    }
    const cur = slot[kind];
    if (cur?.covers(from, to) && (cur.writable || !needWrite)) return cur;
    if (file.fd < 0) throw new DmaMapError(Errno.EBADF, `file ${file.key} has no fd to map`);
    const wStart = this.windowStart(w);
    const avail = file.size - wStart;
    const length = Number(avail < this.ws ? avail : this.ws);
    // A write-sealed memfd refuses shared writable mappings even through an O_RDWR fd.
    const sharedWritable = file.writable && (file.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) === 0;
    const writable = kind === 'private' || sharedWritable;
    const prot = writable ? native.PROT_READ | native.PROT_WRITE : native.PROT_READ;
    const flags = kind === 'shared' ? native.MAP_SHARED : native.MAP_PRIVATE;
    let ab: ArrayBuffer;
    try {
      ab = native.mmap(file.fd, wStart, length, prot, flags);
    } catch (err) {
      if (!slot.shared && !slot.private) file.windows.delete(w);
      throw err;
    }
    this.mappings++;
    const m = new FileMapping(file, w, kind, wStart, ab, writable);
    slot[kind] = m;
    // A superseded mapping: idle ones go now; one still in use lives until its last unref (then destroyed).
    if (cur && cur.refs === 0) this.destroy(cur);
    return m;
  }

  private take(m: FileMapping): void {
    if (m.refs++ === 0 && this.idle.delete(m)) this.idleBytes -= m.length;
  }

  private isCurrent(m: FileMapping): boolean {
    return m.file.windows.get(m.window)?.[m.kind] === m;
  }

  private unref(m: FileMapping): void {
    if (--m.refs > 0) return;
    if (this.idleMax.count === 0 || !this.isCurrent(m)) {
      this.destroy(m);
      return;
    }
    m.idleSince = performance.now();
    this.idle.add(m);
    this.idleBytes += m.length;
    while (this.idle.size > this.idleMax.count || this.idleBytes > this.idleMax.bytes) {
      const oldest = this.idle.values().next().value as FileMapping;
      this.destroy(oldest);
    }
    this.armSweep();
  }

  private armSweep(): void {
    if (this.sweepTimer || this.idle.size === 0) return;
    this.sweepTimer = setTimeout(() => {
      this.sweepTimer = undefined;
      const cutoff = performance.now() - this.idleMax.ms;
      for (const m of this.idle) {
        if (m.idleSince > cutoff) break; // oldest first: the rest are younger
        this.destroy(m);
      }
      this.armSweep();
    }, this.idleMax.ms);
    this.sweepTimer.unref();
  }

  /** Unmaps `m` (idle or superseded) and forgets it; forgets its file once nothing of it is left. */
  private destroy(m: FileMapping): void {
    if (this.idle.delete(m)) this.idleBytes -= m.length;
    try {
      native.munmap(m.buffer);
    } catch (err) {
      this.onWarn('munmap failed', err);
    }
    this.mappings--;
    const file = m.file;
    const slot = file.windows.get(m.window);
    if (slot && slot[m.kind] === m) {
      delete slot[m.kind];
      if (!slot.shared && !slot.private) file.windows.delete(m.window);
    }
    this.forgetIfUnused(file);
  }

  private forgetIfUnused(file: BackingFile): void {
    if (file.refs === 0 && file.windows.size === 0 && this.files.get(file.key) === file) {
      this.files.delete(file.key);
      if (this.last === file) this.last = undefined;
      if (file.fd >= 0) {
        // Kept while the latest file (release()): nothing of it is left now.
        closeQuietly(file.fd, this.onWarn);
        file.fd = -1;
      }
    }
  }

  private dropPieces(use: FileUse): void {
    const first = use.firstPiece;
    if (first !== undefined) {
      use.firstPiece = undefined;
      this.dropPiece(first);
    }
    if (!use.touched) return;
    for (const p of use.touched.values()) this.dropPiece(p);
    use.touched = undefined;
  }

  private dropPiece(p: FilePiece): void {
    this.unref(p.view);
    if (p.shared !== p.view) this.unref(p.shared);
  }

  /**
   * Drops one region's references: the mappings it touched (idle ones stay cached, unless `discard`), then the
   * file (closing its fd) when no region uses it any more.
   */
  release(use: FileUse, discard = false): void {
    this.dropPieces(use);
    const file = use.file;
    if (--file.refs > 0) return;
    this.liveFiles--;
    if (!discard && file === this.last && file.windows.size > 0) {
      // The latest file keeps its fd for KEEP_FD_MS while its mappings are cached: the next DMA_MAP, most likely
      // with another fd of the same open file description (QEMU's RAM memfd, page after page), is then
      // recognised with one kcmp (acquire). At most this one idle fd; it goes after KEEP_FD_MS without a region,
      // with the file's last cached mapping, or when another file becomes the latest (setLast).
      this.keptSince = performance.now();
      if (this.keptTimer === undefined) this.armKept(KEEP_FD_MS);
      return;
    }
    const fd = file.fd;
    file.fd = -1;
    closeQuietly(fd, this.onWarn);
    if (discard) {
      // A refused DMA_MAP leaves no trace: nothing of a file only it used stays mapped.
      for (const slot of [...file.windows.values()]) {
        if (slot.shared && slot.shared.refs === 0) this.destroy(slot.shared);
        if (slot.private && slot.private.refs === 0) this.destroy(slot.private);
      }
    }
    this.forgetIfUnused(file);
  }

  /** Closes the latest file's kept fd once it has had no region for KEEP_FD_MS (release()). */
  private armKept(ms: number): void {
    this.keptTimer = setTimeout(() => {
      this.keptTimer = undefined;
      const file = this.last;
      if (file === undefined || file.refs > 0 || file.fd < 0) return;
      const left = this.keptSince + KEEP_FD_MS - performance.now();
      if (left > 0) {
        this.armKept(left);
        return;
      }
      closeQuietly(file.fd, this.onWarn);
      file.fd = -1;
    }, ms);
    this.keptTimer.unref();
  }

  /** Unmaps every idle mapping (unmap-all, shutdown). */
  flush(): void {
    for (const m of [...this.idle]) this.destroy(m);
    if (this.sweepTimer) clearTimeout(this.sweepTimer);
    this.sweepTimer = undefined;
    if (this.keptTimer) clearTimeout(this.keptTimer); // the kept fd went with its file's last mapping
    this.keptTimer = undefined;
  }

  /** What the idle cache holds (logs, hand-over): nothing here is needed for correctness. */
  cacheState(): CachedMappingState[] {
    const now = performance.now();
    return [...this.idle].map((m) => ({
      file: m.file.key,
      window: m.window,
      kind: m.kind,
      length: m.length,
      idleMs: Math.round(now - m.idleSince),
    }));
  }
}

function closeQuietly(fd: number, onWarn: (msg: string, err: unknown) => void): void {
  try {
    closeFd(fd);
  } catch (err) {
    onWarn('close of a DMA file fd failed', err);
  }
}
