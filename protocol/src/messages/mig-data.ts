// MIG_DATA_READ (17) / MIG_DATA_WRITE (18), spec "Migration Data Read/Write":
//   argsz u32 @0 | size u32 @4 | data @8 (READ reply and WRITE request only)
// A READ reply shorter than requested means there is no more data. WRITE's reply has no payload. Whether the
// device's migration state allows them (PRE_COPY/STOP_COPY, RESUMING) is the server's check (MIG-03, MIG-07).

import { alloc, putU32, sliceView, u32, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import {
  checkFds,
  checkStrayFds,
  checkXfer,
  EMPTY,
  type EmptyReply,
  expectAtLeast,
  expectEmpty,
  expectLength,
  NO_FDS,
} from './common.js';

/** Size of the MIG_DATA_READ/MIG_DATA_WRITE payload before the data (argsz, size). */
export const MIG_DATA_SIZE = 8;

/** The payload of a MIG_DATA_READ request, decoded. */
export interface MigDataReadRequest {
  /** The reply budget; 8 + size when omitted on encode. */
  argsz?: number;
  size: number;
}
/** size is data.length. */
export interface MigDataReadReply {
  /** 8 + data.length when omitted on encode. */
  argsz?: number;
  data: Uint8Array;
}
/** size is data.length. */
export interface MigDataWriteRequest {
  /** 8 + data.length when omitted on encode. */
  argsz?: number;
  data: Uint8Array;
}
/** A MIG_DATA_WRITE reply (it has no payload). */
export type MigDataWriteReply = EmptyReply;

function encodeMig(argsz: number, size: number, data: Uint8Array | undefined, what: string): Uint8Array {
  const { bytes, dv } = alloc(MIG_DATA_SIZE + (data?.byteLength ?? 0));
  putU32(dv, 0, argsz, `${what}.argsz`);
  putU32(dv, 4, size, `${what}.size`);
  if (data) bytes.set(data, MIG_DATA_SIZE);
  return bytes;
}

/** Encode the payload of a MIG_DATA_READ request (the bytes after the header). */
export function encodeMigDataReadRequest(v: MigDataReadRequest): Uint8Array {
  return encodeMig(v.argsz ?? MIG_DATA_SIZE + v.size, v.size, undefined, 'MigDataReadRequest');
}

/** Payload exactly 8 (MIG-01), size <= max_data_xfer_size (MIG-04), argsz >= 8 + size (MIG-05). */
export function decodeMigDataReadRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): MigDataReadRequest {
  checkStrayFds('MIG_DATA_READ request', fdCount, limits);
  expectLength(payload, MIG_DATA_SIZE, 'MIG_DATA_READ request');
  const dv = viewOf(payload);
  const v = { argsz: u32(dv, 0), size: u32(dv, 4) };
  checkXfer('MIG_DATA_READ size', v.size, limits);
  if (v.argsz < MIG_DATA_SIZE + v.size)
    fail('BAD_ARGSZ', `MIG_DATA_READ argsz ${v.argsz} < 8 + size ${v.size}`);
  return v;
}

/** Encode the payload of a MIG_DATA_READ reply (the bytes after the header). */
export function encodeMigDataReadReply(v: MigDataReadReply): Uint8Array {
  return encodeMig(
    v.argsz ?? MIG_DATA_SIZE + v.data.byteLength,
    v.data.byteLength,
    v.data,
    'MigDataReadReply',
  );
}

/** Decode and validate the payload of a MIG_DATA_READ reply; a malformed one throws ProtocolError with its errno. */
export function decodeMigDataReadReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): MigDataReadReply {
  checkFds('MIG_DATA_READ reply', NO_FDS, fdCount, limits);
  expectAtLeast(payload, MIG_DATA_SIZE, 'MIG_DATA_READ reply');
  const dv = viewOf(payload);
  const size = u32(dv, 4);
  checkXfer('MIG_DATA_READ reply size', size, limits);
  expectLength(payload, MIG_DATA_SIZE + size, 'MIG_DATA_READ reply');
  return { argsz: u32(dv, 0), data: sliceView(payload, MIG_DATA_SIZE) };
}

/** Encode the payload of a MIG_DATA_WRITE request (the bytes after the header). */
export function encodeMigDataWriteRequest(v: MigDataWriteRequest): Uint8Array {
  return encodeMig(
    v.argsz ?? MIG_DATA_SIZE + v.data.byteLength,
    v.data.byteLength,
    v.data,
    'MigDataWriteRequest',
  );
}

/** Payload >= 8 (MIG-01), size <= max (MIG-09), exactly size data bytes (MIG-08), argsz >= 8 + size. */
export function decodeMigDataWriteRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): MigDataWriteRequest {
  checkStrayFds('MIG_DATA_WRITE request', fdCount, limits);
  expectAtLeast(payload, MIG_DATA_SIZE, 'MIG_DATA_WRITE request');
  const dv = viewOf(payload);
  const argsz = u32(dv, 0);
  const size = u32(dv, 4);
  checkXfer('MIG_DATA_WRITE size', size, limits);
  if (payload.byteLength !== MIG_DATA_SIZE + size) {
    fail(
      'BAD_PAYLOAD_SIZE',
      `MIG_DATA_WRITE size ${size} but ${payload.byteLength - MIG_DATA_SIZE} data bytes`,
    );
  }
  if (argsz < MIG_DATA_SIZE + size) fail('BAD_ARGSZ', `MIG_DATA_WRITE argsz ${argsz} < 8 + size ${size}`);
  return { argsz, data: sliceView(payload, MIG_DATA_SIZE) };
}

/** Encode the payload of a MIG_DATA_WRITE reply (the bytes after the header). */
export function encodeMigDataWriteReply(_v?: MigDataWriteReply): Uint8Array {
  return EMPTY;
}

/** Decode and validate the payload of a MIG_DATA_WRITE reply; a malformed one throws ProtocolError with its errno. */
export function decodeMigDataWriteReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): MigDataWriteReply {
  checkFds('MIG_DATA_WRITE reply', NO_FDS, fdCount, limits);
  return expectEmpty(payload, 'MIG_DATA_WRITE reply');
}
