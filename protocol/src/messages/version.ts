// VERSION (1), spec "Version": major u16 @0 | minor u16 @2 | optional NUL-terminated JSON @4. Same layout both
// ways. The request carries no fds (VER-03); the reply carries the twin socket's fd iff it enables twin-socket.

import { alloc, putU16, sliceView, u16, viewOf } from '../bytes.js';
import { parseCapabilities } from '../capabilities.js';
import type { Limits } from '../constants.js';
import { checkFds, expectAtLeast, type FdRule, NO_FDS } from './common.js';

/** The payload of a VERSION request, decoded. */
export interface VersionRequest {
  major: number;
  minor: number;
  /** The raw JSON blob, NUL included; absent when the payload is exactly 4 bytes. */
  capabilities?: Uint8Array;
}
/** The payload of a VERSION reply, decoded. */
export type VersionReply = VersionRequest;

function encodeVersion(v: VersionRequest, what: string): Uint8Array {
  const extra = v.capabilities?.byteLength ?? 0;
  const { bytes, dv } = alloc(4 + extra);
  putU16(dv, 0, v.major, `${what}.major`);
  putU16(dv, 2, v.minor, `${what}.minor`);
  if (v.capabilities) bytes.set(v.capabilities, 4);
  return bytes;
}

function decodeVersion(payload: Uint8Array, what: string): VersionRequest {
  expectAtLeast(payload, 4, what); // VER-02
  const dv = viewOf(payload);
  const v: VersionRequest = { major: u16(dv, 0), minor: u16(dv, 2) };
  if (payload.byteLength > 4) {
    v.capabilities = sliceView(payload, 4);
    parseCapabilities(v.capabilities); // validate now: malformed JSON is EINVAL (VER-09..26)
  }
  return v;
}

/** Encode the payload of a VERSION request (the bytes after the header). */
export function encodeVersionRequest(v: VersionRequest): Uint8Array {
  return encodeVersion(v, 'VersionRequest');
}

/** Validates the JSON too. The major is not judged here: see negotiateVersion (VER-04). */
export function decodeVersionRequest(payload: Uint8Array, fdCount?: number, limits?: Limits): VersionRequest {
  checkFds('VERSION request', NO_FDS, fdCount, limits);
  return decodeVersion(payload, 'VERSION request');
}

/** Encode the payload of a VERSION reply (the bytes after the header). */
export function encodeVersionReply(v: VersionReply): Uint8Array {
  return encodeVersion(v, 'VersionReply');
}

/** The reply's fds: exactly one when it enables twin-socket (the socket), none otherwise. */
export function versionReplyFdRule(reply?: VersionReply): FdRule {
  if (!reply) return { min: 0, max: 1 };
  return parseCapabilities(reply.capabilities).caps.twinSocket?.supported ? { min: 1, max: 1 } : NO_FDS;
}

/** Decode and validate the payload of a VERSION reply; a malformed one throws ProtocolError with its errno. */
export function decodeVersionReply(payload: Uint8Array, fdCount?: number, limits?: Limits): VersionReply {
  const v = decodeVersion(payload, 'VERSION reply');
  checkFds('VERSION reply', versionReplyFdRule(v), fdCount, limits);
  return v;
}
