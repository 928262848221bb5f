// The iommufd IOMMU backend: `/dev/iommu` plus the passed-through device's VFIO cdev, one IOAS that every client
// DMA region is mirrored into (docs/iommu-mirroring.md).
//
// Set-up (open(), synchronous ioctls, done once): open /dev/iommu (or take `--iommufd-fd`), open the device's
// cdev /dev/vfio/devices/vfioN (or take `--vfio-device-fd`), VFIO_DEVICE_BIND_IOMMUFD, IOMMU_IOAS_ALLOC, and
// VFIO_DEVICE_ATTACH_IOMMUFD_PT to the IOAS (the kernel allocates the HWPT). The IOAS is ours and fresh, so it
// starts empty (policy 10).
//
// attach() reads IOMMU_IOAS_IOVA_RANGES after the device attached (reserved windows, e.g. the MSI range, are cut
// out only then) and the IOVA alignment, which is the page size we advertise (QEMU's iommufd container also
// advertises the host page only). iommufd has no entry limit: max_dma_maps is the protocol's 65535. It also
// probes IOMMU_IOAS_MAP_FILE (6.13+): a call with no READABLE/WRITEABLE flag is refused with EINVAL by a kernel
// that has it and with ENOTTY by one that does not, and creates nothing either way.
//
// Maps:
// - with MAP_FILE, straight from the client's file: `{fd, start = file offset, length, iova, FIXED_IOVA |
//   READABLE [| WRITEABLE]}`. No process address is involved and the kernel holds its own file reference. If the
//   kernel turns out not to know it (ENOTTY/EOPNOTSUPP), the backend switches to IOAS_MAP for good;
// - otherwise IOAS_MAP of the server's mapping of the region, one call per mapping window (segment), unwinding
//   the earlier segments when a later one fails.
// READ/WRITE become READABLE (0x4) / WRITEABLE (0x2): the bits differ from type1's. An ioctl of at most
// SYNC_IOCTL_MAX_SIZE (2 MiB) uses the addon's synchronous call (pinning a few hundred pages costs less than a
// threadpool hop, and a vIOMMU guest maps page by page); larger ones pin on the libuv threadpool. Host errnos pass unchanged (EINVAL reserved range/alignment, EEXIST, ENOMEM, EPERM for WRITEABLE
// on a read-only file...).
//
// Unmaps: IOAS_UNMAP of the region's exact range (synchronous up to the same size); ENOENT ("nothing there") is
// success (policy 4/11). Unmap-all is IOAS_UNMAP(0, U64_MAX) on the threadpool, which succeeds even on an empty
// IOAS.

import { closeFdsQuietly, type IovaRange, iommufd, vfio } from 'vfio-user-native';
import { DEFAULT_MAX_DMA_MAPS, Errno, ErrnoError, errnoOf, PAGE_SIZE_BIG, U64_MAX } from 'vfio-user-protocol';
import { type DeviceLogger, type HostDevice, silentLogger } from '../device.js';
import type { BackendHandover, HostFacts, HostMapping } from './backend.js';
import { type HostDeviceBackend, type HostFds, hex, IoctlPath, toFactsRanges } from './host-device.js';

export interface IommufdOptions {
  /** The host device's PCI address (finds its cdev). */
  bdf?: string;
  /** Pre-opened fds: the iommufd and/or the (unbound) device cdev. Ownership passes to the backend. */
  hostFds?: Pick<HostFds, 'iommufd' | 'device'>;
  /** Use IOAS_MAP_FILE when the kernel has it (default true; false forces IOAS_MAP of our mapping). */
  mapFile?: boolean;
  /**
   * Maps/unmaps of at most this many bytes use the synchronous ioctl (default SYNC_IOCTL_MAX_SIZE, 2 MiB; 0n sends
   * every map and unmap to the threadpool). For tests and benchmarks.
   */
  syncMaxSize?: bigint;
  log?: DeviceLogger;
  /**
   * Hand-over (docs/handover.md): `hostFds` are the previous process's iommufd and device cdev, bound and attached
   * to this IOAS with live entries; no set-up ioctl is made (no bind, no IOAS allocation, no attach).
   */
  adopt?: { facts: HostFacts; devId: number; ioas: number; hwpt: number; mapFile: boolean };
}

export class IommufdBackend implements HostDeviceBackend {
  readonly name = 'iommufd';
  readonly pins = true;

  private ifd = -1;
  private device = -1;
  private ioas = 0;
  private hwpt = 0;
  private devId = 0;
  private attached = false;
  private opened = false;
  private closed = false;
  /** IOAS_MAP_FILE usable (probed in attach; cleared if the kernel refuses it as unknown). */
  private mapFile = false;
  private facts: HostFacts | undefined;
  private readonly log: DeviceLogger;
  /** Sync or threadpool, per map/unmap ioctl (its `counts` tell tests which path ran). */
  readonly ioctlPath: IoctlPath;

