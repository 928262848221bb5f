// VfioUserClient: every vfio-user command from the client's side, typed and Promise-based, honouring the limits
// the server negotiated (max_msg_fds chunks SET_IRQS, max_data_xfer_size chunks region I/O), serving the
// server's DMA_READ/DMA_WRITE from the client's own memory the way QEMU does, and owning every fd it creates or
// receives until close().
import {
  Connection,
  closeFdsQuietly,
  MAP_SHARED,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from 'vfio-user-native';
import {
  Command,
  DEFAULT_MAX_DMA_MAPS,
  DeviceFeatureFlags,
  type DeviceFeatureReply,
  type DeviceGetInfoReply,
  DmaMapFlags,
  DmaUnmapFlags,
  decodeDeviceFeatureReply,
  decodeDeviceGetInfoReply,
  decodeDmaUnmapReply,
  decodeIrqInfoReply,
  decodeMigDataReadReply,
  decodeRegionInfoReply,
  decodeRegionIoFdsReply,
  decodeRegionReadReply,
  decodeRegionWriteMultiReply,
  decodeRegionWriteReply,
  Errno,
  encodeDeviceFeatureRequest,
  encodeDeviceGetInfoRequest,
  encodeDmaMapRequest,
  encodeDmaUnmapRequest,
  encodeIrqInfoRequest,
  encodeMigDataReadRequest,
  encodeMigDataWriteRequest,
  encodeRegionInfoRequest,
  encodeRegionIoFdsRequest,
  encodeRegionReadRequest,
  encodeRegionWriteMultiRequest,
  encodeRegionWriteRequest,
  encodeSetIrqsRequest,
  encodeVersionRequest,
  HEADER_SIZE,
  type IoFdSubRegion,
  type IrqInfoReply,
  judgeVersionReply,
  MsgFlags,
  type OmittedDefaults,
  PAGE_SIZE,
  ProtocolError,
  proposedCapabilities,
  type RegionCap,
  RegionCapId,
  RegionInfoFlags,
  type RegionWriteMultiEntry,
  type ServerCapabilities,
  SetIrqsFlags,
  twinSocketFdProblem,
  type VersionReplyRules,
  WRITE_MULTI_MAX_DATA,
} from 'vfio-user-protocol';
import { type CapabilitiesJson, defaultClientCapabilities } from './caps.js';
import {
  ClientConnection,
  type ConnectionOptions,
  type InboundMessage,
  type MessageTransport,
  type OutboundMessage,
  type RawReply,
  type RequestOptions,
  type Violation,
} from './connection.js';
import { type DmaHandler, type DmaLogEntry, DmaServer, type DmaStats } from './dma.js';
import { ConnectionClosedError, commandName, ProtocolViolationError, VfioUserError } from './errors.js';
import { IrqEventfd, IrqEventfds } from './irqs.js';
import type { DmaWindow, DmaWindows, GuestMemory } from './memory.js';

/**
 * Options of VfioUserClient.connect: limits the client announces, the handler for the server's DMA_READ/DMA_WRITE,
 * timeouts.
 */
export interface ClientOptions extends Omit<ConnectionOptions, 'onInbound' | 'onOutbound' | 'onViolation'> {
  /** The largest count we accept in the server's DMA_READ/WRITE; proposed as max_data_xfer_size. 1 MiB. */
  maxDataXferSize?: number;
  /** The most fds we accept per message; proposed as max_msg_fds. 16 (QEMU's). */
  maxMsgFds?: number;
  /** Serve the server's DMA_READ/DMA_WRITE with this instead of the registered GuestMemory windows. */
  dmaHandler?: DmaHandler;
  /** Keep a log of the last N server DMA requests (0 = none; default 10000). */
  dmaLogSize?: number;
  /** How to open the twin socket fd the server hands over (default: the native Connection). */
  transportFromFd?: (fd: number) => MessageTransport;
}

/**
 * What VfioUserClient.negotiate sends: protocol version, capabilities JSON (or raw bytes for conformance tests),
 * twin socket, QEMU's limits.
 */
export interface NegotiateOptions {
  /** Default 0. */
  major?: number;
  /** Default 0 (what QEMU proposes). */
  minor?: number;
  /**
   * The capabilities object to propose (spec key names; sent as {"capabilities": ...} plus a NUL), raw JSON bytes
   * sent as they are (add the NUL yourself), or null for no JSON at all. Default: QEMU's set with our limits.
   */
  capabilities?: CapabilitiesJson | Uint8Array | null;
  /** Offer twin_socket ({"supported": true}) and use the second socket if the server accepts. */
  twinSocket?: boolean;
  /** Also hold the reply to QEMU's limits (max_msg_fds <= 16, ..., reply no larger than the request). */
  qemuLimits?: boolean;
  /** Defaults for capabilities the server omits (spec: max_msg_fds 1; QEMU: 8). Default 'spec'. */
  omittedDefaults?: OmittedDefaults;
  timeoutMs?: number;
}

/**
 * The outcome of VERSION: the server's version and capabilities (defaults applied), the raw JSON and the warnings
 * about it.
 */
export interface NegotiateResult {
  major: number;
  minor: number;
  capabilities: ServerCapabilities;
  /** The capabilities object exactly as the server sent it. */
  raw: Record<string, unknown> | undefined;
  /** The JSON text (without its NUL), undefined when the reply had none. */
  json: string | undefined;
  warnings: string[];
  twinSocket: boolean;
  /** Size of the whole reply message. */
  replySize: number;
}

/** The server's VERSION reply broke the rules (problems lists each one). */
export class NegotiationError extends Error {
  readonly errno = Errno.EPROTO;
  readonly problems: string[];
  constructor(problems: string[]) {
    super(`VERSION negotiation failed: ${problems.join('; ')}`);
    this.name = 'NegotiationError';
    this.problems = problems;
  }
}

/** One DMA_MAP: the IOVA range, flags and the memory behind it (a GuestMemory, or a raw fd and offset). */
export interface DmaMapArgs {
  address: bigint;
  size: bigint;
  /** DmaMapFlags bits; default READ|WRITE. */
  flags?: number;
  /** File offset of `address` in fd (only meaningful with fd). */
  offset?: bigint;
  /** An fd to send (the caller keeps it unless transferFd). Omit for an fd-less map. */
  fd?: number;
  /** Close `fd` once it has been sent (the client takes ownership). */
  transferFd?: boolean;
  /** Serve the server's DMA_READ/WRITE in this window from this memory (at memoryOffset). */
  memory?: GuestMemory;
  memoryOffset?: number;
  /** argsz to send (default 32). */
  argsz?: number;
  timeoutMs?: number;
}

/** One DMA_UNMAP: the IOVA range and flags (e.g. UNMAP_ALL). */
export interface DmaUnmapArgs {
  address: bigint;
  size: bigint;
  /** DmaUnmapFlags bits. */
  flags?: number;
  /** argsz to send (default 24). */
  argsz?: number;
  timeoutMs?: number;
}

/** The DEVICE_GET_INFO reply: flags, region and IRQ counts. */
export type DeviceInfo = Required<DeviceGetInfoReply>;
/** The DEVICE_GET_IRQ_INFO reply for one IRQ index: flags and vector count. */
export type IrqInfo = Required<IrqInfoReply>;

/**
 * The DEVICE_GET_REGION_INFO reply for one region, with its capability chain decoded (sparse mmap areas, type) and
 * the fd when the region is mmap-able.
 */
export interface RegionInfo {
  index: number;
  /** argsz of the final reply (the size the full description needs). */
  argsz: number;
  flags: number;
  capOffset: number;
  size: bigint;
  offset: bigint;
  /** Known caps in chain order (protocol's RegionCap: sparse areas or type). */
  caps: RegionCap[];
  /** Areas of the SPARSE_MMAP cap (absent: no sparse cap). */
  sparseAreas?: { offset: bigint; size: bigint }[];
  /** The TYPE cap (device-specific regions). */
  type?: { type: number; subtype: number };
  /** The region fd sent with the reply (owned by the client until releaseRegionInfo() or close()). */
  fd?: number;
  /** GET_REGION_INFO round trips it took (2 when the caps did not fit the first budget). */
  roundTrips: number;
}

/** A region mmapped into this process (VfioUserClient.mapRegion); unmap() releases it. */
export interface RegionMapping {
  /** Offset within the region. */
  offset: bigint;
  size: number;
  buffer: ArrayBuffer;
  bytes: Uint8Array;
  unmap(): void;
}

/** One DEVICE_SET_IRQS: index, action and data flags, vector range, and the eventfds or booleans. */
export interface SetIrqsArgs {
  index: number;
  /** SetIrqsFlags: one DATA_* and one ACTION_*. */
  flags: number;
  start: number;
  count: number;
  /**
   * DATA_EVENTFD: one entry per vector, an fd or -1 (de-assign). Sent as QEMU does: runs of valid fds and runs of
   * -1, each at most the server's max_msg_fds long, one message per run. [] with count N de-assigns N vectors.
   */
  fds?: number[];
  /** DATA_BOOL: one boolean per vector. */
  bools?: boolean[];
  /** Send exactly one message with `fds` attached as they are (no chunking, no -1 handling). */
  raw?: boolean;
  /** argsz to send (default: the payload size). */
  argsz?: number;
  timeoutMs?: number;
}

/** Per-call options of region reads and writes. */
export interface RegionIoOptions {
  timeoutMs?: number;
}

/** One DEVICE_FEATURE: the feature, the GET/SET/PROBE operation and its data. */
export interface FeatureArgs {
  /** Feature index (bits 0-15). */
  feature: number;
  /** DeviceFeatureFlags GET/SET/PROBE bits (without the index). */
  ops: number;
  data?: Uint8Array;
  /** Reply budget (default 8 + data length; a GET needs room for what it returns). */
  argsz?: number;
  timeoutMs?: number;
}

/** The DEVICE_GET_REGION_IO_FDS reply: the ioeventfd/ioregionfd sub-regions and their fds. */
export interface RegionIoFdsResult {
  argsz: number;
  flags: number;
  count: number;
  subRegions: IoFdSubRegion[];
  /** The fds of the reply; the caller owns them. */
  fds: number[];
}

const RW = DmaMapFlags.READ | DmaMapFlags.WRITE;

function timeout(o: { timeoutMs?: number }, r: RequestOptions): RequestOptions {
  if (o.timeoutMs !== undefined) r.timeoutMs = o.timeoutMs;
  return r;
}

/**
 * A vfio-user client: connect, negotiate, DMA map/unmap, region info, I/O and mmap, IRQs with eventfds, reset,
 * device features and migration; serves the server's DMA_READ/DMA_WRITE from its own memory (docs/client.md).
 */
export class VfioUserClient {
  readonly conn: ClientConnection;
  /** Our receive limits (what we propose). */
  readonly maxDataXferSize: number;
  readonly maxMsgFds: number;
  /** The server's limits once negotiate() succeeded (the spec's defaults before). */
  serverCaps: ServerCapabilities = {
    maxMsgFds: 1,
    maxDataXferSize: 1048576,
    maxDmaMaps: DEFAULT_MAX_DMA_MAPS,
    pgsizes: PAGE_SIZE,
    writeMultiple: false,
    present: [],
  };
  /** Interrupt eventfds created by enableEventfds(). */
  readonly irqs = new IrqEventfds();

  private readonly dma: DmaServer;
  private readonly transportFromFd: (fd: number) => MessageTransport;
  private readonly inboundListeners = new Set<(m: InboundMessage) => void>();
  private readonly outboundListeners = new Set<(m: OutboundMessage) => void>();
  private readonly violationListeners = new Set<(v: Violation) => void>();
  private readonly regionFds = new Set<number>();
  private readonly mappings = new Set<RegionMapping>();

  constructor(transport: MessageTransport, opts: ClientOptions = {}) {
    this.maxDataXferSize = opts.maxDataXferSize ?? 1048576;
    this.maxMsgFds = opts.maxMsgFds ?? 16;
    this.transportFromFd = opts.transportFromFd ?? ((fd) => Connection.fromFd(fd));
    const connOpts: ConnectionOptions = {
      // Room for the largest server DMA_WRITE we accept and for region reads chunked to our limit (region info
      // replies with caps are far smaller).
      maxMessageSize: opts.maxMessageSize ?? Math.max(this.maxDataXferSize, 1048576) + 4096,
      onInbound: (m) => {
        for (const l of this.inboundListeners) l(m);
      },
      onOutbound: (m) => {
        for (const l of this.outboundListeners) l(m);
      },
      onViolation: (v) => {
        for (const l of this.violationListeners) l(v);
      },
    };
    if (opts.timeoutMs !== undefined) connOpts.timeoutMs = opts.timeoutMs;
    if (opts.strict !== undefined) connOpts.strict = opts.strict;
    this.conn = new ClientConnection(transport, connOpts);
    this.dma = new DmaServer(this.conn, this.maxDataXferSize, opts.dmaLogSize ?? 10000);
    this.dma.handler = opts.dmaHandler;
    this.conn.setServerRequestHandler((m) => this.dma.serve(m));
    // Whatever closes the connection (peer hang-up, violation), our resources go with it.
    void this.conn.whenClosed().then(() => this.releaseResources());
  }

  /** Connect to a server's UNIX socket. */
  static connect(path: string, opts: ClientOptions = {}): Promise<VfioUserClient> {
    try {
      return Promise.resolve(new VfioUserClient(Connection.connect(path), opts));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Use an already connected socket fd (the client owns it from now on). */
  static fromFd(fd: number, opts: ClientOptions = {}): VfioUserClient {
    return new VfioUserClient(Connection.fromFd(fd), opts);
  }

  /** Use an existing, not yet started native Connection (or any MessageTransport). */
  static fromConnection(c: MessageTransport, opts: ClientOptions = {}): VfioUserClient {
    return new VfioUserClient(c, opts);
  }

  // ------------------------------------------------------------------------------------------- observation

  /** Observe every inbound message before it is dispatched. Returns an unsubscribe function. */
  onInbound(fn: (m: InboundMessage) => void): () => void {
    this.inboundListeners.add(fn);
    return () => this.inboundListeners.delete(fn);
  }

  /** Observe every outbound message. Returns an unsubscribe function. */
  onOutbound(fn: (m: OutboundMessage) => void): () => void {
    this.outboundListeners.add(fn);
    return () => this.outboundListeners.delete(fn);
  }

  /** Observe protocol violations by the server (fatal or not). Returns an unsubscribe function. */
  onViolation(fn: (v: Violation) => void): () => void {
    this.violationListeners.add(fn);
    return () => this.violationListeners.delete(fn);
  }

  get violations(): readonly Violation[] {
    return this.conn.violations;
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  /** Resolves with the reason once the connection closes. */
  whenClosed(): Promise<Error> {
    return this.conn.whenClosed();
  }

  /** The DMA windows the client told the server about (what its DMA_READ/WRITE are served from). */
  get dmaWindows(): DmaWindows {
    return this.dma.windows;
  }

  /** Counters of the server's DMA_READ/DMA_WRITE requests. */
  get dmaStats(): DmaStats {
    return this.dma.stats;
  }

  /** The last dmaLogSize server DMA requests, oldest first. */
  get dmaLog(): readonly DmaLogEntry[] {
    return this.dma.log;
  }

  /**
   * Read guest memory at an IOVA through the client's own DMA windows (what the server's DMA reached), e.g. to
   * check what a device wrote. Throws RangeError where no window with memory covers the range.
   */
  guestRead(address: bigint, count: number): Uint8Array {
    const out = new Uint8Array(count);
    let at = 0;
    for (const p of this.guestPieces(address, count)) {
      out.set(p.w.memory!.read(p.w.memoryOffset + p.off, p.len), at);
      at += p.len;
    }
    return out;
  }

  /** Write guest memory at an IOVA through the client's own DMA windows. */
  guestWrite(address: bigint, data: Uint8Array): void {
    let at = 0;
    for (const p of this.guestPieces(address, data.length)) {
      p.w.memory!.write(p.w.memoryOffset + p.off, data.subarray(at, at + p.len));
      at += p.len;
    }
  }

  private guestPieces(address: bigint, count: number) {
    const pieces = this.dma.windows.resolve(address, count);
    if (!pieces || pieces.some((p) => !p.w.memory)) {
      throw new RangeError(`IOVA 0x${address.toString(16)}+${count} is not backed by client memory`);
    }
    return pieces;
  }

  /** Replace the DMA handler (undefined: serve from the registered GuestMemory windows). */
  setDmaHandler(h: DmaHandler | undefined): void {
    this.dma.handler = h;
  }

  // ------------------------------------------------------------------------------------------- low level

  /** Send bytes as they are (no reply is awaited). */
  sendRaw(bytes: Uint8Array, fds: number[] = [], channel: 'main' | 'twin' = 'main'): boolean {
    return this.conn.sendRaw(bytes, fds, channel);
  }

  /**
   * Send a command and return the reply as it came (error replies included: header.error holds the errno).
   * With noReply the message carries NO_REPLY and the promise resolves with null once it is sent.
   */
  request(command: number, payload: Uint8Array, opts: RequestOptions & { noReply: true }): Promise<null>;
  request(
    command: number,
    payload: Uint8Array,
    opts?: RequestOptions & { noReply?: false },
  ): Promise<RawReply>;
  request(
    command: number,
    payload: Uint8Array,
    opts: RequestOptions & { noReply?: boolean } = {},
  ): Promise<RawReply | null> {
    if (opts.noReply) {
      try {
        this.conn.post(command, payload, opts);
        return Promise.resolve(null);
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return this.conn.request(command, payload, opts);
  }

  /** request() that throws VfioUserError on an error reply. */
  private async call(command: Command, payload: Uint8Array, opts: RequestOptions): Promise<RawReply> {
    const r = await this.conn.request(command, payload, opts);
    if (r.header.flags & MsgFlags.ERROR) {
      closeFdsQuietly(r.fds);
      throw new VfioUserError(r.header.error, command);
    }
    return r;
  }

  /** Decode a reply body with the protocol codec; a malformed one fails this call (not the connection). */
  private decode<T>(command: Command, r: RawReply, decoder: (p: Uint8Array, fdCount: number) => T): T {
    try {
      return decoder(r.payload, r.fds.length);
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      closeFdsQuietly(r.fds);
      return this.badReply(command, e.detail);
    }
  }

  private badReply(command: number, message: string): never {
    this.conn.note('bad-reply', `${commandName(command)}: ${message}`);
    throw new ProtocolViolationError('bad-reply', `${commandName(command)}: ${message}`);
  }

  // ------------------------------------------------------------------------------------------- VERSION

  /** VERSION: propose a version and capabilities; adopt the server's limits. */
  async negotiate(opts: NegotiateOptions = {}): Promise<NegotiateResult> {
    const major = opts.major ?? 0;
    const minor = opts.minor ?? 0;
    let json: Uint8Array | undefined;
    let proposed: Record<string, unknown> | undefined;
    if (opts.capabilities instanceof Uint8Array) {
      json = opts.capabilities;
      proposed = proposedCapabilities(json);
    } else if (opts.capabilities !== null) {
      const caps: CapabilitiesJson = {
        ...(opts.capabilities ?? defaultClientCapabilities(this.maxMsgFds, this.maxDataXferSize)),
      };
      if (opts.twinSocket) caps.twin_socket = { supported: true };
      proposed = caps;
      json = new TextEncoder().encode(`${JSON.stringify({ capabilities: caps })}\0`);
    }
    // What we tell the server bounds what it may send us (and what we must be able to receive).
    const ours = proposed?.max_data_xfer_size;
    if (typeof ours === 'number' && Number.isSafeInteger(ours) && ours > 0) {
      this.dma.maxDataXferSize = ours;
      if (ours > this.maxDataXferSize) this.conn.setMaxMessageSize(ours + 4096);
    }
    const payload = encodeVersionRequest(json ? { major, minor, capabilities: json } : { major, minor });
    // Only a twin-socket reply may carry an fd.
    const ro = timeout(opts, { maxReplyFds: opts.twinSocket ? Math.max(1, this.maxMsgFds) : 0 });
    if (opts.qemuLimits) ro.maxReplySize = HEADER_SIZE + payload.length;
    const r = await this.call(Command.VERSION, payload, ro);
    const rules: VersionReplyRules = {};
    if (opts.qemuLimits) rules.qemuLimits = true;
    if (opts.omittedDefaults) rules.omittedDefaults = opts.omittedDefaults;
    const check = judgeVersionReply(r.payload, { major, minor, caps: proposed }, rules);
    const fds = [...r.fds];
    const tw = check.capabilities.twinSocket;
    let twin = false;
    if (check.errors.length === 0 && tw?.supported) {
      if (opts.twinSocket) twin = this.adoptTwinSocket(tw, fds);
      else check.errors.push('twin_socket enabled although not offered');
    }
    closeFdsQuietly(fds);
    if (check.errors.length) throw new NegotiationError(check.errors);
    this.serverCaps = check.capabilities;
    return {
      major: check.major,
      minor: check.minor,
      capabilities: check.capabilities,
      raw: check.raw,
      json: check.json,
      warnings: check.warnings,
      twinSocket: twin,
      replySize: r.header.size,
    };
  }

  /** Attach the reply's twin socket (taken out of `fds`); a fd_index naming no fd closes the connection (spec). */
  private adoptTwinSocket(tw: { supported: boolean; fdIndex?: number }, fds: number[]): true {
    const problem = twinSocketFdProblem(tw, fds.length);
    const i = tw.fdIndex;
    if (problem !== undefined || i === undefined) {
      closeFdsQuietly(fds);
      const err = new NegotiationError([problem ?? 'twin_socket without fd_index']);
      this.conn.close(new ConnectionClosedError('twin_socket reply without a usable fd', err));
      throw err;
    }
    const [fd] = fds.splice(i, 1);
    try {
      this.conn.attachTwin(this.transportFromFd(fd!));
    } catch (e) {
      closeFdsQuietly([fd!, ...fds]);
      throw e;
    }
    return true;
  }

  // ------------------------------------------------------------------------------------------- DMA maps

  /** DMA_MAP. With `memory`, the window is served from that memory when the server sends DMA_READ/WRITE. */
  async dmaMap(a: DmaMapArgs): Promise<DmaWindow> {
    const flags = a.flags ?? RW;
    const fds = a.fd !== undefined ? [a.fd] : [];
    const req: Parameters<typeof encodeDmaMapRequest>[0] = {
      flags,
      offset: a.offset ?? 0n,
      address: a.address,
      size: a.size,
    };
    if (a.argsz !== undefined) req.argsz = a.argsz;
    const payload = encodeDmaMapRequest(req);
    let p: Promise<RawReply>;
    try {
      p = this.call(
        Command.DMA_MAP,
        payload,
        timeout(a, { fds, maxReplySize: HEADER_SIZE + 32, maxReplyFds: 0 }),
      );
    } finally {
      // The native layer has sent the fd (or queued a dup of it) by now.
      if (a.transferFd && a.fd !== undefined) closeFdsQuietly([a.fd]);
    }
    await p;
    const w: DmaWindow = {
      address: a.address,
      size: a.size,
      flags,
      withFd: a.fd !== undefined,
      memoryOffset: a.memoryOffset ?? 0,
    };
    if (a.memory) w.memory = a.memory;
    this.dma.windows.add(w);
    return w;
  }

  /**
   * Map `memory` (size bytes from memoryOffset) at IOVA `address`. withFd (default true) sends its memfd, so the
   * server can mmap it; false makes an fd-less map, which the server reaches only with DMA_READ/WRITE messages.
   */
  mapMemory(
    memory: GuestMemory,
    o: {
      address: bigint;
      memoryOffset?: number;
      size?: number;
      flags?: number;
      withFd?: boolean;
      timeoutMs?: number;
    },
  ): Promise<DmaWindow> {
    const memoryOffset = o.memoryOffset ?? 0;
    const size = o.size ?? memory.size - memoryOffset;
    if (memoryOffset < 0 || size <= 0 || memoryOffset + size > memory.size) {
      return Promise.reject(new RangeError(`window ${memoryOffset}+${size} is outside ${memory.size} bytes`));
    }
    const args: DmaMapArgs = {
      address: o.address,
      size: BigInt(size),
      flags: o.flags ?? RW,
      memory,
      memoryOffset,
    };
    if (o.withFd !== false) {
      args.fd = memory.fd;
      args.offset = BigInt(memoryOffset);
    }
    if (o.timeoutMs !== undefined) args.timeoutMs = o.timeoutMs;
    return this.dmaMap(args);
  }

  /** DMA_UNMAP (ALL: address 0, size 0). Returns the echoed payload, or undefined for a header-only reply. */
  async dmaUnmap(
    a: DmaUnmapArgs,
  ): Promise<{ argsz: number; flags: number; address: bigint; size: bigint } | undefined> {
    const flags = a.flags ?? 0;
    const req: Parameters<typeof encodeDmaUnmapRequest>[0] = { flags, address: a.address, size: a.size };
    if (a.argsz !== undefined) req.argsz = a.argsz;
    const r = await this.call(
      Command.DMA_UNMAP,
      encodeDmaUnmapRequest(req),
      timeout(a, { maxReplySize: HEADER_SIZE + 24, maxReplyFds: 0 }),
    );
    if (flags & DmaUnmapFlags.ALL) this.dma.windows.clear();
    else this.dma.windows.removeRange(a.address, a.size);
    const echo = this.decode(Command.DMA_UNMAP, r, decodeDmaUnmapReply);
    if (!('address' in echo)) return undefined;
    return { argsz: echo.argsz, flags: echo.flags, address: echo.address, size: echo.size };
  }

  // ------------------------------------------------------------------------------------------- device info

  async getDeviceInfo(opts: { argsz?: number; timeoutMs?: number } = {}): Promise<DeviceInfo> {
    const req = opts.argsz === undefined ? {} : { argsz: opts.argsz };
    const r = await this.call(
      Command.DEVICE_GET_INFO,
      encodeDeviceGetInfoRequest(req),
      timeout(opts, { maxReplySize: HEADER_SIZE + 16, maxReplyFds: 0 }),
    );
    const v = this.decode(Command.DEVICE_GET_INFO, r, decodeDeviceGetInfoReply);
    return { argsz: v.argsz ?? 16, flags: v.flags, numRegions: v.numRegions, numIrqs: v.numIrqs };
  }

  /**
   * GET_REGION_INFO as QEMU does it: ask with argsz 32 (or opts.argsz); if the reply needs more, ask again with
   * the argsz it announced. Returns the parsed caps and the region fd (if any).
   */
  async getRegionInfo(index: number, opts: { argsz?: number; timeoutMs?: number } = {}): Promise<RegionInfo> {
    let argsz = opts.argsz ?? 32;
    for (let round = 1; ; round++) {
      const r = await this.call(
        Command.DEVICE_GET_REGION_INFO,
        encodeRegionInfoRequest({ argsz, index }),
        timeout(opts, { maxReplySize: HEADER_SIZE + argsz, maxReplyFds: 1 }),
      );
      const v = this.decode(Command.DEVICE_GET_REGION_INFO, r, decodeRegionInfoReply);
      if (v.argsz > argsz && round === 1) {
        // The description did not fit: drop this reply (and any fd it carried) and ask for the full size.
        closeFdsQuietly(r.fds);
        argsz = v.argsz;
        continue;
      }
      if (v.index !== index) {
        closeFdsQuietly(r.fds);
        this.badReply(Command.DEVICE_GET_REGION_INFO, `reply is for region ${v.index}, asked ${index}`);
      }
      if (r.payload.length > argsz) {
        closeFdsQuietly(r.fds);
        this.badReply(
          Command.DEVICE_GET_REGION_INFO,
          `reply of ${r.payload.length} bytes exceeds argsz ${argsz}`,
        );
      }
      const info: RegionInfo = {
        index,
        argsz: v.argsz,
        flags: v.flags,
        capOffset: v.capOffset,
        size: v.size,
        offset: v.offset,
        caps: v.caps,
        roundTrips: round,
      };
      for (const c of v.caps) {
        if (c.id === RegionCapId.SPARSE_MMAP) info.sparseAreas = c.areas;
        else if (c.id === RegionCapId.TYPE) info.type = { type: c.type, subtype: c.subtype };
      }
      if (r.fds.length > 0) {
        info.fd = r.fds[0]!;
        this.regionFds.add(info.fd);
      }
      return info;
    }
  }

  /** Close the fd a RegionInfo carried now (otherwise close() does). */
  releaseRegionInfo(info: RegionInfo): void {
    if (info.fd !== undefined && this.regionFds.delete(info.fd)) closeFdsQuietly([info.fd]);
    delete info.fd;
  }

  /**
   * mmap a region, or one of its sparse areas, through the fd GET_REGION_INFO returned, as QEMU does: MAP_SHARED
   * at info.offset + area.offset. JS can only use readable mappings, so PROT_READ is always set (plus WRITE when
   * the region allows it); writing into the view of a read-only region faults the process.
   */
  mmapRegion(info: RegionInfo, area?: { offset: bigint; size: bigint }): RegionMapping {
    if (info.fd === undefined) throw new Error(`region ${info.index} came without an fd`);
    if (!(info.flags & RegionInfoFlags.MMAP))
      throw new Error(`region ${info.index} is not mappable (no MMAP flag)`);
    const a = area ?? { offset: 0n, size: info.size };
    if (a.size === 0n || a.offset + a.size > info.size) throw new RangeError('area is outside the region');
    const prot = PROT_READ | (info.flags & RegionInfoFlags.WRITE ? PROT_WRITE : 0);
    const buffer = mmap(info.fd, info.offset + a.offset, Number(a.size), prot, MAP_SHARED);
    const m: RegionMapping = {
      offset: a.offset,
      size: Number(a.size),
      buffer,
      bytes: new Uint8Array(buffer),
      unmap: () => {
        if (this.mappings.delete(m)) munmap(buffer);
      },
    };
    this.mappings.add(m);
    return m;
  }

  // ------------------------------------------------------------------------------------------- IRQs

  async getIrqInfo(index: number, opts: { argsz?: number; timeoutMs?: number } = {}): Promise<IrqInfo> {
    const req = opts.argsz === undefined ? { index } : { index, argsz: opts.argsz };
    const r = await this.call(
      Command.DEVICE_GET_IRQ_INFO,
      encodeIrqInfoRequest(req),
      timeout(opts, { maxReplySize: HEADER_SIZE + 16, maxReplyFds: 0 }),
    );
    const v = this.decode(Command.DEVICE_GET_IRQ_INFO, r, decodeIrqInfoReply);
    return { argsz: v.argsz ?? 16, flags: v.flags, index: v.index, count: v.count };
  }

  /**
   * DEVICE_SET_IRQS. DATA_EVENTFD fds are chunked as QEMU does (see SetIrqsArgs.fds); the messages are pipelined
   * and this resolves when every one has been answered. Returns the number of messages sent.
   */
  async setIrqs(a: SetIrqsArgs): Promise<number> {
    const send = (start: number, count: number, fds: number[], data?: Uint8Array) => {
      const req: Parameters<typeof encodeSetIrqsRequest>[0] = {
        flags: a.flags,
        index: a.index,
        start,
        count,
      };
      if (data) req.data = data;
      if (a.argsz !== undefined) req.argsz = a.argsz;
      const payload = encodeSetIrqsRequest(req);
      // QEMU reads the reply into the request's buffer.
      return this.call(
        Command.DEVICE_SET_IRQS,
        payload,
        timeout(a, { fds, maxReplySize: HEADER_SIZE + payload.length, maxReplyFds: 0 }),
      );
    };
    const fds = a.fds ?? [];
    if (a.bools) {
      await send(
        a.start,
        a.count,
        fds,
        Uint8Array.from(a.bools, (b) => (b ? 1 : 0)),
      );
      return 1;
    }
    if (a.raw || !(a.flags & SetIrqsFlags.DATA_EVENTFD) || fds.length === 0) {
      await send(a.start, a.count, a.raw ? fds : fds.filter((fd) => fd >= 0));
      return 1;
    }
    if (fds.length !== a.count) throw new RangeError(`SET_IRQS count ${a.count} but ${fds.length} fds`);
    const max = this.serverCaps.maxMsgFds;
    if (max === 0 && fds.some((fd) => fd >= 0)) {
      throw new VfioUserError(
        Errno.EINVAL,
        Command.DEVICE_SET_IRQS,
        'the server accepts no fds (max_msg_fds 0)',
      );
    }
    // As QEMU: runs of valid fds and runs of -1, each at most max_msg_fds long, one message per run.
    const runs: { start: number; fds: number[]; valid: boolean }[] = [];
    for (let i = 0; i < fds.length; i++) {
      const fd = fds[i]!;
      const valid = fd >= 0;
      const last = runs[runs.length - 1];
      if (last && last.valid === valid && last.fds.length < Math.max(max, 1)) last.fds.push(fd);
      else runs.push({ start: a.start + i, fds: [fd], valid });
    }
    await settleAll(runs.map((r) => send(r.start, r.fds.length, r.valid ? r.fds : []).then(() => undefined)));
    return runs.length;
  }

  /**
   * Give vectors start.. of IRQ `index` eventfds the client creates and watches (ACTION_TRIGGER). `vectors` is a
   * count of new eventfds, or per vector: true = a new eventfd, false or -1 = de-assign, a number >= 0 = the
   * caller's own fd (sent, not watched). Returns the watched eventfds (undefined where none).
   */
  async enableEventfds(
    index: number,
    start: number,
    vectors: number | (boolean | number)[],
    opts: { timeoutMs?: number } = {},
  ): Promise<(IrqEventfd | undefined)[]> {
    const spec = typeof vectors === 'number' ? new Array<boolean | number>(vectors).fill(true) : vectors;
    const created: (IrqEventfd | undefined)[] = [];
    const fds: number[] = [];
    try {
      for (let i = 0; i < spec.length; i++) {
        const s = spec[i]!;
        if (s === true) {
          const e = new IrqEventfd(index, start + i);
          created.push(e);
          fds.push(e.fd);
        } else {
          created.push(undefined);
          fds.push(s === false ? -1 : s);
        }
      }
      const args: SetIrqsArgs = {
        index,
        flags: SetIrqsFlags.DATA_EVENTFD | SetIrqsFlags.ACTION_TRIGGER,
        start,
        count: spec.length,
        fds,
      };
      if (opts.timeoutMs !== undefined) args.timeoutMs = opts.timeoutMs;
      await this.setIrqs(args);
    } catch (e) {
      for (const c of created) c?.close();
      throw e;
    }
    // The server holds its own copies now; ours replace whatever we had on those vectors.
    for (let i = 0; i < spec.length; i++) {
      const c = created[i];
      if (c) this.irqs.adopt(c);
      else this.irqs.release(index, start + i);
    }
    return created;
  }

  /** SET_IRQS DATA_NONE|TRIGGER start 0 count 0: disable every vector of the index and close our eventfds. */
  async disableIrqs(index: number, opts: { timeoutMs?: number } = {}): Promise<void> {
    const flags = SetIrqsFlags.DATA_NONE | SetIrqsFlags.ACTION_TRIGGER;
    await this.setIrqs(timeoutArgs(opts, { index, flags, start: 0, count: 0 }));
    this.irqs.releaseAll(index);
  }

  /** SET_IRQS DATA_NONE|ACTION_MASK (or UNMASK) for vectors start..start+count-1. */
  async maskIrqs(index: number, start: number, count: number, mask = true): Promise<void> {
    const action = mask ? SetIrqsFlags.ACTION_MASK : SetIrqsFlags.ACTION_UNMASK;
    await this.setIrqs({ index, flags: SetIrqsFlags.DATA_NONE | action, start, count });
  }

  unmaskIrqs(index: number, start: number, count: number): Promise<void> {
    return this.maskIrqs(index, start, count, false);
  }

  /** SET_IRQS DATA_NONE|ACTION_TRIGGER: ask the server to fire vectors (loopback). */
  async triggerIrqs(index: number, start: number, count: number): Promise<void> {
    await this.setIrqs({ index, flags: SetIrqsFlags.DATA_NONE | SetIrqsFlags.ACTION_TRIGGER, start, count });
  }

  // ------------------------------------------------------------------------------------------- region I/O

  /** The largest count per REGION_READ/WRITE message: the server's limit, and what we accept back. */
  get regionChunkSize(): number {
    return Math.max(1, Math.min(this.serverCaps.maxDataXferSize, this.dma.maxDataXferSize));
  }

  /** REGION_READ, chunked by the server's max_data_xfer_size; the chunks are pipelined. */
  async regionRead(
    index: number,
    offset: bigint,
    count: number,
    opts: RegionIoOptions = {},
  ): Promise<Uint8Array> {
    const chunk = this.regionChunkSize;
    const out = new Uint8Array(count);
    const parts: Promise<void>[] = [];
    let done = 0;
    do {
      const n = Math.min(chunk, count - done);
      const off = offset + BigInt(done);
      const at = done;
      const ro = timeout(opts, { maxReplySize: HEADER_SIZE + 16 + n, maxReplyFds: 0 });
      const p = this.call(
        Command.REGION_READ,
        encodeRegionReadRequest({ offset: off, region: index, count: n }),
        ro,
      );
      parts.push(
        p.then((r) => {
          const v = this.decode(Command.REGION_READ, r, (pl, fdc) =>
            decodeRegionReadReply(pl, fdc, { maxDataXferSize: 0xffffffff }),
          );
          if (v.data.length > n) {
            throw new VfioUserError(
              Errno.E2BIG,
              Command.REGION_READ,
              `REGION_READ reply count ${v.data.length} > ${n}`,
            );
          }
          if (v.data.length !== n)
            this.badReply(Command.REGION_READ, `short read: ${v.data.length} of ${n} bytes`);
          if (n > 0 && (v.offset !== off || v.region !== index)) {
            this.badReply(Command.REGION_READ, 'reply does not echo the offset/region');
          }
          out.set(v.data, at);
        }),
      );
      done += n;
    } while (done < count);
    await settleAll(parts);
    return out;
  }

  /**
   * REGION_WRITE, chunked like regionRead. posted: NO_REPLY on every chunk, resolving once sent (a later read
   * observes it because the server processes commands in order).
   */
  async regionWrite(
    index: number,
    offset: bigint,
    data: Uint8Array,
    opts: RegionIoOptions & { posted?: boolean } = {},
  ): Promise<void> {
    const chunk = this.regionChunkSize;
    const parts: Promise<void>[] = [];
    let done = 0;
    do {
      const piece = data.subarray(done, Math.min(done + chunk, data.length));
      const off = offset + BigInt(done);
      const payload = encodeRegionWriteRequest({ offset: off, region: index, data: piece });
      if (opts.posted) {
        this.conn.post(Command.REGION_WRITE, payload);
      } else {
        const ro = timeout(opts, { maxReplySize: HEADER_SIZE + payload.length, maxReplyFds: 0 });
        parts.push(
          this.call(Command.REGION_WRITE, payload, ro).then((r) => {
            const v = this.decode(Command.REGION_WRITE, r, decodeRegionWriteReply);
            if (v.count !== piece.length)
              this.badReply(Command.REGION_WRITE, `reply count ${v.count} != ${piece.length}`);
          }),
        );
      }
      done += piece.length;
    } while (done < data.length);
    await settleAll(parts);
  }

  /**
   * REGION_WRITE_MULTI (each write 1..8 bytes). QEMU always posts it (NO_REPLY, the default here); with
   * noReply false the reply's wr_cnt is returned. Refused unless the server offered write_multiple (or force).
   */
  async regionWriteMulti(
    writes: RegionWriteMultiEntry[],
    opts: { noReply?: boolean; force?: boolean; timeoutMs?: number } = {},
  ): Promise<number | undefined> {
    if (!this.serverCaps.writeMultiple && !opts.force) {
      throw new VfioUserError(
        Errno.EINVAL,
        Command.REGION_WRITE_MULTI,
        'the server did not offer write_multiple',
      );
    }
    for (const w of writes) {
      if (w.data.length < 1 || w.data.length > WRITE_MULTI_MAX_DATA) {
        throw new RangeError('REGION_WRITE_MULTI writes are 1..8 bytes');
      }
    }
    const payload = encodeRegionWriteMultiRequest({ writes });
    if (opts.noReply !== false) {
      this.conn.post(Command.REGION_WRITE_MULTI, payload);
      return undefined;
    }
    const r = await this.call(Command.REGION_WRITE_MULTI, payload, timeout(opts, { maxReplyFds: 0 }));
    return this.decode(Command.REGION_WRITE_MULTI, r, decodeRegionWriteMultiReply).count;
  }

  // ------------------------------------------------------------------------------------------- reset, features

  async reset(opts: { timeoutMs?: number } = {}): Promise<void> {
    await this.call(
      Command.DEVICE_RESET,
      new Uint8Array(0),
      timeout(opts, { maxReplySize: HEADER_SIZE, maxReplyFds: 0 }),
    );
  }

  /** DEVICE_FEATURE. Returns the reply's argsz, flags and data. */
  async deviceFeature(a: FeatureArgs): Promise<DeviceFeatureReply> {
    const data = a.data ?? new Uint8Array(0);
    const argsz = a.argsz ?? 8 + data.length;
    const flags = (a.feature & DeviceFeatureFlags.MASK) | a.ops;
    const ro = timeout(a, { maxReplySize: HEADER_SIZE + Math.max(argsz, 8 + data.length), maxReplyFds: 0 });
    const r = await this.call(Command.DEVICE_FEATURE, encodeDeviceFeatureRequest({ argsz, flags, data }), ro);
    const v = this.decode(Command.DEVICE_FEATURE, r, decodeDeviceFeatureReply);
    return { argsz: v.argsz, flags: v.flags, data: new Uint8Array(v.data) };
  }

  /** MIG_DATA_READ of up to `size` bytes; a shorter answer means no more data for now. */
  async migDataRead(size: number, opts: { argsz?: number; timeoutMs?: number } = {}): Promise<Uint8Array> {
    const req = opts.argsz === undefined ? { size } : { size, argsz: opts.argsz };
    const r = await this.call(
      Command.MIG_DATA_READ,
      encodeMigDataReadRequest(req),
      timeout(opts, { maxReplySize: HEADER_SIZE + 8 + size, maxReplyFds: 0 }),
    );
    const v = this.decode(Command.MIG_DATA_READ, r, (p, fdc) =>
      decodeMigDataReadReply(p, fdc, { maxDataXferSize: Math.max(size, 1) }),
    );
    return new Uint8Array(v.data);
  }

  async migDataWrite(data: Uint8Array, opts: { argsz?: number; timeoutMs?: number } = {}): Promise<void> {
    const req = opts.argsz === undefined ? { data } : { data, argsz: opts.argsz };
    await this.call(
      Command.MIG_DATA_WRITE,
      encodeMigDataWriteRequest(req),
      timeout(opts, { maxReplySize: HEADER_SIZE, maxReplyFds: 0 }),
    );
  }

  /** DEVICE_GET_REGION_IO_FDS (argsz two-phase like region info). The returned fds belong to the caller. */
  async getRegionIoFds(
    index: number,
    opts: { argsz?: number; timeoutMs?: number } = {},
  ): Promise<RegionIoFdsResult> {
    let argsz = opts.argsz ?? 16;
    for (let round = 1; ; round++) {
      const r = await this.call(
        Command.DEVICE_GET_REGION_IO_FDS,
        encodeRegionIoFdsRequest({ argsz, index }),
        timeout(opts, { maxReplySize: HEADER_SIZE + argsz }),
      );
      const v = this.decode(Command.DEVICE_GET_REGION_IO_FDS, r, decodeRegionIoFdsReply);
      if (v.argsz > argsz && round === 1 && v.subRegions.length < v.count) {
        closeFdsQuietly(r.fds);
        argsz = v.argsz;
        continue;
      }
      return { argsz: v.argsz, flags: v.flags, count: v.count, subRegions: v.subRegions, fds: r.fds };
    }
  }

  // ------------------------------------------------------------------------------------------- teardown

  /** Resources the client owns right now (for leak checks). */
  get ownedResources(): { regionFds: number; mappings: number; irqEventfds: number } {
    return { regionFds: this.regionFds.size, mappings: this.mappings.size, irqEventfds: this.irqs.openCount };
  }

  private releaseResources(): void {
    for (const m of [...this.mappings]) {
      try {
        m.unmap();
      } catch {
        // already unmapped
      }
    }
    closeFdsQuietly([...this.regionFds]);
    this.regionFds.clear();
    this.irqs.releaseAll();
    this.dma.windows.clear();
  }

  /**
   * Close the connection: pending requests reject with ConnectionClosedError; region fds, region mappings and
   * IRQ eventfds the client created are released. GuestMemory objects belong to the caller.
   */
  close(): void {
    this.conn.close();
    this.releaseResources();
  }
}

function timeoutArgs<T extends object>(o: { timeoutMs?: number }, a: T): T & { timeoutMs?: number } {
  return o.timeoutMs === undefined ? a : { ...a, timeoutMs: o.timeoutMs };
}

/** Wait for every part; then reject with the first failure (so no rejection goes unhandled). */
async function settleAll(parts: Promise<void>[]): Promise<void> {
  const rs = await Promise.allSettled(parts);
  for (const r of rs) if (r.status === 'rejected') throw r.reason;
}
