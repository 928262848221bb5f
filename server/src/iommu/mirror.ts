// The generic host-IOMMU mirror: keeps a host IOMMU (through an IommuBackend) in step with the DMA address space,
// so a passed-through device can DMA into the same guest memory the device models see.
//
// It subscribes to the address space (with replay of live regions), keeps host-side state per region, and owns
// the policies every backend shares (docs/iommu-mirroring.md):
// - refuse maps the host cannot honour before asking it: outside the host's usable IOVA ranges (reserved MSI
//   window) or misaligned to the host's minimum page -> EINVAL;
// - never fail a map for lack of an fd/address: fd-less regions are recorded as unmirrored;
// - translate: READ/WRITE bits to booleans, a region to one host entry by file or one per mapping window by
//   address, rolling back the entries already made when a later one fails;
// - one host entry per client region, never coalesced, unmapped with the exact range it was mapped with: the
//   address space has already normalised covering/empty unmaps into per-region removals;
// - unmap "not found" from the host (iommufd ENOENT) is success, for one region and for unmap-all; other unmap
//   failures are counted, reported to the client, and the range is retried by the next unmap-all;
// - unmap-all is one backend call (FLAG_ALL, disconnect, shutdown);
// - counters: maps, unmaps, pages pinned, unmirrored regions, failures by errno name.
//
// Ordering and completion come from the address space: it serialises mutations and replies only after the
// mirror's promise settled.

import { DmaMapFlags, Errno, errnoName, errnoOf, PAGE_SIZE_BIG, U64_MAX } from 'vfio-user-protocol';
import { type DeviceLogger, silentLogger } from '../device.js';
import type { DmaAddressSpace, DmaListener } from '../dma/address-space.js';
import { DmaMapError } from '../dma/errors.js';
import type { DmaRegion, HostSegment } from '../dma/region.js';
import type { HostFacts, IommuBackend } from './backend.js';
import { NoneBackend } from './none.js';

/** Counters of an IommuMirror: regions and pages mirrored, unmirrored regions, failures. */
export interface MirrorStats {
  backend: string;
  /** Host maps that succeeded. */
  maps: number;
  /** Host unmaps that succeeded (an unmap-all counts every entry it removed). */
  unmaps: number;
  /** Regions accepted without a host mapping (no fd / no address for this backend). */
  unmirrored: number;
  /** Host pages (of the minimum page size) currently mapped through a pinning backend. */
  pagesPinned: number;
  /** Live host entries. */
  live: number;
  /** Failures (maps refused, unmaps failed) by errno name. */
  failures: Record<string, number>;
}

interface HostEntry {
  iova: bigint;
  size: bigint;
  mirrored: boolean;
  pages: number;
}

/**
 * Keeps a host IOMMU (an IommuBackend) in step with the DMA address space, so a passed-through device DMAs into the
 * guest memory the device models see (docs/iommu-mirroring.md).
 */
export class IommuMirror implements DmaListener {
  private readonly entries = new Map<number, HostEntry>();
  /**
   * The `none` backend subscribed with replay (start()): it maps nothing, pins nothing and its IOVA range is the
   * whole space, so its host entry of a region would be the region itself and the live entries are exactly the
   * space's regions. No per-region record is kept then (a Map insert and delete, and an object, per DMA_MAP +
   * DMA_UNMAP pair under a vIOMMU: issue #14); the counters move as they would with one. An adopted mirror
   * (hand-over) keeps records, since its entries come from another process.
   */
  private lean = false;
  /** The space subscribed to (for the lean mode's entries). */
  private space: DmaAddressSpace | undefined;
  /** The host's usable IOVA ranges are the whole 64-bit space (no range check per map). */
  private wholeSpace = false;
  /** Ranges whose host unmap failed; retried by the next unmap-all. */
  private stale = 0;
  private facts: HostFacts | undefined;
  private minPage = PAGE_SIZE_BIG;
  private unsubscribe: (() => Promise<void>) | undefined;
  readonly stats: MirrorStats;

  constructor(
    readonly backend: IommuBackend,
    private readonly log: DeviceLogger = silentLogger,
  ) {
    this.stats = {
      backend: backend.name,
      maps: 0,
      unmaps: 0,
      unmirrored: 0,
      pagesPinned: 0,
      live: 0,
      failures: {},
    };
  }

