// VFIO: the type1 container (host-IOMMU mirroring of DMA maps), groups, and the device fd of a passed-through
// device (group or cdev). Typed ioctl wrappers; every failure is an Error with errno (positive), code and syscall
// (the ioctl's name, e.g. 'VFIO_IOMMU_MAP_DMA'; 'open' when a node such as /dev/vfio/vfio is absent: ENOENT).
// Layouts and errno semantics: docs/iommu-mirroring.md. Policy (alignment, interval table, ordering) belongs to the caller.
import { readdirSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import { addon } from './addon.js';
import { type ErrnoError, errnoError } from './errors.js';
import { O_RDWR, pread, pwrite } from './memory.js';

export interface IovaRange {
  start: bigint;
  /** Inclusive. */
  end: bigint;
}

export interface InfoCap {
  id: number;
  version: number;
  /** Offset of the cap from the start of the info struct. */
  offset: number;
}

export interface IommuInfo {
  flags: number;
  /** Bitmap of supported IOMMU page sizes (lowest set bit = minimum alignment). 0n without the PGSIZES flag. */
  pgsizes: bigint;
  /** From the IOVA_RANGE cap ([] when absent). Not ordered by the kernel in any documented way. */
  iovaRanges: IovaRange[];
  /** Free DMA entries (DMA_AVAIL cap; the dma_entry_limit snapshot minus live maps). */
  dmaAvail?: number;
  migration?: { flags: number; pgsizeBitmap: bigint; maxDirtyBitmapSize: bigint };
  caps: InfoCap[];
}

export interface DmaMapArgs {
  iova: bigint;
  size: bigint;
  /** DMA_MAP_FLAG_READ | DMA_MAP_FLAG_WRITE (default both). */
  flags?: number;
  /**
   * The mmap() ArrayBuffer backing the map; vaddr = its address + bufferOffset. Preferred: the mapping is marked
   * busy (munmap refuses with EBUSY) and kept alive until the ioctl completes.
   */
  buffer?: ArrayBuffer;
  bufferOffset?: bigint;
  /** Raw process address when no buffer is given. The caller must keep it mapped (type1 re-pins through it). */
  vaddr?: bigint;
}

export interface DmaUnmapArgs {
  iova?: bigint;
  size?: bigint;
  flags?: number;
  /** VFIO_DMA_UNMAP_FLAG_ALL (iova and size are then 0). */
  all?: boolean;
}

export interface DeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
  capOffset: number;
}

export interface RegionInfo {
  index: number;
  flags: number;
  size: bigint;
  /** Where the region lives in the device fd (pread/pwrite/mmap). Always use this; index<<40 is not uAPI. */
  offset: bigint;
  caps: InfoCap[];
  /** SPARSE_MMAP cap: the mmappable areas (offsets relative to the region). */
  sparseMmap?: { offset: bigint; size: bigint }[];
  /** TYPE cap. */
  type?: { type: number; subtype: number };
  /** MSIX_MAPPABLE cap present. */
  msixMappable: boolean;
}

export interface IrqInfo {
  index: number;
  flags: number;
  count: number;
}

export interface SetIrqsArgs {
  index: number;
  start?: number;
  /** IRQ_SET_ACTION_* (default TRIGGER). */
  action?: number;
  /** DATA_EVENTFD: one fd per vector; -1 de-assigns that vector. count = eventfds.length. */
  eventfds?: number[];
  /** DATA_BOOL: count = bools.length. */
  bools?: boolean[];
  /** DATA_NONE: how many vectors (0 with TRIGGER disables the index). */
  count?: number;
}

/** Runs a promise-returning native call; a synchronous throw (bad arguments) becomes a rejection. */
export function settle<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return fn();
  } catch (err) {
    return Promise.reject(err);
  }
}

/**
 * The addon's argument block for the lean synchronous map/unmap calls (src/job.c): slot IOVA, SIZE, and ADDR (a
 * process address, or a file offset). A wrapper fills it and calls the addon at once, on the JS thread, so calls
 * never interleave. Storing a bigint here converts it without allocating.
 */
