// The successor's side of a hand-over (docs/handover.md). The CLI runs it instead of server.start() when
// VFIO_USER_HANDOVER_FD names the inherited channel: say HELLO, take the STATE (refusing another format or
// another device with a readable reason), rebuild everything without a byte on the wire or a host IOMMU call
// (device loaded from its snapshot and kept stopped, DMA regions re-created from the same files, host entries
// adopted, the listener and sockets adopted but not read), answer READY, and on GO prefill the unprocessed input,
// take over the IRQ eventfds, restart the device and start reading: RUNNING.

import type pino from 'pino';
import * as native from 'vfio-user-native';
import type { VfioUserDevice } from '../device.js';
import type { DmaAddressSpace, DmaMapParams } from '../dma/address-space.js';
import type { DmaRegion } from '../dma/region.js';
import type { VfioUserServer } from '../server.js';
import { migrationOf } from '../session/migration.js';
import { type Channel, type ChannelMessage, MsgType } from './channel.js';
import {
  buildId,
  HANDOVER_FORMAT,
  type HandoverState,
  incompatibility,
  unpackEntries,
  unpackRegions,
} from './state.js';

export interface TargetOptions {
  /** The channel to the running server (requestHost() may have used it already). */
  channel: Channel;
  deviceName: string;
  device: VfioUserDevice;
  /** A server built from the same command line, not started. */
  server: VfioUserServer;
  log: pino.Logger;
  /** How long to wait for STATE and then GO (default 60 s each: the running server decides the timeouts). */
  timeoutMs?: number;
  /**
   * Called once serving, before RUNNING tells the previous process to exit: with systemd, send MAINPID= here so
   * the unit's main process never disappears without a successor (docs/handover.md).
   */
  beforeRunning?(): void;
}

export interface TargetResult {
  /** From "stopped reading" in the previous process to "reading" here (ms, same host clock). */
  pausedMs: number;
  regions: number;
  previousPid: number;
}

/** Takes over; resolves once serving. Rejects (with the reason) when the state is refused or the takeover aborted. */
export async function takeOver(o: TargetOptions): Promise<TargetResult> {
  const log = o.log.child({ handover: true });
  const chan = o.channel;
  let fds: number[] = [];
  try {
    chan.send(MsgType.HELLO, { format: HANDOVER_FORMAT, build: buildId(), pid: process.pid });
    const m = await chan.receive(o.timeoutMs ?? 60_000, 'STATE');
    fds = m.fds;
    if (m.type === MsgType.ABORT) throw new Error(`the running server aborted: ${String(m.body.reason)}`);
    if (m.type !== MsgType.STATE) throw new Error(`expected STATE, got message ${m.type}`);
    const bad = incompatibility(m.body.format, m.body.build);
    if (bad) {
      chan.send(MsgType.REFUSE, { reason: bad });
      throw new Error(bad);
    }
    const state = m.body as unknown as HandoverState;
    const vaddrUpdates = { n: 0 };
    const t0 = performance.now();
    try {
      await prepare(o, state, fds);
    } catch (err) {
      const reason = `cannot take the state: ${(err as Error).message}`;
      chan.send(MsgType.REFUSE, { reason });
      throw new Error(reason);
    }
    const stateFds = fds;
    fds = [];
    const prepareMs = performance.now() - t0;
    chan.send(MsgType.READY, { pid: process.pid, prepareMs });
    const go = await chan.receive(o.timeoutMs ?? 60_000, 'GO');
    if (go.type !== MsgType.GO) {
      native.closeFdsQuietly(go.fds);
      throw new Error(`the running server aborted: ${String(go.body.reason ?? go.type)}`);
    }
    await start(o, state, stateFds, go, vaddrUpdates);
    const resumedAt = performance.timeOrigin + performance.now();
    o.beforeRunning?.();
    chan.send(MsgType.RUNNING, { resumedAt });
    chan.close();
    const pausedMs = resumedAt - Number(go.body.stoppedAt);
    log.info(
      {
        previousPid: state.pid,
        pausedMs: Math.round(pausedMs * 1000) / 1000,
        regions: state.dma.count,
        hostBackend: o.server.mirror.backend.name,
        hostEntriesAdopted: o.server.mirror.adopted,
        hostMaps: o.server.mirror.stats.maps,
        hostUnmaps: o.server.mirror.stats.unmaps,
        hostVaddrUpdates: vaddrUpdates.n,
        irqVectors: state.irqs.length,
        prepareMs: Math.round(prepareMs * 1000) / 1000,
      },
      'hand-over complete: serving',
    );
    return { pausedMs, regions: state.dma.count, previousPid: state.pid };
  } catch (err) {
    native.closeFdsQuietly(fds);
    chan.close();
    throw err;
  }
}

