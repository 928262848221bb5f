// Migration (vfio-user migration v2) in the engine: the MIG_DEVICE_STATE state machine, the data streams of
// MIG_DATA_READ/WRITE, command gating while the device is stopped, and DMA dirty logging (DMA_LOGGING_*).
// Offered only for devices with a `migration` facet (device.ts DeviceMigration); without one every migration
// command is EINVAL, as before (FEA-03, FEA-28, MIG-02).
//
// State machine. SET MIG_DEVICE_STATE walks the arcs of the protocol package's migStatePath (shortest path,
// saving states never interior, STOP_COPY -> PRE_COPY and requests for ERROR/P2P refused with EINVAL) one at a
// time; each arc completes before the reply. The device hears when it starts or stops running (setRunning: it
// runs in RUNNING and PRE_COPY), is saved on the arcs into PRE_COPY/STOP_COPY and loaded on RESUMING -> STOP. A failing arc returns the device's errno (DeviceError, FEA-19; anything else EIO) and
// leaves the FSM in ERROR, which only DEVICE_RESET leaves (to RUNNING, MIG-14). The FSM lives with the device,
// not the connection, but a client that disconnects mid-migration does not leave the device stopped for the
// next one: the FSM returns to RUNNING (streams dropped, dirty logging stopped).
//
// Streams. Entering PRE_COPY takes an early snapshot, entering STOP_COPY the final one (device stopped); each is
// one frame `u32 magic 'VUMS' | u32 length | device.saveState() bytes`, read in chunks of at most the client's
// max_data_xfer_size; a reply shorter than asked (0 bytes once drained) is the end of the current data (MIG-06).
// The destination accumulates MIG_DATA_WRITE bytes in RESUMING; RESUMING -> STOP parses the frames (every one
// complete, at least one, nothing trailing), and loads the last one: PRE_COPY data is superseded by the
// STOP_COPY snapshot that follows it in the stream. Torn or foreign data fails the arc (MIG-13, state ERROR);
// no data at all leaves the device as it was (an abandoned resume, FEA-17).
//
// Gating (the notes table: follow libvfio-user). In STOP only REGION_READ/WRITE, DEVICE_FEATURE and
// MIG_DATA_READ are accepted (MIG-12: DMA_MAP, DEVICE_RESET, SET_IRQS refused; region access allowed so a
// stopped device can still be inspected); in STOP_COPY only DEVICE_FEATURE and MIG_DATA_READ (MIG-11; region
// access is refused too, as libvfio-user does: the state is being copied out). Everything else there is EINVAL.
// RESUMING, PRE_COPY, RUNNING and ERROR gate nothing (the destination may still map memory while resuming;
// ERROR must accept DEVICE_RESET).
//
// Dirty logging. DMA_LOGGING_START installs a DirtyLog (dma/dirty.ts) on the address space, whose access API
// marks every device write; START again with the same page size is a no-op, with another EINVAL (FEA-21);
// STOP removes it (STOP without START is OK). REPORT needs START (EINVAL, FEA-22), the started page size
// (EINVAL), and must name exactly one map: no map at iova ENOENT (FEA-24), part of a map ENOTSUP (FEA-23), an
// fd-less map EINVAL (FEA-25), the libvfio-user errnos. The bitmap is clear-on-read (FEA-27).

import {
  Command,
  DeviceFeatureFlags,
  type DeviceFeatureRequest,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeMigDeviceState,
  deviceFeatureEcho,
  deviceFeatureGetReply,
  dirtyBitmapSize,
  Errno,
  encodeDeviceFeatureReply,
  encodeDmaLoggingReport,
  encodeMigDataReadReply,
  encodeMigDeviceState,
  encodeMigrationFlags,
  Feature,
  featureIndex,
  MigrationFlags,
  MigState,
  migStatePath,
  ProtocolError,
} from 'vfio-user-protocol';
import { DeviceError, type DeviceMigration, type VfioUserDevice } from '../device.js';
import type { DmaAddressSpace } from '../dma/address-space.js';
import { DirtyLog } from '../dma/dirty.js';

