/**
 * PciDevice: a PCI function served over vfio-user, built from a small declarative spec plus a device model.
 *
 * The PciDevice owns everything PCI: the type 0 header and its write semantics, BAR registers and sizing, the
 * ROM register, capabilities (PM, MSI, MSI-X, PCI Express + FLR), the regions the engine asks for (BAR0-5,
 * ROM, CONFIG, VGA), interrupt routing and reset. The model owns its registers (BAR handlers) and its
 * behaviour, and calls `raise()`/`lower()` to interrupt and `ctx.dma` (given to `attach`) to reach guest
 * memory.
 *
 * A new device is one file:
 *
 * ```ts
 * import type { DeviceContext } from '../device.js';
 * import { type AccessSize, PciDevice, type PciDeviceModel } from '../pci/index.js';
 *
 * // A 4 KiB register file. Writing 0x10 raises interrupt 0 (MSI if enabled, else INTx); writing an IOVA to
 * // 0x14 DMAs the dword at 0x00 there; writing 0x18 acknowledges (lowers INTx).
 * export class Scratch implements PciDeviceModel {
 *   private readonly regs = new Uint32Array(1024);
 *   private ctx: DeviceContext | undefined;
 *   readonly pci = new PciDevice(
 *     {
 *       vendorId: 0x1234, deviceId: 0x0001, classCode: 0xff0000, revision: 1,
 *       bars: [{ size: 4096, maxAccess: 4, handler: {
 *         // Sub-dword reads use the low bytes of the returned value.
 *         read: (offset: number) => this.regs[offset >> 2]! >>> ((offset & 3) * 8),
 *         write: (offset: number, size: AccessSize, value: bigint) => this.write(offset, size, value),
 *       } }],
 *       caps: { msi: { vectors: 1 } },
 *       intxPin: 1,
 *     },
 *     this,
 *   );
 *   private write(offset: number, _size: AccessSize, value: bigint): void {
 *     this.regs[offset >> 2] = Number(value & 0xffffffffn);
 *     if (offset === 0x10) this.pci.raise(0);
 *     if (offset === 0x14 && this.ctx && this.pci.busMasterEnabled) {
 *       const data = new Uint8Array(this.regs.buffer, 0, 4).slice();
 *       this.ctx.dma.write(value, data).catch((err) => this.pci.log.warn({ err }, 'DMA failed'));
 *     }
 *     if (offset === 0x18) this.pci.lower();
 *   }
 *   reset(): void { this.regs.fill(0); }
 *   attach(ctx: DeviceContext): void { this.ctx = ctx; }
 *   detach(): void { this.ctx = undefined; }
 * }
 * // new Scratch().pci is the VfioUserDevice to hand to the engine.
 * ```
 *
 * Behaviour worth knowing (see docs in each module):
 * - Config writes are applied byte by byte through RW / RW1C masks; writes to read-only bits are ignored
 *   (logged at debug), never an error. Unimplemented BARs and the ROM register (without a ROM) read 0.
 * - BAR accesses are bounds checked (EINVAL) and split into naturally aligned chunks of at most `maxAccess`.
 * - DEVICE_RESET and FLR restore the power-on config space, then call `model.reset()`.
 * - IRQ info: INTx count 1 flags 0x7 iff the pin is non-zero; MSI/MSI-X count N flags 0x9 when the capability
 *   exists; ERR count 1 flags 0x1 (signalError()); REQ count 0: the server never asks the client to release the
 *   device, so it offers no REQ eventfd (QEMU never queries REQ either).
 */

