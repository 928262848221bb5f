// The DMA address space of one device: which guest memory exists at which IOVA, and access to it.
//
// Mutations (DMA_MAP, DMA_UNMAP, unmap-all, subscription with replay) run one at a time, in call order, behind an
// internal promise chain: the session already feeds them in arrival order, and the lock keeps that order even
// when a mutation awaits a subscriber (the host IOMMU mirror's ioctl) and someone else (disconnect, shutdown,
// a late subscriber) calls in meanwhile.
//
// Policies (docs/dma-address-space.md):
// - DMA_MAP: prot is READ and/or WRITE (neither, or unknown bits: EINVAL); size > 0; no wrap past 2^64; address,
//   size and, for fd maps, the file offset are multiples of the page size (EINVAL, never rounded: rounding
//   would change what a later unmap must match); any overlap, identical re-maps included, is EEXIST; more than
//   `maxMappings` live regions is ENOSPC. fd checks are in files.ts.
// - DMA_UNMAP: a range that covers whole regions removes all of them (one, many or none: the vIOMMU path sends
//   naturally aligned windows that hold several entries or nothing); a range that cuts a region is EINVAL and
//   removes nothing; size 0 is EINVAL (unmap-all is its own call).
// - Subscribers (the IOMMU mirror) hear `regionAdded` before a region becomes visible and may refuse it (the
//   rejection's errno becomes the DMA_MAP's errno, earlier subscribers are rolled back, nothing is half-added);
//   they hear `regionRemoved` after it stopped being visible and before its memory is unmapped, and the unmap
//   completes (the session replies) only after every subscriber returned.
// - In-flight device DMA on a removed region: accesses through the mapping are synchronous, so none can be
//   half-done when an unmap runs; message-based accesses (DMA_READ/WRITE to the client) are failed at once with
//   DmaError 'unmapped' rather than awaited: waiting for the client's reply while it waits for our unmap reply
//   could deadlock (QEMU may hold its big lock while waiting). A late reply is ignored by the messenger.
//
// The access API (read/write/readv/writev, device.ts's DmaAccessor) is access.ts; this class hands it the table.

import * as native from 'vfio-user-native';
import {
  DEFAULT_MAX_DMA_MAPS,
  DmaMapFlags,
  Errno,
  errnoName,
  errnoOf,
  PAGE_SIZE_BIG,
  U64_END,
} from 'vfio-user-protocol';
import { type DeviceLogger, type DmaAccessor, silentLogger } from '../device.js';
import { DmaAccess, type DmaSegment } from './access.js';
import type { DirtyPageLogging } from './dirty.js';
import { DmaError, DmaMapError } from './errors.js';
import {
  type BackingFile,
  type CachedMappingState,
  FileTable,
  type FileUse,
  type IdleCacheOptions,
} from './files.js';
import { IntervalTable } from './interval-table.js';
import { DmaRegion } from './region.js';

/**
 * One DMA_MAP as the address space takes it: the IOVA range, permissions, and the guest-memory fd and offset (or
 * none: DMA_READ/DMA_WRITE messages).
 */
export interface DmaMapParams {
  iova: bigint;
  size: bigint;
  /** DmaMapFlags bits. */
  prot: number;
  /** The fd that came with the DMA_MAP; `map()` takes ownership of it in every outcome. */
  fd?: number;
  /** Offset of `iova` inside the fd's file (DMA_MAP `offset`); ignored without an fd. */
  fileOffset?: bigint;
}

/** A subscriber to the address space's changes (the IOMMU mirror is one). */
export interface DmaListener {
  /**
   * `region` is about to become visible. Reject/throw (an object with a positive `errno`, e.g. DmaMapError) to
   * refuse it: the DMA_MAP then fails with that errno and no other party keeps any trace of the region.
   */
  regionAdded(region: DmaRegion): void | Promise<void>;
  /**
   * `region` is gone from the table (no new access can start) and its memory is still mapped. Resolve once the
   * subscriber holds no reference (host IOMMU unmapped). A rejection is logged and turned into the DMA_UNMAP's
   * errno, but the region is removed regardless (the client's view of the address space wins).
   */
  regionRemoved(region: DmaRegion): void | Promise<void>;
  /** Optional batch form used for unmap-all (FLAG_ALL, disconnect, shutdown) instead of per-region calls. */
  allRemoved?(regions: readonly DmaRegion[]): void | Promise<void>;
}

