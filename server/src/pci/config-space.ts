// PCI configuration space with per-bit write semantics.
//
// Every byte has three facets: its value, a write mask (bits the client may set or clear: RW) and a
// write-1-to-clear mask (RW1C). Everything else is read-only: a client write leaves it alone. Masks are applied
// byte by byte, so any access of any size at any offset behaves as the same bytes written one at a time
// (CFG-14: a 1-byte write to 0x05 is legal PCI). Registers with side effects (COMMAND, BARs, MSI control, PCIe
// Device Control, ...) register a hook that runs after the bytes are stored.

/** Called after a client write touched [offset, offset+length) of the hooked range; `prev` is the config
 * space as it was before the write. */
export type ConfigWriteHook = (prev: DataView) => void;

interface HookEntry {
  start: number;
  end: number;
  fn: ConfigWriteHook;
}

/** What a config space write reports: the bytes where the client tried to change read-only bits. */
export interface ConfigWriteResult {
  /** Offsets of bytes where the client tried to change read-only bits (for debug logging). */
  readOnlyBytes: number[];
}

/**
 * A PCI function's config space with per-bit write semantics (value, RW mask, RW1C mask) and hooks for registers
 * with side effects; any access size at any offset behaves as byte writes.
 */
export class ConfigSpace {
  readonly size: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** Bits the client may write (RW). */
  readonly wmask: Uint8Array;
  /** Bits the client clears by writing 1 (RW1C). */
  readonly w1cmask: Uint8Array;
  private readonly hooks: HookEntry[] = [];
  private powerOn: Uint8Array | undefined;

  constructor(size: number) {
    this.size = size;
    this.bytes = new Uint8Array(size);
    this.view = new DataView(this.bytes.buffer);
    this.wmask = new Uint8Array(size);
    this.w1cmask = new Uint8Array(size);
  }

  // Device-side accessors: they ignore the masks (the device owns every bit).
  get8(off: number): number {
    return this.bytes[off]!;
  }
  get16(off: number): number {
    return this.view.getUint16(off, true);
  }
  get32(off: number): number {
    return this.view.getUint32(off, true);
  }
  set8(off: number, v: number): void {
    this.bytes[off] = v & 0xff;
  }
  set16(off: number, v: number): void {
    this.view.setUint16(off, v & 0xffff, true);
  }
  set32(off: number, v: number): void {
    this.view.setUint32(off, v >>> 0, true);
  }
  /** Set or clear `bits` of the 16-bit register at `off`. */
  update16(off: number, bits: number, on: boolean): void {
    const v = this.get16(off);
    this.set16(off, on ? v | bits : v & ~bits);
  }

  /** Define the RW bits of `width` bytes at `off` (little-endian `mask`). */
  setWmask(off: number, width: 1 | 2 | 4, mask: number): void {
    for (let i = 0; i < width; i++) this.wmask[off + i] = (mask >>> (8 * i)) & 0xff;
  }
  /** Define the RW1C bits of `width` bytes at `off`. */
  setW1cmask(off: number, width: 1 | 2 | 4, mask: number): void {
    for (let i = 0; i < width; i++) this.w1cmask[off + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** Run `fn` after every client write that overlaps [offset, offset+length). */
  onWrite(offset: number, length: number, fn: ConfigWriteHook): void {
    this.hooks.push({ start: offset, end: offset + length, fn });
  }

  /** Record the current contents as the power-on state that reset() restores. */
  freeze(): void {
    this.powerOn = this.bytes.slice();
  }

  /** Back to the power-on state recorded by freeze(). */
  reset(): void {
    if (this.powerOn) this.bytes.set(this.powerOn);
  }

  /** A copy of `count` bytes at `offset` (bounds already checked by the caller). */
  read(offset: number, count: number): Uint8Array {
    return this.bytes.slice(offset, offset + count);
  }

  /** A client write: masks applied byte by byte, then the hooks of every touched register run in order. */
  write(offset: number, data: Uint8Array): ConfigWriteResult {
    const prev = new DataView(this.bytes.slice().buffer);
    const readOnlyBytes: number[] = [];
    for (let i = 0; i < data.length; i++) {
      const off = offset + i;
      const old = this.bytes[off]!;
      const val = data[i]!;
      const wm = this.wmask[off]!;
      const w1c = this.w1cmask[off]!;
      const next = ((old & ~wm) | (val & wm)) & ~(val & w1c);
      this.bytes[off] = next;
      // A read-only bit the client wanted to change (RW1C bits written with 0 are "leave alone", not a change).
      if ((val ^ old) & ~wm & ~w1c & 0xff) readOnlyBytes.push(off);
    }
    const end = offset + data.length;
    for (const h of this.hooks) {
      if (h.start < end && offset < h.end) h.fn(prev);
    }
    return { readOnlyBytes };
  }
}
