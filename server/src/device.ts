// The contract between the server engine (which owns the socket, the session, the DMA address space and the
// IRQ eventfds) and a device (a PCI model such as `edu`, or a passed-through host device).
//
// Modelled on rust-vmm's vhost-user-backend: the device is a trait the daemon drives. The engine never looks
// inside a device; a device never touches sockets or peer fds. Everything here speaks in vfio-user/VFIO terms
// (region and IRQ indexes, VFIO flag bits), so a device can be a pure emulation or a thin forwarder.

import { ErrnoError } from 'vfio-user-protocol';

/** An error a device raises to fail one request: the engine sends `errno` back to the client. */
export class DeviceError extends ErrnoError {
  constructor(errno: number, message: string) {
    super(errno, message);
    this.name = 'DeviceError';
  }
}

// The VFIO flag bits and indexes a device reports are the protocol's (defined once in vfio-user-protocol),
// re-exported here so a device model needs only this module.
export {
  DeviceInfoFlags,
  FIRST_DEVICE_REGION,
  IrqIndex,
  IrqInfoFlags,
  MigrationFlags,
  PciRegion,
  RegionInfoFlags,
} from 'vfio-user-protocol';

/** One mmap-able window of a region, relative to the region start. */
export interface SparseArea {
  offset: bigint;
  size: bigint;
}

/** What GET_REGION_INFO reports for one region. */
export interface RegionDescription {
  /** Region size in bytes; 0 = absent. */
  size: bigint;
  /** RegionInfoFlags bits (READ/WRITE/MMAP; the engine sets CAPS itself when it adds capabilities). */
  flags: number;
  /**
   * When the region (or parts of it) can be mmapped by the client: the fd to hand over (the device keeps
   * ownership; the engine dups/sends it), the offset of the region within that fd, and the mappable areas
   * (omit `areas` for "the whole region").
   */
  mmap?: { fd: number; offset: bigint; areas?: SparseArea[] };
  /** VFIO_REGION_INFO_CAP_TYPE for device-specific regions (index >= 9). */
  type?: { type: number; subtype: number };
}

/** What DEVICE_GET_IRQ_INFO reports for one IRQ index. */
export interface IrqDescription {
  /** IrqInfoFlags bits. */
  flags: number;
  /** Number of vectors; 0 = not supported. */
  count: number;
}

/**
 * DMA into guest memory, as seen by a device model. Addresses are IOVAs. Accesses that cross or leave the
 * mapped ranges, or that lack permission, reject with a DmaError (see server/src/dma). Asynchronous because
 * guest memory that came without an fd is reached through DMA_READ/DMA_WRITE messages to the client.
 */
export interface DmaAccessor {
  /** Copy `length` bytes of guest memory at `iova`. */
  read(iova: bigint, length: number): Promise<Uint8Array>;
  /** Copy `data` into guest memory at `iova`. */
  write(iova: bigint, data: Uint8Array): Promise<void>;
  /**
   * Zero-copy: the guest memory [iova, iova+length) as views (a scatter-gather list of Uint8Arrays into the
   * mapped guest memory file), or undefined when some part is not memory that can be viewed safely — only
   * memfds sealed against shrinking (F_SEAL_SHRINK, as QEMU's memory-backend-memfd seals them) are; then use
   * read/write. Throws DmaError when the range is not mapped with the needed permission. The views are valid
   * until the region is unmapped (see VfioUserDevice.dmaUnmapped); after that they are detached (length 0).
   * Optional: the server's address space implements it, a test double may not.
   */
  views?(iova: bigint, length: number, access: 'read' | 'write'): Uint8Array[] | undefined;
}

/** A region of guest memory the client mapped (DMA_MAP), as the device's DMA hooks see it. */
export interface DmaRegionInfo {
  iova: bigint;
  size: bigint;
  readable: boolean;
  writable: boolean;
  /** Whether `DmaAccessor.views` can give zero-copy views of it (a mapped memfd sealed against shrinking). */
  zeroCopy: boolean;
}

/**
 * The device's side of the interrupt eventfds the client set with SET_IRQS. `trigger` signals vector `vector`
 * of IRQ index `index` (IrqIndex). It returns false when nothing was signalled (no eventfd assigned, or the
 * vector is masked: then it becomes pending and fires on unmask).
 */
export interface IrqSink {
  trigger(index: number, vector: number): boolean;
  /** Whether the client has an eventfd on that vector (e.g. to decide between MSI and INTx). */
  isEnabled(index: number, vector: number): boolean;
}

