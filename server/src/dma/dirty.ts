// DMA dirty-page logging (DEVICE_FEATURE DMA_LOGGING_START / STOP / REPORT, features 6/7/8).
//
// Dirty logging only matters for migration: the engine (session/migration.ts) offers it only for devices with a
// migration facet (otherwise EINVAL, conformance FEA-28). On START it installs a DirtyLog into
// DmaAddressSpace.dirtyLogging; the access API then calls `markDirty` on every device write (whatever the
// access kind: mmap, pread/pwrite or DMA_WRITE messages), and REPORT drains it. STOP (or a disconnect)
// uninstalls it.

/** One range of DMA_LOGGING_START (`{u64 iova; u64 length}`); an empty list means "everything". */
export interface DirtyRange {
  iova: bigint;
  length: bigint;
}

/**
 * Dirty-page tracking installed on the DMA address space during migration (DMA_LOGGING_START): every device write
 * through the access API marks its pages.
 */
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

/** A DirtyLog as a hand-over carries it (dirty words: [word index, 64 page bits]). */
export interface DirtyLogState {
  active: boolean;
  pageSize: bigint;
  ranges: DirtyRange[];
  words: [bigint, bigint][];
}

/**
 * The dirty log the engine installs on DMA_LOGGING_START: a sparse set of dirty pages (absolute page numbers
 * at the logging page size, 64 to a bigint word), fed by the access API's writes and drained by `report`.
 */
export class DirtyLog implements DirtyPageLogging {
  private ranges: DirtyRange[] = [];
  private readonly words = new Map<bigint, bigint>();
  private active = false;
  pageSize = 0n;

  get started(): boolean {
    return this.active;
  }

  start(pageSize: bigint, ranges: readonly DirtyRange[]): bigint {
    this.pageSize = pageSize;
    this.ranges = ranges.map((r) => ({ ...r }));
    this.words.clear();
    this.active = true;
    return pageSize;
  }

  stop(): void {
    this.active = false;
    this.words.clear();
    this.ranges = [];
  }

  markDirty(iova: bigint, length: number): void {
    if (!this.active || length <= 0) return;
    const end = iova + BigInt(length);
    if (this.ranges.length === 0) {
      this.markSpan(iova, end);
      return;
    }
    for (const r of this.ranges) {
      const s = iova > r.iova ? iova : r.iova;
      const e = end < r.iova + r.length ? end : r.iova + r.length;
      if (s < e) this.markSpan(s, e);
    }
  }

  private markSpan(start: bigint, end: bigint): void {
    const first = start / this.pageSize;
    const last = (end - 1n) / this.pageSize;
    for (let w = first >> 6n; w <= last >> 6n; w++) {
      const lo = w === first >> 6n ? first & 63n : 0n;
      const hi = w === last >> 6n ? last & 63n : 63n;
      const mask = ((1n << (hi - lo + 1n)) - 1n) << lo;
      this.words.set(w, (this.words.get(w) ?? 0n) | mask);
    }
  }

  /** Hand-over (server/src/handover/): the whole log, to be imported by the next process. */
  exportState(): DirtyLogState {
    return {
      active: this.active,
      pageSize: this.pageSize,
      ranges: this.ranges.map((r) => ({ ...r })),
      words: [...this.words],
    };
  }

  importState(s: DirtyLogState): void {
    this.active = s.active;
    this.pageSize = s.pageSize;
    this.ranges = s.ranges.map((r) => ({ ...r }));
    this.words.clear();
    for (const [w, bits] of s.words) this.words.set(w, bits);
  }

  report(iova: bigint, length: bigint, pageSize: bigint): Uint8Array {
    const pages = (length + pageSize - 1n) / pageSize;
    const out = new Uint8Array(Number(((pages + 63n) / 64n) * 8n));
    if (!this.active || pageSize !== this.pageSize) return out;
    const end = iova + length;
    const firstWord = (iova / pageSize) >> 6n;
    const lastWord = ((end - 1n) / pageSize) >> 6n;
    for (const [w, bits] of this.words) {
      if (w < firstWord || w > lastWord) continue;
      let keep = bits;
      for (let i = 0n; i < 64n; i++) {
        if (!((bits >> i) & 1n)) continue;
        const ps = ((w << 6n) | i) * pageSize;
        const pe = ps + pageSize;
        const s = ps > iova ? ps : iova;
        const e = pe < end ? pe : end;
        if (s >= e) continue;
        // Clear on read; the report's page b covers [iova + b*pageSize, ...), which an unaligned map may
        // split across two logged pages.
        keep &= ~(1n << i);
        for (let b = (s - iova) / pageSize; b <= (e - 1n - iova) / pageSize; b++) {
          out[Number(b >> 3n)]! |= 1 << Number(b & 7n);
        }
      }
      if (keep) this.words.set(w, keep);
      else this.words.delete(w);
    }
    return out;
  }
}
