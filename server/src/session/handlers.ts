// Handlers for the client's commands after VERSION. Each decodes its payload with the protocol package (whose
// ProtocolError carries the errno the conformance suite asks for), applies the server-side checks, drives the
// device / DMA address space / IRQ state, and returns the reply payload (and fds). A thrown error with a
// positive `errno` (ProtocolError, DeviceError, DmaMapError, IrqError) becomes a header-only error reply; the
// session closes every fd a handler did not take.
//
// Handlers return synchronously except DMA_MAP/DMA_UNMAP (which may await the host IOMMU mirror), DEVICE_RESET
// (a device may reset asynchronously) and DEVICE_FEATURE on a migratable device (a migration arc may wait for
// the device to quiesce, session/migration.ts); the session holds later messages back until they settle.

import {
  type Capabilities,
  Command,
  checkSetIrqsAgainstDevice,
  DeviceInfoFlags,
  DmaUnmapFlags,
  decodeDeviceFeatureRequest,
  decodeDeviceGetInfoRequest,
  decodeDeviceResetRequest,
  decodeDmaMapRequest,
  decodeDmaUnmapRequest,
  decodeIrqInfoRequest,
  decodeMigDataReadRequest,
  decodeMigDataWriteRequest,
  decodeRegionInfoRequest,
  decodeRegionIoFdsRequest,
  decodeRegionReadRequest,
  decodeRegionWriteMultiRequest,
  decodeRegionWriteRequest,
  decodeSetIrqsRequest,
  Errno,
  encodeDeviceGetInfoReply,
  encodeDmaUnmapEchoOf,
  encodeIrqInfoReply,
  encodeRegionInfoReply,
  encodeRegionIoFdsReplyFor,
  encodeRegionReadReply,
  encodeRegionWriteMultiReply,
  encodeRegionWriteReply,
  Feature,
  featureIndex,
  HEADER_SIZE,
  isRegionInfoTruncated,
  type Limits,
  ProtocolError,
  REGION_RW_SIZE,
  type RegionCap,
  RegionCapId,
  RegionInfoFlags,
  rangeWithin,
  regionInfoReplyFor,
  regionRwCountOf,
  regionRwOffsetOf,
  regionRwRegionOf,
  writeRegionRwReply,
} from 'vfio-user-protocol';
import { DeviceError, type DeviceLogger, type VfioUserDevice } from '../device.js';
import type { DmaAddressSpace } from '../dma/address-space.js';
import type { IrqController } from '../irq/irq-controller.js';
import { isPromise } from '../promise.js';
import type { FdBag } from './fds.js';
import {
  deviceRunning,
  type MigrationController,
  migrationFeature,
  migrationOf,
  migrationRead,
} from './migration.js';

export interface HandlerContext {
  device: VfioUserDevice;
  dma: DmaAddressSpace;
  irq: IrqController;
  log: DeviceLogger;
  /** Our receive limits (what we advertised). */
  limits: Required<Limits>;
  /** The client's capabilities (defaults filled in). */
  client: Capabilities;
  /** Whether REGION_WRITE_MULTI was negotiated. */
  writeMultiple: boolean;
  /** Successful DMA_MAP / DMA_UNMAP commands (the server's stats). */
  counters: { dmaMaps: number; dmaUnmaps: number };
  /** The device's migration state machine (migrationOf(device), looked up once), when it migrates. */
  migration: MigrationController | undefined;
}

export interface HandlerResult {
  payload?: Uint8Array;
  /** fds to send with the reply (borrowed: the sender dups them). */
  fds?: number[];
}

export type Handler = (
  ctx: HandlerContext,
  payload: Uint8Array,
  fds: FdBag,
) => HandlerResult | Promise<HandlerResult>;

const EMPTY: HandlerResult = {};

function einval(message: string): never {
  throw new ProtocolError(Errno.EINVAL, 'BAD_VALUE', message);
}