import {
  DeviceInfoFlags,
  Errno,
  FIRST_DEVICE_REGION,
  IrqIndex,
  IrqInfoFlags,
  PciRegion,
  RegionInfoFlags,
} from 'vfio-user-protocol';
import {
  type DeviceContext,
  DeviceError,
  type DeviceLogger,
  type DeviceMigration,
  type DmaRegionInfo,
  type IrqDescription,
  type RegionDescription,
  silentLogger,
  type VfioUserDevice,
} from '../device.js';
import { BarRegion, type BarSpec, installBarRegisters, validateBarSpec } from './bar.js';
import { CapabilityAllocator } from './capabilities.js';
import { ConfigSpace } from './config-space.js';
import {
  PCI_CACHE_LINE_SIZE,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_PARITY,
  PCI_COMMAND_SERR,
  PCI_CONFIG_SIZE,
  PCI_DEVICE_ID,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_REVISION_ID,
  PCI_ROM_ADDRESS,
  PCI_ROM_ADDRESS_ENABLE,
  PCI_STATUS,
  PCI_STATUS_RW1C_MASK,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
  PCIE_CONFIG_SIZE,
} from './constants.js';
import { InterruptRouter, type IrqRoute } from './interrupts.js';
import { memfdSharedMemory } from './memfd.js';
import { isMigratableModel, PciMigration } from './migration.js';
import { MsiCapability, type MsiSpec } from './msi.js';
import { MsixCapability, type MsixSpec } from './msix.js';
import { PcieCapability, type PcieSpec } from './pcie.js';
import { PmCapability } from './pm.js';
import type { SharedMemory, SharedMemoryFactory } from './shared-memory.js';

/** 2^53 - 1 as a bigint: offsets and sizes up to it are exact as numbers. */
const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** The capabilities a PciDevice offers: power management, MSI, MSI-X, PCI Express (with FLR). */
export interface PciCapsSpec {
  /** Power Management capability (D0/D3hot). */
  pm?: boolean;
  msi?: MsiSpec;
  msix?: MsixSpec;
  /** PCI Express capability; makes config space 4 KiB with extended capabilities from 0x100. */
  pcie?: boolean | PcieSpec;
}

/**
 * A device-specific region (index 9, 10, ... in the order given), e.g. a vendor register file or a data window
 * beside the BARs. Offsets are region-relative; the engine has already checked the access against `size` and the
 * READ/WRITE flags (a region without `read` is not readable, without `write` not writable).
 */
export interface DeviceRegionSpec {
  size: number | bigint;
  /** VFIO_REGION_INFO_CAP_TYPE: how a client recognises the region (vendor-specific type and subtype). */
  type?: { type: number; subtype: number };
  /** Return exactly `count` bytes. Throw DeviceError to fail the access with its errno. */
  read?(offset: bigint, count: number): Uint8Array;
  write?(offset: bigint, data: Uint8Array): void;
}

/**
 * What a PciDevice is: IDs and class code, BARs, capabilities, interrupt pin, expansion ROM and device-specific
 * regions.
 */
export interface PciDeviceSpec {
  vendorId: number;
  deviceId: number;
  /** Default: vendorId. */
  subsystemVendorId?: number;
  /** Default: deviceId. */
  subsystemId?: number;
  /** 24-bit class code: base class << 16 | sub-class << 8 | programming interface (edu: 0x00ff00). */
  classCode: number;
  revision?: number;
  /** BAR slots 0-5 (a 64-bit BAR also takes the next slot, which must be empty). */
  bars?: ReadonlyArray<BarSpec | null | undefined>;
  /** An expansion ROM image: region 6 and a sizable ROM register. Without it both read 0. */
  rom?: Uint8Array;
  caps?: PciCapsSpec;
  /** Interrupt pin: 0 none, 1-4 INTA-INTD (default 1). */
  intxPin?: number;
  /** Shared memory for `sparse` BAR areas (default: a sealed memfd from vfio-user-native, see memfd.ts). */
  sharedMemory?: SharedMemoryFactory;
  /** Device-specific regions after VGA: the first is region 9. */
  regions?: readonly DeviceRegionSpec[];
  /** Add device-specific capabilities or registers before the power-on state is recorded. */
  configure?: (cfg: ConfigSpace, caps: CapabilityAllocator) => void;
  /** A name for logs and memfds. */
  name?: string;
  /** Logger used while no client is attached (default: silent). */
  log?: DeviceLogger;
}

