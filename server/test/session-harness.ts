// A raw vfio-user client for the engine tests: speaks protocol bytes over a real socket through the addon,
// records everything it receives, matches replies by id, and can serve the server's DMA_READ/DMA_WRITE from a
// fake guest memory. Plus `startSession`, which wires a Session to one end of a socketpair.

import pino from 'pino';
import * as native from 'vfio-user-native';
import {
  Command,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  decodeHeader,
  encodeDmaReadReply,
  encodeDmaWriteReply,
  encodeErrorReply,
  encodeMessage,
  encodeVersionRequest,
  HEADER_SIZE,
  type Header,
  MsgFlags,
  QEMU_VERSION_JSON,
} from 'vfio-user-protocol';
import { DmaAddressSpace } from '../src/dma/address-space.js';
import { IrqController } from '../src/irq/irq-controller.js';
import type { ServerOffer } from '../src/session/negotiate.js';
import type { Observers } from '../src/session/observers.js';
import { type ServerStats, Session } from '../src/session/session.js';
import { TestDevice } from './engine-fixtures.js';

export interface Msg {
  h: Header;
  payload: Uint8Array;
  fds: number[];
}

export { QEMU_VERSION_JSON };

export function json(text: string): Uint8Array {
  const b = new TextEncoder().encode(text);
  const out = new Uint8Array(b.length + 1);
  out.set(b);
  return out;
}

/** A VERSION payload; `null` = no JSON at all (4 bytes). */
export function versionPayload(text: string | null = QEMU_VERSION_JSON, major = 0, minor = 0): Uint8Array {
  return encodeVersionRequest({ major, minor, capabilities: text === null ? undefined : json(text) });
}

export function u8(...bytes: number[]): Uint8Array {
  return new Uint8Array(bytes);
}

export interface SendOpts {
  fds?: number[];
  give?: number[];
  flags?: number;
  id?: number;
}

export class RawClient {
  readonly conn: native.Connection;
  /** Every message received on the main socket, in order. */
  readonly inbox: Msg[] = [];
  /** Arrival order of everything (main and twin): `reply <COMMAND> <id>` / `request <COMMAND> <id>`. */
  readonly arrivals: string[] = [];
  /** Server->client requests seen (main or twin socket). */
  readonly serverRequests: Msg[] = [];
  closed = false;
  closeErr: Error | undefined;
  private nextId = 0;
  private waiters: { match: (m: Msg) => boolean; resolve: (m: Msg) => void }[] = [];
  /** Replies nobody waited for yet. */
  private readonly unclaimed: Msg[] = [];
  /** Fake guest memory served to DMA_READ/DMA_WRITE; undefined = don't answer. */
  guest: Uint8Array | undefined;
  /** When set, DMA requests are answered with this errno. */
  dmaErrno: number | undefined;
  /** Hook run before answering a server request (e.g. to send a command first). */
  beforeDmaReply: ((m: Msg) => void) | undefined;
  twin: native.Connection | undefined;

  constructor(conn: native.Connection) {
    this.conn = conn;
    conn.start({
      onMessage: (data, fds) => this.onMessage(data, fds, this.conn),
      onClose: (err) => {
        this.closed = true;
        this.closeErr = err;
        for (const w of this.waiters.splice(0))
          w.resolve({
            h: { id: -1, command: -1, size: 0, flags: 0, error: 0 },
            payload: new Uint8Array(0),
            fds: [],
          });
      },
    });
  }

  static fromFd(fd: number): RawClient {
    return new RawClient(native.Connection.fromFd(fd));
  }

  /** Adopts the twin socket fd from a VERSION reply. */
  adoptTwin(fd: number): void {
    this.twin = native.Connection.fromFd(fd);
    this.twin.start({
      onMessage: (data, fds) => this.onMessage(data, fds, this.twin!),
      onClose: () => {},
    });
  }

  private onMessage(data: Buffer, fds: number[], via: native.Connection): void {
    const h = decodeHeader(data);
    const m: Msg = { h, payload: new Uint8Array(data.subarray(HEADER_SIZE)), fds };
    const isCmd = (h.flags & MsgFlags.TYPE_MASK) === MsgFlags.TYPE_COMMAND;
    this.arrivals.push(`${isCmd ? 'request' : 'reply'} ${Command[h.command] ?? h.command} ${h.id}`);
    if (isCmd) {
      this.serverRequests.push(m);
      this.serveDma(m, via);
      return;
    }
    if (via === this.conn) this.inbox.push(m);
    const i = this.waiters.findIndex((w) => w.match(m));
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    else this.unclaimed.push(m);
  }

