// Migration for any PciDevice: the generic half of the device's saved state.
//
// The stream is one msgpackr-encoded object:
//   { magic: 'vfio-user-ts/pci', version: 1,
//     id: { vendor, device, subVendor, subId, revision, classCode, configSize, bars: [size | 0] x6 },
//     config: bytes, msix: { table, pba } | null, bars: (bytes | null) x6, intx: boolean, model: <model state> }
// `id` must match the loading device exactly (MIG-13: a stream for another device is refused), every field is
// type- and size-checked, and nothing changes until the whole stream (the model's part included) has been
// validated: a refused load leaves the device as it was. msgpackr refuses truncated input, and the engine's
// framing (session/migration.ts) refuses a torn frame before we ever see it. msgpackr trusts the counts it reads,
// so the bytes first pass a structural walk with budgets (msgpack-budget.ts, PCI_STATE_BUDGET): a msgpack bomb is
// EINVAL in microseconds instead of gigabytes and seconds with the loop blocked.
//
// The model contributes its own state through PciDeviceModel.saveState/loadState and is told when the device
// starts and stops running (setRunning): a stopped device must make no progress (no DMA, no interrupts). The
// engine's facet (device.ts DeviceMigration) has the same three verbs, with the whole state as bytes.

import { pack, unpack } from 'msgpackr';
import { Errno, MigrationFlags } from 'vfio-user-protocol';
import { DeviceError, type DeviceMigration } from '../device.js';
import type { BarRegion } from './bar.js';
import type { ConfigSpace } from './config-space.js';
import {
  PCI_CLASS_PROG,
  PCI_DEVICE_ID,
  PCI_REVISION_ID,
  PCI_SUBSYSTEM_ID,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
} from './constants.js';
import type { InterruptRouter } from './interrupts.js';
import { checkMsgpack, type MsgpackBudget, MsgpackBudgetWalk } from './msgpack-budget.js';
import type { MsixCapability } from './msix.js';

/**
 * What a saved PCI device state may cost to decode: its bytes are bounded by the engine's resume cap; a real
 * state has a few dozen values (config space, BARs and buffers are single byte strings), so 64 Ki values and
 * 32 levels leave room for any model while keeping the decoder's allocations small.
 */
export const PCI_STATE_BUDGET: MsgpackBudget = {
  maxBytes: 256 << 20,
  maxElements: 1 << 16,
  maxDepth: 32,
  maxMs: 100,
};

/** The `magic` field of a saved PciDevice state. */
export const PCI_STATE_MAGIC = 'vfio-user-ts/pci';
/** The `version` field of a saved PciDevice state; a load refuses any other. */
export const PCI_STATE_VERSION = 1;

/** What a PciDeviceModel implements to be migratable. */
export interface PciMigratableModel {
  /** A msgpackr-encodable snapshot of the model's registers and memory (taken while stopped, or PRE_COPY). */
  saveState(): unknown;
  /** Validate `state` (from saveState of the same model), then apply it; throw DeviceError(EINVAL) first. */
  loadState(state: unknown): void;
  /** Running (RUNNING/PRE_COPY) or stopped (every other state); may wait for in-flight work to settle. */
  setRunning?(running: boolean): void | Promise<void>;
}

/** The parts of a PciDevice the generic state covers. */
export interface PciStateParts {
  config: ConfigSpace;
  bars: readonly (BarRegion | undefined)[];
  msix: MsixCapability | undefined;
  irq: InterruptRouter;
  model: PciMigratableModel;
}

interface Identity {
  vendor: number;
  device: number;
  subVendor: number;
  subId: number;
  revision: number;
  classCode: number;
  configSize: number;
  bars: number[];
}

function identity(p: PciStateParts): Identity {
  const c = p.config;
  return {
    vendor: c.get16(PCI_VENDOR_ID),
    device: c.get16(PCI_DEVICE_ID),
    subVendor: c.get16(PCI_SUBSYSTEM_VENDOR_ID),
    subId: c.get16(PCI_SUBSYSTEM_ID),
    revision: c.get8(PCI_REVISION_ID),
    classCode: c.get32(PCI_CLASS_PROG - 1) >>> 8,
    configSize: c.size,
    bars: Array.from({ length: 6 }, (_, i) => Number(p.bars[i]?.size ?? 0n)),
  };
}

