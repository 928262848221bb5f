// The narrow interface between the generic IOMMU mirror (mirror.ts) and a host IOMMU backend (none, VFIO type1,
// iommufd). A backend only translates; all policy lives in the mirror and the DMA address space:
//
// - The address space has already validated every map (alignment to the advertised page size, no overlap, no
//   wrap, prot READ and/or WRITE, the fd a regular file large enough) before the mirror calls `map`.
// - The mirror calls `map` once per client DMA region, never coalescing adjacent regions, and `unmap` with the
//   exact (iova, size) of a region it mapped earlier: covering/empty/bisecting vfio-user unmaps are normalised
//   before they reach a backend. `unmapAll` replaces per-region unmaps for DMA_UNMAP FLAG_ALL, client
//   disconnect and shutdown.
// - Calls never overlap: the next call starts after the previous promise settled (the address space serialises
//   its mutations), and the client gets its reply only after the promise settles. Run long work (pinning GiBs)
//   off the event loop (async addon work) and resolve when the host mapping is complete.
// - Errors: reject with an object carrying a positive `errno` (an Error with `.errno`, or the addon's errors);
//   the mirror passes it to the client unchanged (docs/iommu-mirroring.md, errno passthrough: EEXIST, EINVAL, ENOSPC, ENOMEM,
//   EFAULT, EPERM...). Unmap of a range the host says is not mapped (iommufd ENOENT) should resolve, not reject.
//
// What a backend gets for a map (`IommuMapRequest`):
// - `fd` + `fileOffset`: the backing file (for IOMMU_IOAS_MAP_FILE). The fd is BORROWED: owned by the address
//   space, valid until the matching `unmap`/`unmapAll` has resolved. Dup it if you need it longer.
// - `segments`: the region's bytes in this process (MAP_SHARED, PROT_READ|PROT_WRITE when the fd is writable),
//   one per mapping window (1 GiB; a region crossing a window boundary has several). For VFIO_IOMMU_MAP_DMA /
//   IOMMU_IOAS_MAP, which pin through a vaddr: map one host entry per segment and remember them; the addresses
//   stay mapped until the matching unmap resolved (type1 re-pins through vaddr when a domain joins).
//   `vaddr` is set when there is exactly one segment. Both are absent for fd-less regions and for regions the
//   server reaches with pread/pwrite (mapping disabled).
// - Fd-less regions (ROM/BIOS sections, anonymous guest RAM) never reach a backend whose `requires` says it needs
//   an fd or an address: the mirror records them as unmirrored and the DMA_MAP succeeds (never fail a
//   DMA_MAP for lack of an fd).

/** The host's IOMMU facts, learned at attach (type1 GET_INFO, iommufd IOVA_RANGES). */
export interface HostFacts {
  /** Bitmap of supported IOMMU page sizes (type1 `iova_pgsizes`); the lowest set bit is the minimum page. */
  pgsizes: bigint;
  /** Usable IOVA ranges, `last` inclusive (reserved windows such as the MSI range 0xfee00000 excluded). */
  iovaRanges: { start: bigint; last: bigint }[];
  /** Live host entries allowed (type1 DMA_AVAIL / dma_entry_limit; iommufd has no limit: report 65535). */
  maxDmaMaps: number;
}

export interface IommuMapRequest {
  iova: bigint;
  size: bigint;
  /** DmaMapFlags bits: READ 0x1, WRITE 0x2 (the vfio-user/type1 values; iommufd spells them 0x4/0x2). */
  prot: number;
  /** Borrowed fd of the backing file (see above). */
  fd?: number;
  /** Offset of `iova` in that file. */
  fileOffset?: bigint;
  /** Process address of the region when it is one contiguous mapping. */
  vaddr?: bigint;
  /** Process addresses of the region, one per mapping window, covering [iova, iova+size) in order. */
  segments?: { iova: bigint; size: bigint; vaddr: bigint }[];
}

export interface IommuBackend {
  /** Short name for logs and stats: 'none', 'vfio-type1', 'iommufd'. */
  readonly name: string;
  /**
   * What a region must offer to be mirrored: `fd` (MAP_FILE) or `vaddr` (MAP_DMA/IOAS_MAP). Regions lacking it
   * are recorded as unmirrored. Omit (or both false) for a backend that accepts anything.
   */
  readonly requires?: { fd?: boolean; vaddr?: boolean };
  /** Whether mapped pages are pinned on the host (counted in the mirror's pagesPinned); default true. */
  readonly pins?: boolean;
  /**
   * Opens and sets up the host side (container/IOAS, device attach), verifies it is empty, and reports the
   * facts the server advertises to clients (pgsizes, max_dma_maps) and the mirror enforces (iovaRanges).
   * Called once, before any map.
   */
  attach(): Promise<HostFacts>;
  /** Creates the host mapping of one region; reject with an errno to refuse the DMA_MAP. */
  map(e: IommuMapRequest): Promise<void>;
  /** Removes the host mapping created for exactly (iova, size). */
  unmap(iova: bigint, size: bigint): Promise<void>;
  /** Removes every host mapping. */
  unmapAll(): Promise<void>;
  /** Releases the host side (after unmapAll). */
  close(): Promise<void>;
}
