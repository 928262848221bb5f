// The access API of the DMA address space (device.ts's DmaAccessor): device models read and write guest memory
// by IOVA. Every access is planned over the regions first (coverage and permission checked before any byte
// moves), then each piece is copied by the region's access kind:
// - `mmap`: a memory copy through the view of the file's mapping (guarded against SIGBUS when the client could
//   shrink the file); one mapped region holding the whole access is served synchronously;
// - `fd`: pread/pwrite on the file;
// - `message`: DMA_READ/DMA_WRITE to the client. Such an access is registered on its region, so an unmap fails it
//   at once (DmaError 'unmapped') instead of waiting for a client that may be waiting for our unmap reply.
// Writes mark the pages dirty when dirty-page logging runs (migration).

import * as native from 'vfio-user-native';
import { Errno, errnoOf, U64_MAX } from 'vfio-user-protocol';
import type { DmaMessageTransport } from './address-space.js';
import type { DirtyPageLogging } from './dirty.js';
import { DmaError } from './errors.js';
import type { FilePiece } from './files.js';
import type { DmaRegion } from './region.js';

/** Largest single access (a Uint8Array length); larger transfers are a device bug. */
const MAX_ACCESS = 2 ** 31;

/** One element of a scatter-gather list. */
export interface DmaSegment {
  iova: bigint;
  length: number;
}

interface Piece {
  region: DmaRegion;
  iova: bigint;
  /** Offset in the caller's buffer. */
  offset: number;
  length: number;
}

/** What the access API needs from the address space: the live regions, the client, dirty logging. */
export interface DmaAccessSource {
  find(iova: bigint): DmaRegion | undefined;
  transport(): DmaMessageTransport | null;
  dirtyLogging(): DirtyPageLogging | undefined;
}

export class DmaAccess {
  constructor(private readonly src: DmaAccessSource) {}