/** What the model implements; every hook is optional. */
export interface PciDeviceModel {
  /** DEVICE_RESET / FLR: power-on state. Config space is already restored when this runs. */
  reset?(): void | Promise<void>;
  /** A client connected; `ctx.dma` and `ctx.irq` are valid until detach(). */
  attach?(ctx: DeviceContext): void;
  /** The client went away: stop DMA (device state is kept). */
  detach?(): void;
  /** Server shutdown. */
  close?(): void;
  /** The client mapped guest memory (see VfioUserDevice.dmaMapped). */
  dmaMapped?(region: DmaRegionInfo): void;
  /** The client unmaps guest memory: stop using it before the promise resolves (VfioUserDevice.dmaUnmapped). */
  dmaUnmapped?(region: DmaRegionInfo): void | Promise<void>;
  /** Stop DMA and interrupts before a reset or a DMA unmap (VfioUserDevice.quiesce). */
  quiesce?(): void | Promise<void>;
  /**
   * Migration (see migration.ts): implement saveState and loadState and the PciDevice offers migration, saving
   * config space, MSI-X table/PBA, RAM/shared BAR contents and the INTx level around the model's own state.
   * saveState returns anything msgpackr encodes; loadState validates (DeviceError EINVAL) before it changes
   * anything; setRunning(false) must quiesce the model (no DMA, interrupts or progress until setRunning(true)).
   */
  saveState?(): unknown;
  loadState?(state: unknown): void;
  setRunning?(running: boolean): void | Promise<void>;
}

/** The spec's device-specific regions with their sizes as bigints (each must be positive). */
function deviceRegions(regions: readonly DeviceRegionSpec[]): (DeviceRegionSpec & { bytes: bigint })[] {
  return regions.map((r, i) => {
    const bytes = BigInt(r.size);
    if (bytes <= 0n) throw new Error(`region ${FIRST_DEVICE_REGION + i}: size must be positive`);
    return { ...r, bytes };
  });
}

/** INTx pin: 0 (none) or 1..4 (INTA..INTD); default INTA. */
function intxPinOf(spec: PciDeviceSpec): number {
  const pin = spec.intxPin ?? 1;
  if (!Number.isInteger(pin) || pin < 0 || pin > 4) throw new Error('intxPin must be 0..4');
  return pin;
}

/** The type 0 header: IDs, class, interrupt pin, and which COMMAND/STATUS/cache-line/IRQ-line bits are writable. */
function writeType0Header(cfg: ConfigSpace, spec: PciDeviceSpec, pin: number): void {
  cfg.set16(PCI_VENDOR_ID, spec.vendorId);
  cfg.set16(PCI_DEVICE_ID, spec.deviceId);
  cfg.set8(PCI_REVISION_ID, spec.revision ?? 0);
  cfg.set8(PCI_CLASS_PROG, spec.classCode & 0xff);
  cfg.set16(PCI_CLASS_PROG + 1, (spec.classCode >> 8) & 0xffff);
  cfg.set16(PCI_SUBSYSTEM_VENDOR_ID, spec.subsystemVendorId ?? spec.vendorId);
  cfg.set16(PCI_SUBSYSTEM_ID, spec.subsystemId ?? spec.deviceId);
  cfg.set8(PCI_INTERRUPT_PIN, pin);
  // Writable COMMAND bits as QEMU's pci.c: I/O, memory, bus master, parity, SERR, interrupt disable.
  cfg.setWmask(
    PCI_COMMAND,
    2,
    PCI_COMMAND_IO |
      PCI_COMMAND_MEMORY |
      PCI_COMMAND_MASTER |
      PCI_COMMAND_PARITY |
      PCI_COMMAND_SERR |
      PCI_COMMAND_INTX_DISABLE,
  );
  cfg.setW1cmask(PCI_STATUS, 2, PCI_STATUS_RW1C_MASK);
  cfg.setWmask(PCI_CACHE_LINE_SIZE, 1, 0xff);
  cfg.setWmask(PCI_INTERRUPT_LINE, 1, 0xff);
}

/**
 * The BARs into `bars` (a 64-bit BAR takes the next slot as its upper half), their registers into config space,
 * and shared memory for sparse ones. On a throw, `bars` holds those built so far (their memory is the caller's
 * to close).
 */
