// DEVICE_FEATURE (16), spec "Device Feature": argsz u32 @0 | flags u32 @4 | data @8. flags bits 0-15 are the
// feature index; GET = 1<<16, SET = 1<<17, PROBE = 1<<18; GET and SET exclude each other except with PROBE.
// SET and PROBE replies echo the request; a GET reply appends the data and grows argsz.
// Feature data (data-relative offsets):
//   MIGRATION (1), GET:           flags u64 (MigrationFlags)
//   MIG_DEVICE_STATE (2), GET/SET: device_state u32 | data_fd u32 (unused in vfio-user)
//   DMA_LOGGING_START/STOP (6/7), SET: page_size u64 | num_ranges u32 | reserved u32 | {iova u64, length u64}[]
//   DMA_LOGGING_REPORT (8), GET:  iova u64 | length u64 | page_size u64; the reply adds a u64 bitmap at +24

import { alloc, putU32, putU64, sliceView, u32, u64, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { isPowerOfTwo, rangeOverflows, rangesOverlap } from '../ranges.js';
import { checkFds, checkStrayFds, checkXfer, expectAtLeast, NO_FDS } from './common.js';
import { isRequestableMigState } from './mig-state.js';

/** DEVICE_FEATURE `flags`: the feature index mask (bits 0-15) and the GET, SET and PROBE operation bits. */
export const DeviceFeatureFlags = { MASK: 0xffff, GET: 1 << 16, SET: 1 << 17, PROBE: 1 << 18 } as const;
/** DEVICE_FEATURE feature indexes vfio-user uses: MIGRATION, MIG_DEVICE_STATE, DMA_LOGGING_START/STOP/REPORT. */
export const Feature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
} as const;

/** Size of the DEVICE_FEATURE payload before the feature data (argsz, flags). */
export const DEVICE_FEATURE_SIZE = 8;
const OPS = DeviceFeatureFlags.GET | DeviceFeatureFlags.SET | DeviceFeatureFlags.PROBE;

/** Which of GET/SET each known feature has at all (kernel vfio_check_feature; FEA-07: MIGRATION is GET-only). */
export const FEATURE_OPS: Readonly<Record<number, number>> = Object.freeze({
  [Feature.MIGRATION]: DeviceFeatureFlags.GET,
  [Feature.MIG_DEVICE_STATE]: DeviceFeatureFlags.GET | DeviceFeatureFlags.SET,
  [Feature.DMA_LOGGING_START]: DeviceFeatureFlags.SET,
  [Feature.DMA_LOGGING_STOP]: DeviceFeatureFlags.SET,
  [Feature.DMA_LOGGING_REPORT]: DeviceFeatureFlags.GET,
});

/** The payload of a DEVICE_FEATURE request, decoded. */
export interface DeviceFeatureRequest {
  /** The reply budget; 8 + data.length when omitted on encode. */
  argsz?: number;
  /** Feature index | GET/SET/PROBE. */
  flags: number;
  /** Raw feature data; see the typed codecs below. */
  data: Uint8Array;
}
/** The payload of a DEVICE_FEATURE reply, decoded. */
export interface DeviceFeatureReply {
  argsz: number;
  flags: number;
  data: Uint8Array;
}

/** The feature index of DEVICE_FEATURE `flags` (bits 0-15). */
export function featureIndex(flags: number): number {
  return flags & DeviceFeatureFlags.MASK;
}

function encodeFeature(argsz: number, flags: number, data: Uint8Array, what: string): Uint8Array {
  const { bytes, dv } = alloc(DEVICE_FEATURE_SIZE + data.byteLength);
  putU32(dv, 0, argsz, `${what}.argsz`);
  putU32(dv, 4, flags, `${what}.flags`);
  bytes.set(data, DEVICE_FEATURE_SIZE);
  return bytes;
}

/** Encode the payload of a DEVICE_FEATURE request (the bytes after the header). */
export function encodeDeviceFeatureRequest(v: DeviceFeatureRequest): Uint8Array {
  return encodeFeature(
    v.argsz ?? DEVICE_FEATURE_SIZE + v.data.byteLength,
    v.flags,
    v.data,
    'DeviceFeatureRequest',
  );
}

