// One DMA region: what a DMA_MAP established, as the address space, its subscribers (the IOMMU mirror) and the
// access API see it.

import { DmaMapFlags } from 'vfio-user-protocol';
import type { BackingFile, FilePiece, FileTable, FileUse } from './files.js';
import type { Interval } from './interval-table.js';

/**
 * How the region's bytes are reached:
 * - `mmap`: through a view of the process's mapping of the file (fast path);
 * - `fd`: pread/pwrite on the file's fd (mapping disabled or impossible);
 * - `message`: DMA_READ/DMA_WRITE messages to the client (the map came without an fd).
 */
export type DmaAccessKind = 'mmap' | 'fd' | 'message';

/** A piece of a region in this process's address space, for host IOMMU backends that map by address. */
export interface HostSegment {
  iova: bigint;
  size: bigint;
  vaddr: bigint;
}

/**
 * One mapped region of the DMA address space: its IOVA range, permissions and backing (a window of a guest-memory
 * file, or DMA messages).
 */
export class DmaRegion implements Interval {
  /** Whether unmap has begun: no new access may start. */
  removed = false;
  /** The file's pieces mapped so far (files.ts FileUse; windows are mapped lazily): the first window's, */
  firstPiece: FilePiece | undefined;
  /** and the others by window index. */
  touched: Map<number, FilePiece> | undefined;
  /** In-flight message accesses (failed on removal, see DmaAddressSpace.unmap); created on first use. */
  inflight: Set<(err: Error) => void> | undefined;
  readonly end: bigint;

  constructor(
    /** Monotonic id, unique per address space (for logs and host-side bookkeeping). */
    readonly id: number,
    readonly iova: bigint,
    readonly size: bigint,
    /** DmaMapFlags bits. */
    readonly prot: number,
    /** Decided at DMA_MAP time ('mmap' degrades to 'fd' when mapping is impossible), then fixed. */
    public access: DmaAccessKind,
    /** Offset of `iova` inside the backing file (0 without a file). */
    readonly fileOffset: bigint,
    /** The backing file, for fd maps. */
    readonly file: BackingFile | undefined,
    /** The table that maps the file's windows, for `mmap` access; undefined otherwise. */
    private readonly files?: FileTable,
  ) {
    this.end = iova + size;
  }

  /**
   * The file's pieces (one per window), for `mmap` access; empty otherwise. Maps every window the region spans
   * that was not touched yet: the access API does not need this (it maps on demand), tests and hosts do.
   */
  get pieces(): readonly FilePiece[] {
    return this.access === 'mmap' && this.files ? this.files.allPieces(this as FileUse) : [];
  }

  /** The piece holding region offset `rel` (mapping its window on first touch). */
  pieceAt(rel: bigint): FilePiece {
    const files = this.files!;
    return files.pieceAt(this as FileUse, files.windowOf(this.fileOffset + rel));
  }

  get readable(): boolean {
    return (this.prot & DmaMapFlags.READ) !== 0;
  }
  get writable(): boolean {
    return (this.prot & DmaMapFlags.WRITE) !== 0;
  }

  /**
   * The file's fd (borrowed: owned by the address space, valid until every `regionRemoved` subscriber of this
   * region has returned). For IOAS_MAP_FILE-style backends. Undefined for fd-less maps.
   */
  get fd(): number | undefined {
    return this.file?.fd;
  }

  /** Identity of the backing file (st_dev, st_ino), for logs and per-file host bookkeeping. */
  get fileId(): string | undefined {
    return this.file?.key;
  }

  /**
   * The region's bytes in this process's address space (shared mappings), one segment per mapping window; for
   * MAP_DMA/IOAS_MAP-style backends (type1 pins through these addresses, which stay mapped until the region's
   * removal has completed). Empty when the region has no mapping (fd-less, or reached with pread/pwrite).
   */
  hostSegments(): HostSegment[] {
    const out: HostSegment[] = [];
    let iova = this.iova;
    for (const p of this.pieces) {
      const size = BigInt(p.length);
      out.push({ iova, size, vaddr: p.shared.addressOf(p.fileOffset) });
      iova += size;
    }
    return out;
  }

  toString(): string {
    const prot = `${this.readable ? 'r' : '-'}${this.writable ? 'w' : '-'}`;
    const via = this.file
      ? `${this.access} file ${this.file.key}+0x${this.fileOffset.toString(16)}`
      : this.access;
    return `[0x${this.iova.toString(16)}, +0x${this.size.toString(16)}) ${prot} ${via}`;
  }
}
