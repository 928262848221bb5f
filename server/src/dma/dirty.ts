// The seam for DMA dirty-page logging (DEVICE_FEATURE DMA_LOGGING_START / STOP / REPORT, features 6/7/8).
//
// Dirty logging only matters for migration, and no device here supports migration yet, so the engine answers
// those features with EINVAL (conformance FEA-28: "DMA logging on a server without migration support"). A
// migration-capable build plugs an implementation of this interface into DmaAddressSpace.dirtyLogging: the
// access API then calls `markDirty` on every device write, and the session forwards the three features here.

/** One range of DMA_LOGGING_START (`{u64 iova; u64 length}`); an empty list means "everything". */
export interface DirtyRange {
  iova: bigint;
  length: bigint;
}

export interface DirtyPageLogging {
  /** DMA_LOGGING_START: begin tracking at `pageSize` granularity; may return the page size actually used. */
  start(pageSize: bigint, ranges: readonly DirtyRange[]): bigint;
  /** DMA_LOGGING_STOP. */
  stop(): void;
  /**
   * DMA_LOGGING_REPORT: the bitmap of pages dirtied in [iova, iova+length) since the last report (clear on read),
   * bit b of u64 word b/64 for page (addr - iova) / pageSize (the kernel meaning; the spec's formula is wrong).
   */
  report(iova: bigint, length: bigint, pageSize: bigint): Uint8Array;
  /** Called by the access API for every device write while logging is active. */
  markDirty(iova: bigint, length: number): void;
}