function bad(message: string): never {
  throw new DeviceError(Errno.EINVAL, `migration state refused: ${message}`);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function bytesOf(v: unknown, length: number, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) bad(`${what} is not bytes`);
  if (v.length !== length) bad(`${what} is ${v.length} bytes, expected ${length}`);
  return v;
}

/**
 * The migration facet of a PciDevice whose model implements saveState/loadState: the generic PCI state (config
 * space, MSI-X, BAR memory, INTx level) around the model's own, as one validated msgpack stream.
 */
export class PciMigration implements DeviceMigration {
  readonly flags = MigrationFlags.STOP_COPY | MigrationFlags.PRE_COPY;

  constructor(private readonly p: PciStateParts) {}

  saveState(): Uint8Array {
    const p = this.p;
    return pack({
      magic: PCI_STATE_MAGIC,
      version: PCI_STATE_VERSION,
      id: identity(p),
      config: p.config.bytes.slice(),
      msix: p.msix ? { table: p.msix.table.slice(), pba: p.msix.pba.slice() } : null,
      bars: Array.from({ length: 6 }, (_, i) => p.bars[i]?.backing?.slice() ?? null),
      intx: p.irq.intxAsserted,
      model: p.model.saveState(),
    });
  }

  /** The budget walk as the state arrives: a msgpack bomb fails the MIG_DATA_WRITE that reveals it. */
  incomingCheck(length: number): MsgpackBudgetWalk {
    return new MsgpackBudgetWalk(length, PCI_STATE_BUDGET);
  }

  loadState(state: Uint8Array): void {
    const p = this.p;
    let s: unknown;
    try {
      checkMsgpack(state, PCI_STATE_BUDGET);
      s = unpack(state);
    } catch (err) {
      bad(`not a msgpack stream (${(err as Error).message})`);
    }
    if (!isRecord(s) || s.magic !== PCI_STATE_MAGIC) bad('not a PCI device state');
    if (s.version !== PCI_STATE_VERSION) bad(`version ${String(s.version)}, expected ${PCI_STATE_VERSION}`);
    const want = identity(p);
    const got = s.id;
    if (!isRecord(got) || JSON.stringify(got) !== JSON.stringify(want)) {
      bad(`saved from another device (${JSON.stringify(got)}; this is ${JSON.stringify(want)})`);
    }
    const config = bytesOf(s.config, p.config.size, 'config space');
    let msix: { table: Uint8Array; pba: Uint8Array } | undefined;
    if (p.msix) {
      if (!isRecord(s.msix)) bad('MSI-X state missing');
      msix = {
        table: bytesOf(s.msix.table, p.msix.table.length, 'MSI-X table'),
        pba: bytesOf(s.msix.pba, p.msix.pba.length, 'MSI-X PBA'),
      };
    } else if (s.msix !== null) bad('MSI-X state for a device without MSI-X');
    if (!Array.isArray(s.bars) || s.bars.length !== 6) bad('BAR list');
    const bars = (s.bars as unknown[]).map((b, i) => {
      const backing = p.bars[i]?.backing;
      if (!backing) {
        if (b !== null) bad(`BAR${i} contents for a BAR without memory`);
        return undefined;
      }
      return bytesOf(b, backing.length, `BAR${i}`);
    });
    if (typeof s.intx !== 'boolean') bad('INTx level');
    // The model validates its part and applies it; only then does the generic part change (nothing can fail).
    p.model.loadState(s.model);
    p.config.bytes.set(config);
    if (p.msix && msix) {
      p.msix.table.set(msix.table);
      p.msix.pba.set(msix.pba);
    }
    bars.forEach((b, i) => {
      if (b) p.bars[i]!.backing!.set(b);
    });
    p.irq.restoreIntx(s.intx);
  }

  setRunning(running: boolean): void | Promise<void> {
    return this.p.model.setRunning?.(running);
  }
}

/** Whether `model` implements the migration hooks. */
export function isMigratableModel(model: unknown): model is PciMigratableModel {
  const m = model as Partial<PciMigratableModel> | undefined;
  return typeof m?.saveState === 'function' && typeof m.loadState === 'function';
}
