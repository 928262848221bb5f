// REGION_READ (9) / REGION_WRITE (10), spec "Region Read/Write":
//   offset u64 @0 | region u32 @8 | count u32 @12 | data @16 (WRITE request and READ reply only)
// The READ reply and the WRITE reply echo offset, region and count. `count` must not exceed the receiver's
// max_data_xfer_size (RW-04). Offsets against the region's size are the server's (use rangeWithin).

import { setU32, setU64, sliceView, u32, u64, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { checkFds, checkStrayFds, checkXfer, expectAtLeast, expectLength, NO_FDS } from './common.js';

/** Size of the REGION_READ/REGION_WRITE payload before the data (offset, region, count). */
export const REGION_RW_SIZE = 16;

/** The payload of a REGION_READ request, decoded. */
export interface RegionReadRequest {
  offset: bigint;
  region: number;
  count: number;
}
/** count is data.length. */
export interface RegionReadReply {
  offset: bigint;
  region: number;
  data: Uint8Array;
}
/** count is data.length. */
export interface RegionWriteRequest {
  offset: bigint;
  region: number;
  data: Uint8Array;
}
/** The payload of a REGION_WRITE reply, decoded. */
export interface RegionWriteReply {
  offset: bigint;
  region: number;
  count: number;
}

function encodeRw(
  offset: bigint,
  region: number,
  count: number,
  data: Uint8Array | undefined,
  what: string,
): Uint8Array {
  const bytes = new Uint8Array(REGION_RW_SIZE + (data?.byteLength ?? 0));
  setU64(bytes, 0, offset, `${what}.offset`);
  setU32(bytes, 8, region, `${what}.region`);
  setU32(bytes, 12, count, `${what}.count`);
  if (data) bytes.set(data, REGION_RW_SIZE);
  return bytes;
}

function head(payload: Uint8Array): { offset: bigint; region: number; count: number } {
  const dv = viewOf(payload);
  return { offset: u64(dv, 0), region: u32(dv, 8), count: u32(dv, 12) };
}

/** Encode the payload of a REGION_READ request (the bytes after the header). */
export function encodeRegionReadRequest(v: RegionReadRequest): Uint8Array {
  return encodeRw(v.offset, v.region, v.count, undefined, 'RegionReadRequest');
}

/** Payload exactly 16 (RW-03); count <= max_data_xfer_size (RW-04). */
export function decodeRegionReadRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionReadRequest {
  checkStrayFds('REGION_READ request', fdCount, limits);
  expectLength(payload, REGION_RW_SIZE, 'REGION_READ request');
  const v = head(payload);
  checkXfer('REGION_READ count', v.count, limits);
  return v;
}

/** Encode the payload of a REGION_READ reply (the bytes after the header). */
export function encodeRegionReadReply(v: RegionReadReply): Uint8Array {
  return encodeRw(v.offset, v.region, v.data.byteLength, v.data, 'RegionReadReply');
}

/**
 * Payload exactly 16 + count. libvfio-user answers a count-0 read with a header-only reply (RW-12); that decodes
 * as an empty read (offset 0, region 0, no data) so the caller's "count matches the request" check still works.
 */
export function decodeRegionReadReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionReadReply {
  checkFds('REGION_READ reply', NO_FDS, fdCount, limits);
  if (payload.byteLength === 0) return { offset: 0n, region: 0, data: new Uint8Array(0) };
  expectAtLeast(payload, REGION_RW_SIZE, 'REGION_READ reply');
  const h = head(payload);
  checkXfer('REGION_READ reply count', h.count, limits);
  expectLength(payload, REGION_RW_SIZE + h.count, 'REGION_READ reply');
  return { offset: h.offset, region: h.region, data: sliceView(payload, REGION_RW_SIZE, h.count) };
}

/** Encode the payload of a REGION_WRITE request (the bytes after the header). */
export function encodeRegionWriteRequest(v: RegionWriteRequest): Uint8Array {
  return encodeRw(v.offset, v.region, v.data.byteLength, v.data, 'RegionWriteRequest');
}

/** Payload >= 16, count <= max_data_xfer_size (RW-04), and exactly count data bytes (RW-06/07). */
export function decodeRegionWriteRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionWriteRequest {
  checkStrayFds('REGION_WRITE request', fdCount, limits);
  expectAtLeast(payload, REGION_RW_SIZE, 'REGION_WRITE request');
  const h = head(payload);
  checkXfer('REGION_WRITE count', h.count, limits);
  if (payload.byteLength !== REGION_RW_SIZE + h.count) {
    fail(
      'BAD_PAYLOAD_SIZE',
      `REGION_WRITE count ${h.count} but ${payload.byteLength - REGION_RW_SIZE} data bytes`,
    );
  }
  return { offset: h.offset, region: h.region, data: sliceView(payload, REGION_RW_SIZE, h.count) };
}

/** Encode the payload of a REGION_WRITE reply (the bytes after the header). */
export function encodeRegionWriteReply(v: RegionWriteReply): Uint8Array {
  return encodeRw(v.offset, v.region, v.count, undefined, 'RegionWriteReply');
}

/** The 16-byte echo (QEMU's buffer for a non-posted write reply is the request size). */
export function decodeRegionWriteReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionWriteReply {
  checkFds('REGION_WRITE reply', NO_FDS, fdCount, limits);
  expectLength(payload, REGION_RW_SIZE, 'REGION_WRITE reply');
  return head(payload);
}
