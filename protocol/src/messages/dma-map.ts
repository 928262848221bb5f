// DMA_MAP (2), spec "DMA Map": argsz u32 @0 | flags u32 @4 | offset u64 @8 | address u64 @16 | size u64 @24.
// 0 or 1 fd (the memory to mmap at `offset`); no fd means the server reaches it with DMA_READ/WRITE.
// The reply has no payload.

import { alloc, getU32, getU64, getU64Memo, newU64Memo, putU32, putU64 } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { rangeOverflows } from '../ranges.js';
import {
  checkFds,
  checkFlags,
  EMPTY,
  type EmptyReply,
  expectArgszAtLeast,
  expectEmpty,
  expectLength,
  type FdRule,
} from './common.js';

/** DMA_MAP flag bits. libvfio-user's own bits 2 (MMAP) and 3 (FILE_IO) are not in the spec and are refused. */
export const DmaMapFlags = { READ: 0x1, WRITE: 0x2 } as const;

/**
 * The last size a DMA_MAP or DMA_UNMAP request decoded to (QEMU's vIOMMU path sends 4 KiB in nearly all of them):
 * its bigint is reused, see getU64Memo.
 */
export const dmaSizeMemo = newU64Memo();

/** Size of the DMA_MAP request payload. */
export const DMA_MAP_SIZE = 32;
/** DMA_MAP carries 0 fds (memory reached through DMA_READ/DMA_WRITE) or 1 (the memory to mmap). */
export const DMA_MAP_FD_RULE: FdRule = Object.freeze({ min: 0, max: 1 });

/** The payload of a DMA_MAP request, decoded. */
export interface DmaMapRequest {
  /** The structure size; 32 when omitted on encode. Not a reply budget here (spec). */
  argsz?: number;
  flags: number;
  /** File offset into the passed fd (0 without one). Not the IOVA. */
  offset: bigint;
  /** The IOVA. */
  address: bigint;
  size: bigint;
}
/** A DMA_MAP reply (it has no payload). */
export type DmaMapReply = EmptyReply;

/** Encode the payload of a DMA_MAP request (the bytes after the header). */
export function encodeDmaMapRequest(v: DmaMapRequest): Uint8Array {
  const { bytes, dv } = alloc(DMA_MAP_SIZE);
  putU32(dv, 0, v.argsz ?? DMA_MAP_SIZE, 'DmaMapRequest.argsz');
  putU32(dv, 4, v.flags, 'DmaMapRequest.flags');
  putU64(dv, 8, v.offset, 'DmaMapRequest.offset');
  putU64(dv, 16, v.address, 'DmaMapRequest.address');
  putU64(dv, 24, v.size, 'DmaMapRequest.size');
  return bytes;
}

/**
 * Structural checks (the address-space checks such as EEXIST on overlap belong to the server):
 * payload exactly 32 (MAP-04), argsz >= 32 (MAP-05; larger is accepted, MAP-06), only READ/WRITE
 * (MAP-07, MAP-09), at least one of them (MAP-08, as the kernel), size > 0 (MAP-16), no 2^64 wrap of address+size
 * or offset+size (MAP-17), at most one fd.
 */
export function decodeDmaMapRequest(payload: Uint8Array, fdCount?: number, limits?: Limits): DmaMapRequest {
  checkFds('DMA_MAP request', DMA_MAP_FD_RULE, fdCount, limits);
  expectLength(payload, DMA_MAP_SIZE, 'DMA_MAP request');
  // Byte loads, no DataView: this runs for every page QEMU maps under a vIOMMU.
  const v: DmaMapRequest = {
    argsz: getU32(payload, 0),
    flags: getU32(payload, 4),
    offset: getU64(payload, 8),
    address: getU64(payload, 16),
    size: getU64Memo(payload, 24, dmaSizeMemo),
  };
  expectArgszAtLeast(v.argsz!, DMA_MAP_SIZE, 'DMA_MAP');
  checkFlags(v.flags, DmaMapFlags.READ | DmaMapFlags.WRITE, 'DMA_MAP');
  if ((v.flags & (DmaMapFlags.READ | DmaMapFlags.WRITE)) === 0)
    fail('BAD_FLAGS', 'DMA_MAP with neither READ nor WRITE');
  if (v.size === 0n) fail('BAD_RANGE', 'DMA_MAP of size 0');
  // All three below 2^63 (high words below 2^31): no sum of two can reach 2^64, no bigint sums needed.
  const hiBit = (getU32(payload, 12) | getU32(payload, 20) | getU32(payload, 28)) & 0x80000000;
  if (hiBit === 0) return v;
  if (rangeOverflows(v.address, v.size)) fail('BAD_RANGE', 'DMA_MAP address + size wraps past 2^64');
  if (rangeOverflows(v.offset, v.size)) fail('BAD_RANGE', 'DMA_MAP offset + size wraps past 2^64');
  return v;
}

/** Encode the payload of a DMA_MAP reply (the bytes after the header). */
export function encodeDmaMapReply(_v?: DmaMapReply): Uint8Array {
  return EMPTY;
}

/** Decode and validate the payload of a DMA_MAP reply; a malformed one throws ProtocolError with its errno. */
export function decodeDmaMapReply(payload: Uint8Array, fdCount?: number, limits?: Limits): DmaMapReply {
  checkFds('DMA_MAP reply', { min: 0, max: 0 }, fdCount, limits);
  return expectEmpty(payload, 'DMA_MAP reply');
}
