// REGION_WRITE_MULTI (15), spec "Region Write Multiple": wr_cnt u64 @0, then wr_cnt entries of 24 bytes:
//   offset u64 @0 | region u32 @8 | count u32 @12 (<= 8) | data[8] @16
// The reply is wr_cnt u64 (writes completed). QEMU sends it only to a server that offered write_multiple, and
// always with NO_REPLY.

import { alloc, putU32, putU64, sliceView, u32, u64, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { checkFds, checkStrayFds, expectAtLeast, expectLength, NO_FDS } from './common.js';

/** Size of the REGION_WRITE_MULTI payload header (the entry count). */
export const WRITE_MULTI_HEADER_SIZE = 8;
/** Size of one REGION_WRITE_MULTI entry. */
export const WRITE_MULTI_ENTRY_SIZE = 24;
/** The data field is 8 bytes, so no entry writes more. */
export const WRITE_MULTI_MAX_DATA = 8;

/** One write; count is data.length (<= 8). */
export interface RegionWriteMultiEntry {
  offset: bigint;
  region: number;
  data: Uint8Array;
}
/** The payload of a REGION_WRITE_MULTI request, decoded. */
export interface RegionWriteMultiRequest {
  writes: RegionWriteMultiEntry[];
}
/** The payload of a REGION_WRITE_MULTI reply, decoded. */
export interface RegionWriteMultiReply {
  /** The number of writes completed. */
  count: number;
}

/** Encode the payload of a REGION_WRITE_MULTI request (the bytes after the header). */
export function encodeRegionWriteMultiRequest(v: RegionWriteMultiRequest): Uint8Array {
  const { bytes, dv } = alloc(WRITE_MULTI_HEADER_SIZE + WRITE_MULTI_ENTRY_SIZE * v.writes.length);
  putU64(dv, 0, BigInt(v.writes.length), 'RegionWriteMultiRequest.wr_cnt');
  v.writes.forEach((w, i) => {
    if (w.data.byteLength > WRITE_MULTI_MAX_DATA)
      throw new RangeError('RegionWriteMultiEntry.data exceeds 8 bytes');
    const o = WRITE_MULTI_HEADER_SIZE + WRITE_MULTI_ENTRY_SIZE * i;
    putU64(dv, o, w.offset, 'RegionWriteMultiEntry.offset');
    putU32(dv, o + 8, w.region, 'RegionWriteMultiEntry.region');
    putU32(dv, o + 12, w.data.byteLength, 'RegionWriteMultiEntry.count');
    bytes.set(w.data, o + 16);
  });
  return bytes;
}

/**
 * Payload exactly 8 + 24 * wr_cnt (WMU-05; wr_cnt 0 is fine, WMU-07), every count <= 8 (WMU-04). The unused
 * tail of each 8-byte data field is ignored.
 */
export function decodeRegionWriteMultiRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionWriteMultiRequest {
  checkStrayFds('REGION_WRITE_MULTI request', fdCount, limits);
  expectAtLeast(payload, WRITE_MULTI_HEADER_SIZE, 'REGION_WRITE_MULTI request');
  const dv = viewOf(payload);
  const n = u64(dv, 0);
  const expected = BigInt(WRITE_MULTI_HEADER_SIZE) + BigInt(WRITE_MULTI_ENTRY_SIZE) * n;
  if (BigInt(payload.byteLength) !== expected) {
    fail(
      'BAD_PAYLOAD_SIZE',
      `REGION_WRITE_MULTI wr_cnt ${n} needs ${expected} bytes, got ${payload.byteLength}`,
    );
  }
  const writes: RegionWriteMultiEntry[] = [];
  for (let i = 0; i < Number(n); i++) {
    const o = WRITE_MULTI_HEADER_SIZE + WRITE_MULTI_ENTRY_SIZE * i;
    const count = u32(dv, o + 12);
    if (count > WRITE_MULTI_MAX_DATA) fail('BAD_VALUE', `REGION_WRITE_MULTI entry ${i} count ${count} > 8`);
    writes.push({ offset: u64(dv, o), region: u32(dv, o + 8), data: sliceView(payload, o + 16, count) });
  }
  return { writes };
}

/** Encode the payload of a REGION_WRITE_MULTI reply (the bytes after the header). */
export function encodeRegionWriteMultiReply(v: RegionWriteMultiReply): Uint8Array {
  const { bytes, dv } = alloc(WRITE_MULTI_HEADER_SIZE);
  if (!Number.isSafeInteger(v.count) || v.count < 0) throw new RangeError('RegionWriteMultiReply.count');
  putU64(dv, 0, BigInt(v.count), 'RegionWriteMultiReply.count');
  return bytes;
}

/**
 * Decode and validate the payload of a REGION_WRITE_MULTI reply; a malformed one throws ProtocolError with its
 * errno.
 */
export function decodeRegionWriteMultiReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionWriteMultiReply {
  checkFds('REGION_WRITE_MULTI reply', NO_FDS, fdCount, limits);
  expectLength(payload, WRITE_MULTI_HEADER_SIZE, 'REGION_WRITE_MULTI reply');
  const n = u64(viewOf(payload), 0);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) fail('BAD_VALUE', `REGION_WRITE_MULTI reply count ${n} is absurd`);
  return { count: Number(n) };
}