/** How fd-less regions are reached: the session's server->client DMA_READ/DMA_WRITE messenger. */
export interface DmaMessageTransport {
  read(iova: bigint, length: number): Promise<Uint8Array>;
  write(iova: bigint, data: Uint8Array): Promise<void>;
}

/** Options of a DmaAddressSpace: page size, mapping budget, mmap views, window size, the idle-mapping cache, logger. */
export interface DmaAddressSpaceOptions {
  /** Minimum page size; addresses, sizes and fd offsets must be multiples of it (default 4096). */
  pageSize?: bigint;
  /** Live region limit (default 65535, the protocol's default max_dma_maps). */
  maxMappings?: number;
  /** Map fd regions into the process (default true); false reaches them with pread/pwrite. */
  mapViews?: boolean;
  /** Mapping window size in bytes (default 1 GiB; small values are for tests). */
  windowSize?: number;
  /** Bounds of the cache of mappings whose last region went (files.ts; `{count: 0}` disables it). */
  idleMappings?: IdleCacheOptions;
  log?: DeviceLogger;
}

/** Counters of a DmaAddressSpace: maps, unmaps, map failures by errno, live regions, files and mappings (cached too). */
export interface DmaStats {
  maps: number;
  unmaps: number;
  /** Failed DMA_MAPs by errno name. */
  mapFailures: Record<string, number>;
  live: number;
  /** Files backing live regions. */
  files: number;
  /** Mappings used by live regions. */
  mappings: number;
  /** Idle mappings kept for reuse (files.ts). */
  cachedMappings: number;
}

export type { DmaSegment } from './access.js';

/** pino's numeric value of 'trace'. */
const TRACE_LEVEL = 10;

/** The two directions of regionAdded/regionRemoved for addAllOrRollBack (module-level: no closure per call). */
const listenerAdded = (l: DmaListener, r: DmaRegion) => l.regionAdded(r);
const listenerRemoved = (l: DmaListener, r: DmaRegion) => l.regionRemoved(r);
const regionAddedTo = (r: DmaRegion, l: DmaListener) => l.regionAdded(r);
const regionRemovedFrom = (r: DmaRegion, l: DmaListener) => l.regionRemoved(r);

/** A subscriber (or replayed region) that refused, with its error. */
interface Refusal<T> {
  item: T;
  err: unknown;
}

/**
 * The DMA address space of one device: the IOVA interval table of the client's DMA_MAP regions, the
 * DMA_MAP/DMA_UNMAP rules, the access API device models use (mmap views, pread/pwrite or DMA messages), and
 * add/remove events with replay (docs/dma-address-space.md).
 */
export class DmaAddressSpace implements DmaAccessor {
  private readonly table = new IntervalTable<DmaRegion>();
  private readonly files: FileTable;
  private readonly listeners: DmaListener[] = [];
  private lock: Promise<unknown> = Promise.resolve();
  /** Mutations started and not yet settled. */
  private busy = 0;
  private nextId = 1;
  private transport: DmaMessageTransport | null = null;
  private readonly log: DeviceLogger;
  private readonly access = new DmaAccess({
    find: (iova) => this.table.find(iova),
    transport: () => this.transport,
    dirtyLogging: () => this.dirtyLogging,
  });
  pageSize: bigint;
  maxMappings: number;
  /** Dirty-page logging, when a migration-capable build installs it (see dirty.ts). */
  dirtyLogging: DirtyPageLogging | undefined;
  readonly stats: Omit<DmaStats, 'live' | 'files' | 'mappings' | 'cachedMappings'> = {
    maps: 0,
    unmaps: 0,
    mapFailures: {},
  };