/** A minimal logger shape (pino's Logger satisfies it). */
export interface DeviceLogger {
  trace(obj: object | string, msg?: string): void;
  debug(obj: object | string, msg?: string): void;
  info(obj: object | string, msg?: string): void;
  warn(obj: object | string, msg?: string): void;
  error(obj: object | string, msg?: string): void;
}

/**
 * What a device gets from the engine when a client attaches: DMA into guest memory, interrupt delivery, and a
 * logger.
 */
export interface DeviceContext {
  dma: DmaAccessor;
  irq: IrqSink;
  log: DeviceLogger;
}

/**
 * Migration (vfio-user migration v2) as a device sees it. The engine owns the state machine (MIG_DEVICE_STATE),
 * the data streams (MIG_DATA_READ/WRITE), command gating and dirty logging; the device only stops and starts,
 * and turns its whole state into bytes and back. The same three verbs as a PCI model's migration hooks
 * (PciDeviceModel.saveState/loadState/setRunning): a PciDevice implements this facet from them.
 * A throw from any hook fails the transition with its errno (DeviceError) and leaves the FSM in ERROR.
 */
export interface DeviceMigration {
  /** MigrationFlags bits: STOP_COPY, plus PRE_COPY when the device can stream while running. */
  readonly flags: bigint;
  /**
   * A self-contained snapshot of the device (the engine frames it; PRE_COPY takes an early one, STOP_COPY the
   * final one, after setRunning(false); the destination loads the last complete snapshot it received).
   */
  saveState(): Uint8Array;
  /**
   * Validate `state` (from saveState of the same kind of device) and apply it. Throws DeviceError (EINVAL) on
   * data of another device, another version or truncated data, leaving the device untouched; the engine then
   * puts the FSM in ERROR (MIG-13). Called while the device is stopped (RESUMING -> STOP).
   */
  loadState(state: Uint8Array): void;
  /**
   * Optional: a check of a saved state of `length` bytes as it arrives (MIG_DATA_WRITE by MIG_DATA_WRITE), which
   * throws as soon as the bytes cannot be a state this device loads, so that a hostile stream is refused before
   * it is buffered (docs/hardening.md). `end()` runs when the state is complete.
   */
  incomingCheck?(length: number): { push(chunk: Uint8Array): void; end(): void };
  /**
   * The device starts (true) or stops (false) running: it runs in RUNNING and PRE_COPY and must be quiescent (no
   * DMA, no interrupts, no progress) in every other state. Called only when that changes (e.g. RUNNING -> STOP,
   * STOP -> RUNNING), before the engine saves. May return a promise (e.g. to let a DMA in flight finish); the
   * transition waits for it.
   */
  setRunning?(running: boolean): void | Promise<void>;
}

/**
 * A device served over vfio-user. Region accesses are synchronous and must return promptly (the client may be
 * a vCPU waiting with QEMU's big lock held); long work (a DMA engine) runs asynchronously and signals
 * completion with an interrupt.
 */
export interface VfioUserDevice {
  /** DeviceInfoFlags bits; PCI devices set PCI, and RESET when reset() is meaningful. */
  readonly flags: number;
  /** 9 for PCI (BAR0-5, ROM, CONFIG, VGA) plus any device-specific regions. */
  readonly numRegions: number;
  /** 5 for PCI (INTx, MSI, MSI-X, ERR, REQ). */
  readonly numIrqs: number;

  regionInfo(index: number): RegionDescription;
  irqInfo(index: number): IrqDescription;

  /**
   * Read `count` bytes at `offset` of region `index`. Throws DeviceError (EINVAL past the end). A device that
   * must do I/O first may return a promise: the session holds later messages until it settles, so every reply
   * keeps the arrival order (keep it short: the vCPU that issued the access waits).
   */
  regionRead(index: number, offset: bigint, count: number): Uint8Array | Promise<Uint8Array>;
  /** Write `data` at `offset` of region `index`. Throws DeviceError. May return a promise (see regionRead). */
  regionWrite(index: number, offset: bigint, data: Uint8Array): void | Promise<void>;
  /**
   * Optional: the bytes of region `index` when reading it has no side effect and its contents live in memory (a
   * PCI config space). The server may then answer the client's reads of the region from these bytes without
   * calling regionRead() (docs/architecture.md, "Direct reads"), so they must be the region's current contents,
   * whole (as long as regionInfo's size), for as long as the device lives: the same array, updated in place.
   * Asked once per client, for every region; undefined (or no method) = reads go through regionRead().
   */
  directReadBytes?(index: number): Uint8Array | undefined;