const ioctlBlock = addon.ioctlArgs();
export const ioctlArgs = new BigUint64Array(ioctlBlock, 0, 3);
export const ARG_IOVA = 0;
export const ARG_SIZE = 1;
export const ARG_ADDR = 2;
/** The block's int32 slots (src/common.h, VU_INT_*): fd, id (an IOAS), flags, the file's fd. */
export const ioctlInts = new Int32Array(ioctlBlock, 24, 4);
export const INT_FD = 0;
export const INT_ID = 1;
export const INT_FLAGS = 2;
export const INT_FILE_FD = 3;
const U64_MAX = (1n << 64n) - 1n;

/**
 * The lean calls, loaded once: the addon's exports object holds ~100 functions and V8 keeps it in dictionary mode,
 * where every `addon.name` load in optimised code is a LoadIC call (a hash lookup) rather than a field load.
 */
export const lean = {
  vfioMapDma: addon.vfioMapDmaArgs,
  vfioUnmapDma: addon.vfioUnmapDmaArgs,
  ioasMap: addon.iommufdIoasMapArgs,
  ioasMapFile: addon.iommufdIoasMapFileArgs,
  ioasUnmap: addon.iommufdIoasUnmapArgs,
};

/**
 * Whether `v` fits a block slot as it is: a bigint in [0, 2^64) (a slot would wrap anything else silently). Other
 * values take the general addon call, which accepts safe-integer numbers and throws the usual RangeError.
 */
export function isU64(v: unknown): v is bigint {
  return typeof v === 'bigint' && v >= 0n && v <= U64_MAX;
}

/**
 * Whether `v` fits an int32 slot as an fd, id or flags word as it is: an integer in [0, 2^31) (a slot would
 * truncate anything else silently). Other values take the general addon call, which throws the usual errors.
 */
export function isSlot(v: unknown): v is number {
  return typeof v === 'number' && (v | 0) === v && v >= 0;
}

/** The addon arguments (after the container fd) shared by mapDma and mapDmaSync. */
function mapDmaArgs(
  args: DmaMapArgs,
  name: string,
): [number, bigint, bigint, ArrayBuffer | null, bigint | null, bigint | null] {
  const flags = args.flags ?? vfio.DMA_MAP_FLAG_READ | vfio.DMA_MAP_FLAG_WRITE;
  if (args.buffer) return [flags, args.iova, args.size, args.buffer, args.bufferOffset ?? 0n, null];
  if (args.vaddr === undefined) throw new TypeError(`${name} needs a buffer or a vaddr`);
  return [flags, args.iova, args.size, null, null, args.vaddr];
}

/** The addon arguments (after the container fd) shared by unmapDma and unmapDmaSync. */
function unmapDmaArgs(args: DmaUnmapArgs): [number, bigint, bigint] {
  const flags = (args.flags ?? 0) | (args.all ? vfio.DMA_UNMAP_FLAG_ALL : 0);
  return [flags, args.all ? 0n : (args.iova ?? 0n), args.all ? 0n : (args.size ?? 0n)];
}

function sysfsError(err: unknown, syscall: string, what: string): ErrnoError {
  const code = (err as { code?: string }).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') return errnoError('ENOENT', syscall, `${what}: not found`);
  if (code === 'EACCES') return errnoError('EACCES', syscall, `${what}: permission denied`);
  return errnoError('EIO', syscall, `${what}: ${(err as Error).message}`);
}