/** Frame magic 'VUMS' (vfio-user migration stream), little-endian. */
export const MIG_FRAME_MAGIC = 0x534d5556;
const FRAME_HEADER = 8;
/** Bound on what a destination accumulates in RESUMING (a hostile client must not exhaust memory). */
export const MAX_RESUME_BYTES = 256 << 20;
/** max_bitmap_size advertised in VERSION: the largest DMA_LOGGING_REPORT bitmap we build (bytes). */
export const MAX_BITMAP_SIZE = 1 << 20;

function einval(message: string): never {
  throw new ProtocolError(Errno.EINVAL, 'BAD_VALUE', message);
}

const isRunning = (s: number) => s === MigState.RUNNING || s === MigState.PRE_COPY;

/** One device's migration state (kept across connections). */
export class MigrationController {
  state: number = MigState.RUNNING;
  /** The current saving stream (PRE_COPY / STOP_COPY) and how much of it was read. */
  private out: Uint8Array | undefined;
  private outPos = 0;
  /** What RESUMING received so far. */
  private incoming: Uint8Array[] = [];
  private incomingBytes = 0;
  /** Incremental framing of `incoming`: the frame header being gathered, bytes left in the current frame. */
  private readonly frameHeader = new Uint8Array(FRAME_HEADER);
  private frameHeaderFill = 0;
  private frameLeft = 0;
  /** The device's check of the current frame's state as it arrives (DeviceMigration.incomingCheck). */
  private frameCheck: { push(chunk: Uint8Array): void; end(): void } | undefined;
  /** Why the incoming stream is already known to be bad (every later write and the load fail with EINVAL). */
  private incomingBad: string | undefined;
  readonly dirty = new DirtyLog();
  /** Bytes served by MIG_DATA_READ / accepted by MIG_DATA_WRITE, and state transitions walked (metrics). */
  readonly stats = { bytesRead: 0, bytesWritten: 0, transitions: 0 };

  constructor(private readonly mig: DeviceMigration) {}

  get flags(): bigint {
    return this.mig.flags | MigrationFlags.STOP_COPY;
  }

  get preCopy(): boolean {
    return (this.mig.flags & MigrationFlags.PRE_COPY) !== 0n;
  }

  /** SET MIG_DEVICE_STATE. */
  async setState(target: number): Promise<void> {
    if (this.state === MigState.ERROR) einval('the device is in ERROR: only DEVICE_RESET leaves it');
    for (const next of migStatePath(this.state, target, { preCopy: this.preCopy })) {
      await this.step(next);
    }
  }

  private async step(to: number): Promise<void> {
    const from = this.state;
    try {
      if (from === MigState.RESUMING && to === MigState.STOP) this.loadIncoming();
      if (isRunning(from) !== isRunning(to)) await this.mig.setRunning?.(isRunning(to));
      this.out = undefined;
      this.outPos = 0;
      if (to === MigState.PRE_COPY || to === MigState.STOP_COPY) this.out = frame(this.mig.saveState());
      if (to === MigState.RESUMING) this.dropStreams();
    } catch (err) {
      this.state = MigState.ERROR;
      this.dropStreams();
      if (typeof (err as { errno?: unknown })?.errno === 'number') throw err;
      throw new DeviceError(Errno.EIO, `migration ${from} -> ${to} failed: ${(err as Error)?.message}`);
    }
    this.state = to;
    this.stats.transitions++;
  }

