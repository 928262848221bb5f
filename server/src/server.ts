// The vfio-user server: one device, one listening socket, one client at a time.
//
// Connection policy (transport/client-gate.ts): the device has a single DMA address space and IRQ state, so one
// client is served at a time; later connections are parked unread until it leaves (at most `maxWaiting`, 8 by
// default; more are closed with a log line).
//
// Lifecycle: start() attaches the IOMMU backend (its facts set the advertised pgsizes and max_dma_maps and the
// address space's limits), subscribes the mirror to the DMA address space, then listens. Each client gets a
// Session; when it ends the address space is empty again, every IRQ fd is closed and the device is detached with
// its state kept, and the next parked client is started. close() stops listening, ends the session, unmaps
// everything on the host and closes the backend, then the device.

import { EventEmitter } from 'node:events';
import { lstatSync } from 'node:fs';
import pino from 'pino';
import * as native from 'vfio-user-native';
import { DEFAULT_MAX_DATA_XFER_SIZE, PAGE_SIZE_BIG, QEMU_LIMITS } from 'vfio-user-protocol';
import type { VfioUserDevice } from './device.js';
import { DmaAddressSpace } from './dma/address-space.js';
import { deviceDmaListener, wantsDmaEvents } from './dma/device-listener.js';
import type { HostFacts, IommuBackend } from './iommu/backend.js';
import { IommuMirror } from './iommu/mirror.js';
import { NoneBackend } from './iommu/none.js';
import { IrqController } from './irq/irq-controller.js';
import { MAX_BITMAP_SIZE } from './session/migration.js';
import type { ServerOffer } from './session/negotiate.js';
import { Observers } from './session/observers.js';
import { type ServerStats, Session, type SessionRestore } from './session/session.js';
import { ClientGate } from './transport/client-gate.js';
import { checkListenSource, openListener } from './transport/listen.js';

/**
 * What a VfioUserServer serves and how: the device, the socket (path or inherited fd), host IOMMU backend, logger,
 * limits and timeouts.
 */
export interface ServerOptions {
  /** Where to listen (a stale socket file is replaced; a live one is EADDRINUSE). Exclusive with `fd`. */
  socketPath?: string;
  /** An inherited listening socket fd (`--fd N`). Exclusive with `socketPath`. */
  fd?: number;
  device: VfioUserDevice;
  /** The device's name (labels the device's logger; default 'device'). */
  deviceName?: string;
  /** Host IOMMU backend (default: `none`). The server attaches it in start() and closes it in close(). */
  iommu?: IommuBackend;
  /** Default: silent. */
  logger?: pino.Logger;
  /** Advertised max_data_xfer_size (default 1 MiB; QEMU accepts up to 64 MiB). */
  maxDataXferSize?: number;
  /** Advertised max_msg_fds (default 16, QEMU's maximum). */
  maxMsgFds?: number;
  /** Minimum DMA page size (default: the backend's smallest page, 4 KiB). */
  pageSize?: bigint;
  /** Timeout of each server->client DMA_READ/WRITE message (default 5000 ms, QEMU's x-msg-timeout). */
  dmaTimeoutMs?: number;
  /** Connections parked while a client is served (default 8); more are closed. */
  maxWaiting?: number;
  /** Socket file mode (default 0o600). */
  socketMode?: number;
  /** Offer twin-socket to clients that ask for it (default true). */
  twinSocket?: boolean;
  /** Map fd-backed DMA regions into the process (default true; false = pread/pwrite). */
  mapViews?: boolean;
  /** Stream framing (default 'exact', correct for any sender; 'bulk' is faster for QEMU-like senders). */
  framing?: 'exact' | 'bulk';
  /** How long a new client may take to send VERSION before it is disconnected (default 5000 ms; 0: no limit). */
  versionTimeoutMs?: number;
}

/** The events a VfioUserServer emits: a client connected or disconnected. */
export type ServerEvent = 'connect' | 'disconnect';
/** 'connect': a client is being served (`peer` from SO_PEERCRED). */
export interface ConnectEvent {
  session: number;
  peer?: { pid: number; uid: number; gid?: number };
}
/** The client being served. */
export interface ActiveSessionInfo {
  session: number;
  peer?: { pid: number; uid: number; gid?: number };
  /** When it connected (ms since the epoch). */
  since: number;
}

/** 'disconnect': that client's session ended and its state was released. */
export interface DisconnectEvent {
  session: number;
  reason: string | undefined;
}

