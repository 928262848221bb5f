// DEVICE_RESET (13), spec "Device Reset": no payload either way.

import type { Limits } from '../constants.js';
import { checkFds, checkStrayFds, EMPTY, type EmptyReply, expectEmpty, NO_FDS } from './common.js';

export type DeviceResetRequest = EmptyReply;
export type DeviceResetReply = EmptyReply;

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

export function encodeDeviceResetReply(_v?: DeviceResetReply): Uint8Array {
  return EMPTY;
}

export function decodeDeviceResetReply(
  payload: Uint8Array,
  fdCount?: number,
  limits?: Limits,
): DeviceResetReply {
  checkFds('DEVICE_RESET reply', NO_FDS, fdCount, limits);
  return expectEmpty(payload, 'DEVICE_RESET reply');
}
