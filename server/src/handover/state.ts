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
export const HANDOVER_FORMAT = 2;

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
  /** `snapshot`: the migration facet's; `handover`: the hand-over facet's (a device has one or the other). */
  device: { name: string; snapshot: Uint8Array | null; handover: Uint8Array | null };
  listener: { fd: FdRef; socketPath?: string };
  offer: ServerOffer;
  /** Regions and host entries are packed (packRegions/packEntries): 65,535 of them must move in milliseconds. */
  dma: { pageSize: bigint; maxMappings: number; count: number; regions: Uint8Array };
  iommu: { backend: string; entries: Uint8Array };
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

/** Regions as little-endian u64 quadruples: iova, size, file offset, prot | (file + 1) << 8. */
export function packRegions(regions: readonly RegionState[]): Uint8Array {
  const a = new BigUint64Array(regions.length * 4);
  regions.forEach((r, i) => {
    a[i * 4] = r.iova;
    a[i * 4 + 1] = r.size;
    a[i * 4 + 2] = r.fileOffset;
    a[i * 4 + 3] = BigInt(r.prot) | (BigInt(r.file + 1) << 8n);
  });
  return new Uint8Array(a.buffer);
}

export function unpackRegions(bytes: Uint8Array): RegionState[] {
  if (bytes.byteLength % 32 !== 0) throw new Error('torn DMA region list');
  const a = new BigUint64Array(bytes.slice().buffer);
  const out: RegionState[] = [];
  for (let i = 0; i < a.length; i += 4) {
    const w = a[i + 3]!;
    out.push({
      iova: a[i]!,
      size: a[i + 1]!,
      fileOffset: a[i + 2]!,
      prot: Number(w & 0xffn),
      file: Number(w >> 8n) - 1,
    });
  }
  return out;
}

export interface HostEntryState {
  iova: bigint;
  size: bigint;
  mirrored: boolean;
}

/** Host entries as little-endian u64 triples: iova, size, mirrored. */
export function packEntries(entries: readonly HostEntryState[]): Uint8Array {
  const a = new BigUint64Array(entries.length * 3);
  entries.forEach((e, i) => {
    a[i * 3] = e.iova;
    a[i * 3 + 1] = e.size;
    a[i * 3 + 2] = e.mirrored ? 1n : 0n;
  });
  return new Uint8Array(a.buffer);
}

export function unpackEntries(bytes: Uint8Array): HostEntryState[] {
  if (bytes.byteLength % 24 !== 0) throw new Error('torn host entry list');
  const a = new BigUint64Array(bytes.slice().buffer);
  const out: HostEntryState[] = [];
  for (let i = 0; i < a.length; i += 3) out.push({ iova: a[i]!, size: a[i + 1]!, mirrored: a[i + 2] === 1n });
  return out;
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
