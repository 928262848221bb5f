// Base Address Registers: the config-space register (type bits, sizing) and the region behind it (bounds
// checks, splitting into device-sized accesses, RAM/memfd backing, overlays such as the MSI-X table).

import { Errno } from 'vfio-user-protocol';
import { DeviceError } from '../device.js';
import type { ConfigSpace } from './config-space.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_SPACE_IO,
} from './constants.js';
import type { SharedMemory } from './shared-memory.js';

const PAGE = 4096;

/** The access sizes a device callback sees. */
export type AccessSize = 1 | 2 | 4 | 8;

/** A device's register file behind a BAR. Offsets are relative to the BAR; values are little-endian. */
export interface BarHandler {
  /** Return the value of the `size`-byte register at `offset` (the low `size` bytes are used). */
  read(offset: number, size: AccessSize): bigint | number;
  /** Store `value` (`size` bytes) at `offset`. */
  write(offset: number, size: AccessSize, value: bigint): void;
}

/** One memfd-backed, client-mmappable window of a BAR (page aligned). */
export interface SparseAreaSpec {
  offset: number | bigint;
  size: number | bigint;
}

/**
 * One BAR of a PciDevice: its size and kind (memory/I/O, 64-bit, prefetchable) and what backs it: register
 * handlers, plain RAM, or shared memory the client may mmap (sparse areas).
 */
export interface BarSpec {
  /** Size in bytes: a power of two, >= 16 for memory, 4..65536 for I/O. */
  size: number | bigint;
  /** An I/O space BAR (default: memory). */
  io?: boolean;
  /** A 64-bit memory BAR: it takes this BAR slot and the next. */
  is64?: boolean;
  prefetch?: boolean;
  /**
   * The register callbacks. Without a handler the BAR is plain memory (RAM-like scratch space, at most
   * 16 MiB), or the shared memory when `sparse` is given.
   */
  handler?: BarHandler;
  /** The widest access the handler takes (default 8); wider accesses are split into naturally aligned chunks. */
  maxAccess?: AccessSize;
  /**
   * false: refuse (EINVAL) accesses that are not one 1/2/4/8-byte access of at most maxAccess, instead of
   * splitting them. Default true.
   */
  split?: boolean;
  /**
   * Back (parts of) the BAR with a memfd the client may mmap: `true` for the whole BAR, or page-aligned areas.
   * Accesses inside an area read/write that memory; the device model polls it (see PciDevice.barMemory).
   */
  sparse?: true | SparseAreaSpec[];
}

/** Intercepts a range of a BAR before the device handler (the MSI-X table and PBA). Offsets are BAR-relative. */
export interface BarOverlay {
  start: number;
  end: number;
  read(offset: number, size: AccessSize): bigint | number;
  write(offset: number, size: AccessSize, value: bigint): void;
}

const isPow2 = (v: bigint) => v > 0n && (v & (v - 1n)) === 0n;