function checkRegionIndex(ctx: HandlerContext, index: number): void {
  if (index >= ctx.device.numRegions) einval(`region index ${index} >= num_regions ${ctx.device.numRegions}`);
}

// ---- DMA ------------------------------------------------------------------------------------------------------

// DMA_MAP and DMA_UNMAP answer synchronously when the address space and its subscribers do (no mutation in
// progress, a synchronous IOMMU backend): the reply then leaves from the socket's read callback, no promise hop.
// The session may run them in place, on a view of the connection's inbox (session.ts: handleInPlace): they must
// keep nothing of `payload` past their synchronous part (decode first, copy what a reply needs).
const dmaMap: Handler = (ctx, payload, fds) => {
  const req = decodeDmaMapRequest(payload, fds.count, ctx.limits);
  const fd = fds.count > 0 ? fds.take(0) : undefined;
  const r = ctx.dma.mapNow({
    iova: req.address,
    size: req.size,
    prot: req.flags,
    fd,
    fileOffset: req.offset,
  });
  if (r instanceof Promise) {
    return r.then(() => {
      ctx.counters.dmaMaps++;
      return EMPTY;
    });
  }
  ctx.counters.dmaMaps++;
  return EMPTY;
};

const dmaUnmap: Handler = (ctx, payload, fds) => {
  const req = decodeDmaUnmapRequest(payload, fds.count, ctx.limits);
  if (req.flags & DmaUnmapFlags.GET_DIRTY_BITMAP) {
    // Legacy dirty bitmap: only meaningful while dirty logging runs, which it never does here (UNM-15).
    einval('DMA_UNMAP GET_DIRTY_BITMAP without dirty logging');
  }
  // The reply echoes the request (no bitmap here: exactly its 24 bytes), rather than decoding and re-encoding it.
  // Answered synchronously, the request's own bytes go out (the session copies a reply into its send buffer
  // before this message's buffer is released); answered later, a copy made now.
  const r = req.flags & DmaUnmapFlags.ALL ? ctx.dma.unmapAll() : ctx.dma.unmapNow(req.address, req.size);
  if (r instanceof Promise) {
    const echo = encodeDmaUnmapEchoOf(payload);
    return r.then(() => unmapDone(ctx, echo));
  }
  return unmapDone(ctx, payload);
};

function unmapDone(ctx: HandlerContext, echo: Uint8Array): HandlerResult {
  ctx.counters.dmaUnmaps++;
  return { payload: echo };
}

// ---- device info ----------------------------------------------------------------------------------------------

const deviceGetInfo: Handler = (ctx, payload, fds) => {
  decodeDeviceGetInfoRequest(payload, fds.count, ctx.limits);
  const d = ctx.device;
  return {
    payload: encodeDeviceGetInfoReply({ flags: d.flags, numRegions: d.numRegions, numIrqs: d.numIrqs }),
  };
};

const regionInfo: Handler = (ctx, payload, fds) => {
  const req = decodeRegionInfoRequest(payload, fds.count, ctx.limits);
  checkRegionIndex(ctx, req.index);
  const desc = ctx.device.regionInfo(req.index);
  const caps: RegionCap[] = [];
  let flags = desc.flags & ~RegionInfoFlags.CAPS;
  // A mappable region's fd needs the client to accept one fd per message (VER-16: max_msg_fds 0 = no fds).
  const mmap = desc.mmap && ctx.client.maxMsgFds >= 1 ? desc.mmap : undefined;
  if (mmap) {
    flags |= RegionInfoFlags.MMAP;
    if (mmap.areas) caps.push({ id: RegionCapId.SPARSE_MMAP, version: 1, areas: mmap.areas });
  } else {
    flags &= ~RegionInfoFlags.MMAP;
  }
  if (desc.type)
    caps.push({ id: RegionCapId.TYPE, version: 1, type: desc.type.type, subtype: desc.type.subtype });
  const reply = regionInfoReplyFor(
    { flags, index: req.index, size: desc.size, offset: mmap?.offset ?? 0n, caps },
    req.argsz!,
  );
  // Exactly one fd with a complete MMAP reply; none with a truncated one (QEMU asks again).
  const sendFd = mmap && !isRegionInfoTruncated(reply);
  return { payload: encodeRegionInfoReply(reply), fds: sendFd ? [mmap.fd] : undefined };
};

