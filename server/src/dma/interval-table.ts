// A table of non-overlapping [iova, end) intervals keyed by IOVA, with O(log n) lookup.
//
// Layout: a two-level sorted array (a B+ tree of depth 2). Entries live in blocks of at most 2·B entries, each
// block sorted, the blocks ordered by their first entry. A lookup is two binary searches (over block heads, then
// inside one block); an insert or remove splices one block (at most 2·B pointers moved) plus, rarely, the block
// list. With B = 256 that keeps every operation cheap well past the protocol's 65,535 live mappings (a flat
// sorted array would memmove up to 64k pointers per vIOMMU map/unmap; a balanced tree would allocate a node
// per entry and chase pointers). Keys are bigints because IOVAs are 64-bit.
//
// The table does not check for overlaps on insert: the caller (DmaAddressSpace) asks `overlaps()` first, since
// what to do about an overlap (EEXIST) is policy.

/** A half-open range [start, end) of bigint addresses, as the IntervalTable stores it. */
export interface Interval {
  /** First address (inclusive). */
  readonly iova: bigint;
  /** Last address + 1 (exclusive); may be 2^64 for a range ending at the top of the address space. */
  readonly end: bigint;
}

const B = 256;
/** remove() copies a block of at most this many entries to drop its first one (see there). */
const SMALL_BLOCK = 128;

/**
 * A sorted table of non-overlapping intervals with logarithmic lookup, insert and remove (a two-level sorted array, a B+ tree of depth 2),
 * sized for 65,535+ live DMA maps.
 */
