// Tells the device about DMA_MAP/DMA_UNMAP (VfioUserDevice.dmaMapped/dmaUnmapped/quiesce), as libvfio-user's
// dma_register/dma_unregister/quiesce callbacks do. The server subscribes it after the IOMMU mirror, so on removal
// (latest subscriber first) the device lets go of a region before the host IOMMU unmaps it.
import * as native from 'vfio-user-native';
import type { DeviceLogger, DmaRegionInfo, VfioUserDevice } from '../device.js';
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

export function deviceDmaListener(device: VfioUserDevice, log: DeviceLogger): DmaListener {
  const removed = async (regions: readonly DmaRegion[]) => {
    if (regions.length === 0) return;
    await device.quiesce?.();
    for (const r of regions) await device.dmaUnmapped?.(regionInfoOf(r));
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