const regionIoFds: Handler = (ctx, payload, fds) => {
  const req = decodeRegionIoFdsRequest(payload, fds.count, ctx.limits);
  checkRegionIndex(ctx, req.index);
  if (ctx.device.regionInfo(req.index).size === 0n) einval(`region ${req.index} is absent`); // IOF-05
  // The device contract has no ioeventfds yet: every region has none (IOF-08).
  return { payload: encodeRegionIoFdsReplyFor(req.index, [], req.argsz!) };
};

const irqInfo: Handler = (ctx, payload, fds) => {
  const req = decodeIrqInfoRequest(payload, fds.count, ctx.limits);
  if (req.index >= ctx.device.numIrqs) einval(`IRQ index ${req.index} >= num_irqs ${ctx.device.numIrqs}`);
  const info = ctx.device.irqInfo(req.index);
  return { payload: encodeIrqInfoReply({ flags: info.flags, index: req.index, count: info.count }) };
};

const setIrqs: Handler = (ctx, payload, fds) => {
  const req = decodeSetIrqsRequest(payload, fds.count, ctx.limits);
  const vectors = req.index < ctx.device.numIrqs ? ctx.device.irqInfo(req.index).count : 0;
  checkSetIrqsAgainstDevice(req, ctx.device.numIrqs, vectors);
  ctx.irq.validate(req, fds.count);
  // A forwarding device (vfio-pci) may take the request itself, handing the client's eventfds to the host
  // device (VfioUserDevice.setIrqs); the fds stay borrowed and are closed with the message.
  if (ctx.device.setIrqs?.(req.index, req.flags, req.start, req.count, fds.peek(), req.data)) return EMPTY;
  ctx.irq.setIrqs(req, fds.peek());
  fds.takeAll(); // the IRQ state owns them now
  return EMPTY;
};

// ---- region access ---------------------------------------------------------------------------------------------

function checkAccess(
  ctx: HandlerContext,
  index: number,
  offset: bigint,
  count: number,
  write: boolean,
): void {
  checkRegionIndex(ctx, index);
  const desc = ctx.device.regionInfo(index);
  if (!rangeWithin(offset, BigInt(count), desc.size)) {
    einval(
      `region ${index} access [0x${offset.toString(16)}, +${count}) outside its 0x${desc.size.toString(16)} bytes`,
    );
  }
  const need = write ? RegionInfoFlags.WRITE : RegionInfoFlags.READ;
  if (count > 0 && (desc.flags & need) === 0)
    einval(`region ${index} is not ${write ? 'writable' : 'readable'}`);
}

// A device may answer a region access asynchronously (it must do I/O first): the handler then returns a promise,
// and the session holds every later message back until it settles, so replies keep the arrival order.

/** QEMU turns a short read into all-ones and a long one into E2BIG: never send either. */
function checkReadLength(data: Uint8Array, count: number): void {
  if (data.length !== count)
    throw new DeviceError(Errno.EINVAL, `device returned ${data.length} bytes for a ${count}-byte read`);
}

function regionReadResult(offset: bigint, region: number, count: number, data: Uint8Array): HandlerResult {
  checkReadLength(data, count);
  return { payload: encodeRegionReadReply({ offset, region, data }) };
}

function regionWriteResult(offset: bigint, region: number, count: number): HandlerResult {
  return { payload: encodeRegionWriteReply({ offset, region, count }) };
}

