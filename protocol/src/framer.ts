// Stream framer: the socket is SOCK_STREAM, so bytes arrive in arbitrary fragments and several messages can
// share one read (spec "Transport"; conformance HDR-01..03). The framer turns chunks into whole messages.
// At run time the native addon frames in C; this is the plain statement of the same rule that the C framing is
// held to (server/test/framing.test.ts, docs/native-addon.md).
//
// File descriptors: SCM_RIGHTS fds arrive with a read, not with a message. The kernel ends a stream read right
// after the segment that carried fds, and QEMU and libvfio-user send a message's fds with the sendmsg that starts
// the message. So the fds of a chunk belong to the last message that starts before the end of that chunk, i.e.
// to the message containing the chunk's last byte (the "bulk" framing of docs/native-addon.md).
//
// A framing error (size < 16, size > cap, type not 0/1) is fatal for the stream: nothing after it can be
// trusted. push() then throws a FramingError that hands back everything the framer held (complete frames of the
// same chunk and every fd not yet delivered) so the caller can answer, close the fds and the connection.

import { DEFAULT_MAX_MESSAGE_SIZE, HEADER_SIZE } from './constants.js';
import { ProtocolError } from './errors.js';
import { checkHeader, decodeHeader, type Header } from './header.js';

/** One whole message cut from the byte stream by the Framer: its header and payload. */
export interface Frame {
  header: Header;
  /** The payload (size - 16 bytes), a fresh array owned by the caller. */
  payload: Uint8Array;
  /** fds received with this message; ownership passes to the caller. */
  fds: number[];
}

/** Thrown by Framer.push on a framing error; carries what the caller must still handle or close. */
export class FramingError extends ProtocolError {
  /** The offending header (present when all 16 bytes had arrived), e.g. to answer its id before closing. */
  readonly header: Header | undefined;
  /** Whole messages completed before the error in the same push, with their fds. */
  readonly frames: Frame[];
  /** fds the framer held or just received that belong to no delivered frame; the caller must close them. */
  readonly fds: number[];

  constructor(cause: ProtocolError, header: Header | undefined, frames: Frame[], fds: number[]) {
    super(cause.errno, cause.code, cause.detail);
    this.name = 'FramingError';
    this.header = header;
    this.frames = frames;
    this.fds = fds;
  }
}

/**
 * Cuts a byte stream (SOCK_STREAM fragments) into whole messages and gives each its fds; a size below 16 or above
 * the cap, or a bad type, is a FramingError.
 */
export class Framer {
  /** Largest accepted `size` (header included). May be raised after negotiation; checked per header. */
  maxMessageSize: number;

  /** Header bytes of the message in progress. */
  private readonly head = new Uint8Array(HEADER_SIZE);
  private headLen = 0;
  private header: Header | undefined;
  private body: Uint8Array | undefined;
  private bodyLen = 0;
  /** fds of the message in progress, or of the next message to start when none is in progress. */
  private pendingFds: number[] = [];
  private failure: ProtocolError | undefined;

  constructor(opts?: { maxMessageSize?: number }) {
    this.maxMessageSize = opts?.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE;
  }

  /** Bytes held for the incomplete message (0 at a message boundary). */
  get buffered(): number {
    return this.headLen + this.bodyLen;
  }

  /** fds held for the incomplete message. */
  get bufferedFds(): number {
    return this.pendingFds.length;
  }

  /**
   * Feeds one chunk (one read) and the fds that came with it; returns every message completed by it, in order.
   * The chunk is copied, so the caller may reuse its memory.
   */
  push(chunk: Uint8Array, fds?: readonly number[]): Frame[] {
    const frames: Frame[] = [];
    if (this.failure) {
      // The stream is already desynchronised; refuse everything, but hand the new fds back.
      throw new FramingError(this.failure, undefined, frames, fds ? [...fds] : []);
    }
    let pos = 0;
    let lastFrameEndsChunk = false;
    try {
      while (pos < chunk.byteLength) {
        lastFrameEndsChunk = false;
        if (this.header === undefined) {
          const n = Math.min(HEADER_SIZE - this.headLen, chunk.byteLength - pos);
          this.head.set(chunk.subarray(pos, pos + n), this.headLen);
          this.headLen += n;
          pos += n;
          if (this.headLen < HEADER_SIZE) break;
          const h = decodeHeader(this.head);
          this.header = h;
          checkHeader(h, this.maxMessageSize);
          this.body = new Uint8Array(h.size - HEADER_SIZE);
          this.bodyLen = 0;
        }
        const body = this.body!;
        const n = Math.min(body.byteLength - this.bodyLen, chunk.byteLength - pos);
        body.set(chunk.subarray(pos, pos + n), this.bodyLen);
        this.bodyLen += n;
        pos += n;
        if (this.bodyLen === body.byteLength) {
          frames.push({ header: this.header, payload: body, fds: this.pendingFds });
          this.pendingFds = [];
          this.header = undefined;
          this.body = undefined;
          this.headLen = 0;
          this.bodyLen = 0;
          lastFrameEndsChunk = true;
        }
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.failure = e;
      const orphaned = [...this.pendingFds, ...(fds ?? [])];
      this.pendingFds = [];
      throw new FramingError(e, this.header, frames, orphaned);
    }
    if (fds && fds.length > 0) {
      // The message holding the chunk's last byte owns the chunk's fds. If that byte completed a frame, it is
      // the last frame; otherwise it is the message in progress (or, for an empty chunk at a boundary, the next).
      if (lastFrameEndsChunk && chunk.byteLength > 0) frames[frames.length - 1]!.fds.push(...fds);
      else this.pendingFds.push(...fds);
    }
    return frames;
  }

  /**
   * Drops the incomplete message (e.g. at disconnect) and returns the fds it held so the caller can close them.
   * Clears a previous framing failure too.
   */
  reset(): number[] {
    const fds = this.pendingFds;
    this.pendingFds = [];
    this.header = undefined;
    this.body = undefined;
    this.headLen = 0;
    this.bodyLen = 0;
    this.failure = undefined;
    return fds;
  }
}
