// Server -> client DMA: DMA_READ/DMA_WRITE requests for guest memory that came without an fd.
//
// - Requests carry the server's own ids (a u16 counter skipping ids still pending) and replies are matched by id
//   as they arrive, interleaved with the client's own commands on the same socket (or alone on the twin socket
//   when negotiated). A reply never goes through the command queue: the queue may be waiting on something that
//   only completes after this reply (never the other way round, see below).
// - Transfers are chunked by the client's max_data_xfer_size; chunks are pipelined.
// - Each chunk has a timeout (default 5 s, QEMU's own x-msg-timeout): the client may never answer (SDMA-07).
// - On disconnect every pending request fails (ENOTCONN).
// - Nothing in the command path ever awaits this messenger: QEMU serves DMA_READ/WRITE in its main loop under
//   the big lock, which a vCPU waiting for our reply to a REGION_READ holds: a reply that waited for a DMA round
//   trip would deadlock until the timeout. Device models run their DMA asynchronously, after replying.
//
// Reply tolerance: a DMA_WRITE reply of 16 bytes (spec, QEMU 11.1), 12 bytes (the spec table's erratum) or 0
// bytes (QEMU 10.1's header-only reply); a DMA_READ reply of 16 + count bytes, or 12 + count (QEMU 10.1's
// `u64 offset; u32 count` layout, unambiguous because the lengths differ).

import {
  Command,
  decodeDmaReadReply,
  decodeDmaWriteReply,
  Errno,
  encodeDmaReadRequest,
  encodeDmaWriteRequest,
  encodeMessage,
  type Header,
  isErrorReply,
  replyErrno,
} from 'vfio-user-protocol';
import type { DeviceLogger } from '../device.js';
import type { DmaMessageTransport } from '../dma/address-space.js';
import { DmaError } from '../dma/errors.js';

interface Pending {
  command: Command.DMA_READ | Command.DMA_WRITE;
  address: bigint;
  count: number;
  timer: NodeJS.Timeout;
  resolve(data: Uint8Array | undefined): void;
  reject(err: Error): void;
}

export interface MessengerOptions {
  /** Sends one message (to the twin socket when negotiated, else the main socket); false = queued. */
  send(bytes: Uint8Array): void;
  /** The client's max_data_xfer_size: the largest count per message. */
  maxDataXferSize: number;
  timeoutMs: number;
  log: DeviceLogger;
}

export interface MessengerStats {
  requests: number;
  replies: number;
  timeouts: number;
  errors: number;
  /** Replies matching no pending request (late after a timeout, or bogus). */
  unexpected: number;
}

export class DmaMessenger implements DmaMessageTransport {
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private closedWith: Error | undefined;
  readonly stats: MessengerStats = { requests: 0, replies: 0, timeouts: 0, errors: 0, unexpected: 0 };

  constructor(private readonly o: MessengerOptions) {
    if (!(o.maxDataXferSize > 0)) throw new RangeError('maxDataXferSize must be positive');
  }

  get inflight(): number {
    return this.pending.size;
  }

  async read(iova: bigint, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    const max = this.o.maxDataXferSize;
    const jobs: Promise<void>[] = [];
    for (let off = 0; off < length; off += max) {
      const n = Math.min(max, length - off);
      const at = off;
      jobs.push(
        this.request(Command.DMA_READ, iova + BigInt(off), n, undefined).then((data) => {
          out.set(data!, at);
        }),
      );
    }
    await settleAll(jobs);
    return out;
  }

  async write(iova: bigint, data: Uint8Array): Promise<void> {
    const max = this.o.maxDataXferSize;
    const jobs: Promise<unknown>[] = [];
    for (let off = 0; off < data.length; off += max) {
      const chunk = data.subarray(off, Math.min(data.length, off + max));
      jobs.push(this.request(Command.DMA_WRITE, iova + BigInt(off), chunk.length, chunk));
    }
    await settleAll(jobs);
  }

