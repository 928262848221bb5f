// What a hand-over carries from the running server to its successor (docs/handover.md), and the version check.
//
// fds are not in the JSON: the state names them by position in the list of fds that came with the STATE
// message (FdRef). Everything else is plain data: the negotiated offer and the client's capabilities, every DMA
// region (IOVA, size, prot, file offset, which file), the host IOMMU entries, every IRQ vector (fds, mask,
// pending), the device's migration snapshot, the dirty log, counters and the log level.

import { readFileSync } from 'node:fs';
import type { Capabilities } from 'vfio-user-protocol';
import type { DirtyLogState } from '../dma/dirty.js';
import type { ServerOffer } from '../session/negotiate.js';
import type { ServerStats } from '../session/session.js';

/**
 * The state format. Bump it whenever HandoverState (or the meaning of a field) changes: a successor refuses a
 * state of another format, and a server refuses to hand over to a successor that speaks another one; in both
 * cases the running server keeps serving.
 */
export const HANDOVER_FORMAT = 1;

/** Position of an fd in the STATE message's fd list (-1: none). */
export type FdRef = number;

export interface RegionState {
  iova: bigint;
  size: bigint;
  prot: number;
  fileOffset: bigint;
  /** The backing file's fd (one per file, shared by its regions); -1 for fd-less (message) regions. */
  file: FdRef;
}

export interface VectorState {
  index: number;
  vector: number;
  trigger: FdRef;
  masked: boolean;
  pending: boolean;
  onMask: FdRef;
  onUnmask: FdRef;
}

export interface HandoverState {
  format: number;
  /** The package version of the sending build (logged; the format decides compatibility). */
  build: string;
  pid: number;
  device: { name: string; snapshot: Uint8Array | null };
  listener: { fd: FdRef; socketPath?: string };
  offer: ServerOffer;
  dma: { pageSize: bigint; maxMappings: number; regions: RegionState[] };
  iommu: { backend: string; entries: { iova: bigint; size: bigint; mirrored: boolean }[] };
  session: {
    id: number;
    conn: FdRef;
    twin: FdRef;
    client: Capabilities;
    writeMultiple: boolean;
  } | null;
  irqs: VectorState[];
  dirty: DirtyLogState | null;
  parked: FdRef[];
  nextSessionId: number;
  stats: ServerStats;
  log: { level: string };
}

/** Why a state cannot be taken over, or undefined when it can. */
export function incompatibility(format: unknown, build: unknown): string | undefined {
  if (format === HANDOVER_FORMAT) return undefined;
  return `incompatible hand-over state: format ${String(format)} from build ${String(build)}, this build (${buildId()}) speaks format ${HANDOVER_FORMAT}`;
}

let build: string | undefined;

/** This build's identity for logs: the vfio-user-server package version. */
export function buildId(): string {
  if (build === undefined) {
    try {
      // Resolved next to the compiled file: server/dist/src/handover -> server/package.json.
      const url = new URL('../../../package.json', import.meta.url);
      build = String((JSON.parse(readFileSync(url, 'utf8')) as { version?: unknown }).version ?? 'unknown');
    } catch {
      build = 'unknown';
    }
  }
  return build;
}
