// A raw vfio-user connection for the suite: sends arbitrary bytes (with fds), collects every message the server
// sends, checks the shape of each one, and serves the server's DMA_READ/DMA_WRITE requests from local memory.
//
// Replies are handed out in arrival order (the server must answer in request order); `call()` checks that the
// reply it gets is the one for its request, so a stray reply (to a NO_REPLY command, say) surfaces at the next
// call instead of going unnoticed.
import { Errno, errnoName } from 'vfio-user-protocol';
import type { NativeApi, RawSocket, RawSocketHandlers } from './native.js';
import {
  Cmd,
  cmdName,
  decodeHeader,
  Flag,
  HEADER_SIZE,
  type HeaderFields,
  hex,
  type MessageOptions,
  message,
} from './wire.js';

export interface Msg {
  hdr: HeaderFields;
  payload: Buffer;
  fds: number[];
  /** The whole message as received. */
  raw: Buffer;
  at: number;
}

/**
 * What kind of rule a deviation breaks; the profile turns it into a verdict (verdict.ts):
 *   must   - the spec says must (or the protocol cannot work otherwise: framing, one reply per command);
 *   qemu   - QEMU 11.1's client breaks (it drops the connection, fails realize, or mis-parses);
 *   should - the spec says should/recommended, or the suite recommends where the spec is silent;
 *   choice - an implementation choice the spec leaves open, where the suite prefers another;
 *   lvu    - only libvfio-user's own choice differs (judged under --profile lvu only).
 */
export type Level = 'must' | 'qemu' | 'should' | 'choice' | 'lvu';

/** Facts about one deviation, besides its text. */
export interface FindingFacts {
  /** Default: the case's rule level. */
  level?: Level;
  /** The deviation is libvfio-user's documented behaviour (--profile lvu accepts it). */
  lvu?: boolean;
  /** 'tolerates': QEMU 11.1 works with it (the qemu profile downgrades a must to WARN). */
  qemu?: 'tolerates';
}

export class CaseFail extends Error {
  override name = 'CaseFail';
  constructor(
    message: string,
    readonly facts: FindingFacts = {},
  ) {
    super(message);
  }
}
export class CaseSkip extends Error {
  override name = 'CaseSkip';
}

/** The case's claim does not hold (at the case rule's level unless `facts` say otherwise); ends the case. */
export function fail(msg: string, facts: FindingFacts = {}): never {
  throw new CaseFail(msg, facts);
}
export function skip(msg: string): never {
  throw new CaseSkip(msg);
}

/** The spec's rule for every error reply ("Header"), which expectErrorShape() holds. */
export const ERROR_SHAPE_RULE =
  'spec "Header": "If an error occurs, the reply message must only include the reply header."';

/** What the suite saw the server send as a request of its own (DMA_READ/DMA_WRITE or anything else). */
export interface ServerRequest {
  id: number;
  cmd: number;
  flags: number;
  size: number;
  address: bigint;
  count: bigint;
  nfds: number;
  at: number;
}

/** Guest memory that was mapped without an fd: the suite serves DMA_READ/DMA_WRITE into it. */
export interface MessageDmaRegion {
  address: bigint;
  data: Buffer;
  /** DmaMapFlag bits the region was mapped with. */
  prot: number;
}

/** How the suite answers one server request; return null to leave it unanswered. */
export type ServerRequestHandler = (req: ServerRequest, msg: Msg, conn: Conn) => Buffer | null | undefined;

export interface CallOptions extends MessageOptions {
  fds?: number[];
  timeoutMs?: number;
}

type Waiter = () => void;

