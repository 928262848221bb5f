// The 16-byte message header (spec "Header"):
//   id u16 @0 | command u16 @2 | size u32 @4 (whole message, header included) | flags u32 @8 | error u32 @12

import { alloc, checkU16, checkU32, putU16, putU32 } from './bytes.js';
import { HEADER_SIZE, MsgFlags } from './constants.js';
import { Errno, fail } from './errors.js';

/**
 * The 16-byte message header: message id, command, total size, flags (type, NO_REPLY, ERROR) and error (errno in an
 * error reply).
 */
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
  // Byte reads rather than a DataView: this runs for every message, and a DataView over a small on-heap array
  // would make V8 give the array a backing store of its own.
  const b = bytes;
  const o = offset;
  return {
    id: b[o]! | (b[o + 1]! << 8),
    command: b[o + 2]! | (b[o + 3]! << 8),
    size: (b[o + 4]! | (b[o + 5]! << 8) | (b[o + 6]! << 16) | (b[o + 7]! << 24)) >>> 0,
    flags: (b[o + 8]! | (b[o + 9]! << 8) | (b[o + 10]! << 16) | (b[o + 11]! << 24)) >>> 0,
    error: (b[o + 12]! | (b[o + 13]! << 8) | (b[o + 14]! << 16) | (b[o + 15]! << 24)) >>> 0,
  };
}

/** The id of the message starting at `msg[0]` (no checks: the caller knows 16 bytes are there). */
export function messageIdOf(msg: Uint8Array): number {
  return msg[0]! | (msg[1]! << 8);
}

/**
 * The command of the message starting at `msg[0]` when its header is a plain command wanting a reply (flags 0:
 * a command, not NO_REPLY; error 0) and its size field equals `size`; -1 otherwise. A server answering small
 * requests straight from its receive buffer checks this before reading the payload in place; every other
 * header takes the full way (decodeHeader, checkHeader).
 */
export function plainCommandOf(msg: Uint8Array, size: number): number {
  // `length`, not `byteLength`, here and in the helpers below: for a Uint8Array they are the same, but V8 (Node
  // 20) inlines `length` and calls the byteLength getter (about 175 instructions, measured with callgrind).
  if (size < HEADER_SIZE || msg.length < size) return -1;
  if ((msg[4]! | (msg[5]! << 8) | (msg[6]! << 16) | (msg[7]! << 24)) >>> 0 !== size) return -1;
  if ((msg[8]! | msg[9]! | msg[10]! | msg[11]! | msg[12]! | msg[13]! | msg[14]! | msg[15]!) !== 0) return -1;
  return msg[2]! | (msg[3]! << 8);
}

/**
 * A reply's header and payload written into `target` (which must hold 16 + payload bytes): the session's way of
 * building a reply in the connection's outbox. Returns the message size.
 */
export function writeReplyMessage(
  target: Uint8Array,
  id: number,
  command: number,
  payload?: Uint8Array,
): number {
  const size = HEADER_SIZE + (payload?.length ?? 0);
  if (size > target.length) throw new RangeError('reply does not fit in target');
  // checkU16's errors for a bad id or command (caller bugs); the test itself is one mask each. The header is
  // written byte by byte in this function: it runs for every reply answered in place, inlined into the
  // session's read callback, where V8's inlining budget is short (a helper per field did not stay inlined).
  if ((id & 0xffff) !== id || (command & 0xffff) !== command) {
    checkU16(id, 'Header.id');
    checkU16(command, 'Header.command');
  }
  target[0] = id;
  target[1] = id >>> 8;
  target[2] = command;
  target[3] = command >>> 8;
  target[4] = size;
  target[5] = size >>> 8;
  target[6] = size >>> 16;
  target[7] = size >>> 24;
  target[8] = MsgFlags.TYPE_REPLY;
  target[9] = 0;
  target[10] = 0;
  target[11] = 0;
  target[12] = 0;
  target[13] = 0;
  target[14] = 0;
  target[15] = 0;
  if (payload) target.set(payload, HEADER_SIZE);
  return size;
}

/** Bits 0-3 of flags: 0 = command, 1 = reply; anything else is invalid (QEMU: "unknown message type"). */
export function messageType(flags: number): number {
  return flags & MsgFlags.TYPE_MASK;
}
/** Whether the header's type field says command (a request). */
export function isCommand(h: Pick<Header, 'flags'>): boolean {
  return messageType(h.flags) === MsgFlags.TYPE_COMMAND;
}
/** Whether the header's type field says reply. */
export function isReply(h: Pick<Header, 'flags'>): boolean {
  return messageType(h.flags) === MsgFlags.TYPE_REPLY;
}
/** NO_REPLY: the command gets no reply, not even when it fails (spec "Header"; HDR-17, HDR-31). */
export function wantsReply(h: Pick<Header, 'flags'>): boolean {
  return (h.flags & MsgFlags.NO_REPLY) === 0;
}
/** Whether the header is a reply with the ERROR flag (its error field holds the errno). */
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
