// The MSI-X capability, its table and its Pending Bit Array inside a BAR.
//
// QEMU emulates the table in its own memory (guest writes to it never reach the server) but forwards config
// writes (enable, function mask) and reads the PBA through REGION_READ. So by default the server honours the
// enable and function-mask bits from config space and leaves per-vector masking to the client (QEMU masks a
// vector by re-wiring its eventfd; the IrqSink reports it pending). A client that drives the table through
// REGION_WRITE can opt into device-side per-vector masking with `honourTableMask`.
import type { AccessSize, BarOverlay } from './bar.js';
import type { CapabilityAllocator } from './capabilities.js';
import type { ConfigSpace } from './config-space.js';
import {
  PCI_CAP_ID_MSIX,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_PBA,
  PCI_MSIX_SIZEOF,
  PCI_MSIX_TABLE,
} from './constants.js';

/** The MSI-X capability a PciDevice offers: vector count and the BARs and offsets of the table and PBA. */
export interface MsixSpec {
  /** Table size: 1..2048 vectors. */
  vectors: number;
  /** The BAR (0-5) holding the table and the PBA. */
  bar: number;
  /** Table offset in the BAR, 8-byte aligned (default 0). */
  tableOffset?: number;
  /** PBA offset in the BAR, 8-byte aligned (default: right after the table). */
  pbaOffset?: number;
  /** Honour the per-vector mask bits of the server's table copy (default false; see the file comment). */
  honourTableMask?: boolean;
}

/** The MSI-X capability: its config registers, the vector table and PBA in their BARs, masking and pending bits. */
export class MsixCapability {
  readonly offset: number;
  readonly vectors: number;
  readonly bar: number;
  readonly tableOffset: number;
  readonly pbaOffset: number;
  readonly table: Uint8Array;
  readonly pba: Uint8Array;
  private readonly tableView: DataView;
  private readonly honourTableMask: boolean;

  constructor(
    private readonly cfg: ConfigSpace,
    caps: CapabilityAllocator,
    spec: MsixSpec,
    private readonly fire: (vector: number) => void,
  ) {
    const n = spec.vectors;
    if (!Number.isInteger(n) || n < 1 || n > 2048) throw new Error('MSI-X vectors must be 1..2048');
    if (!Number.isInteger(spec.bar) || spec.bar < 0 || spec.bar > 5)
      throw new Error('MSI-X BAR must be 0..5');
    this.vectors = n;
    this.bar = spec.bar;
    this.tableOffset = spec.tableOffset ?? 0;
    this.pbaOffset = spec.pbaOffset ?? this.tableOffset + n * PCI_MSIX_ENTRY_SIZE;
    if (this.tableOffset % 8 || this.pbaOffset % 8)
      throw new Error('MSI-X table and PBA must be 8-byte aligned');
    this.honourTableMask = spec.honourTableMask ?? false;
    this.table = new Uint8Array(n * PCI_MSIX_ENTRY_SIZE);
    this.tableView = new DataView(this.table.buffer);
    this.pba = new Uint8Array(Math.ceil(n / 64) * 8);
    const tEnd = this.tableOffset + this.table.length;
    const pEnd = this.pbaOffset + this.pba.length;
    if (this.tableOffset < pEnd && this.pbaOffset < tEnd) throw new Error('MSI-X table and PBA overlap');

    const off = caps.add(PCI_CAP_ID_MSIX, PCI_MSIX_SIZEOF);
    this.offset = off;
    cfg.set16(off + PCI_MSIX_FLAGS, n - 1);
    cfg.setWmask(off + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    cfg.set32(off + PCI_MSIX_TABLE, this.tableOffset | this.bar);
    cfg.set32(off + PCI_MSIX_PBA, this.pbaOffset | this.bar);
    cfg.onWrite(off + PCI_MSIX_FLAGS, 2, () => this.releasePending());
    this.resetTable();
  }

  /** BAR byte ranges that MsixCapability serves (install them on the BAR region). */
  overlays(): BarOverlay[] {
    return [
      {
        start: this.tableOffset,
        end: this.tableOffset + this.table.length,
        read: (o, s) => this.readBytes(this.table, o - this.tableOffset, s),
        write: (o, s, v) => this.writeTable(o - this.tableOffset, s, v),
      },
      {
        start: this.pbaOffset,
        end: this.pbaOffset + this.pba.length,
        read: (o, s) => this.readBytes(this.pba, o - this.pbaOffset, s),
        // The PBA is read-only.
        write: () => {},
      },
    ];
  }

  get enabled(): boolean {
    return (this.cfg.get16(this.offset + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  get functionMasked(): boolean {
    return (this.cfg.get16(this.offset + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_MASKALL) !== 0;
  }

  vectorMasked(v: number): boolean {
    const ctrl = this.tableView.getUint32(v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, true);
    return (ctrl & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  isPending(v: number): boolean {
    return ((this.pba[v >> 3]! >> (v & 7)) & 1) === 1;
  }

  private setPending(v: number, on: boolean): void {
    if (on) this.pba[v >> 3]! |= 1 << (v & 7);
    else this.pba[v >> 3]! &= ~(1 << (v & 7));
  }

  private blocked(v: number): boolean {
    return this.functionMasked || (this.honourTableMask && this.vectorMasked(v));
  }

  /**
   * Signal vector `v` (caller checked `enabled`). Masked: set its pending bit. Returns false when the vector
   * does not exist or was left pending.
   */
  notify(v: number): boolean {
    if (!Number.isInteger(v) || v < 0 || v >= this.vectors) return false;
    if (this.blocked(v)) {
      this.setPending(v, true);
      return false;
    }
    this.fire(v);
    return true;
  }

  /** Deliver pending vectors that are no longer masked. */
  private releasePending(): void {
    if (!this.enabled) return;
    for (let v = 0; v < this.vectors; v++) {
      if (this.isPending(v) && !this.blocked(v)) {
        this.setPending(v, false);
        this.fire(v);
      }
    }
  }

  private readBytes(src: Uint8Array, at: number, size: AccessSize): bigint {
    let v = 0n;
    for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(src[at + i] ?? 0);
    return v;
  }

  private writeTable(at: number, size: AccessSize, value: bigint): void {
    for (let i = 0; i < size; i++) {
      const off = at + i;
      if (off >= this.table.length) break;
      let b = Number((value >> BigInt(8 * i)) & 0xffn);
      const field = off % PCI_MSIX_ENTRY_SIZE;
      // Message address bits 1:0 and Vector Control bits 31:1 are reserved (read-only 0).
      if (field === 0) b &= 0xfc;
      else if (field === PCI_MSIX_ENTRY_VECTOR_CTRL) b &= PCI_MSIX_ENTRY_CTRL_MASKBIT;
      else if (field > PCI_MSIX_ENTRY_VECTOR_CTRL) b = 0;
      this.table[off] = b;
    }
    if (this.honourTableMask) this.releasePending();
  }

  /** Power-on state: every vector masked (PCI 3.0 6.8.2.9), nothing pending. */
  resetTable(): void {
    this.table.fill(0);
    for (let v = 0; v < this.vectors; v++) {
      this.tableView.setUint32(
        v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL,
        PCI_MSIX_ENTRY_CTRL_MASKBIT,
        true,
      );
    }
    this.pba.fill(0);
  }
}
