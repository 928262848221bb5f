// The `none` IOMMU backend: no host device, nothing to mirror. It accepts every map and records nothing; its
// facts are the protocol defaults (4 KiB pages, 65,535 maps, the whole 64-bit IOVA space).

import { DEFAULT_MAX_DMA_MAPS, PAGE_SIZE_BIG, U64_MAX } from 'vfio-user-protocol';
import type { HostFacts, HostMapping, IommuBackend } from './backend.js';

/**
 * The IOMMU backend for devices that need no host IOMMU (every emulated device): accepts every map and does
 * nothing.
 */
export class NoneBackend implements IommuBackend {
  readonly name = 'none';
  readonly mapsBy = 'nothing';
  readonly pins = false;

  async attach(): Promise<HostFacts> {
    return {
      pgsizes: PAGE_SIZE_BIG,
      iovaRanges: [{ start: 0n, last: U64_MAX }],
      maxDmaMaps: DEFAULT_MAX_DMA_MAPS,
    };
  }
  // Synchronous: DMA_MAP/DMA_UNMAP complete without a promise hop (address-space.ts).
  map(_m: HostMapping): void {}
  unmap(_iova: bigint, _size: bigint): void {}
  async unmapAll(): Promise<void> {}
  async close(): Promise<void> {}
}