/** The low type bits of the BAR register. */
export function barTypeBits(spec: BarSpec): number {
  if (spec.io) return PCI_BASE_ADDRESS_SPACE_IO;
  return (spec.is64 ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | (spec.prefetch ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
}

/** Check a BAR spec; throws Error (a programming error in the device model, not a client error). */
export function validateBarSpec(index: number, spec: BarSpec): bigint {
  const size = BigInt(spec.size);
  const where = `BAR${index}`;
  if (!isPow2(size)) throw new Error(`${where}: size must be a power of two`);
  if (spec.io) {
    if (spec.is64 || spec.prefetch) throw new Error(`${where}: I/O BARs are neither 64-bit nor prefetchable`);
    if (size < 4n || size > 0x10000n) throw new Error(`${where}: I/O BAR size must be 4..64 KiB`);
    if (spec.sparse) throw new Error(`${where}: I/O BARs cannot be mmapped`);
  } else {
    if (size < 16n) throw new Error(`${where}: memory BAR size must be >= 16`);
    if (!spec.is64 && size > 0x80000000n) throw new Error(`${where}: a 32-bit BAR is at most 2 GiB`);
    if (size > 1n << 52n) throw new Error(`${where}: BAR too large`);
  }
  if (spec.is64 && index >= 5) throw new Error(`${where}: a 64-bit BAR needs the next slot`);
  if (!spec.handler && !spec.sparse && size > 16n << 20n)
    throw new Error(`${where}: RAM-backed BARs are <= 16 MiB`);
  if (spec.sparse && size > 1n << 32n) throw new Error(`${where}: memfd-backed BARs are <= 4 GiB`);
  if (Array.isArray(spec.sparse)) {
    for (const a of spec.sparse) {
      const off = BigInt(a.offset);
      const sz = BigInt(a.size);
      if (off < 0n || sz <= 0n || off % BigInt(PAGE) || sz % BigInt(PAGE) || off + sz > size) {
        throw new Error(`${where}: sparse areas must be page aligned and inside the BAR`);
      }
    }
  }
  return size;
}

/**
 * Set up the config register(s) of BAR `index`: type bits read-only, address bits above the size writable,
 * so that writing all-ones reads back `~(size-1) | type bits` (and the upper mask in the high dword of a
 * 64-bit pair).
 */
export function installBarRegisters(cfg: ConfigSpace, index: number, spec: BarSpec, size: bigint): void {
  const off = PCI_BASE_ADDRESS_0 + 4 * index;
  const mask = BigInt.asUintN(64, ~(size - 1n));
  const lowTypeMask = spec.io ? 0x3n : 0xfn;
  cfg.set32(off, barTypeBits(spec));
  cfg.setWmask(off, 4, Number(mask & 0xffffffffn & ~lowTypeMask));
  if (spec.is64) {
    cfg.set32(off + 4, 0);
    cfg.setWmask(off + 4, 4, Number(mask >> 32n));
  }
}

function storeLE(out: Uint8Array, at: number, size: number, v: bigint | number): void {
  if (typeof v === 'number' && size <= 4) {
    for (let i = 0; i < size; i++) out[at + i] = (v >>> (8 * i)) & 0xff;
    return;
  }
  let b = typeof v === 'bigint' ? v : Number.isFinite(v) ? BigInt(Math.trunc(v)) : 0n;
  b = BigInt.asUintN(64, b);
  for (let i = 0; i < size; i++) out[at + i] = Number((b >> BigInt(8 * i)) & 0xffn);
}

function loadLE(data: Uint8Array, at: number, size: number): bigint {
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(data[at + i]!);
  return v;
}

interface Area {
  start: number;
  end: number;
}

/** The region of one implemented BAR. */
export class BarRegion {
  readonly index: number;
  readonly size: bigint;
  readonly spec: BarSpec;
  /** The shared memory, when the BAR has sparse areas. */
  readonly memory: SharedMemory | undefined;
  /** The mmappable areas (BAR-relative), when `memory` is set. */
  readonly areas: readonly Area[];
  private readonly ram: Uint8Array | undefined;
  private readonly overlays: BarOverlay[] = [];
  private readonly maxAccess: AccessSize;

  constructor(index: number, spec: BarSpec, size: bigint, memory?: SharedMemory) {
    this.index = index;
    this.spec = spec;
    this.size = size;
    this.memory = memory;
    this.maxAccess = spec.maxAccess ?? 8;
    if (memory) {
      const list = spec.sparse === true || !spec.sparse ? [{ offset: 0, size }] : spec.sparse;
      this.areas = list
        .map((a) => ({ start: Number(a.offset), end: Number(BigInt(a.offset) + BigInt(a.size)) }))
        .sort((a, b) => a.start - b.start);
    } else {
      this.areas = [];
    }
    // Handler-less BARs without memfd areas are plain memory.
    this.ram = !spec.handler && !memory ? new Uint8Array(Number(size)) : undefined;
  }

  /** Route [start, end) to `overlay` ahead of the handler (not inside mmapped areas). */
  addOverlay(overlay: BarOverlay): void {
    this.overlays.push(overlay);
  }

  private checkBounds(offset: bigint, count: number): number {
    // bigint arithmetic cannot wrap, so `offset + count` is the true end even for offset 2^64-1.
    if (offset < 0n || count < 0 || offset + BigInt(count) > this.size) {
      throw new DeviceError(
        Errno.EINVAL,
        `BAR${this.index}: access [${offset}, +${count}) outside ${this.size} bytes`,
      );
    }
    return Number(offset);
  }

  read(offset: bigint, count: number): Uint8Array {
    const start = this.checkBounds(offset, count);
    const out = new Uint8Array(count);
    this.walk(start, count, (pos, len, area) => {
      if (area) out.set(this.memory!.bytes.subarray(pos, pos + len), pos - start);
      else this.readChunk(pos, len as AccessSize, out, pos - start);
    });
    return out;
  }

  write(offset: bigint, data: Uint8Array): void {
    const start = this.checkBounds(offset, data.length);
    this.walk(start, data.length, (pos, len, area) => {
      if (area) this.memory!.bytes.set(data.subarray(pos - start, pos - start + len), pos);
      else this.writeChunk(pos, len as AccessSize, loadLE(data, pos - start, len));
    });
  }

  /** Cut [start, start+count) into runs inside mmapped areas and device-sized register accesses. */
  private walk(start: number, count: number, fn: (pos: number, len: number, area: boolean) => void): void {
    const end = start + count;
    if (this.spec.split === false && this.areas.length === 0) {
      if (count === 0) return;
      if ((count !== 1 && count !== 2 && count !== 4 && count !== 8) || count > this.maxAccess) {
        throw new DeviceError(Errno.EINVAL, `BAR${this.index}: ${count}-byte access not supported`);
      }
      fn(start, count, false);
      return;
    }
    let pos = start;
    while (pos < end) {
      const area = this.areas.find((a) => pos >= a.start && pos < a.end);
      if (area) {
        const len = Math.min(end, area.end) - pos;
        fn(pos, len, true);
        pos += len;
        continue;
      }
      // The next boundary a register access must not cross: an area start.
      let limit = end;
      for (const a of this.areas) if (a.start > pos && a.start < limit) limit = a.start;
      let s: number = this.maxAccess;
      while (s > 1 && (pos % s !== 0 || pos + s > limit)) s >>= 1;
      fn(pos, s, false);
      pos += s;
    }
  }

  private overlayAt(pos: number): BarOverlay | undefined {
    for (const o of this.overlays) if (pos >= o.start && pos < o.end) return o;
    return undefined;
  }

  private readChunk(pos: number, size: AccessSize, out: Uint8Array, at: number): void {
    const o = this.overlayAt(pos);
    if (o) storeLE(out, at, size, o.read(pos, size));
    else if (this.ram) out.set(this.ram.subarray(pos, pos + size), at);
    else if (this.spec.handler) storeLE(out, at, size, this.spec.handler.read(pos, size));
    else out.set(this.memory!.bytes.subarray(pos, pos + size), at);
  }

  private writeChunk(pos: number, size: AccessSize, value: bigint): void {
    const o = this.overlayAt(pos);
    if (o) o.write(pos, size, value);
    else if (this.ram) storeLE(this.ram, pos, size, value);
    else if (this.spec.handler) this.spec.handler.write(pos, size, value);
    else storeLE(this.memory!.bytes, pos, size, value);
  }

  /** The bytes behind the BAR when it is plain RAM or shared memory (migration saves them), else undefined. */
  get backing(): Uint8Array | undefined {
    return this.ram ?? this.memory?.bytes;
  }

  /** Power-on state of the backing store (RAM BARs and shared memory are zeroed). */
  reset(): void {
    this.ram?.fill(0);
    this.memory?.bytes.fill(0);
  }
}
