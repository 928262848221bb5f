// The VFIO type1 IOMMU backend: a `/dev/vfio/vfio` container holding the passed-through device's group, with
// every client DMA region mirrored by VFIO_IOMMU_MAP_DMA of the server's own mapping of the region
// (docs/iommu-mirroring.md).
//
// Set-up (open(), synchronous ioctls, done once): container (API version 0, TYPE1v2), the group of the device
// (viable), GROUP_SET_CONTAINER, SET_IOMMU(TYPE1v2), then GROUP_GET_DEVICE_FD. Any of the fds may come
// pre-opened from a management layer (`--vfio-container-fd`, `--vfio-group-fd`, `--vfio-device-fd`); a group
// already in the given container and a container whose IOMMU is already set are accepted as they are.
//
// attach() reads the host facts after SET_IOMMU: iova_pgsizes, the IOVA_RANGE cap (reserved windows such as the
// MSI range 0xfee00000 are already cut out by the kernel) and DMA_AVAIL (the `dma_entry_limit` snapshot minus
// live entries), which becomes max_dma_maps; and the UNMAP_ALL extension (queried after SET_IOMMU, §3.2).
//
// Maps: one MAP_DMA per process segment (a region crossing a 1 GiB mapping window has several), READ and/or
// WRITE exactly as the client asked (a READ-only map pins read-only, device writes then fault). A segment of at
// most SYNC_IOCTL_MAX_SIZE (2 MiB) is mapped with the addon's synchronous call: pinning a few hundred pages costs
// less than a threadpool hop, and a vIOMMU guest maps page by page. Larger ones pin on the libuv threadpool (the
// addon's async jobs), so the event loop never waits for GiBs; either way the mirror replies only after the
// promise settled. If a later segment fails, the earlier ones are unmapped again before the error is
// passed on: a failed map leaves nothing behind. Host errnos pass unchanged (EINVAL alignment/reserved range,
// EEXIST overlap, ENOSPC entry limit, ENOMEM RLIMIT_MEMLOCK, EFAULT bad backing).
//
// Unmaps: the exact range of a region the mirror mapped (one call removes all of its segments; type1v2 accepts
// a range covering whole entries), synchronous up to the same size. "Nothing there" is success with size 0 in
// type1 already. Unmap-all (always on the threadpool) uses FLAG_ALL when extension 9 is present, else two
// 2^63-byte halves (what QEMU's legacy container does).

import { readFileSync } from 'node:fs';
import { closeFdsQuietly, type IommuInfo, vfio } from 'vfio-user-native';
import { DEFAULT_MAX_DMA_MAPS, Errno, ErrnoError, errnoOf, PAGE_SIZE_BIG, U64_MAX } from 'vfio-user-protocol';
import { type DeviceLogger, type HostDevice, silentLogger } from '../device.js';
import type { BackendHandover, HostFacts, HostMapping } from './backend.js';
import { type HostDeviceBackend, type HostFds, hex, IoctlPath, toFactsRanges } from './host-device.js';

const HALF = 1n << 63n;
const DMA_ENTRY_LIMIT = '/sys/module/vfio_iommu_type1/parameters/dma_entry_limit';

export interface VfioType1Options {
  /** The host device's PCI address (finds its group, names it for GROUP_GET_DEVICE_FD). */
  bdf?: string;
  /** Pre-opened fds (ownership passes to the backend: closed by close()). */
  hostFds?: Pick<HostFds, 'container' | 'group' | 'device'>;
  /** Use VFIO_DMA_UNMAP_FLAG_ALL when the kernel offers it (default true; false = the two-halves fallback). */
  unmapAllFlag?: boolean;
  /**
   * Hand-over (docs/handover.md): the container, group and device in `hostFds` come from the previous process,
   * set up and holding live entries; no set-up ioctl is made and these facts are used as they are.
   */
  adopt?: { facts: HostFacts; unmapAll: boolean };
  /**
   * Maps/unmaps of at most this many bytes use the synchronous ioctl (default SYNC_IOCTL_MAX_SIZE, 2 MiB; 0n sends
   * every map and unmap to the threadpool). For tests and benchmarks.
   */
  syncMaxSize?: bigint;
  log?: DeviceLogger;
}