const regionRead: Handler = (ctx, payload, fds) => {
  const req = decodeRegionReadRequest(payload, fds.count, ctx.limits);
  checkAccess(ctx, req.region, req.offset, req.count, false);
  if (req.count === 0) return regionReadResult(req.offset, req.region, 0, new Uint8Array(0));
  const data = ctx.device.regionRead(req.region, req.offset, req.count);
  return isPromise(data)
    ? data.then((d) => regionReadResult(req.offset, req.region, req.count, d))
    : regionReadResult(req.offset, req.region, req.count, data);
};

const regionWrite: Handler = (ctx, payload, fds) => {
  const req = decodeRegionWriteRequest(payload, fds.count, ctx.limits);
  const count = req.data.length;
  checkAccess(ctx, req.region, req.offset, count, true);
  const done = count > 0 ? ctx.device.regionWrite(req.region, req.offset, req.data) : undefined;
  return isPromise(done)
    ? done.then(() => regionWriteResult(req.offset, req.region, count))
    : regionWriteResult(req.offset, req.region, count);
};

// ---- the inbox fast path ----------------------------------------------------------------------------------------

/** What a fast path returns when the message is not its plain case: the full way then handles it. */
export const DECLINED = -1;

/**
 * REGION_READ and REGION_WRITE answered in place (session.ts: onInboxMessage): the request is read where it lies
 * in the connection's inbox (`msg`, the whole message, its header checked by plainCommandOf; valid only during
 * this call) and the reply written into the outbox `out`, with no request or reply objects and no bigint but the
 * one the device API takes. Returns DECLINED before any side effect unless this is the plain case (in range,
 * permitted, small enough for the outbox; the full handler then gives the precise error), else the reply's
 * length, or a promise of the reply when the device answers asynchronously. A device failure is thrown.
 * The checks are those of the full handlers above.
 */
export function regionAccessInPlace(
  ctx: HandlerContext,
  command: number,
  msg: Uint8Array,
  size: number,
  out: Uint8Array,
): number | Promise<HandlerResult> {
  const write = command === Command.REGION_WRITE;
  const count = regionRwCountOf(msg);
  const head = HEADER_SIZE + REGION_RW_SIZE;
  if (size !== head + (write ? count : 0) || count === 0 || count > ctx.limits.maxDataXferSize)
    return DECLINED;
  if (!write && head + count > out.length) return DECLINED;
  const offset = regionRwOffsetOf(msg);
  const region = regionRwRegionOf(msg);
  const device = ctx.device;
  if (offset < 0 || region >= device.numRegions) return DECLINED;
  const desc = device.regionInfo(region);
  const end = Number(desc.size);
  if (!(end <= Number.MAX_SAFE_INTEGER && offset + count <= end)) return DECLINED;
  if ((desc.flags & (write ? RegionInfoFlags.WRITE : RegionInfoFlags.READ)) === 0) return DECLINED;
  // A stopped device accepts few commands (gateCommand): the full way says which.
  if (!deviceRunning(ctx.migration)) return DECLINED;
  const at = BigInt(offset);
  // The common answers are tested first (undefined, a Uint8Array): isPromise() sees every kind of value in the
  // server, and its property load is slow once it has.
  if (write) {
    // The device may keep what it is given (an asynchronous write does): a copy, not a view of the inbox.
    const done = device.regionWrite(region, at, msg.slice(head, size));
    if (done !== undefined && isPromise(done)) return done.then(() => regionWriteResult(at, region, count));
    return writeRegionRwReply(out, msg);
  }
  const data = device.regionRead(region, at, count);
  if (!(data instanceof Uint8Array) && isPromise(data))
    return data.then((d) => regionReadResult(at, region, count, d));
  checkReadLength(data, count);
  return writeRegionRwReply(out, msg, data);
}