export class Conn {
  /** Protocol violations seen on this connection (each fails the case that owns it). */
  readonly violations: string[] = [];
  readonly serverRequests: ServerRequest[] = [];
  readonly dmaRegions: MessageDmaRegion[] = [];
  /** Optional override for server requests (default: serve from dmaRegions). */
  onServerRequest: ServerRequestHandler | null = null;
  /** VERSION succeeded on this connection. */
  negotiated = false;
  /** Set by a case that broke framing on purpose: the connection is not used again. */
  tainted = false;
  closed = false;
  closeReason: string | null = null;
  closedAt = 0;
  /** Fixed by negotiation: our max_data_xfer_size (bigger server requests are violations). */
  clientMaxXfer = 1 << 20;
  timeoutMs: number;

  private closeHooks: (() => void)[] = [];
  private replies: Msg[] = [];
  private waiters: Waiter[] = [];
  private nextIdValue = 1;
  private sock: RawSocket;

  /** `open` connects (or adopts a socket) with the handlers it is given. */
  constructor(
    readonly native: NativeApi,
    open: (h: RawSocketHandlers) => RawSocket,
    readonly label: string,
    timeoutMs: number,
  ) {
    this.timeoutMs = timeoutMs;
    this.sock = open({
      onMessage: (buf, fds) => this.onMessage(buf, fds),
      onClose: (reason) => this.onPeerClose(reason),
    });
  }

  /** A fresh id per request (u16, wraps, never 0 so that a zeroed header is easy to spot). */
  nextId(): number {
    const id = this.nextIdValue;
    this.nextIdValue = (this.nextIdValue % 0xfffe) + 1;
    return id;
  }

  send(bytes: Uint8Array, fds: number[] = []): void {
    if (this.closed) fail(`${this.label}: send on a closed connection (${this.closeReason ?? 'closed'})`);
    this.sock.send(bytes, fds);
  }

  /** Send a message with a fresh id (unless given); returns the id. */
  post(cmd: number, payload?: Uint8Array, o: CallOptions = {}): number {
    const id = o.id ?? this.nextId();
    this.send(message(cmd, payload, { ...o, id }), o.fds ?? []);
    return id;
  }

  /** Send a command and wait for its reply; the reply must carry our id and command. */
  async call(cmd: number, payload?: Uint8Array, o: CallOptions = {}): Promise<Msg> {
    const id = this.post(cmd, payload, o);
    return this.replyTo(id, cmd, o.timeoutMs);
  }

  /** The next reply, which must be for (id, cmd). */
  async replyTo(id: number, cmd: number, timeoutMs = this.timeoutMs): Promise<Msg> {
    const r = await this.nextReply(timeoutMs);
    if (r === 'closed') {
      fail(`${cmdName(cmd)} (id ${id}): connection closed with no reply (${this.closeReason ?? 'EOF'})`);
    }
    if (r === 'timeout') fail(`${cmdName(cmd)} (id ${id}): no reply within ${timeoutMs} ms`);
    if (r.hdr.id !== id || r.hdr.cmd !== cmd) {
      closeFds(this.native, r.fds);
      fail(
        `${cmdName(cmd)} (id ${id}): got a reply for id ${r.hdr.id} ${cmdName(r.hdr.cmd)} instead ` +
          '(a reply to a NO_REPLY command, or replies out of order)',
      );
    }
    return r;
  }

