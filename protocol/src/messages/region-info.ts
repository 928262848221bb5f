// DEVICE_GET_REGION_INFO (5), spec "Device Get Region Info": argsz u32 @0 | flags u32 @4 | index u32 @8 |
// cap_offset u32 @12 | size u64 @16 | offset u64 @24, then (reply only) a VFIO capability chain. Each cap has
// the header id u16 | version u16 | next u32 (offset from the payload start; 0 ends the chain).
//   id 1 SPARSE_MMAP: nr_areas u32 @8 | reserved u32 @12 | {offset u64, size u64}[nr_areas] @16
//   id 2 TYPE:        type u32 @8 | subtype u32 @12
// argsz in the request is the reply budget; in the reply it is the size the full reply needs. The reply never
// exceeds the budget: when the caps don't fit, the server sends the 32-byte info with argsz = full size and
// CAPS cleared (QEMU rejects CAPS with cap_offset < 32 and does not retry; libvfio-user clears CAPS).

import { alloc, putU16, putU32, putU64, u16, u32, u64, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { rangeOverflows, rangesOverlap } from '../ranges.js';
import {
  checkFds,
  checkStrayFds,
  expectArgszAtLeast,
  expectAtLeast,
  expectLength,
  type FdRule,
} from './common.js';

/**
 * DEVICE_GET_REGION_INFO `flags` bits (VFIO_REGION_INFO_FLAG_*): readable, writable, mmap-able, has a capability
 * chain.
 */
export const RegionInfoFlags = { READ: 0x1, WRITE: 0x2, MMAP: 0x4, CAPS: 0x8 } as const;
/** Region-info capability IDs: SPARSE_MMAP (1) and TYPE (2). */
export const RegionCapId = { SPARSE_MMAP: 1, TYPE: 2 } as const;

/** Size of the DEVICE_GET_REGION_INFO payload without capabilities. */
export const REGION_INFO_SIZE = 32;
const CAP_HEADER_SIZE = 8;
const SPARSE_AREA_SIZE = 16;

/** One mmap-able area of a region (SPARSE_MMAP capability), relative to the region start. */
export interface SparseMmapArea {
  /** Offset within the region; the client mmaps the fd at info.offset + area.offset. */
  offset: bigint;
  size: bigint;
}

/** A decoded region-info capability: SPARSE_MMAP (the mmap-able areas) or TYPE (type and subtype). */
export type RegionCap =
  | { id: 1; version: number; areas: SparseMmapArea[] }
  | { id: 2; version: number; type: number; subtype: number };

/** The payload of a DEVICE_GET_REGION_INFO request, decoded. */
export interface RegionInfoRequest {
  /** The reply budget; 32 when omitted on encode. */
  argsz?: number;
  index: number;
}

/** The payload of a DEVICE_GET_REGION_INFO reply, decoded. */
export interface RegionInfoReply {
  argsz: number;
  flags: number;
  index: number;
  capOffset: number;
  size: bigint;
  offset: bigint;
  /** Known caps in chain order; unknown cap ids are skipped when decoding (as QEMU does). */
  caps: RegionCap[];
}

/** What a server knows about a region; encodeRegionInfoReplyFor derives argsz/CAPS/cap_offset. */
export interface RegionInfoDescription {
  flags: number;
  index: number;
  size: bigint;
  offset: bigint;
  caps?: RegionCap[];
}

/** Encoded size in bytes of a region-info capability. */
export function regionCapSize(cap: RegionCap): number {
  return cap.id === RegionCapId.SPARSE_MMAP ? 16 + SPARSE_AREA_SIZE * cap.areas.length : 16;
}

function capsSize(caps: readonly RegionCap[]): number {
  let n = 0;
  for (const c of caps) n += regionCapSize(c);
  return n;
}

/** Encode the payload of a DEVICE_GET_REGION_INFO request (the bytes after the header). */
export function encodeRegionInfoRequest(v: RegionInfoRequest): Uint8Array {
  const { bytes, dv } = alloc(REGION_INFO_SIZE);
  putU32(dv, 0, v.argsz ?? REGION_INFO_SIZE, 'RegionInfoRequest.argsz');
  putU32(dv, 8, v.index, 'RegionInfoRequest.index');
  return bytes;
}

/** Payload exactly 32 (RGN-02), argsz >= 32 (RGN-03). index < num_regions is the server's check (RGN-04/05). */
export function decodeRegionInfoRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionInfoRequest {
  checkStrayFds('DEVICE_GET_REGION_INFO request', fdCount, limits);
  expectLength(payload, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO request');
  const dv = viewOf(payload);
  const v: RegionInfoRequest = { argsz: u32(dv, 0), index: u32(dv, 8) };
  expectArgszAtLeast(v.argsz!, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO');
  return v;
}

/**
 * Encodes exactly what `v` says: the 32-byte info, then (if `caps` is non-empty) the caps laid out back to back
 * from `capOffset`, each `next` pointing at the following one. No budget logic: see encodeRegionInfoReplyFor.
 */
export function encodeRegionInfoReply(v: RegionInfoReply): Uint8Array {
  if (v.caps.length > 0 && v.capOffset < REGION_INFO_SIZE) {
    throw new RangeError('RegionInfoReply.capOffset must be >= 32 when caps are present');
  }
  const total = v.caps.length > 0 ? v.capOffset + capsSize(v.caps) : REGION_INFO_SIZE;
  const { bytes, dv } = alloc(total);
  putU32(dv, 0, v.argsz, 'RegionInfoReply.argsz');
  putU32(dv, 4, v.flags, 'RegionInfoReply.flags');
  putU32(dv, 8, v.index, 'RegionInfoReply.index');
  putU32(dv, 12, v.capOffset, 'RegionInfoReply.capOffset');
  putU64(dv, 16, v.size, 'RegionInfoReply.size');
  putU64(dv, 24, v.offset, 'RegionInfoReply.offset');
  let off = v.capOffset;
  v.caps.forEach((cap, i) => {
    const size = regionCapSize(cap);
    const next = i + 1 < v.caps.length ? off + size : 0;
    putU16(dv, off, cap.id, 'RegionCap.id');
    putU16(dv, off + 2, cap.version, 'RegionCap.version');
    putU32(dv, off + 4, next, 'RegionCap.next');
    if (cap.id === RegionCapId.SPARSE_MMAP) {
      putU32(dv, off + 8, cap.areas.length, 'RegionCap.nr_areas');
      cap.areas.forEach((a, j) => {
        putU64(dv, off + 16 + SPARSE_AREA_SIZE * j, a.offset, 'SparseMmapArea.offset');
        putU64(dv, off + 24 + SPARSE_AREA_SIZE * j, a.size, 'SparseMmapArea.size');
      });
    } else {
      putU32(dv, off + 8, cap.type, 'RegionCap.type');
      putU32(dv, off + 12, cap.subtype, 'RegionCap.subtype');
    }
    off += size;
  });
  return bytes;
}

/**
 * The reply a server sends for `info` to a request with budget `requestArgsz` (spec "Device Get Region Info";
 * conformance RGN-06..09, RGN-15):
 * - no caps: 32 bytes, argsz 32, CAPS clear (never padded to the budget);
 * - caps that fit: the full reply, argsz = full size, CAPS set, cap_offset 32;
 * - caps that don't fit: the 32-byte info with argsz = full size, CAPS clear, cap_offset 0 (and no fd).
 */
export function regionInfoReplyFor(info: RegionInfoDescription, requestArgsz: number): RegionInfoReply {
  if (requestArgsz < REGION_INFO_SIZE) throw new RangeError(`region info budget ${requestArgsz} is below 32`);
  const caps = info.caps ?? [];
  const flags = info.flags & ~RegionInfoFlags.CAPS;
  const base = { index: info.index, size: info.size, offset: info.offset };
  if (caps.length === 0) return { argsz: REGION_INFO_SIZE, flags, capOffset: 0, ...base, caps: [] };
  const full = REGION_INFO_SIZE + capsSize(caps);
  if (requestArgsz >= full) {
    return { argsz: full, flags: flags | RegionInfoFlags.CAPS, capOffset: REGION_INFO_SIZE, ...base, caps };
  }
  return { argsz: full, flags, capOffset: 0, ...base, caps: [] };
}

/**
 * Encode the DEVICE_GET_REGION_INFO reply a server sends for `info` to a request with budget `requestArgsz` (see
 * regionInfoReplyFor).
 */
export function encodeRegionInfoReplyFor(info: RegionInfoDescription, requestArgsz: number): Uint8Array {
  return encodeRegionInfoReply(regionInfoReplyFor(info, requestArgsz));
}

/** The payload length `v` encodes to. */
export function regionInfoReplyLength(v: RegionInfoReply): number {
  return v.caps.length > 0 ? v.capOffset + capsSize(v.caps) : REGION_INFO_SIZE;
}

/** True when the reply only announces the needed size (argsz beyond what was sent); the client asks again. */
export function isRegionInfoTruncated(v: RegionInfoReply): boolean {
  return v.argsz > regionInfoReplyLength(v);
}

/**
 * A complete reply that describes a mappable region (MMAP) carries exactly one fd; QEMU accepts at most one
 * ("unexpected FDs"). A truncated reply should carry none (libvfio-user) but one is tolerated.
 */
export function regionInfoReplyFdRule(v?: RegionInfoReply): FdRule {
  if (v && v.flags & RegionInfoFlags.MMAP && !isRegionInfoTruncated(v)) return { min: 1, max: 1 };
  return { min: 0, max: 1 };
}

/** Mirrors QEMU: zero-size areas are ignored; the rest must lie inside the region and not overlap (RGN-08). */
export function checkSparseAreas(regionSize: bigint, areas: readonly SparseMmapArea[]): void {
  const live = areas.filter((a) => a.size !== 0n);
  for (const a of live) {
    if (rangeOverflows(a.offset, a.size) || a.offset + a.size > regionSize) {
      fail(
        'BAD_RANGE',
        `sparse area [0x${a.offset.toString(16)}, +0x${a.size.toString(16)}) is outside the region`,
      );
    }
  }
  const sorted = [...live].sort((a, b) => (a.offset < b.offset ? -1 : a.offset > b.offset ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1]!;
    const c = sorted[i]!;
    if (rangesOverlap(p.offset, p.size, c.offset, c.size)) fail('BAD_RANGE', 'sparse areas overlap');
  }
}

function decodeCaps(payload: Uint8Array, dv: DataView, first: number, regionSize: bigint): RegionCap[] {
  const caps: RegionCap[] = [];
  let off = first;
  // Each `next` must point past the current cap, so the walk always terminates and caps never overlap.
  while (off !== 0) {
    if (off + CAP_HEADER_SIZE > payload.byteLength)
      fail('BAD_CAP_CHAIN', `cap at ${off} is outside the reply`);
    const id = u16(dv, off);
    const version = u16(dv, off + 2);
    const next = u32(dv, off + 4);
    let end = off + CAP_HEADER_SIZE;
    if (id === RegionCapId.SPARSE_MMAP) {
      if (off + 16 > payload.byteLength) fail('BAD_CAP_CHAIN', 'sparse mmap cap is truncated');
      const n = u32(dv, off + 8);
      end = off + 16 + SPARSE_AREA_SIZE * n;
      if (end > payload.byteLength)
        fail('BAD_CAP_CHAIN', `sparse mmap cap with ${n} areas overruns the reply`);
      const areas: SparseMmapArea[] = [];
      for (let i = 0; i < n; i++) {
        areas.push({
          offset: u64(dv, off + 16 + SPARSE_AREA_SIZE * i),
          size: u64(dv, off + 24 + SPARSE_AREA_SIZE * i),
        });
      }
      checkSparseAreas(regionSize, areas);
      caps.push({ id: RegionCapId.SPARSE_MMAP, version, areas });
    } else if (id === RegionCapId.TYPE) {
      end = off + 16;
      if (end > payload.byteLength) fail('BAD_CAP_CHAIN', 'region type cap is truncated');
      caps.push({ id: RegionCapId.TYPE, version, type: u32(dv, off + 8), subtype: u32(dv, off + 12) });
    }
    if (next !== 0 && next < end)
      fail('BAD_CAP_CHAIN', `cap at ${off} points back or into itself (next ${next})`);
    off = next;
  }
  return caps;
}

/**
 * Validates what QEMU relies on: payload >= 32 and never more than the reply's own argsz; with CAPS,
 * cap_offset >= 32 (QEMU: EINVAL otherwise) and a chain that stays inside the reply; without CAPS, exactly
 * 32 bytes; sparse areas inside the region and disjoint; fds per regionInfoReplyFdRule.
 */
export function decodeRegionInfoReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): RegionInfoReply {
  expectAtLeast(payload, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO reply');
  const dv = viewOf(payload);
  const v: RegionInfoReply = {
    argsz: u32(dv, 0),
    flags: u32(dv, 4),
    index: u32(dv, 8),
    capOffset: u32(dv, 12),
    size: u64(dv, 16),
    offset: u64(dv, 24),
    caps: [],
  };
  if (payload.byteLength > v.argsz) {
    fail('BAD_ARGSZ', `region info reply of ${payload.byteLength} bytes exceeds its argsz ${v.argsz}`);
  }
  const truncated = v.argsz > payload.byteLength;
  // A truncated reply is the bare info; its only job is to announce the needed argsz.
  if (truncated) expectLength(payload, REGION_INFO_SIZE, 'truncated DEVICE_GET_REGION_INFO reply');
  if (v.flags & RegionInfoFlags.CAPS) {
    if (v.capOffset < REGION_INFO_SIZE || v.capOffset + CAP_HEADER_SIZE > v.argsz) {
      fail('BAD_CAP_CHAIN', `CAPS with cap_offset ${v.capOffset} outside [32, argsz ${v.argsz})`);
    }
    if (!truncated) v.caps = decodeCaps(payload, dv, v.capOffset, v.size);
  } else {
    expectLength(payload, REGION_INFO_SIZE, 'DEVICE_GET_REGION_INFO reply without CAPS');
  }
  checkFds('DEVICE_GET_REGION_INFO reply', regionInfoReplyFdRule(v), fdCount, limits);
  return v;
}
