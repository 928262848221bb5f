// The client's message layer: one or two channels (the main socket, plus the twin socket when negotiated),
// request ids and reply matching, per-request timeouts, the server's own requests (DMA_READ/DMA_WRITE), and the
// strictness rules QEMU applies to a misbehaving server. It knows nothing about payloads: client.ts does.
//
// Framing happens in the native addon, which hands us whole messages with the fds that came with them; we own
// those fds from then on and close every one nobody claims.
import { closeFdsQuietly } from 'vfio-user-native';
import {
  decodeHeader,
  Errno,
  encodeMessage,
  errnoOf,
  HEADER_SIZE,
  type Header,
  MsgFlags,
} from 'vfio-user-protocol';
import {
  ConnectionClosedError,
  commandName,
  ProtocolViolationError,
  VfioUserError,
  type ViolationKind,
} from './errors.js';

/** The part of the native `Connection` the client uses (so tests can wrap or instrument it). */
export interface MessageTransport {
  start(
    handlers: {
      /** `fdsTruncated`: the kernel dropped fds sent with this message (MSG_CTRUNC: we are at RLIMIT_NOFILE). */
      onMessage(data: Buffer, fds: number[], fdsTruncated?: boolean): void;
      onClose(err?: Error): void;
      onDrain?(): void;
    },
    opts: { maxMessageSize: number },
  ): void;
  send(data: Uint8Array, fds?: number[]): boolean;
  close(): void;
  /** Raise or lower the largest accepted message (optional). */
  setMaxMessageSize?(n: number): void;
}

/** Which socket a message travelled on. */
export type ChannelName = 'main' | 'twin';

/** A message as it arrived from the server: channel, header, payload and fds. */
export interface InboundMessage {
  channel: ChannelName;
  header: Header;
  /** The bytes after the 16-byte header. */
  payload: Uint8Array;
  /** fds that arrived with the message (owned by whoever claims them; closed by the connection otherwise). */
  fds: number[];
  /** The kernel dropped fds sent with it (MSG_CTRUNC: this process is at RLIMIT_NOFILE); `fds` is then empty. */
  fdsTruncated?: true;
}

/** A message as the client sent it: channel, header, payload and fds. */
export interface OutboundMessage {
  channel: ChannelName;
  header: Header;
  payload: Uint8Array;
  fds: number[];
  /** True for bytes sent through sendRaw (header parsed from them, may be nonsense). */
  raw: boolean;
}

/** A reply as received, before decoding: header, payload and fds. */
export interface RawReply {
  header: Header;
  payload: Uint8Array;
  /** fds that came with the reply; the caller owns them. */
  fds: number[];
}

/** Per-request options of the message layer: fds to send, header flags, timeout, reply size and fd limits, a message id. */
export interface RequestOptions {
  fds?: number[];
  /** Extra header flag bits to set (e.g. reserved bits for conformance probes). */
  flags?: number;
  /** Milliseconds to wait for the reply; 0 = forever. Defaults to the connection's timeoutMs. */
  timeoutMs?: number;
  /** Largest reply (whole message, header included) QEMU would accept; larger is a violation. */
  maxReplySize?: number;
  /** Most fds the reply may carry; more is a violation (QEMU: "unexpected FDs"). Default: unlimited. */
  maxReplyFds?: number;
  /** Use this id instead of the next one (conformance probes: repeated or extreme ids). */
  id?: number;
}

/** What a handler of a server request answers: a reply payload, or an errno for an error reply. */
export type ServerRequestResult = Uint8Array | number;
/** Answers one request the server sent (DMA_READ/DMA_WRITE): a reply payload or an errno. */
export type ServerRequestHandler = (
  msg: InboundMessage,
) => ServerRequestResult | Promise<ServerRequestResult>;

/** A protocol violation the connection saw in the server's messages: its kind and a description. */
export interface Violation {
  kind: ViolationKind;
  message: string;
  channel: ChannelName;
  header?: Header;
}