  /** DEVICE_RESET (and PCIe FLR): back to the power-on state. DMA maps stay. */
  reset(): void | Promise<void>;

  /** Called once a client connects (and again for every later client), before any other call. */
  attach(ctx: DeviceContext): void;
  /** The client went away: stop DMA and forget its IRQ fds (device state itself is kept). */
  detach(): void;

  /** Called when the IRQ state of an index changes (e.g. to re-evaluate pending interrupts). Optional. */
  irqStateChanged?(index: number): void;
  /**
   * DEVICE_SET_IRQS pass-through, for forwarded host devices (vfio-pci): the engine calls it after validating
   * the request (flags = VFIO_IRQ_SET_* bits as received) and before touching its own IRQ state. Returning true
   * means the device handled it, e.g. gave the client's eventfds straight to the host's VFIO_DEVICE_SET_IRQS so
   * the host device signals the VMM without this process; the engine then keeps no state for the request.
   * Returning false (or not implementing it) = the engine's IrqController handles it as usual. `fds` are
   * borrowed: the engine closes them after the call (VFIO takes its own eventfd references). `data` is the
   * DATA_BOOL payload. Throw DeviceError to fail the request with its errno.
   */
  setIrqs?(
    index: number,
    flags: number,
    start: number,
    count: number,
    fds: readonly number[],
    data?: Uint8Array,
  ): boolean;
  /**
   * DMA_MAP: a region of guest memory became reachable (libvfio-user's dma_register callback). Also called for
   * the regions already mapped when the server starts watching. Informational: a throw is logged, the map stands.
   */
  dmaMapped?(region: DmaRegionInfo): void;
  /**
   * DMA_UNMAP, unmap-all, or the client going away: stop using the region (views, DMA in flight) before the
   * returned promise resolves; the DMA_UNMAP reply waits for it (libvfio-user's dma_unregister).
   */
  dmaUnmapped?(region: DmaRegionInfo): void | Promise<void>;
  /**
   * Quiesce (libvfio-user's quiesce callback): stop starting DMA and raising interrupts, and let what is in
   * flight finish, before the engine resets the device or removes DMA regions. The engine awaits the promise and
   * then does the operation; the device resumes on its own (e.g. at the next register access).
   */
  quiesce?(): void | Promise<void>;
  /** Migration support (see DeviceMigration); absent = the server offers no migration. */
  readonly migration?: DeviceMigration;
  /**
   * Hand-over to a new process (docs/handover.md) of a device without a migration facet whose state lives
   * outside this process (vfio-pci: in the host device, behind the VFIO fd that moves with the host IOMMU
   * backend): `saveState` gives what the process keeps about it, `loadState` restores that in the successor's
   * device, built from the same command line (the verbs of DeviceMigration). A device with neither this nor `migration` is never handed over.
   */
  readonly handover?: DeviceHandover;
  /** Release everything (server shutdown). */
  close?(): void;
}

/** See VfioUserDevice.handover. */
export interface DeviceHandover {
  /** What this process keeps about the device, as bytes for the successor. */
  saveState(): Uint8Array;
  /** Restore what saveState gave, in the successor's device; throw on a state it cannot take. */
  loadState(state: Uint8Array): void;
}

/** A logger that drops everything: the default wherever no logger is given. */
export const silentLogger: DeviceLogger = { trace() {}, debug() {}, info() {}, warn() {}, error() {} };

/**
 * A host PCI device bound to VFIO, opened by the server's host IOMMU backend (type1 container or iommufd) so it
 * DMAs through exactly the mappings the mirror installs. The server hands it to a passthrough device model
 * (vfio-pci) through the device environment; the model borrows the fd.
 */
export interface HostDevice {
  /** The VFIO device fd (group-obtained or cdev). Owned by the backend: closed by backend.close(). */
  readonly fd: number;
  /** PCI address, e.g. '0000:00:03.0' (undefined when only a pre-opened device fd was given). */
  readonly bdf: string | undefined;
  /** The backend that opened it: 'vfio-type1' | 'iommufd'. */
  readonly via: string;
}

/** '0000:00:03.0' (a domain is added when missing: '00:03.0' -> '0000:00:03.0'). Throws on anything else. */
export function normaliseBdf(s: string): string {
  const m = /^(?:([0-9a-fA-F]{4}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$/.exec(s.trim());
  if (!m) throw new Error(`'${s}' is not a PCI address (DDDD:BB:DD.F)`);
  return `${(m[1] ?? '0000').toLowerCase()}:${m[2]!.toLowerCase()}:${m[3]!.toLowerCase()}.${m[4]}`;
}
