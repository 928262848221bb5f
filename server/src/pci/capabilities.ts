// Capability lists: the legacy chain (from the pointer at 0x34, in the first 256 bytes) and the PCI Express
// extended chain (from 0x100, 4 KiB config space only). Headers are read-only; a chain always terminates
// because capabilities are only appended, each at a higher offset than the last.
import type { ConfigSpace } from './config-space.js';
import {
  PCI_CAPABILITY_LIST,
  PCI_CONFIG_SIZE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STD_HEADER_SIZEOF,
} from './constants.js';

/** One capability found in a config space: its ID and its offset. */
export interface CapabilityEntry {
  id: number;
  offset: number;
}

/**
 * Places capabilities in a config space: standard ones chained from PCI_CAPABILITY_LIST after the type 0 header,
 * PCIe extended ones from 0x100; each appended at a higher offset, so a chain always terminates.
 */
export class CapabilityAllocator {
  private nextLegacy = PCI_STD_HEADER_SIZEOF;
  private lastLegacy = 0;
  private nextExtended = PCI_CONFIG_SIZE;
  private lastExtended = 0;

  constructor(private readonly cfg: ConfigSpace) {}

  /**
   * Append a legacy capability of `size` bytes (dword aligned) and link it into the chain. Returns its offset.
   * The body is left zero and read-only; the caller sets values and write masks.
   */
  add(id: number, size: number): number {
    const off = this.nextLegacy;
    if (off + size > PCI_CONFIG_SIZE) throw new Error(`PCI capability 0x${id.toString(16)} does not fit`);
    this.nextLegacy = (off + size + 3) & ~3;
    this.cfg.set8(off, id);
    this.cfg.set8(off + 1, 0);
    if (this.lastLegacy === 0) {
      this.cfg.set8(PCI_CAPABILITY_LIST, off);
      this.cfg.update16(PCI_STATUS, PCI_STATUS_CAP_LIST, true);
    } else {
      this.cfg.set8(this.lastLegacy + 1, off);
    }
    this.lastLegacy = off;
    return off;
  }

  /** Append an extended capability (PCIe config space only). Returns its offset. */
  addExtended(id: number, version: number, size: number): number {
    if (this.cfg.size <= PCI_CONFIG_SIZE) throw new Error('extended capabilities need a 4 KiB config space');
    const off = this.nextExtended;
    if (off + size > this.cfg.size)
      throw new Error(`PCIe extended capability 0x${id.toString(16)} does not fit`);
    this.nextExtended = (off + size + 3) & ~3;
    this.cfg.set32(off, (id & 0xffff) | ((version & 0xf) << 16));
    if (this.lastExtended !== 0) {
      const h = this.cfg.get32(this.lastExtended);
      this.cfg.set32(this.lastExtended, (h & 0xfffff) | (off << 20));
    }
    this.lastExtended = off;
    return off;
  }
}

/** Walk the legacy chain of a config space image; stops on a loop, a bad pointer or 48 entries. */
export function walkCapabilities(bytes: Uint8Array): CapabilityEntry[] {
  const out: CapabilityEntry[] = [];
  const seen = new Set<number>();
  const status = (bytes[PCI_STATUS] ?? 0) | ((bytes[PCI_STATUS + 1] ?? 0) << 8);
  if (!(status & PCI_STATUS_CAP_LIST)) return out;
  let off = (bytes[PCI_CAPABILITY_LIST] ?? 0) & ~3;
  while (off >= PCI_STD_HEADER_SIZEOF && off < PCI_CONFIG_SIZE && !seen.has(off) && out.length < 48) {
    seen.add(off);
    out.push({ id: bytes[off]!, offset: off });
    off = (bytes[off + 1] ?? 0) & ~3;
  }
  return out;
}

/** Walk the extended chain from 0x100; an all-zero header at 0x100 means "no extended capabilities". */
export function walkExtendedCapabilities(bytes: Uint8Array): CapabilityEntry[] {
  const out: CapabilityEntry[] = [];
  if (bytes.length <= PCI_CONFIG_SIZE) return out;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const seen = new Set<number>();
  let off = PCI_CONFIG_SIZE;
  while (off >= PCI_CONFIG_SIZE && off + 4 <= bytes.length && !seen.has(off) && out.length < 960) {
    seen.add(off);
    const h = view.getUint32(off, true);
    if (h === 0 || h === 0xffffffff) break;
    out.push({ id: h & 0xffff, offset: off });
    off = (h >>> 20) & ~3;
  }
  return out;
}
