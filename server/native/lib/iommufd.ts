// iommufd (/dev/iommu, Linux 6.2+): IOAS allocation, IOVA ranges, map/unmap (user VA, or a file with
// IOAS_MAP_FILE on 6.13+), options. Flags differ from type1: READABLE 0x4, WRITEABLE 0x2, FIXED_IOVA 0x1.
// Unmapping a range with nothing mapped is ENOENT here (type1: success, 0 bytes); normalising is the caller's.
import { addon } from './addon.js';
import { O_RDWR } from './memory.js';
import {
  ARG_ADDR,
  ARG_IOVA,
  ARG_SIZE,
  INT_FD,
  INT_FILE_FD,
  INT_FLAGS,
  INT_ID,
  type IovaRange,
  ioctlArgs,
  ioctlInts,
  isSlot,
  isU64,
  lean,
  settle,
} from './vfio.js';

export interface IoasMapArgs {
  ioasId: number;
  iova: bigint;
  length: bigint;
  /** Default FIXED_IOVA | READABLE | WRITEABLE. Without FIXED_IOVA the kernel picks the IOVA (resolved value). */
  flags?: number;
  /** The mmap() ArrayBuffer backing the map (user_va = its address + bufferOffset), busy until the ioctl ends. */
  buffer?: ArrayBuffer;
  bufferOffset?: bigint;
  /** Raw user VA when no buffer is given (the caller keeps it mapped until unmapped). */
  userVa?: bigint;
}

export interface IoasMapFileArgs {
  ioasId: number;
  /** The file (memfd, shmem, hugetlbfs). A private dup is used during the call; the kernel keeps its own ref. */
  fd: number;
  /** File offset. */
  start: bigint;
  length: bigint;
  iova: bigint;
  flags?: number;
}

export interface IoasUnmapArgs {
  ioasId: number;
  iova: bigint;
  length: bigint;
}

export const U64_MAX = (1n << 64n) - 1n;

/** The map flags when none are given: FIXED_IOVA | READABLE | WRITEABLE. */
function mapFlags(flags: number | undefined): number {
  return flags ?? iommufd.IOAS_MAP_FIXED_IOVA | iommufd.IOAS_MAP_READABLE | iommufd.IOAS_MAP_WRITEABLE;
}

/**
 * The IOVA a lean map used: with FIXED_IOVA the kernel keeps the caller's (returned as it is, nothing allocated),
 * otherwise it wrote its choice into the block.
 */
function mappedIova(flags: number, iova: bigint): bigint {
  return flags & iommufd.IOAS_MAP_FIXED_IOVA ? iova : ioctlArgs[ARG_IOVA]!;
}

/** The addon arguments (after the iommufd) shared by ioasMap and ioasMapSync. */
function ioasMapArgs(
  args: IoasMapArgs,
  name: string,
): [number, number, bigint, bigint, ArrayBuffer | null, bigint | null, bigint | null] {
  const flags = mapFlags(args.flags);
  if (args.buffer) {
    return [args.ioasId, flags, args.iova, args.length, args.buffer, args.bufferOffset ?? 0n, null];
  }
  if (args.userVa === undefined) throw new TypeError(`${name} needs a buffer or a userVa`);
  return [args.ioasId, flags, args.iova, args.length, null, null, args.userVa];
}

/** The addon arguments (after the iommufd) shared by ioasMapFile and ioasMapFileSync. */
function ioasMapFileArgs(args: IoasMapFileArgs): [number, number, number, bigint, bigint, bigint] {
  return [args.ioasId, mapFlags(args.flags), args.fd, args.start, args.length, args.iova];
}