  constructor(private readonly o: IommufdOptions = {}) {
    this.log = o.log ?? silentLogger;
    this.ioctlPath = new IoctlPath(o.syncMaxSize);
  }

  /** Its file for IOAS_MAP_FILE, otherwise an address for IOAS_MAP: read by the mirror per map (follows the probe). */
  get mapsBy(): 'file' | 'address' {
    return this.mapFile ? 'file' : 'address';
  }

  /** Whether maps go through IOAS_MAP_FILE (after attach). */
  get usesMapFile(): boolean {
    return this.mapFile;
  }

  /** The iommufd and the IOAS id (tests and diagnostics; owned by the backend). */
  get ids(): { iommufd: number; ioas: number; hwpt: number; devId: number } {
    return { iommufd: this.ifd, ioas: this.ioas, hwpt: this.hwpt, devId: this.devId };
  }

  /** Opens /dev/iommu and the cdev, binds, allocates the IOAS and attaches (idempotent). */
  open(): void {
    if (this.opened) return;
    if (this.closed) throw new ErrnoError(Errno.EBADF, 'iommufd backend is closed');
    const given = this.o.hostFds ?? {};
    this.ifd = given.iommufd ?? -1;
    this.device = given.device ?? -1;
    const a = this.o.adopt;
    if (a) {
      if (this.ifd < 0 || this.device < 0) throw new ErrnoError(Errno.EINVAL, 'adopting iommufd without fds');
      ({ devId: this.devId, ioas: this.ioas, hwpt: this.hwpt, mapFile: this.mapFile, facts: this.facts } = a);
      this.attached = true;
      this.opened = true;
      return;
    }
    try {
      if (this.ifd < 0) this.ifd = iommufd.open();
      if (this.device < 0) {
        if (this.o.bdf === undefined)
          throw new ErrnoError(Errno.EINVAL, 'iommufd needs the host device (host=BDF) or its cdev fd');
        this.device = vfio.openDevice(this.o.bdf);
      }
      this.devId = vfio.bindIommufd(this.device, this.ifd);
      this.ioas = iommufd.ioasAlloc(this.ifd);
      this.hwpt = vfio.attachPt(this.device, this.ioas);
      this.attached = true;
    } catch (err) {
      this.release();
      throw err;
    }
    this.opened = true;
  }

  hostDevice(): HostDevice {
    this.open();
    return { fd: this.device, bdf: this.o.bdf, via: this.name };
  }

  /** IOMMU_IOAS_IOVA_RANGES now. */
  iovaRanges(): { ranges: IovaRange[]; alignment: bigint } {
    this.open();
    return iommufd.iovaRanges(this.ifd, this.ioas);
  }

  async attach(): Promise<HostFacts> {
    this.open();
    if (this.facts) return this.facts;
    // Ranges only exclude the device's reserved regions once it is attached.
    const { ranges, alignment } = iommufd.iovaRanges(this.ifd, this.ioas);
    const pgsize = alignment > PAGE_SIZE_BIG ? alignment : PAGE_SIZE_BIG;
    let iovaRanges = toFactsRanges(ranges);
    if (iovaRanges.length === 0) iovaRanges = [{ start: 0n, last: U64_MAX }];
    this.mapFile = this.o.mapFile !== false && (await this.probeMapFile());
    this.facts = { pgsizes: pgsize, iovaRanges, maxDmaMaps: DEFAULT_MAX_DMA_MAPS };
    this.log.info(
      {
        backend: this.name,
        bdf: this.o.bdf,
        ioas: this.ioas,
        hwpt: this.hwpt,
        pgsizes: hex(pgsize),
        iovaRanges: iovaRanges.map((r) => `${hex(r.start)}-${hex(r.last)}`),
        mapFile: this.mapFile,
      },
      'iommufd IOAS attached',
    );
    return this.facts;
  }

  /** IOAS_MAP_FILE with neither READABLE nor WRITEABLE: EINVAL if the kernel has it, ENOTTY if not. */
  private async probeMapFile(): Promise<boolean> {
    try {
      // The fd is only dup'ed by the addon; the kernel refuses the flags before it looks at the file.
      const iova = await iommufd.ioasMapFile(this.ifd, {
        ioasId: this.ioas,
        fd: this.ifd,
        start: 0n,
        length: PAGE_SIZE_BIG,
        iova: 0n,
        flags: 0,
      });
      // Not expected: undo whatever was created.
      await iommufd
        .ioasUnmap(this.ifd, { ioasId: this.ioas, iova, length: PAGE_SIZE_BIG })
        .catch(() => undefined);
      return true;
    } catch (err) {
      const errno = errnoOf(err, 0);
      if (errno === Errno.ENOTTY || errno === Errno.EOPNOTSUPP) return false;
      return true;
    }
  }