  /** Attaches the backend (once) and returns its facts. */
  async attach(): Promise<HostFacts> {
    if (this.facts) return this.facts;
    const facts = await this.backend.attach();
    if (facts.pgsizes <= 0n) throw new Error(`IOMMU backend ${this.backend.name} reported no page size`);
    this.facts = facts;
    this.minPage = facts.pgsizes & -facts.pgsizes;
    this.wholeSpace =
      facts.iovaRanges.length === 1 &&
      facts.iovaRanges[0]!.start === 0n &&
      facts.iovaRanges[0]!.last === U64_MAX;
    return facts;
  }

  /** Subscribes to `space` (replaying its live regions). Attach first. */
  async start(space: DmaAddressSpace): Promise<void> {
    await this.attach();
    // Lean only when every region of the space is heard of: subscribed with replay, before any other state.
    this.lean = this.backend instanceof NoneBackend && this.entries.size === 0 && this.adopted === 0;
    this.space = space;
    this.unsubscribe = await space.subscribe(this);
  }

  private fail(errno: number): void {
    const name = errnoName(errno);
    this.stats.failures[name] = (this.stats.failures[name] ?? 0) + 1;
  }

  private pages(size: bigint): number {
    return this.backend.pins === false ? 0 : Number(size / this.minPage);
  }

  // regionAdded/regionRemoved answer synchronously when the backend does (the `none` backend): the address space
  // then completes DMA_MAP/DMA_UNMAP without a promise hop.
  regionAdded(r: DmaRegion): void | Promise<void> {
    if (this.lean) {
      // What the general path below does for the `none` backend (no fd/address needed, whole IOVA space, a
      // synchronous map of nothing, 0 pages pinned), without the record.
      this.checkAligned(r);
      this.stats.maps++;
      this.stats.live++;
      return;
    }
    const by = this.backend.mapsBy;
    if ((by === 'file' && r.fd === undefined) || (by === 'address' && r.hostSegments().length === 0)) {
      this.entries.set(r.id, { iova: r.iova, size: r.size, mirrored: false, pages: 0 });
      this.stats.unmirrored++;
      this.log.debug({ region: r.toString() }, 'region not mirrored (no fd/address)');
      return;
    }
    this.checkAligned(r);
    if (this.facts && !this.wholeSpace && !this.inIovaRanges(r)) {
      this.fail(Errno.EINVAL);
      throw new DmaMapError(Errno.EINVAL, `${r} is outside the host's usable IOVA ranges`);
    }
    let res: void | Promise<void>;
    try {
      res = this.mapRegion(r);
    } catch (err) {
      throw this.mapFailed(r, err);
    }
    if (res instanceof Promise) {
      return res.then(
        () => this.mapped(r),
        (err: unknown) => {
          throw this.mapFailed(r, err);
        },
      );
    }
    this.mapped(r);
  }

  private checkAligned(r: DmaRegion): void {
    if (r.iova % this.minPage !== 0n || r.size % this.minPage !== 0n || r.fileOffset % this.minPage !== 0n) {
      this.fail(Errno.EINVAL);
      throw new DmaMapError(Errno.EINVAL, `${r} not aligned to the host page 0x${this.minPage.toString(16)}`);
    }
  }

  private inIovaRanges(r: DmaRegion): boolean {
    const last = r.end - 1n;
    for (const x of this.facts!.iovaRanges) if (r.iova >= x.start && last <= x.last) return true;
    return false;
  }

  private mapFailed(r: DmaRegion, err: unknown): DmaMapError {
    const errno = errnoOf(err);
    this.fail(errno);
    return new DmaMapError(errno, `host map of ${r} failed: ${(err as Error)?.message ?? err}`);
  }

  private mapped(r: DmaRegion): void {
    const pages = this.pages(r.size);
    this.entries.set(r.id, { iova: r.iova, size: r.size, mirrored: true, pages });
    this.stats.maps++;
    this.stats.live++;
    this.stats.pagesPinned += pages;
  }

