// The namespace's backing store: a raw image file. Created sparse (ftruncate) when missing; an existing file keeps
// its contents and gives the namespace its size unless `size` asks for more (the file is then grown, sparse).
// Data moves with preadv/pwritev on the threadpool straight into the segments it is given (mapped guest pages),
// discard punches holes, flush is fdatasync. Every operation is tracked so close() can wait for the threadpool to
// let go of the fd before closing it.
import { closeSync, fstatSync, ftruncateSync, openSync } from 'node:fs';
import {
  blockFallocate,
  blockRead,
  blockReadNowait,
  blockSync,
  blockWrite,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
} from 'vfio-user-native';
import { Errno } from 'vfio-user-protocol';

export interface ImageStats {
  reads: number;
  /** Reads served from the page cache on the event loop (preadv2 RWF_NOWAIT). */
  cachedReads: number;
  writes: number;
  bytesRead: number;
  bytesWritten: number;
  discards: number;
  flushes: number;
}

export class ImageFile {
  readonly size: bigint;
  readonly stats: ImageStats = {
    reads: 0,
    cachedReads: 0,
    writes: 0,
    bytesRead: 0,
    bytesWritten: 0,
    discards: 0,
    flushes: 0,
  };
  private fd: number;
  private inflight = new Set<Promise<unknown>>();
  /** fallocate(PUNCH_HOLE) refused by the file system: discards become zero writes. */
  private noPunch = false;

  constructor(
    readonly path: string,
    size?: bigint,
  ) {
    this.fd = openSync(path, 'a+'); // create if missing, never truncate
    closeSync(this.fd);
    this.fd = openSync(path, 'r+');
    try {
      const have = BigInt(fstatSync(this.fd).size);
      const want = size ?? have;
      if (want <= 0n) throw new Error(`image ${path}: empty and no size given`);
      if (want > have) ftruncateSync(this.fd, Number(want));
      this.size = want;
    } catch (err) {
      closeSync(this.fd);
      throw err;
    }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inflight.add(p);
    const done = () => this.inflight.delete(p);
    p.then(done, done);
    return p;
  }

  private get liveFd(): number {
    if (this.fd < 0) throw Object.assign(new Error('image closed'), { errno: Errno.EBADF, code: 'EBADF' });
    return this.fd;
  }

  read(offset: bigint, segments: Uint8Array[]): Promise<number> {
    this.stats.reads++;
    // Cached data: copy it now (no threadpool round trip); anything that would wait for the disk goes async.
    if (segments.length <= 1024) {
      const n = blockReadNowait(this.liveFd, offset, segments);
      if (n >= 0) {
        this.stats.cachedReads++;
        this.stats.bytesRead += n;
        return Promise.resolve(n);
      }
    }
    return this.track(blockRead(this.liveFd, offset, segments)).then((n) => {
      this.stats.bytesRead += n;
      return n;
    });
  }

  write(offset: bigint, segments: Uint8Array[]): Promise<number> {
    this.stats.writes++;
    return this.track(blockWrite(this.liveFd, offset, segments)).then((n) => {
      this.stats.bytesWritten += n;
      return n;
    });
  }

  /** Deallocate (punch a hole: reads return zeros, the file's blocks are freed). */
  async discard(offset: bigint, length: bigint): Promise<void> {
    this.stats.discards++;
    await this.zero(offset, length, true);
  }

  /** Make [offset, +length) read zeros: a hole when `deallocate` (or ZERO_RANGE fails), else zeroed blocks. */
  async zero(offset: bigint, length: bigint, deallocate: boolean): Promise<void> {
    if (length === 0n) return;
    const fd = this.liveFd;
    if (!this.noPunch) {
      const mode = deallocate
        ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
      try {
        await this.track(blockFallocate(fd, mode, offset, length));
        return;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EOPNOTSUPP') throw err;
        if (!deallocate) return this.zero(offset, length, true);
        this.noPunch = true;
      }
    }
    // No hole punching here: write zeros, 1 MiB at a time.
    const chunk = new Uint8Array(1 << 20);
    for (let at = 0n; at < length; at += BigInt(chunk.length)) {
      const n = length - at < BigInt(chunk.length) ? Number(length - at) : chunk.length;
      await this.track(blockWrite(fd, offset + at, [chunk.subarray(0, n)]));
    }
  }

  flush(): Promise<void> {
    this.stats.flushes++;
    return this.track(blockSync(this.liveFd));
  }

  /** Operations in flight (reads, writes, discards, flushes). */
  get busy(): number {
    return this.inflight.size;
  }

  /** Wait for every operation in flight (they keep the fd busy on the threadpool). */
  async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  /** Close the fd once nothing uses it. */
  async close(): Promise<void> {
    await this.drain();
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