/** Options of a ClientConnection: timeouts, strictness, message and violation hooks. */
export interface ConnectionOptions {
  /** Default per-request timeout in ms (QEMU's x-msg-timeout is 5000). 0 = none. */
  timeoutMs?: number;
  /** Largest message the native layer accepts before it drops the connection. */
  maxMessageSize?: number;
  /**
   * Treat protocol violations as QEMU does: fatal, the connection is torn down (default). When false they are
   * recorded (and reported to onViolation) and the offending message is dropped or delivered as is.
   */
  strict?: boolean;
  /** Called for every inbound message before it is dispatched (tracing, conformance checks). */
  onInbound?: (msg: InboundMessage) => void;
  /** Called for every outbound message as it is sent. */
  onOutbound?: (msg: OutboundMessage) => void;
  onViolation?: (v: Violation) => void;
}

interface Pending {
  id: number;
  command: number;
  resolve(r: RawReply): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout | undefined;
  maxReplySize: number | undefined;
  maxReplyFds: number | undefined;
}

/** Remember this many timed-out ids, so a late reply is recognised as late rather than unsolicited. */
const LATE_ID_MEMORY = 4096;

/** The header of `bytes` (which must hold at least 16 bytes). */
export function parseHeader(bytes: Uint8Array): Header {
  return decodeHeader(bytes);
}

/** Header + payload in one array, `size` computed. */
export function buildMessage(header: Omit<Header, 'size'>, payload: Uint8Array): Uint8Array {
  return encodeMessage(header, payload);
}

/**
 * The client's message layer: the main (and twin) socket, request ids and reply matching, timeouts, the server's
 * own requests, and QEMU's strictness rules; knows nothing about payloads.
 */
export class ClientConnection {
  readonly timeoutMs: number;
  readonly strict: boolean;
  /** Every violation seen, fatal or not, in order. */
  readonly violations: Violation[] = [];

  private readonly channels = new Map<ChannelName, MessageTransport>();
  /** Requests awaiting a reply, by id; a FIFO per id because ids may repeat (spec; conformance HDR-20). */
  private readonly pending = new Map<number, Pending[]>();
  private pendingTotal = 0;
  private readonly lateIds = new Set<number>();
  private nextId = 0;
  private closedReason: Error | undefined;
  private readonly closeWaiters: ((reason: Error) => void)[] = [];
  private serverRequestHandler: ServerRequestHandler | undefined;
  private readonly opts: ConnectionOptions;
  private maxMessageSize: number;

  constructor(main: MessageTransport, opts: ConnectionOptions = {}) {
    this.opts = opts;
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.strict = opts.strict ?? true;
    this.maxMessageSize = opts.maxMessageSize ?? 16 * 1024 * 1024;
    this.attach('main', main);
  }

  /** Set who answers the server's requests (DMA_READ/DMA_WRITE). Without one, every request gets ENOSYS. */
  setServerRequestHandler(h: ServerRequestHandler | undefined): void {
    this.serverRequestHandler = h;
  }

  /** Accept inbound messages up to `n` bytes from now on (on every channel that supports changing it). */
  setMaxMessageSize(n: number): void {
    this.maxMessageSize = n;
    for (const t of this.channels.values()) t.setMaxMessageSize?.(n);
  }

  /** Add the twin socket (negotiated in VERSION): the server's requests and our replies to them travel there. */
  attachTwin(t: MessageTransport): void {
    this.attach('twin', t);
  }

