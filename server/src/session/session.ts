// One client connection: VERSION negotiation, strictly ordered dispatch, replies and errors, server->client DMA,
// and the cleanup when the client goes away.
//
// Ordering. Commands are executed strictly in arrival order (a reply to command N implies every earlier command,
// NO_REPLY ones included, has been processed; a later REGION_READ observes an earlier posted write). Most
// handlers finish synchronously and the queue drains in the same tick; a handler that returns a promise (DMA_MAP
// awaiting the host IOMMU, DEVICE_RESET) holds every later message back until it settles. Replies from the
// client to our own DMA_READ/WRITE bypass the queue and are matched at once, so a queued command can never wait
// on them (and no handler ever awaits a server->client round trip: see messenger.ts).
//
// Replies. NO_REPLY commands never get one, not even an error (it is logged instead). Errors are header-only
// with a positive errno (ProtocolError/DeviceError/DmaMapError/IrqError carry it; anything else is a bug, logged
// with its stack and answered EIO... except for NO_REPLY). Every fd that arrived with a message is closed unless a
// handler took it, on every path.
//
// Backpressure: while an asynchronous handler holds the queue, reading stops once 4,096 commands or 64 MiB wait
// (the client then blocks on a full socket) and resumes below 1,024 / 16 MiB; likewise while more than 16 MiB of
// replies wait for a client that does not read them (until the send queue drains). A flooding client cannot make
// the server buffer without bound.
//
// Fatal conditions close the connection (after an EINVAL reply where one is possible): a first message other
// than VERSION (VER-01), a VERSION with another major (VER-04), a header with a bad size or type (HDR-04/05/10),
// a framing error from the transport. A second VERSION after negotiation is a plain EINVAL (VER-30); a malformed
// first VERSION is EINVAL and the client may try again.
//
// Disconnect (EOF, error, garbage, framing error, server shutdown): queued messages are dropped (their fds
// closed), the handler in progress is allowed to finish, pending server->client DMAs fail, the device is
// detached (it keeps its state), every IRQ eventfd is closed, every DMA mapping is dropped (and the host
// mirror's), and only then does `closed` resolve, so the next client starts from a clean address space.

import type pino from 'pino';
import * as native from 'vfio-user-native';
import {
  type Capabilities,
  Command,
  checkCommand,
  checkHeader,
  commandName,
  decodeHeader,
  decodeVersionRequest,
  Errno,
  ErrnoError,
  encodeErrorReply,
  encodeReplyMessage,
  errnoName,
  HEADER_SIZE,
  type Header,
  isReply,
  MESSAGE_OVERHEAD,
  MsgFlags,
  messageIdOf,
  ProtocolError,
  plainCommandOf,
  RegionInfoFlags,
  wantsReply,
  writeReplyMessage,
} from 'vfio-user-protocol';
import type { VfioUserDevice } from '../device.js';
import type { DmaAddressSpace } from '../dma/address-space.js';
import type { IrqController } from '../irq/irq-controller.js';
import { RateLimitedLog } from '../log-limit.js';
import { FdBag } from './fds.js';
import {
  DECLINED,
  HANDLERS,
  type HandlerContext,
  type HandlerResult,
  regionAccessInPlace,
} from './handlers.js';
import { DmaMessenger } from './messenger.js';
import { deviceRunning, gateCommand, migrationOf } from './migration.js';
import { negotiate, type ServerOffer } from './negotiate.js';
import type { Observers } from './observers.js';

/** Counters shared by every session of a server. */
export interface ServerStats {
  connections: number;
  /** Commands received, by command name (`DMA_MAP`, `UNKNOWN(99)`, ...). */
  messages: Record<string, number>;
  dmaMaps: number;
  dmaUnmaps: number;
  /** Error replies (or failed NO_REPLY commands), by errno name. */
  errors: Record<string, number>;
}

export interface SessionConfig {
  id: number;
  device: VfioUserDevice;
  dma: DmaAddressSpace;
  irq: IrqController;
  log: pino.Logger;
  offer: ServerOffer;
  dmaTimeoutMs: number;
  stats: ServerStats;
  /**
   * Hard cap on queued commands (default 100,000). Reading pauses long before (4,096 commands or 64 MiB), so
   * this only trips if the transport keeps delivering after a pause.
   */
  maxQueued?: number;
  /**
   * How the addon splits the byte stream (default 'exact'): 'exact' never reads past the current message, so
   * fds are attributed correctly for any sender (also one that writes two messages, the first with an fd, in
   * one sendmsg: conformance ROB-10); 'bulk' reads up to 64 KiB at once, cheaper under floods, correct for
   * senders that start each message with its own sendmsg (QEMU, libvfio-user). See docs/native-addon.md.
   */
  framing?: 'exact' | 'bulk';
  /** Operations tooling watching the wire and the requests (session/observers.ts). */
  observers?: Observers;
  /** The device's name, for the device's logger (default 'device'). */
  deviceName?: string;
  /**
   * How long a new connection may take to send its VERSION (default 5000 ms; 0: forever). A client that never
   * negotiates would otherwise hold the single client slot for good (docs/hardening.md).
   */
  versionTimeoutMs?: number;
}

/** Default deadline for a new connection's VERSION. */
export const DEFAULT_VERSION_TIMEOUT_MS = 5000;

/**
 * Hand-over (server/src/handover/, docs/handover.md): a session taken over from a previous process of this
 * server. It starts negotiated (no VERSION is expected or sent), with the client's capabilities as that process
 * negotiated them, the twin socket if there was one, and the messages that process received but did not process,
 * delivered before anything read from the socket.
 */