  /**
   * The host entries of one region: one by file, or one per mapping window by address (a region crossing a 1 GiB
   * window boundary has several; if one fails, those already made are unmapped again and the map fails whole).
   */
  private mapRegion(r: DmaRegion): void | Promise<void> {
    const read = (r.prot & DmaMapFlags.READ) !== 0;
    const write = (r.prot & DmaMapFlags.WRITE) !== 0;
    // Object literals, not `{ ...base, fd, fileOffset }`: objects made by spreading one whose fields hold bigints
    // do not share one hidden class (V8 in Node 20), so every field load in the backend went megamorphic: 16x the
    // cost of a literal's in a loop reading three fields, and 0.88x -> 0.61x raw C for the iommufd backend in the
    // guest bench (docs/iommu-mirroring.md, "Cost per map").
    if (this.backend.mapsBy === 'file' && r.fd !== undefined) {
      let res: void | Promise<void>;
      try {
        res = this.backend.map({
          iova: r.iova,
          size: r.size,
          read,
          write,
          fd: r.fd,
          fileOffset: r.fileOffset,
        });
      } catch (err) {
        return this.mapFileFailed(err, r, read, write);
      }
      return res instanceof Promise ? res.catch((err) => this.mapFileFailed(err, r, read, write)) : undefined;
    }
    if (this.backend.mapsBy === 'nothing')
      return this.backend.map({ iova: r.iova, size: r.size, read, write });
    return this.mapByAddress(r, read, write);
  }

  /** A map by file failed: a backend that found it cannot map files after all (iommufd) maps by address. */
  private mapFileFailed(err: unknown, r: DmaRegion, read: boolean, write: boolean): void | Promise<void> {
    if (this.backend.mapsBy === 'file') throw err;
    return this.mapByAddress(r, read, write);
  }

  private mapByAddress(r: DmaRegion, read: boolean, write: boolean): void | Promise<void> {
    const segments = r.hostSegments();
    // One segment (every region inside one mapping window, e.g. a vIOMMU guest's 4 KiB pages): the backend's own
    // answer, synchronous when it is, with nothing to roll back.
    const only = segments.length === 1 ? segments[0]! : undefined;
    if (only) return this.backend.map({ iova: only.iova, size: only.size, read, write, vaddr: only.vaddr });
    return this.mapSegments(r, segments, read, write);
  }

  private async mapSegments(
    r: DmaRegion,
    segments: readonly HostSegment[],
    read: boolean,
    write: boolean,
  ): Promise<void> {
    if (segments.length === 0) throw new DmaMapError(Errno.EINVAL, `${r} has no process address to map`);
    let done = 0;
    try {
      for (const s of segments) {
        await this.backend.map({ iova: s.iova, size: s.size, read, write, vaddr: s.vaddr });
        done++;
      }
    } catch (err) {
      if (done > 0) {
        // The entries made so far are whole host entries at the start of the region: one covering unmap.
        const size = segments[done]!.iova - r.iova;
        try {
          await this.backend.unmap(r.iova, size);
        } catch (u) {
          this.log.error({ err: u, iova: r.iova, size }, 'rollback of a partial host map failed');
        }
      }
      throw err;
    }
  }

  regionRemoved(r: DmaRegion): void | Promise<void> {
    if (this.lean) {
      this.stats.live--;
      this.stats.unmaps++;
      return;
    }
    const e = this.entries.get(r.id);
    if (!e) return;
    this.entries.delete(r.id);
    if (!e.mirrored) {
      this.stats.unmirrored--;
      return;
    }
    this.stats.live--;
    this.stats.pagesPinned -= e.pages;
    let res: void | Promise<void>;
    try {
      res = this.backend.unmap(e.iova, e.size);
    } catch (err) {
      return this.unmapFailed(r, err);
    }
    if (res instanceof Promise) {
      return res.then(
        () => {
          this.stats.unmaps++;
        },
        (err: unknown) => this.unmapFailed(r, err),
      );
    }
    this.stats.unmaps++;
  }

  private unmapFailed(r: DmaRegion, err: unknown): void {
    const errno = errnoOf(err);
    if (errno === Errno.ENOENT) {
      this.stats.unmaps++;
      return; // the host had nothing there: the state we wanted
    }
    this.fail(errno);
    this.stale++;
    throw new DmaMapError(errno, `host unmap of ${r} failed: ${(err as Error)?.message ?? err}`);
  }

