// The wire recorder (`--record FILE`, or `trace start FILE` on the control socket): every message both ways,
// byte for byte, with a monotonic timestamp and its fd count, plus session start/end markers, in the format of
// the protocol package's trace module (docs/wire-trace.md); `vfio-user-trace FILE` decodes it.
//
// Never blocks the event loop and never grows without bound: records go to an fs write stream; while more than
// MAX_BUFFERED bytes wait for the disk, records are dropped and counted, and a DROPPED record says how many once
// the stream drains.

import { createWriteStream, type WriteStream } from 'node:fs';
import { encodeTraceFileHeader, encodeTraceRecordHeader, TraceFlags, TraceKind } from 'vfio-user-protocol';
import type { DeviceLogger } from '../device.js';
import type { ConnectEvent, DisconnectEvent, VfioUserServer } from '../server.js';

/** Bytes allowed to wait for the disk before records are dropped. */
export const MAX_BUFFERED = 64 << 20;

/** Counters of a WireRecorder: records and bytes written, records dropped while the disk lagged. */
export interface RecorderStats {
  records: number;
  bytes: number;
  dropped: number;
}

/**
 * Records every message both ways, byte for byte, to a file `vfio-user-trace` decodes (`--record FILE`); bounded
 * buffering, never blocks.
 */
export class WireRecorder {
  readonly stats: RecorderStats = { records: 0, bytes: 0, dropped: 0 };
  private readonly t0 = process.hrtime.bigint();
  private droppedBytes = 0;
  private droppedRecords = 0;
  private closed = false;
  private readonly detach: () => void;
  private readonly onConnect: (e: ConnectEvent) => void;
  private readonly onDisconnect: (e: DisconnectEvent) => void;

  private constructor(
    readonly path: string,
    private readonly out: WriteStream,
    private readonly server: VfioUserServer,
    private readonly log: DeviceLogger,
  ) {
    const startNs = BigInt(Date.now()) * 1_000_000n;
    out.write(encodeTraceFileHeader(startNs));
    out.on('drain', () => this.flushDropped());
    out.on('error', (err) => {
      this.log.error({ err, path }, 'wire recording failed; stopped');
      void this.close();
    });
    this.detach = server.observers.add({
      wire: (fromServer, twin, bytes, fds) => {
        const flags = (fromServer ? TraceFlags.FROM_SERVER : 0) | (twin ? TraceFlags.TWIN : 0);
        this.record(TraceKind.MESSAGE, flags, fds, bytes);
      },
    });
    this.onConnect = (e) => this.json(TraceKind.SESSION_START, { session: e.session, peer: e.peer });
    this.onDisconnect = (e) => this.json(TraceKind.SESSION_END, { session: e.session, reason: e.reason });
    server.on('connect', this.onConnect);
    server.on('disconnect', this.onDisconnect);
    // A client already being served when recording starts (trace start on the control socket).
    const cur = server.session;
    if (cur) this.json(TraceKind.SESSION_START, { session: cur.session, peer: cur.peer, joined: true });
  }

  /** Opens (creates or truncates, mode 0600) `path` and starts recording `server`'s sessions. */
  static async open(path: string, server: VfioUserServer, log: DeviceLogger): Promise<WireRecorder> {
    const out = createWriteStream(path, { flags: 'w', mode: 0o600 });
    await new Promise<void>((resolve, reject) => {
      out.once('open', () => {
        out.off('error', reject);
        resolve();
      });
      out.once('error', reject);
    });
    return new WireRecorder(path, out, server, log);
  }

  private json(kind: number, value: unknown): void {
    this.record(kind, 0, 0, new TextEncoder().encode(JSON.stringify(value)));
  }

  private record(kind: number, flags: number, fds: number, body: Uint8Array): void {
    if (this.closed) return;
    const size = 16 + body.length;
    if (this.out.writableLength + size > MAX_BUFFERED) {
      this.droppedRecords++;
      this.droppedBytes += size;
      this.stats.dropped++;
      return;
    }
    const t = process.hrtime.bigint() - this.t0;
    this.out.write(encodeTraceRecordHeader(kind, flags, fds, body.length, t));
    // The body is only valid during the observer call: copy it.
    this.out.write(Buffer.from(body));
    this.stats.records++;
    this.stats.bytes += size;
  }

  private flushDropped(): void {
    if (!this.droppedRecords || this.closed) return;
    const v = { records: this.droppedRecords, bytes: this.droppedBytes };
    this.droppedRecords = 0;
    this.droppedBytes = 0;
    this.log.warn(
      { ...v, path: this.path },
      'wire recorder dropped records (the disk is slower than the wire)',
    );
    this.json(TraceKind.DROPPED, v);
  }

  /** Stops recording and closes the file once everything buffered is written. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.flushDropped();
    this.closed = true;
    this.detach();
    this.server.off('connect', this.onConnect);
    this.server.off('disconnect', this.onDisconnect);
    await new Promise<void>((resolve) => this.out.end(() => resolve()));
  }
}