function buildBars(
  cfg: ConfigSpace,
  spec: PciDeviceSpec,
  name: string,
  bars: (BarRegion | undefined)[],
): void {
  const specs = spec.bars ?? [];
  if (specs.length > 6) throw new Error('at most 6 BARs');
  for (let i = 0; i < 6; i++) {
    const b = specs[i];
    if (!b) continue;
    if (bars[i]) throw new Error(`BAR${i} is the upper half of BAR${i - 1}`);
    const size = validateBarSpec(i, b);
    if (b.is64 && specs[i + 1]) throw new Error(`BAR${i + 1} must be empty: BAR${i} is 64-bit`);
    installBarRegisters(cfg, i, b, size);
    let memory: SharedMemory | undefined;
    if (b.sparse) memory = (spec.sharedMemory ?? memfdSharedMemory)(`${name}-bar${i}`, Number(size));
    bars[i] = new BarRegion(i, b, size, memory);
    if (b.is64) i++;
  }
}

/**
 * The expansion ROM (a copy, its size a power of two of at least 2 KiB), or undefined without one. The register
 * is sizable only when there is a ROM (otherwise QEMU invents one).
 */
function installRom(
  cfg: ConfigSpace,
  rom: Uint8Array | undefined,
): { bytes: Uint8Array; size: bigint } | undefined {
  if (!rom || rom.length === 0) return undefined;
  let size = 2048n;
  while (size < BigInt(rom.length)) size <<= 1n;
  if (size > 1n << 24n) throw new Error('ROM larger than 16 MiB');
  cfg.setWmask(
    PCI_ROM_ADDRESS,
    4,
    Number(BigInt.asUintN(32, ~(size - 1n)) & 0xfffff800n) | PCI_ROM_ADDRESS_ENABLE,
  );
  return { bytes: rom.slice(), size };
}

/** Checks that the MSI-X table and PBA fit a memory BAR outside its mmapped areas, and overlays them there. */
function placeMsix(m: MsixCapability, bars: readonly (BarRegion | undefined)[]): void {
  const bar = bars[m.bar];
  if (!bar || bar.spec.io) throw new Error(`MSI-X: BAR${m.bar} must be a memory BAR`);
  const end = Math.max(m.tableOffset + m.table.length, m.pbaOffset + m.pba.length);
  if (BigInt(end) > bar.size) throw new Error(`MSI-X: table/PBA do not fit in BAR${m.bar}`);
  const overlaps = (s: number, e: number) => bar.areas.some((a) => a.start < e && s < a.end);
  if (
    overlaps(m.tableOffset, m.tableOffset + m.table.length) ||
    overlaps(m.pbaOffset, m.pbaOffset + m.pba.length)
  ) {
    throw new Error('MSI-X table/PBA must not be inside an mmapped area');
  }
  for (const o of m.overlays()) bar.addOverlay(o);
}

/**
 * A PCI function served over vfio-user, built from a PciDeviceSpec and a PciDeviceModel: config space, BARs,
 * capabilities, interrupt routing, reset/FLR and migration; implements VfioUserDevice.
 */
export class PciDevice<M extends PciDeviceModel = PciDeviceModel> implements VfioUserDevice {
  readonly flags = DeviceInfoFlags.PCI | DeviceInfoFlags.RESET;
  /** 9 PCI regions (BAR0-5, ROM, CONFIG, VGA) plus the spec's device-specific regions. */
  readonly numRegions: number;
  readonly numIrqs = 5;

  readonly name: string;
  readonly config: ConfigSpace;
  readonly model: M | undefined;
  readonly msi: MsiCapability | undefined;
  readonly msix: MsixCapability | undefined;
  readonly pcie: PcieCapability | undefined;
  readonly pm: PmCapability | undefined;
  readonly intxPin: number;
  /** Present when the model implements saveState/loadState. */
  readonly migration: DeviceMigration | undefined;

  private readonly bars: (BarRegion | undefined)[] = [];
  private readonly extra: readonly (DeviceRegionSpec & { bytes: bigint })[];
  private readonly rom: Uint8Array | undefined;
  private readonly romSize: bigint;
  /** config.size as the bigint regionInfo and the bounds checks use (one, not one per access). */
  private readonly configSize: bigint;
  private readonly irq: InterruptRouter;
  private readonly defaultLog: DeviceLogger;
  private ctx: DeviceContext | undefined;
  private flrPending = false;
  private closed = false;

