// The hand-over channel between the running server and its successor: one UNIX socketpair end, inherited by the
// successor as fd 3 (docs/handover.md). Messages reuse the addon's framing (a 16-byte header whose u32 at offset
// 4 is the total size): `u32 magic 'VUHO' | u32 size | u32 type | u32 0 | JSON`. fds travel with SCM_RIGHTS in
// FDS messages of at most FDS_PER_MESSAGE each, ahead of the message that refers to them by position; the
// receiver collects them and hands them over with that message. JSON carries bigints as {"$n": "<decimal>"} and
// bytes as {"$b": "<base64>"}.

import * as native from 'vfio-user-native';

export const CHANNEL_MAGIC = 0x4f485556; // 'VUHO' little-endian
const HEADER = 16;
/** Below SCM_MAX_FD (253). */
const FDS_PER_MESSAGE = 200;
/** The state of 65,535 DMA maps is a few MiB of JSON; queued commands add at most 64 MiB. */
const MAX_CHANNEL_MESSAGE = 512 << 20;

export const MsgType = {
  /** successor -> server: started, speaks this format. */
  HELLO: 1,
  /** server -> successor: the state (after FDS messages with its fds). */
  STATE: 2,
  /** successor -> server: the state is refused (reason); the successor exits. */
  REFUSE: 3,
  /** successor -> server: the state is in place, nothing touched the wire yet (the health probe's answer). */
  READY: 4,
  /** server -> successor: the point of no return, with the unprocessed input; serve now. */
  GO: 5,
  /** successor -> server: serving (reading resumed). */
  RUNNING: 6,
  /** server -> successor: the hand-over is off; exit without touching anything. */
  ABORT: 7,
  FDS: 8,
  /** successor -> server, before HELLO: this format; send the host IOMMU backend (its fds come first). */
  HOST_REQUEST: 9,
  /** server -> successor: the host IOMMU backend's name, fds (by role, positions in the fds) and meta. */
  HOST: 10,
} as const;

export interface ChannelMessage {
  type: number;
  body: Record<string, unknown>;
  fds: number[];
}

function replacer(this: Record<string, unknown>, key: string, value: unknown): unknown {
  const raw = this[key];
  if (typeof raw === 'bigint') return { $n: raw.toString() };
  if (raw instanceof Uint8Array)
    return { $b: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64') };
  return value;
}

function reviver(_key: string, value: unknown): unknown {
  if (value && typeof value === 'object' && !Array.isArray(value)) {
    const o = value as Record<string, unknown>;
    if (typeof o.$n === 'string' && Object.keys(o).length === 1) return BigInt(o.$n);
    if (typeof o.$b === 'string' && Object.keys(o).length === 1)
      return new Uint8Array(Buffer.from(o.$b, 'base64'));
  }
  return value;
}

export function encodeChannelMessage(type: number, body: object): Buffer {
  const json = Buffer.from(JSON.stringify(body, replacer), 'utf8');
  const out = Buffer.alloc(HEADER + json.length);
  out.writeUInt32LE(CHANNEL_MAGIC, 0);
  out.writeUInt32LE(out.length, 4);
  out.writeUInt32LE(type, 8);
  json.copy(out, HEADER);
  return out;
}

export function decodeChannelMessage(data: Uint8Array): { type: number; body: Record<string, unknown> } {
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b.length < HEADER || b.readUInt32LE(0) !== CHANNEL_MAGIC) throw new Error('not a hand-over message');
  const body = JSON.parse(b.toString('utf8', HEADER), reviver) as unknown;
  if (!body || typeof body !== 'object') throw new Error('hand-over message body is not an object');
  return { type: b.readUInt32LE(8), body: body as Record<string, unknown> };
}

/** One end of the hand-over socketpair. Owns its fd; every received fd not taken by a caller is closed. */
export class Channel {
  private readonly conn: native.Connection;
  private readonly inbox: ChannelMessage[] = [];
  private collected: number[] = [];
  private waiter: ((m: ChannelMessage | Error) => void) | undefined;
  private closedWith: Error | undefined;

  constructor(fd: number) {
    this.conn = native.Connection.fromFd(fd);
    this.conn.start(
      {
        onMessage: (data, fds) => this.onMessage(data, fds),
        onClose: (err) => this.onClose(err ?? new Error('the other process closed the hand-over channel')),
      },
      { maxMessageSize: MAX_CHANNEL_MESSAGE, framing: 'exact' },
    );
  }

  private onMessage(data: Buffer, fds: number[]): void {
    let m: { type: number; body: Record<string, unknown> };
    try {
      m = decodeChannelMessage(data);
    } catch (err) {
      native.closeFdsQuietly(fds);
      this.onClose(err as Error);
      return;
    }
    if (m.type === MsgType.FDS) {
      this.collected.push(...fds);
      return;
    }
    const msg: ChannelMessage = { ...m, fds: [...this.collected, ...fds] };
    this.collected = [];
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w(msg);
    } else this.inbox.push(msg);
  }

  private onClose(err: Error): void {
    if (this.closedWith) return;
    this.closedWith = err;
    native.closeFdsQuietly(this.collected);
    this.collected = [];
    const w = this.waiter;
    this.waiter = undefined;
    w?.(err);
    this.conn.close();
  }

  /** Sends a message with fds (borrowed: the kernel passes copies). */
  send(type: number, body: object, fds: readonly number[] = []): void {
    if (this.closedWith) throw this.closedWith;
    for (let i = 0; i < fds.length; i += FDS_PER_MESSAGE) {
      this.conn.send(encodeChannelMessage(MsgType.FDS, {}), fds.slice(i, i + FDS_PER_MESSAGE));
    }
    this.conn.send(encodeChannelMessage(type, body));
  }

  /** The next message, or a rejection on timeout / close (the fds of a late message are closed). */
  receive(timeoutMs: number, what: string): Promise<ChannelMessage> {
    const queued = this.inbox.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (m) => {
        clearTimeout(timer);
        if (m instanceof Error) reject(m);
        else resolve(m);
      };
    });
  }

  close(): void {
    this.onClose(new Error('hand-over channel closed'));
    for (const m of this.inbox.splice(0)) native.closeFdsQuietly(m.fds);
  }
}