  private loadIncoming(): void {
    if (this.incomingBad) {
      const why = this.incomingBad;
      this.dropStreams();
      throw new DeviceError(Errno.EINVAL, why);
    }
    const data = concat(this.incoming, this.incomingBytes);
    this.dropStreams();
    // Nothing received at all: a resume that was abandoned before any data came (FEA-17: RESUMING -> RUNNING
    // succeeds); the device keeps its state. Anything received must be a complete stream.
    if (data.length === 0) return;
    let last: Uint8Array | undefined;
    let pos = 0;
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    while (pos < data.length) {
      if (data.length - pos < FRAME_HEADER) throw new DeviceError(Errno.EINVAL, 'migration data truncated');
      if (dv.getUint32(pos, true) !== MIG_FRAME_MAGIC)
        throw new DeviceError(Errno.EINVAL, 'migration data is not a vfio-user-ts stream');
      const n = dv.getUint32(pos + 4, true);
      if (data.length - pos - FRAME_HEADER < n)
        throw new DeviceError(Errno.EINVAL, 'migration data truncated');
      last = data.subarray(pos + FRAME_HEADER, pos + FRAME_HEADER + n);
      pos += FRAME_HEADER + n;
    }
    if (!last) throw new DeviceError(Errno.EINVAL, 'no migration data received');
    this.mig.loadState(last);
  }

  /** MIG_DATA_READ: up to `size` bytes of the current stream. */
  read(size: number): Uint8Array {
    if (this.state !== MigState.PRE_COPY && this.state !== MigState.STOP_COPY)
      einval('MIG_DATA_READ outside PRE_COPY/STOP_COPY');
    const out = this.out ?? new Uint8Array(0);
    const chunk = out.subarray(this.outPos, Math.min(out.length, this.outPos + size));
    this.outPos += chunk.length;
    this.stats.bytesRead += chunk.length;
    return chunk;
  }

  /** MIG_DATA_WRITE: accumulate (copied: the payload's buffer belongs to the transport). */
  write(data: Uint8Array): void {
    if (this.state !== MigState.RESUMING) einval('MIG_DATA_WRITE outside RESUMING');
    if (this.incomingBytes + data.length > MAX_RESUME_BYTES)
      throw new ProtocolError(
        Errno.ENOSPC,
        'BAD_VALUE',
        `more than ${MAX_RESUME_BYTES} bytes of migration data`,
      );
    if (this.incomingBad) einval(this.incomingBad);
    try {
      this.checkFrames(data);
    } catch (err) {
      // The stream is bad for good (every later write and the load fail): what it buffered goes now, not at STOP.
      this.incoming = [];
      throw err;
    }
    this.incoming.push(data.slice());
    this.incomingBytes += data.length;
    this.stats.bytesWritten += data.length;
  }

  /**
   * Validates the frame headers as the bytes arrive, so a foreign or oversized stream fails at the MIG_DATA_WRITE
   * that reveals it rather than after the client sent up to MAX_RESUME_BYTES; the bytes inside a frame are the
   * device's, checked as they arrive by its incomingCheck (the PCI state: the msgpack budget walk) and again when
   * it loads them.
   */
  private checkFrames(data: Uint8Array): void {
    let pos = 0;
    let streamPos = this.incomingBytes;
    while (pos < data.length) {
      if (this.frameLeft > 0) {
        const n = Math.min(this.frameLeft, data.length - pos);
        this.checked(() => this.frameCheck?.push(data.subarray(pos, pos + n)));
        this.frameLeft -= n;
        pos += n;
        streamPos += n;
        if (this.frameLeft === 0) this.endFrame();
        continue;
      }
      const n = Math.min(FRAME_HEADER - this.frameHeaderFill, data.length - pos);
      this.frameHeader.set(data.subarray(pos, pos + n), this.frameHeaderFill);
      this.frameHeaderFill += n;
      pos += n;
      streamPos += n;
      if (this.frameHeaderFill < FRAME_HEADER) break;
      this.frameHeaderFill = 0;
      const dv = new DataView(this.frameHeader.buffer);
      if (dv.getUint32(0, true) !== MIG_FRAME_MAGIC) {
        this.incomingBad = 'migration data is not a vfio-user-ts stream';
      } else if (dv.getUint32(4, true) > MAX_RESUME_BYTES - streamPos) {
        this.incomingBad = `migration frame of ${dv.getUint32(4, true)} bytes exceeds ${MAX_RESUME_BYTES} bytes`;
      }
      if (this.incomingBad) einval(this.incomingBad);
      this.frameLeft = dv.getUint32(4, true);
      this.checked(() => {
        this.frameCheck = this.mig.incomingCheck?.(this.frameLeft);
      });
      if (this.frameLeft === 0) this.endFrame();
    }
  }

