// Block I/O for emulated storage (see src/blockio.c): preadv/pwritev, fallocate and fdatasync on the libuv
// threadpool. Segments that are views of our mmap()s (guest memory) are filled or drained by the kernel directly;
// the mapping stays busy (munmap refuses with EBUSY) until the Promise settles. The fd is borrowed: keep it open
// until every operation on it has settled.
import { addon } from './addon.js';

/** Most segments one call takes (one per guest page of a command is far below it). */
export const BLOCK_IO_MAX_SEGMENTS = 4096;
export const FALLOC_FL_KEEP_SIZE: number = addon.FALLOC_FL_KEEP_SIZE;
export const FALLOC_FL_PUNCH_HOLE: number = addon.FALLOC_FL_PUNCH_HOLE;
export const FALLOC_FL_ZERO_RANGE: number = addon.FALLOC_FL_ZERO_RANGE;

/** preadv at `offset` into `segments`, in order; past end of file reads zeros. Resolves with the byte count. */
export function blockRead(fd: number, offset: bigint, segments: Uint8Array[]): Promise<number> {
  return addon.blockIo(fd, false, offset, segments);
}

/**
 * preadv2(RWF_NOWAIT) on the calling thread: the byte count when all of it came from the page cache, else -1 (the
 * caller then uses blockRead). Never waits for the disk. At most 1024 segments.
 */
export function blockReadNowait(fd: number, offset: bigint, segments: Uint8Array[]): number {
  return addon.blockReadNowait(fd, offset, segments);
}

/** pwritev of `segments` at `offset`, retried through short writes. Resolves with the byte count. */
export function blockWrite(fd: number, offset: bigint, segments: Uint8Array[]): Promise<number> {
  return addon.blockIo(fd, true, offset, segments);
}

/** fallocate(2) (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE to discard). Rejects with the errno Error. */
export async function blockFallocate(
  fd: number,
  mode: number,
  offset: bigint,
  length: bigint,
): Promise<void> {
  await addon.blockFallocate(fd, mode, offset, length);
}

/** fdatasync(2). */
export async function blockSync(fd: number): Promise<void> {
  await addon.blockSync(fd);
}
