// vfio-pci passthrough: a host PCI device bound to the kernel's vfio-pci driver, exposed over vfio-user
// (`--device vfio-pci,host=0000:00:03.0 --iommu vfio|iommufd|auto`).
//
// The device is reached through the VFIO device fd of the host IOMMU backend (type1 container or iommufd IOAS),
// the same container/IOAS the mirror maps every client DMA region into, so the host device DMAs straight into
// the client's memory through the host IOMMU. Everything is forwarded, nothing is emulated:
// - device/region/IRQ info come from the host (VFIO_DEVICE_GET_INFO / GET_REGION_INFO / GET_IRQ_INFO, read once);
// - region reads and writes (config space included: vfio-pci virtualises it) are pread/pwrite on the device fd
//   at the region's offset (always `info.offset`, never index << 40);
// - mmap-able regions (BARs) are handed to the client with the device fd itself and the region's offset, with
//   the host's sparse areas, so the VMM maps the BAR like QEMU's vfio-pci does;
// - DEVICE_RESET becomes VFIO_DEVICE_RESET (advertised only when the host device has it);
// - interrupts: DEVICE_SET_IRQS is passed through (VfioUserDevice.setIrqs): the client's eventfds go straight
//   to VFIO_DEVICE_SET_IRQS and the host device signals the VMM with no hop through this process.
// The device fd belongs to the backend (closed by backend.close(), which the server runs before device.close()).
// Hand-over (docs/handover.md): the device's state is the host device's, and the device fd moves to the next
// process with the backend; all this process keeps is which IRQ indexes it passed through (their eventfds stay
// registered in the kernel), carried by the `handover` facet. Nothing is reset or re-registered.

import * as native from 'vfio-user-native';
import {
  DeviceInfoFlags,
  Errno,
  errnoOf,
  RegionInfoFlags,
  SET_IRQS_ACTION_TYPE_MASK,
  SET_IRQS_DATA_TYPE_MASK,
  SetIrqsFlags,
} from 'vfio-user-protocol';
import {
  type DeviceContext,
  DeviceError,
  type DeviceLogger,
  type HostDevice,
  type IrqDescription,
  normaliseBdf,
  type RegionDescription,
  silentLogger,
  type VfioUserDevice,
} from '../device.js';

const { vfio } = native;

export interface VfioPciOptions {
  /** The host device's PCI address; checked against the backend's when both are known. */
  host?: string;
  /** The host device the server's VFIO IOMMU backend opened (the server mirrors DMA into that backend). */
  hostDevice: HostDevice;
  log?: DeviceLogger;
}

export interface VfioPciStats {
  regionReads: number;
  regionWrites: number;
  /** SET_IRQS requests passed straight to the host. */
  irqPassthrough: number;
  resets: number;
}

export class VfioPciDevice implements VfioUserDevice {
  readonly flags: number;
  readonly numRegions: number;
  readonly numIrqs: number;
  readonly host: HostDevice;
  readonly stats: VfioPciStats = {
    regionReads: 0,
    regionWrites: 0,
    irqPassthrough: 0,
    resets: 0,
  };

  private readonly regions: (native.RegionInfo | null)[] = [];
  private readonly irqs: native.IrqInfo[] = [];
  private log: DeviceLogger;
  /** IRQ indexes the client enabled through the pass-through hook (disabled again on detach). */
  private readonly passthrough = new Set<number>();

  readonly handover = {
    saveState: (): Uint8Array =>
      new TextEncoder().encode(JSON.stringify({ passthrough: [...this.passthrough] })),
    loadState: (state: Uint8Array): void => {
      const s = JSON.parse(new TextDecoder().decode(state)) as { passthrough?: unknown };
      if (!Array.isArray(s.passthrough) || !s.passthrough.every((i) => Number.isInteger(i) && i >= 0))
        throw new Error('vfio-pci hand-over state: bad passthrough list');
      this.passthrough.clear();
      for (const i of s.passthrough as number[]) this.passthrough.add(i);
    },
  };

  constructor(o: VfioPciOptions) {
    this.log = o.log ?? silentLogger;
    this.host = o.hostDevice;
    if (o.host !== undefined && this.host.bdf !== undefined && normaliseBdf(o.host) !== this.host.bdf) {
      throw new Error(`vfio-pci host=${o.host} but the IOMMU backend opened ${this.host.bdf}`);
    }
    const info = vfio.deviceGetInfo(this.host.fd);
    if ((info.flags & vfio.DEVICE_FLAGS_PCI) === 0) throw new Error('the VFIO device is not a PCI device');
    this.flags = info.flags & (DeviceInfoFlags.RESET | DeviceInfoFlags.PCI);
    this.numRegions = info.numRegions;
    this.numIrqs = info.numIrqs;
    for (let i = 0; i < this.numRegions; i++) {
      try {
        this.regions.push(vfio.regionInfo(this.host.fd, i));
      } catch {
        // vfio-pci refuses the VGA index of a non-VGA device (EINVAL): an absent region.
        this.regions.push(null);
      }
    }
    for (let i = 0; i < this.numIrqs; i++) {
      try {
        this.irqs.push(vfio.irqInfo(this.host.fd, i));
      } catch {
        this.irqs.push({ index: i, flags: 0, count: 0 });
      }
    }
    this.log.info(
      {
        host: this.host.bdf,
        via: this.host.via,
        flags: this.flags,
        regions: this.numRegions,
        irqs: this.numIrqs,
      },
      'vfio-pci host device opened',
    );
  }