  private endFrame(): void {
    const check = this.frameCheck;
    this.frameCheck = undefined;
    this.checked(() => check?.end());
  }

  /** Runs the device's check; what it refuses makes the stream bad (EINVAL now and at the load). */
  private checked(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.frameCheck = undefined;
      this.incomingBad = `migration data refused as it arrived: ${(err as Error).message}`;
      einval(this.incomingBad);
    }
  }

  /** After DEVICE_RESET (ERROR or any other state the gate let through): RUNNING. */
  async afterReset(): Promise<void> {
    const from = this.state;
    this.dropStreams();
    this.state = MigState.RUNNING;
    if (!isRunning(from)) await this.mig.setRunning?.(true);
  }

  /** The client went away: back to RUNNING, streams and dirty log dropped. */
  async disconnected(dma: DmaAddressSpace): Promise<void> {
    this.stopLogging(dma);
    if (this.state === MigState.RUNNING) return;
    const from = this.state;
    this.dropStreams();
    this.state = MigState.RUNNING;
    if (!isRunning(from)) await this.mig.setRunning?.(true);
  }

  stopLogging(dma: DmaAddressSpace): void {
    this.dirty.stop();
    if (dma.dirtyLogging === this.dirty) dma.dirtyLogging = undefined;
  }

  private dropStreams(): void {
    this.out = undefined;
    this.outPos = 0;
    this.incoming = [];
    this.incomingBytes = 0;
    this.frameHeaderFill = 0;
    this.frameLeft = 0;
    this.frameCheck = undefined;
    this.incomingBad = undefined;
  }
}