  private allocId(): number {
    for (let i = 0; i < 0x10000; i++) {
      const id = this.nextId;
      this.nextId = (this.nextId + 1) & 0xffff;
      if (!this.pending.has(id)) return id;
    }
    return -1;
  }

  private request(
    command: Command.DMA_READ | Command.DMA_WRITE,
    address: bigint,
    count: number,
    data: Uint8Array | undefined,
  ): Promise<Uint8Array | undefined> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.allocId();
    if (id < 0)
      return Promise.reject(new DmaError('io', address, 'too many DMA requests in flight', Errno.EBUSY));
    const payload =
      command === Command.DMA_READ
        ? encodeDmaReadRequest({ address, count: BigInt(count) })
        : encodeDmaWriteRequest({ address, data: data! });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        if (this.pending.get(id) !== p) return;
        this.pending.delete(id);
        this.stats.timeouts++;
        reject(
          new DmaError(
            'io',
            address,
            `${Command[command]} got no reply in ${this.o.timeoutMs} ms`,
            Errno.ETIMEDOUT,
          ),
        );
      }, this.o.timeoutMs);
      timer.unref?.();
      const p: Pending = { command, address, count, timer, resolve, reject };
      this.pending.set(id, p);
      this.stats.requests++;
      try {
        this.o.send(encodeMessage({ id, command }, payload));
      } catch (err) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(
          new DmaError(
            'io',
            address,
            `sending ${Command[command]} failed: ${(err as Error).message}`,
            Errno.ENOTCONN,
          ),
        );
      }
    });
  }

  /** A reply from the client (type 1). Returns false when it matched no pending request. */
  handleReply(h: Header, payload: Uint8Array): boolean {
    const p = this.pending.get(h.id);
    if (!p || p.command !== h.command) {
      this.stats.unexpected++;
      this.o.log.warn({ id: h.id, command: h.command }, 'reply matching no pending DMA request ignored');
      return false;
    }
    this.pending.delete(h.id);
    clearTimeout(p.timer);
    this.stats.replies++;
    if (isErrorReply(h)) {
      this.stats.errors++;
      const errno = replyErrno(h);
      p.reject(
        new DmaError('io', p.address, `client answered ${Command[p.command]} with errno ${errno}`, errno),
      );
      return true;
    }
    try {
      p.resolve(this.parse(p, payload));
    } catch (err) {
      this.stats.errors++;
      p.reject(
        new DmaError(
          'io',
          p.address,
          `bad ${Command[p.command]} reply: ${(err as Error).message}`,
          Errno.EPROTO,
        ),
      );
    }
    return true;
  }

  private parse(p: Pending, payload: Uint8Array): Uint8Array | undefined {
    if (p.command === Command.DMA_WRITE) {
      if (payload.length === 0) return undefined; // QEMU 10.1: header-only
      const r = decodeDmaWriteReply(payload);
      if (r.address !== p.address || r.count !== BigInt(p.count))
        throw new Error('reply does not echo the request');
      return undefined;
    }
    if (payload.length === 12 + p.count) {
      // QEMU 10.1 layout: u64 offset, u32 count, data at +12.
      const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
      if (dv.getBigUint64(0, true) !== p.address || dv.getUint32(8, true) !== p.count) {
        throw new Error('reply does not echo the request');
      }
      return payload.slice(12);
    }
    const r = decodeDmaReadReply(payload, 0, { maxDataXferSize: Math.max(p.count, 1) });
    if (r.address !== p.address || r.data.length !== p.count)
      throw new Error('reply does not echo the request');
    return r.data.slice();
  }

  /** Fails every pending request and refuses new ones (disconnect). */
  close(err: Error = new DmaError('io', 0n, 'client disconnected', Errno.ENOTCONN)): void {
    this.closedWith = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new DmaError('io', p.address, err.message, Errno.ENOTCONN));
    }
    this.pending.clear();
  }
}

/** Waits for every job (so no chunk is left unobserved), then rethrows the first failure. */
async function settleAll(jobs: Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(jobs);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
