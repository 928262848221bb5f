// Guest memory as the NVMe model reaches it: queue entries, PRP lists and data buffers.
//
// Where the guest's RAM came with an fd that cannot shrink (F_SEAL_SHRINK, as QEMU's memory-backend-memfd seals
// it) the address space has it mapped, and `direct()` hands out views of those pages: the model reads submission entries and writes completions in place, and the image file's preadv/pwritev
// fill and drain data buffers straight into them (zero copy, off the event loop). Where it came without an fd
// (plain `-m` RAM in QEMU) every access is a DMA_READ/DMA_WRITE message and data goes through a bounce buffer.
// Writes through direct views are reported to dirty-page logging like any other device write.
//
// (The engine's DmaAccessor has no zero-copy scatter-gather call yet; this file reaches the mapped views through
// the DmaAddressSpace's region table and is the one place to switch when it gains one.)
import type { DmaAccessor } from '../../device.js';
import { DmaAddressSpace } from '../../dma/address-space.js';
import { DmaError } from '../../dma/errors.js';

/** One contiguous guest range. */
export interface GuestSegment {
  iova: bigint;
  length: number;
}

export class GuestMemory {
  private readonly space: DmaAddressSpace | undefined;

  constructor(readonly dma: DmaAccessor) {
    this.space = dma instanceof DmaAddressSpace ? dma : undefined;
  }

  /**
   * A view of [iova, iova+length) when one mapped region holds all of it with the needed permission; undefined
   * otherwise (use read/write). Writers must call `dirtied` after writing through the view.
   */
  direct(iova: bigint, length: number, write: boolean): Uint8Array | undefined {
    const r = this.space?.find(iova);
    if (r?.access !== 'mmap' || r.removed || iova + BigInt(length) > r.end) return undefined;
    // A file the client can still shrink must never be touched through a plain view: a page past its new end
    // would SIGBUS the process. Those go through the access API's guarded copies (docs/hardening.md).
    if (r.file?.canShrink !== false) return undefined;
    if (write ? !r.writable : !r.readable) return undefined;
    const rel = iova - r.iova;
    let p: ReturnType<typeof r.pieceAt>;
    try {
      p = r.pieceAt(rel); // the window holding it, mapped on first touch (dma/files.ts)
    } catch {
      return undefined; // cannot map that window now: the copying path reports the error
    }
    const inPiece = Number(r.fileOffset + rel - p.fileOffset);
    if (inPiece + length > p.length) return undefined; // crosses a mapping window
    const at = p.viewOffset + inPiece;
    const bytes = p.view.bytes;
    if (at + length > bytes.length) return undefined; // detached (unmapped) view
    return bytes.subarray(at, at + length);
  }

  dirtied(iova: bigint, length: number): void {
    this.space?.dirtyLogging?.markDirty(iova, length);
  }

  read(iova: bigint, length: number): Promise<Uint8Array> {
    const v = this.direct(iova, length, false);
    return v ? Promise.resolve(v.slice()) : this.dma.read(iova, length);
  }

  write(iova: bigint, data: Uint8Array): Promise<void> {
    const v = this.direct(iova, data.length, true);
    if (v) {
      v.set(data);
      this.dirtied(iova, data.length);
      return Promise.resolve();
    }
    return this.dma.write(iova, data);
  }

  /** Direct views of every segment, or undefined when any is not directly reachable. */
  views(sgl: readonly GuestSegment[], write: boolean): Uint8Array[] | undefined {
    const out: Uint8Array[] = [];
    for (const s of sgl) {
      const v = this.direct(s.iova, s.length, write);
      if (!v) return undefined;
      const last = out[out.length - 1];
      // Neighbouring guest pages that are neighbours in the mapping too: one iovec.
      if (last && last.buffer === v.buffer && last.byteOffset + last.byteLength === v.byteOffset) {
        out[out.length - 1] = new Uint8Array(v.buffer, last.byteOffset, last.byteLength + v.byteLength);
      } else {
        out.push(v);
      }
    }
    return out;
  }

  markDirty(sgl: readonly GuestSegment[]): void {
    if (!this.space?.dirtyLogging) return;
    for (const s of sgl) this.space.dirtyLogging.markDirty(s.iova, s.length);
  }

  /** Gather a scatter-gather list into one buffer (the copying path). */
  async gather(sgl: readonly GuestSegment[], total: number): Promise<Uint8Array> {
    const out = new Uint8Array(total);
    let at = 0;
    for (const s of sgl) {
      out.set(await this.read(s.iova, s.length), at);
      at += s.length;
    }
    return out;
  }

  /** Scatter `data` over a scatter-gather list (the copying path). */
  async scatter(sgl: readonly GuestSegment[], data: Uint8Array): Promise<void> {
    let at = 0;
    for (const s of sgl) {
      await this.write(s.iova, data.subarray(at, at + s.length));
      at += s.length;
    }
  }
}

export { DmaError };
