// The NVMe controller device (see controller.ts and docs/nvme.md).
export * from './constants.js';
export {
  createNvme,
  NVME_BAR0_SIZE,
  NVME_MAX_QUEUE_ENTRIES,
  NVME_MAX_QUEUES,
  NvmeController,
  type NvmeDevice,
  type NvmeOptions,
  type NvmeState,
  type NvmeStats,
} from './controller.js';
export { GuestMemory, type GuestSegment } from './guest-memory.js';
export { ImageFile, type ImageStats } from './image.js';
export { NvmeStatusError, prpSegments } from './prp.js';
