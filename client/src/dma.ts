// The client's side of server -> client DMA: the server sends DMA_READ/DMA_WRITE for guest memory it has no fd
// for (or chooses not to map), and the client answers from its own memory exactly as QEMU does (§2, §3.10):
// ENOSYS for any other command, EINVAL for fds or a malformed request, E2BIG above our max_data_xfer_size,
// EFAULT outside every DMA map. Every request is counted and logged, so tests can see that message DMA happened
// and how the server chunked it.
import { closeFdsQuietly } from 'vfio-user-native';
import {
  Command,
  DMA_RW_SIZE,
  DmaMapFlags,
  decodeDmaReadRequest,
  decodeDmaWriteRequest,
  Errno,
  encodeDmaReadReply,
  encodeDmaWriteReply,
  errnoOf,
  HEADER_SIZE,
  ProtocolError,
} from 'vfio-user-protocol';
import type { ClientConnection, InboundMessage, ServerRequestResult } from './connection.js';
import { DmaWindows } from './memory.js';

/** Answers the server's DMA: the bytes read / nothing for a write, or an errno to fail the request. */
export interface DmaHandler {
  read(address: bigint, count: number): Uint8Array | number | Promise<Uint8Array | number>;
  write(address: bigint, data: Uint8Array): undefined | number | Promise<undefined | number>;
}

/** One DMA_READ/DMA_WRITE the server sent, as the DmaServer logged it. */
export interface DmaLogEntry {
  command: number;
  address: bigint;
  count: bigint;
  /** 0 on success, else the errno we answered. */
  errno: number;
  channel: 'main' | 'twin';
}

/** Counters of a DmaServer: requests and bytes by direction, errors. */
export interface DmaStats {
  reads: number;
  writes: number;
  readBytes: number;
  writeBytes: number;
  /** Requests we failed (any errno). */
  errors: number;
  /** Largest count seen in a server DMA request. */
  maxCount: number;
  /** Requests for other commands (answered ENOSYS). */
  unknown: number;
}

/**
 * Serves the server's DMA_READ/DMA_WRITE from the client's own memory, as QEMU does (ENOSYS, EINVAL, E2BIG, EFAULT
 * as it answers them), and logs each request.
 */
export class DmaServer {
  /** The DMA windows the client told the server about (what it serves from). */
  readonly windows = new DmaWindows();
  readonly stats: DmaStats = {
    reads: 0,
    writes: 0,
    readBytes: 0,
    writeBytes: 0,
    errors: 0,
    maxCount: 0,
    unknown: 0,
  };
  /** The last `logSize` server DMA requests. */
  readonly log: DmaLogEntry[] = [];
  handler: DmaHandler | undefined;
  /** The max_data_xfer_size we advertised: the largest count we accept. */
  maxDataXferSize: number;

  constructor(
    private readonly conn: ClientConnection,
    maxDataXferSize: number,
    private readonly logSize: number,
  ) {
    this.maxDataXferSize = maxDataXferSize;
  }

  private record(e: DmaLogEntry): void {
    if (this.logSize <= 0) return;
    this.log.push(e);
    if (this.log.length > this.logSize) this.log.splice(0, this.log.length - this.logSize);
  }

  /** Answer one server request (the connection's server-request handler). */
  serve(m: InboundMessage): ServerRequestResult | Promise<ServerRequestResult> {
    const { header, payload, fds } = m;
    const cmd = header.command;
    if (cmd !== Command.DMA_READ && cmd !== Command.DMA_WRITE) {
      closeFdsQuietly(fds);
      this.stats.unknown++;
      return Errno.ENOSYS;
    }
    let address = 0n;
    let count = 0n;
    if (payload.length >= DMA_RW_SIZE) {
      const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
      address = dv.getBigUint64(0, true);
      count = dv.getBigUint64(8, true);
      if (count > BigInt(this.stats.maxCount)) this.stats.maxCount = Number(count);
    }
    const fail = (errno: number): number => {
      this.stats.errors++;
      this.record({ command: cmd, address, count, errno, channel: m.channel });
      return errno;
    };
    if (fds.length > 0) {
      closeFdsQuietly(fds);
      this.conn.note(
        'unexpected-fds',
        `server ${cmd === Command.DMA_READ ? 'DMA_READ' : 'DMA_WRITE'} carries fds`,
      );
      return fail(Errno.EINVAL);
    }
    if (header.size > HEADER_SIZE + DMA_RW_SIZE + this.maxDataXferSize) {
      // QEMU: "request larger than max" is fatal to the connection (strict mode); otherwise E2BIG below.
      this.conn.violation(
        'oversize-request',
        `server DMA request of ${header.size} bytes`,
        m.channel,
        header,
      );
    }
    const limits = { maxDataXferSize: this.maxDataXferSize };
    let data: Uint8Array | undefined;
    try {
      if (cmd === Command.DMA_READ) decodeDmaReadRequest(payload, 0, limits);
      else data = decodeDmaWriteRequest(payload, 0, limits).data;
    } catch (e) {
      return fail(e instanceof ProtocolError ? e.errno : Errno.EINVAL);
    }
    const n = Number(count);
    const done = (r: Uint8Array | number | undefined): ServerRequestResult => {
      if (typeof r === 'number') return fail(r);
      if (cmd === Command.DMA_READ) {
        if (!r || r.length !== n) return fail(Errno.EFAULT);
        this.stats.reads++;
        this.stats.readBytes += n;
        this.record({ command: cmd, address, count, errno: 0, channel: m.channel });
        return encodeDmaReadReply({ address, data: r });
      }
      this.stats.writes++;
      this.stats.writeBytes += n;
      this.record({ command: cmd, address, count, errno: 0, channel: m.channel });
      return encodeDmaWriteReply({ address, count });
    };
    const h = this.handler;
    if (h) {
      let r: ReturnType<DmaHandler['read']> | ReturnType<DmaHandler['write']>;
      try {
        r = cmd === Command.DMA_READ ? h.read(address, n) : h.write(address, new Uint8Array(data!));
      } catch (e) {
        return fail(errnoOf(e, Errno.EFAULT));
      }
      return r instanceof Promise ? r.then(done, (e) => fail(errnoOf(e, Errno.EFAULT))) : done(r);
    }
    return done(this.access(cmd, address, n, data));
  }

  /** DMA into the client's own memory: EFAULT outside every window, EPERM against the window's permission. */
  private access(
    cmd: number,
    address: bigint,
    n: number,
    data: Uint8Array | undefined,
  ): Uint8Array | number | undefined {
    const pieces = this.windows.resolve(address, n);
    if (!pieces || pieces.some((p) => !p.w.memory || p.w.memory.closed)) return Errno.EFAULT;
    const need = cmd === Command.DMA_READ ? DmaMapFlags.READ : DmaMapFlags.WRITE;
    if (pieces.some((p) => (p.w.flags & need) !== need)) return Errno.EPERM;
    if (cmd === Command.DMA_READ) {
      const out = new Uint8Array(n);
      let at = 0;
      for (const p of pieces) {
        out.set(p.w.memory!.read(p.w.memoryOffset + p.off, p.len), at);
        at += p.len;
      }
      return out;
    }
    let at = 0;
    for (const p of pieces) {
      p.w.memory!.write(p.w.memoryOffset + p.off, data!.subarray(at, at + p.len));
      at += p.len;
    }
    return undefined;
  }
}