/** Everything but the wire: device state, DMA regions, host entries, listener; nothing is read yet. */
async function prepare(o: TargetOptions, s: HandoverState, fds: number[]): Promise<void> {
  const fd = (ref: number): number | undefined => (ref >= 0 ? fds[ref] : undefined);
  if (s.device.name !== o.deviceName)
    throw new Error(`the state is of device '${s.device.name}', this process serves '${o.deviceName}'`);
  if (s.iommu.backend !== o.server.mirror.backend.name)
    throw new Error(
      `the state is of host IOMMU backend '${s.iommu.backend}', this process has '${o.server.mirror.backend.name}'`,
    );
  const mig = o.device.migration;
  if (s.device.handover) {
    if (!o.device.handover) throw new Error('this device cannot load a hand-over state');
    o.device.handover.loadState(s.device.handover);
  }
  if (s.device.snapshot) {
    if (!mig) throw new Error('this device cannot load a state snapshot');
    // Stopped first (a device only makes progress while running), loaded, resumed on GO.
    await mig.setRunning?.(false);
    mig.loadState(s.device.snapshot);
  }
  // Each region consumes an fd of its own; the file's fd that came over is kept by the first and duplicated for
  // the others (the address space keeps one fd per file anyway).
  // (Only the first region of a file gets an fd: the others share its BackingFile.)
  const list = unpackRegions(s.dma.regions);
  const restoreRegions = (dma: DmaAddressSpace) => {
    const byFile = new Map<number, DmaRegion>();
    for (const r of list) {
      const p: DmaMapParams & { sameFileAs?: DmaRegion } = { iova: r.iova, size: r.size, prot: r.prot };
      const f = fd(r.file);
      if (f !== undefined) {
        p.fileOffset = r.fileOffset;
        const first = byFile.get(r.file);
        if (first) p.sameFileAs = first;
        else p.fd = native.dupFd(f);
      }
      const region = dma.restoreRegion(p);
      if (f !== undefined && !byFile.has(r.file)) byFile.set(r.file, region);
    }
  };
  await o.server.adoptPrepare({
    listenerFd: fd(s.listener.fd)!,
    ...(s.listener.socketPath && { socketPath: s.listener.socketPath }),
    offer: s.offer,
    pageSize: s.dma.pageSize,
    maxMappings: s.dma.maxMappings,
    restoreRegions,
    hostEntries: unpackEntries(s.iommu.entries),
    nextSessionId: s.nextSessionId,
    stats: s.stats,
    ...(s.session && { session: { connFd: fd(s.session.conn)!, id: s.session.id } }),
    parkedFds: s.parked.map((r) => fd(r)!),
  });
  // The fds adopted above are owned by the server now; the file fds were duplicated per region: close ours.
  const kept = new Set<number>([s.listener.fd, ...s.parked]);
  if (s.session) kept.add(s.session.conn).add(s.session.twin);
  for (const v of s.irqs) kept.add(v.trigger).add(v.onMask).add(v.onUnmask);
  fds.forEach((f, i) => {
    if (!kept.has(i)) native.closeFd(f);
  });
  const fsm = migrationOf(o.device);
  if (s.dirty && fsm) {
    fsm.dirty.importState(s.dirty);
    if (s.dirty.active) o.server.dma.dirtyLogging = fsm.dirty;
  }
}

/** GO: the unprocessed input, the IRQ eventfds, the device running again, then reading. */
async function start(
  o: TargetOptions,
  s: HandoverState,
  fds: number[],
  go: ChannelMessage,
  vaddrUpdates: { n: number },
): Promise<void> {
  // Past the point of no return: host entries pinning through the previous process's addresses (type1) now pin
  // through ours (MAP_DMA(VADDR): no unmap, no map), so they can be unmapped from here.
  vaddrUpdates.n = o.server.mirror.claimAddresses(o.server.dma);
  const input = (go.body.input as { data: Uint8Array; fds: number; fdsTruncated?: boolean }[]).map((p) => ({
    data: p.data,
    fds: [] as number[],
    ...(p.fdsTruncated && { fdsTruncated: true }),
  }));
  let at = 0;
  (go.body.input as { fds: number }[]).forEach((p, i) => {
    input[i]!.fds = go.fds.slice(at, at + p.fds);
    at += p.fds;
  });
  const fd = (ref: number): number => (ref >= 0 ? fds[ref]! : -1);
  const mig = o.device.migration;
  await o.server.adoptStart(
    s.session
      ? {
          client: s.session.client,
          writeMultiple: s.session.writeMultiple,
          ...(s.session.twin >= 0 && { twinFd: fd(s.session.twin) }),
          input,
          beforeRead: async () => {
            o.server.irq.importVectors(
              s.irqs.map((v) => ({
                ...v,
                trigger: fd(v.trigger),
                onMask: fd(v.onMask),
                onUnmask: fd(v.onUnmask),
              })),
            );
            if (s.device.snapshot) await mig?.setRunning?.(true);
          },
        }
      : undefined,
  );
  if (!s.session) {
    native.closeFdsQuietly(input.flatMap((p) => p.fds));
    if (s.device.snapshot) await mig?.setRunning?.(true);
  }
}

/** What HOST carries: the running server's host IOMMU backend, its fds by role (owned by the caller now). */
export interface HostHandover {
  backend: string;
  fds: Record<string, number>;
  meta: Record<string, unknown>;
}

/**
 * The successor's first step, before it builds its device: asks the running server for its host IOMMU backend
 * (HOST_REQUEST with our format, which the server checks first), to adopt it (iommu/select.ts adoptIommuBackend).
 */
export async function requestHost(chan: Channel, timeoutMs = 60_000): Promise<HostHandover> {
  chan.send(MsgType.HOST_REQUEST, { format: HANDOVER_FORMAT, build: buildId(), pid: process.pid });
  const m = await chan.receive(timeoutMs, 'HOST');
  if (m.type !== MsgType.HOST) {
    native.closeFdsQuietly(m.fds);
    throw new Error(
      m.type === MsgType.ABORT
        ? `the running server aborted: ${String(m.body.reason)}`
        : `expected HOST, got message ${m.type}`,
    );
  }
  const roles = (m.body.fds ?? {}) as Record<string, number>;
  const fds: Record<string, number> = {};
  for (const [role, at] of Object.entries(roles)) {
    const fd = m.fds[at];
    if (fd === undefined) throw new Error(`HOST names fd ${at} for ${role}, which did not come`);
    fds[role] = fd;
  }
  return { backend: String(m.body.backend), fds, meta: (m.body.meta ?? {}) as Record<string, unknown> };
}