export interface SessionRestore {
  client: Capabilities;
  writeMultiple: boolean;
  twinFd?: number;
  /** Raw received bytes, in order, each piece with the fds of the message starting at its first byte. */
  input: InputPiece[];
  /** Runs after the device is attached and before reading starts (the device is resumed here). */
  beforeRead?(): void | Promise<void>;
}

/**
 * Received bytes handed over: the fds of the message starting at data[0]; `fdsTruncated` when the kernel dropped
 * some of them (MSG_CTRUNC), so that the successor fails that message with EMFILE as this process would have.
 */
export interface InputPiece {
  data: Uint8Array;
  fds: number[];
  fdsTruncated?: boolean;
}

/** What a hand-over exports of a live session (fds borrowed: the caller dups what it sends). */
export interface SessionHandoverView {
  id: number;
  client: Capabilities;
  writeMultiple: boolean;
  connFd: number;
  twinFd: number | undefined;
}

interface Queued {
  h: Header;
  payload: Uint8Array;
  fds: FdBag;
  /** The kernel dropped fds sent with it (MSG_CTRUNC: we are at RLIMIT_NOFILE): it fails with EMFILE. */
  fdsTruncated: boolean;
  /** Arrival time (performance.now()) when an observer wants latencies, else 0. */
  t0: number;
}

/** inboxPayload() keeps views for messages up to this size (a DMA_UNMAP with its bitmap header is 56 bytes). */
const PAYLOAD_VIEWS_KEPT = 64;

/** The queue entry of a command handled in place (session.handleInPlace) that needs one after all. */
function inPlaceQueued(
  inbox: Uint8Array,
  command: number,
  size: number,
  payload: Uint8Array,
  fds: FdBag,
): Queued {
  return {
    h: { id: messageIdOf(inbox), command, size, flags: 0, error: 0 },
    payload,
    fds,
    fdsTruncated: false,
    t0: 0,
  };
}

/** Backpressure thresholds: pause reading above HIGH queued commands/bytes, resume below LOW. */
const QUEUE_HIGH = 4096;
const QUEUE_LOW = 1024;
const QUEUE_HIGH_BYTES = 64 << 20;
const QUEUE_LOW_BYTES = 16 << 20;
/** Received fds held by queued commands: above HIGH reading pauses (each is an open fd of ours), below LOW resumes. */
const QUEUE_HIGH_FDS = 1024;
const QUEUE_LOW_FDS = 256;
/** Unsent reply bytes above which reading pauses until the send queue drains. */
const SEND_HIGH_BYTES = 16 << 20;
/**
 * How many replies the fast path returns to the addon between two looks at the send queue: the addon queues what
 * the socket does not take without telling JS, so a client that does not read its replies is noticed at most this
 * many outboxes (64 KiB each) past SEND_HIGH_BYTES.
 */
const SEND_CHECK_EVERY = 8;
/**
 * Direct reads (armDirect): how many reads the addon may answer without JS before a message comes here again. It
 * bounds how long a change the session is not told about (the log level set to trace) goes unseen.
 */
const DIRECT_BUDGET = 64;
/** The regions the addon can answer directly (its table's size). */
const DIRECT_MAX_REGIONS = 16;

/**
 * The one mapping from a failure to the errno of its error reply: an ErrnoError (ProtocolError, DeviceError,
 * DmaMapError, DmaError, IrqError) or an addon error states a positive errno; anything else states none and is
 * a bug (the callers answer EIO, or EINVAL for a stream that cannot be trusted).
 */
function replyErrnoOf(err: unknown): number | undefined {
  if (err instanceof ErrnoError) return err.errno;
  const n = (err as { errno?: unknown } | null)?.errno;
  return typeof n === 'number' && n > 0 ? n : undefined;
}
/** The fds of a message that came without any. */
const NO_FDS: readonly number[] = [];
/** pino's numeric value of 'trace'. */
const TRACE_LEVEL = 10;

/** An error that ends the session (after its reply, if any). */
class FatalError extends ProtocolError {}

type State = 'new' | 'ready' | 'closing' | 'closed';

export class Session {
  private state: State = 'new';
  private queue: Queued[] = [];
  private head = 0;
  private running: Promise<void> | null = null;
  private twin: native.Connection | undefined;
  private messenger: DmaMessenger | undefined;
  private ctx: HandlerContext | undefined;
  private attached = false;
  private readonly log: pino.Logger;
  /** Failed requests, one line per kind (command + errno) per interval. */
  private readonly failures: RateLimitedLog;
  private readonly maxMessageSize: number;
  private readonly maxQueued: number;
  private queuedBytes = 0;
  private queuedFds = 0;
  /** Why reading is paused: commands piling up behind a slow handler, or replies the client does not read. */
  private readonly holds = new Set<'queue' | 'send'>();
  /** How often reading was paused for backpressure (tests, stats). */
  pauses = 0;
  /** Commands answered in place (onInboxMessage) or by the addon directly (armDirect), counted here. */
  private inPlaceCount = 0;
  /**
   * Direct reads (setupDirectReads, armDirect): [0] the addon's budget, [1] how many reads it answered (wrapping);
   * undefined when the device has no bytes to read directly.
   */
  private direct: Int32Array | undefined;
  /** direct[1] when last added to the stats (syncStats). */
  private directSeen = 0;
  private unwatchObservers: (() => void) | undefined;
  /** Replies returned to the addon since the send queue was last looked at (inPlaceReply). */
  private sinceSendCheck = 0;
  /** inboxPayload()'s views, by message size, and the inbox they view. */
  private payloadViews: (Uint8Array | undefined)[] = [];
  private viewsOf: Buffer | undefined;

