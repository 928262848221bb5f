// DEVICE_SET_IRQS (8), spec "Device Set IRQs": argsz u32 @0 | flags u32 @4 | index u32 @8 | start u32 @12 |
// count u32 @16 | data @20. DATA_BOOL carries `count` bytes of data; DATA_EVENTFD carries its eventfds in
// SCM_RIGHTS (nothing in the payload): `count` fds assign, 0 fds de-assign. The reply has no payload.

import { alloc, putU32, sliceView, u32, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { fail } from '../errors.js';
import { u32RangeWithin } from '../ranges.js';
import {
  checkFds,
  checkFlags,
  EMPTY,
  type EmptyReply,
  expectArgszAtLeast,
  expectAtLeast,
  expectEmpty,
  expectLength,
  type FdRule,
  NO_FDS,
} from './common.js';
import { IrqIndex } from './irq-info.js';

/** DEVICE_SET_IRQS `flags` bits (VFIO_IRQ_SET_*): one DATA_* type and one ACTION_* bit. */
export const SetIrqsFlags = {
  DATA_NONE: 0x1,
  DATA_BOOL: 0x2,
  DATA_EVENTFD: 0x4,
  ACTION_MASK: 0x8,
  ACTION_UNMASK: 0x10,
  ACTION_TRIGGER: 0x20,
} as const;
/** All DATA_* bits (`VFIO_IRQ_SET_DATA_TYPE_MASK`); a valid request sets exactly one. */
export const SET_IRQS_DATA_TYPE_MASK = 0x7;
/** All ACTION_* bits (`VFIO_IRQ_SET_ACTION_TYPE_MASK`); a valid request sets exactly one. */
export const SET_IRQS_ACTION_TYPE_MASK = 0x38;

/** Size of the DEVICE_SET_IRQS payload before the DATA_BOOL bytes. */
export const SET_IRQS_SIZE = 20;

/** The payload of a DEVICE_SET_IRQS request, decoded. */
export interface SetIrqsRequest {
  /** The request size including data; 20 (+ count for DATA_BOOL) when omitted on encode. */
  argsz?: number;
  flags: number;
  index: number;
  start: number;
  count: number;
  /** DATA_BOOL only: `count` bytes, non-zero = act on that vector. */
  data?: Uint8Array;
}
/** A DEVICE_SET_IRQS reply (it has no payload). */
export type SetIrqsReply = EmptyReply;

/** The data type of a DEVICE_SET_IRQS request: none, bool (one byte per vector) or eventfd (one fd per vector). */
export type SetIrqsData = 'none' | 'bool' | 'eventfd';
/** The action of a DEVICE_SET_IRQS request: mask, unmask or trigger. */
export type SetIrqsAction = 'mask' | 'unmask' | 'trigger';

/** The single DATA type of a validated request. */
export function setIrqsData(flags: number): SetIrqsData {
  return flags & SetIrqsFlags.DATA_BOOL ? 'bool' : flags & SetIrqsFlags.DATA_EVENTFD ? 'eventfd' : 'none';
}
/** The single ACTION type of a validated request. */
export function setIrqsAction(flags: number): SetIrqsAction {
  return flags & SetIrqsFlags.ACTION_MASK
    ? 'mask'
    : flags & SetIrqsFlags.ACTION_UNMASK
      ? 'unmask'
      : 'trigger';
}

/** Encode the payload of a DEVICE_SET_IRQS request (the bytes after the header). */
export function encodeSetIrqsRequest(v: SetIrqsRequest): Uint8Array {
  const dataLen = v.data?.byteLength ?? 0;
  const { bytes, dv } = alloc(SET_IRQS_SIZE + dataLen);
  putU32(dv, 0, v.argsz ?? SET_IRQS_SIZE + dataLen, 'SetIrqsRequest.argsz');
  putU32(dv, 4, v.flags, 'SetIrqsRequest.flags');
  putU32(dv, 8, v.index, 'SetIrqsRequest.index');
  putU32(dv, 12, v.start, 'SetIrqsRequest.start');
  putU32(dv, 16, v.count, 'SetIrqsRequest.count');
  if (v.data) bytes.set(v.data, SET_IRQS_SIZE);
  return bytes;
}

/** DATA_EVENTFD: exactly `count` fds (assign) or none (de-assign); otherwise none (IRQS-23..25). */
export function setIrqsFdRule(v?: Pick<SetIrqsRequest, 'flags' | 'count'>): FdRule {
  if (!v) return { min: 0, max: 253 };
  if (v.flags & SetIrqsFlags.DATA_EVENTFD)
    return { min: 0, max: v.count, allowed: v.count === 0 ? [0] : [0, v.count] };
  return NO_FDS;
}

const oneBit = (x: number) => x !== 0 && (x & (x - 1)) === 0;

/**
 * Structural checks (kernel vfio_set_irqs_validate_and_prepare and libvfio-user's dev_set_irqs_validate):
 * payload >= 20 (IRQS-06) and argsz >= 20 (IRQS-07); no unknown flag bits; exactly one DATA bit (IRQS-11/12)
 * and one ACTION bit (IRQS-09/10); start + count within u32 (IRQS-15); count 0 only as NONE|TRIGGER with start 0,
 * the "disable the index" form (IRQS-05, IRQS-20..22); DATA_BOOL has exactly `count` bytes (IRQS-26/27), the
 * others none; fds per setIrqsFdRule (IRQS-23..25) and max_msg_fds (IRQS-35).
 * index/start/count against the device's IRQs: checkSetIrqsAgainstDevice.
 */
export function decodeSetIrqsRequest(payload: Uint8Array, fdCount?: number, limits?: Limits): SetIrqsRequest {
  expectAtLeast(payload, SET_IRQS_SIZE, 'DEVICE_SET_IRQS request');
  const dv = viewOf(payload);
  const v: SetIrqsRequest = {
    argsz: u32(dv, 0),
    flags: u32(dv, 4),
    index: u32(dv, 8),
    start: u32(dv, 12),
    count: u32(dv, 16),
  };
  expectArgszAtLeast(v.argsz!, SET_IRQS_SIZE, 'DEVICE_SET_IRQS');
  checkFlags(v.flags, SET_IRQS_DATA_TYPE_MASK | SET_IRQS_ACTION_TYPE_MASK, 'DEVICE_SET_IRQS');
  if (!oneBit(v.flags & SET_IRQS_DATA_TYPE_MASK))
    fail('BAD_FLAGS', 'DEVICE_SET_IRQS needs exactly one DATA type');
  if (!oneBit(v.flags & SET_IRQS_ACTION_TYPE_MASK))
    fail('BAD_FLAGS', 'DEVICE_SET_IRQS needs exactly one ACTION type');
  if (!u32RangeWithin(v.start, v.count, 0xffffffff + 1))
    fail('BAD_RANGE', 'DEVICE_SET_IRQS start + count wraps');
  if (v.count === 0) {
    if (v.flags !== (SetIrqsFlags.DATA_NONE | SetIrqsFlags.ACTION_TRIGGER)) {
      fail('BAD_FLAGS', 'DEVICE_SET_IRQS with count 0 must be DATA_NONE|ACTION_TRIGGER');
    }
    if (v.start !== 0) fail('BAD_RANGE', 'DEVICE_SET_IRQS with count 0 must have start 0');
  }
  if (v.flags & SetIrqsFlags.DATA_BOOL) {
    expectLength(payload, SET_IRQS_SIZE + v.count, 'DEVICE_SET_IRQS DATA_BOOL request');
    v.data = sliceView(payload, SET_IRQS_SIZE, v.count);
  } else {
    expectLength(payload, SET_IRQS_SIZE, 'DEVICE_SET_IRQS request');
  }
  checkFds('DEVICE_SET_IRQS request', setIrqsFdRule(v), fdCount, limits);
  return v;
}

/**
 * Device-level checks a server makes with its IRQ info for `index` (count = number of vectors), as the kernel
 * and libvfio-user do: index < numIrqs (IRQS-08); [start, start+count) inside the vectors (IRQS-13/14), except
 * that the disable form (count 0) is accepted even on an index with no vectors (IRQS-34, recommended);
 * ERR and REQ take only TRIGGER (IRQS-16/17) and at most one vector (IRQS-18/19).
 */
export function checkSetIrqsAgainstDevice(v: SetIrqsRequest, numIrqs: number, vectors: number): void {
  if (v.index >= numIrqs) fail('BAD_VALUE', `IRQ index ${v.index} >= num_irqs ${numIrqs}`);
  if (v.count === 0) return;
  if (!u32RangeWithin(v.start, v.count, vectors)) {
    fail('BAD_RANGE', `vectors [${v.start}, +${v.count}) outside the index's ${vectors}`);
  }
  if (v.index === IrqIndex.ERR || v.index === IrqIndex.REQ) {
    if (setIrqsAction(v.flags) !== 'trigger') fail('BAD_FLAGS', 'ERR/REQ IRQs only support ACTION_TRIGGER');
    if (v.count > 1) fail('BAD_RANGE', 'ERR/REQ IRQs have a single vector');
  }
}

/** Encode the payload of a DEVICE_SET_IRQS reply (the bytes after the header). */
export function encodeSetIrqsReply(_v?: SetIrqsReply): Uint8Array {
  return EMPTY;
}

/**
 * Decode and validate the payload of a DEVICE_SET_IRQS reply; a malformed one throws ProtocolError with its errno.
 */
export function decodeSetIrqsReply(payload: Uint8Array, fdCount?: number, limits?: Limits): SetIrqsReply {
  checkFds('DEVICE_SET_IRQS reply', NO_FDS, fdCount, limits);
  return expectEmpty(payload, 'DEVICE_SET_IRQS reply');
}
