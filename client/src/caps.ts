// VERSION negotiation from the client's side: what we propose. The server's answer is judged by the protocol's
// judgeVersionReply (spec rules always, QEMU's limits when asked).

import { DEFAULT_MAX_DMA_MAPS, DEFAULT_MIGRATION, PAGE_SIZE } from 'vfio-user-protocol';

/** Capabilities as they travel in JSON (spec key names). */
export interface CapabilitiesJson {
  max_msg_fds?: number;
  max_data_xfer_size?: number;
  max_dma_maps?: number;
  pgsizes?: number;
  migration?: { pgsize?: number; max_bitmap_size?: number };
  write_multiple?: boolean;
  twin_socket?: { supported: boolean; fd_index?: number };
  [key: string]: unknown;
}

/** What the client proposes by default: QEMU's set (we can honour all of it). */
export function defaultClientCapabilities(maxMsgFds: number, maxDataXferSize: number): CapabilitiesJson {
  return {
    max_msg_fds: maxMsgFds,
    max_data_xfer_size: maxDataXferSize,
    max_dma_maps: DEFAULT_MAX_DMA_MAPS,
    pgsizes: PAGE_SIZE,
    migration: { pgsize: DEFAULT_MIGRATION.pgsize, max_bitmap_size: DEFAULT_MIGRATION.maxBitmapSize },
    write_multiple: true,
  };
}
