// UNIX stream sockets with fd passing, framed as vfio-user messages (16-byte header, u32 LE size at offset 4).
// The addon owns each socket fd (one uv_poll per fd); JS sees whole messages and owns the fds that came with them.
import { lstatSync, unlinkSync } from 'node:fs';
import { addon, type BufferedInput, type NativeConnection, type NativeListener } from './addon.js';

export type { BufferedInput } from './addon.js';

import { isErrno } from './errors.js';

/** Default cap on one message (header included); bigger sizes close the connection with EPROTO. */
export const DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

/** SCM_MAX_FD: the most fds one sendmsg can carry (and the receive buffer holds). */
export const MAX_FDS_PER_MESSAGE = 253;

export interface ConnectionHandlers {
  /**
   * One complete message (a copy; header included) and the fds that arrived with it. The fds now belong to the
   * handler: close every one it does not keep. Called with `this` = the handlers object. All messages of one
   * wakeup arrive in one callback scope (process.nextTick and microtasks run after the last of them).
   * `fdsTruncated`: the kernel could not give us every fd sent with this message (MSG_CTRUNC: this process is at
   * RLIMIT_NOFILE); `fds` is then empty and the message should fail with EMFILE. The connection goes on.
   */
  onMessage(data: Buffer, fds: number[], fdsTruncated: boolean): void;
  /**
   * Once, after the fd is closed: without an argument for an orderly EOF or close(); with an Error
   * (errno/code/syscall) for EPROTO (bad size, EOF mid-message), ECONNRESET, EPIPE...
   */
  onClose(err?: Error): void;
  /** The send queue emptied after send() returned false. */
  onDrain?(): void;
  /**
   * Optional fast path, tried first for each message that fits the inbox (4,000 bytes) and arrived whole: the
   * message is `inbox[0, size)`, valid only during this call (the next message overwrites it: keep nothing that
   * views it). Return -1 to decline, and the message comes to onMessage as usual (as a copy, with the same fds);
   * otherwise the message is handled and the fds belong to the handler: return 0, or a length n > 0 to send
   * `outbox[0, n)` without fds, exactly as sendOutbox(n) would (the reply leaves without a second call into the
   * addon). This saves a copy and two crossings of the JS/C boundary per message.
   */
  onInboxMessage?(inbox: Buffer, size: number, fds: number[] | undefined): number;
}

export interface ConnectionOptions {
  /** Largest accepted message, header included (default 16 MiB). Advertise max_data_xfer_size + 64 or so. */
  maxMessageSize?: number;
  /**
   * 'bulk' (default): read up to 64 KiB; the fds of a read belong to the last message starting before the end of
   * that read — correct for senders that attach fds to the sendmsg that starts the message (QEMU, libvfio-user).
   * 'exact': no read spans two messages (a recvmsg for a header, a recvmmsg for the body and the next header);
   * correct for any sender.
   */
  framing?: 'bulk' | 'exact';
}

function checkMax(n: number): number {
  if (!Number.isInteger(n) || n < 16 || n > 0xffffffff) {
    throw new RangeError(`maxMessageSize must be an integer in [16, 2^32), got ${n}`);
  }
  return n;
}

/**
 * Messages up to this size reach JS through the connection's inbox (copied into a pooled Buffer, no allocation of
 * its own); bigger ones arrive as their own Buffer. Below Node's Buffer pool threshold (4 KiB).
 */
const INBOX_SIZE = 4000;
/** The outbox: what sendOutbox() sends. Replies up to this size are built there instead of in a new array. */
export const OUTBOX_SIZE = 64 * 1024;

/** One connected UNIX stream socket (client or accepted). */
export class Connection {
  readonly #n: NativeConnection;
  #flushScheduled = false;
  #prefilled = false;
  readonly #inbox = Buffer.alloc(INBOX_SIZE);
  /**
   * Scratch space for one outgoing message at a time: fill `outbox[0, n)` and call sendOutbox(n) right away
   * (sending copies it or queues a copy, so the outbox is free again when sendOutbox returns).
   */
  readonly outbox: Buffer = Buffer.alloc(OUTBOX_SIZE);

  private constructor(n: NativeConnection) {
    this.#n = n;
  }

  /** Blocking connect (fine for a UNIX socket) to `path`; the socket is then non-blocking. */
  static connect(path: string): Connection {
    const fd = addon.connectUnix(path);
    try {
      return Connection.fromFd(fd);
    } catch (err) {
      addon.closeFd(fd);
      throw err;
    }
  }

  /** Adopts a connected stream socket fd (socketpair end, twin socket, accepted fd). The Connection owns it now. */
  static fromFd(fd: number): Connection {
    return new Connection(new addon.NativeConnection(fd));
  }

  /** The socket fd, or -1 once closed. */
  get fd(): number {
    return this.#n.fd;
  }