  private region(index: number): native.RegionInfo {
    const r = this.regions[index];
    if (!r || r.size === 0n) throw new DeviceError(Errno.EINVAL, `region ${index} is absent`);
    return r;
  }

  regionInfo(index: number): RegionDescription {
    const r = this.regions[index];
    if (!r || r.size === 0n) return { size: 0n, flags: 0 };
    const flags = r.flags & (RegionInfoFlags.READ | RegionInfoFlags.WRITE | RegionInfoFlags.MMAP);
    const desc: RegionDescription = { size: r.size, flags };
    if (flags & RegionInfoFlags.MMAP) {
      desc.mmap = { fd: this.host.fd, offset: r.offset };
      // The host's sparse areas (e.g. around an MSI-X table that may not be mapped); none = the whole region.
      if (r.sparseMmap) desc.mmap.areas = r.sparseMmap.map((a) => ({ offset: a.offset, size: a.size }));
    }
    if (r.type) desc.type = { type: r.type.type, subtype: r.type.subtype };
    return desc;
  }

  irqInfo(index: number): IrqDescription {
    const i = this.irqs[index];
    return i ? { flags: i.flags & 0xf, count: i.count } : { flags: 0, count: 0 };
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array {
    const r = this.region(index);
    const buf = new Uint8Array(count);
    let n: number;
    try {
      n = vfio.regionRead(this.host.fd, r, offset, buf);
    } catch (err) {
      throw new DeviceError(
        errnoOf(err),
        `host region ${index} read at 0x${offset.toString(16)}: ${(err as Error).message}`,
      );
    }
    if (n !== count)
      throw new DeviceError(Errno.EIO, `host region ${index} read returned ${n} of ${count} bytes`);
    this.stats.regionReads++;
    return buf;
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void {
    const r = this.region(index);
    let n: number;
    try {
      n = vfio.regionWrite(this.host.fd, r, offset, data);
    } catch (err) {
      throw new DeviceError(
        errnoOf(err),
        `host region ${index} write at 0x${offset.toString(16)}: ${(err as Error).message}`,
      );
    }
    if (n !== data.length)
      throw new DeviceError(Errno.EIO, `host region ${index} write took ${n} of ${data.length} bytes`);
    this.stats.regionWrites++;
  }

  reset(): void {
    if ((this.flags & DeviceInfoFlags.RESET) === 0)
      throw new DeviceError(Errno.EINVAL, 'the host device has no reset');
    try {
      vfio.reset(this.host.fd);
    } catch (err) {
      throw new DeviceError(errnoOf(err), `VFIO_DEVICE_RESET: ${(err as Error).message}`);
    }
    this.stats.resets++;
  }

  attach(ctx: DeviceContext): void {
    this.log = ctx.log;
  }

  /** The client left: the host must stop signalling its eventfds (device state itself is kept). */
  detach(): void {
    for (const index of this.passthrough) this.disableHost(index);
    this.passthrough.clear();
  }

  // ---- interrupts: pass-through ------------------------------------------------------------------------------

  setIrqs(
    index: number,
    flags: number,
    start: number,
    count: number,
    fds: readonly number[],
    data?: Uint8Array,
  ): boolean {
    const dataType = flags & SET_IRQS_DATA_TYPE_MASK;
    const action = flags & SET_IRQS_ACTION_TYPE_MASK;
    try {
      if (dataType === SetIrqsFlags.DATA_EVENTFD) {
        // vfio-user sends no fds to de-assign; the kernel wants -1 per vector.
        const eventfds = fds.length > 0 ? [...fds] : new Array<number>(count).fill(-1);
        vfio.setIrqs(this.host.fd, { index, start, action, eventfds });
      } else if (dataType === SetIrqsFlags.DATA_BOOL) {
        const bools = Array.from(data ?? new Uint8Array(count), (b) => b !== 0);
        vfio.setIrqs(this.host.fd, { index, start, action, bools });
      } else {
        vfio.setIrqs(this.host.fd, { index, start, action, count });
      }
    } catch (err) {
      throw new DeviceError(
        errnoOf(err, Errno.EINVAL),
        `VFIO_DEVICE_SET_IRQS index ${index}: ${(err as Error).message}`,
      );
    }
    if (action === SetIrqsFlags.ACTION_TRIGGER) {
      if (count === 0) this.passthrough.delete(index);
      else if (dataType === SetIrqsFlags.DATA_EVENTFD) this.passthrough.add(index);
    }
    this.stats.irqPassthrough++;
    return true;
  }

  private disableHost(index: number): void {
    try {
      vfio.setIrqs(this.host.fd, { index, action: SetIrqsFlags.ACTION_TRIGGER, count: 0 });
    } catch (err) {
      this.log.debug({ err, index }, 'disabling host IRQ index failed');
    }
  }
}

/** Factory for the device registry: options `host` (BDF string) and `hostDevice` (from the server's backend). */
export function createVfioPci(opts: Record<string, unknown>): VfioPciDevice {
  const hostDevice = opts.hostDevice as HostDevice | undefined;
  if (!hostDevice || typeof hostDevice.fd !== 'number') {
    throw new Error(
      'vfio-pci needs the host device of a VFIO host IOMMU backend (--iommu vfio, iommufd or auto with host=BDF)',
    );
  }
  const o: VfioPciOptions = { hostDevice };
  if (typeof opts.host === 'string') o.host = opts.host;
  if (opts.log && typeof opts.log === 'object') o.log = opts.log as DeviceLogger;
  return new VfioPciDevice(o);
}