  async allRemoved(regions: readonly DmaRegion[]): Promise<void> {
    let mirrored = 0;
    if (this.lean) {
      mirrored = regions.length; // every region is a live entry of 0 pages (see `lean`)
    } else {
      for (const r of regions) {
        const e = this.entries.get(r.id);
        if (!e) continue;
        this.entries.delete(r.id);
        if (e.mirrored) {
          mirrored++;
          this.stats.pagesPinned -= e.pages;
        } else {
          this.stats.unmirrored--;
        }
      }
    }
    this.stats.live -= mirrored;
    if (mirrored === 0 && this.stale === 0) return;
    try {
      await this.backend.unmapAll();
    } catch (err) {
      const errno = errnoOf(err);
      if (errno !== Errno.ENOENT) {
        this.fail(errno);
        throw err;
      }
    }
    this.stats.unmaps += mirrored;
    this.stale = 0;
  }

  // ---- hand-over hooks (server/src/handover/) ------------------------------------------------------------------

  /** The live host entries, by IOVA (the host mappings themselves stay: they move with the backend's fds). */
  exportEntries(): { iova: bigint; size: bigint; mirrored: boolean }[] {
    if (this.lean) {
      return this.stats.live > 0
        ? (this.space?.regions() ?? []).map((r) => ({ iova: r.iova, size: r.size, mirrored: true }))
        : [];
    }
    return [...this.entries.values()].map((e) => ({ iova: e.iova, size: e.size, mirrored: e.mirrored }));
  }

  /**
   * Takes over the entries of a previous process for `space`'s restored regions (matched by IOVA and size)
   * without calling the backend, and subscribes without replay: no host unmap/remap (`stats.adopted` counts the
   * entries taken over, `maps` stays as it was). Attach first.
   */
  async adopt(
    space: DmaAddressSpace,
    entries: { iova: bigint; size: bigint; mirrored: boolean }[],
  ): Promise<void> {
    for (const e of entries) {
      const r = space.find(e.iova);
      if (!r || r.iova !== e.iova || r.size !== e.size)
        throw new Error(`adopted host entry 0x${e.iova.toString(16)} has no region`);
      const pages = e.mirrored ? this.pages(e.size) : 0;
      this.entries.set(r.id, { iova: e.iova, size: e.size, mirrored: e.mirrored, pages });
      if (e.mirrored) {
        this.stats.live++;
        this.stats.pagesPinned += pages;
      } else this.stats.unmirrored++;
    }
    this.adopted += entries.length;
    this.unsubscribe = await space.subscribe(this, { replay: false });
  }

  /** Host entries taken over from a previous process (adopt()). */
  adopted = 0;

  /** Whether some live host entry pins through a process address that a hand-over has to move (type1). */
  private get pinsByAddress(): boolean {
    return this.backend.updateVaddr !== undefined && this.stats.live > 0;
  }

  /**
   * Hand-over, the running process (after the device stopped): entries pinning through our addresses stop
   * doing so (type1 UNMAP_DMA(VADDR)); they stay mapped and pinned, and device DMA goes on. claimAddresses()
   * undoes it if the hand-over fails.
   */
  async releaseAddresses(): Promise<void> {
    if (this.pinsByAddress) await this.backend.invalidateVaddrs!();
  }

  /**
   * Gives every live entry that pins through an address the address of `space`'s region in this process (type1
   * MAP_DMA(VADDR), one per host entry = per mapping window): the successor after GO, or the running process
   * after a failed hand-over. Neither unmaps nor maps anything. Returns the number of entries updated.
   */
  claimAddresses(space: DmaAddressSpace): number {
    if (!this.pinsByAddress) return 0;
    let n = 0;
    for (const r of space.regions()) {
      if (!this.entries.get(r.id)?.mirrored) continue;
      for (const seg of r.hostSegments()) {
        this.backend.updateVaddr!(seg.iova, seg.size, seg.vaddr);
        n++;
      }
    }
    return n;
  }

  /** Unsubscribes, removes every host mapping and closes the backend. */
  async close(): Promise<void> {
    const unsub = this.unsubscribe;
    this.unsubscribe = undefined;
    if (unsub) await unsub();
    if (this.entries.size > 0 || this.stale > 0 || (this.lean && this.stats.live > 0)) {
      try {
        await this.backend.unmapAll();
      } catch (err) {
        this.log.error({ err }, 'host unmap-all at close failed');
      }
      this.entries.clear();
      this.lean = false;
      this.stats.live = 0;
      this.stats.pagesPinned = 0;
      this.stats.unmirrored = 0;
    }
    await this.backend.close();
  }
}
