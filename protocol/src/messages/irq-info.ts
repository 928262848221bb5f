// DEVICE_GET_IRQ_INFO (7), spec "Device Get IRQ Info": argsz u32 @0 | flags u32 @4 | index u32 @8 |
// count u32 @12; 16 bytes both ways.

import { alloc, putU32, u32, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { checkFds, checkStrayFds, expectArgszAtLeast, expectLength, NO_FDS } from './common.js';

/** DEVICE_GET_IRQ_INFO `flags` bits (VFIO_IRQ_INFO_*): eventfd signalling, maskable, automasked, no resize. */
export const IrqInfoFlags = { EVENTFD: 0x1, MASKABLE: 0x2, AUTOMASKED: 0x4, NORESIZE: 0x8 } as const;
/** PCI IRQ indexes (VFIO_PCI_*_IRQ_INDEX). */
export const IrqIndex = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 } as const;

/** Size of the DEVICE_GET_IRQ_INFO payload, both ways. */
export const IRQ_INFO_SIZE = 16;

/** The payload of a DEVICE_GET_IRQ_INFO request, decoded. */
export interface IrqInfoRequest {
  /** The reply budget; 16 when omitted on encode. */
  argsz?: number;
  index: number;
}
/** The payload of a DEVICE_GET_IRQ_INFO reply, decoded. */
export interface IrqInfoReply {
  /** 16 when omitted on encode. */
  argsz?: number;
  flags: number;
  index: number;
  count: number;
}

/** Encode the payload of a DEVICE_GET_IRQ_INFO request (the bytes after the header). */
export function encodeIrqInfoRequest(v: IrqInfoRequest): Uint8Array {
  const { bytes, dv } = alloc(IRQ_INFO_SIZE);
  putU32(dv, 0, v.argsz ?? IRQ_INFO_SIZE, 'IrqInfoRequest.argsz');
  putU32(dv, 8, v.index, 'IrqInfoRequest.index');
  return bytes;
}

/** Payload exactly 16 (IRQI-02), argsz >= 16 (IRQI-03; 32 is fine, IRQI-05). index < num_irqs is the server's. */
export function decodeIrqInfoRequest(payload: Uint8Array, fdCount?: number, limits?: Limits): IrqInfoRequest {
  checkStrayFds('DEVICE_GET_IRQ_INFO request', fdCount, limits);
  expectLength(payload, IRQ_INFO_SIZE, 'DEVICE_GET_IRQ_INFO request');
  const dv = viewOf(payload);
  const v: IrqInfoRequest = { argsz: u32(dv, 0), index: u32(dv, 8) };
  expectArgszAtLeast(v.argsz!, IRQ_INFO_SIZE, 'DEVICE_GET_IRQ_INFO');
  return v;
}

/** Encode the payload of a DEVICE_GET_IRQ_INFO reply (the bytes after the header). */
export function encodeIrqInfoReply(v: IrqInfoReply): Uint8Array {
  const { bytes, dv } = alloc(IRQ_INFO_SIZE);
  putU32(dv, 0, v.argsz ?? IRQ_INFO_SIZE, 'IrqInfoReply.argsz');
  putU32(dv, 4, v.flags, 'IrqInfoReply.flags');
  putU32(dv, 8, v.index, 'IrqInfoReply.index');
  putU32(dv, 12, v.count, 'IrqInfoReply.count');
  return bytes;
}

/** The reply must be exactly 16 payload bytes (spec; QEMU's receive buffer is 32 bytes). */
export function decodeIrqInfoReply(payload: Uint8Array, fdCount?: number, limits?: Limits): IrqInfoReply {
  checkFds('DEVICE_GET_IRQ_INFO reply', NO_FDS, fdCount, limits);
  expectLength(payload, IRQ_INFO_SIZE, 'DEVICE_GET_IRQ_INFO reply');
  const dv = viewOf(payload);
  return { argsz: u32(dv, 0), flags: u32(dv, 4), index: u32(dv, 8), count: u32(dv, 12) };
}
