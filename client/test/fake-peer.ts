// A tiny scripted vfio-user server for the client's unit tests: the other end of a real socketpair (native
// Connection, real SCM_RIGHTS), speaking raw protocol bytes built here by hand, so the tests check the client's
// bytes independently of any codec.
import { Connection, closeFd, socketpair } from 'vfio-user-native';
import { type ClientOptions, VfioUserClient } from '../src/index.js';

export interface PeerMsg {
  id: number;
  command: number;
  size: number;
  flags: number;
  error: number;
  payload: Uint8Array;
  fds: number[];
}

export function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function msg(
  id: number,
  command: number,
  flags: number,
  payload: Uint8Array = new Uint8Array(0),
  error = 0,
) {
  const out = new Uint8Array(16 + payload.length);
  const d = dv(out);
  d.setUint16(0, id, true);
  d.setUint16(2, command, true);
  d.setUint32(4, out.length, true);
  d.setUint32(8, flags, true);
  d.setUint32(12, error, true);
  out.set(payload, 16);
  return out;
}

/** Little-endian fields: [bytes, value] pairs -> payload. */
export function le(...fields: [1 | 2 | 4 | 8, number | bigint][]): Uint8Array {
  const len = fields.reduce((n, [w]) => n + w, 0);
  const out = new Uint8Array(len);
  const d = dv(out);
  let o = 0;
  for (const [w, v] of fields) {
    if (w === 1) d.setUint8(o, Number(v));
    else if (w === 2) d.setUint16(o, Number(v), true);
    else if (w === 4) d.setUint32(o, Number(v), true);
    else d.setBigUint64(o, BigInt(v), true);
    o += w;
  }
  return out;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class FakePeer {
  readonly conn: Connection;
  private readonly queue: PeerMsg[] = [];
  private waiter: ((m: PeerMsg | undefined) => void) | undefined;
  private readonly receivedFds = new Set<number>();
  closedByClient = false;
  /** Every message received, in order. */
  readonly log: PeerMsg[] = [];

  constructor(fd: number) {
    this.conn = Connection.fromFd(fd);
    this.conn.start(
      {
        onMessage: (data: Buffer, fds: number[]) => {
          const d = dv(data);
          const m: PeerMsg = {
            id: d.getUint16(0, true),
            command: d.getUint16(2, true),
            size: d.getUint32(4, true),
            flags: d.getUint32(8, true),
            error: d.getUint32(12, true),
            payload: new Uint8Array(data.subarray(16)),
            fds,
          };
          for (const fd of fds) this.receivedFds.add(fd);
          this.log.push(m);
          const w = this.waiter;
          if (w) {
            this.waiter = undefined;
            w(m);
          } else this.queue.push(m);
        },
        onClose: () => {
          this.closedByClient = true;
          const w = this.waiter;
          this.waiter = undefined;
          w?.(undefined);
        },
      },
      { maxMessageSize: 64 * 1024 * 1024 },
    );
  }

  /** A client and a fake peer on the two ends of a fresh socketpair. */
  static pair(opts: ClientOptions = {}): { client: VfioUserClient; peer: FakePeer } {
    const [a, b] = socketpair() as [number, number];
    const peer = new FakePeer(b);
    const client = VfioUserClient.fromFd(a, opts);
    return { client, peer };
  }

  /** The next message from the client (rejects after timeoutMs, or if the client closed). */
  next(timeoutMs = 2000): Promise<PeerMsg> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`fake peer: no message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = (x) => {
        clearTimeout(t);
        if (x) resolve(x);
        else reject(new Error('fake peer: client closed the connection'));
      };
    });
  }

  /** Resolves true if no message arrives within ms. */
  async quiet(ms = 50): Promise<boolean> {
    if (this.queue.length) return false;
    try {
      await this.next(ms).then((m) => this.queue.unshift(m));
      return false;
    } catch {
      return true;
    }
  }

  async expect(command: number, timeoutMs = 2000): Promise<PeerMsg> {
    const m = await this.next(timeoutMs);
    if (m.command !== command) throw new Error(`fake peer: expected command ${command}, got ${m.command}`);
    return m;
  }

  send(bytes: Uint8Array, fds: number[] = []): void {
    this.conn.send(bytes, fds);
  }

  reply(m: PeerMsg, payload: Uint8Array = new Uint8Array(0), fds: number[] = []): void {
    this.send(msg(m.id, m.command, 0x1, payload), fds);
  }

  replyError(m: PeerMsg, errno: number): void {
    this.send(msg(m.id, m.command, 0x21, new Uint8Array(0), errno));
  }

  /** Answer a VERSION with 0.0 and these capabilities (a JSON object, NUL-terminated). */
  replyVersion(
    m: PeerMsg,
    caps: Record<string, unknown> = { max_msg_fds: 8, max_data_xfer_size: 1048576 },
    fds: number[] = [],
  ) {
    const json = new TextEncoder().encode(`${JSON.stringify({ capabilities: caps })}\0`);
    this.reply(m, concat(le([2, 0], [2, 0]), json), fds);
  }

  /** Close every fd the client sent us (the fake peer owns them) and the socket. */
  close(): void {
    try {
      this.conn.close();
    } catch {
      // already closed
    }
    this.closeReceivedFds();
  }

  closeReceivedFds(): void {
    for (const fd of this.receivedFds) {
      try {
        closeFd(fd);
      } catch {
        // closed already
      }
    }
    this.receivedFds.clear();
  }
}

/** Client + peer, negotiated with the given server capabilities. */
export async function negotiated(
  caps: Record<string, unknown> = { max_msg_fds: 8, max_data_xfer_size: 1048576 },
  opts: ClientOptions = {},
): Promise<{ client: VfioUserClient; peer: FakePeer }> {
  const { client, peer } = FakePeer.pair(opts);
  const p = client.negotiate();
  peer.replyVersion(await peer.expect(1), caps);
  await p;
  return { client, peer };
}