  constructor(spec: PciDeviceSpec, model?: M) {
    this.name = spec.name ?? 'pci';
    this.model = model;
    this.extra = deviceRegions(spec.regions ?? []);
    this.numRegions = FIRST_DEVICE_REGION + this.extra.length;
    this.defaultLog = spec.log ?? silentLogger;
    this.intxPin = intxPinOf(spec);
    const pcieSpec = spec.caps?.pcie === true ? {} : spec.caps?.pcie || undefined;
    const cfg = new ConfigSpace(pcieSpec ? PCIE_CONFIG_SIZE : PCI_CONFIG_SIZE);
    this.config = cfg;
    this.configSize = BigInt(cfg.size);
    writeType0Header(cfg, spec, this.intxPin);
    this.irq = new InterruptRouter(
      cfg,
      this.intxPin,
      () => this.ctx?.irq,
      () => this.log,
    );
    try {
      buildBars(cfg, spec, this.name, this.bars);
      const rom = installRom(cfg, spec.rom);
      this.rom = rom?.bytes;
      this.romSize = rom?.size ?? 0n;
      // Capabilities, in the order QEMU devices usually have them.
      const caps = new CapabilityAllocator(cfg);
      if (spec.caps?.pm) this.pm = new PmCapability(cfg, caps);
      if (spec.caps?.msi) {
        this.msi = new MsiCapability(cfg, caps, spec.caps.msi, (v) => this.irq.trigger(IrqIndex.MSI, v));
      }
      if (spec.caps?.msix) {
        const m = new MsixCapability(cfg, caps, spec.caps.msix, (v) => this.irq.trigger(IrqIndex.MSIX, v));
        placeMsix(m, this.bars);
        this.msix = m;
      }
      if (pcieSpec) this.pcie = new PcieCapability(cfg, caps, pcieSpec, () => this.requestFlr());
      this.irq.msi = this.msi;
      this.irq.msix = this.msix;
      spec.configure?.(cfg, caps);
      cfg.freeze();
      this.migration = isMigratableModel(model)
        ? new PciMigration({ config: cfg, bars: this.bars, msix: this.msix, irq: this.irq, model })
        : undefined;
    } catch (err) {
      // Do not leak the memfds of BARs built before the spec turned out to be invalid.
      for (const bar of this.bars) bar?.memory?.close();
      throw err;
    }
  }

  /** The current logger: the client's while attached, else the spec's. */
  get log(): DeviceLogger {
    return this.ctx?.log ?? this.defaultLog;
  }

  /** The attached client's context, if any. */
  get context(): DeviceContext | undefined {
    return this.ctx;
  }

  /** COMMAND.Bus Master Enable: a well-behaved device does no DMA without it. */
  get busMasterEnabled(): boolean {
    return (this.config.get16(PCI_COMMAND) & PCI_COMMAND_MASTER) !== 0;
  }

  /** The shared memory behind BAR `index`'s sparse areas (for the model to poll), if any. */
  barMemory(index: number): Uint8Array | undefined {
    return this.bars[index]?.memory?.bytes;
  }

  // ---- interrupts -------------------------------------------------------------------------------------

  /** Raise interrupt `vector` (MSI-X, else MSI, else INTx). Returns the route taken. */
  raise(vector = 0): IrqRoute {
    return this.irq.raise(vector);
  }

  /** De-assert INTx. */
  lower(): void {
    this.irq.lower();
  }

  /** The INTx line level. */
  get intxAsserted(): boolean {
    return this.irq.intxAsserted;
  }

  /**
   * The client unmasked INTx (SET_IRQS UNMASK or the resample eventfd): a still-asserted line fires again.
   * irqStateChanged(IrqIndex.INTX) does the same; the engine may call either.
   */
  intxUnmasked(): void {
    this.irq.intxUnmasked();
  }

  /** Signal the ERR eventfd (AER-style "something is wrong with the device"). */
  signalError(): boolean {
    return this.irq.trigger(IrqIndex.ERR, 0);
  }

