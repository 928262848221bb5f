// Byte-level message building and parsing for the conformance suite.
//
// Deliberately independent of `vfio-user-protocol`: the suite must be able to send what no correct codec would
// produce (short payloads, wrong sizes, bad flags), and a bug in our own codec must not hide the same bug in a
// server built on it. Everything is explicit little-endian.

export const Cmd = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  DIRTY_PAGES: 14,
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;

const cmdNames = new Map<number, string>(Object.entries(Cmd).map(([k, v]) => [v, k]));
export function cmdName(cmd: number): string {
  return cmdNames.get(cmd) ?? `cmd ${cmd}`;
}

/** Header flag bits. */
export const Flag = { COMMAND: 0x0, REPLY: 0x1, TYPE_MASK: 0xf, NO_REPLY: 0x10, ERROR: 0x20 } as const;

export const HEADER_SIZE = 16;

export const DmaMapFlag = { READ: 0x1, WRITE: 0x2 } as const;
export const DmaUnmapFlag = { GET_DIRTY_BITMAP: 0x1, ALL: 0x2 } as const;
export const DeviceFlag = { RESET: 0x1, PCI: 0x2 } as const;
export const RegionFlag = { READ: 0x1, WRITE: 0x2, MMAP: 0x4, CAPS: 0x8 } as const;
export const IrqInfoFlag = { EVENTFD: 0x1, MASKABLE: 0x2, AUTOMASKED: 0x4, NORESIZE: 0x8 } as const;
export const Irq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 } as const;
export const IrqSet = {
  DATA_NONE: 0x1,
  DATA_BOOL: 0x2,
  DATA_EVENTFD: 0x4,
  ACTION_MASK: 0x8,
  ACTION_UNMASK: 0x10,
  ACTION_TRIGGER: 0x20,
} as const;
export const Region = { CONFIG: 7, ROM: 6, VGA: 8 } as const;
export const Feature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
  GET: 1 << 16,
  SET: 1 << 17,
  PROBE: 1 << 18,
} as const;
export const MigState = {
  ERROR: 0,
  STOP: 1,
  RUNNING: 2,
  STOP_COPY: 3,
  RESUMING: 4,
  RUNNING_P2P: 5,
  PRE_COPY: 6,
  PRE_COPY_P2P: 7,
} as const;

