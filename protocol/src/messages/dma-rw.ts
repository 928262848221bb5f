// DMA_READ (11) / DMA_WRITE (12), server -> client, spec "DMA Read/Write":
//   address u64 @0 | count u64 @8 | data @16 (WRITE request and READ reply only)
// The DMA_WRITE reply is address + count (16 bytes); the spec's table shows a 4-byte count there, an erratum
// (QEMU 11.1 sends 8). A 12-byte reply is still accepted when decoding (SDMA-09).
// Neither direction carries fds: QEMU answers a DMA request with fds with EINVAL, and a count above its
// max_data_xfer_size with E2BIG (CLI-14, CLI-16).

import { alloc, putU64, sliceView, u32, u64, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { Errno, fail } from '../errors.js';
import { rangeOverflows } from '../ranges.js';
import { checkFds, checkXfer, expectAtLeast, expectLength, NO_FDS } from './common.js';

/** Size of the DMA_READ/DMA_WRITE payload before the data (address, count). */
export const DMA_RW_SIZE = 16;
/** The erratum's DMA_WRITE reply: address u64 + count u32. */
export const DMA_WRITE_REPLY_ERRATUM_SIZE = 12;

/** The payload of a DMA_READ request, decoded. */
export interface DmaReadRequest {
  address: bigint;
  count: bigint;
}
/** count is data.length. */
export interface DmaReadReply {
  address: bigint;
  data: Uint8Array;
}
/** count is data.length. */
export interface DmaWriteRequest {
  address: bigint;
  data: Uint8Array;
}
/** The payload of a DMA_WRITE reply, decoded. */
export interface DmaWriteReply {
  address: bigint;
  count: bigint;
}

function encodeHead(address: bigint, count: bigint, data: Uint8Array | undefined, what: string): Uint8Array {
  const { bytes, dv } = alloc(DMA_RW_SIZE + (data?.byteLength ?? 0));
  putU64(dv, 0, address, `${what}.address`);
  putU64(dv, 8, count, `${what}.count`);
  if (data) bytes.set(data, DMA_RW_SIZE);
  return bytes;
}

function checkRange(what: string, address: bigint, count: bigint): void {
  if (rangeOverflows(address, count))
    fail('BAD_RANGE', `${what} address + count wraps past 2^64`, Errno.EFAULT);
}

/** Encode the payload of a DMA_READ request (the bytes after the header). */
export function encodeDmaReadRequest(v: DmaReadRequest): Uint8Array {
  return encodeHead(v.address, v.count, undefined, 'DmaReadRequest');
}

/** Exactly 16 bytes, no fds (EINVAL), count <= max_data_xfer_size (E2BIG), no 2^64 wrap (EFAULT). */
export function decodeDmaReadRequest(payload: Uint8Array, fdCount?: number, limits?: Limits): DmaReadRequest {
  checkFds('DMA_READ request', NO_FDS, fdCount, limits);
  expectLength(payload, DMA_RW_SIZE, 'DMA_READ request');
  const dv = viewOf(payload);
  const v = { address: u64(dv, 0), count: u64(dv, 8) };
  checkXfer('DMA_READ count', v.count, limits, Errno.E2BIG);
  checkRange('DMA_READ', v.address, v.count);
  return v;
}

/** Encode the payload of a DMA_READ reply (the bytes after the header). */
export function encodeDmaReadReply(v: DmaReadReply): Uint8Array {
  return encodeHead(v.address, BigInt(v.data.byteLength), v.data, 'DmaReadReply');
}

/** Decode and validate the payload of a DMA_READ reply; a malformed one throws ProtocolError with its errno. */
export function decodeDmaReadReply(payload: Uint8Array, fdCount?: number, limits?: Limits): DmaReadReply {
  checkFds('DMA_READ reply', NO_FDS, fdCount, limits);
  expectAtLeast(payload, DMA_RW_SIZE, 'DMA_READ reply');
  const dv = viewOf(payload);
  const count = u64(dv, 8);
  checkXfer('DMA_READ reply count', count, limits, Errno.E2BIG);
  expectLength(payload, DMA_RW_SIZE + Number(count), 'DMA_READ reply');
  return { address: u64(dv, 0), data: sliceView(payload, DMA_RW_SIZE) };
}

/** Encode the payload of a DMA_WRITE request (the bytes after the header). */
export function encodeDmaWriteRequest(v: DmaWriteRequest): Uint8Array {
  return encodeHead(v.address, BigInt(v.data.byteLength), v.data, 'DmaWriteRequest');
}

/** 16 + count bytes exactly (EINVAL), no fds (EINVAL), count <= max_data_xfer_size (E2BIG), no wrap (EFAULT). */
export function decodeDmaWriteRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DmaWriteRequest {
  checkFds('DMA_WRITE request', NO_FDS, fdCount, limits);
  expectAtLeast(payload, DMA_RW_SIZE, 'DMA_WRITE request');
  const dv = viewOf(payload);
  const address = u64(dv, 0);
  const count = u64(dv, 8);
  checkXfer('DMA_WRITE count', count, limits, Errno.E2BIG);
  if (BigInt(payload.byteLength - DMA_RW_SIZE) !== count) {
    fail('BAD_PAYLOAD_SIZE', `DMA_WRITE count ${count} but ${payload.byteLength - DMA_RW_SIZE} data bytes`);
  }
  checkRange('DMA_WRITE', address, count);
  return { address, data: sliceView(payload, DMA_RW_SIZE) };
}

/** Encode the payload of a DMA_WRITE reply (the bytes after the header). */
export function encodeDmaWriteReply(v: DmaWriteReply): Uint8Array {
  return encodeHead(v.address, v.count, undefined, 'DmaWriteReply');
}

/** 16 bytes, or the erratum's 12 (address + u32 count); always decoded to a bigint count. */
export function decodeDmaWriteReply(payload: Uint8Array, fdCount?: number, limits?: Limits): DmaWriteReply {
  checkFds('DMA_WRITE reply', NO_FDS, fdCount, limits);
  const dv = viewOf(payload);
  if (payload.byteLength === DMA_WRITE_REPLY_ERRATUM_SIZE) {
    return { address: u64(dv, 0), count: BigInt(u32(dv, 8)) };
  }
  expectLength(payload, DMA_RW_SIZE, 'DMA_WRITE reply');
  return { address: u64(dv, 0), count: u64(dv, 8) };
}