  irqStateChanged(index: number): void {
    // A newly wired or unmasked INTx eventfd must see a line that is still asserted (see interrupts.ts for how
    // this cooperates with the sink's own pending bit). MSI/MSI-X keep their pending state in the IrqSink
    // (eventfd masking) or in config space (released on unmask writes).
    if (index === IrqIndex.INTX) this.irq.intxUnmasked();
  }

  // ---- VfioUserDevice -------------------------------------------------------------------------------

  regionInfo(index: number): RegionDescription {
    if (index >= 0 && index <= PciRegion.BAR5) {
      const bar = this.bars[index];
      if (!bar) return { size: 0n, flags: 0 };
      const desc: RegionDescription = { size: bar.size, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE };
      if (bar.memory) {
        desc.flags |= RegionInfoFlags.MMAP;
        const whole =
          bar.areas.length === 1 && bar.areas[0]!.start === 0 && BigInt(bar.areas[0]!.end) === bar.size;
        desc.mmap = { fd: bar.memory.fd, offset: 0n };
        if (!whole) {
          desc.mmap.areas = bar.areas.map((a) => ({
            offset: BigInt(a.start),
            size: BigInt(a.end - a.start),
          }));
        }
      }
      return desc;
    }
    switch (index) {
      case PciRegion.ROM:
        return this.rom ? { size: this.romSize, flags: RegionInfoFlags.READ } : { size: 0n, flags: 0 };
      case PciRegion.CONFIG:
        return { size: this.configSize, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE };
      case PciRegion.VGA:
        return { size: 0n, flags: 0 };
      default: {
        const r = this.extra[index - FIRST_DEVICE_REGION];
        if (!r) throw new DeviceError(Errno.EINVAL, `no region ${index}`);
        const desc: RegionDescription = {
          size: r.bytes,
          flags: (r.read ? RegionInfoFlags.READ : 0) | (r.write ? RegionInfoFlags.WRITE : 0),
        };
        if (r.type) desc.type = r.type;
        return desc;
      }
    }
  }