  /** Bytes waiting in the send queue. */
  get queuedBytes(): number {
    return this.#n.queuedBytes;
  }

  /** Starts reading. Once only. */
  start(h: ConnectionHandlers, opts: ConnectionOptions = {}): void {
    const framing = opts.framing ?? 'bulk';
    if (framing !== 'bulk' && framing !== 'exact') throw new TypeError(`framing must be 'bulk' or 'exact'`);
    const max = checkMax(opts.maxMessageSize ?? DEFAULT_MAX_MESSAGE_SIZE);
    const inbox = this.#inbox;
    const fast = h.onInboxMessage;
    this.#n.start(
      h,
      (size, fds, data, fdsTruncated) => {
        if (data === undefined) {
          if (fast !== undefined && fdsTruncated !== true) {
            const n = fast.call(h, inbox, size, fds);
            if (n >= 0) return n;
          }
          // Buffer.allocUnsafe takes small sizes from Node's shared pool: no allocation per message.
          data = Buffer.allocUnsafe(size);
          inbox.copy(data, 0, 0, size);
        }
        h.onMessage(data, fds ?? [], fdsTruncated === true);
        return 0;
      },
      h.onClose,
      h.onDrain,
      max,
      framing === 'exact',
      inbox.buffer as ArrayBuffer,
      this.outbox.buffer as ArrayBuffer,
    );
    // Prefilled messages are delivered without waiting for the socket to become readable.
    if (this.#prefilled) this.#scheduleFlush();
  }

  /**
   * Hand-over of a live connection to another process: the bytes read but not delivered (complete messages
   * held back by pause() and the start of the next one), with the fds of the messages among them. The
   * connection must be paused (or not started) and not inside onMessage; the fds now belong to the caller and
   * the receive buffer is empty.
   */
  takeBuffered(): BufferedInput {
    return this.#n.takeBuffered();
  }

  /**
   * Before start(): appends `data` to the receive buffer, delivered before anything read from the socket;
   * `fds` belong to the message starting at data[0] and are owned by the connection on success (on a throw
   * the caller keeps them); `fdsTruncated` carries a group's mark across a hand-over. The receiving side of
   * takeBuffered().
   */
  prefill(data: Uint8Array, fds?: number[], fdsTruncated = false): void {
    this.#n.prefill(data, fds?.length ? fds : undefined, fdsTruncated);
    this.#prefilled = true;
  }

  /**
   * Direct reads (docs/native-addon.md, "Direct reads"): while `control[0]` (the budget) is above 0, a REGION_READ
   * with flags 0 and no fds, of a region `regions` has bytes for, lying within them, of 1 to
   * min(`maxCount`, 4096) bytes, while at most `sendHigh` bytes are queued to send, is answered by the addon from
   * those bytes without a call into JS: `control[0]` is decremented and `control[1]` (a wrapping count)
   * incremented per answer. Everything else reaches onInboxMessage/onMessage as before. The caller owns the policy:
   * it arms the budget only when such a read needs nothing of it, and zeroes it as soon as that may stop being so.
   * `command` and `replyFlags` are the protocol's REGION_READ and reply flag (defined in the protocol package).
   * The addon keeps the arrays alive; a second call replaces the table. At most 16 regions (0-15).
   */
  setDirectReads(opts: {
    control: Int32Array;
    regions: readonly (Uint8Array | undefined)[];
    command: number;
    replyFlags: number;
    maxCount: number;
    sendHigh: number;
  }): void {
    this.#n.setDirectReads(
      opts.control,
      opts.regions,
      opts.command,
      opts.replyFlags,
      opts.maxCount,
      opts.sendHigh,
    );
  }

  setMaxMessageSize(n: number): void {
    this.#n.setMaxMessageSize(checkMax(n));
  }

  /**
   * Sends `data` with `fds` (SCM_RIGHTS, with the first byte). True when written completely now (or, from inside
   * onMessage and without fds, corked: it leaves before the connection reads again); false when
   * (part of) it is queued — backpressure, onDrain follows — or when the connection is closed (data dropped).
   * The caller keeps ownership of its fds and may close them as soon as send() returns (queued fds are dups).
   * Throws for bad arguments (EBADF for an invalid fd, more than 253 fds).
   */
  send(data: Uint8Array, fds?: number[]): boolean {
    return this.#n.send(data, fds);
  }

  /** send() of `outbox[0, length)`, for messages built in the outbox (no array of their own). */
  sendOutbox(length: number, fds?: number[]): boolean {
    return this.#n.sendOutbox(length, fds);
  }

  /** SO_PEERCRED of the peer. */
  peerCredentials(): { pid: number; uid: number; gid: number } {
    return addon.peerCred(this.#n.fd);
  }

  /** Stops reading (the peer blocks once the socket buffer fills). Messages already read stay buffered. */
  pause(): void {
    this.#n.pause();
  }

  /** Reads again; complete messages buffered while paused are delivered from setImmediate. */
  resume(): void {
    this.#n.resume();
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      this.#n.flush();
    });
  }

  /**
   * Closes now: unsent data is dropped, undelivered fds are closed. Idempotent. onClose (if started) fires once,
   * from the event loop, after the fd is closed.
   */
  close(): void {
    this.#n.close();
  }
}

