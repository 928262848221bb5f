// DEVICE_GET_INFO (4), spec "Device Get Info": argsz u32 @0 | flags u32 @4 | num_regions u32 @8 |
// num_irqs u32 @12, 16 bytes both ways (vfio-user's struct is 16 bytes; the kernel's vfio_device_info is 24).

import { alloc, putU32, u32, viewOf } from '../bytes.js';
import type { Limits } from '../constants.js';
import { checkFds, checkStrayFds, expectArgszAtLeast, expectLength, NO_FDS } from './common.js';

/** DEVICE_GET_INFO `flags` bits (VFIO_DEVICE_FLAGS_*): RESET supported, PCI device. */
export const DeviceInfoFlags = { RESET: 0x1, PCI: 0x2 } as const;

/** Size of the DEVICE_GET_INFO payload, both ways. */
export const DEVICE_INFO_SIZE = 16;

/** The payload of a DEVICE_GET_INFO request, decoded. */
export interface DeviceGetInfoRequest {
  /** The reply budget; 16 when omitted on encode. */
  argsz?: number;
}
/** The payload of a DEVICE_GET_INFO reply, decoded. */
export interface DeviceGetInfoReply {
  /** 16 when omitted on encode. */
  argsz?: number;
  flags: number;
  numRegions: number;
  numIrqs: number;
}

/** Encode the payload of a DEVICE_GET_INFO request (the bytes after the header). */
export function encodeDeviceGetInfoRequest(v: DeviceGetInfoRequest = {}): Uint8Array {
  const { bytes, dv } = alloc(DEVICE_INFO_SIZE);
  putU32(dv, 0, v.argsz ?? DEVICE_INFO_SIZE, 'DeviceGetInfoRequest.argsz');
  return bytes;
}

/**
 * Payload exactly 16 (INF-02), argsz >= 16 (INF-03; larger is fine, INF-04). The spec says the other fields must
 * be zero, but that binds the client: non-zero values are ignored (INF-05).
 */
export function decodeDeviceGetInfoRequest(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceGetInfoRequest {
  checkStrayFds('DEVICE_GET_INFO request', fdCount, limits);
  expectLength(payload, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO request');
  const argsz = u32(viewOf(payload), 0);
  expectArgszAtLeast(argsz, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO');
  return { argsz };
}

/** Encode the payload of a DEVICE_GET_INFO reply (the bytes after the header). */
export function encodeDeviceGetInfoReply(v: DeviceGetInfoReply): Uint8Array {
  const { bytes, dv } = alloc(DEVICE_INFO_SIZE);
  putU32(dv, 0, v.argsz ?? DEVICE_INFO_SIZE, 'DeviceGetInfoReply.argsz');
  putU32(dv, 4, v.flags, 'DeviceGetInfoReply.flags');
  putU32(dv, 8, v.numRegions, 'DeviceGetInfoReply.numRegions');
  putU32(dv, 12, v.numIrqs, 'DeviceGetInfoReply.numIrqs');
  return bytes;
}

/** QEMU requires a reply of exactly 16 payload bytes. */
export function decodeDeviceGetInfoReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceGetInfoReply {
  checkFds('DEVICE_GET_INFO reply', NO_FDS, fdCount, limits);
  expectLength(payload, DEVICE_INFO_SIZE, 'DEVICE_GET_INFO reply');
  const dv = viewOf(payload);
  return { argsz: u32(dv, 0), flags: u32(dv, 4), numRegions: u32(dv, 8), numIrqs: u32(dv, 12) };
}