export class VfioType1Backend implements HostDeviceBackend {
  readonly name = 'vfio-type1';
  /** MAP_DMA pins through a process address. */
  readonly mapsBy = 'address';
  readonly pins = true;

  private container = -1;
  private group = -1;
  private device = -1;
  private opened = false;
  private closed = false;
  /** The IOMMU was already set on a pre-opened container (so it may not be empty). */
  private iommuWasSet = false;
  private hasUnmapAll = false;
  private facts: HostFacts | undefined;
  private readonly log: DeviceLogger;
  /** Sync or threadpool, per map/unmap ioctl (its `counts` tell tests which path ran). */
  readonly ioctlPath: IoctlPath;

  constructor(private readonly o: VfioType1Options = {}) {
    this.log = o.log ?? silentLogger;
    this.ioctlPath = new IoctlPath(o.syncMaxSize);
  }

  /** Whether the kernel offers VFIO_UNMAP_ALL (extension 9); known after open(). */
  get unmapAllSupported(): boolean {
    return this.hasUnmapAll;
  }

  /** The container fd (for tests and diagnostics; owned by the backend). */
  get containerFd(): number {
    return this.container;
  }

  /** Opens the container, group and device (idempotent). Throws an errno Error and releases what it opened. */
  open(): void {
    if (this.opened) return;
    if (this.closed) throw new ErrnoError(Errno.EBADF, 'vfio-type1 backend is closed');
    const given = this.o.hostFds ?? {};
    this.container = given.container ?? -1;
    this.group = given.group ?? -1;
    this.device = given.device ?? -1;
    if (this.o.adopt) {
      if (this.container < 0 || this.device < 0)
        throw new ErrnoError(Errno.EINVAL, 'adopting type1 without fds');
      this.hasUnmapAll = this.o.adopt.unmapAll;
      this.facts = this.o.adopt.facts;
      this.opened = true;
      return;
    }
    try {
      this.setUp(given);
    } catch (err) {
      this.release();
      throw err;
    }
    this.opened = true;
  }

  private setUp(given: Pick<HostFds, 'container' | 'group' | 'device'>): void {
    const bdf = this.o.bdf;
    if (this.container < 0) this.container = vfio.openContainer();
    const api = vfio.getApiVersion(this.container);
    if (api !== vfio.API_VERSION)
      throw new ErrnoError(Errno.EINVAL, `VFIO API version ${api}, expected ${vfio.API_VERSION}`);
    if (vfio.checkExtension(this.container, vfio.TYPE1v2_IOMMU) !== 1) {
      throw new ErrnoError(Errno.ENODEV, 'the VFIO container does not offer the TYPE1v2 IOMMU');
    }
    let groupInContainer = false;
    if (this.group < 0 && bdf !== undefined) this.group = vfio.openGroup(vfio.iommuGroupOf(bdf));
    if (this.group >= 0) {
      const status = vfio.groupGetStatus(this.group);
      if ((status & vfio.GROUP_FLAGS_VIABLE) === 0) {
        throw new ErrnoError(
          Errno.EBUSY,
          `IOMMU group of ${bdf ?? 'the device'} is not viable: bind every device of the group to vfio-pci`,
        );
      }
      groupInContainer = (status & vfio.GROUP_FLAGS_CONTAINER_SET) !== 0;
      if (groupInContainer && given.container === undefined) {
        throw new ErrnoError(Errno.EBUSY, 'the IOMMU group is already in a container we were not given');
      }
      if (!groupInContainer) vfio.groupSetContainer(this.group, this.container);
    } else if (given.container === undefined || given.device === undefined) {
      throw new ErrnoError(
        Errno.EINVAL,
        'vfio-type1 needs the host device (host=BDF) or its group/device fds',
      );
    }
    // SET_IOMMU is EINVAL when already set; GET_INFO is EINVAL until it is: ask first for pre-opened set-ups.
    this.iommuWasSet = groupInContainer || this.group < 0 ? iommuIsSet(this.container) : false;
    if (!this.iommuWasSet) vfio.setIommu(this.container, vfio.TYPE1v2_IOMMU);
    // Extensions that depend on the IOMMU driver only answer truthfully after SET_IOMMU.
    this.hasUnmapAll =
      this.o.unmapAllFlag !== false && vfio.checkExtension(this.container, vfio.EXT_UNMAP_ALL) === 1;
    if (this.device < 0) {
      if (bdf === undefined) throw new ErrnoError(Errno.EINVAL, 'vfio-type1: no device fd and no host BDF');
      this.device = vfio.getDeviceFd(this.group, bdf);
    }
  }