/** Encode the payload of a DEVICE_FEATURE reply (the bytes after the header). */
export function encodeDeviceFeatureReply(v: DeviceFeatureReply): Uint8Array {
  return encodeFeature(v.argsz, v.flags, v.data, 'DeviceFeatureReply');
}

// ---- typed feature data -------------------------------------------------------------------------------------

/** The MIG_DEVICE_STATE feature data: the device state (MigState) and the unused data fd. */
export interface MigDeviceStateData {
  deviceState: number;
  /** Unused by vfio-user; 0xffffffff (-1) when omitted on encode. */
  dataFd?: number;
}

/** One IOVA range of a DMA_LOGGING_START request. */
export interface DmaLoggingRange {
  iova: bigint;
  length: bigint;
}
/** The DMA_LOGGING_START/STOP feature data: the page size and the ranges to log (none = everything). */
export interface DmaLoggingControl {
  pageSize: bigint;
  /** Empty = log everything. */
  ranges: DmaLoggingRange[];
}
/** The DMA_LOGGING_REPORT feature data: the IOVA range and page size asked about, and (reply) the dirty bitmap. */
export interface DmaLoggingReport {
  iova: bigint;
  length: bigint;
  pageSize: bigint;
  /** Reply only: ceil(pages / 64) u64 words, bit b = page iova + b * pageSize (kernel meaning). */
  bitmap?: Uint8Array;
}

/** Encode the MIGRATION feature data (MigrationFlags bits). */
export function encodeMigrationFlags(flags: bigint): Uint8Array {
  const { bytes, dv } = alloc(8);
  putU64(dv, 0, flags, 'MIGRATION flags');
  return bytes;
}
/** Decode the MIGRATION feature data (MigrationFlags bits); EINVAL when shorter than 8 bytes. */
export function decodeMigrationFlags(data: Uint8Array): bigint {
  expectAtLeast(data, 8, 'MIGRATION feature data');
  return u64(viewOf(data), 0);
}

/** Encode MIG_DEVICE_STATE feature data (data fd -1 when omitted). */
export function encodeMigDeviceState(v: MigDeviceStateData): Uint8Array {
  const { bytes, dv } = alloc(8);
  putU32(dv, 0, v.deviceState, 'MigDeviceStateData.deviceState');
  putU32(dv, 4, v.dataFd ?? 0xffffffff, 'MigDeviceStateData.dataFd');
  return bytes;
}
/** Decode MIG_DEVICE_STATE feature data; EINVAL when shorter than 8 bytes. */
export function decodeMigDeviceState(data: Uint8Array): Required<MigDeviceStateData> {
  expectAtLeast(data, 8, 'MIG_DEVICE_STATE feature data');
  const dv = viewOf(data);
  return { deviceState: u32(dv, 0), dataFd: u32(dv, 4) };
}

/** Encode DMA_LOGGING_START/STOP feature data. */
export function encodeDmaLoggingControl(v: DmaLoggingControl): Uint8Array {
  const { bytes, dv } = alloc(16 + 16 * v.ranges.length);
  putU64(dv, 0, v.pageSize, 'DmaLoggingControl.pageSize');
  putU32(dv, 8, v.ranges.length, 'DmaLoggingControl.num_ranges');
  v.ranges.forEach((r, i) => {
    putU64(dv, 16 + 16 * i, r.iova, 'DmaLoggingRange.iova');
    putU64(dv, 24 + 16 * i, r.length, 'DmaLoggingRange.length');
  });
  return bytes;
}