/** A growable little-endian byte builder. */
export class Bytes {
  private parts: Buffer[] = [];
  u8(v: number): this {
    const b = Buffer.alloc(1);
    b.writeUInt8(v & 0xff);
    this.parts.push(b);
    return this;
  }
  u16(v: number): this {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(v & 0xffff);
    this.parts.push(b);
    return this;
  }
  u32(v: number): this {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.parts.push(b);
    return this;
  }
  u64(v: bigint | number): this {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v)));
    this.parts.push(b);
    return this;
  }
  raw(data: Uint8Array | string): this {
    this.parts.push(typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data));
    return this;
  }
  zeros(n: number): this {
    this.parts.push(Buffer.alloc(n));
    return this;
  }
  build(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export interface HeaderFields {
  id: number;
  cmd: number;
  size: number;
  flags: number;
  error: number;
}

export function encodeHeader(h: HeaderFields): Buffer {
  return new Bytes().u16(h.id).u16(h.cmd).u32(h.size).u32(h.flags).u32(h.error).build();
}

export function decodeHeader(b: Uint8Array, off = 0): HeaderFields {
  const v = Buffer.from(b.buffer, b.byteOffset + off, HEADER_SIZE);
  return {
    id: v.readUInt16LE(0),
    cmd: v.readUInt16LE(2),
    size: v.readUInt32LE(4),
    flags: v.readUInt32LE(8),
    error: v.readUInt32LE(12),
  };
}

export interface MessageOptions {
  id?: number;
  flags?: number;
  error?: number;
  /** Override the header's size field (to lie about the length). */
  size?: number;
}

/** A whole message: header (size = 16 + payload unless overridden) + payload. */
export function message(cmd: number, payload: Uint8Array = Buffer.alloc(0), o: MessageOptions = {}): Buffer {
  const size = o.size ?? HEADER_SIZE + payload.length;
  return Buffer.concat([
    encodeHeader({ id: o.id ?? 0, cmd, size, flags: o.flags ?? 0, error: o.error ?? 0 }),
    Buffer.from(payload),
  ]);
}

// ---------------------------------------------------------------------------------------------------------------
// Request payloads (all fields overridable so cases can corrupt any of them).

export function versionPayload(major: number, minor: number, json?: string | null, nul = true): Buffer {
  const b = new Bytes().u16(major).u16(minor);
  if (json !== undefined && json !== null) {
    b.raw(json);
    if (nul) b.u8(0);
  }
  return b.build();
}

export interface DmaMapArgs {
  argsz?: number;
  flags?: number;
  offset?: bigint;
  address: bigint;
  size: bigint;
}
export function dmaMapPayload(a: DmaMapArgs): Buffer {
  return new Bytes()
    .u32(a.argsz ?? 32)
    .u32(a.flags ?? DmaMapFlag.READ | DmaMapFlag.WRITE)
    .u64(a.offset ?? 0n)
    .u64(a.address)
    .u64(a.size)
    .build();
}

export interface DmaUnmapArgs {
  argsz?: number;
  flags?: number;
  address: bigint;
  size: bigint;
}
export function dmaUnmapPayload(a: DmaUnmapArgs): Buffer {
  return new Bytes()
    .u32(a.argsz ?? 24)
    .u32(a.flags ?? 0)
    .u64(a.address)
    .u64(a.size)
    .build();
}

/** DEVICE_GET_INFO / GET_IRQ_INFO / GET_REGION_IO_FDS-style 16-byte payloads: argsz, then three u32s. */
export function fourU32(a: number, b: number, c: number, d: number): Buffer {
  return new Bytes().u32(a).u32(b).u32(c).u32(d).build();
}

export function getInfoPayload(argsz = 16): Buffer {
  return fourU32(argsz, 0, 0, 0);
}

export function regionInfoPayload(index: number, argsz = 32): Buffer {
  return new Bytes().u32(argsz).u32(0).u32(index).u32(0).u64(0n).u64(0n).build();
}

export function irqInfoPayload(index: number, argsz = 16): Buffer {
  return fourU32(argsz, 0, index, 0);
}

export interface SetIrqsArgs {
  argsz?: number;
  flags: number;
  index: number;
  start: number;
  count: number;
  data?: Uint8Array;
}
export function setIrqsPayload(a: SetIrqsArgs): Buffer {
  const data = a.data ?? Buffer.alloc(0);
  return new Bytes()
    .u32(a.argsz ?? 20 + data.length)
    .u32(a.flags)
    .u32(a.index)
    .u32(a.start)
    .u32(a.count)
    .raw(data)
    .build();
}

export function regionAccessPayload(
  region: number,
  offset: bigint,
  count: number,
  data?: Uint8Array,
): Buffer {
  const b = new Bytes().u64(offset).u32(region).u32(count);
  if (data) b.raw(data);
  return b.build();
}

export interface WriteMultiEntry {
  offset: bigint;
  region: number;
  count: number;
  data: Uint8Array; // padded/truncated to 8 bytes
}
export function writeMultiPayload(entries: WriteMultiEntry[], wrCnt = entries.length): Buffer {
  const b = new Bytes().u64(BigInt(wrCnt));
  for (const e of entries) {
    const d = Buffer.alloc(8);
    Buffer.from(e.data).copy(d, 0, 0, Math.min(8, e.data.length));
    b.u64(e.offset).u32(e.region).u32(e.count).raw(d);
  }
  return b.build();
}

export function featurePayload(argsz: number, flags: number, data: Uint8Array = Buffer.alloc(0)): Buffer {
  return new Bytes().u32(argsz).u32(flags).raw(data).build();
}

export function migDataPayload(argsz: number, size: number, data: Uint8Array = Buffer.alloc(0)): Buffer {
  return new Bytes().u32(argsz).u32(size).raw(data).build();
}

export function ioFdsPayload(index: number, argsz = 16, flags = 0, count = 0): Buffer {
  return fourU32(argsz, flags, index, count);
}

// ---------------------------------------------------------------------------------------------------------------
// Reply parsing.

export interface DeviceInfo {
  argsz: number;
  flags: number;
  numRegions: number;
  numIrqs: number;
}
export function parseDeviceInfo(p: Buffer): DeviceInfo {
  return {
    argsz: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    numRegions: p.readUInt32LE(8),
    numIrqs: p.readUInt32LE(12),
  };
}

export interface RegionCap {
  id: number;
  version: number;
  next: number;
  offset: number;
  /** Sparse mmap areas (id 1). */
  areas?: { offset: bigint; size: bigint }[];
  /** CAP_TYPE (id 2). */
  type?: { type: number; subtype: number };
}

export interface RegionInfo {
  argsz: number;
  flags: number;
  index: number;
  capOffset: number;
  size: bigint;
  offset: bigint;
  caps: RegionCap[];
  /** Problems found while walking the cap chain. */
  capErrors: string[];
}

export function parseRegionInfo(p: Buffer): RegionInfo {
  const info: RegionInfo = {
    argsz: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    index: p.readUInt32LE(8),
    capOffset: p.readUInt32LE(12),
    size: p.readBigUInt64LE(16),
    offset: p.readBigUInt64LE(24),
    caps: [],
    capErrors: [],
  };
  if (info.flags & RegionFlag.CAPS && info.capOffset !== 0 && p.length > 32) {
    const seen = new Set<number>();
    let off = info.capOffset;
    while (off !== 0) {
      if (seen.has(off)) {
        info.capErrors.push(`cap chain loops at ${off}`);
        break;
      }
      seen.add(off);
      if (off < 32 || off + 8 > p.length) {
        info.capErrors.push(`cap at ${off} outside the ${p.length}-byte payload`);
        break;
      }
      const cap: RegionCap = {
        id: p.readUInt16LE(off),
        version: p.readUInt16LE(off + 2),
        next: p.readUInt32LE(off + 4),
        offset: off,
      };
      if (cap.id === 1) {
        if (off + 16 > p.length) {
          info.capErrors.push('sparse cap truncated');
          break;
        }
        const n = p.readUInt32LE(off + 8);
        if (off + 16 + 16 * n > p.length) {
          info.capErrors.push(`sparse cap claims ${n} areas, payload too short`);
          break;
        }
        cap.areas = [];
        for (let i = 0; i < n; i++) {
          cap.areas.push({
            offset: p.readBigUInt64LE(off + 16 + 16 * i),
            size: p.readBigUInt64LE(off + 24 + 16 * i),
          });
        }
      } else if (cap.id === 2) {
        if (off + 16 > p.length) {
          info.capErrors.push('type cap truncated');
          break;
        }
        cap.type = { type: p.readUInt32LE(off + 8), subtype: p.readUInt32LE(off + 12) };
      }
      info.caps.push(cap);
      off = cap.next;
    }
  }
  return info;
}

export interface IrqInfo {
  argsz: number;
  flags: number;
  index: number;
  count: number;
}
export function parseIrqInfo(p: Buffer): IrqInfo {
  return {
    argsz: p.readUInt32LE(0),
    flags: p.readUInt32LE(4),
    index: p.readUInt32LE(8),
    count: p.readUInt32LE(12),
  };
}

/** Parses `major, minor, JSON\0` of a VERSION reply; `json` is null when absent, `jsonError` on a bad body. */
export function parseVersion(p: Buffer): {
  major: number;
  minor: number;
  raw: string | null;
  json: unknown;
  jsonError?: string;
} {
  const major = p.readUInt16LE(0);
  const minor = p.readUInt16LE(2);
  if (p.length <= 4) return { major, minor, raw: null, json: null };
  const body = p.subarray(4);
  if (body[body.length - 1] !== 0) {
    return { major, minor, raw: body.toString('utf8'), json: null, jsonError: 'JSON not NUL-terminated' };
  }
  const raw = body.subarray(0, body.length - 1).toString('utf8');
  try {
    return { major, minor, raw, json: JSON.parse(raw) };
  } catch (e) {
    return { major, minor, raw, json: null, jsonError: `JSON does not parse: ${(e as Error).message}` };
  }
}

export function hex(n: number | bigint): string {
  return `0x${n.toString(16)}`;
}