export class IntervalTable<T extends Interval> {
  /**
   * The blocks, none empty, except that the last block left is kept when it empties (a table that goes from one
   * entry to none and back, e.g. one DMA_MAP + DMA_UNMAP pair at a time, allocates no block per insert). Every
   * search checks `count` first, so an empty block is never looked into.
   */
  private blocks: T[][] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Index of the last block whose first entry starts at or below `addr`; -1 if every block starts above. */
  private blockAtOrBefore(addr: bigint): number {
    const blocks = this.blocks;
    let lo = 0;
    let hi = blocks.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (blocks[mid]![0]!.iova <= addr) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** Index inside `block` of the last entry starting at or below `addr`; -1 if none. */
  private static entryAtOrBefore<T extends Interval>(block: T[], addr: bigint): number {
    let lo = 0;
    let hi = block.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (block[mid]!.iova <= addr) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** The entry containing `addr`, if any. */
  find(addr: bigint): T | undefined {
    if (this.count === 0) return undefined;
    const b = this.blockAtOrBefore(addr);
    if (b < 0) return undefined;
    const block = this.blocks[b]!;
    const i = IntervalTable.entryAtOrBefore(block, addr);
    const e = block[i]!;
    return addr < e.end ? e : undefined;
  }

  /** The entry starting exactly at `iova`, if any. */
  get(iova: bigint): T | undefined {
    const e = this.find(iova);
    return e && e.iova === iova ? e : undefined;
  }

  /** firstEndingAfter()'s result: block and index (fields, not a pair array: it runs for every map and unmap). */
  private atBlock = 0;
  private atIndex = 0;

  /**
   * Finds the first entry whose end lies above `addr`: false if there is none, else true with its position in
   * (atBlock, atIndex).
   */
  private firstEndingAfter(addr: bigint): boolean {
    if (this.count === 0) return false;
    const blocks = this.blocks;
    let b = this.blockAtOrBefore(addr);
    let i: number;
    if (b < 0) {
      b = 0;
      i = 0;
    } else {
      const block = blocks[b]!;
      i = IntervalTable.entryAtOrBefore(block, addr);
      // Entries do not overlap, so only the entry starting at or below addr can straddle it.
      if (block[i]!.end <= addr) i++;
      if (i >= block.length) {
        b++;
        i = 0;
        if (b >= blocks.length) return false;
      }
    }
    this.atBlock = b;
    this.atIndex = i;
    return true;
  }

  /** Whether any entry intersects [start, end). */
  overlaps(start: bigint, end: bigint): boolean {
    if (!this.firstEndingAfter(start)) return false;
    return this.blocks[this.atBlock]![this.atIndex]!.iova < end;
  }

  /** Every entry intersecting [start, end), in IOVA order. */
  overlapping(start: bigint, end: bigint): T[] {
    const out: T[] = [];
    if (!this.firstEndingAfter(start)) return out;
    let b = this.atBlock;
    let i = this.atIndex;
    const blocks = this.blocks;
    while (b < blocks.length) {
      const block = blocks[b]!;
      for (; i < block.length; i++) {
        const e = block[i]!;
        if (e.iova >= end) return out;
        out.push(e);
      }
      b++;
      i = 0;
    }
    return out;
  }

  /** Inserts `e`; the caller guarantees it overlaps nothing. */
  insert(e: T): void {
    const blocks = this.blocks;
    if (this.count++ === 0) {
      // At most the one empty block kept by remove().
      if (blocks.length === 0) blocks.push([e]);
      else blocks[0]!.push(e);
      return;
    }
    let b = this.blockAtOrBefore(e.iova);
    if (b < 0) b = 0;
    const block = blocks[b]!;
    const i = IntervalTable.entryAtOrBefore(block, e.iova) + 1;
    if (i === block.length) block.push(e);
    else block.splice(i, 0, e);
    if (block.length > 2 * B) blocks.splice(b + 1, 0, block.splice(B));
  }

  /** Removes `e` (by identity); returns whether it was present. */
  remove(e: T): boolean {
    if (this.count === 0) return false;
    // Where the last overlaps()/overlapping() started (a DMA_UNMAP removes what it just looked up; after one
    // removal the next entry has moved into that place): no search when `e` is there. Identity decides.
    let b = this.atBlock;
    let block = this.blocks[b];
    let i = this.atIndex;
    if (block === undefined || block[i] !== e) {
      b = this.blockAtOrBefore(e.iova);
      if (b < 0) return false;
      block = this.blocks[b]!;
      i = IntervalTable.entryAtOrBefore(block, e.iova);
      if (i < 0 || block[i] !== e) return false;
    }
    // splice() moves the tail in one go (a loop of single stores pays a write barrier each, twice the cost
    // measured with 64 live entries). But the block outlives many regions: once V8 has promoted it, every entry
    // splice() moves into it pays a write barrier too (young regions into an old array; about 2,800 instructions
    // per DMA_UNMAP at 64 live entries, callgrind). The first entry of a small block (maps unmapped in the order
    // they were made: QEMU's transactions, the bench's pipelined pairs) is therefore dropped by copying the rest
    // into a new, young array: a copy without barriers.
    if (i === block.length - 1) block.pop();
    else if (i === 0 && block.length <= SMALL_BLOCK) this.blocks[b] = block = block.slice(1);
    else block.splice(i, 1);
    this.count--;
    if (block.length === 0) {
      if (this.blocks.length > 1) this.blocks.splice(b, 1);
    } else if (block.length < B / 4 && b + 1 < this.blocks.length) {
      // Merge small neighbours so the block list stays short after mass removals.
      const next = this.blocks[b + 1]!;
      if (block.length + next.length <= 2 * B) {
        for (const x of next) block.push(x);
        this.blocks.splice(b + 1, 1);
      }
    }
    return true;
  }

  /** Removes everything; returns the removed entries in IOVA order. */
  clear(): T[] {
    const all = this.toArray();
    this.blocks = [];
    this.count = 0;
    return all;
  }

  toArray(): T[] {
    const out: T[] = [];
    for (const block of this.blocks) for (const e of block) out.push(e);
    return out;
  }

  *[Symbol.iterator](): IterableIterator<T> {
    for (const block of this.blocks) yield* block;
  }
}
