// The `none` IOMMU backend: no host device, nothing to mirror. It accepts every map and records nothing; its
// facts are the protocol defaults (4 KiB pages, 65,535 maps, the whole 64-bit IOVA space).

import type { HostFacts, IommuBackend, IommuMapRequest } from './backend.js';

export class NoneBackend implements IommuBackend {
  readonly name = 'none';
  readonly pins = false;

  async attach(): Promise<HostFacts> {
    return { pgsizes: 4096n, iovaRanges: [{ start: 0n, last: (1n << 64n) - 1n }], maxDmaMaps: 65535 };
  }
  async map(_e: IommuMapRequest): Promise<void> {}
  async unmap(_iova: bigint, _size: bigint): Promise<void> {}
  async unmapAll(): Promise<void> {}
  async close(): Promise<void> {}
}