  hostDevice(): HostDevice {
    this.open();
    return { fd: this.device, bdf: this.o.bdf, via: this.name };
  }

  /** VFIO_IOMMU_GET_INFO now (tests read DMA_AVAIL from it). */
  hostInfo(): IommuInfo {
    this.open();
    return vfio.getInfo(this.container);
  }

  async attach(): Promise<HostFacts> {
    this.open();
    if (this.facts) return this.facts;
    const info = vfio.getInfo(this.container);
    const pgsizes = info.pgsizes > 0n ? info.pgsizes : PAGE_SIZE_BIG;
    let ranges = toFactsRanges(info.iovaRanges);
    if (ranges.length === 0) ranges = [{ start: 0n, last: U64_MAX }];
    const avail = info.dmaAvail ?? DEFAULT_MAX_DMA_MAPS;
    if (this.iommuWasSet) this.checkEmpty(avail);
    this.facts = {
      pgsizes,
      iovaRanges: ranges,
      maxDmaMaps: Math.max(0, Math.min(avail, DEFAULT_MAX_DMA_MAPS)),
    };
    this.log.info(
      {
        backend: this.name,
        bdf: this.o.bdf,
        pgsizes: hex(pgsizes),
        iovaRanges: ranges.map((r) => `${hex(r.start)}-${hex(r.last)}`),
        dmaAvail: info.dmaAvail,
        unmapAll: this.hasUnmapAll,
      },
      'VFIO type1 container attached',
    );
    return this.facts;
  }

  /**
   * A container whose IOMMU someone else set may already hold entries (policy 10: start empty). The kernel offers
   * no count, so compare DMA_AVAIL with the module's current limit (the snapshot taken at SET_IOMMU may differ if
   * the parameter changed since): warn, do not refuse, as the mapper is the management layer we trust.
   */
  private checkEmpty(avail: number): void {
    let limit: number | undefined;
    try {
      limit = Number(readFileSync(DMA_ENTRY_LIMIT, 'utf8').trim());
    } catch {
      limit = undefined;
    }
    if (limit !== undefined && Number.isFinite(limit) && avail < limit) {
      this.log.warn(
        { dmaAvail: avail, dmaEntryLimit: limit },
        'the pre-opened VFIO container may already hold DMA mappings',
      );
    }
  }

  /**
   * MAP_DMA of one segment. Synchronous when small: returns undefined on success and a rejected promise on failure
   * (never throws), so the mirror completes the DMA_MAP without a promise hop and the success path allocates no
   * promise, no error and no argument object beyond the addon's block (native/lib/vfio.ts).
   */
  map(m: HostMapping): Promise<void> | undefined {
    const { iova, size, vaddr } = m;
    if (vaddr === undefined)
      return Promise.reject(
        new ErrnoError(Errno.EINVAL, `type1 map of ${hex(iova)} without a process address`),
      );
    const flags = (m.read ? vfio.DMA_MAP_FLAG_READ : 0) | (m.write ? vfio.DMA_MAP_FLAG_WRITE : 0);
    if (!this.ioctlPath.sync(size)) return vfio.mapDma(this.container, { iova, size, vaddr, flags });
    try {
      vfio.mapDmaSync(this.container, { iova, size, vaddr, flags });
    } catch (err) {
      return Promise.reject(err);
    }
    return undefined;
  }

