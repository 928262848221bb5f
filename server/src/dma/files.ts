// Backing files of fd-carrying DMA maps: one mapping per underlying file, shared by every DMA region cut from it.
//
// Why: under a guest vIOMMU QEMU sends one DMA_MAP per 4 KiB page, each with a *fresh dup* of the same RAM memfd.
// An mmap per message would cost two syscalls per map/unmap pair and one kernel VMA each, and 65,535 live maps
// would exhaust vm.max_map_count (65,530) before the protocol's own limit. So each file is identified by
// (st_dev, st_ino), kept open once (one fd per file, for pread/pwrite and for the host IOMMU's IOAS_MAP_FILE), the
// duplicate fds are closed as soon as they are identified, and each DMA region is a sub-view of the file's
// mapping. Everything is reference-counted: a mapping is unmapped when its last region goes, the file's fd is
// closed when its last region goes.
//
// Windows: Node 20 cannot create an external ArrayBuffer above 4 GiB, so a file is mapped in fixed windows of
// `windowSize` bytes (1 GiB by default) of file offset; a region crossing a window boundary gets one piece per
// window. A window is mapped only as far as the file extends when it is first needed; if the file grew and a
// later region needs more, a new, longer mapping of that window replaces it for new regions while the old one
// lives on until its own regions are gone (live views are never remapped under a device).
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

import * as native from 'vfio-user-native';
import { Errno, errnoOf } from 'vfio-user-protocol';
import { DmaMapError } from './errors.js';

export const DEFAULT_WINDOW_SIZE = 1 << 30;

const O_ACCMODE = 3;
const O_RDONLY = 0;
const F_SEAL_SHRINK = 0x2;
const F_SEAL_WRITE = 0x8;
const F_SEAL_FUTURE_WRITE = 0x10;

export type MappingKind = 'shared' | 'private';