export const iommufd = {
  IOAS_MAP_FIXED_IOVA: 0x1,
  IOAS_MAP_WRITEABLE: 0x2,
  IOAS_MAP_READABLE: 0x4,
  OPTION_RLIMIT_MODE: 0,
  OPTION_HUGE_PAGES: 1,
  OPTION_OP_SET: 0,
  OPTION_OP_GET: 1,

  /** open('/dev/iommu', O_RDWR|O_CLOEXEC). ENOENT (syscall 'open') without CONFIG_IOMMUFD. */
  open(path = '/dev/iommu'): number {
    return addon.openPath(path, O_RDWR);
  },
  /** IOMMU_IOAS_ALLOC: the new IOAS id. */
  ioasAlloc(fd: number): number {
    return addon.iommufdIoasAlloc(fd);
  },
  /** IOMMU_DESTROY of any object id (IOAS, HWPT...). */
  destroy(fd: number, id: number): void {
    addon.iommufdDestroy(fd, id);
  },
  /** IOMMU_IOAS_IOVA_RANGES (EMSGSIZE retry). Query again after every attach/detach. `end` is inclusive. */
  iovaRanges(fd: number, ioasId: number): { ranges: IovaRange[]; alignment: bigint } {
    return addon.iommufdIovaRanges(fd, ioasId);
  },
  /** IOMMU_IOAS_ALLOW_IOVAS: restrict the IOAS to these ranges (a later attach that conflicts gets EADDRINUSE). */
  allowIovas(fd: number, ioasId: number, ranges: IovaRange[]): void {
    addon.iommufdAllowIovas(fd, ioasId, ranges);
  },
  /** IOMMU_IOAS_MAP on the threadpool; resolves with the IOVA. */
  ioasMap(fd: number, args: IoasMapArgs): Promise<bigint> {
    return settle(() => addon.iommufdIoasMap(fd, ...ioasMapArgs(args, 'ioasMap')));
  },
  /**
   * IOMMU_IOAS_MAP on the calling thread: the event loop waits while the kernel pins the pages. Only for small
   * lengths (a few hundred pages pin in microseconds, far less than a threadpool round trip); same arguments and
   * errors as ioasMap, thrown instead of rejected. Returns the IOVA.
   */
  ioasMapSync(fd: number, args: IoasMapArgs): bigint {
    const { iova, length, userVa, ioasId } = args;
    const flags = mapFlags(args.flags);
    if (
      args.buffer === undefined &&
      isSlot(fd) &&
      isSlot(ioasId) &&
      isSlot(flags) &&
      isU64(userVa) &&
      isU64(iova) &&
      isU64(length)
    ) {
      // The lean call (no arguments, all operands in the block, see src/job.c).
      ioctlArgs[ARG_IOVA] = iova;
      ioctlArgs[ARG_SIZE] = length;
      ioctlArgs[ARG_ADDR] = userVa;
      ioctlInts[INT_FD] = fd;
      ioctlInts[INT_ID] = ioasId;
      ioctlInts[INT_FLAGS] = flags;
      lean.ioasMap();
      return mappedIova(flags, iova);
    }
    return addon.iommufdIoasMapSync(fd, ...ioasMapArgs(args, 'ioasMapSync'));
  },
  /** IOMMU_IOAS_MAP_FILE (6.13+; ENOTTY before) on the threadpool; resolves with the IOVA. No mmap needed. */
  ioasMapFile(fd: number, args: IoasMapFileArgs): Promise<bigint> {
    return settle(() => addon.iommufdIoasMapFile(fd, ...ioasMapFileArgs(args)));
  },
  /** IOMMU_IOAS_MAP_FILE on the calling thread (small lengths only, see ioasMapSync); returns the IOVA. */
  ioasMapFileSync(fd: number, args: IoasMapFileArgs): bigint {
    const { iova, length, start, ioasId } = args;
    const flags = mapFlags(args.flags);
    if (
      isSlot(fd) &&
      isSlot(ioasId) &&
      isSlot(flags) &&
      isSlot(args.fd) &&
      isU64(start) &&
      isU64(iova) &&
      isU64(length)
    ) {
      ioctlArgs[ARG_IOVA] = iova;
      ioctlArgs[ARG_SIZE] = length;
      ioctlArgs[ARG_ADDR] = start;
      ioctlInts[INT_FD] = fd;
      ioctlInts[INT_ID] = ioasId;
      ioctlInts[INT_FLAGS] = flags;
      ioctlInts[INT_FILE_FD] = args.fd;
      lean.ioasMapFile();
      return mappedIova(flags, iova);
    }
    return addon.iommufdIoasMapFileSync(fd, ...ioasMapFileArgs(args));
  },
  /**
   * IOMMU_IOAS_UNMAP on the threadpool; resolves with the bytes unmapped. ENOENT: nothing there, or the range
   * splits an area. iova 0 + length U64_MAX unmaps everything (succeeds on an empty IOAS).
   */
  ioasUnmap(fd: number, args: IoasUnmapArgs): Promise<bigint> {
    return settle(() => addon.iommufdIoasUnmap(fd, args.ioasId, args.iova, args.length));
  },
  /** IOMMU_IOAS_UNMAP on the calling thread (small ranges only, see ioasMapSync); returns the bytes unmapped. */
  ioasUnmapSync(fd: number, args: IoasUnmapArgs): bigint {
    const { iova, length, ioasId } = args;
    if (isSlot(fd) && isSlot(ioasId) && isU64(iova) && isU64(length)) {
      ioctlArgs[ARG_IOVA] = iova;
      ioctlArgs[ARG_SIZE] = length;
      ioctlInts[INT_FD] = fd;
      ioctlInts[INT_ID] = ioasId;
      // The common answer (all of it) returns the caller's own bigint: nothing allocated.
      return lean.ioasUnmap() ? length : ioctlArgs[ARG_SIZE]!;
    }
    return addon.iommufdIoasUnmapSync(fd, args.ioasId, args.iova, args.length);
  },
  /** IOMMU_OPTION GET (objectId 0 = global, or an IOAS id for HUGE_PAGES). */
  optionGet(fd: number, optionId: number, objectId = 0): bigint {
    return addon.iommufdOption(fd, optionId, iommufd.OPTION_OP_GET, objectId, 0n);
  },
  /** IOMMU_OPTION SET. RLIMIT_MODE=1 (per-process accounting) needs CAP_SYS_RESOURCE. */
  optionSet(fd: number, optionId: number, value: bigint, objectId = 0): void {
    addon.iommufdOption(fd, optionId, iommufd.OPTION_OP_SET, objectId, value);
  },
};