export interface ListenOptions {
  /** Permissions of the socket file (default 0o600), exact regardless of the umask. */
  mode?: number;
  backlog?: number;
}

/** Errors after which accepting is retried after a pause (level-triggered polling would spin). */
const RETRY_ACCEPT = new Set(['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM']);
const ACCEPT_RETRY_MS = 100;

/** A listening UNIX stream socket. */
export class Listener {
  readonly #n: NativeListener;
  readonly #path: string | undefined;
  readonly #ino: bigint | undefined;
  readonly #dev: bigint | undefined;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;

  private constructor(n: NativeListener, path?: string, dev?: bigint, ino?: bigint) {
    this.#n = n;
    this.#path = path;
    this.#dev = dev;
    this.#ino = ino;
  }

  /**
   * Creates the socket file at `path` with `mode` (default 0o600) and listens. A stale socket file (connect()
   * is refused) is replaced; a live one, or anything that is not a socket, gives EADDRINUSE.
   */
  static listen(path: string, opts: ListenOptions = {}): Listener {
    const mode = opts.mode ?? 0o600;
    const backlog = opts.backlog ?? 128;
    const r = addon.listenUnix(path, mode, backlog);
    try {
      return new Listener(new addon.NativeListener(r.fd), path, r.dev, r.ino);
    } catch (err) {
      addon.closeFd(r.fd);
      unlinkIfOurs(path, r.dev, r.ino);
      throw err;
    }
  }

  /**
   * Adopts an inherited listening fd (--fd N, systemd LISTEN_FDS). EINVAL if it is not listening. `owned`: the
   * socket file this listener is responsible for (a process handing its listener over), unlinked by close()
   * like a listen()ed one.
   */
  static adopt(fd: number, owned?: { path: string; dev: bigint; ino: bigint }): Listener {
    return new Listener(new addon.NativeListener(fd), owned?.path, owned?.dev, owned?.ino);
  }

  get fd(): number {
    return this.#n.fd;
  }

  get path(): string | undefined {
    return this.#path;
  }

  /** Stops accepting (new connections wait in the kernel's backlog) until resume(). */
  pause(): void {
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = undefined;
    this.#n.pause();
  }

  /** Accepts again after pause(). */
  resume(): void {
    if (!this.#closed) this.#n.resume();
  }

  /**
   * Accepts connections (accept4 NONBLOCK|CLOEXEC) and hands each one, not yet started, to onConnection.
   * EMFILE/ENFILE/ENOBUFS/ENOMEM are reported to onError and accepting resumes 100 ms later; other errors stop it.
   */
  start(onConnection: (conn: Connection) => void, onError?: (err: Error) => void): void {
    this.#n.start(
      (fd: number) => {
        let conn: Connection;
        try {
          conn = Connection.fromFd(fd);
        } catch (err) {
          addon.closeFd(fd);
          onError?.(err as Error);
          return;
        }
        onConnection(conn);
      },
      (err: Error) => {
        const code = (err as Error & { code?: string }).code ?? '';
        if (RETRY_ACCEPT.has(code) && !this.#closed) {
          // Not unref'd: the listener is still meant to be alive (its poll handle is stopped meanwhile).
          this.#retry = setTimeout(() => {
            this.#retry = undefined;
            if (!this.#closed) this.#n.resume();
          }, ACCEPT_RETRY_MS);
        }
        if (onError) onError(err);
        else process.emitWarning(err);
      },
    );
  }

  /**
   * Stops listening and closes the fd. `unlink` (default true for listen(), meaningless for adopt()) removes the
   * socket file if it is still the one this listener created.
   */
  close(opts: { unlink?: boolean } = {}): void {
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = undefined;
    if (
      !this.#closed &&
      (opts.unlink ?? true) &&
      this.#path &&
      this.#ino !== undefined &&
      this.#dev !== undefined
    ) {
      unlinkIfOurs(this.#path, this.#dev, this.#ino);
    }
    this.#closed = true;
    this.#n.close();
  }
}

function unlinkIfOurs(path: string, dev: bigint, ino: bigint): void {
  try {
    const st = lstatSync(path, { bigint: true });
    if (st.isSocket() && st.ino === ino && st.dev === dev) unlinkSync(path);
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw err;
  }
}

/** A connected pair of UNIX stream sockets, close-on-exec (blocking until adopted by Connection.fromFd). */
export function socketpair(): [number, number] {
  return addon.socketpair();
}
