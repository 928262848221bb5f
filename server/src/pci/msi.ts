// The MSI capability: enable, Multiple Message Capable/Enable, 32/64-bit address, optional per-vector mask and
// pending bits. QEMU emulates MSI in its own copy of config space but forwards every config write, so the
// server's copy tracks the guest's enable, MME and mask bits, which is what routing needs.
import type { CapabilityAllocator } from './capabilities.js';
import type { ConfigSpace } from './config-space.js';
import {
  PCI_CAP_ID_MSI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
} from './constants.js';

/** The MSI capability a PciDevice offers: vectors (1..32, a power of two), 64-bit addressing, per-vector masking. */
export interface MsiSpec {
  /** Vectors the function can use (Multiple Message Capable): 1, 2, 4, 8, 16 or 32. */
  vectors: number;
  /** 64-bit message address (default true). */
  is64?: boolean;
  /** Per-vector masking with mask/pending registers (default true). */
  perVectorMask?: boolean;
}

/**
 * The MSI capability in config space: its registers, what the guest enabled, and per-vector mask and pending bits.
 */
export class MsiCapability {
  readonly offset: number;
  readonly vectors: number;
  readonly perVectorMask: boolean;
  private readonly maskOff: number;
  private readonly pendingOff: number;

  /** `fire(v)` signals vector v (called when an unmask releases a pending vector). */
  constructor(
    private readonly cfg: ConfigSpace,
    caps: CapabilityAllocator,
    spec: MsiSpec,
    private readonly fire: (vector: number) => void,
  ) {
    const n = spec.vectors;
    if (!Number.isInteger(n) || n < 1 || n > 32 || (n & (n - 1)) !== 0) {
      throw new Error('MSI vectors must be a power of two in 1..32');
    }
    const is64 = spec.is64 ?? true;
    this.vectors = n;
    this.perVectorMask = spec.perVectorMask ?? true;
    // Layout (PCI 3.0 6.8.1): ctrl @2, addr lo @4, [addr hi @8], data, [reserved, mask, pending].
    const dataOff = is64 ? 0x0c : 0x08;
    const size = this.perVectorMask ? (is64 ? 24 : 20) : is64 ? 14 : 10;
    const off = caps.add(PCI_CAP_ID_MSI, size);
    this.offset = off;
    this.maskOff = off + dataOff + 4;
    this.pendingOff = this.maskOff + 4;

    const mmc = Math.log2(n);
    const ctrl =
      (mmc << 1) | (is64 ? PCI_MSI_FLAGS_64BIT : 0) | (this.perVectorMask ? PCI_MSI_FLAGS_MASKBIT : 0);
    cfg.set16(off + PCI_MSI_FLAGS, ctrl);
    cfg.setWmask(off + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE);
    cfg.setWmask(off + PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
    if (is64) cfg.setWmask(off + 8, 4, 0xffffffff);
    cfg.setWmask(off + dataOff, 2, 0xffff);
    if (this.perVectorMask) {
      // Only the bits of implemented vectors are writable; pending bits are read-only to software.
      cfg.setWmask(this.maskOff, 4, n === 32 ? 0xffffffff : (1 << n) - 1);
    }

    cfg.onWrite(off + PCI_MSI_FLAGS, 2, (prev) => this.controlWritten(prev));
    if (this.perVectorMask) cfg.onWrite(this.maskOff, 4, (prev) => this.maskWritten(prev));
  }

  get enabled(): boolean {
    return (this.cfg.get16(this.offset + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  /** Vectors the guest enabled (2^MME). */
  get enabledVectors(): number {
    return 1 << ((this.cfg.get16(this.offset + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_QSIZE) >> 4);
  }

  isMasked(vector: number): boolean {
    return this.perVectorMask && ((this.cfg.get32(this.maskOff) >>> vector) & 1) === 1;
  }

  isPending(vector: number): boolean {
    return this.perVectorMask && ((this.cfg.get32(this.pendingOff) >>> vector) & 1) === 1;
  }

  private setPending(vector: number, on: boolean): void {
    const v = this.cfg.get32(this.pendingOff);
    this.cfg.set32(this.pendingOff, on ? v | (1 << vector) : v & ~(1 << vector));
  }

  /**
   * Signal `vector`: a vector beyond the enabled count folds onto the last enabled one (a function granted
   * fewer messages than it asked for shares them, PCI 3.0 6.8.3.4); a masked vector becomes pending.
   * Returns the vector signalled, or -1 when it was left pending.
   */
  notify(vector: number): number {
    const v = Math.min(vector, this.enabledVectors - 1);
    if (this.isMasked(v)) {
      this.setPending(v, true);
      return -1;
    }
    this.fire(v);
    return v;
  }

  /** Multiple Message Enable may not exceed Multiple Message Capable: clamp as QEMU's msi.c does. */
  private controlWritten(_prev: DataView): void {
    const off = this.offset + PCI_MSI_FLAGS;
    const ctrl = this.cfg.get16(off);
    const mmc = (ctrl & PCI_MSI_FLAGS_QMASK) >> 1;
    const mme = (ctrl & PCI_MSI_FLAGS_QSIZE) >> 4;
    if (mme > mmc) this.cfg.set16(off, (ctrl & ~PCI_MSI_FLAGS_QSIZE) | (mmc << 4));
    if (this.enabled) this.releasePending();
  }

  private maskWritten(_prev: DataView): void {
    if (this.enabled) this.releasePending();
  }

  /** Fire every pending vector whose mask bit is now clear. */
  private releasePending(): void {
    if (!this.perVectorMask) return;
    for (let v = 0; v < this.vectors; v++) {
      if (this.isPending(v) && !this.isMasked(v)) {
        this.setPending(v, false);
        this.fire(v);
      }
    }
  }
}
