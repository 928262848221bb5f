// The 16-byte message header (spec "Header"):
//   id u16 @0 | command u16 @2 | size u32 @4 (whole message, header included) | flags u32 @8 | error u32 @12

import { alloc, checkU16, checkU32, putU16, putU32, u16, u32, viewOf } from './bytes.js';
import { HEADER_SIZE, MsgFlags } from './constants.js';
import { Errno, fail } from './errors.js';

export interface Header {
  id: number;
  command: number;
  size: number;
  flags: number;
  error: number;
}

/** Writes `h` into `target` at `offset` (a fresh 16-byte array when no target is given) and returns target. */
export function encodeHeader(h: Header, target?: Uint8Array, offset = 0): Uint8Array {
  const out = target ?? new Uint8Array(HEADER_SIZE);
  if (offset < 0 || offset + HEADER_SIZE > out.byteLength)
    throw new RangeError('header does not fit in target');
  const dv = new DataView(out.buffer, out.byteOffset + offset, HEADER_SIZE);
  putU16(dv, 0, h.id, 'Header.id');
  putU16(dv, 2, h.command, 'Header.command');
  putU32(dv, 4, h.size, 'Header.size');
  putU32(dv, 8, h.flags, 'Header.flags');
  putU32(dv, 12, h.error, 'Header.error');
  return out;
}

/** Reads the header at `offset`. Pure decoding: size and type are judged by `checkHeader`/the Framer. */
export function decodeHeader(bytes: Uint8Array, offset = 0): Header {
  if (offset < 0 || offset + HEADER_SIZE > bytes.byteLength) {
    fail('SHORT_HEADER', `need ${HEADER_SIZE} header bytes, have ${Math.max(0, bytes.byteLength - offset)}`);
  }
  const dv = viewOf(bytes);
  return {
    id: u16(dv, offset),
    command: u16(dv, offset + 2),
    size: u32(dv, offset + 4),
    flags: u32(dv, offset + 8),
    error: u32(dv, offset + 12),
  };
}

/** Bits 0-3 of flags: 0 = command, 1 = reply; anything else is invalid (QEMU: "unknown message type"). */
export function messageType(flags: number): number {
  return flags & MsgFlags.TYPE_MASK;
}
export function isCommand(h: Pick<Header, 'flags'>): boolean {
  return messageType(h.flags) === MsgFlags.TYPE_COMMAND;
}
export function isReply(h: Pick<Header, 'flags'>): boolean {
  return messageType(h.flags) === MsgFlags.TYPE_REPLY;
}
/** NO_REPLY: the command gets no reply, not even when it fails (spec "Header"; HDR-17, HDR-31). */
export function wantsReply(h: Pick<Header, 'flags'>): boolean {
  return (h.flags & MsgFlags.NO_REPLY) === 0;
}
export function isErrorReply(h: Pick<Header, 'flags'>): boolean {
  return isReply(h) && (h.flags & MsgFlags.ERROR) !== 0;
}

/**
 * The framing checks every receiver must make before reading a body (spec "Header"; QEMU treats each as fatal):
 * size >= 16, size <= the receiver's cap (never allocate what a hostile `size` asks for; HDR-07/08), and a type
 * of command or reply (HDR-10). All EINVAL, the errno libvfio-user answers with; the connection cannot be
 * trusted afterwards, so callers close it.
 */
export function checkHeader(h: Header, maxMessageSize: number): void {
  if (h.size < HEADER_SIZE)
    fail('BAD_MESSAGE_SIZE', `message size ${h.size} is below the ${HEADER_SIZE}-byte header`);
  if (h.size > maxMessageSize) {
    fail('MESSAGE_TOO_LARGE', `message size ${h.size} exceeds the limit of ${maxMessageSize}`);
  }
  const type = messageType(h.flags);
  if (type !== MsgFlags.TYPE_COMMAND && type !== MsgFlags.TYPE_REPLY) {
    fail('BAD_MESSAGE_TYPE', `unknown message type ${type}`);
  }
}

/** Header + payload in one array; `size` is computed, flags default to a command, error to 0. */
export function encodeMessage(
  h: { id: number; command: number; flags?: number; error?: number },
  payload?: Uint8Array,
): Uint8Array {
  const length = payload?.byteLength ?? 0;
  const out = new Uint8Array(HEADER_SIZE + length);
  encodeHeader(
    {
      id: h.id,
      command: h.command,
      size: checkU32(HEADER_SIZE + length, 'message size'),
      flags: h.flags ?? MsgFlags.TYPE_COMMAND,
      error: h.error ?? 0,
    },
    out,
  );
  if (payload) out.set(payload, HEADER_SIZE);
  return out;
}

/** A successful reply (flags 0x1) echoing the request's id and command. */
export function encodeReplyMessage(id: number, command: number, payload?: Uint8Array): Uint8Array {
  return encodeMessage({ id, command, flags: MsgFlags.TYPE_REPLY }, payload);
}

/** An error reply: the header only, flags 0x21, `error` = errno (spec: an error reply has no payload). */
export function encodeErrorReply(id: number, command: number, errno: number): Uint8Array {
  checkU16(id, 'id');
  if (!Number.isInteger(errno) || errno <= 0 || errno > 0xffffffff) {
    throw new RangeError(`an error reply needs a positive errno (got ${errno})`);
  }
  const { bytes } = alloc(HEADER_SIZE);
  return encodeHeader(
    { id, command, size: HEADER_SIZE, flags: MsgFlags.TYPE_REPLY | MsgFlags.ERROR, error: errno },
    bytes,
  );
}

/**
 * How libvfio-user reads the errno of an error reply it awaits: a value <= 0 or > 4096 is reported as EINVAL
 * (the spec allows 0 even with ERROR set, which says nothing useful either).
 */
export function replyErrno(h: Header): number {
  return h.error > 0 && h.error <= 4096 ? h.error : Errno.EINVAL;
}
