// DMA_UNMAP (3), spec "DMA Unmap": argsz u32 @0 | flags u32 @4 | address u64 @8 | size u64 @16, and with the
// legacy GET_DIRTY_BITMAP flag a bitmap header {pgsize u64, size u64} @24 (its data follows in the reply only).
// The reply echoes the request (QEMU also accepts a header-only reply, which decodes to `{}`).

import {
  alloc,
  getU32,
  getU64,
  getU64Memo,
  putU32,
  putU64,
  setU32,
  setU64,
  sliceView,
  u32,
  u64,
  viewOf,
} from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { rangeOverflows } from '../ranges.js';
import {
  checkFds,
  checkFlags,
  checkStrayFds,
  type EmptyReply,
  expectArgszAtLeast,
  expectAtLeast,
  expectLength,
  maxXfer,
  NO_FDS,
} from './common.js';
import { dmaSizeMemo } from './dma-map.js';

/** GET_DIRTY_BITMAP is legacy (dropped from the spec, never sent by QEMU); ALL unmaps everything. */
export const DmaUnmapFlags = { GET_DIRTY_BITMAP: 0x1, ALL: 0x2 } as const;

/** Size of the DMA_UNMAP payload without the bitmap header. */
export const DMA_UNMAP_SIZE = 24;
/** Size of DMA_UNMAP's dirty-bitmap header (page size, bitmap size). */
export const DMA_UNMAP_BITMAP_SIZE = 16;

/** The legacy dirty-bitmap header of DMA_UNMAP with GET_DIRTY_BITMAP: page size and bitmap size. */
export interface DmaUnmapBitmap {
  pgsize: bigint;
  /** Size of the bitmap data in bytes. */
  size: bigint;
}

/** The payload of a DMA_UNMAP request, decoded. */
export interface DmaUnmapRequest {
  /** The reply budget; 24 (or 40 + bitmap size with GET_DIRTY_BITMAP) when omitted on encode. */
  argsz?: number;
  flags: number;
  address: bigint;
  size: bigint;
  /** Present iff flags has GET_DIRTY_BITMAP. */
  bitmap?: DmaUnmapBitmap;
}

/** The DMA_UNMAP reply that echoes the request (argsz, flags, address, size, and the bitmap header if asked). */
export interface DmaUnmapEcho {
  argsz: number;
  flags: number;
  address: bigint;
  size: bigint;
  /** With GET_DIRTY_BITMAP: the bitmap header and its data (data.length === size). */
  bitmap?: DmaUnmapBitmap & { data: Uint8Array };
}
/** The echo, or `{}` for a header-only reply (QEMU accepts both; use `'address' in reply` to tell). */
export type DmaUnmapReply = DmaUnmapEcho | EmptyReply;

function defaultArgsz(v: { flags: number; bitmap?: DmaUnmapBitmap }): number {
  return v.bitmap ? DMA_UNMAP_SIZE + DMA_UNMAP_BITMAP_SIZE + Number(v.bitmap.size) : DMA_UNMAP_SIZE;
}

/** Encode the payload of a DMA_UNMAP request (the bytes after the header). */
export function encodeDmaUnmapRequest(v: DmaUnmapRequest): Uint8Array {
  const { bytes, dv } = alloc(DMA_UNMAP_SIZE + (v.bitmap ? DMA_UNMAP_BITMAP_SIZE : 0));
  putU32(dv, 0, v.argsz ?? defaultArgsz(v), 'DmaUnmapRequest.argsz');
  putU32(dv, 4, v.flags, 'DmaUnmapRequest.flags');
  putU64(dv, 8, v.address, 'DmaUnmapRequest.address');
  putU64(dv, 16, v.size, 'DmaUnmapRequest.size');
  if (v.bitmap) {
    putU64(dv, 24, v.bitmap.pgsize, 'DmaUnmapRequest.bitmap.pgsize');
    putU64(dv, 32, v.bitmap.size, 'DmaUnmapRequest.bitmap.size');
  }
  return bytes;
}

/**
 * Structural checks, following libvfio-user's is_valid_unmap and the kernel's type1 rules:
 * payload >= 24 (UNM-02) and exactly 24, or 40 with GET_DIRTY_BITMAP; flags exactly one of 0, GET_DIRTY_BITMAP,
 * ALL (UNM-05, UNM-13); ALL with address = size = 0 (UNM-12); 24 <= argsz <= max_data_xfer_size (UNM-03/04);
 * with a bitmap, argsz >= 40 + bitmap size (UNM-16); without ALL, size > 0 and no 2^64 wrap (kernel).
 * Whether the range matches mappings is the server's business (UNM-06..10).
 */
