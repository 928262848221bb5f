// DEVICE_GET_REGION_IO_FDS (6), spec "Device Get Region IO FDs" (QEMU never sends it; libvfio-user serves it).
// Request: argsz u32 @0 (reply budget) | flags u32 @4 (must be 0) | index u32 @8 | count u32 @12 (must be 0).
// Reply: the same 16 bytes with count = number of sub-regions, then count entries of 40 bytes:
//   offset u64 @0 | size u64 @8 | fd_index u32 @16 | type u32 @20 | flags u32 @24 | padding u32 @28 |
//   datamatch/user_data u64 @32
// Spec quirk: it places entry i at i*((argsz-32)/count), although the reply header is 16 bytes; entries here sit
// at 16 + 40*i, as libvfio-user lays them out. When they don't fit in the budget, the reply is the 16-byte header
// with count = total and argsz = needed, and no fds (IOF-09).

import { alloc, putU32, putU64, u32, u64, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import {
  checkFds,
  checkStrayFds,
  expectArgszAtLeast,
  expectAtLeast,
  expectLength,
  type FdRule,
  maxXfer,
  NO_FDS,
} from './common.js';

/** Sub-region types: 0 ioeventfd, 1 ioregionfd (libvfio-user adds 2, a shadow ioeventfd). */
export const IoFdType = { IOEVENTFD: 0, IOREGIONFD: 1, IOEVENTFD_SHADOW: 2 } as const;

/** Size of the DEVICE_GET_REGION_IO_FDS payload before the sub-region entries. */
export const REGION_IO_FDS_SIZE = 16;
/** Size of one DEVICE_GET_REGION_IO_FDS sub-region entry. */
export const IO_FD_SUB_REGION_SIZE = 40;

/** The payload of a DEVICE_GET_REGION_IO_FDS request, decoded. */
export interface RegionIoFdsRequest {
  /** The reply budget; 16 when omitted on encode. */
  argsz?: number;
  index: number;
}

/** One sub-region of a DEVICE_GET_REGION_IO_FDS reply: its range, the index of its fd, type and flags. */
export interface IoFdSubRegion {
  offset: bigint;
  /** 0 = any access size (an ioregionfd then needs posted writes). */
  size: bigint;
  /** Index into the reply's fds; sub-regions may share one fd. */
  fdIndex: number;
  type: number;
  /** KVM_IOEVENTFD_FLAG_* or KVM_IOREGION_* bits. */
  flags: number;
  /** ioeventfd datamatch, or ioregionfd user_data. */
  datamatch: bigint;
}

/** The payload of a DEVICE_GET_REGION_IO_FDS reply, decoded. */
export interface RegionIoFdsReply {
  argsz: number;
  flags: number;
  index: number;
  /** The total number of sub-regions (also when they did not fit). */
  count: number;
  /** Empty in a truncated reply. */
  subRegions: IoFdSubRegion[];
}

/** Encode the payload of a DEVICE_GET_REGION_IO_FDS request (the bytes after the header). */
export function encodeRegionIoFdsRequest(v: RegionIoFdsRequest): Uint8Array {
  const { bytes, dv } = alloc(REGION_IO_FDS_SIZE);
  putU32(dv, 0, v.argsz ?? REGION_IO_FDS_SIZE, 'RegionIoFdsRequest.argsz');
  putU32(dv, 8, v.index, 'RegionIoFdsRequest.index');
  return bytes;
}

/** Payload exactly 16 (IOF-01), flags 0 (IOF-02), count 0 (IOF-03), 16 <= argsz <= max_data_xfer_size (IOF-06/07). */
export function decodeRegionIoFdsRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionIoFdsRequest {
  checkStrayFds('DEVICE_GET_REGION_IO_FDS request', fdCount, limits);
  expectLength(payload, REGION_IO_FDS_SIZE, 'DEVICE_GET_REGION_IO_FDS request');
  const dv = viewOf(payload);
  const argsz = u32(dv, 0);
  if (u32(dv, 4) !== 0) fail('BAD_FLAGS', 'DEVICE_GET_REGION_IO_FDS request flags must be 0');
  if (u32(dv, 12) !== 0) fail('BAD_VALUE', 'DEVICE_GET_REGION_IO_FDS request count must be 0');
  expectArgszAtLeast(argsz, REGION_IO_FDS_SIZE, 'DEVICE_GET_REGION_IO_FDS');
  const max = maxXfer(limits);
  if (argsz > max)
    fail('BAD_ARGSZ', `DEVICE_GET_REGION_IO_FDS argsz ${argsz} exceeds max_data_xfer_size ${max}`);
  return { argsz, index: u32(dv, 8) };
}

/** Encode the payload of a DEVICE_GET_REGION_IO_FDS reply (the bytes after the header). */
export function encodeRegionIoFdsReply(v: RegionIoFdsReply): Uint8Array {
  const { bytes, dv } = alloc(REGION_IO_FDS_SIZE + IO_FD_SUB_REGION_SIZE * v.subRegions.length);
  putU32(dv, 0, v.argsz, 'RegionIoFdsReply.argsz');
  putU32(dv, 4, v.flags, 'RegionIoFdsReply.flags');
  putU32(dv, 8, v.index, 'RegionIoFdsReply.index');
  putU32(dv, 12, v.count, 'RegionIoFdsReply.count');
  v.subRegions.forEach((s, i) => {
    const o = REGION_IO_FDS_SIZE + IO_FD_SUB_REGION_SIZE * i;
    putU64(dv, o, s.offset, 'IoFdSubRegion.offset');
    putU64(dv, o + 8, s.size, 'IoFdSubRegion.size');
    putU32(dv, o + 16, s.fdIndex, 'IoFdSubRegion.fdIndex');
    putU32(dv, o + 20, s.type, 'IoFdSubRegion.type');
    putU32(dv, o + 24, s.flags, 'IoFdSubRegion.flags');
    putU64(dv, o + 32, s.datamatch, 'IoFdSubRegion.datamatch');
  });
  return bytes;
}

/** The reply for `subRegions` under budget `requestArgsz`: all entries, or the bare header when they don't fit. */
export function regionIoFdsReplyFor(
  index: number,
  subRegions: IoFdSubRegion[],
  requestArgsz: number,
): RegionIoFdsReply {
  const full = REGION_IO_FDS_SIZE + IO_FD_SUB_REGION_SIZE * subRegions.length;
  const fits = requestArgsz >= full;
  return { argsz: full, flags: 0, index, count: subRegions.length, subRegions: fits ? subRegions : [] };
}

/**
 * Encode the DEVICE_GET_REGION_IO_FDS reply for region `index` and its sub-regions, within the request's argsz
 * budget.
 */
export function encodeRegionIoFdsReplyFor(
  index: number,
  subRegions: IoFdSubRegion[],
  requestArgsz: number,
): Uint8Array {
  return encodeRegionIoFdsReply(regionIoFdsReplyFor(index, subRegions, requestArgsz));
}

/** A complete reply with entries carries 1..count fds (shared fds allowed); a truncated or empty one carries none. */
export function regionIoFdsReplyFdRule(v?: RegionIoFdsReply): FdRule {
  if (!v) return { min: 0, max: 253 };
  if (v.subRegions.length === 0) return NO_FDS;
  return { min: 1, max: v.subRegions.length };
}

/**
 * Decode and validate the payload of a DEVICE_GET_REGION_IO_FDS reply; a malformed one throws ProtocolError with
 * its errno.
 */
export function decodeRegionIoFdsReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionIoFdsReply {
  expectAtLeast(payload, REGION_IO_FDS_SIZE, 'DEVICE_GET_REGION_IO_FDS reply');
  const dv = viewOf(payload);
  const v: RegionIoFdsReply = {
    argsz: u32(dv, 0),
    flags: u32(dv, 4),
    index: u32(dv, 8),
    count: u32(dv, 12),
    subRegions: [],
  };
  const full = REGION_IO_FDS_SIZE + IO_FD_SUB_REGION_SIZE * v.count;
  if (payload.byteLength === REGION_IO_FDS_SIZE && v.count > 0) {
    // Truncated: it must say how much room the full answer needs.
    if (v.argsz < full) fail('BAD_ARGSZ', `truncated io fds reply announces argsz ${v.argsz} < ${full}`);
  } else {
    expectLength(payload, full, 'DEVICE_GET_REGION_IO_FDS reply');
    if (v.argsz < full) fail('BAD_ARGSZ', `io fds reply argsz ${v.argsz} is below its ${full} bytes`);
    for (let i = 0; i < v.count; i++) {
      const o = REGION_IO_FDS_SIZE + IO_FD_SUB_REGION_SIZE * i;
      v.subRegions.push({
        offset: u64(dv, o),
        size: u64(dv, o + 8),
        fdIndex: u32(dv, o + 16),
        type: u32(dv, o + 20),
        flags: u32(dv, o + 24),
        datamatch: u64(dv, o + 32),
      });
    }
  }
  checkFds('DEVICE_GET_REGION_IO_FDS reply', regionIoFdsReplyFdRule(v), fdCount, limits);
  if (fdCount !== undefined) {
    for (const s of v.subRegions) {
      if (s.fdIndex >= fdCount)
        fail('BAD_FD_COUNT', `sub-region fd_index ${s.fdIndex} but only ${fdCount} fds`);
    }
  }
  return v;
}