/** page_size a power of two (FEA-20), 16 + 16 * num_ranges bytes, ranges non-empty, no wrap, disjoint. */
export function decodeDmaLoggingControl(data: Uint8Array): DmaLoggingControl {
  expectAtLeast(data, 16, 'DMA logging control');
  const dv = viewOf(data);
  const pageSize = u64(dv, 0);
  const n = u32(dv, 8);
  if (!isPowerOfTwo(pageSize)) fail('BAD_VALUE', `DMA logging page_size ${pageSize} is not a power of two`);
  if (data.byteLength !== 16 + 16 * n) {
    fail(
      'BAD_PAYLOAD_SIZE',
      `DMA logging control with ${n} ranges needs ${16 + 16 * n} bytes, got ${data.byteLength}`,
    );
  }
  const ranges: DmaLoggingRange[] = [];
  for (let i = 0; i < n; i++) {
    const r = { iova: u64(dv, 16 + 16 * i), length: u64(dv, 24 + 16 * i) };
    if (r.length === 0n || rangeOverflows(r.iova, r.length))
      fail('BAD_RANGE', `DMA logging range ${i} is empty or wraps`);
    ranges.push(r);
  }
  const sorted = [...ranges].sort((a, b) => (a.iova < b.iova ? -1 : a.iova > b.iova ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    const p = sorted[i - 1]!;
    const c = sorted[i]!;
    if (rangesOverlap(p.iova, p.length, c.iova, c.length)) fail('BAD_RANGE', 'DMA logging ranges overlap');
  }
  return { pageSize, ranges };
}

/** Bytes of a dirty bitmap for `length` bytes at `pageSize` granularity: whole u64 words (libvfio-user). */
export function dirtyBitmapSize(length: bigint, pageSize: bigint): bigint {
  const pages = (length + pageSize - 1n) / pageSize;
  return ((pages + 63n) / 64n) * 8n;
}

/** Encode DMA_LOGGING_REPORT feature data (with the bitmap in a reply). */
export function encodeDmaLoggingReport(v: DmaLoggingReport): Uint8Array {
  const { bytes, dv } = alloc(24 + (v.bitmap?.byteLength ?? 0));
  putU64(dv, 0, v.iova, 'DmaLoggingReport.iova');
  putU64(dv, 8, v.length, 'DmaLoggingReport.length');
  putU64(dv, 16, v.pageSize, 'DmaLoggingReport.pageSize');
  if (v.bitmap) bytes.set(v.bitmap, 24);
  return bytes;
}

/** page_size a power of two, length > 0, no wrap (FEA-26); with `withBitmap`, exactly the bitmap's bytes follow. */
export function decodeDmaLoggingReport(data: Uint8Array, withBitmap = false): DmaLoggingReport {
  expectAtLeast(data, 24, 'DMA logging report');
  const dv = viewOf(data);
  const v: DmaLoggingReport = { iova: u64(dv, 0), length: u64(dv, 8), pageSize: u64(dv, 16) };
  if (!isPowerOfTwo(v.pageSize))
    fail('BAD_VALUE', `DMA logging report page_size ${v.pageSize} is not a power of two`);
  if (v.length === 0n || rangeOverflows(v.iova, v.length))
    fail('BAD_RANGE', 'DMA logging report range is empty or wraps');
  if (withBitmap) {
    const need = dirtyBitmapSize(v.length, v.pageSize);
    if (BigInt(data.byteLength - 24) !== need) {
      fail(
        'BAD_PAYLOAD_SIZE',
        `DMA logging report bitmap is ${data.byteLength - 24} bytes, expected ${need}`,
      );
    }
    v.bitmap = sliceView(data, 24);
  }
  return v;
}

// ---- message validation -------------------------------------------------------------------------------------

/**
 * Checks the flag rules, then (unless PROBE) the data of known features:
 * payload >= 8 (FEA-01); argsz >= payload (FEA-11); no reserved bits; at least one of GET/SET/PROBE (FEA-04);
 * GET with SET only together with PROBE (FEA-05); GET/SET only on features that have them (FEA-07);
 * GET MIGRATION / MIG_DEVICE_STATE with argsz >= 16 (FEA-08); SET MIG_DEVICE_STATE to a requestable state
 * (FEA-12..14); DMA logging control/report well-formed (FEA-20, FEA-26) and the report's argsz large enough for
 * its bitmap, which must also fit max_data_xfer_size. Unknown features pass: the device answers them (FEA-02).
 */
export function decodeDeviceFeatureRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceFeatureRequest {
  checkStrayFds('DEVICE_FEATURE request', fdCount, limits);
  expectAtLeast(payload, DEVICE_FEATURE_SIZE, 'DEVICE_FEATURE request');
  const dv = viewOf(payload);
  const argsz = u32(dv, 0);
  const flags = u32(dv, 4);
  const data = sliceView(payload, DEVICE_FEATURE_SIZE);
  if (argsz < payload.byteLength)
    fail('BAD_ARGSZ', `DEVICE_FEATURE argsz ${argsz} < payload ${payload.byteLength}`);
  if ((flags & ~(DeviceFeatureFlags.MASK | OPS)) >>> 0 !== 0)
    fail('BAD_FLAGS', 'DEVICE_FEATURE reserved flag bits');
  const get = (flags & DeviceFeatureFlags.GET) !== 0;
  const set = (flags & DeviceFeatureFlags.SET) !== 0;
  const probe = (flags & DeviceFeatureFlags.PROBE) !== 0;
  if (!get && !set && !probe) fail('BAD_FLAGS', 'DEVICE_FEATURE without GET, SET or PROBE');
  if (get && set && !probe) fail('BAD_FLAGS', 'DEVICE_FEATURE GET and SET together need PROBE');
  const feature = featureIndex(flags);
  const supported = FEATURE_OPS[feature];
  if (supported !== undefined) {
    if (get && !(supported & DeviceFeatureFlags.GET)) fail('BAD_FLAGS', `feature ${feature} has no GET`);
    if (set && !(supported & DeviceFeatureFlags.SET)) fail('BAD_FLAGS', `feature ${feature} has no SET`);
  }
  if (!probe) {
    switch (feature) {
      case Feature.MIGRATION:
      case Feature.MIG_DEVICE_STATE:
        if (get && argsz < DEVICE_FEATURE_SIZE + 8)
          fail('BAD_ARGSZ', `DEVICE_FEATURE GET argsz ${argsz} < 16`);
        if (set) {
          const s = decodeMigDeviceState(data).deviceState;
          if (!isRequestableMigState(s)) fail('BAD_VALUE', `migration state ${s} cannot be requested`);
        }
        break;
      case Feature.DMA_LOGGING_START:
        decodeDmaLoggingControl(data);
        break;
      case Feature.DMA_LOGGING_REPORT: {
        const r = decodeDmaLoggingReport(data);
        const bitmap = dirtyBitmapSize(r.length, r.pageSize);
        checkXfer('DMA logging report bitmap', bitmap, limits);
        if (BigInt(argsz) < BigInt(DEVICE_FEATURE_SIZE + 24) + bitmap) {
          fail('BAD_ARGSZ', `DEVICE_FEATURE argsz ${argsz} too small for a ${bitmap}-byte bitmap`);
        }
        break;
      }
      // DMA_LOGGING_STOP's data (if any) is ignored, as libvfio-user and the kernel do.
    }
  }
  return { argsz, flags, data };
}

/** The reply to a SET or PROBE: the request echoed. */
export function deviceFeatureEcho(req: DeviceFeatureRequest): DeviceFeatureReply {
  return { argsz: req.argsz ?? DEVICE_FEATURE_SIZE + req.data.byteLength, flags: req.flags, data: req.data };
}

/** The reply to a GET: the request's flags, the data appended, argsz grown to match. */
export function deviceFeatureGetReply(req: DeviceFeatureRequest, data: Uint8Array): DeviceFeatureReply {
  return { argsz: DEVICE_FEATURE_SIZE + data.byteLength, flags: req.flags, data };
}

/** Payload >= 8; a GET reply of a known feature carries well-formed data of the right size. */
export function decodeDeviceFeatureReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceFeatureReply {
  checkFds('DEVICE_FEATURE reply', NO_FDS, fdCount, limits);
  expectAtLeast(payload, DEVICE_FEATURE_SIZE, 'DEVICE_FEATURE reply');
  const dv = viewOf(payload);
  const v: DeviceFeatureReply = {
    argsz: u32(dv, 0),
    flags: u32(dv, 4),
    data: sliceView(payload, DEVICE_FEATURE_SIZE),
  };
  const isGet = (v.flags & (DeviceFeatureFlags.GET | DeviceFeatureFlags.PROBE)) === DeviceFeatureFlags.GET;
  if (isGet) {
    const feature = featureIndex(v.flags);
    if (feature === Feature.MIGRATION || feature === Feature.MIG_DEVICE_STATE) {
      if (v.data.byteLength !== 8)
        fail('BAD_PAYLOAD_SIZE', `GET feature ${feature} reply data must be 8 bytes`);
    } else if (feature === Feature.DMA_LOGGING_REPORT) {
      decodeDmaLoggingReport(v.data, true);
    }
  }
  return v;
}