  /** The next reply in arrival order, or 'timeout' / 'closed'. */
  async nextReply(timeoutMs = this.timeoutMs): Promise<Msg | 'timeout' | 'closed'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r) return r;
      if (this.closed) return 'closed';
      const left = deadline - Date.now();
      if (left <= 0) return 'timeout';
      await this.wait(left);
    }
  }

  /** Resolves true once nothing (no reply) arrived for `ms`; false if a reply came (it stays queued). */
  async quiet(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (this.replies.length > 0) return false;
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) return this.replies.length === 0;
      await this.wait(left);
    }
  }

  /** Waits up to `ms` for the server to close the connection. */
  async waitClosed(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.wait(left);
    }
    return true;
  }

  /** Waits until `pred()` holds (re-checked on every incoming event), or `ms` passes. */
  async until(pred: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) return pred();
      await this.wait(Math.min(left, 50));
    }
    return true;
  }

  /** Run `f` once the connection is closed (either side). */
  whenClosed(f: () => void): void {
    if (this.closed) f();
    else this.closeHooks.push(f);
  }

  private runCloseHooks(): void {
    for (const f of this.closeHooks.splice(0)) {
      try {
        f();
      } catch {
        // cleanup only
      }
    }
  }

  pendingReplies(): number {
    return this.replies.length;
  }

  /** Drop queued replies (closing their fds). */
  drain(): Msg[] {
    const out = this.replies;
    this.replies = [];
    for (const r of out) closeFds(this.native, r.fds);
    return out;
  }

  close(): void {
    if (!this.closed) {
      this.closed = true;
      this.closeReason = 'closed by the suite';
      this.closedAt = Date.now();
      this.sock.close();
    }
    this.drain();
    this.runCloseHooks();
    this.wake();
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      const waiter = done;
      this.waiters.push(waiter);
      function done() {
        clearTimeout(t);
        resolve();
      }
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private onPeerClose(reason?: string): void {
    if (!this.closed) {
      this.closed = true;
      this.closeReason = reason ?? 'EOF';
      this.closedAt = Date.now();
    }
    this.runCloseHooks();
    this.wake();
  }

  private onMessage(buf: Buffer, fds: number[]): void {
    if (buf.length < HEADER_SIZE) {
      this.violations.push(`server sent a ${buf.length}-byte message`);
      closeFds(this.native, fds);
      return;
    }
    const hdr = decodeHeader(buf);
    const m: Msg = { hdr, payload: buf.subarray(HEADER_SIZE), fds, raw: buf, at: Date.now() };
    if (hdr.size !== buf.length) {
      this.violations.push(`message size field ${hdr.size} != ${buf.length} bytes received`);
    }
    const type = hdr.flags & Flag.TYPE_MASK;
    if (type === Flag.REPLY) {
      this.replies.push(m);
      this.wake();
      return;
    }
    if (type !== Flag.COMMAND) {
      this.violations.push(`server sent message type ${type} (flags ${hex(hdr.flags)})`);
      closeFds(this.native, fds);
      return;
    }
    this.onRequest(m);
    this.wake();
  }

  private onRequest(m: Msg): void {
    const p = m.payload;
    const req: ServerRequest = {
      id: m.hdr.id,
      cmd: m.hdr.cmd,
      flags: m.hdr.flags,
      size: m.hdr.size,
      address: p.length >= 8 ? p.readBigUInt64LE(0) : -1n,
      count: p.length >= 16 ? p.readBigUInt64LE(8) : -1n,
      nfds: m.fds.length,
      at: m.at,
    };
    this.serverRequests.push(req);
    closeFds(this.native, m.fds);
    let reply: Buffer | null | undefined;
    if (this.onServerRequest) reply = this.onServerRequest(req, m, this);
    if (reply === undefined) reply = this.serveDma(req, m);
    if (reply && !this.closed) this.sock.send(reply, []);
  }

  /** Default DMA_READ/DMA_WRITE service over `dmaRegions` (QEMU's answers for bad requests). */
  serveDma(req: ServerRequest, m: Msg): Buffer | null {
    const errReply = (errno: number) =>
      message(req.cmd, undefined, { id: req.id, flags: Flag.REPLY | Flag.ERROR, error: errno });
    if (req.flags & Flag.NO_REPLY) return null;
    if (req.cmd !== Cmd.DMA_READ && req.cmd !== Cmd.DMA_WRITE) {
      this.violations.push(`server sent command ${cmdName(req.cmd)} to the client`);
      return errReply(Errno.ENOSYS);
    }
    if (req.nfds > 0) {
      this.violations.push(`server ${cmdName(req.cmd)} carried ${req.nfds} fd(s)`);
      return errReply(Errno.EINVAL);
    }
    if (m.payload.length < 16) {
      this.violations.push(`server ${cmdName(req.cmd)} with a ${m.payload.length}-byte payload`);
      return errReply(Errno.EINVAL);
    }
    const count = req.count;
    if (count > BigInt(this.clientMaxXfer)) {
      this.violations.push(
        `server ${cmdName(req.cmd)} count ${count} exceeds our max_data_xfer_size ${this.clientMaxXfer}`,
      );
      return errReply(Errno.E2BIG);
    }
    const expectLen = req.cmd === Cmd.DMA_WRITE ? 16 + Number(count) : 16;
    if (m.payload.length !== expectLen) {
      this.violations.push(
        `server ${cmdName(req.cmd)} payload ${m.payload.length} bytes, expected ${expectLen}`,
      );
      return errReply(Errno.EINVAL);
    }
    const r = this.dmaRegions.find(
      (d) => req.address >= d.address && req.address + count <= d.address + BigInt(d.data.length),
    );
    if (!r) {
      this.violations.push(
        `server ${cmdName(req.cmd)} [${hex(req.address)},+${hex(count)}) is outside every map`,
      );
      return errReply(Errno.EFAULT);
    }
    const off = Number(req.address - r.address);
    const head = Buffer.alloc(16);
    head.writeBigUInt64LE(req.address, 0);
    head.writeBigUInt64LE(count, 8);
    if (req.cmd === Cmd.DMA_READ) {
      const data = r.data.subarray(off, off + Number(count));
      return message(req.cmd, Buffer.concat([head, data]), { id: req.id, flags: Flag.REPLY });
    }
    if (!(r.prot & 0x2)) {
      this.violations.push(`server DMA_WRITE into read-only map at ${hex(req.address)}`);
      return errReply(Errno.EPERM);
    }
    m.payload.copy(r.data, off, 16, 16 + Number(count));
    return message(req.cmd, head, { id: req.id, flags: Flag.REPLY });
  }
}

