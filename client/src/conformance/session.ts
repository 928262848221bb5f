// A negotiated connection plus typed helpers for well-formed requests. Cases that need malformed input build it
// with wire.ts and send it through `s.conn` directly.

import { DEFAULT_MAX_DMA_MAPS, errnoName, QEMU_VERSION_JSON } from 'vfio-user-protocol';
import { type CallOptions, Conn, closeFds, expectErrorShape, expectOk, fail, type Msg } from './conn.js';
import type { NativeApi } from './native.js';
import {
  Cmd,
  type DeviceInfo,
  type DmaMapArgs,
  type DmaUnmapArgs,
  dmaMapPayload,
  dmaUnmapPayload,
  Flag,
  featurePayload,
  getInfoPayload,
  hex,
  type IrqInfo,
  irqInfoPayload,
  parseDeviceInfo,
  parseIrqInfo,
  parseRegionInfo,
  parseVersion,
  type RegionInfo,
  regionAccessPayload,
  regionInfoPayload,
  type SetIrqsArgs,
  setIrqsPayload,
  versionPayload,
} from './wire.js';

/** The server's limits, with the spec's defaults for absent keys. */
export interface ServerCaps {
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: bigint;
  maxDmaMaps: number;
  migration: { pgsize?: number; max_bitmap_size?: number } | null;
  writeMultiple: boolean;
  twinSocket: { supported?: boolean; fd_index?: number } | null;
  raw: Record<string, unknown>;
}

export function serverCapsFrom(json: unknown): ServerCaps {
  const caps =
    json && typeof json === 'object' && 'capabilities' in json
      ? ((json as { capabilities: unknown }).capabilities as Record<string, unknown>)
      : {};
  const c = caps && typeof caps === 'object' ? caps : {};
  const num = (k: string, d: number) => (typeof c[k] === 'number' ? (c[k] as number) : d);
  return {
    maxMsgFds: num('max_msg_fds', 1),
    maxDataXferSize: num('max_data_xfer_size', 1 << 20),
    pgsizes: BigInt(num('pgsizes', 4096)),
    maxDmaMaps: num('max_dma_maps', DEFAULT_MAX_DMA_MAPS),
    migration:
      c.migration && typeof c.migration === 'object' ? (c.migration as ServerCaps['migration']) : null,
    writeMultiple: c.write_multiple === true,
    twinSocket:
      c.twin_socket && typeof c.twin_socket === 'object' ? (c.twin_socket as ServerCaps['twinSocket']) : null,
    raw: c as Record<string, unknown>,
  };
}

export interface VersionOptions {
  major?: number;
  minor?: number;
  /** JSON body (NUL appended); null = no JSON at all. Default: QEMU 11.1's request. */
  json?: string | null;
  fds?: number[];
}

export interface VersionResult {
  reply: Msg;
  major: number;
  minor: number;
  rawJson: string | null;
  json: unknown;
  jsonError?: string;
  caps: ServerCaps;
}

/** Our max_data_xfer_size as stated in a VERSION JSON (1 MiB when absent). */
function clientMaxXferOf(json: string | null | undefined): number {
  if (!json) return 1 << 20;
  try {
    const v = JSON.parse(json)?.capabilities?.max_data_xfer_size;
    return typeof v === 'number' ? v : 1 << 20;
  } catch {
    return 1 << 20;
  }
}

export class Session {
  constructor(
    readonly conn: Conn,
    readonly version: VersionResult,
  ) {}

  get caps(): ServerCaps {
    return this.version.caps;
  }

  call(cmd: number, payload?: Uint8Array, o?: CallOptions): Promise<Msg> {
    return this.conn.call(cmd, payload, o);
  }

  getInfo(argsz = 16): Promise<Msg> {
    return this.call(Cmd.DEVICE_GET_INFO, getInfoPayload(argsz));
  }