  get hasTwin(): boolean {
    return this.channels.has('twin');
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Why the connection closed (undefined while open). */
  get closeReason(): Error | undefined {
    return this.closedReason;
  }

  /** Requests still waiting for their reply. */
  get pendingCount(): number {
    return this.pendingTotal;
  }

  /** Resolves with the close reason once the connection is closed (by either side). */
  whenClosed(): Promise<Error> {
    if (this.closedReason) return Promise.resolve(this.closedReason);
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  private attach(name: ChannelName, t: MessageTransport): void {
    this.channels.set(name, t);
    t.start(
      {
        onMessage: (data, fds, fdsTruncated) => this.onMessage(name, data, fds, fdsTruncated === true),
        onClose: (err) =>
          this.close(
            new ConnectionClosedError(
              err ? `${name} socket closed: ${err.message}` : `${name} socket closed by the peer`,
              err,
            ),
          ),
      },
      { maxMessageSize: this.maxMessageSize },
    );
  }

  private allocId(): number {
    // One u16 counter, as QEMU; skip ids still in flight so a reply can never be matched to the wrong request.
    for (let i = 0; i < 0x10000; i++) {
      const id = this.nextId;
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(id)) {
        this.lateIds.delete(id);
        return id;
      }
    }
    throw new VfioUserError(Errno.EBUSY, 0, 'all 65536 request ids are in flight');
  }

  /**
   * Send a command and wait for its reply. Resolves with error replies too (header.flags has ERROR, header.error
   * the errno); rejects on timeout (VfioUserError ETIMEDOUT) and on close (ConnectionClosedError).
   */
  request(command: number, payload: Uint8Array, opts: RequestOptions = {}): Promise<RawReply> {
    if (this.closedReason) return Promise.reject(this.closedError());
    let id: number;
    try {
      id = opts.id ?? this.allocId();
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<RawReply>((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
      const p: Pending = {
        id,
        command,
        resolve,
        reject,
        timer: undefined,
        maxReplySize: opts.maxReplySize,
        maxReplyFds: opts.maxReplyFds,
      };
      const q = this.pending.get(id);
      if (q) q.push(p);
      else this.pending.set(id, [p]);
      this.pendingTotal++;
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          if (!this.unqueue(p)) return;
          this.rememberLate(id);
          reject(
            new VfioUserError(
              Errno.ETIMEDOUT,
              command,
              `${commandName(command)} (id ${id}): no reply within ${timeoutMs} ms`,
              true,
            ),
          );
        }, timeoutMs);
      }
      try {
        this.transmit(
          'main',
          { id, command, flags: MsgFlags.TYPE_COMMAND | (opts.flags ?? 0), error: 0 },
          payload,
          opts.fds,
        );
      } catch (e) {
        this.settle(p);
        reject(e);
      }
    });
  }

  /** Send a command with NO_REPLY set: nothing will answer it, not even an error. */
  post(
    command: number,
    payload: Uint8Array,
    opts: Omit<RequestOptions, 'timeoutMs' | 'maxReplySize'> = {},
  ): void {
    if (this.closedReason) throw this.closedError();
    const id = opts.id ?? this.nextId;
    if (opts.id === undefined) this.nextId = (this.nextId + 1) & 0xffff;
    this.transmit(
      'main',
      { id, command, flags: MsgFlags.TYPE_COMMAND | MsgFlags.NO_REPLY | (opts.flags ?? 0), error: 0 },
      payload,
      opts.fds,
    );
  }

  /** Send bytes as they are (the header inside them is not checked and no reply is awaited). */
  sendRaw(bytes: Uint8Array, fds: number[] = [], channel: ChannelName = 'main'): boolean {
    if (this.closedReason) throw this.closedError();
    const t = this.channels.get(channel);
    if (!t) throw new Error(`no ${channel} channel`);
    if (this.opts.onOutbound) {
      const header =
        bytes.length >= HEADER_SIZE
          ? parseHeader(bytes)
          : { id: 0, command: 0, size: bytes.length, flags: 0, error: 0 };
      this.opts.onOutbound({ channel, header, payload: bytes.subarray(HEADER_SIZE), fds, raw: true });
    }
    return t.send(bytes, fds);
  }

  private transmit(
    channel: ChannelName,
    h: Omit<Header, 'size'>,
    payload: Uint8Array,
    fds: number[] = [],
  ): void {
    const t = this.channels.get(channel);
    if (!t) throw new Error(`no ${channel} channel`);
    const bytes = buildMessage(h, payload);
    this.opts.onOutbound?.({
      channel,
      header: { ...h, size: bytes.length },
      payload: bytes.subarray(HEADER_SIZE),
      fds,
      raw: false,
    });
    t.send(bytes, fds);
  }

  /** Take `p` out of its id's queue; false if it was no longer there. */
  private unqueue(p: Pending): boolean {
    const q = this.pending.get(p.id);
    const i = q ? q.indexOf(p) : -1;
    if (i < 0) return false;
    q!.splice(i, 1);
    if (q!.length === 0) this.pending.delete(p.id);
    this.pendingTotal--;
    return true;
  }

  private settle(p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    this.unqueue(p);
  }

  private rememberLate(id: number): void {
    this.lateIds.add(id);
    if (this.lateIds.size > LATE_ID_MEMORY) {
      const oldest = this.lateIds.values().next().value;
      if (oldest !== undefined) this.lateIds.delete(oldest);
    }
  }

  /**
   * Record a violation; in strict mode tear the connection down (QEMU does) and return true, so the caller stops
   * processing the message.
   */
  violation(kind: ViolationKind, message: string, channel: ChannelName = 'main', header?: Header): boolean {
    this.note(kind, message, channel, header);
    if (this.strict) {
      const err = new ProtocolViolationError(kind, message);
      this.close(
        new ConnectionClosedError(`connection closed after a protocol violation: ${err.message}`, err),
      );
      return true;
    }
    return false;
  }

  /** Record a violation that fails one operation but does not end the connection (a malformed reply body). */
  note(kind: ViolationKind, message: string, channel: ChannelName = 'main', header?: Header): void {
    const v: Violation = { kind, message, channel };
    if (header) v.header = header;
    this.violations.push(v);
    try {
      this.opts.onViolation?.(v);
    } catch {
      // an observer's bug must not break the protocol
    }
  }

  private onMessage(channel: ChannelName, data: Buffer, fds: number[], fdsTruncated = false): void {
    if (this.closedReason) {
      closeFdsQuietly(fds);
      return;
    }
    if (data.length < HEADER_SIZE) {
      closeFdsQuietly(fds);
      this.violation('bad-header', `message of ${data.length} bytes is shorter than a header`, channel);
      return;
    }
    const header = parseHeader(data);
    const payload = new Uint8Array(data.buffer, data.byteOffset + HEADER_SIZE, data.length - HEADER_SIZE);
    const msg: InboundMessage = {
      channel,
      header,
      payload,
      fds,
      ...(fdsTruncated && { fdsTruncated: true }),
    };
    try {
      this.opts.onInbound?.(msg);
    } catch {
      // an observer's bug must not break the protocol
    }
    if (header.size !== data.length) {
      closeFdsQuietly(fds);
      this.violation(
        'bad-header',
        `header size ${header.size} but ${data.length} bytes were framed`,
        channel,
        header,
      );
      return;
    }
    const type = header.flags & MsgFlags.TYPE_MASK;
    if (type === MsgFlags.TYPE_REPLY) this.onReply(msg);
    else if (type === MsgFlags.TYPE_COMMAND) this.onServerRequest(msg);
    else {
      closeFdsQuietly(fds);
      this.violation('bad-header', `unknown message type ${type}`, channel, header);
    }
  }

  private onReply(msg: InboundMessage): void {
    const { header, fds, channel } = msg;
    // Replies to requests sharing an id come back in request order (the server processes commands in order).
    const p = this.pending.get(header.id)?.[0];
    if (!p) {
      closeFdsQuietly(fds);
      if (this.lateIds.delete(header.id)) {
        this.violation(
          'late-reply',
          `reply id ${header.id} arrived after its request timed out`,
          channel,
          header,
        );
      } else {
        this.violation(
          'unsolicited-reply',
          `reply id ${header.id} matches no pending request`,
          channel,
          header,
        );
      }
      return;
    }
    if (header.command !== p.command) {
      if (
        this.violation(
          'reply-command-mismatch',
          `reply id ${header.id} is for ${commandName(header.command)}, the request was ${commandName(p.command)}`,
          channel,
          header,
        )
      ) {
        closeFdsQuietly(fds);
        return;
      }
    }
    if (msg.fdsTruncated) {
      // Out of fds on our side, not the server's fault: this request fails, the connection goes on.
      this.settle(p);
      p.reject(
        new VfioUserError(
          Errno.EMFILE,
          p.command,
          `${commandName(p.command)} reply: the kernel dropped its file descriptors (MSG_CTRUNC): this process is at RLIMIT_NOFILE`,
        ),
      );
      return;
    }
    if (p.maxReplySize !== undefined && header.size > p.maxReplySize) {
      if (
        this.violation(
          'oversize-reply',
          `${commandName(p.command)} reply of ${header.size} bytes exceeds the ${p.maxReplySize}-byte budget`,
          channel,
          header,
        )
      ) {
        closeFdsQuietly(fds);
        return;
      }
    }
    let keep = fds;
    if (p.maxReplyFds !== undefined && fds.length > p.maxReplyFds) {
      if (
        this.violation(
          'unexpected-fds',
          `${commandName(p.command)} reply carries ${fds.length} fds, at most ${p.maxReplyFds} allowed`,
          channel,
          header,
        )
      ) {
        closeFdsQuietly(fds);
        return;
      }
      closeFdsQuietly(fds.slice(p.maxReplyFds));
      keep = fds.slice(0, p.maxReplyFds);
    }
    this.settle(p);
    // Copy out of the native receive buffer: callers may keep replies around.
    p.resolve({ header, payload: new Uint8Array(msg.payload), fds: keep });
  }

  private onServerRequest(msg: InboundMessage): void {
    const { header } = msg;
    const noReply = (header.flags & MsgFlags.NO_REPLY) !== 0;
    const answer = (r: ServerRequestResult) => {
      if (noReply || this.closedReason) return;
      const ch = this.channels.has(msg.channel) ? msg.channel : 'main';
      try {
        if (typeof r === 'number') {
          this.transmit(
            ch,
            { id: header.id, command: header.command, flags: MsgFlags.TYPE_REPLY | MsgFlags.ERROR, error: r },
            new Uint8Array(0),
          );
        } else {
          this.transmit(
            ch,
            { id: header.id, command: header.command, flags: MsgFlags.TYPE_REPLY, error: 0 },
            r,
          );
        }
      } catch {
        // the socket went away while we answered; close() handles the rest
      }
    };
    const h = this.serverRequestHandler;
    if (!h) {
      closeFdsQuietly(msg.fds);
      answer(Errno.ENOSYS);
      return;
    }
    let r: ServerRequestResult | Promise<ServerRequestResult>;
    try {
      r = h(msg);
    } catch (e) {
      answer(errnoOf(e, Errno.EFAULT)); // EFAULT: QEMU's answer for a failed memory transaction
      return;
    }
    if (r instanceof Promise) r.then(answer, (e) => answer(errnoOf(e, Errno.EFAULT)));
    else answer(r);
  }

  private closedError(): ConnectionClosedError {
    const r = this.closedReason;
    return r instanceof ConnectionClosedError ? r : new ConnectionClosedError(undefined, r);
  }

  /** Close every channel; every pending request rejects with ConnectionClosedError. Idempotent. */
  close(reason?: Error): void {
    if (this.closedReason) return;
    this.closedReason = reason ?? new ConnectionClosedError('vfio-user connection closed by the client');
    for (const t of this.channels.values()) {
      try {
        t.close();
      } catch {
        // already closed
      }
    }
    const err = this.closedError();
    const pending = [...this.pending.values()].flat();
    this.pending.clear();
    this.pendingTotal = 0;
    for (const p of pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    for (const w of this.closeWaiters.splice(0)) w(this.closedReason);
  }
}