  constructor(opts: DmaAddressSpaceOptions = {}) {
    this.log = opts.log ?? silentLogger;
    this.pageSize = opts.pageSize ?? PAGE_SIZE_BIG;
    this.maxMappings = opts.maxMappings ?? DEFAULT_MAX_DMA_MAPS;
    this.files = new FileTable({
      windowSize: opts.windowSize,
      mapViews: opts.mapViews,
      idle: opts.idleMappings,
      onWarn: (msg, err) => this.log.warn({ err }, msg),
    });
    this.checkPageSize(this.pageSize);
  }

  private checkPageSize(p: bigint): void {
    if (p <= 0n || (p & (p - 1n)) !== 0n) throw new RangeError('pageSize must be a power of two');
  }

  /** Applies host limits (from the IOMMU backend's facts). Only while empty. */
  configure(limits: { pageSize?: bigint; maxMappings?: number; maxFiles?: number }): void {
    if (this.table.size > 0) throw new Error('DmaAddressSpace.configure: regions are live');
    if (limits.pageSize !== undefined) {
      this.checkPageSize(limits.pageSize);
      this.pageSize = limits.pageSize;
    }
    if (limits.maxMappings !== undefined) this.maxMappings = limits.maxMappings;
    if (limits.maxFiles !== undefined) this.files.maxFiles = limits.maxFiles;
  }

  /** Number of live regions. */
  get size(): number {
    return this.table.size;
  }

  snapshot(): DmaStats {
    return {
      ...this.stats,
      live: this.table.size,
      files: this.files.fileCount,
      mappings: this.files.liveMappings,
      cachedMappings: this.files.cachedMappings,
    };
  }

  /** The idle-mapping cache's contents (files.ts): for logs and a hand-over; not needed for correctness. */
  cacheState(): CachedMappingState[] {
    return this.files.cacheState();
  }

  /** The region containing `iova`. */
  find(iova: bigint): DmaRegion | undefined {
    return this.table.find(iova);
  }

  /** Every live region, in IOVA order. */
  regions(): DmaRegion[] {
    return this.table.toArray();
  }

  /** Installs (or, with null, removes) the messenger that reaches fd-less regions. */
  setMessageTransport(t: DmaMessageTransport | null): void {
    this.transport = t;
  }

  /**
   * Runs a mutation: at once when none is in progress (and then synchronously to the end when `fn` is: DMA_MAP
   * and DMA_UNMAP with synchronous subscribers never leave the caller's stack), else queued behind the last one.
   * A synchronous `fn` may throw; a queued or asynchronous one rejects.
   */
  private mutate<T>(fn: () => T | Promise<T>): T | Promise<T> {
    if (this.busy === 0) {
      const r = fn();
      return r instanceof Promise ? this.track(r) : r;
    }
    return this.track(this.lock.then(fn, fn));
  }

  private track<T>(run: Promise<T>): Promise<T> {
    this.busy++;
    const dec = () => {
      this.busy--;
    };
    this.lock = run.then(dec, dec);
    return run;
  }

  private locked<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return this.mutate(fn) as Promise<T>;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  // ---------------------------------------------------------------------------------------------------------
  // Subscribers

  /**
   * Adds a listener. With `replay` (default) it first hears `regionAdded` for every live region, in IOVA order;
   * if it refuses one, the replayed ones are rolled back (`regionRemoved`) and the subscription fails with that
   * errno. Returns the unsubscribe function (which sends no events: the subscriber tears down its own state).
   */
  subscribe(listener: DmaListener, opts: { replay?: boolean } = {}): Promise<() => Promise<void>> {
    return this.locked(async () => {
      if (opts.replay ?? true) {
        const refused = await this.addAllOrRollBack(
          this.table.toArray(),
          listener,
          regionAddedTo,
          regionRemovedFrom,
          'rollback of a replayed region failed',
        );
        if (refused) {
          throw new DmaMapError(
            errnoOf(refused.err),
            `subscriber refused replayed region ${refused.item}: ${(refused.err as Error)?.message}`,
          );
        }
      }
      this.listeners.push(listener);
      return () =>
        this.locked(async () => {
          const i = this.listeners.indexOf(listener);
          if (i >= 0) this.listeners.splice(i, 1);
        });
    });
  }