  async info(): Promise<DeviceInfo> {
    const p = expectOk(await this.getInfo(), 'DEVICE_GET_INFO');
    if (p.length < 16) fail(`DEVICE_GET_INFO reply payload ${p.length} bytes`);
    return parseDeviceInfo(p);
  }

  regionInfoMsg(index: number, argsz = 32): Promise<Msg> {
    return this.call(Cmd.DEVICE_GET_REGION_INFO, regionInfoPayload(index, argsz));
  }

  /** Region info with its caps (asks again with the argsz the server needs). Closes received fds unless kept. */
  async regionInfo(index: number, keepFds = false): Promise<{ info: RegionInfo; fds: number[]; first: Msg }> {
    const first = await this.regionInfoMsg(index, 32);
    const p = expectOk(first, `GET_REGION_INFO ${index}`);
    if (p.length < 32) fail(`GET_REGION_INFO ${index}: reply payload ${p.length} bytes`);
    let info = parseRegionInfo(p);
    let fds = first.fds;
    if (info.argsz > 32) {
      closeFds(this.conn.native, fds);
      const full = await this.regionInfoMsg(index, info.argsz);
      const q = expectOk(full, `GET_REGION_INFO ${index} argsz ${info.argsz}`);
      info = parseRegionInfo(q);
      fds = full.fds;
    }
    if (!keepFds) {
      closeFds(this.conn.native, fds);
      return { info, fds: fds.map(() => -1), first };
    }
    return { info, fds, first };
  }

  irqInfoMsg(index: number, argsz = 16): Promise<Msg> {
    return this.call(Cmd.DEVICE_GET_IRQ_INFO, irqInfoPayload(index, argsz));
  }

  async irqInfo(index: number): Promise<IrqInfo> {
    const p = expectOk(await this.irqInfoMsg(index), `GET_IRQ_INFO ${index}`);
    if (p.length < 16) fail(`GET_IRQ_INFO ${index}: reply payload ${p.length} bytes`);
    return parseIrqInfo(p);
  }

  read(region: number, offset: bigint, count: number, o?: CallOptions): Promise<Msg> {
    return this.call(Cmd.REGION_READ, regionAccessPayload(region, offset, count), o);
  }

  async readOk(region: number, offset: bigint, count: number): Promise<Buffer> {
    const what = `REGION_READ region ${region} ${hex(offset)}+${count}`;
    const p = expectOk(await this.read(region, offset, count), what);
    if (p.length !== 16 + count) fail(`${what}: reply payload ${p.length} bytes, expected ${16 + count}`);
    return p.subarray(16);
  }

  write(region: number, offset: bigint, data: Uint8Array, o?: CallOptions): Promise<Msg> {
    return this.call(Cmd.REGION_WRITE, regionAccessPayload(region, offset, data.length, data), o);
  }

  async writeOk(region: number, offset: bigint, data: Uint8Array): Promise<void> {
    expectOk(
      await this.write(region, offset, data),
      `REGION_WRITE region ${region} ${hex(offset)}+${data.length}`,
    );
  }

  /** A posted (NO_REPLY) write. */
  postWrite(region: number, offset: bigint, data: Uint8Array): void {
    this.conn.post(Cmd.REGION_WRITE, regionAccessPayload(region, offset, data.length, data), {
      flags: Flag.NO_REPLY,
    });
  }

