// What the VFIO backends (type1, iommufd) share beyond the IommuBackend interface: the passed-through host
// device they attached to their container/IOAS (the server hands it to the vfio-pci model), and small helpers.
//
// Why the backend owns the device fd: a VFIO device can only be reached through the container (type1:
// GROUP_GET_DEVICE_FD needs the group in a container with an IOMMU set) or the iommufd it is bound to, and the
// device must DMA through exactly the mappings the mirror installs. So the backend opens the host side once, and
// the device model borrows the fd (backend.ts has no notion of a device; this interface is the extension).

import type { HostDevice } from '../device.js';
import type { IommuBackend } from './backend.js';

/** An IOMMU backend that also holds a passed-through host device (VFIO type1, iommufd). */
export interface HostDeviceBackend extends IommuBackend {
  /** Opens the host side if not yet done (synchronous ioctls) and returns the device. Throws an errno Error. */
  hostDevice(): HostDevice;
}

/** Type guard for HostDeviceBackend. */
export function isHostDeviceBackend(b: unknown): b is HostDeviceBackend {
  return !!b && typeof (b as HostDeviceBackend).hostDevice === 'function';
}

/** Fds a management layer opened for us (like QEMU's `-object iommufd,fd=` / `-device vfio-pci,fd=`). */
export interface HostFds {
  iommufd?: number;
  container?: number;
  group?: number;
  device?: number;
}

/** Sorts ranges and renames `end` (the addon's inclusive end) to `last`. */
export function toFactsRanges(ranges: { start: bigint; end: bigint }[]): { start: bigint; last: bigint }[] {
  return ranges
    .map((r) => ({ start: r.start, last: r.end }))
    .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
}

export const hex = (v: bigint | number): string => `0x${v.toString(16)}`;

/**
 * Host maps and unmaps of at most this many bytes run their ioctl synchronously, on the event loop; larger ones
 * (and unmap-all) run on the libuv threadpool. Why: pinning or unpinning up to 512 pages of 4 KiB takes from a few
 * microseconds to a few hundred (faulting in and zeroing fresh pages included), while an async call adds a
 * threadpool round trip (queue the work, wake a thread, post the completion back to the loop): tens of
 * microseconds natively and 0.5-1 ms under TCG, 10-50x the ioctl itself. A vIOMMU guest sends exactly these small
 * ones, one DMA_MAP and one DMA_UNMAP per 4 KiB IOTLB entry. Above this size a map may pin GiBs (seconds), which
 * must never stall the loop, and the threadpool hop is noise next to it. 2 MiB = one x86 huge page.
 */
export const SYNC_IOCTL_MAX_SIZE = 2n << 20n;

/**
 * Per map/unmap ioctl: the addon's synchronous call or its threadpool one, by size (SYNC_IOCTL_MAX_SIZE), counting
 * the choices (tests and benchmarks read `counts`).
 */
export class IoctlPath {
  /** Map/unmap ioctls decided so far, by path (unmap-all and the MAP_FILE probe are always async, not counted). */
  readonly counts = { sync: 0, async: 0 };

  /** `syncMaxSize`: 0n sends every map and unmap to the threadpool (the behaviour before the fast path). */
  constructor(readonly syncMaxSize: bigint = SYNC_IOCTL_MAX_SIZE) {
    if (typeof syncMaxSize !== 'bigint' || syncMaxSize < 0n) {
      throw new RangeError(`syncMaxSize must be a bigint >= 0n, got ${String(syncMaxSize)}`);
    }
  }

  /** Whether an ioctl covering `size` bytes runs synchronously (and counts it). */
  sync(size: bigint): boolean {
    const sync = size <= this.syncMaxSize;
    this.counts[sync ? 'sync' : 'async']++;
    return sync;
  }
}