  private serveDma(m: Msg, via: native.Connection): void {
    if (!this.guest && this.dmaErrno === undefined) return;
    this.beforeDmaReply?.(m);
    const { id, command } = m.h;
    if (this.dmaErrno !== undefined) {
      via.send(encodeErrorReply(id, command, this.dmaErrno));
      return;
    }
    const g = this.guest!;
    if (command === Command.DMA_READ) {
      const r = decodeDmaReadRequest(m.payload);
      const data = g.slice(Number(r.address), Number(r.address) + Number(r.count));
      via.send(
        encodeMessage(
          { id, command, flags: MsgFlags.TYPE_REPLY },
          encodeDmaReadReply({ address: r.address, data }),
        ),
      );
    } else if (command === Command.DMA_WRITE) {
      const w = decodeDmaWriteRequest(m.payload);
      g.set(w.data, Number(w.address));
      via.send(
        encodeMessage(
          { id, command, flags: MsgFlags.TYPE_REPLY },
          encodeDmaWriteReply({ address: w.address, count: BigInt(w.data.length) }),
        ),
      );
    }
  }

  /**
   * Sends one command; returns its id. `fds` are sent and kept; `give` are sent and then closed here (the server
   * shares this process, so a sent fd the test does not close would look like a server leak).
   */
  send(command: number, payload?: Uint8Array, opts: SendOpts = {}): number {
    const id = opts.id ?? this.nextId++ & 0xffff;
    const fds = opts.give ?? opts.fds;
    this.conn.send(encodeMessage({ id, command, flags: opts.flags ?? 0 }, payload), fds);
    if (opts.give) for (const fd of opts.give) native.closeFd(fd);
    return id;
  }

  /** Sends raw bytes (malformed messages). */
  sendRaw(bytes: Uint8Array, fds?: number[]): void {
    this.conn.send(bytes, fds);
  }

  /** Waits for the next reply with `id` (and `command`, if given); rejects on timeout. */
  waitReply(id: number, command?: number, ms = 3000): Promise<Msg> {
    const match = (m: Msg) => m.h.id === id && (command === undefined || m.h.command === command);
    // Replies that arrived before anyone waited for them (several replies in one wakeup).
    const early = this.unclaimed.findIndex(match);
    if (early >= 0) return Promise.resolve(this.unclaimed.splice(early, 1)[0]!);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no reply to id ${id} within ${ms} ms`));
      }, ms);
      const w = {
        match,
        resolve: (m: Msg) => {
          clearTimeout(t);
          resolve(m);
        },
      };
      this.waiters.push(w);
    });
  }

  /** Sends a command and waits for its reply. */
  async request(command: number, payload?: Uint8Array, opts: SendOpts = {}): Promise<Msg> {
    const id = this.send(command, payload, opts);
    return this.waitReply(id, command);
  }

  /** VERSION with the QEMU request (or `payload`); returns the reply. */
  async version(payload: Uint8Array = versionPayload()): Promise<Msg> {
    return this.request(Command.VERSION, payload);
  }

  close(): void {
    this.conn.close();
    this.twin?.close();
  }
}

/** Whether a message is an error reply with `errno`. */
export function isError(m: Msg, errno: number): boolean {
  return (
    m.h.flags === (MsgFlags.TYPE_REPLY | MsgFlags.ERROR) && m.h.error === errno && m.h.size === HEADER_SIZE
  );
}

export function isOk(m: Msg): boolean {
  return m.h.flags === MsgFlags.TYPE_REPLY && m.h.error === 0;
}

export const DEFAULT_OFFER: ServerOffer = {
  maxMsgFds: 16,
  maxDataXferSize: 1048576,
  pgsizes: 4096,
  maxDmaMaps: 65535,
  twinSocket: true,
};

export function newStats(): ServerStats {
  return { connections: 0, messages: {}, dmaMaps: 0, dmaUnmaps: 0, errors: {} };
}

export interface SessionRig {
  session: Session;
  client: RawClient;
  device: TestDevice;
  dma: DmaAddressSpace;
  irq: IrqController;
  stats: ServerStats;
  /** Closes the client, waits for the session's cleanup, closes the device. */
  teardown(): Promise<void>;
}

/** A Session on one end of a socketpair and a RawClient on the other. */
export function startSession(
  opts: {
    offer?: Partial<ServerOffer>;
    dma?: DmaAddressSpace;
    device?: TestDevice;
    dmaTimeoutMs?: number;
    log?: pino.Logger;
    observers?: Observers;
  } = {},
): SessionRig {
  const [a, b] = native.socketpair();
  const device = opts.device ?? new TestDevice();
  const dma = opts.dma ?? new DmaAddressSpace();
  const irq = new IrqController(device);
  const stats = newStats();
  const session = new Session(native.Connection.fromFd(a), {
    id: 1,
    device,
    dma,
    irq,
    log: opts.log ?? pino({ level: 'silent' }),
    offer: { ...DEFAULT_OFFER, ...opts.offer },
    dmaTimeoutMs: opts.dmaTimeoutMs ?? 2000,
    stats,
    observers: opts.observers,
  });
  session.start();
  const client = RawClient.fromFd(b);
  return {
    session,
    client,
    device,
    dma,
    irq,
    stats,
    async teardown() {
      client.close();
      await session.closed;
      device.close();
    },
  };
}