  async read32(region: number, offset: bigint): Promise<number> {
    return (await this.readOk(region, offset, 4)).readUInt32LE(0);
  }
  async read64(region: number, offset: bigint): Promise<bigint> {
    return (await this.readOk(region, offset, 8)).readBigUInt64LE(0);
  }
  async write32(region: number, offset: bigint, v: number): Promise<void> {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    await this.writeOk(region, offset, b);
  }
  async write64(region: number, offset: bigint, v: bigint): Promise<void> {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, v));
    await this.writeOk(region, offset, b);
  }

  dmaMap(a: DmaMapArgs, fd?: number | number[], o: CallOptions = {}): Promise<Msg> {
    const fds = fd === undefined ? [] : Array.isArray(fd) ? fd : [fd];
    return this.call(Cmd.DMA_MAP, dmaMapPayload(a), { ...o, fds });
  }

  async dmaMapOk(a: DmaMapArgs, fd?: number | number[]): Promise<void> {
    expectOk(await this.dmaMap(a, fd), `DMA_MAP [${hex(a.address)},+${hex(a.size)})`);
  }

  dmaUnmap(a: DmaUnmapArgs, o?: CallOptions): Promise<Msg> {
    return this.call(Cmd.DMA_UNMAP, dmaUnmapPayload(a), o);
  }

  async dmaUnmapOk(a: DmaUnmapArgs): Promise<Buffer> {
    return expectOk(await this.dmaUnmap(a), `DMA_UNMAP [${hex(a.address)},+${hex(a.size)})`);
  }

  setIrqs(a: SetIrqsArgs, fds: number[] = [], o: CallOptions = {}): Promise<Msg> {
    return this.call(Cmd.DEVICE_SET_IRQS, setIrqsPayload(a), { ...o, fds });
  }

  async setIrqsOk(a: SetIrqsArgs, fds: number[] = []): Promise<void> {
    const m = await this.setIrqs(a, fds);
    expectOk(m, `SET_IRQS index ${a.index} flags ${hex(a.flags)} start ${a.start} count ${a.count}`);
  }

  reset(o?: CallOptions): Promise<Msg> {
    return this.call(Cmd.DEVICE_RESET, undefined, o);
  }

  feature(argsz: number, flags: number, data?: Uint8Array): Promise<Msg> {
    return this.call(Cmd.DEVICE_FEATURE, featurePayload(argsz, flags, data));
  }

  /** GET_INFO must succeed with a sane reply (the liveness probe). */
  probe(): Promise<void> {
    return probeConn(this.conn);
  }

  close(): void {
    this.conn.close();
  }
}

/** VERSION on a fresh connection; returns the reply even when it is an error (the caller judges). */
export async function sendVersion(conn: Conn, o: VersionOptions = {}): Promise<Msg> {
  const json = o.json === undefined ? QEMU_VERSION_JSON : o.json;
  conn.clientMaxXfer = clientMaxXferOf(json);
  return conn.call(Cmd.VERSION, versionPayload(o.major ?? 0, o.minor ?? 0, json), { fds: o.fds ?? [] });
}

export function parseVersionReply(m: Msg): VersionResult {
  const p = expectOk(m, 'VERSION');
  if (p.length < 4) fail(`VERSION reply payload ${p.length} bytes`);
  const v = parseVersion(p);
  return {
    reply: m,
    major: v.major,
    minor: v.minor,
    rawJson: v.raw,
    json: v.json,
    ...(v.jsonError ? { jsonError: v.jsonError } : {}),
    caps: serverCapsFrom(v.json),
  };
}

export async function negotiate(conn: Conn, o: VersionOptions = {}): Promise<Session> {
  const m = await sendVersion(conn, o);
  const v = parseVersionReply(m);
  closeFds(conn.native, m.fds);
  conn.negotiated = true;
  return new Session(conn, v);
}

/** The liveness probe on any negotiated connection: DEVICE_GET_INFO must succeed. */
export async function probeConn(conn: Conn): Promise<void> {
  const m = await conn.call(Cmd.DEVICE_GET_INFO, getInfoPayload(16));
  if (m.hdr.flags & Flag.ERROR) fail(`liveness probe: DEVICE_GET_INFO failed with ${errnoName(m.hdr.error)}`);
  expectOk(m, 'liveness probe DEVICE_GET_INFO');
}

export async function connectRaw(
  native: NativeApi,
  path: string,
  label: string,
  timeoutMs: number,
): Promise<Conn> {
  return new Conn(native, (h) => native.connect(path, h), label, timeoutMs);
}

export { expectErrorShape, expectOk };