/** What a hand-over reads of a running server (server/src/handover/source.ts). */
export interface ServerHandoverView {
  options: Readonly<ServerOptions>;
  listener: native.Listener | undefined;
  session: Session | undefined;
  parked: readonly native.Connection[];
  offer: ServerOffer | undefined;
  nextSessionId: number;
  running: boolean;
}

/** What adoptPrepare() starts from: a previous process's server (server/src/handover/target.ts). */
export interface ServerAdoption {
  listenerFd: number;
  /** The socket file the listener is bound to (unlinked at shutdown), when it was created from a path. */
  socketPath?: string;
  offer: ServerOffer;
  pageSize: bigint;
  maxMappings: number;
  /** Re-creates the live DMA regions in the (empty, configured) address space (DmaAddressSpace.restoreRegion). */
  restoreRegions(dma: DmaAddressSpace): void;
  hostEntries: { iova: bigint; size: bigint; mirrored: boolean }[];
  nextSessionId: number;
  stats: ServerStats;
  session?: { connFd: number; id: number };
  parkedFds: number[];
}

/**
 * The vfio-user server: listens on a UNIX socket (0600), serves one client at a time with the device, and owns the
 * DMA address space, IRQ state and host IOMMU mirror.
 */
export class VfioUserServer extends EventEmitter {
  readonly dma: DmaAddressSpace;
  readonly irq: IrqController;
  readonly mirror: IommuMirror;
  readonly #stats: ServerStats = { connections: 0, messages: {}, dmaMaps: 0, dmaUnmaps: 0, errors: {} };
  /** Every counter, current: the reads the addon answered by itself (direct reads) are added first. */
  get stats(): ServerStats {
    this.active?.syncStats();
    return this.#stats;
  }
  /** Operations tooling (metrics, the wire recorder, tracing) watching every session (session/observers.ts). */
  readonly observers = new Observers();
  private readonly o: ServerOptions;
  private readonly log: pino.Logger;
  private listener: native.Listener | undefined;
  private active: Session | undefined;
  private activeInfo: ActiveSessionInfo | undefined;
  private readonly gate: ClientGate;
  private offer: ServerOffer | undefined;
  private facts: HostFacts | undefined;
  private nextSessionId = 1;
  private state: 'new' | 'starting' | 'running' | 'closing' | 'closed' = 'new';
  private closing: Promise<void> | undefined;

  constructor(o: ServerOptions) {
    super();
    checkListenSource(o);
    this.o = o;
    this.gate = new ClientGate(o.maxWaiting ?? 8);
    this.log = o.logger ?? pino({ level: 'silent' });
    this.dma = new DmaAddressSpace({
      pageSize: o.pageSize ?? PAGE_SIZE_BIG,
      mapViews: o.mapViews,
      log: this.log.child({ module: 'dma' }),
    });
    this.irq = new IrqController(o.device, this.log.child({ module: 'irq' }));
    this.mirror = new IommuMirror(o.iommu ?? new NoneBackend(), this.log.child({ module: 'iommu' }));
    this.observers.onError = (err) => this.log.error({ err }, 'an observer threw; removed');
  }

  override on(event: 'connect', cb: (info: ConnectEvent) => void): this;
  override on(event: 'disconnect', cb: (info: DisconnectEvent) => void): this;
  override on(
    event: ServerEvent,
    cb: ((info: ConnectEvent) => void) | ((info: DisconnectEvent) => void),
  ): this {
    return super.on(event, cb as (info: unknown) => void);
  }

  /** The socket path, when listening on one. */
  get socketPath(): string | undefined {
    return this.listener?.path ?? this.o.socketPath;
  }

  /** Whether a client is being served, and how many wait. */
  get clients(): { active: boolean; waiting: number } {
    return { active: !!this.active, waiting: this.gate.waitingCount };
  }

  /** The client being served, if any. */
  get session(): Readonly<ActiveSessionInfo> | undefined {
    return this.activeInfo;
  }