  irqInfo(index: number): IrqDescription {
    const eventfd = IrqInfoFlags.EVENTFD;
    switch (index) {
      case IrqIndex.INTX:
        return this.intxPin
          ? { count: 1, flags: eventfd | IrqInfoFlags.MASKABLE | IrqInfoFlags.AUTOMASKED }
          : { count: 0, flags: 0 };
      case IrqIndex.MSI:
        return this.msi
          ? { count: this.msi.vectors, flags: eventfd | IrqInfoFlags.NORESIZE }
          : { count: 0, flags: 0 };
      case IrqIndex.MSIX:
        return this.msix
          ? { count: this.msix.vectors, flags: eventfd | IrqInfoFlags.NORESIZE }
          : { count: 0, flags: 0 };
      case IrqIndex.ERR:
        return { count: 1, flags: eventfd };
      case IrqIndex.REQ:
        return { count: 0, flags: 0 };
      default:
        throw new DeviceError(Errno.EINVAL, `no IRQ index ${index}`);
    }
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array {
    if (index >= 0 && index <= PciRegion.BAR5)
      return this.guard(() => this.barRegion(index).read(offset, count));
    if (index === PciRegion.CONFIG) {
      const off = this.checkBounds(index, offset, count, this.configSize);
      return this.config.read(off, count);
    }
    const r = this.extra[index - FIRST_DEVICE_REGION];
    if (r) {
      this.checkBounds(index, offset, count, r.bytes);
      if (!r.read) throw new DeviceError(Errno.EINVAL, `region ${index} is not readable`);
      const read = r.read;
      return this.guard(() => read(offset, count));
    }
    if (index === PciRegion.ROM && this.rom) {
      const off = this.checkBounds(index, offset, count, this.romSize);
      const out = new Uint8Array(count);
      out.set(this.rom.subarray(Math.min(off, this.rom.length), Math.min(off + count, this.rom.length)));
      return out;
    }
    return this.absent(index, offset, count);
  }

  directReadBytes(index: number): Uint8Array | undefined {
    // Reading config space has no side effect (the registers act on writes, config-space.ts) and ConfigSpace keeps
    // it in one array, written in place.
    return index === PciRegion.CONFIG ? this.config.bytes : undefined;
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void {
    if (index >= 0 && index <= PciRegion.BAR5) {
      this.guard(() => this.barRegion(index).write(offset, data));
      return;
    }
    if (index === PciRegion.CONFIG) {
      const off = this.checkBounds(index, offset, data.length, this.configSize);
      const { readOnlyBytes } = this.config.write(off, data);
      if (readOnlyBytes.length) {
        this.log.debug(
          { offset: off, count: data.length, readOnlyBytes },
          'config write to read-only bits ignored',
        );
      }
      if (this.flrPending) {
        this.flrPending = false;
        this.log.info('function level reset');
        // Already logged on failure; the write itself succeeded.
        this.runReset()?.catch(() => {});
      }
      return;
    }
    const r = this.extra[index - FIRST_DEVICE_REGION];
    if (r) {
      this.checkBounds(index, offset, data.length, r.bytes);
      if (!r.write) throw new DeviceError(Errno.EINVAL, `region ${index} is not writable`);
      const write = r.write;
      this.guard(() => write(offset, data));
      return;
    }
    if (index === PciRegion.ROM && this.rom)
      throw new DeviceError(Errno.EINVAL, 'the ROM region is read-only');
    this.absent(index, offset, data.length);
  }

  reset(): void | Promise<void> {
    return this.runReset();
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
    this.irq.sinkChanged();
    this.model?.attach?.(ctx);
  }

  detach(): void {
    try {
      this.model?.detach?.();
    } finally {
      this.ctx = undefined;
      this.irq.sinkChanged();
    }
  }

  dmaMapped(region: DmaRegionInfo): void {
    this.model?.dmaMapped?.(region);
  }

  dmaUnmapped(region: DmaRegionInfo): void | Promise<void> {
    return this.model?.dmaUnmapped?.(region);
  }

  quiesce(): void | Promise<void> {
    return this.model?.quiesce?.();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.model?.close?.();
    } finally {
      for (const bar of this.bars) bar?.memory?.close();
    }
  }

  // ---- internals ------------------------------------------------------------------------------------

  private requestFlr(): void {
    // Deferred to the end of the config write: resetting inside a write hook would let later hooks of the
    // same write see (and act on) the reset state.
    this.flrPending = true;
  }

  private runReset(): void | Promise<void> {
    this.irq.reset();
    this.config.reset();
    this.msix?.resetTable();
    for (const bar of this.bars) bar?.reset();
    const r = this.model?.reset?.();
    if (r && typeof (r as Promise<void>).then === 'function') {
      return (r as Promise<void>).catch((err: unknown) => {
        this.log.error({ err }, 'device model reset failed');
        throw new DeviceError(Errno.EIO, 'reset failed');
      });
    }
  }

  private barRegion(index: number): BarRegion {
    const bar = this.bars[index];
    if (!bar) throw new DeviceError(Errno.EINVAL, `BAR${index} is not implemented`);
    return bar;
  }

  private checkBounds(index: number, offset: bigint, count: number, size: bigint): number {
    // Region accesses are register-sized: the check in numbers when they are exact (no bigint arithmetic, which
    // allocates), in bigints otherwise.
    if (offset >= 0n && offset <= SAFE && size <= SAFE && count >= 0) {
      const o = Number(offset);
      if (o + count <= Number(size)) return o;
    }
    if (offset < 0n || count < 0 || offset + BigInt(count) > size) {
      throw new DeviceError(
        Errno.EINVAL,
        `region ${index}: access [${offset}, +${count}) outside ${size} bytes`,
      );
    }
    return Number(offset);
  }

  private absent(index: number, offset: bigint, count: number): Uint8Array {
    if (index < 0 || index >= this.numRegions) throw new DeviceError(Errno.EINVAL, `no region ${index}`);
    // An absent region has size 0: only a zero-length access at offset 0 is inside it.
    this.checkBounds(index, offset, count, 0n);
    return new Uint8Array(0);
  }

  /** Device handlers run here: a DeviceError passes through, anything else becomes EIO (and is logged). */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      if (err instanceof DeviceError) throw err;
      this.log.error({ err }, 'device handler failed');
      throw new DeviceError(Errno.EIO, 'device handler failed');
    }
  }
}
