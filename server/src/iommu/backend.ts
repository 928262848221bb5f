// The narrow interface between the generic IOMMU mirror (mirror.ts) and a host IOMMU backend (none, VFIO type1,
// iommufd). A backend only translates: each call becomes one host API call. Every policy lives once in the mirror
// (docs/iommu-mirroring.md): alignment and reserved ranges, regions that cannot be mirrored, one host entry per
// mapping window with rollback, READ/WRITE as booleans, unmap "not found" (iommufd ENOENT) as success, counters.
//
// - `map` creates exactly one host entry. By file (`fd` + `fileOffset`, IOMMU_IOAS_MAP_FILE) when `mapsBy` is
//   'file'; by this process's address (`vaddr`, VFIO_IOMMU_MAP_DMA / IOMMU_IOAS_MAP) when it is 'address'; with
//   neither when it is 'nothing' (no host IOMMU). The fd is BORROWED: owned by the address space, valid until the
//   matching unmap resolved (dup it to keep it longer). The address stays mapped until the matching unmap
//   resolved (type1 re-pins through the vaddr when a domain joins).
// - `unmap` removes the whole entries inside [iova, iova+size): the mirror asks for exactly what it mapped, or for
//   a rollback range covering whole entries. `unmapAll` removes everything (FLAG_ALL, disconnect, shutdown).
// - Errors: reject with an object carrying a positive `errno` (ErrnoError, or the addon's errors), the host's
//   answer unchanged (iommufd ENOENT for an empty range included): the mirror decides what it means.
// - Calls never overlap: the next call starts after the previous promise settled (the address space serialises
//   its mutations), and the client gets its reply only after the promise settles. Run long work (pinning GiBs)
//   off the event loop (async addon work) and resolve when the host mapping is complete.

/** The host's IOMMU facts, learned at attach (type1 GET_INFO, iommufd IOVA_RANGES). */
export interface HostFacts {
  /** Bitmap of supported IOMMU page sizes (type1 `iova_pgsizes`); the lowest set bit is the minimum page. */
  pgsizes: bigint;
  /** Usable IOVA ranges, `last` inclusive (reserved windows such as the MSI range 0xfee00000 excluded). */
  iovaRanges: { start: bigint; last: bigint }[];
  /** Live host entries allowed (type1 DMA_AVAIL / dma_entry_limit; iommufd has no limit: report 65535). */
  maxDmaMaps: number;
}

/** One host IOMMU entry, as the mirror asks a backend to create it (see the notes above). */
export interface HostMapping {
  iova: bigint;
  size: bigint;
  read: boolean;
  write: boolean;
  /** By file: the borrowed fd of the backing file and the offset of `iova` in it. */
  fd?: number;
  fileOffset?: bigint;
  /** By address: this process's mapping of [iova, iova+size). */
  vaddr?: bigint;
}

/** How a backend's `map` reaches memory. */
export type MapsBy = 'file' | 'address' | 'nothing';

/**
 * A host IOMMU the mirror keeps in step with the DMA address space (none, VFIO type1, iommufd): map and unmap
 * ranges, report its facts (usable IOVA ranges, page sizes).
 */
export interface IommuBackend {
  /** Short name for logs and stats: 'none', 'vfio-type1', 'iommufd'. */
  readonly name: string;
  /**
   * How `map` reaches memory: by 'file' (fd + offset), by 'address' (vaddr), or 'nothing' (no host IOMMU). Read
   * by the mirror per map, so it may change after attach (iommufd falls back from MAP_FILE to addresses). A
   * region lacking what the backend needs is recorded as unmirrored.
   */
  readonly mapsBy: MapsBy;
  /** Whether mapped pages are pinned on the host (counted in the mirror's pagesPinned); default true. */
  readonly pins?: boolean;
  /**
   * Opens and sets up the host side (container/IOAS, device attach), verifies it is empty, and reports the
   * facts the server advertises to clients (pgsizes, max_dma_maps) and the mirror enforces (iovaRanges).
   * Called once, before any map.
   */
  attach(): Promise<HostFacts>;
  /**
   * Creates one host entry; reject (or throw) with an errno to refuse the DMA_MAP. A backend that finished
   * synchronously may return undefined: the DMA_MAP then completes without a promise hop (address-space.ts).
   */
  map(m: HostMapping): void | Promise<void>;
  /** Removes the host entries inside [iova, iova+size) (whole entries only); synchronously like map() if it can. */
  unmap(iova: bigint, size: bigint): void | Promise<void>;
  /** Removes every host mapping. */
  unmapAll(): Promise<void>;
  /** Releases the host side (after unmapAll). */
  close(): Promise<void>;
  /**
   * Hand-over (docs/handover.md): the backend's fds (borrowed) and the plain data that rebuilds it around them in
   * the next process (select.ts adoptIommuBackend) with no set-up ioctl: the host entries stay as they are.
   * Absent: the backend cannot be handed over.
   */
  handoverExport?(): BackendHandover;
  /**
   * Backends whose entries pin through a process address (type1): before a hand-over, mark every entry's address
   * invalid (the pages stay pinned and mapped, the device keeps DMAing); `updateVaddr` then gives an entry its
   * address in the process that owns it from now on (the successor, or this one again after a failed hand-over).
   */
  invalidateVaddrs?(): Promise<void>;
  updateVaddr?(iova: bigint, size: bigint, vaddr: bigint): void;
}

/** What a hand-over carries of a host backend. */
export interface BackendHandover {
  /** Role -> fd, borrowed (the kernel copies them into the hand-over message). */
  fds: Record<string, number>;
  /** Plain data (bigints allowed): the host facts and the backend's ids and flags. */
  meta: Record<string, unknown>;
}
