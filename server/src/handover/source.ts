// The running server's side of a hand-over (docs/handover.md):
//
//   1. spawn the successor (same command line) with the channel as fd 3; wait for HELLO (format check);
//   2. stop: accepting paused, command dispatch held at a message boundary (replies to our own DMA_READ/WRITE
//      are still read), the device stopped through its migration facet (edu waits for a transfer in flight),
//      no server->client DMA left pending; then reading stops on both sockets;
//   3. export the state (STATE + fds) and wait for READY: the successor has rebuilt everything without touching
//      the wire or the host IOMMU, which doubles as the health probe;
//   4. GO (the point of no return) with every received but unprocessed byte; wait for RUNNING; abandon our copy
//      of everything and let the caller exit 0.
// Any failure before GO (no successor, a refusal, a timeout, the successor exiting) undoes step 2 and the server
// carries on as if nothing happened; the reason is logged and returned.

import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type pino from 'pino';
import * as native from 'vfio-user-native';
import { MigState } from 'vfio-user-protocol';
import type { VfioUserDevice } from '../device.js';
import { VfioType1Backend } from '../iommu/vfio-type1.js';
import type { VfioUserServer } from '../server.js';
import { migrationOf } from '../session/migration.js';
import { Channel, type ChannelMessage, MsgType } from './channel.js';
import {
  buildId,
  HANDOVER_FORMAT,
  type HandoverState,
  incompatibility,
  packEntries,
  packRegions,
  type RegionState,
} from './state.js';
import { type SuccessorCommand, spawnSuccessor } from './successor.js';

export interface HandoverOptions {
  /** The device name of the command line (the successor checks it is building the same device). */
  deviceName: string;
  log: pino.Logger;
  /**
   * How long the successor may take to start and say HELLO (default 60 s: nothing is stopped meanwhile, so a
   * slow start, e.g. Node.js loading under emulation, costs nothing).
   */
  startTimeoutMs?: number;
  /**
   * How long the successor may take from STATE to READY (default 4 s). The client's commands wait meanwhile, and
   * QEMU gives a command 5 s (x-msg-timeout) before it gives up on the device.
   */
  readyTimeoutMs?: number;
  /** How long the device may take to stop and server->client DMA to drain (default 2 s). */
  quiesceTimeoutMs?: number;
  /** The successor's command (default: this process's). */
  command?: SuccessorCommand;
}

export type HandoverResult =
  | { ok: true; pid: number; pausedMs: number; regions: number }
  | { ok: false; reason: string };

/** The hand-over running in this process, if any. */
interface Active {
  /** The successor, from its spawn until the hand-over ends. */
  child?: ChildProcess;
  /** GO was sent: the successor owns the device and must never be killed by us. */
  committed: boolean;
  /** Set by cancelHandover(): the reason the next step fails with. */
  cancelled?: string;
  done: Promise<HandoverResult>;
}
let active: Active | undefined;

/** Whether a hand-over is running in this process. */
export function handoverInProgress(): boolean {
  return active !== undefined;
}

/**
 * Ends a hand-over in progress, for a shutdown: before GO the successor is killed and reaped and the server is
 * back as it was (the caller then closes it as usual); after GO nothing can be undone and the result says the
 * successor serves (the caller must then exit without closing anything). Resolves undefined when there is none.
 */