export function closeFds(native: NativeApi, fds: number[]): void {
  for (const fd of fds) {
    try {
      native.closeFd(fd);
    } catch {
      // already closed
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Reply checks shared by every case.

export function isError(m: Msg): boolean {
  return (m.hdr.flags & Flag.ERROR) !== 0;
}

/** A success reply: flags exactly 0x1, error 0 (HDR-23). Returns the payload. */
export function expectOk(m: Msg, what: string): Buffer {
  if (m.hdr.flags & Flag.ERROR) fail(`${what}: error reply ${errnoName(m.hdr.error)} (expected success)`);
  if (m.hdr.flags !== Flag.REPLY) fail(`${what}: reply flags ${hex(m.hdr.flags)} (expected 0x1)`);
  if (m.hdr.error !== 0) fail(`${what}: success reply with error field ${m.hdr.error}`);
  return m.payload;
}

/** An error reply: exactly 16 bytes, flags 0x21, errno > 0 (HDR-22). Returns the errno. */
export function expectErrorShape(m: Msg, what: string): number {
  // That it failed at all is the case's claim (its level); how the error reply looks is the spec's must.
  if (!(m.hdr.flags & Flag.ERROR)) fail(`${what}: succeeded (expected an error reply)`);
  const must = { level: 'must' } as const;
  if (m.hdr.flags !== (Flag.REPLY | Flag.ERROR))
    fail(`${what}: error reply flags ${hex(m.hdr.flags)} (not 0x21)`, must);
  if (m.hdr.size !== HEADER_SIZE || m.payload.length !== 0) {
    fail(
      `${what}: error reply of ${m.hdr.size} bytes (${ERROR_SHAPE_RULE}; QEMU reads it only while it fits the ` +
        'buffer it sized for the success reply)',
      must,
    );
  }
  // The spec allows errno 0 with ERROR set ("It may be zero even if the Error bit is set"): the suite wants one.
  if (m.hdr.error === 0)
    fail(`${what}: error reply with errno 0 (allowed, but says nothing)`, { level: 'should' });
  if (m.hdr.error > 4095) fail(`${what}: error reply with errno ${m.hdr.error}`, must);
  return m.hdr.error;
}
