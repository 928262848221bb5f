// DEVICE_RESET (13), spec "Device Reset": no payload either way.

import type { Limits } from '../constants.js';
import { checkFds, checkStrayFds, EMPTY, type EmptyReply, expectEmpty, NO_FDS } from './common.js';

/** A DEVICE_RESET request (it has no payload). */
export type DeviceResetRequest = EmptyReply;
/** A DEVICE_RESET reply (it has no payload). */
export type DeviceResetReply = EmptyReply;

/** Encode the payload of a DEVICE_RESET request (the bytes after the header). */
export function encodeDeviceResetRequest(_v?: DeviceResetRequest): Uint8Array {
  return EMPTY;
}

/** A payload is ignored, as libvfio-user does (RST-02, recommended). */
export function decodeDeviceResetRequest(
  _payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceResetRequest {
  checkStrayFds('DEVICE_RESET request', fdCount, limits);
  return {};
}

/** Encode the payload of a DEVICE_RESET reply (the bytes after the header). */
export function encodeDeviceResetReply(_v?: DeviceResetReply): Uint8Array {
  return EMPTY;
}

/** Decode and validate the payload of a DEVICE_RESET reply; a malformed one throws ProtocolError with its errno. */
export function decodeDeviceResetReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceResetReply {
  checkFds('DEVICE_RESET reply', NO_FDS, fdCount, limits);
  return expectEmpty(payload, 'DEVICE_RESET reply');
}