  /**
   * One host entry. Synchronous when small: returns undefined on success and a rejected promise on failure (never
   * throws), so the mirror completes the DMA_MAP without a promise hop and the success path allocates no promise,
   * no error and no argument object beyond the addon's block (native/lib/iommufd.ts).
   */
  map(m: HostMapping): Promise<void> | undefined {
    const { iova, size } = m;
    const flags =
      iommufd.IOAS_MAP_FIXED_IOVA |
      (m.read ? iommufd.IOAS_MAP_READABLE : 0) |
      (m.write ? iommufd.IOAS_MAP_WRITEABLE : 0);
    const sync = this.ioctlPath.sync(size);
    if (this.mapFile && m.fd !== undefined) {
      const args = { ioasId: this.ioas, fd: m.fd, start: m.fileOffset ?? 0n, length: size, iova, flags };
      if (!sync) {
        return iommufd.ioasMapFile(this.ifd, args).then(noValue, (err: unknown) => {
          throw this.mapFileFailed(err);
        });
      }
      try {
        iommufd.ioasMapFileSync(this.ifd, args);
      } catch (err) {
        return Promise.reject(this.mapFileFailed(err));
      }
      return undefined;
    }
    const userVa = m.vaddr;
    if (userVa === undefined)
      return Promise.reject(
        new ErrnoError(Errno.EINVAL, `IOAS_MAP of ${hex(iova)} without a process address`),
      );
    const args = { ioasId: this.ioas, iova, length: size, userVa, flags };
    if (!sync) return iommufd.ioasMap(this.ifd, args).then(noValue);
    try {
      iommufd.ioasMapSync(this.ifd, args);
    } catch (err) {
      return Promise.reject(err);
    }
    return undefined;
  }

  /** A failed IOAS_MAP_FILE's error, to pass on; if the kernel does not know the ioctl, map by address from now on. */
  private mapFileFailed(err: unknown): unknown {
    const errno = errnoOf(err, 0);
    if (errno === Errno.ENOTTY || errno === Errno.EOPNOTSUPP) {
      // The kernel does not know IOAS_MAP_FILE after all: map by address from now on (mapsBy follows).
      this.mapFile = false;
      this.log.warn({ err }, 'IOMMU_IOAS_MAP_FILE is unknown to this kernel: using IOAS_MAP');
    }
    return err;
  }

  /**
   * IOAS_UNMAP of [iova, iova+size): synchronous when small, like map() (undefined, or a rejected promise). Rejects
   * with ENOENT when nothing was mapped there (the mirror takes that as done).
   */
  unmap(iova: bigint, size: bigint): Promise<void> | undefined {
    const args = { ioasId: this.ioas, iova, length: size };
    if (!this.ioctlPath.sync(size)) return iommufd.ioasUnmap(this.ifd, args).then(noValue);
    try {
      iommufd.ioasUnmapSync(this.ifd, args);
    } catch (err) {
      return Promise.reject(err);
    }
    return undefined;
  }

  async unmapAll(): Promise<void> {
    if (!this.opened) return;
    await iommufd.ioasUnmap(this.ifd, { ioasId: this.ioas, iova: 0n, length: U64_MAX });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.release();
  }

  /** Hand-over (docs/handover.md): the iommufd and the cdev move; the IOAS, its entries and the attach stay. */
  handoverExport(): BackendHandover {
    if (!this.opened || !this.facts) throw new Error('iommufd backend not attached');
    return {
      fds: { iommufd: this.ifd, device: this.device },
      meta: { facts: this.facts, devId: this.devId, ioas: this.ioas, hwpt: this.hwpt, mapFile: this.mapFile },
    };
  }

  /** Detach, close the device (unbinds it), destroy the IOAS (the iommufd may be shared), close the iommufd. */
  private release(): void {
    if (this.attached) {
      try {
        vfio.detachPt(this.device);
      } catch (err) {
        this.log.warn({ err }, 'VFIO_DEVICE_DETACH_IOMMUFD_PT failed');
      }
      this.attached = false;
    }
    closeFdsQuietly([this.device]);
    this.device = -1;
    if (this.ioas !== 0 && this.ifd >= 0) {
      try {
        iommufd.destroy(this.ifd, this.ioas);
      } catch (err) {
        this.log.debug({ err }, 'IOMMU_DESTROY of the IOAS failed');
      }
    }
    this.ioas = 0;
    closeFdsQuietly([this.ifd]);
    this.ifd = -1;
    this.opened = false;
  }
}

/** Drops an ioctl's resolved value (the IOVA or byte count): map and unmap resolve with nothing. */
function noValue(): void {}
