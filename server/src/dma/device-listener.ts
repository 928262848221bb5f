// Tells the device about DMA_MAP/DMA_UNMAP (VfioUserDevice.dmaMapped/dmaUnmapped/quiesce), as libvfio-user's
// dma_register/dma_unregister/quiesce callbacks do. The server subscribes it after the IOMMU mirror, so on removal
// (latest subscriber first) the device lets go of a region before the host IOMMU unmaps it.
import * as native from 'vfio-user-native';
import type { DeviceLogger, DmaRegionInfo, VfioUserDevice } from '../device.js';
import { isPromise } from '../promise.js';
import type { DmaListener } from './address-space.js';
import type { DmaRegion } from './region.js';

/** What a device is told about a region. */
export function regionInfoOf(r: DmaRegion): DmaRegionInfo {
  return {
    iova: r.iova,
    size: r.size,
    readable: r.readable,
    writable: r.writable,
    zeroCopy: r.access === 'mmap' && r.file !== undefined && (r.file.seals & native.F_SEAL_SHRINK) !== 0,
  };
}

/** Whether the device wants DMA events at all. */
export function wantsDmaEvents(device: VfioUserDevice): boolean {
  return Boolean(device.dmaMapped || device.dmaUnmapped || device.quiesce);
}

/** dmaUnmapped for regions[i..], in order; a promise only once a hook returns one. */
function unmappedFrom(
  device: VfioUserDevice,
  regions: readonly DmaRegion[],
  i: number,
): void | Promise<void> {
  for (; i < regions.length; i++) {
    const r = device.dmaUnmapped?.(regionInfoOf(regions[i]!));
    if (isPromise(r)) {
      const next = i + 1;
      return r.then(() => unmappedFrom(device, regions, next));
    }
  }
}

export function deviceDmaListener(device: VfioUserDevice, log: DeviceLogger): DmaListener {
  // Quiesce, then dmaUnmapped per region, each awaited when it returns a promise. Synchronous when the device's
  // hooks are (edu's are): the DMA_UNMAP reply then leaves from the read callback, with no promise hop (#14).
  const removed = (regions: readonly DmaRegion[]): void | Promise<void> => {
    if (regions.length === 0) return;
    const q = device.quiesce?.();
    return isPromise(q) ? q.then(() => unmappedFrom(device, regions, 0)) : unmappedFrom(device, regions, 0);
  };
  return {
    regionAdded(r) {
      try {
        device.dmaMapped?.(regionInfoOf(r));
      } catch (err) {
        log.warn({ err, region: r.toString() }, 'device dmaMapped hook threw');
      }
    },
    regionRemoved: (r) => removed([r]),
    allRemoved: removed,
  };
}