  /** The capabilities the server advertises (after start()). */
  get capabilities(): Readonly<ServerOffer> | undefined {
    return this.offer;
  }

  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`VfioUserServer.start() in state ${this.state}`);
    this.state = 'starting';
    const o = this.o;
    const facts = await this.mirror.attach();
    this.facts = facts;
    const want = o.pageSize ?? PAGE_SIZE_BIG;
    if (want <= 0n || (want & (want - 1n)) !== 0n) throw new RangeError('pageSize must be a power of two');
    // Advertise the host's page sizes no smaller than ours; the smallest of them is the alignment we enforce.
    let pgsizes = facts.pgsizes & ~(want - 1n);
    if (pgsizes === 0n) pgsizes = want;
    pgsizes &= (1n << 53n) - 1n; // a JSON number
    const minPage = pgsizes & -pgsizes;
    // QEMU refuses max_dma_maps above 65535 (it can only lower its own default); iommufd reports "no limit".
    const maxDmaMaps = Math.min(facts.maxDmaMaps, QEMU_LIMITS.maxDmaMaps);
    this.dma.configure({ pageSize: minPage, maxMappings: maxDmaMaps, maxFiles: fileBudget() });
    await this.mirror.start(this.dma);
    // The device hears about maps and unmaps after the mirror (and so, on removal, before it).
    if (wantsDmaEvents(o.device)) {
      await this.dma.subscribe(deviceDmaListener(o.device, this.log.child({ module: 'device-dma' })));
    }
    this.offer = {
      maxMsgFds: o.maxMsgFds ?? QEMU_LIMITS.maxMsgFds,
      maxDataXferSize: o.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER_SIZE,
      pgsizes: Number(pgsizes),
      maxDmaMaps,
      twinSocket: o.twinSocket ?? true,
      // Advertised only by devices with a migration facet (session/migration.ts); the dirty-log page size is the
      // DMA page size.
      ...(o.device.migration && { migration: { pgsize: Number(minPage), maxBitmapSize: MAX_BITMAP_SIZE } }),
    };
    this.listener = openListener({ socketPath: o.socketPath, fd: o.fd, mode: o.socketMode });
    this.listener.start(
      (conn) => this.onConnection(conn),
      (err) => this.log.error({ err }, 'accept failed'),
    );
    this.state = 'running';
    this.log.info(
      {
        socket: this.socketPath,
        fd: o.fd,
        iommu: this.mirror.backend.name,
        pgsizes: `0x${pgsizes.toString(16)}`,
        maxDmaMaps,
      },
      'vfio-user server listening',
    );
  }

  private onConnection(conn: native.Connection): void {
    if (this.state !== 'running') {
      conn.close();
      return;
    }
    let peer: { pid: number; uid: number } | undefined;
    try {
      peer = conn.peerCredentials();
    } catch {
      peer = undefined;
    }
    const decision = this.gate.admit(conn);
    if (decision === 'active') this.activate(conn, peer);
    else if (decision === 'queued') {
      this.log.info(
        { peer, position: this.gate.waitingCount },
        'connection queued until the current client leaves',
      );
    } else {
      this.log.warn(
        { peer, max: this.gate.maxWaiting },
        'connection refused: a client is active and the wait queue is full',
      );
    }
  }

  private activate(conn: native.Connection, peer?: { pid: number; uid: number }): void {
    const id = this.nextSessionId++;
    const session = this.track(conn, id, peer);
    this.log.info({ session: id, peer: this.activeInfo?.peer }, 'serving client');
    session.start();
    this.emit('connect', { session: id, peer: this.activeInfo?.peer } satisfies ConnectEvent);
  }

  /** Makes `conn` the active session (not started); when it ends, the next parked client is served. */
  private track(conn: native.Connection, id: number, peer?: { pid: number; uid: number }): Session {
    const session = new Session(conn, {
      id,
      device: this.o.device,
      dma: this.dma,
      irq: this.irq,
      log: this.log,
      offer: this.offer!,
      dmaTimeoutMs: this.o.dmaTimeoutMs ?? 5000,
      stats: this.stats,
      framing: this.o.framing,
      observers: this.observers,
      deviceName: this.o.deviceName,
      versionTimeoutMs: this.o.versionTimeoutMs,
    });
    this.active = session;
    if (!peer) {
      try {
        peer = conn.peerCredentials();
      } catch {
        peer = undefined;
      }
    }
    this.activeInfo = { session: id, peer, since: Date.now() };
    this.stats.connections++;
    void session.closed.then(() => {
      this.active = undefined;
      this.activeInfo = undefined;
      this.emit('disconnect', { session: id, reason: session.closeReason } satisfies DisconnectEvent);
      if (this.state !== 'running') return;
      const next = this.gate.release();
      if (next) this.activate(next);
    });
    return session;
  }

  // ---- hand-over hooks (server/src/handover/, docs/handover.md) -----------------------------------------------

  /** The parts of the running server a hand-over exports (fds borrowed). */
  handoverView(): ServerHandoverView {
    return {
      options: this.o,
      listener: this.listener,
      session: this.active,
      parked: this.gate.parked,
      offer: this.offer,
      nextSessionId: this.nextSessionId,
      running: this.state === 'running',
    };
  }

  /** Stops accepting connections during a hand-over (they wait in the backlog); resumeAccepting() undoes it. */
  pauseAccepting(): void {
    this.listener?.pause();
  }

  resumeAccepting(): void {
    this.listener?.resume();
  }

  /**
   * Instead of start(): takes over a previous process's server without touching the wire or the host IOMMU
   * (the backend attaches, the DMA regions are re-created and the host entries adopted as they are). Neither
   * reading nor accepting starts before adoptStart(). On failure the process must exit without close(): the
   * state still belongs to the previous process.
   */
  async adoptPrepare(a: ServerAdoption): Promise<void> {
    if (this.state !== 'new') throw new Error(`VfioUserServer.adoptPrepare() in state ${this.state}`);
    this.state = 'starting';
    this.facts = await this.mirror.attach();
    this.dma.configure({ pageSize: a.pageSize, maxMappings: a.maxMappings });
    a.restoreRegions(this.dma);
    await this.mirror.adopt(this.dma, a.hostEntries);
    this.offer = a.offer;
    Object.assign(this.stats, a.stats);
    this.nextSessionId = a.nextSessionId;
    let owned: { path: string; dev: bigint; ino: bigint } | undefined;
    if (a.socketPath) {
      const st = lstatSync(a.socketPath, { bigint: true, throwIfNoEntry: false });
      if (st?.isSocket()) owned = { path: a.socketPath, dev: st.dev, ino: st.ino };
    }
    this.listener = native.Listener.adopt(a.listenerFd, owned);
    this.adopting = a;
  }

  private adopting: ServerAdoption | undefined;

  /** Starts serving the adopted session (`restore`: its unprocessed input and the device resume), then accepts. */
  async adoptStart(restore?: SessionRestore): Promise<void> {
    const a = this.adopting;
    if (!a || this.state !== 'starting')
      throw new Error('VfioUserServer.adoptStart() without adoptPrepare()');
    this.adopting = undefined;
    this.state = 'running';
    if (a.session && restore) {
      const conn = native.Connection.fromFd(a.session.connFd);
      this.gate.admit(conn);
      const session = this.track(conn, a.session.id);
      this.stats.connections = a.stats.connections; // the previous process counted this client already
      await session.startRestored(restore);
    }
    for (const fd of a.parkedFds) this.onConnection(native.Connection.fromFd(fd));
    this.listener!.start(
      (conn) => this.onConnection(conn),
      (err) => this.log.error({ err }, 'accept failed'),
    );
  }

  /**
   * After a successful hand-over: the next process serves everything. Closes our copies of the sockets and IRQ
   * fds without any teardown the new owner would feel (no unmap, no device detach, the socket file stays).
   */
  abandon(): void {
    this.state = 'closed';
    this.active?.abandon();
    for (const c of this.gate.parked) c.close();
    try {
      this.listener?.close({ unlink: false });
    } catch (err) {
      this.log.warn({ err }, 'closing the listener failed');
    }
    this.irq.reset();
  }

  /** Stops listening, ends the current client, unmaps everything, closes the backend and the device. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const was = this.state;
    this.state = 'closing';
    try {
      this.listener?.close();
    } catch (err) {
      this.log.warn({ err }, 'closing the listener failed');
    }
    this.gate.closeWaiting();
    if (this.active) await this.active.close('server shutdown');
    if (was !== 'new') {
      await this.mirror.close();
      await this.dma.close();
    }
    try {
      this.o.device.close?.();
    } catch (err) {
      this.log.warn({ err }, 'device close threw');
    }
    this.state = 'closed';
    this.log.info('vfio-user server closed');
  }

  /** The host IOMMU facts (after start()). */
  get hostFacts(): HostFacts | undefined {
    return this.facts;
  }
}

/** fds kept free for everything but guest-memory files: sockets, IRQ eventfds, queued messages' fds, Node. */
export const FD_HEADROOM = 512;

/**
 * How many distinct guest-memory files the address space may hold (one fd each): the soft RLIMIT_NOFILE, first
 * raised to the hard limit, less FD_HEADROOM. Maps of a file already held cost no fd, so max_dma_maps (regions)
 * stays what the IOMMU backend and QEMU allow; a DMA_MAP past this budget fails with EMFILE (docs/hardening.md).
 */
function fileBudget(): number {
  let lim: native.NofileLimit;
  try {
    lim = native.nofileLimit();
    if (lim.soft !== lim.hard) lim = native.setNofileLimit(lim.hard === -1 ? 1 << 20 : lim.hard);
  } catch {
    return Number.POSITIVE_INFINITY;
  }
  return lim.soft === -1 ? Number.POSITIVE_INFINITY : Math.max(16, lim.soft - FD_HEADROOM);
}