function frame(blob: Uint8Array): Uint8Array {
  const out = new Uint8Array(FRAME_HEADER + blob.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MIG_FRAME_MAGIC, true);
  dv.setUint32(4, blob.length, true);
  out.set(blob, FRAME_HEADER);
  return out;
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const controllers = new WeakMap<VfioUserDevice, MigrationController>();

/** The device's migration controller, or undefined when it has no migration facet. */
export function migrationOf(device: VfioUserDevice): MigrationController | undefined {
  if (!device.migration) return undefined;
  let c = controllers.get(device);
  if (!c) {
    c = new MigrationController(device.migration);
    controllers.set(device, c);
  }
  return c;
}

// ---- gating --------------------------------------------------------------------------------------------------

const ALLOWED_IN_STOP: ReadonlySet<number> = new Set([
  Command.REGION_READ,
  Command.REGION_WRITE,
  Command.DEVICE_FEATURE,
  Command.MIG_DATA_READ,
]);
const ALLOWED_IN_STOP_COPY: ReadonlySet<number> = new Set([Command.DEVICE_FEATURE, Command.MIG_DATA_READ]);

/**
 * Whether the device runs: no migration facet, or RUNNING/PRE_COPY (gateCommand lets everything through). The
 * fast paths answer region access only then; anything else takes the full way, where gateCommand decides.
 */
export function deviceRunning(c: MigrationController | undefined): boolean {
  return c === undefined || isRunning(c.state);
}

/**
 * Throws EINVAL when `command` is not accepted in the migration state of `c` (the session's migrationOf(device),
 * looked up once; see the file comment).
 */
export function gateCommand(c: MigrationController | undefined, command: number): void {
  if (!c) return;
  const allowed =
    c.state === MigState.STOP
      ? ALLOWED_IN_STOP
      : c.state === MigState.STOP_COPY
        ? ALLOWED_IN_STOP_COPY
        : undefined;
  if (allowed && !allowed.has(command)) {
    einval(
      `command ${command} is not accepted in migration state ${c.state === MigState.STOP ? 'STOP' : 'STOP_COPY'}`,
    );
  }
}

// ---- DEVICE_FEATURE ------------------------------------------------------------------------------------------

const { GET, PROBE } = DeviceFeatureFlags;

/**
 * DEVICE_FEATURE for a device with migration (`req` already passed decodeDeviceFeatureRequest). Returns the
 * reply payload.
 */
export async function migrationFeature(
  c: MigrationController,
  dma: DmaAddressSpace,
  req: DeviceFeatureRequest,
): Promise<Uint8Array> {
  const feature = featureIndex(req.flags);
  const known =
    feature === Feature.MIGRATION ||
    feature === Feature.MIG_DEVICE_STATE ||
    feature === Feature.DMA_LOGGING_START ||
    feature === Feature.DMA_LOGGING_STOP ||
    feature === Feature.DMA_LOGGING_REPORT;
  if (!known) einval(`device feature ${feature} is not supported`); // FEA-02
  // The decoder refused GET/SET on features without them (FEA-07), so a PROBE of a known feature succeeds.
  if (req.flags & PROBE) return encodeDeviceFeatureReply(deviceFeatureEcho(req));
  const get = (req.flags & GET) !== 0;
  switch (feature) {
    case Feature.MIGRATION:
      return encodeDeviceFeatureReply(deviceFeatureGetReply(req, encodeMigrationFlags(c.flags)));
    case Feature.MIG_DEVICE_STATE:
      if (get) {
        return encodeDeviceFeatureReply(
          deviceFeatureGetReply(req, encodeMigDeviceState({ deviceState: c.state })),
        );
      }
      await c.setState(decodeMigDeviceState(req.data).deviceState);
      return encodeDeviceFeatureReply(deviceFeatureEcho(req));
    case Feature.DMA_LOGGING_START: {
      const ctl = decodeDmaLoggingControl(req.data);
      if (c.dirty.started) {
        if (ctl.pageSize !== c.dirty.pageSize)
          einval(`dirty logging already runs with page size ${c.dirty.pageSize}`);
      } else {
        c.dirty.start(ctl.pageSize, ctl.ranges);
        dma.dirtyLogging = c.dirty;
      }
      return encodeDeviceFeatureReply(deviceFeatureEcho(req));
    }
    case Feature.DMA_LOGGING_STOP:
      c.stopLogging(dma);
      return encodeDeviceFeatureReply(deviceFeatureEcho(req));
    default: {
      // DMA_LOGGING_REPORT (GET: the decoder checked page size, range and argsz for the bitmap).
      if (!c.dirty.started) einval('DMA_LOGGING_REPORT without DMA_LOGGING_START');
      const r = decodeDmaLoggingReport(req.data);
      if (dirtyBitmapSize(r.length, r.pageSize) > BigInt(MAX_BITMAP_SIZE))
        einval(`DMA_LOGGING_REPORT bitmap larger than max_bitmap_size ${MAX_BITMAP_SIZE}`);
      if (r.pageSize !== c.dirty.pageSize)
        einval(`report page size ${r.pageSize} differs from the logging page size ${c.dirty.pageSize}`);
      const region = dma.find(r.iova);
      if (!region) throw new ProtocolError(Errno.ENOENT, 'BAD_RANGE', 'DMA_LOGGING_REPORT: no map at iova');
      if (region.iova !== r.iova || region.size !== r.length) {
        throw new ProtocolError(Errno.ENOTSUP, 'BAD_RANGE', 'DMA_LOGGING_REPORT must cover exactly one map');
      }
      if (region.access === 'message') einval('DMA_LOGGING_REPORT on an fd-less map');
      const bitmap = c.dirty.report(r.iova, r.length, r.pageSize);
      return encodeDeviceFeatureReply(deviceFeatureGetReply(req, encodeDmaLoggingReport({ ...r, bitmap })));
    }
  }
}

/** MIG_DATA_READ reply payload. */
export function migrationRead(c: MigrationController, size: number): Uint8Array {
  return encodeMigDataReadReply({ data: c.read(size) });
}
