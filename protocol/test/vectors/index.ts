import { vectors as deviceFeature } from './device-feature.js';
import { vectors as deviceGetInfo } from './device-get-info.js';
import { vectors as deviceGetIrqInfo } from './device-get-irq-info.js';
import { vectors as deviceGetRegionInfo } from './device-get-region-info.js';
import { vectors as deviceGetRegionIoFds } from './device-get-region-io-fds.js';
import { vectors as deviceReset } from './device-reset.js';
import { vectors as deviceSetIrqs } from './device-set-irqs.js';
import { vectors as dmaMap } from './dma-map.js';
import { vectors as dmaRead } from './dma-read.js';
import { vectors as dmaUnmap } from './dma-unmap.js';
import { vectors as dmaWrite } from './dma-write.js';
import { vectors as migDataRead } from './mig-data-read.js';
import { vectors as migDataWrite } from './mig-data-write.js';
import { vectors as regionRead } from './region-read.js';
import { vectors as regionWrite } from './region-write.js';
import { vectors as regionWriteMulti } from './region-write-multi.js';
import type { Vector } from './types.js';
import { vectors as version } from './version.js';

export type { Vector } from './types.js';
/** Every vector, in command order. */
export const allVectors: Vector[] = [
  ...version,
  ...dmaMap,
  ...dmaUnmap,
  ...deviceGetInfo,
  ...deviceGetRegionInfo,
  ...deviceGetRegionIoFds,
  ...deviceGetIrqInfo,
  ...deviceSetIrqs,
  ...regionRead,
  ...regionWrite,
  ...dmaRead,
  ...dmaWrite,
  ...deviceReset,
  ...regionWriteMulti,
  ...deviceFeature,
  ...migDataRead,
  ...migDataWrite,
];