  /** Reads `length` bytes at `iova`. */
  read(iova: bigint, length: number): Promise<Uint8Array> {
    try {
      checkLength(iova, length);
      const out = new Uint8Array(length);
      // Fast path: inside one mapped region, done synchronously.
      if (this.copyFast(iova, out, false)) return Promise.resolve(out);
      return this.execute(this.plan(iova, length, false, 0), out, false).then(() => out);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Writes `data` at `iova`. */
  write(iova: bigint, data: Uint8Array): Promise<void> {
    try {
      checkLength(iova, data.length);
      if (this.copyFast(iova, data, true)) return Promise.resolve();
      return this.execute(this.plan(iova, data.length, true, 0), data, true);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Gathers a scatter-gather list into one buffer (checked entirely before any byte moves). */
  async readv(sgl: readonly DmaSegment[]): Promise<Uint8Array> {
    let total = 0;
    for (const s of sgl) {
      checkLength(s.iova, s.length);
      total += s.length;
    }
    checkLength(0n, total);
    const out = new Uint8Array(total);
    const plans = this.planAll(sgl, false);
    for (const plan of plans) await this.execute(plan, out, false);
    return out;
  }

  /** Scatters `data` over a scatter-gather list whose lengths must add up to data.length. */
  async writev(sgl: readonly DmaSegment[], data: Uint8Array): Promise<void> {
    let total = 0;
    for (const s of sgl) {
      checkLength(s.iova, s.length);
      total += s.length;
    }
    if (total !== data.length)
      throw new DmaError('range', sgl[0]?.iova ?? 0n, 'scatter-gather list length differs from the data');
    const plans = this.planAll(sgl, true);
    for (const plan of plans) await this.execute(plan, data, true);
  }

  /**
   * Zero-copy views of guest memory: the bytes of [iova, iova+length) as one Uint8Array per contiguous piece (a
   * scatter-gather list of views into this process's mapping of the guest's memory file; libvfio-user's
   * vfu_addr_to_sgl + vfu_sgl_get). Coverage and permission are checked as for read/write (DmaError).
   *
   * Returns undefined (use read/write, which copy) unless every piece lies in a mapped file that cannot shrink
   * under us: a memfd sealed with F_SEAL_SHRINK, as QEMU's memory-backend-memfd seals guest RAM. A view of any
   * other file could fault (SIGBUS) if the client truncated it; fd-less regions have no view at all.
   *
   * A view is valid until its region is unmapped: the device must stop using it before its `dmaUnmapped` hook
   * (or its quiesce) returns, after which the views are detached (length 0), never dangling. Views asked for with
   * `write` access mark the range dirty for migration when they are created.
   */
  views(iova: bigint, length: number, access: 'read' | 'write'): Uint8Array[] | undefined {
    checkLength(iova, length);
    const isWrite = access === 'write';
    const pieces = this.plan(iova, length, isWrite, 0);
    const out: Uint8Array[] = [];
    for (const p of pieces) {
      const r = p.region;
      if (r.access !== 'mmap' || !r.file || (r.file.seals & native.F_SEAL_SHRINK) === 0) return undefined;
      let rel = p.iova - r.iova;
      let done = 0;
      for (const piece of r.pieces) {
        if (done >= p.length) break;
        const plen = BigInt(piece.length);
        if (rel >= plen) {
          rel -= plen;
          continue;
        }
        const at = piece.viewOffset + Number(rel);
        const n = Math.min(p.length - done, piece.length - Number(rel));
        out.push(piece.view.bytes.subarray(at, at + n));
        done += n;
        rel = 0n;
      }
      if (done < p.length) return undefined;
    }
    if (isWrite) for (const p of pieces) this.src.dirtyLogging()?.markDirty(p.iova, p.length);
    return out;
  }

  private planAll(sgl: readonly DmaSegment[], isWrite: boolean): Piece[][] {
    let off = 0;
    return sgl.map((s) => {
      const plan = this.plan(s.iova, s.length, isWrite, off);
      off += s.length;
      return plan;
    });
  }

  /** Moves `buf` synchronously when one mapped region with the right permission holds it all. */
  private copyFast(iova: bigint, buf: Uint8Array, isWrite: boolean): boolean {
    if (buf.length === 0) return true;
    const r = this.src.find(iova);
    if (r?.access !== 'mmap' || iova + BigInt(buf.length) > r.end || !(isWrite ? r.writable : r.readable)) {
      return false;
    }
    this.copyMapped(r, iova, buf, 0, buf.length, isWrite);
    if (isWrite) this.src.dirtyLogging()?.markDirty(iova, buf.length);
    return true;
  }

  /** Splits [iova, iova+length) over the regions, checking coverage and permission before anything moves. */
  private plan(iova: bigint, length: number, isWrite: boolean, bufOffset: number): Piece[] {
    const pieces: Piece[] = [];
    let pos = iova;
    let off = 0;
    while (off < length) {
      const r = this.src.find(pos);
      if (!r)
        throw new DmaError('unmapped', pos, `${isWrite ? 'write' : 'read'} of ${length} bytes: not mapped`);
      if (isWrite ? !r.writable : !r.readable) {
        throw new DmaError('permission', pos, `${isWrite ? 'write to' : 'read from'} ${r}`);
      }
      const avail = r.end - pos;
      const n = avail < BigInt(length - off) ? Number(avail) : length - off;
      pieces.push({ region: r, iova: pos, offset: bufOffset + off, length: n });
      pos += BigInt(n);
      off += n;
    }
    return pieces;
  }

  private async execute(pieces: Piece[], buf: Uint8Array, isWrite: boolean): Promise<void> {
    for (const p of pieces) {
      const r = p.region;
      if (r.removed) throw new DmaError('unmapped', p.iova, 'region unmapped during the access');
      switch (r.access) {
        case 'mmap':
          this.copyMapped(r, p.iova, buf, p.offset, p.length, isWrite);
          break;
        case 'fd':
          this.copyFd(r, p.iova, buf, p.offset, p.length, isWrite);
          break;
        case 'message':
          await this.copyMessage(r, p.iova, buf.subarray(p.offset, p.offset + p.length), isWrite);
          break;
      }
      if (isWrite) this.src.dirtyLogging()?.markDirty(p.iova, p.length);
    }
  }

  private copyMapped(
    r: DmaRegion,
    iova: bigint,
    buf: Uint8Array,
    off: number,
    length: number,
    isWrite: boolean,
  ): void {
    // Region-relative position, then the file piece (window) it falls in, mapped on first touch.
    let rel = iova - r.iova;
    const guarded = r.file!.canShrink;
    let done = 0;
    while (done < length) {
      let piece: FilePiece;
      try {
        piece = r.pieceAt(rel);
      } catch (err) {
        throw new DmaError(
          'io',
          iova + BigInt(done),
          `mapping a window failed: ${(err as Error).message}`,
          errnoOf(err),
        );
      }
      const inPiece = Number(r.fileOffset + rel - piece.fileOffset);
      const at = piece.viewOffset + inPiece;
      const n = Math.min(length - done, piece.length - inPiece);
      if (n <= 0) throw new DmaError('io', iova + BigInt(done), 'mapping shorter than its region');
      const bytes = piece.view.bytes;
      if (guarded) {
        // The client can truncate this file under the mapping (files.ts): a SIGBUS becomes an EFAULT.
        const ok = isWrite
          ? native.guardedCopy(bytes, at, buf, off + done, n)
          : native.guardedCopy(buf, off + done, bytes, at, n);
        if (!ok) {
          throw new DmaError(
            'io',
            iova + BigInt(done),
            `${isWrite ? 'write' : 'read'} of ${n} bytes: the client shrank the file behind ${r}`,
            Errno.EFAULT,
          );
        }
      } else if (isWrite) bytes.set(buf.subarray(off + done, off + done + n), at);
      else buf.set(bytes.subarray(at, at + n), off + done);
      done += n;
      rel += BigInt(n);
    }
  }

  private copyFd(
    r: DmaRegion,
    iova: bigint,
    buf: Uint8Array,
    off: number,
    length: number,
    isWrite: boolean,
  ): void {
    const fd = r.file!.fd;
    let fileOff = r.fileOffset + (iova - r.iova);
    let done = 0;
    while (done < length) {
      const chunk = buf.subarray(off + done, off + length);
      let n: number;
      try {
        n = isWrite ? native.pwrite(fd, chunk, fileOff) : native.pread(fd, chunk, fileOff);
      } catch (err) {
        throw new DmaError(
          'io',
          iova + BigInt(done),
          `${isWrite ? 'pwrite' : 'pread'} failed: ${(err as Error).message}`,
          errnoOf(err),
        );
      }
      if (n <= 0) {
        // The client shrank the file below the region (it was long enough at DMA_MAP): the memory is gone.
        throw new DmaError(
          'io',
          iova + BigInt(done),
          `${isWrite ? 'pwrite' : 'pread'} hit end of file`,
          Errno.EFAULT,
        );
      }
      done += n;
      fileOff += BigInt(n);
    }
  }

  private copyMessage(r: DmaRegion, iova: bigint, chunk: Uint8Array, isWrite: boolean): Promise<void> {
    const t = this.src.transport();
    if (!t)
      return Promise.reject(new DmaError('io', iova, 'no client to reach fd-less memory', Errno.ENOTCONN));
    return new Promise<void>((resolve, reject) => {
      const abort = (err: Error) => reject(err);
      r.inflight ??= new Set();
      r.inflight.add(abort);
      const op = isWrite ? t.write(iova, chunk) : t.read(iova, chunk.length);
      op.then(
        (data) => {
          if (!r.inflight?.delete(abort)) return; // failed by an unmap already
          if (!isWrite) {
            const d = data as Uint8Array;
            if (d.length !== chunk.length) {
              reject(
                new DmaError(
                  'io',
                  iova,
                  `DMA_READ returned ${d.length} of ${chunk.length} bytes`,
                  Errno.EPROTO,
                ),
              );
              return;
            }
            chunk.set(d);
          }
          resolve();
        },
        (err: unknown) => {
          if (!r.inflight?.delete(abort)) return;
          reject(
            err instanceof DmaError
              ? err
              : new DmaError('io', iova, (err as Error)?.message ?? String(err), errnoOf(err)),
          );
        },
      );
    });
  }
}

function checkLength(iova: bigint, length: number): void {
  if (!Number.isInteger(length) || length < 0 || length > MAX_ACCESS) {
    throw new DmaError('range', iova, `bad access length ${length}`);
  }
  if (iova < 0n || iova + BigInt(length) > U64_MAX + 1n)
    throw new DmaError('range', iova, 'access wraps past 2^64');
}