export const vfio = {
  API_VERSION: 0,
  TYPE1_IOMMU: 1,
  TYPE1v2_IOMMU: 3,
  EXT_DMA_CC: 4,
  EXT_UNMAP_ALL: 9,
  EXT_UPDATE_VADDR: 10,
  GROUP_FLAGS_VIABLE: 1,
  GROUP_FLAGS_CONTAINER_SET: 2,
  IOMMU_INFO_PGSIZES: 1,
  IOMMU_INFO_CAPS: 2,
  CAP_IOVA_RANGE: 1,
  CAP_MIGRATION: 2,
  CAP_DMA_AVAIL: 3,
  DMA_MAP_FLAG_READ: 1,
  DMA_MAP_FLAG_WRITE: 2,
  DMA_MAP_FLAG_VADDR: 4,
  DMA_UNMAP_FLAG_ALL: 2,
  DMA_UNMAP_FLAG_VADDR: 4,
  DEVICE_FLAGS_RESET: 0x1,
  DEVICE_FLAGS_PCI: 0x2,
  DEVICE_FLAGS_CAPS: 0x80,
  REGION_INFO_FLAG_READ: 1,
  REGION_INFO_FLAG_WRITE: 2,
  REGION_INFO_FLAG_MMAP: 4,
  REGION_INFO_FLAG_CAPS: 8,
  REGION_INFO_CAP_SPARSE_MMAP: 1,
  REGION_INFO_CAP_TYPE: 2,
  REGION_INFO_CAP_MSIX_MAPPABLE: 3,
  PCI_BAR0_REGION_INDEX: 0,
  PCI_ROM_REGION_INDEX: 6,
  PCI_CONFIG_REGION_INDEX: 7,
  PCI_VGA_REGION_INDEX: 8,
  PCI_INTX_IRQ_INDEX: 0,
  PCI_MSI_IRQ_INDEX: 1,
  PCI_MSIX_IRQ_INDEX: 2,
  PCI_ERR_IRQ_INDEX: 3,
  PCI_REQ_IRQ_INDEX: 4,
  IRQ_INFO_EVENTFD: 1,
  IRQ_INFO_MASKABLE: 2,
  IRQ_INFO_AUTOMASKED: 4,
  IRQ_INFO_NORESIZE: 8,
  IRQ_SET_DATA_NONE: 1,
  IRQ_SET_DATA_BOOL: 2,
  IRQ_SET_DATA_EVENTFD: 4,
  IRQ_SET_ACTION_MASK: 8,
  IRQ_SET_ACTION_UNMASK: 0x10,
  IRQ_SET_ACTION_TRIGGER: 0x20,
  DEVICE_FEATURE_GET: 1 << 16,
  DEVICE_FEATURE_SET: 1 << 17,
  DEVICE_FEATURE_PROBE: 1 << 18,

  // ---------------------------------------------------------------------------------- container (type1)

  /** open('/dev/vfio/vfio', O_RDWR|O_CLOEXEC). ENOENT (syscall 'open') without VFIO. */
  openContainer(path = '/dev/vfio/vfio'): number {
    return addon.openPath(path, O_RDWR);
  },
  /** Same as openContainer. */
  open(path = '/dev/vfio/vfio'): number {
    return addon.openPath(path, O_RDWR);
  },
  /** VFIO_GET_API_VERSION: must be 0 (API_VERSION). */
  getApiVersion(containerFd: number): number {
    return addon.vfioGetApiVersion(containerFd);
  },
  /** VFIO_CHECK_EXTENSION: 0/1. Some extensions (DMA_CC, UPDATE_VADDR) only report 1 after SET_IOMMU. */
  checkExtension(containerFd: number, ext: number): number {
    return addon.vfioCheckExtension(containerFd, ext);
  },
  /** VFIO_SET_IOMMU (after a group was attached). Use TYPE1v2_IOMMU. */
  setIommu(containerFd: number, type: number = 3): void {
    addon.vfioSetIommu(containerFd, type);
  },
  /** VFIO_IOMMU_GET_INFO with the argsz two-pass protocol and the capability chain parsed. */
  getInfo(containerFd: number): IommuInfo {
    return addon.vfioIommuGetInfo(containerFd);
  },
  /**
   * VFIO_IOMMU_MAP_DMA on the threadpool (pinning GiBs takes time). Keep the backing mapping until the unmap has
   * succeeded: type1 re-pins through vaddr when another group joins the container.
   */
  mapDma(containerFd: number, args: DmaMapArgs): Promise<void> {
    return settle(() => addon.vfioMapDma(containerFd, ...mapDmaArgs(args, 'mapDma')));
  },
  /**
   * VFIO_IOMMU_MAP_DMA on the calling thread: the event loop waits while the kernel pins the pages. Only for small
   * sizes (a few hundred pages pin in microseconds, far less than a threadpool round trip); same arguments and
   * errors as mapDma, thrown instead of rejected.
   */
  mapDmaSync(containerFd: number, args: DmaMapArgs): void {
    const { iova, size, vaddr } = args;
    const flags = args.flags ?? vfio.DMA_MAP_FLAG_READ | vfio.DMA_MAP_FLAG_WRITE;
    if (
      args.buffer === undefined &&
      isSlot(containerFd) &&
      isSlot(flags) &&
      isU64(vaddr) &&
      isU64(iova) &&
      isU64(size)
    ) {
      // The lean call (no arguments, all operands in the block): what a vIOMMU guest's page-by-page maps take.
      ioctlArgs[ARG_IOVA] = iova;
      ioctlArgs[ARG_SIZE] = size;
      ioctlArgs[ARG_ADDR] = vaddr;
      ioctlInts[INT_FD] = containerFd;
      ioctlInts[INT_FLAGS] = flags;
      lean.vfioMapDma();
      return;
    }
    addon.vfioMapDmaSync(containerFd, ...mapDmaArgs(args, 'mapDmaSync'));
  },
  /**
   * VFIO_IOMMU_UNMAP_DMA on the threadpool; resolves with the bytes unmapped (0n when nothing was mapped there;
   * EINVAL when the range bisects a mapping). `{ all: true }` = FLAG_ALL (needs EXT_UNMAP_ALL).
   */
  unmapDma(containerFd: number, args: DmaUnmapArgs): Promise<bigint> {
    return settle(() => addon.vfioUnmapDma(containerFd, ...unmapDmaArgs(args)));
  },
  /** VFIO_IOMMU_UNMAP_DMA on the calling thread (small ranges only, see mapDmaSync); returns the bytes unmapped. */
  unmapDmaSync(containerFd: number, args: DmaUnmapArgs): bigint {
    const { iova, size } = args;
    const flags = args.flags ?? 0;
    if (args.all !== true && isSlot(containerFd) && isSlot(flags) && isU64(iova) && isU64(size)) {
      ioctlArgs[ARG_IOVA] = iova;
      ioctlArgs[ARG_SIZE] = size;
      ioctlInts[INT_FD] = containerFd;
      ioctlInts[INT_FLAGS] = flags;
      // The common answer (all of it) returns the caller's own bigint: nothing allocated.
      return lean.vfioUnmapDma() ? size : ioctlArgs[ARG_SIZE]!;
    }
    return addon.vfioUnmapDmaSync(containerFd, ...unmapDmaArgs(args));
  },

  // ---------------------------------------------------------------------------------- groups

  /** The IOMMU group number of a PCI device (basename of /sys/bus/pci/devices/<bdf>/iommu_group). */
  iommuGroupOf(bdf: string): number {
    try {
      return Number(basename(readlinkSync(`/sys/bus/pci/devices/${bdf}/iommu_group`)));
    } catch (err) {
      throw sysfsError(err, 'readlink', `/sys/bus/pci/devices/${bdf}/iommu_group`);
    }
  },
  /** open('/dev/vfio/<group>') (a number) or a path. */
  openGroup(group: number | string): number {
    return addon.openPath(typeof group === 'number' ? `/dev/vfio/${group}` : group, O_RDWR);
  },
  /** VFIO_GROUP_GET_STATUS flags: GROUP_FLAGS_VIABLE, GROUP_FLAGS_CONTAINER_SET. */
  groupGetStatus(groupFd: number): number {
    return addon.vfioGroupGetStatus(groupFd);
  },
  groupSetContainer(groupFd: number, containerFd: number): void {
    addon.vfioGroupSetContainer(groupFd, containerFd);
  },
  groupUnsetContainer(groupFd: number): void {
    addon.vfioGroupUnsetContainer(groupFd);
  },
  /** VFIO_GROUP_GET_DEVICE_FD("0000:00:03.0"): the device fd (close-on-exec). */
  getDeviceFd(groupFd: number, bdf: string): number {
    return addon.vfioGroupGetDeviceFd(groupFd, bdf);
  },

  // ---------------------------------------------------------------------------------- cdev + iommufd (6.6+)

  /** /dev/vfio/devices/vfioN for a PCI device bound to vfio-pci (from /sys/bus/pci/devices/<bdf>/vfio-dev). */
  cdevPathOf(bdf: string): string {
    const dir = `/sys/bus/pci/devices/${bdf}/vfio-dev`;
    let names: string[];
    try {
      names = readdirSync(dir).filter((n) => /^vfio\d+$/.test(n));
    } catch (err) {
      throw sysfsError(err, 'readdir', dir);
    }
    if (names.length === 0) throw errnoError('ENOENT', 'readdir', `${dir}: no vfioN entry`);
    return `/dev/vfio/devices/${names[0]}`;
  },
  /** Opens a VFIO cdev (a path, or a BDF resolved with cdevPathOf). Device ioctls fail (EINVAL) until bound. */
  openDevice(pathOrBdf: string): number {
    const path = pathOrBdf.startsWith('/') ? pathOrBdf : vfio.cdevPathOf(pathOrBdf);
    return addon.openPath(path, O_RDWR);
  },
  /** VFIO_DEVICE_BIND_IOMMUFD: returns the iommufd device id. */
  bindIommufd(deviceFd: number, iommufd: number): number {
    return addon.vfioDeviceBindIommufd(deviceFd, iommufd);
  },
  /** VFIO_DEVICE_ATTACH_IOMMUFD_PT to an IOAS or HWPT id: returns the HWPT id the kernel attached. */
  attachPt(deviceFd: number, ptId: number): number {
    return addon.vfioDeviceAttachPt(deviceFd, ptId);
  },
  detachPt(deviceFd: number): void {
    addon.vfioDeviceDetachPt(deviceFd);
  },

  // ---------------------------------------------------------------------------------- device fd

  deviceGetInfo(deviceFd: number): DeviceInfo {
    return addon.vfioDeviceGetInfo(deviceFd);
  },
  /** VFIO_DEVICE_GET_REGION_INFO (two-pass argsz) with SPARSE_MMAP / TYPE / MSIX_MAPPABLE caps parsed. */
  regionInfo(deviceFd: number, index: number): RegionInfo {
    return addon.vfioDeviceGetRegionInfo(deviceFd, index);
  },
  irqInfo(deviceFd: number, index: number): IrqInfo {
    return addon.vfioDeviceGetIrqInfo(deviceFd, index);
  },
  /** VFIO_DEVICE_SET_IRQS. In the kernel the eventfds travel inside the struct (-1 = de-assign that vector). */
  setIrqs(deviceFd: number, args: SetIrqsArgs): void {
    const action = args.action ?? vfio.IRQ_SET_ACTION_TRIGGER;
    const start = args.start ?? 0;
    if (args.eventfds) {
      addon.vfioDeviceSetIrqs(
        deviceFd,
        vfio.IRQ_SET_DATA_EVENTFD | action,
        args.index,
        start,
        args.eventfds.length,
        args.eventfds,
      );
    } else if (args.bools) {
      addon.vfioDeviceSetIrqs(
        deviceFd,
        vfio.IRQ_SET_DATA_BOOL | action,
        args.index,
        start,
        args.bools.length,
        args.bools,
      );
    } else {
      addon.vfioDeviceSetIrqs(
        deviceFd,
        vfio.IRQ_SET_DATA_NONE | action,
        args.index,
        start,
        args.count ?? 0,
        undefined,
      );
    }
  },
  /** VFIO_DEVICE_RESET (only when deviceGetInfo().flags has DEVICE_FLAGS_RESET). */
  reset(deviceFd: number): void {
    addon.vfioDeviceReset(deviceFd);
  },
  /** VFIO_DEVICE_FEATURE: flags = feature index | GET/SET/PROBE; returns the data area after the call. */
  deviceFeature(deviceFd: number, flags: number, data?: Uint8Array): Buffer {
    return addon.vfioDeviceFeature(deviceFd, flags, data);
  },
  /** pread at region.offset + offset (the region's place in the device fd). Returns bytes read. */
  regionRead(deviceFd: number, region: Pick<RegionInfo, 'offset'>, offset: bigint, buf: Uint8Array): number {
    return pread(deviceFd, buf, region.offset + offset);
  },
  /** pwrite at region.offset + offset. Returns bytes written. */
  regionWrite(deviceFd: number, region: Pick<RegionInfo, 'offset'>, offset: bigint, buf: Uint8Array): number {
    return pwrite(deviceFd, buf, region.offset + offset);
  },
};
