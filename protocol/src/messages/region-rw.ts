// REGION_READ (9) / REGION_WRITE (10), spec "Region Read/Write":
//   offset u64 @0 | region u32 @8 | count u32 @12 | data @16 (WRITE request and READ reply only)
// The READ reply and the WRITE reply echo offset, region and count. `count` must not exceed the receiver's
// max_data_xfer_size (RW-04). Offsets against the region's size are the server's (use rangeWithin).

import { setU32, setU64, sliceView, u32, u64, viewOf } from '../bytes.js';
import { HEADER_SIZE, type Limits, MsgFlags } from '../constants.js';
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

// ---- In place, for a server's fast path ------------------------------------------------------------------------
// A server may answer small requests straight from its receive buffer: the fields are read where they lie and the
// reply is written into its send buffer, with no objects and no bigint. `msg` is the whole message (header
// included), whose header passed plainCommandOf. Anything unusual (an offset of 2^53 or more) takes the full way.

/** Where the payload's fields lie in a whole REGION_READ/REGION_WRITE message. */
const AT_OFFSET = HEADER_SIZE;
const AT_REGION = HEADER_SIZE + 8;
const AT_COUNT = HEADER_SIZE + 12;

function le32(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}

/** The request's offset as a number, or -1 when it is 2^53 or more. */
export function regionRwOffsetOf(msg: Uint8Array): number {
  const hi = le32(msg, AT_OFFSET + 4);
  return hi >= 0x200000 ? -1 : hi * 0x100000000 + le32(msg, AT_OFFSET);
}

/** The request's region index. */
export function regionRwRegionOf(msg: Uint8Array): number {
  return le32(msg, AT_REGION);
}

/** The request's count (a REGION_WRITE's data follows at HEADER_SIZE + REGION_RW_SIZE). */
export function regionRwCountOf(msg: Uint8Array): number {
  return le32(msg, AT_COUNT);
}

/**
 * The reply to the REGION_READ or REGION_WRITE request `msg` written into `target` (which must hold 32 bytes plus
 * the data): the reply header, the request's offset, region and count echoed, then `data` (a read's bytes;
 * nothing for a write). Returns the reply's length. `data` must have the request's count of bytes.
 */
export function writeRegionRwReply(target: Uint8Array, msg: Uint8Array, data?: Uint8Array): number {
  const size = HEADER_SIZE + REGION_RW_SIZE + (data?.byteLength ?? 0);
  if (size > target.byteLength) throw new RangeError('reply does not fit in target');
  // id and command as in the request, then size, flags (a reply), error 0
  target[0] = msg[0]!;
  target[1] = msg[1]!;
  target[2] = msg[2]!;
  target[3] = msg[3]!;
  target[4] = size;
  target[5] = size >>> 8;
  target[6] = size >>> 16;
  target[7] = size >>> 24;
  target[8] = MsgFlags.TYPE_REPLY;
  for (let i = 9; i < 16; i++) target[i] = 0;
  for (let i = AT_OFFSET; i < AT_COUNT + 4; i++) target[i] = msg[i]!;
  if (data) target.set(data, HEADER_SIZE + REGION_RW_SIZE);
  return size;
}