const regionWriteMulti: Handler = async (ctx, payload, fds) => {
  // Only valid when negotiated. We never offer write_multiple (no known server does, and QEMU only coalesces
  // posted writes when offered), so this is normally WMU-01's EINVAL; the handler stays correct if it is offered.
  if (!ctx.writeMultiple) einval('REGION_WRITE_MULTI was not negotiated');
  const req = decodeRegionWriteMultiRequest(payload, fds.count, ctx.limits);
  for (const w of req.writes) {
    checkAccess(ctx, w.region, w.offset, w.data.length, true);
    await ctx.device.regionWrite(w.region, w.offset, w.data);
  }
  return { payload: encodeRegionWriteMultiReply({ count: req.writes.length }) };
};

// ---- reset, features, migration --------------------------------------------------------------------------------

const deviceReset: Handler = async (ctx, payload, fds) => {
  decodeDeviceResetRequest(payload, fds.count, ctx.limits);
  if ((ctx.device.flags & DeviceInfoFlags.RESET) === 0) einval('device does not advertise RESET'); // RST-03
  await ctx.device.quiesce?.();
  await ctx.device.reset();
  // A reset device runs: from ERROR (MIG-14) or any other state the migration gate let through.
  await migrationOf(ctx.device)?.afterReset();
  return EMPTY;
};

const deviceFeature: Handler = (ctx, payload, fds) => {
  const req = decodeDeviceFeatureRequest(payload, fds.count, ctx.limits);
  const mig = migrationOf(ctx.device);
  if (mig) return migrationFeature(mig, ctx.dma, req).then((p) => ({ payload: p }));
  const feature = featureIndex(req.flags);
  if (
    feature === Feature.DMA_LOGGING_START ||
    feature === Feature.DMA_LOGGING_STOP ||
    feature === Feature.DMA_LOGGING_REPORT
  ) {
    // Dirty-page logging only exists for migration (session/migration.ts): EINVAL without it (FEA-28).
    einval('DMA dirty logging is not supported');
  }
  // Without a migration facet every feature is unsupported (FEA-02/03).
  einval(`device feature ${feature} is not supported`);
};

// Migration data: malformed requests get the decoder's errno (MIG-01); without migration well-formed ones are
// EINVAL (MIG-02); with it session/migration.ts checks the state (MIG-03/07).
const migDataRead: Handler = (ctx, payload, fds) => {
  const req = decodeMigDataReadRequest(payload, fds.count, ctx.limits);
  const mig = migrationOf(ctx.device);
  if (!mig) einval('migration is not supported');
  // Our receive limit is checked by the decoder; the reply must also fit the client's (MIG-04).
  if (req.size > ctx.client.maxDataXferSize)
    einval(`MIG_DATA_READ size ${req.size} > the client's max_data_xfer_size ${ctx.client.maxDataXferSize}`);
  return { payload: migrationRead(mig, req.size) };
};
const migDataWrite: Handler = (ctx, payload, fds) => {
  const req = decodeMigDataWriteRequest(payload, fds.count, ctx.limits);
  const mig = migrationOf(ctx.device);
  if (!mig) einval('migration is not supported');
  mig.write(req.data);
  return EMPTY;
};

/** Every client command after VERSION. DMA_READ/DMA_WRITE are server->client and never reach this table. */
export const HANDLERS: Partial<Record<Command, Handler>> = {
  [Command.DMA_MAP]: dmaMap,
  [Command.DMA_UNMAP]: dmaUnmap,
  [Command.DEVICE_GET_INFO]: deviceGetInfo,
  [Command.DEVICE_GET_REGION_INFO]: regionInfo,
  [Command.DEVICE_GET_REGION_IO_FDS]: regionIoFds,
  [Command.DEVICE_GET_IRQ_INFO]: irqInfo,
  [Command.DEVICE_SET_IRQS]: setIrqs,
  [Command.REGION_READ]: regionRead,
  [Command.REGION_WRITE]: regionWrite,
  [Command.DEVICE_RESET]: deviceReset,
  [Command.REGION_WRITE_MULTI]: regionWriteMulti,
  [Command.DEVICE_FEATURE]: deviceFeature,
  [Command.MIG_DATA_READ]: migDataRead,
  [Command.MIG_DATA_WRITE]: migDataWrite,
};