  // ---------------------------------------------------------------------------------------------------------
  // DMA_MAP / DMA_UNMAP

  /** DMA_MAP. Resolves with the new region; rejects with DmaMapError (the errno for the reply). */
  map(p: DmaMapParams): Promise<DmaRegion> {
    try {
      const r = this.mapNow(p);
      return r instanceof Promise ? r : Promise.resolve(r);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * DMA_MAP for the session's hot path: returns the region synchronously (or throws DmaMapError) when no other
   * mutation is in progress and every subscriber accepted it synchronously; a promise otherwise.
   */
  mapNow(p: DmaMapParams): DmaRegion | Promise<DmaRegion> {
    // mutate() inlined for the common case (nothing in progress): no closure per DMA_MAP.
    if (this.busy === 0) {
      const r = this.mapRun(p);
      return r instanceof Promise ? this.track(r) : r;
    }
    return this.mutate(() => this.mapRun(p));
  }

  private mapRun(p: DmaMapParams): DmaRegion | Promise<DmaRegion> {
    let r: DmaRegion | Promise<DmaRegion>;
    try {
      r = this.doMap(p);
    } catch (err) {
      throw this.mapFailed(err);
    }
    return r instanceof Promise
      ? r.catch((err: unknown) => {
          throw this.mapFailed(err);
        })
      : r;
  }

  private mapFailed(err: unknown): DmaMapError {
    const errno = errnoOf(err);
    const name = errnoName(errno);
    this.stats.mapFailures[name] = (this.stats.mapFailures[name] ?? 0) + 1;
    return err instanceof DmaMapError ? err : new DmaMapError(errno, (err as Error)?.message ?? String(err));
  }

  private validateMap(p: DmaMapParams): void {
    const { iova, size, prot } = p;
    const page = this.pageSize;
    if ((prot & ~(DmaMapFlags.READ | DmaMapFlags.WRITE)) !== 0)
      throw new DmaMapError(Errno.EINVAL, `unknown prot bits 0x${prot.toString(16)}`);
    if ((prot & (DmaMapFlags.READ | DmaMapFlags.WRITE)) === 0)
      throw new DmaMapError(Errno.EINVAL, 'neither READ nor WRITE');
    if (size <= 0n) throw new DmaMapError(Errno.EINVAL, 'size 0');
    const end = iova + size;
    if (iova < 0n || end > U64_END) throw new DmaMapError(Errno.EINVAL, 'address + size wraps past 2^64');
    if (iova % page !== 0n || size % page !== 0n) {
      throw new DmaMapError(Errno.EINVAL, `address/size not aligned to the page size 0x${page.toString(16)}`);
    }
    if (p.fd !== undefined) {
      const off = p.fileOffset ?? 0n;
      if (off < 0n || off + size > U64_END)
        throw new DmaMapError(Errno.EINVAL, 'offset + size wraps past 2^64');
      if (off % page !== 0n)
        throw new DmaMapError(Errno.EINVAL, 'address - offset not aligned to the page size');
    }
    if (this.table.overlaps(iova, end)) {
      throw new DmaMapError(
        Errno.EEXIST,
        `[0x${iova.toString(16)}, +0x${size.toString(16)}) overlaps a mapping`,
      );
    }
    if (this.table.size >= this.maxMappings)
      throw new DmaMapError(Errno.ENOSPC, `max_dma_maps (${this.maxMappings}) reached`);
  }

  private doMap(p: DmaMapParams): DmaRegion | Promise<DmaRegion> {
    const region = this.createRegion(p);
    const refused = this.addAllOrRollBack(
      this.listeners,
      region,
      listenerAdded,
      listenerRemoved,
      'rollback of a refused region failed',
    );
    return refused instanceof Promise
      ? refused.then((x) => this.commitMap(region, x))
      : this.commitMap(region, refused);
  }

  /** Validates a DMA_MAP and makes its region (not yet visible). Takes `p.fd` in every outcome. */
  /**
   * Validates a DMA_MAP and makes its region (not yet visible). Takes `p.fd` in every outcome. `sameFile`
   * (hand-over): another region of a file restored already, no fd to check or keep (65,535 maps of one memfd).
   */
  private createRegion(p: DmaMapParams, sameFile?: BackingFile): DmaRegion {
    let fd = p.fd;
    let region: DmaRegion;
    try {
      this.validateMap(p);
      if (fd !== undefined || sameFile) {
        const off = p.fileOffset ?? 0n;
        const writable = (p.prot & DmaMapFlags.WRITE) !== 0;
        const file = sameFile
          ? this.files.attach(sameFile, off, p.size, writable)
          : this.files.acquire(fd!, off, p.size, writable);
        if (!sameFile) fd = undefined; // consumed
        region = new DmaRegion(this.nextId++, p.iova, p.size, p.prot, 'mmap', off, file, this.files);
        // Maps small regions now (an mmap failure is this DMA_MAP's errno); large ones window by window later.
        if (!this.files.prepare(region as FileUse)) region.access = 'fd';
      } else {
        region = new DmaRegion(this.nextId++, p.iova, p.size, p.prot, 'message', 0n, undefined);
      }
    } finally {
      if (fd !== undefined) native.closeFdsQuietly([fd]);
    }
    return region;
  }

  private commitMap(region: DmaRegion, refused: Refusal<DmaListener> | undefined): DmaRegion {
    if (refused) {
      this.releaseBacking(region, true);
      const { err } = refused;
      throw new DmaMapError(errnoOf(err), `DMA_MAP ${region} refused: ${(err as Error)?.message ?? err}`);
    }
    this.table.insert(region);
    this.stats.maps++;
    // This runs for every DMA_MAP: the line (and the region's text) only when trace logging is on. pino's level
    // can change at run time; `levelVal` is a plain property read (a logger without it always gets the line).
    if (!((this.log as { levelVal?: number }).levelVal! > TRACE_LEVEL))
      this.log.trace({ region: region.toString() }, 'dma map');
    return region;
  }

  /**
   * DMA_UNMAP of [iova, iova+size): removes every region inside, refuses (EINVAL) a range cutting one. Resolves
   * with the removed regions (possibly none) once every reference is gone.
   */
  unmap(iova: bigint, size: bigint): Promise<DmaRegion[]> {
    try {
      const r = this.unmapNow(iova, size);
      return r instanceof Promise ? r : Promise.resolve(r);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * DMA_UNMAP for the session's hot path: synchronous (returns the removed regions or throws DmaMapError) when no
   * other mutation is in progress and every subscriber removed synchronously; a promise otherwise.
   */
  unmapNow(iova: bigint, size: bigint): DmaRegion[] | Promise<DmaRegion[]> {
    // mutate() inlined for the common case (nothing in progress): no closure per DMA_UNMAP.
    if (this.busy === 0) {
      const r = this.unmapRun(iova, size);
      return r instanceof Promise ? this.track(r) : r;
    }
    return this.mutate(() => this.unmapRun(iova, size));
  }

  private unmapRun(iova: bigint, size: bigint): DmaRegion[] | Promise<DmaRegion[]> {
    if (size <= 0n) throw new DmaMapError(Errno.EINVAL, 'unmap of size 0');
    const end = iova + size;
    if (iova < 0n || end > U64_END) throw new DmaMapError(Errno.EINVAL, 'unmap range wraps past 2^64');
    if (iova % this.pageSize !== 0n || size % this.pageSize !== 0n) {
      throw new DmaMapError(Errno.EINVAL, 'unmap range not aligned to the page size');
    }
    const hit = this.table.overlapping(iova, end);
    for (const r of hit) {
      if (r.iova < iova || r.end > end) {
        throw new DmaMapError(
          Errno.EINVAL,
          `unmap [0x${iova.toString(16)}, +0x${size.toString(16)}) cuts ${r}`,
        );
      }
    }
    for (const r of hit) this.detach(r);
    return this.removeEach(hit, 0, undefined);
  }

  /** Tells the subscribers about hit[from..] one by one, releasing each region's memory after; sync when they are. */
  private removeEach(
    hit: DmaRegion[],
    from: number,
    failed: { err: unknown } | undefined,
  ): DmaRegion[] | Promise<DmaRegion[]> {
    for (let i = from; i < hit.length; i++) {
      const r = hit[i]!;
      const res = this.removeOne(r);
      if (res instanceof Promise) {
        return res.then((f) => {
          this.releaseBacking(r);
          return this.removeEach(hit, i + 1, failed ?? f);
        });
      }
      failed ??= res;
      this.releaseBacking(r);
    }
    this.stats.unmaps += hit.length;
    if (failed !== undefined) {
      const e = failed.err;
      throw new DmaMapError(errnoOf(e), `host unmap failed: ${(e as Error)?.message ?? e}`);
    }
    return hit;
  }

  /** One region's regionRemoved to every listener, latest subscriber first; the first failure, if any. */
  private removeOne(r: DmaRegion): { err: unknown } | undefined | Promise<{ err: unknown } | undefined> {
    let failed: { err: unknown } | undefined;
    for (let i = this.listeners.length - 1; i >= 0; i--) {
      let res: void | Promise<void>;
      try {
        res = this.listeners[i]!.regionRemoved(r);
      } catch (err) {
        this.log.error({ err, region: r.toString() }, 'subscriber failed to remove a region');
        failed ??= { err };
        continue;
      }
      if (res instanceof Promise) return this.removeRest(r, i, res, failed);
    }
    return failed;
  }

  private async removeRest(
    r: DmaRegion,
    at: number,
    pending: Promise<void>,
    failed: { err: unknown } | undefined,
  ): Promise<{ err: unknown } | undefined> {
    for (let i = at; i >= 0; i--) {
      try {
        await (i === at ? pending : this.listeners[i]!.regionRemoved(r));
      } catch (err) {
        this.log.error({ err, region: r.toString() }, 'subscriber failed to remove a region');
        failed ??= { err };
      }
    }
    return failed;
  }

  /** Unmap-all (DMA_UNMAP FLAG_ALL, client disconnect, shutdown). Never fails; subscriber errors are logged. */
  unmapAll(): Promise<DmaRegion[]> {
    return this.locked(async () => {
      const all = this.table.clear();
      for (const r of all) this.failInflight(r);
      const err = await this.notifyRemoved(all, true);
      if (err !== undefined) this.log.error({ err }, 'unmap-all: a subscriber failed');
      for (const r of all) this.releaseBacking(r);
      // The client's memory is gone (or about to be): no reason to keep its files mapped.
      this.files.flush();
      this.stats.unmaps += all.length;
      return all;
    });
  }

  private detach(r: DmaRegion): void {
    this.table.remove(r);
    this.failInflight(r);
  }

  private failInflight(r: DmaRegion): void {
    r.removed = true;
    const pending = r.inflight;
    if (!pending || pending.size === 0) return;
    r.inflight = undefined;
    const err = new DmaError('unmapped', r.iova, 'region unmapped during the access');
    for (const fail of pending) fail(err);
  }

  /**
   * Runs `add` on each item in order, all or nothing: when one throws, the items already added are undone with
   * `remove`, newest first (a failing undo is logged as `undoFailed` and the rest still run), and the item that
   * refused is returned with its error. Undefined when every item was added. Serves both directions of
   * regionAdded: one region offered to every listener (DMA_MAP) and every region replayed to one (subscribe).
   */
  private addAllOrRollBack<T, A>(
    items: readonly T[],
    arg: A,
    add: (item: T, arg: A) => void | Promise<void>,
    remove: (item: T, arg: A) => void | Promise<void>,
    undoFailed: string,
  ): Refusal<T> | undefined | Promise<Refusal<T> | undefined> {
    // Synchronous while the items answer synchronously (the hot path); the rest, and any rollback, async.
    // `add`/`remove` take `arg` (rather than closing over it) so that a DMA_MAP allocates no closure here.
    for (let i = 0; i < items.length; i++) {
      let res: void | Promise<void>;
      try {
        res = add(items[i]!, arg);
      } catch (err) {
        return this.rollBack(items, arg, i, err, remove, undoFailed);
      }
      if (res instanceof Promise) return this.addRest(items, arg, i, res, add, remove, undoFailed);
    }
    return undefined;
  }

  private async addRest<T, A>(
    items: readonly T[],
    arg: A,
    at: number,
    pending: Promise<void>,
    add: (item: T, arg: A) => void | Promise<void>,
    remove: (item: T, arg: A) => void | Promise<void>,
    undoFailed: string,
  ): Promise<Refusal<T> | undefined> {
    for (let i = at; i < items.length; i++) {
      try {
        await (i === at ? pending : add(items[i]!, arg));
      } catch (err) {
        return this.rollBack(items, arg, i, err, remove, undoFailed);
      }
    }
    return undefined;
  }

  /** Undoes items[0..at) newest first and reports items[at]'s refusal. */
  private async rollBack<T, A>(
    items: readonly T[],
    arg: A,
    at: number,
    err: unknown,
    remove: (item: T, arg: A) => void | Promise<void>,
    undoFailed: string,
  ): Promise<Refusal<T>> {
    for (let d = at - 1; d >= 0; d--) {
      try {
        await remove(items[d]!, arg);
      } catch (e) {
        this.log.warn({ err: e }, undoFailed);
      }
    }
    return { item: items[at]!, err };
  }

  /** Tells every listener, latest subscriber first; returns the first error (after notifying everyone). */
  private async notifyRemoved(regions: readonly DmaRegion[], batch: boolean): Promise<unknown> {
    let firstErr: unknown;
    // A batch goes out even when empty: a subscriber may have host state to sweep (a failed earlier unmap).
    if (regions.length === 0 && !batch) return undefined;
    for (let i = this.listeners.length - 1; i >= 0; i--) {
      const l = this.listeners[i]!;
      try {
        if (batch && l.allRemoved) {
          await l.allRemoved(regions);
        } else {
          for (const r of regions) {
            try {
              await l.regionRemoved(r);
            } catch (err) {
              this.log.error({ err, region: r.toString() }, 'subscriber failed to remove a region');
              firstErr ??= err;
            }
          }
        }
      } catch (err) {
        this.log.error({ err }, 'subscriber failed to remove all regions');
        firstErr ??= err;
      }
    }
    return firstErr;
  }

  private releaseBacking(r: DmaRegion, discard = false): void {
    if (r.file) this.files.release(r as FileUse, discard);
  }

  // ---------------------------------------------------------------------------------------------------------
  // Access API (DmaAccessor): access.ts does the work.

  read(iova: bigint, length: number): Promise<Uint8Array> {
    return this.access.read(iova, length);
  }

  write(iova: bigint, data: Uint8Array): Promise<void> {
    return this.access.write(iova, data);
  }

  readv(sgl: readonly DmaSegment[]): Promise<Uint8Array> {
    return this.access.readv(sgl);
  }

  writev(sgl: readonly DmaSegment[], data: Uint8Array): Promise<void> {
    return this.access.writev(sgl, data);
  }

  /** Zero-copy views of guest memory (see DmaAccess.views). */
  views(iova: bigint, length: number, access: 'read' | 'write'): Uint8Array[] | undefined {
    return this.access.views(iova, length, access);
  }

  /**
   * Hand-over (server/src/handover/): re-creates a region a previous process of this server had, with the same
   * checks as DMA_MAP but without telling subscribers (their host state moved with that process's fds). Only
   * while no mutation runs. Takes ownership of `p.fd` in every outcome; throws DmaMapError.
   */
  restoreRegion(p: DmaMapParams & { sameFileAs?: DmaRegion }): DmaRegion {
    if (this.busy > 0) {
      if (p.fd !== undefined) native.closeFdsQuietly([p.fd]);
      throw new DmaMapError(Errno.EBUSY, 'restoreRegion while a mutation runs');
    }
    const region = this.createRegion(p, p.sameFileAs?.file);
    this.table.insert(region);
    return region;
  }

  /** Unmaps everything and forgets every subscriber (server shutdown). */
  async close(): Promise<void> {
    await this.unmapAll();
    await this.locked(async () => {
      this.listeners.length = 0;
    });
    this.transport = null;
  }
}