  /** UNMAP_DMA of [iova, iova+size): synchronous when small, like map() (undefined, or a rejected promise). */
  unmap(iova: bigint, size: bigint): Promise<void> | undefined {
    if (!this.ioctlPath.sync(size)) {
      return vfio.unmapDma(this.container, { iova, size }).then((n) => this.unmapped(iova, size, n));
    }
    let n: bigint;
    try {
      n = vfio.unmapDmaSync(this.container, { iova, size });
    } catch (err) {
      return Promise.reject(err);
    }
    if (n !== size) this.unmapped(iova, size, n);
    return undefined;
  }

  private unmapped(iova: bigint, size: bigint, n: bigint): void {
    if (n !== size) {
      // 0: nothing was mapped there (type1's normal answer to an empty range); anything else is unexpected.
      this.log.debug(
        { iova: hex(iova), size: hex(size), unmapped: hex(n) },
        'type1 unmap removed a different size',
      );
    }
  }

  async unmapAll(): Promise<void> {
    if (!this.opened) return;
    if (this.hasUnmapAll) {
      await vfio.unmapDma(this.container, { all: true });
      return;
    }
    // Without VFIO_UNMAP_ALL: the whole 64-bit space in two halves (a size of 2^64 does not fit the field).
    await vfio.unmapDma(this.container, { iova: 0n, size: HALF });
    await vfio.unmapDma(this.container, { iova: HALF, size: HALF });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.release();
  }

  // ---- hand-over (docs/handover.md) ----------------------------------------------------------------------------

  handoverExport(): BackendHandover {
    if (!this.opened || !this.facts) throw new Error('type1 backend not attached');
    return {
      fds: { container: this.container, group: this.group, device: this.device },
      meta: { facts: this.facts, unmapAll: this.hasUnmapAll },
    };
  }

  /** Whether the kernel can move entries to another process (VFIO_UPDATE_VADDR, extension 10). */
  get updateVaddrSupported(): boolean {
    return this.opened && vfio.checkExtension(this.container, vfio.EXT_UPDATE_VADDR) === 1;
  }

  /** UNMAP_DMA(VADDR) of everything: the entries stay mapped and pinned, their process address is invalid. */
  async invalidateVaddrs(): Promise<void> {
    const flags = vfio.DMA_UNMAP_FLAG_VADDR;
    if (this.hasUnmapAll) {
      vfio.unmapDmaSync(this.container, { all: true, flags });
      return;
    }
    vfio.unmapDmaSync(this.container, { iova: 0n, size: HALF, flags });
    vfio.unmapDmaSync(this.container, { iova: HALF, size: HALF, flags });
  }

  /** MAP_DMA(VADDR): the entry [iova, iova+size) pins through `vaddr` of this process from now on (its owner). */
  updateVaddr(iova: bigint, size: bigint, vaddr: bigint): void {
    vfio.mapDmaSync(this.container, { iova, size, vaddr, flags: vfio.DMA_MAP_FLAG_VADDR });
  }

  /** Device first (it holds a container user), then the group (leaving the container), then the container. */
  private release(): void {
    closeFdsQuietly([this.device, this.group, this.container]);
    this.device = -1;
    this.group = -1;
    this.container = -1;
    this.opened = false;
  }
}

function iommuIsSet(container: number): boolean {
  try {
    vfio.getInfo(container);
    return true;
  } catch (err) {
    if (errnoOf(err, 0) === Errno.EINVAL) return false;
    throw err;
  }
}