/** One mmap of (part of) a window. */
export class FileMapping {
  refs = 0;
  readonly bytes: Uint8Array;
  private address: bigint | undefined;
  constructor(
    readonly kind: MappingKind,
    /** File offset of the first mapped byte (the window start). */
    readonly start: bigint,
    readonly buffer: ArrayBuffer,
  ) {
    this.bytes = new Uint8Array(buffer);
  }
  get length(): number {
    return this.bytes.byteLength;
  }
  /** Process virtual address of file offset `start` (for the host IOMMU). */
  addressOf(fileOffset: bigint): bigint {
    this.address ??= native.mapAddress(this.buffer);
    return this.address + (fileOffset - this.start);
  }
  covers(from: bigint, to: bigint): boolean {
    return from >= this.start && to <= this.start + BigInt(this.length);
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

export class BackingFile {
  /** Regions using this file. */
  refs = 0;
  /** Current mapping per window index and kind. */
  readonly windows = new Map<number, { shared?: FileMapping; private?: FileMapping }>();
  constructor(
    readonly key: string,
    /** The one fd kept for this file (pread/pwrite, host IOMMU MAP_FILE). Owned by the FileTable. */
    readonly fd: number,
    readonly dev: number | bigint,
    readonly ino: number | bigint,
    /** Whether `fd` was opened for writing (O_RDWR/O_WRONLY): a shared writable mapping is possible. */
    readonly writable: boolean,
    public size: bigint,
    public seals: number,
  ) {}

  /**
   * Whether the client can still shrink the file under our mappings (no F_SEAL_SHRINK): every access to its
   * mapped bytes must then go through the SIGBUS guard, and no plain view of it may reach device code.
   */
  get canShrink(): boolean {
    return (this.seals & F_SEAL_SHRINK) === 0;
  }
}

export interface AcquireResult {
  file: BackingFile;
  /** Empty when mapping is disabled or failed (the region is then reached with pread/pwrite). */
  pieces: FilePiece[];
}

export interface FileTableOptions {
  windowSize?: number;
  /** Map windows into the process (default true). false: every fd region is reached with pread/pwrite. */
  mapViews?: boolean;
  onWarn?: (msg: string, err: unknown) => void;
}

export class FileTable {
  private readonly files = new Map<string, BackingFile>();
  readonly windowSize: number;
  private readonly mapViews: boolean;
  private readonly onWarn: (msg: string, err: unknown) => void;
  /** Live mmaps (for stats and tests). */
  mappings = 0;

  constructor(opts: FileTableOptions = {}) {
    this.windowSize = opts.windowSize ?? DEFAULT_WINDOW_SIZE;
    this.mapViews = opts.mapViews ?? true;
    this.onWarn = opts.onWarn ?? (() => {});
    if (!Number.isInteger(this.windowSize) || this.windowSize <= 0 || this.windowSize > 2 ** 31) {
      throw new RangeError('windowSize must be an integer in (0, 2^31]');
    }
  }

  get fileCount(): number {
    return this.files.size;
  }

  /**
   * Validates `fd` for a DMA region [offset, offset+size) with protection `writable`, identifies its file and
   * maps what the region needs. On success the fd is consumed (kept as the file's fd, or closed as a
   * duplicate); on failure (DmaMapError with the errno for the reply) the caller still owns it.
   */
  acquire(fd: number, offset: bigint, size: bigint, writable: boolean): AcquireResult {
    let info: ReturnType<typeof native.fdInfo>;
    try {
      info = native.fdInfo(fd);
    } catch (err) {
      throw new DmaMapError(errnoOf(err, Errno.EBADF), `fd ${fd}: fstat failed`);
    }
    if (info.type !== 'file') {
      // Sockets, pipes, eventfds, directories, devices: nothing we can map as guest memory.
      throw new DmaMapError(Errno.ENODEV, `fd ${fd} is a ${info.type}, not a regular file`);
    }
    const fileSize = BigInt(info.size);
    if (offset + size > fileSize) {
      // Mapping past EOF would SIGBUS on the first touch.
      throw new DmaMapError(
        Errno.EINVAL,
        `region [0x${offset.toString(16)}, +0x${size.toString(16)}) exceeds file size 0x${fileSize.toString(16)}`,
      );
    }
    const fdWritable = (info.flags & O_ACCMODE) !== O_RDONLY;
    if (writable && !fdWritable)
      throw new DmaMapError(Errno.EACCES, `fd ${fd} is read-only but WRITE was requested`);
    let seals = 0;
    try {
      seals = native.getSeals(fd);
    } catch {
      seals = 0; // not a memfd/shmem file: no seals
    }
    if (writable && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) !== 0) {
      throw new DmaMapError(Errno.EPERM, `fd ${fd} is write-sealed but WRITE was requested`);
    }

    const key = `${info.dev}:${info.ino}`;
    let file = this.files.get(key);
    const isNew = !file;
    if (!file) {
      file = new BackingFile(key, fd, info.dev, info.ino, fdWritable, fileSize, seals);
    } else {
      file.size = fileSize; // the latest truth: new mappings never reach past the current EOF
      file.seals = seals;
      if (writable && !file.writable) {
        // The kept fd is read-only but this one could write: we would need a writable mapping through an fd
        // we are about to close. Refuse rather than juggle fds (QEMU always sends O_RDWR memfds).
        throw new DmaMapError(Errno.EACCES, `file ${key} was first mapped through a read-only fd`);
      }
    }

    let pieces: FilePiece[] = [];
    if (this.mapViews) {
      try {
        pieces = this.mapPieces(file, offset, size, writable);
      } catch (err) {
        const errno = errnoOf(err, Errno.ENOMEM);
        if (errno === Errno.EACCES || errno === Errno.EPERM || isNew) {
          if (isNew) this.unmapUnused(file);
          throw new DmaMapError(errno, `mmap of fd ${fd} failed: ${(err as Error).message}`);
        }
        // Out of address space or VMAs on an existing file: degrade to pread/pwrite for this region.
        this.onWarn('mmap failed, region falls back to pread/pwrite', err);
        pieces = [];
      }
    }

    file.refs++;
    if (isNew) this.files.set(key, file);
    else native.closeFd(fd);
    return { file, pieces };
  }

  /**
   * Hand-over: another region of a file acquire()d before (its fd was checked then): maps what the region needs
   * and counts the reference, without another fd.
   */
  attach(file: BackingFile, offset: bigint, size: bigint, writable: boolean): FilePiece[] {
    if (offset + size > file.size) {
      throw new DmaMapError(Errno.EINVAL, `region exceeds file size 0x${file.size.toString(16)}`);
    }
    if (writable && !file.writable) throw new DmaMapError(Errno.EACCES, `file ${file.key} is read-only`);
    let pieces: FilePiece[] = [];
    if (this.mapViews) {
      try {
        pieces = this.mapPieces(file, offset, size, writable);
      } catch (err) {
        this.onWarn('mmap failed, region falls back to pread/pwrite', err);
      }
    }
    file.refs++;
    return pieces;
  }

  private mapPieces(file: BackingFile, offset: bigint, size: bigint, writable: boolean): FilePiece[] {
    const pieces: FilePiece[] = [];
    const taken: FileMapping[] = [];
    const ws = BigInt(this.windowSize);
    try {
      let pos = offset;
      const end = offset + size;
      while (pos < end) {
        const w = Number(pos / ws);
        const wStart = BigInt(w) * ws;
        const wEnd = wStart + ws;
        const pieceEnd = end < wEnd ? end : wEnd;
        const shared = this.mappingFor(file, w, 'shared', pos, pieceEnd);
        shared.refs++;
        taken.push(shared);
        let view = shared;
        if (!writable) {
          view = this.mappingFor(file, w, 'private', pos, pieceEnd);
          view.refs++;
          taken.push(view);
        }
        pieces.push({
          fileOffset: pos,
          length: Number(pieceEnd - pos),
          viewOffset: Number(pos - view.start),
          view,
          shared,
        });
        pos = pieceEnd;
      }
      return pieces;
    } catch (err) {
      for (const m of taken) this.unref(file, m);
      throw err;
    }
  }

  /** The current mapping of window `w` of `kind` covering [from, to), creating a longer one when needed. */
  private mappingFor(file: BackingFile, w: number, kind: MappingKind, from: bigint, to: bigint): FileMapping {
    let slot = file.windows.get(w);
    if (!slot) {
      slot = {};
      file.windows.set(w, slot);
    }
    const cur = slot[kind];
    if (cur?.covers(from, to)) return cur;
    const ws = BigInt(this.windowSize);
    const wStart = BigInt(w) * ws;
    const avail = file.size - wStart;
    const length = Number(avail < ws ? avail : ws);
    // A write-sealed memfd refuses shared writable mappings even through an O_RDWR fd.
    const sharedWritable = file.writable && (file.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) === 0;
    const prot =
      kind === 'private' || sharedWritable ? native.PROT_READ | native.PROT_WRITE : native.PROT_READ;
    const flags = kind === 'shared' ? native.MAP_SHARED : native.MAP_PRIVATE;
    const ab = native.mmap(file.fd, wStart, length, prot, flags);
    this.mappings++;
    const m = new FileMapping(kind, wStart, ab);
    // A superseded mapping with no regions left is dropped now; one still in use lives until its last unref.
    if (cur && cur.refs === 0) this.destroy(cur);
    slot[kind] = m;
    return m;
  }

  private destroy(m: FileMapping): void {
    try {
      native.munmap(m.buffer);
    } catch (err) {
      this.onWarn('munmap failed', err);
    }
    this.mappings--;
  }

  private unref(file: BackingFile, m: FileMapping): void {
    if (--m.refs > 0) return;
    this.destroy(m);
    const w = Number(m.start / BigInt(this.windowSize));
    const slot = file.windows.get(w);
    if (slot && slot[m.kind] === m) {
      delete slot[m.kind];
      if (!slot.shared && !slot.private) file.windows.delete(w);
    }
  }

  private unmapUnused(file: BackingFile): void {
    for (const slot of file.windows.values()) {
      for (const kind of ['shared', 'private'] as const) {
        const m = slot[kind];
        if (m && m.refs === 0) this.destroy(m);
      }
    }
    file.windows.clear();
  }

  /** Drops one region's references: its pieces' mappings, then the file itself (closing its fd) when unused. */
  release(file: BackingFile, pieces: readonly FilePiece[]): void {
    for (const p of pieces) {
      this.unref(file, p.view);
      if (p.shared !== p.view) this.unref(file, p.shared);
    }
    if (--file.refs > 0) return;
    for (const slot of file.windows.values()) {
      for (const kind of ['shared', 'private'] as const) {
        const m = slot[kind];
        if (m) this.destroy(m);
      }
    }
    file.windows.clear();
    this.files.delete(file.key);
    try {
      native.closeFd(file.fd);
    } catch (err) {
      this.onWarn('close of a DMA file fd failed', err);
    }
  }
}