export function decodeDmaUnmapRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DmaUnmapRequest {
  checkStrayFds('DMA_UNMAP request', fdCount, limits);
  expectAtLeast(payload, DMA_UNMAP_SIZE, 'DMA_UNMAP request');
  // Byte loads, no DataView: this runs for every page QEMU unmaps under a vIOMMU.
  const v: DmaUnmapRequest = {
    argsz: getU32(payload, 0),
    flags: getU32(payload, 4),
    address: getU64(payload, 8),
    size: getU64Memo(payload, 16, dmaSizeMemo),
  };
  checkFlags(v.flags, DmaUnmapFlags.GET_DIRTY_BITMAP | DmaUnmapFlags.ALL, 'DMA_UNMAP');
  if (v.flags === (DmaUnmapFlags.GET_DIRTY_BITMAP | DmaUnmapFlags.ALL)) {
    fail('BAD_FLAGS', 'DMA_UNMAP with both ALL and GET_DIRTY_BITMAP');
  }
  let minArgsz = DMA_UNMAP_SIZE;
  if (v.flags & DmaUnmapFlags.GET_DIRTY_BITMAP) {
    expectLength(payload, DMA_UNMAP_SIZE + DMA_UNMAP_BITMAP_SIZE, 'DMA_UNMAP request with GET_DIRTY_BITMAP');
    v.bitmap = { pgsize: getU64(payload, 24), size: getU64(payload, 32) };
    minArgsz = Number(BigInt(DMA_UNMAP_SIZE + DMA_UNMAP_BITMAP_SIZE) + v.bitmap.size);
  } else {
    expectLength(payload, DMA_UNMAP_SIZE, 'DMA_UNMAP request');
  }
  expectArgszAtLeast(v.argsz!, minArgsz, 'DMA_UNMAP');
  const max = maxXfer(limits);
  if (v.argsz! > max) fail('BAD_ARGSZ', `DMA_UNMAP argsz ${v.argsz} exceeds max_data_xfer_size ${max}`);
  if (v.flags & DmaUnmapFlags.ALL) {
    if (v.address !== 0n || v.size !== 0n) fail('BAD_RANGE', 'DMA_UNMAP ALL needs address = size = 0');
  } else {
    if (v.size === 0n) fail('BAD_RANGE', 'DMA_UNMAP of size 0');
    // Both below 2^63 (high words below 2^31): the sum cannot reach 2^64, no bigint sum needed.
    const small = getU32(payload, 12) < 0x80000000 && getU32(payload, 20) < 0x80000000;
    if (!small && rangeOverflows(v.address, v.size))
      fail('BAD_RANGE', 'DMA_UNMAP address + size wraps past 2^64');
  }
  return v;
}

/** Encode the payload of a DMA_UNMAP reply (the bytes after the header). */
export function encodeDmaUnmapReply(v: DmaUnmapReply): Uint8Array {
  if (!('address' in v)) return new Uint8Array(0);
  const bm = v.bitmap;
  const bytes = new Uint8Array(DMA_UNMAP_SIZE + (bm ? DMA_UNMAP_BITMAP_SIZE + bm.data.byteLength : 0));
  setU32(bytes, 0, v.argsz, 'DmaUnmapReply.argsz');
  setU32(bytes, 4, v.flags, 'DmaUnmapReply.flags');
  setU64(bytes, 8, v.address, 'DmaUnmapReply.address');
  setU64(bytes, 16, v.size, 'DmaUnmapReply.size');
  if (bm) {
    if (BigInt(bm.data.byteLength) !== bm.size)
      throw new RangeError('DmaUnmapReply.bitmap.data length !== size');
    setU64(bytes, 24, bm.pgsize, 'DmaUnmapReply.bitmap.pgsize');
    setU64(bytes, 32, bm.size, 'DmaUnmapReply.bitmap.size');
    bytes.set(bm.data, 40);
  }
  return bytes;
}

/**
 * The echo reply of a request without GET_DIRTY_BITMAP, straight from the request's bytes (argsz, flags, address
 * and size, as received): what dmaUnmapEcho + encodeDmaUnmapReply give, without decoding and re-encoding the
 * bigints, for the unmap QEMU sends per page under a vIOMMU. `requestPayload` passed decodeDmaUnmapRequest.
 */
export function encodeDmaUnmapEchoOf(requestPayload: Uint8Array): Uint8Array {
  const out = new Uint8Array(DMA_UNMAP_SIZE);
  for (let i = 0; i < DMA_UNMAP_SIZE; i++) out[i] = requestPayload[i]!;
  return out;
}

/** The echo of a request: the server's normal reply (UNM-01). */
export function dmaUnmapEcho(req: DmaUnmapRequest, bitmapData?: Uint8Array): DmaUnmapEcho {
  const echo: DmaUnmapEcho = {
    argsz: req.argsz ?? defaultArgsz(req),
    flags: req.flags,
    address: req.address,
    size: req.size,
  };
  if (req.bitmap)
    echo.bitmap = { ...req.bitmap, data: bitmapData ?? new Uint8Array(Number(req.bitmap.size)) };
  return echo;
}

/** Decode and validate the payload of a DMA_UNMAP reply; a malformed one throws ProtocolError with its errno. */
export function decodeDmaUnmapReply(payload: Uint8Array, fdCount?: number, limits?: Limits): DmaUnmapReply {
  checkFds('DMA_UNMAP reply', NO_FDS, fdCount, limits);
  if (payload.byteLength === 0) return {};
  expectAtLeast(payload, DMA_UNMAP_SIZE, 'DMA_UNMAP reply');
  const dv = viewOf(payload);
  const v: DmaUnmapEcho = { argsz: u32(dv, 0), flags: u32(dv, 4), address: u64(dv, 8), size: u64(dv, 16) };
  if (v.flags & DmaUnmapFlags.GET_DIRTY_BITMAP) {
    expectAtLeast(payload, DMA_UNMAP_SIZE + DMA_UNMAP_BITMAP_SIZE, 'DMA_UNMAP reply with bitmap');
    const size = u64(dv, 32);
    expectLength(
      payload,
      DMA_UNMAP_SIZE + DMA_UNMAP_BITMAP_SIZE + Number(size),
      'DMA_UNMAP reply with bitmap',
    );
    v.bitmap = { pgsize: u64(dv, 24), size, data: sliceView(payload, 40) };
  } else {
    expectLength(payload, DMA_UNMAP_SIZE, 'DMA_UNMAP reply');
  }
  return v;
}