export function cancelHandover(reason: string): Promise<HandoverResult> | undefined {
  const a = active;
  if (!a) return undefined;
  if (!a.committed && a.cancelled === undefined) {
    a.cancelled = `cancelled: ${reason}`;
    if (a.child && a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
  }
  return a.done;
}

// A successor we abandon never outlives us: whatever ends this process (process.exit() in a fatal path, an
// uncaught exception) before GO takes the successor with it. After GO it is the device's owner and stays.
let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  process.on('exit', () => {
    const c = active?.child;
    if (active && !active.committed && c && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });
}

/** Why `server` cannot be handed over at all (checked before anything is started). */
function unsupported(server: VfioUserServer, device: VfioUserDevice): string | undefined {
  const v = server.handoverView();
  if (!v.running) return 'the server is not running';
  const backend = server.mirror.backend;
  if (backend.name !== 'none' && !backend.handoverExport)
    return `the '${backend.name}' host IOMMU backend cannot be handed over`;
  if (backend instanceof VfioType1Backend && server.mirror.stats.live > 0 && !backend.updateVaddrSupported)
    return 'the VFIO type1 container cannot move its entries to another process (no VFIO_UPDATE_VADDR)';
  if (!device.migration && !device.handover)
    return 'the device has neither a migration nor a hand-over facet: its state could not be carried over';
  const fsm = migrationOf(device);
  if (fsm && fsm.state !== MigState.RUNNING) return 'a migration is in progress';
  return undefined;
}

/**
 * Hands `server` (serving `device`) over to a new process. Resolves { ok: true } once the successor serves
 * (the caller then exits 0 without closing anything), or { ok: false, reason } with the server serving as before.
 */
export async function handOver(
  server: VfioUserServer,
  device: VfioUserDevice,
  o: HandoverOptions,
): Promise<HandoverResult> {
  const log = o.log.child({ handover: true });
  if (active) return { ok: false, reason: 'a hand-over is already in progress' };
  const why = unsupported(server, device);
  if (why) {
    log.warn({ reason: why }, 'hand-over refused, still serving');
    return { ok: false, reason: why };
  }
  hookExit();
  const a: Active = { committed: false, done: Promise.resolve({ ok: false, reason: '' }) };
  active = a;
  a.done = run(server, device, o, log, a).finally(() => {
    active = undefined;
  });
  return a.done;
}

async function run(
  server: VfioUserServer,
  device: VfioUserDevice,
  o: HandoverOptions,
  log: pino.Logger,
  a: Active,
): Promise<HandoverResult> {
  const [mine, theirs] = native.socketpair();
  let child: ChildProcess;
  try {
    child = spawnSuccessor(theirs, o.command);
  } catch (err) {
    native.closeFd(mine);
    native.closeFd(theirs);
    return fail(log, `cannot start the successor: ${(err as Error).message}`);
  }
  native.closeFd(theirs);
  a.child = child;
  const chan = new Channel(mine);
  let exited: string | undefined;
  const exitWatch = new Promise<never>((_, reject) => {
    const onExit = (code: number | null, sig: NodeJS.Signals | null) => {
      exited = `the successor (pid ${child.pid}) exited ${sig ? `on ${sig}` : `with status ${code}`}`;
      reject(new Error(exited));
    };
    child.once('exit', onExit);
    child.once('error', (err) => {
      exited = `the successor could not be started: ${err.message}`;
      reject(new Error(exited));
    });
  });
  exitWatch.catch(() => {});
  const expect = async (type: number | number[], ms: number, what: string): Promise<ChannelMessage> => {
    let m: ChannelMessage;
    try {
      m = await Promise.race([chan.receive(ms, what), exitWatch]);
    } catch (err) {
      // A closed channel usually means the successor died: give its exit status a moment to arrive.
      if (exited === undefined) await Promise.race([exitWatch.catch(() => {}), sleep(1000)]);
      throw new Error(a.cancelled ?? exited ?? (err as Error).message);
    }
    if (m.type === MsgType.REFUSE) {
      throw new Error(`the successor refused the state: ${String(m.body.reason)}`);
    }
    if (!(Array.isArray(type) ? type.includes(m.type) : m.type === type))
      throw new Error(`unexpected hand-over message ${m.type} while waiting for ${what}`);
    return m;
  };
  /** Before GO, on any failure: the successor is killed and reaped (waited for), so none outlives its use. */
  const kill = async () => {
    chan.close();
    if (exited !== undefined) return;
    child.kill('SIGKILL');
    await Promise.race([exitWatch.catch(() => {}), sleep(5000)]);
    if (exited === undefined)
      log.error({ successor: child.pid }, 'hand-over: the successor did not die on SIGKILL');
  };
  const checkCancelled = () => {
    if (a.cancelled !== undefined) throw new Error(a.cancelled);
  };

  log.info({ successor: child.pid }, 'hand-over: successor started');
  // 1. HELLO (nothing stopped yet). A successor first asks for the host IOMMU backend (HOST_REQUEST): it builds
  // its device around the backend's fds, which it adopts without any host call.
  try {
    const until = Date.now() + (o.startTimeoutMs ?? 60_000);
    const checkFormat = (m: ChannelMessage) => {
      const bad = incompatibility(m.body.format, m.body.build);
      if (bad) {
        chan.send(MsgType.ABORT, { reason: bad });
        throw new Error(
          `the successor is ${bad.replace('incompatible hand-over state: ', 'incompatible: ')}`,
        );
      }
    };
    for (;;) {
      const m = await expect(
        [MsgType.HELLO, MsgType.HOST_REQUEST],
        Math.max(1, until - Date.now()),
        'HELLO from the successor',
      );
      checkFormat(m);
      if (m.type === MsgType.HELLO) break;
      sendHost(chan, server);
    }
    checkCancelled();
  } catch (err) {
    await kill();
    return fail(log, (err as Error).message);
  }

  // 2. Stop.
  const t0 = performance.now();
  const stoppedAt = performance.timeOrigin + t0;
  const view = server.handoverView();
  const session = view.session;
  server.pauseAccepting();
  let deviceStopped = false;
  let addressesReleased = false;
  const rollBack = async (reason: string): Promise<HandoverResult> => {
    await kill();
    if (addressesReleased) {
      try {
        server.mirror.claimAddresses(server.dma);
      } catch (err) {
        log.error({ err }, 'hand-over: taking the host entries back failed');
      }
    }
    if (deviceStopped) {
      try {
        await device.migration!.setRunning?.(true);
      } catch (err) {
        log.error({ err }, 'hand-over: restarting the device failed');
      }
    }
    session?.releaseDispatch();
    server.resumeAccepting();
    return fail(log, reason, performance.now() - t0);
  };
  try {
    await session?.holdDispatch();
    // A device with a migration facet stops; one with a hand-over facet keeps its state outside the process
    // (vfio-pci: the host device) and goes on.
    if (device.migration) {
      await withTimeout(
        Promise.resolve(device.migration.setRunning?.(false)),
        o.quiesceTimeoutMs ?? 2000,
        'the device did not stop',
      );
      deviceStopped = true;
    }
    const until = Date.now() + (o.quiesceTimeoutMs ?? 2000);
    while ((session?.dmaInflight ?? 0) > 0) {
      if (Date.now() > until) throw new Error('server->client DMA still pending');
      await new Promise((r) => setTimeout(r, 1));
    }
    if (session && !session.isOpen) throw new Error('the client disconnected during the hand-over');
    checkCancelled();
    session?.pauseInput();
    addressesReleased = true;
    await server.mirror.releaseAddresses();
  } catch (err) {
    return rollBack(`cannot stop: ${(err as Error).message}`);
  }

  // 3. STATE -> READY.
  let state: HandoverState;
  let fds: number[];
  const t1 = performance.now();
  try {
    ({ state, fds } = exportState(server, device, o, stoppedAt));
  } catch (err) {
    return rollBack(`cannot export the state: ${(err as Error).message}`);
  }
  try {
    chan.send(MsgType.STATE, state, fds);
    log.debug({ quiesceMs: t1 - t0, exportMs: performance.now() - t1 }, 'hand-over: state sent');
    await expect(MsgType.READY, o.readyTimeoutMs ?? 4000, 'READY from the successor');
    if (session && !session.isOpen) throw new Error('the client disconnected during the hand-over');
    checkCancelled();
  } catch (err) {
    return rollBack((err as Error).message);
  }

  // 4. GO: from here on the successor owns the device; we never serve again (nor kill it).
  a.committed = true;
  const input = session?.takeInput() ?? [];
  const inputFds = input.flatMap((p) => p.fds);
  try {
    chan.send(
      MsgType.GO,
      {
        stoppedAt,
        input: input.map((p) => ({
          data: p.data,
          fds: p.fds.length,
          ...(p.fdsTruncated && { fdsTruncated: true }),
        })),
      },
      inputFds,
    );
  } finally {
    for (const fd of inputFds) native.closeFd(fd);
  }
  server.abandon();
  try {
    const m = await expect(MsgType.RUNNING, 10_000, 'RUNNING from the successor');
    const pausedMs = Number(m.body.resumedAt) - stoppedAt;
    log.info(
      {
        successor: child.pid,
        pausedMs: Math.round(pausedMs * 1000) / 1000,
        regions: state.dma.count,
      },
      'hand-over complete: the successor serves, exiting',
    );
    chan.close();
    return { ok: true, pid: child.pid!, pausedMs, regions: state.dma.count };
  } catch (err) {
    chan.close();
    // Past the point of no return: the device went with the successor.
    log.fatal({ err }, 'hand-over: the successor failed after taking over');
    return { ok: true, pid: child.pid ?? -1, pausedMs: Number.NaN, regions: state.dma.count };
  }
}

/** HOST: the backend's fds (borrowed: the kernel copies them) by role, and its meta. Nothing is stopped. */
function sendHost(chan: Channel, server: VfioUserServer): void {
  const backend = server.mirror.backend;
  const x = backend.handoverExport?.() ?? { fds: {}, meta: {} };
  const fds: number[] = [];
  const roles: Record<string, number> = {};
  for (const [role, fd] of Object.entries(x.fds)) {
    if (fd < 0) continue;
    roles[role] = fds.length;
    fds.push(fd);
  }
  chan.send(MsgType.HOST, { backend: backend.name, fds: roles, meta: x.meta }, fds);
}

function fail(log: pino.Logger, reason: string, stalledMs?: number): HandoverResult {
  log.warn(
    { reason, ...(stalledMs !== undefined && { stalledMs: Math.round(stalledMs * 1000) / 1000 }) },
    'hand-over failed, still serving',
  );
  return { ok: false, reason };
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** The state and its fds (borrowed from their owners: the kernel copies them into the message). */
function exportState(
  server: VfioUserServer,
  device: VfioUserDevice,
  o: HandoverOptions,
  _stoppedAt: number,
): { state: HandoverState; fds: number[] } {
  const fds: number[] = [];
  const ref = (fd: number | undefined): number => {
    if (fd === undefined || fd < 0) return -1;
    fds.push(fd);
    return fds.length - 1;
  };
  const v = server.handoverView();
  const listenerFd = v.listener?.fd ?? -1;
  if (listenerFd < 0) throw new Error('no listener');
  const fileRefs = new Map<string, number>();
  const regions: RegionState[] = server.dma.regions().map((r) => {
    let file = -1;
    if (r.file) {
      const key = r.file.key;
      let at = fileRefs.get(key);
      if (at === undefined) {
        at = ref(r.file.fd);
        fileRefs.set(key, at);
      }
      file = at;
    }
    return { iova: r.iova, size: r.size, prot: r.prot, fileOffset: r.fileOffset, file };
  });
  const sv = v.session?.handoverView();
  const fsm = migrationOf(device);
  const state: HandoverState = {
    format: HANDOVER_FORMAT,
    build: buildId(),
    pid: process.pid,
    device: {
      name: o.deviceName,
      snapshot: device.migration ? device.migration.saveState() : null,
      handover: !device.migration && device.handover ? device.handover.saveState() : null,
    },
    listener: { fd: ref(listenerFd), ...(v.listener?.path && { socketPath: v.listener.path }) },
    offer: v.offer!,
    dma: {
      pageSize: server.dma.pageSize,
      maxMappings: server.dma.maxMappings,
      count: regions.length,
      regions: packRegions(regions),
    },
    iommu: { backend: server.mirror.backend.name, entries: packEntries(server.mirror.exportEntries()) },
    session: sv
      ? {
          id: sv.id,
          conn: ref(sv.connFd),
          twin: ref(sv.twinFd),
          client: sv.client,
          writeMultiple: sv.writeMultiple,
        }
      : null,
    irqs: server.irq.exportVectors().map((x) => ({
      index: x.index,
      vector: x.vector,
      trigger: ref(x.trigger),
      masked: x.masked,
      pending: x.pending,
      onMask: ref(x.onMask),
      onUnmask: ref(x.onUnmask),
    })),
    dirty: fsm?.dirty.started ? fsm.dirty.exportState() : null,
    parked: v.parked.map((c) => ref(c.fd)),
    nextSessionId: v.nextSessionId,
    stats: server.stats,
    log: { level: o.log.level },
  };
  return { state, fds };
}