  /** Hand-over: commands keep queueing but are not dispatched (replies to our DMA requests still are). */
  private dispatchHeld = false;
  private resolveClosed!: () => void;
  /** Resolves once the session is fully cleaned up. */
  readonly closed: Promise<void>;
  /** Why the session ended (for logs/tests). */
  closeReason: string | undefined;
  private versionTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly conn: native.Connection,
    private readonly cfg: SessionConfig,
  ) {
    this.log = cfg.log.child({ session: cfg.id });
    this.failures = new RateLimitedLog(this.log);
    this.maxMessageSize = Math.max(cfg.offer.maxDataXferSize + MESSAGE_OVERHEAD, 65536);
    this.maxQueued = cfg.maxQueued ?? 100_000;
    this.closed = new Promise((r) => {
      this.resolveClosed = r;
    });
  }

  /** Commands answered without the queue: in place, by the fast path (onInboxMessage), or by the addon (tests, bench). */
  get inPlace(): number {
    this.syncStats();
    return this.inPlaceCount;
  }

  /** REGION_READs the addon answered by itself (direct reads) (tests, bench). */
  get directReads(): number {
    return this.direct === undefined ? 0 : this.direct[1]! >>> 0;
  }

  get isOpen(): boolean {
    return this.state === 'new' || this.state === 'ready';
  }

  start(): void {
    this.log.info('client connected');
    const deadline = this.cfg.versionTimeoutMs ?? DEFAULT_VERSION_TIMEOUT_MS;
    if (this.state === 'new' && deadline > 0) {
      this.versionTimer = setTimeout(() => {
        this.versionTimer = undefined;
        if (this.state === 'new') void this.close(`no VERSION within ${deadline} ms`);
      }, deadline);
      this.versionTimer.unref();
    }
    this.startReading();
  }

  // ---- receive ---------------------------------------------------------------------------------------------

  private startReading(): void {
    this.conn.start(
      {
        onMessage: (data, fds, fdsTruncated) => this.onMessage(data, fds, fdsTruncated),
        onInboxMessage: (inbox, size, fds) => this.onInboxMessage(inbox, size, fds),
        onClose: (err) => {
          void this.close(err ? `connection error: ${err.message}` : 'client closed the connection', err);
        },
        onDrain: () => this.unhold('send'),
      },
      { maxMessageSize: this.maxMessageSize, framing: this.cfg.framing ?? 'exact' },
    );
  }

  /**
   * The fast path (docs/architecture.md, "The hot path"): a plain command (one wanting a reply) arriving while
   * nothing is queued or running, with no observer (wire recorder, request metrics, trace logging) watching, is
   * run from the connection's inbox and its reply, built in the outbox, is returned to the addon to send. Two
   * kinds: REGION_READ/REGION_WRITE are read in place (regionAccessInPlace: no request or reply objects; every
   * unusual case is DECLINED to onMessage, the full way), and DMA_MAP/DMA_UNMAP run their usual handler on a view
   * of the inbox (they keep nothing of the payload past their synchronous part). Everything else is DECLINED.
   */
  private onInboxMessage(inbox: Buffer, size: number, fds: number[] | undefined): number {
    if (
      this.state !== 'ready' ||
      this.running !== null ||
      this.dispatchHeld ||
      this.head !== this.queue.length
    )
      return DECLINED;
    const ob = this.cfg.observers;
    if ((ob !== undefined && (ob.wireOn || ob.requestOn)) || this.log.levelVal <= TRACE_LEVEL)
      return DECLINED;
    // Nothing is queued, running or watching: the addon may answer the reads after this one itself.
    const direct = this.direct;
    if (direct !== undefined && direct[0] === 0) this.armDirect(direct);
    const command = plainCommandOf(inbox, size);
    if (command === Command.REGION_READ || command === Command.REGION_WRITE) {
      if (fds !== undefined) return DECLINED;
      return this.regionInPlace(command, inbox, size);
    }
    if (command === Command.DMA_MAP || command === Command.DMA_UNMAP)
      return this.handleInPlace(command, inbox, size, fds);
    return DECLINED;
  }

  private regionInPlace(command: number, inbox: Buffer, size: number): number {
    let r: number | Promise<HandlerResult>;
    try {
      r = regionAccessInPlace(this.ctx!, command, inbox, size, this.conn.outbox);
      if (r === DECLINED) return DECLINED;
    } catch (err) {
      this.count('messages', commandName(command));
      this.fail(this.queuedCopy(inbox, size), err);
      return 0;
    }
    this.countInPlace(command);
    if (typeof r === 'number') return this.inPlaceReply(r);
    // The device answers later: later messages queue behind it.
    this.runAsync(this.queuedCopy(inbox, size), r);
    return 0;
  }

  /**
   * A command whose handler keeps nothing of its payload past its synchronous part, run on a view of the inbox
   * with the checks of process()/dispatch(); a synchronous reply without fds is returned for the addon to send.
   */
  private handleInPlace(command: number, inbox: Buffer, size: number, fds: number[] | undefined): number {
    // The addon made `fds` for this message, and a message handled here is not offered to onMessage: the array is
    // ours to keep (no copy). The queue entry is made only when one is needed (an error, an asynchronous answer).
    const bag = fds === undefined ? FdBag.NONE : FdBag.taking(fds);
    const payload = this.inboxPayload(inbox, size);
    this.countInPlace(command);
    let r: HandlerResult | Promise<HandlerResult>;
    try {
      gateCommand(this.ctx!.migration, command);
      r = HANDLERS[command as Command.DMA_MAP]!(this.ctx!, payload, bag);
    } catch (err) {
      this.fail(inPlaceQueued(inbox, command, size, payload, bag), err);
      return 0;
    }
    if (r instanceof Promise) {
      this.runAsync(inPlaceQueued(inbox, command, size, payload, bag), r);
      return 0;
    }
    const out = this.conn.outbox;
    // `length`, not `byteLength` (protocol header.ts: V8 calls a getter for byteLength).
    if (r.fds !== undefined || HEADER_SIZE + (r.payload?.length ?? 0) > out.length) {
      this.finish(inPlaceQueued(inbox, command, size, payload, bag), r);
      return 0;
    }
    bag.closeRest();
    return this.inPlaceReply(writeReplyMessage(out, messageIdOf(inbox), command, r.payload));
  }

  /**
   * The payload of the inbox's message of `size` bytes, as a view of the inbox. Views of small sizes (DMA_MAP's
   * and DMA_UNMAP's) are made once per inbox: Buffer#subarray constructs a Buffer per message. Like a subarray,
   * the view aliases the inbox and is valid only during the inbox call.
   */
  private inboxPayload(inbox: Buffer, size: number): Uint8Array {
    if (size > PAYLOAD_VIEWS_KEPT)
      return new Uint8Array(inbox.buffer, inbox.byteOffset + HEADER_SIZE, size - HEADER_SIZE);
    if (this.viewsOf !== inbox) {
      this.viewsOf = inbox;
      this.payloadViews = [];
    }
    let v = this.payloadViews[size];
    if (v === undefined) {
      v = new Uint8Array(inbox.buffer, inbox.byteOffset + HEADER_SIZE, size - HEADER_SIZE);
      this.payloadViews[size] = v;
    }
    return v;
  }

  /**
   * A reply of `n` bytes in the outbox, for the addon to send. The addon queues what the socket does not take
   * without a word to JS: every SEND_CHECK_EVERY replies the send queue is looked at, and a client that does not
   * read its replies stops being read, as sendReply() does it (onDrain resumes).
   */
  private inPlaceReply(n: number): number {
    if (++this.sinceSendCheck >= SEND_CHECK_EVERY) {
      this.sinceSendCheck = 0;
      if (this.conn.queuedBytes > SEND_HIGH_BYTES) this.hold('send');
    }
    return n;
  }

  /** A command answered by a promise: later messages queue behind it until it settles (pump() and the fast path). */
  private runAsync(m: Queued, r: Promise<HandlerResult>): void {
    this.disarmDirect();
    this.running = r
      .then(
        (res) => this.finish(m, res),
        (err) => this.fail(m, err),
      )
      .then(() => {
        this.running = null;
        this.pump();
      });
  }

  /** A queue entry for a message handled in place that needs one after all (an error, an asynchronous device). */
  private queuedCopy(inbox: Buffer, size: number): Queued {
    const data = inbox.slice(0, size);
    return {
      h: decodeHeader(data),
      payload: data.subarray(HEADER_SIZE),
      fds: new FdBag(NO_FDS),
      fdsTruncated: false,
      t0: 0,
    };
  }

  private onMessage(data: Uint8Array, fds: number[], fdsTruncated = false): void {
    this.disarmDirect();
    if (!this.isOpen) {
      native.closeFdsQuietly(fds);
      return;
    }
    const ob = this.cfg.observers;
    if (ob?.wireOn) ob.wire(false, false, data, fds.length);
    let h: Header;
    try {
      h = decodeHeader(data);
      checkHeader(h, this.maxMessageSize);
      if (h.size !== data.length)
        throw new ProtocolError(Errno.EINVAL, 'BAD_MESSAGE_SIZE', 'framing mismatch');
    } catch (err) {
      native.closeFdsQuietly(fds);
      this.protocolViolation(data, err);
      return;
    }
    const payload = data.subarray(HEADER_SIZE);
    if (isReply(h)) {
      // A reply to our DMA_READ/WRITE (never queued); an unsolicited one is logged and ignored (HDR-09).
      native.closeFdsQuietly(fds);
      if (fds.length || fdsTruncated)
        this.log.warn({ id: h.id, fds: fds.length, fdsTruncated }, 'fds on a reply closed');
      if (this.messenger)
        this.messenger.handleReply(h, payload); // it logs replies matching nothing
      else this.log.warn({ id: h.id, command: h.command }, 'unsolicited reply before VERSION ignored');
      return;
    }
    if (this.queue.length - this.head >= this.maxQueued) {
      native.closeFdsQuietly(fds);
      void this.close(`more than ${this.maxQueued} commands queued`);
      return;
    }
    this.queue.push({
      h,
      payload,
      fds: new FdBag(fds),
      fdsTruncated,
      t0: ob?.requestOn ? performance.now() : 0,
    });
    this.queuedBytes += h.size;
    this.queuedFds += fds.length;
    // Backpressure: while an asynchronous handler holds the queue, stop reading once a lot is waiting (the
    // client then blocks on its socket) instead of buffering without bound.
    if (
      this.queue.length - this.head > QUEUE_HIGH ||
      this.queuedBytes > QUEUE_HIGH_BYTES ||
      this.queuedFds > QUEUE_HIGH_FDS
    )
      this.hold('queue');
    this.pump();
  }

  /** A header the stream cannot be trusted after: answer EINVAL if it looks like a command, then close. */
  private protocolViolation(data: Uint8Array, err: unknown): void {
    const errno = replyErrnoOf(err) ?? Errno.EINVAL;
    this.count('errors', errnoName(errno));
    if (this.cfg.observers?.requestOn) this.cfg.observers.violation(errno);
    this.log.warn({ err: (err as Error).message }, 'protocol violation, closing');
    if (data.length >= HEADER_SIZE) {
      const dv = new DataView(data.buffer, data.byteOffset, HEADER_SIZE);
      const flags = dv.getUint32(8, true);
      if ((flags & MsgFlags.NO_REPLY) === 0)
        this.sendRaw(encodeErrorReply(dv.getUint16(0, true), dv.getUint16(2, true), errno));
    }
    void this.close('protocol violation');
  }

  // ---- dispatch --------------------------------------------------------------------------------------------

  private pump(): void {
    if (this.running || this.dispatchHeld) return;
    while (this.head < this.queue.length && this.isOpen) {
      const m = this.queue[this.head]!;
      this.queue[this.head++] = undefined as unknown as Queued;
      this.queuedBytes -= m.h.size;
      this.queuedFds -= m.fds.count;
      if (
        this.holds.has('queue') &&
        this.queue.length - this.head < QUEUE_LOW &&
        this.queuedBytes < QUEUE_LOW_BYTES &&
        this.queuedFds < QUEUE_LOW_FDS
      ) {
        this.unhold('queue');
      }
      const r = this.process(m);
      if (r) {
        this.runAsync(m, r);
        return;
      }
    }
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
  }

  /** Runs one command; returns the handler's promise (for runAsync) only when it is asynchronous. */
  private process(m: Queued): Promise<HandlerResult> | undefined {
    const { h } = m;
    const name = commandName(h.command);
    this.count('messages', name);
    // The level can change at run time (the control socket's log-level); levelVal is a plain property read.
    if (this.log.levelVal <= TRACE_LEVEL)
      this.log.trace({ id: h.id, command: name, size: h.size, fds: m.fds.count }, 'command');
    let r: HandlerResult | Promise<HandlerResult>;
    try {
      r = this.dispatch(m);
    } catch (err) {
      this.fail(m, err);
      return undefined;
    }
    if (r instanceof Promise) return r;
    this.finish(m, r);
    return undefined;
  }

  private dispatch(m: Queued): HandlerResult | Promise<HandlerResult> {
    const { h, payload, fds } = m;
    if (this.state === 'new') {
      if (h.command !== Command.VERSION) {
        throw new FatalError(Errno.EINVAL, 'NEGOTIATION', `${commandName(h.command)} before VERSION`);
      }
      return this.version(h, payload, fds);
    }
    if (h.command === Command.VERSION) {
      throw new ProtocolError(Errno.EINVAL, 'NEGOTIATION', 'VERSION after negotiation');
    }
    if (m.fdsTruncated) {
      // Out of fds is our condition, not the client's mistake: this request fails, the session goes on (fail()
      // logs it once per interval with a count).
      throw new ProtocolError(
        Errno.EMFILE,
        'LIMIT_EXCEEDED',
        'the kernel dropped file descriptors sent with this message (MSG_CTRUNC): the server is at RLIMIT_NOFILE',
      );
    }
    const command = checkCommand(h.command, 'client');
    const handler = HANDLERS[command];
    if (!handler)
      throw new ProtocolError(Errno.EINVAL, 'UNKNOWN_COMMAND', `no handler for ${commandName(command)}`);
    // A stopped device accepts only a few commands (session/migration.ts, MIG-11/12).
    gateCommand(this.ctx!.migration, command);
    return handler(this.ctx!, payload, fds);
  }

  private finish(m: Queued, res: HandlerResult): void {
    // Send first: a reply may carry an fd the bag holds (the twin socket's client end); sending dups it.
    if (wantsReply(m.h) && this.isOpen) this.sendReply(m.h, res);
    m.fds.closeRest();
    const ob = this.cfg.observers;
    if (ob?.requestOn && m.t0) ob.request(commandName(m.h.command), 0, (performance.now() - m.t0) / 1e3);
  }

  private fail(m: Queued, err: unknown): void {
    m.fds.closeRest();
    const stated = replyErrnoOf(err);
    const known = stated !== undefined;
    const errno = stated ?? Errno.EIO;
    this.count('errors', errnoName(errno));
    const name = commandName(m.h.command);
    const fatal = err instanceof FatalError;
    if (!known) {
      this.log.error({ err, command: name, id: m.h.id }, 'handler failed unexpectedly');
    } else {
      // One line per kind of failure (command + errno) per interval, with the count of the ones it stands for:
      // an operator sees errors at info without a flooding client turning them into megabytes of log.
      const detail = { command: name, id: m.h.id, errno: errnoName(errno), msg: (err as Error).message };
      if (!wantsReply(m.h)) this.failures.warn(`${name}:${errno}:noreply`, detail, 'NO_REPLY command failed');
      else {
        this.log.debug(detail, 'command failed');
        this.failures.info(`${name}:${errno}`, detail, 'request failed');
      }
    }
    if (wantsReply(m.h) && this.isOpen) this.sendRaw(encodeErrorReply(m.h.id, m.h.command, errno));
    const ob = this.cfg.observers;
    if (ob?.requestOn && m.t0) ob.request(name, errno, (performance.now() - m.t0) / 1e3);
    if (fatal) void this.close(`fatal: ${(err as Error).message}`);
  }

  /**
   * count('messages', name) for the four commands of the fast path, as named property updates: the generic
   * keyed update goes through V8's megamorphic keyed access on every message.
   */
  private countInPlace(command: number): void {
    const rec = this.cfg.stats.messages;
    if (command === Command.REGION_READ) rec.REGION_READ = (rec.REGION_READ ?? 0) + 1;
    else if (command === Command.REGION_WRITE) rec.REGION_WRITE = (rec.REGION_WRITE ?? 0) + 1;
    else if (command === Command.DMA_MAP) rec.DMA_MAP = (rec.DMA_MAP ?? 0) + 1;
    else rec.DMA_UNMAP = (rec.DMA_UNMAP ?? 0) + 1;
    this.inPlaceCount++;
  }

  /**
   * Direct reads (docs/architecture.md, "Direct reads"): the device's side-effect-free regions (directReadBytes,
   * PCI config space) handed to the addon, which answers plain REGION_READs of them without a call into JS while
   * the budget armDirect() sets lasts. Called when the session becomes ready (VERSION, or a hand-over's restore).
   */
  private setupDirectReads(): void {
    const dev = this.cfg.device;
    if (!dev.directReadBytes) return;
    const regions: (Uint8Array | undefined)[] = [];
    let any = false;
    for (let i = 0; i < Math.min(dev.numRegions, DIRECT_MAX_REGIONS); i++) {
      const bytes = dev.directReadBytes(i);
      if (bytes === undefined) continue;
      const info = dev.regionInfo(i);
      // What regionAccessInPlace checks per read, checked once: readable, and the bytes are the whole region.
      if (
        !(bytes instanceof Uint8Array) ||
        (info.flags & RegionInfoFlags.READ) === 0 ||
        BigInt(bytes.byteLength) !== info.size
      ) {
        this.log.warn(
          { region: i, bytes: (bytes as { byteLength?: unknown }).byteLength, size: String(info.size) },
          'directReadBytes() does not match the region: its reads go through regionRead()',
        );
        continue;
      }
      regions[i] = bytes;
      any = true;
    }
    if (!any) return;
    const direct = new Int32Array(new ArrayBuffer(8));
    this.conn.setDirectReads({
      control: direct,
      regions,
      command: Command.REGION_READ,
      replyFlags: MsgFlags.TYPE_REPLY,
      maxCount: this.cfg.offer.maxDataXferSize,
      sendHigh: SEND_HIGH_BYTES,
    });
    this.direct = direct;
    this.unwatchObservers = this.cfg.observers?.watch(() => this.disarmDirect());
  }

  /**
   * Lets the addon answer the next DIRECT_BUDGET direct reads, when nothing but the checks onInboxMessage has made
   * stands in their way: a device that accepts region access (migration), reading not held.
   */
  private armDirect(direct: Int32Array): void {
    if (!deviceRunning(this.ctx!.migration) || this.holds.size !== 0) return;
    this.syncStats();
    direct[0] = DIRECT_BUDGET;
  }

  /** The session ends: no more direct reads; what the addon answered is in the stats. */
  private endDirect(): void {
    this.disarmDirect();
    this.syncStats();
    this.unwatchObservers?.();
    this.unwatchObservers = undefined;
  }

  /** From here every message reaches JS again (something is queued, running, held or watching). */
  private disarmDirect(): void {
    if (this.direct !== undefined) this.direct[0] = 0;
  }

  /** Adds the reads the addon answered directly to the server's stats. */
  syncStats(): void {
    const direct = this.direct;
    if (direct === undefined) return;
    const seen = direct[1]! >>> 0;
    const n = (seen - this.directSeen) >>> 0;
    if (n === 0) return;
    this.directSeen = seen;
    const rec = this.cfg.stats.messages;
    rec.REGION_READ = (rec.REGION_READ ?? 0) + n;
    this.inPlaceCount += n;
  }

  private count(what: 'messages' | 'errors', key: string): void {
    const rec = this.cfg.stats[what];
    rec[key] = (rec[key] ?? 0) + 1;
  }

  private hold(why: 'queue' | 'send'): void {
    if (this.holds.has(why)) return;
    if (this.holds.size === 0) {
      this.pauses++;
      safely(() => this.conn.pause());
    }
    this.holds.add(why);
  }

  private unhold(why: 'queue' | 'send'): void {
    if (!this.holds.delete(why) || this.holds.size > 0 || !this.isOpen) return;
    safely(() => this.conn.resume());
  }

  /** A success reply, built in the connection's outbox when it fits (no array per reply). */
  private sendReply(h: Header, res: HandlerResult): void {
    const payload = res.payload;
    const out = this.conn.outbox;
    if (this.cfg.observers?.wireOn || HEADER_SIZE + (payload?.length ?? 0) > out.length) {
      this.sendRaw(encodeReplyMessage(h.id, h.command, payload), res.fds);
      return;
    }
    const n = writeReplyMessage(out, h.id, h.command, payload);
    try {
      if (!this.conn.sendOutbox(n, res.fds) && this.conn.queuedBytes > SEND_HIGH_BYTES) this.hold('send');
    } catch (err) {
      this.log.debug({ err }, 'send failed');
    }
  }

  private sendRaw(bytes: Uint8Array, fds?: number[]): void {
    if (this.cfg.observers?.wireOn) this.cfg.observers.wire(true, false, bytes, fds?.length ?? 0);
    try {
      // A client that sends but does not read its replies: stop reading its commands until the replies drain
      // (onDrain), so the send queue stays bounded.
      if (!this.conn.send(bytes, fds) && this.conn.queuedBytes > SEND_HIGH_BYTES) this.hold('send');
    } catch (err) {
      // The peer is gone; its onClose follows.
      this.log.debug({ err }, 'send failed');
    }
  }

  // ---- VERSION ---------------------------------------------------------------------------------------------

  private version(h: Header, payload: Uint8Array, fds: FdBag): HandlerResult {
    let n: ReturnType<typeof negotiate>;
    try {
      const req = decodeVersionRequest(payload, fds.count, {
        maxDataXferSize: this.cfg.offer.maxDataXferSize,
        maxMsgFds: this.cfg.offer.maxMsgFds,
      });
      n = negotiate(req, h.size, this.cfg.offer);
    } catch (err) {
      if (err instanceof ProtocolError && err.code === 'VERSION_MISMATCH') {
        throw new FatalError(err.errno, err.code, err.message); // spec: close on a major we cannot speak
      }
      throw err;
    }
    if (n.unknownKeys.length) this.log.info({ keys: n.unknownKeys }, 'client sent unknown capability keys');
    if (n.dropped.length) this.log.info({ dropped: n.dropped }, 'VERSION reply trimmed to the request size');
    const client = n.client;
    const replyFds: number[] = [];
    // Twin-socket only when the reply (carrying the client's end) is actually sent.
    if (n.twinSocket && wantsReply(h)) {
      const [mine, theirs] = native.socketpair();
      fds.adopt(theirs); // closed after the reply went out
      replyFds.push(theirs);
      this.startTwin(mine);
    }
    this.ready(client, n.writeMultiple);
    this.log.info(
      {
        major: n.reply.major,
        minor: n.reply.minor,
        clientMaxMsgFds: client.maxMsgFds,
        clientMaxDataXferSize: client.maxDataXferSize,
        twinSocket: n.twinSocket,
      },
      'VERSION negotiated',
    );
    return { payload: n.payload, fds: replyFds.length ? replyFds : undefined };
  }

  private ready(client: Capabilities, writeMultiple: boolean): void {
    const cfg = this.cfg;
    this.ctx = {
      device: cfg.device,
      dma: cfg.dma,
      irq: cfg.irq,
      log: this.log,
      limits: { maxDataXferSize: cfg.offer.maxDataXferSize, maxMsgFds: cfg.offer.maxMsgFds },
      client,
      writeMultiple,
      // The server's stats object itself (plain fields; an object of getters/setters in front of it cost an
      // accessor call per DMA_MAP/DMA_UNMAP).
      counters: cfg.stats,
      migration: migrationOf(cfg.device),
    };
    this.messenger = new DmaMessenger({
      send: (bytes) => {
        if (cfg.observers?.wireOn) cfg.observers.wire(true, !!this.twin, bytes, 0);
        (this.twin ?? this.conn).send(bytes);
      },
      // Chunks must fit both the client's limit and our own receive limit (the DMA_READ reply comes back here).
      maxDataXferSize: Math.min(client.maxDataXferSize, cfg.offer.maxDataXferSize),
      timeoutMs: cfg.dmaTimeoutMs,
      log: this.log,
    });
    cfg.dma.setMessageTransport(this.messenger);
    this.state = 'ready';
    if (this.versionTimer) clearTimeout(this.versionTimer);
    this.versionTimer = undefined;
    try {
      cfg.device.attach({
        dma: cfg.dma,
        irq: cfg.irq,
        log: this.log.child({ device: cfg.deviceName ?? 'device' }),
      });
    } catch (err) {
      this.log.error({ err }, 'device attach threw');
      throw new FatalError(Errno.EIO, 'NEGOTIATION', `device attach failed: ${(err as Error)?.message}`);
    }
    this.attached = true;
    try {
      this.setupDirectReads();
    } catch (err) {
      // A device's directReadBytes() that throws or returns something else costs speed, not the session.
      this.disarmDirect();
      this.direct = undefined;
      this.log.error({ err }, 'direct reads not set up: reads go through regionRead()');
    }
  }

  private startTwin(fd: number): void {
    const twin = native.Connection.fromFd(fd);
    this.twin = twin;
    twin.start(
      {
        onMessage: (data, fds) => {
          native.closeFdsQuietly(fds);
          if (!this.isOpen) return;
          if (this.cfg.observers?.wireOn) this.cfg.observers.wire(false, true, data, fds.length);
          let h: Header;
          try {
            h = decodeHeader(data);
            checkHeader(h, this.maxMessageSize);
          } catch (err) {
            this.protocolViolation(data, err);
            return;
          }
          if (!isReply(h)) {
            this.log.warn({ command: commandName(h.command) }, 'command on the twin socket ignored');
            return;
          }
          this.messenger?.handleReply(h, data.subarray(HEADER_SIZE));
        },
        onClose: (err) => {
          void this.close(err ? `twin socket error: ${err.message}` : 'client closed the twin socket', err);
        },
      },
      { maxMessageSize: this.maxMessageSize, framing: this.cfg.framing ?? 'exact' },
    );
  }

  // ---- hand-over hooks (server/src/handover/, docs/handover.md) -----------------------------------------------

  /** Starts a session restored from a previous process (instead of start()): see SessionRestore. */
  async startRestored(r: SessionRestore): Promise<void> {
    this.log.info('client session restored from the previous process');
    this.ready(r.client, r.writeMultiple);
    if (r.twinFd !== undefined) this.startTwin(r.twinFd);
    for (const piece of r.input) this.conn.prefill(piece.data, piece.fds, piece.fdsTruncated);
    await r.beforeRead?.();
    if (!this.isOpen) return;
    this.startReading();
  }

  /**
   * Stops dispatching commands at a message boundary (they keep queueing; replies to our DMA_READ/WRITE are
   * still matched, so a device finishing a transfer is never starved) and resolves once no handler runs.
   */
  async holdDispatch(): Promise<void> {
    this.dispatchHeld = true;
    this.disarmDirect();
    while (this.running) await this.running.catch(() => {});
  }

  /** Undoes holdDispatch() and pauseInput(): a hand-over that failed leaves the session as it was. */
  releaseDispatch(): void {
    this.dispatchHeld = false;
    if (!this.isOpen) return;
    if (this.holds.size === 0) safely(() => this.conn.resume());
    if (this.twin) safely(() => this.twin!.resume());
    this.pump();
  }

  /** Server->client DMA requests awaiting the client's reply. */
  get dmaInflight(): number {
    return this.messenger?.inflight ?? 0;
  }

  /** Stops reading both sockets (bytes wait in the kernel's socket buffers). */
  pauseInput(): void {
    safely(() => this.conn.pause());
    if (this.twin) safely(() => this.twin!.pause());
  }

  /** The negotiated session as a hand-over exports it; undefined before VERSION (nothing to carry). */
  handoverView(): SessionHandoverView | undefined {
    if (this.state !== 'ready' || !this.ctx) return undefined;
    return {
      id: this.cfg.id,
      client: this.ctx.client,
      writeMultiple: this.ctx.writeMultiple,
      connFd: this.conn.fd,
      twinFd: this.twin?.fd,
    };
  }

  /**
   * After pauseInput(), at the point of no return: every received but unprocessed byte (queued commands, then
   * what the transport read past them), each piece with its fds, which now belong to the caller. What the twin
   * socket buffered (only replies to requests that no longer exist) is dropped.
   */
  takeInput(): InputPiece[] {
    const out: InputPiece[] = [];
    for (let i = this.head; i < this.queue.length; i++) {
      const m = this.queue[i]!;
      const p = m.payload;
      out.push({
        data: new Uint8Array(p.buffer, p.byteOffset - HEADER_SIZE, m.h.size),
        fds: m.fds.takeAll(),
        ...(m.fdsTruncated && { fdsTruncated: true }),
      });
    }
    this.queue = [];
    this.head = 0;
    this.queuedBytes = 0;
    this.queuedFds = 0;
    const rest = this.conn.takeBuffered();
    let pos = 0;
    rest.groups.forEach((g, i) => {
      if (g.at > pos) out.push({ data: rest.data.subarray(pos, g.at), fds: [] });
      const next = rest.groups[i + 1]?.at ?? rest.data.length;
      out.push({
        data: rest.data.subarray(g.at, next),
        fds: g.fds,
        ...(g.fdsTruncated && { fdsTruncated: true }),
      });
      pos = next;
    });
    if (pos < rest.data.length) out.push({ data: rest.data.subarray(pos), fds: [] });
    if (this.twin) {
      const t = this.twin.takeBuffered();
      for (const g of t.groups) native.closeFdsQuietly(g.fds);
      if (t.data.length)
        this.log.warn({ bytes: t.data.length }, 'bytes on the twin socket dropped at hand-over');
    }
    return out;
  }

  /**
   * The session lives in another process now: close our socket copies without any of the disconnect work (the
   * device, IRQ fds and DMA mappings are that process's) and resolve `closed`.
   */
  abandon(): void {
    if (!this.isOpen) return;
    this.state = 'closed';
    this.closeReason = 'handed over';
    this.endDirect();
    this.messenger?.close();
    this.cfg.dma.setMessageTransport(null);
    safely(() => this.conn.close());
    if (this.twin) safely(() => this.twin!.close());
    this.resolveClosed();
  }

  // ---- teardown --------------------------------------------------------------------------------------------

  /** Ends the session (idempotent); resolves when everything the client had is released. */
  close(reason: string, err?: unknown): Promise<void> {
    if (!this.isOpen) return this.closed;
    this.state = 'closing';
    this.closeReason = reason;
    this.endDirect();
    if (this.versionTimer) clearTimeout(this.versionTimer);
    this.versionTimer = undefined;
    if (err) this.log.warn({ reason, err }, 'client disconnected');
    else this.log.info({ reason }, 'client disconnected');
    void this.cleanup();
    return this.closed;
  }

  private async cleanup(): Promise<void> {
    const cfg = this.cfg;
    // The counts of failures not yet logged go out before the session's end line.
    this.failures.flushAll();
    for (let i = this.head; i < this.queue.length; i++) this.queue[i]!.fds.closeRest();
    this.queue = [];
    this.head = 0;
    this.messenger?.close();
    cfg.dma.setMessageTransport(null);
    safely(() => this.conn.close());
    if (this.twin) safely(() => this.twin!.close());
    // Let a handler already in progress (a DMA_MAP awaiting the mirror) finish before tearing down under it.
    if (this.running) await this.running.catch(() => {});
    if (this.attached) {
      this.attached = false;
      try {
        cfg.device.detach();
      } catch (e) {
        this.log.error({ err: e }, 'device detach threw');
      }
    }
    cfg.irq.reset();
    // Mid-migration: the device runs again for the next client, and dirty logging stops (migration.ts).
    try {
      await migrationOf(cfg.device)?.disconnected(cfg.dma);
    } catch (e) {
      this.log.error({ err: e }, 'resuming the device after a migration failed');
    }
    try {
      const dropped = await cfg.dma.unmapAll();
      if (dropped.length) this.log.info({ regions: dropped.length }, 'DMA mappings dropped');
    } catch (e) {
      this.log.error({ err: e }, 'unmap-all at disconnect failed');
    }
    this.state = 'closed';
    this.resolveClosed();
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // closing something already closed
  }
}
