// QEMU's educational PCI device (hw/misc/edu.c, docs/specs/edu.rst), register for register.
//
// PCI: 1234:11e8, subsystem 1af4:1100 (QEMU's default), class 0x00ff (base 0x00, sub-class 0xff), revision
// 0x10, BAR0 = 1 MiB 32-bit non-prefetchable MMIO, INTx pin A, one 64-bit MSI vector without masking.
//
// BAR0 registers (accesses below 0x80 must be 4 bytes, from 0x80 up 4 or 8; anything else reads all-ones and
// writes are dropped, as in QEMU):
//   0x00 RO  identification 0x010000ed
//   0x04 RW  liveness: reads back the bitwise NOT of the last value written
//   0x08 RW  factorial: write n, wait for status bit 0 to clear, read n! (mod 2^32)
//   0x20 RW  status: 0x01 computing (RO), 0x80 raise interrupt 0x01 when the factorial is done
//   0x24 RO  interrupt status
//   0x60 WO  interrupt raise: ORed into the interrupt status, raises the interrupt
//   0x64 WO  interrupt acknowledge: cleared from the interrupt status; the line drops when it reaches 0
//   0x80 RW  DMA source, 0x88 DMA destination, 0x90 DMA count (u64; read-only while a transfer runs)
//   0x98 RW  DMA command: 0x01 start, 0x02 direction (0 RAM->edu, 1 edu->RAM), 0x04 raise 0x100 when done
//   0x9c RO  DMA error register (NOT in QEMU's edu, see below)
// The DMA buffer is 4 KiB at edu address 0x40000.
//
// Differences from QEMU, all on purpose:
// - QEMU's edu calls hw_error() (aborting QEMU) for a transfer outside the buffer; a failed pci_dma_* is
//   silent. Here no DMA problem ever throws: the transfer is dropped, the start bit clears (and the
//   completion interrupt is raised if asked for, so a driver waiting for it does not hang), a warning is
//   logged, and the DMA error register at 0x9c records it: bits 7:0 = last error (EduDmaError), bits 31:16 =
//   number of failed transfers (saturating at 0xffff). Reset clears it.
// - DMA needs COMMAND.Bus Master Enable, as on a real bus (QEMU's edu would DMA into a disabled address space).
// - Transfers run after `dmaDelayMs` (default 0: the next event-loop turn) instead of a 100 ms timer, and the
//   factorial after `factDelayMs`; n! is computed in O(1) because n! mod 2^32 = 0 for n >= 34.
// - IOVAs are not clamped unless `dmaMask` is given (QEMU's default dma_mask 2^28-1 silently clamps).
// - DEVICE_RESET also resets the edu registers (QEMU's edu keeps them; only its config space resets).
//
// Migration (pci/migration.ts): the saved state is every register, the DMA buffer and the DMA error register.
// Stopping (any migration state but RUNNING/PRE_COPY) quiesces the device: a scheduled factorial or DMA
// transfer is held (COMPUTING / the DMA start bit stay set, so they are part of the saved state), a transfer
// already in flight is awaited, and writes that would start work only latch it. Running again (on the source,
// or on the destination after the load) starts whatever is pending.

import { Errno } from 'vfio-user-protocol';
import { type DeviceContext, DeviceError, type DeviceLogger } from '../device.js';
import { type AccessSize, PciDevice, type PciDeviceModel } from '../pci/index.js';

export const EDU_VENDOR_ID = 0x1234;
export const EDU_DEVICE_ID = 0x11e8;
export const EDU_BAR0_SIZE = 1 << 20;
export const EDU_DMA_START = 0x40000n;
export const EDU_DMA_SIZE = 4096n;

export const EduReg = {
  IDENT: 0x00,
  LIVENESS: 0x04,
  FACTORIAL: 0x08,
  STATUS: 0x20,
  IRQ_STATUS: 0x24,
  IRQ_RAISE: 0x60,
  IRQ_ACK: 0x64,
  DMA_SRC: 0x80,
  DMA_DST: 0x88,
  DMA_COUNT: 0x90,
  DMA_CMD: 0x98,
  /** Ours, not QEMU's: see the file comment. */
  DMA_ERROR: 0x9c,
} as const;

export const EDU_IDENT = 0x010000ed;
export const EDU_STATUS_COMPUTING = 0x01;
export const EDU_STATUS_IRQFACT = 0x80;
export const EDU_DMA_RUN = 0x1;
export const EDU_DMA_DIR_TO_RAM = 0x2;
export const EDU_DMA_IRQ = 0x4;
export const EDU_FACT_IRQ = 0x1;
export const EDU_DMA_IRQ_VALUE = 0x100;

/** Codes in bits 7:0 of the DMA error register. */
export const EduDmaError = {
  NONE: 0,
  /** The edu-side range is outside 0x40000..0x40fff, the count exceeds 4096, or an address wraps. */
  RANGE: 1,
  /** The DMA accessor refused the guest-side range (unmapped IOVA, missing permission, client failure). */
  FAULT: 2,
  /** No client attached when the transfer ran, or it went away during the transfer. */
  NO_CLIENT: 3,
  /** COMMAND.Bus Master Enable is clear. */
  BUS_MASTER: 4,
} as const;

export interface EduOptions {
  /** Delay before a started DMA transfer runs, ms (default 0 = next event-loop turn; QEMU: 100). */
  dmaDelayMs?: number;
  /** Delay before a factorial completes, ms (default 0 = next event-loop turn). */
  factDelayMs?: number;
  /** AND-mask applied to guest-side DMA addresses, like QEMU's `dma_mask` (default: none). */
  dmaMask?: bigint;
  name?: string;
  /** Logger used while no client is attached. */
  log?: DeviceLogger;
}

/** Counters of the edu device: factorials, DMA transfers, bytes and errors, interrupts raised. */
export interface EduStats {
  factorials: number;
  dmaTransfers: number;
  dmaBytes: number;
  dmaErrors: number;
  lastDmaError: number;
  interruptsRaised: number;
}

const ALL_ONES = 0xffffffffffffffffn;
const U64 = 0xffffffffffffffffn;

/** n! mod 2^32, as QEMU's uint32_t loop computes it (without 4 billion iterations: n! has >= 32 factors of 2
 * for n >= 34). */
export function eduFactorial(n: number): number {
  if (n >= 34) return 0;
  let r = 1;
  for (let i = 2; i <= n; i++) r = Math.imul(r, i) >>> 0;
  return r >>> 0;
}

type Timer = { kind: 'immediate'; h: NodeJS.Immediate } | { kind: 'timeout'; h: NodeJS.Timeout };

function schedule(delayMs: number, fn: () => void): Timer {
  return delayMs > 0
    ? { kind: 'timeout', h: setTimeout(fn, delayMs) }
    : { kind: 'immediate', h: setImmediate(fn) };
}

function cancel(t: Timer | undefined): void {
  if (!t) return;
  if (t.kind === 'timeout') clearTimeout(t.h);
  else clearImmediate(t.h);
}

/** The edu device model; `pci` is the VfioUserDevice. */
export class Edu implements PciDeviceModel {
  readonly stats: EduStats = {
    factorials: 0,
    dmaTransfers: 0,
    dmaBytes: 0,
    dmaErrors: 0,
    lastDmaError: 0,
    interruptsRaised: 0,
  };
  readonly pci: PciDevice<Edu>;
  /** The 4 KiB DMA buffer (edu addresses 0x40000..0x40fff). */
  readonly buffer = new Uint8Array(Number(EDU_DMA_SIZE));

  private readonly dmaDelayMs: number;
  private readonly factDelayMs: number;
  private readonly dmaMask: bigint;
  private ctx: DeviceContext | undefined;

  private liveness = 0;
  private fact = 0;
  private status = 0;
  private irqStatus = 0;
  private dmaSrc = 0n;
  private dmaDst = 0n;
  private dmaCount = 0n;
  private dmaCmd = 0n;
  private dmaErrorCount = 0;
  private dmaLastError = 0;
  /** Bumped to drop DMA work scheduled or in flight before (reset, detach, close). */
  private dmaEpoch = 0;
  /** Bumped to drop a factorial scheduled before (reset, close). */
  private factEpoch = 0;
  private dmaTimer: Timer | undefined;
  private factTimer: Timer | undefined;
  /** The transfer being executed (awaiting the DMA accessor), if any. */
  private dmaInflight: Promise<void> | undefined;
  /** Migration: stopped devices make no progress (see the file comment). */
  private stopped = false;

  constructor(opts: EduOptions = {}) {
    this.dmaDelayMs = Math.max(0, opts.dmaDelayMs ?? 0);
    this.factDelayMs = Math.max(0, opts.factDelayMs ?? 0);
    this.dmaMask = opts.dmaMask ?? U64;
    this.pci = new PciDevice<Edu>(
      {
        name: opts.name ?? 'edu',
        vendorId: EDU_VENDOR_ID,
        deviceId: EDU_DEVICE_ID,
        subsystemVendorId: 0x1af4,
        subsystemId: 0x1100,
        classCode: 0x00ff00,
        revision: 0x10,
        bars: [
          {
            size: EDU_BAR0_SIZE,
            maxAccess: 8,
            handler: { read: (o, s) => this.read(o, s), write: (o, s, v) => this.write(o, s, v) },
          },
        ],
        caps: { msi: { vectors: 1, is64: true, perVectorMask: false } },
        intxPin: 1,
        log: opts.log,
      },
      this,
    );
  }

  private get log(): DeviceLogger {
    return this.pci.log;
  }

  /** The DMA error register (0x9c). */
  get dmaErrorRegister(): number {
    return ((Math.min(this.dmaErrorCount, 0xffff) << 16) | this.dmaLastError) >>> 0;
  }

  // ---- MMIO -----------------------------------------------------------------------------------------

  read(addr: number, size: AccessSize): bigint | number {
    if (!this.sizeOk(addr, size)) {
      this.log.debug({ addr, size }, 'edu: bad read size');
      return ALL_ONES;
    }
    switch (addr) {
      case EduReg.IDENT:
        return EDU_IDENT;
      case EduReg.LIVENESS:
        return this.liveness;
      case EduReg.FACTORIAL:
        return this.fact;
      case EduReg.STATUS:
        return this.status;
      case EduReg.IRQ_STATUS:
        return this.irqStatus;
      case EduReg.DMA_SRC:
        return this.dmaSrc;
      case EduReg.DMA_DST:
        return this.dmaDst;
      case EduReg.DMA_COUNT:
        return this.dmaCount;
      case EduReg.DMA_CMD:
        return this.dmaCmd;
      case EduReg.DMA_ERROR:
        return this.dmaErrorRegister;
      default:
        return ALL_ONES;
    }
  }

  write(addr: number, size: AccessSize, value: bigint): void {
    if (!this.sizeOk(addr, size)) {
      this.log.debug({ addr, size }, 'edu: bad write size, ignored');
      return;
    }
    const v32 = Number(value & 0xffffffffn);
    switch (addr) {
      case EduReg.LIVENESS:
        this.liveness = ~v32 >>> 0;
        break;
      case EduReg.FACTORIAL:
        if (this.status & EDU_STATUS_COMPUTING) break;
        this.fact = v32;
        this.status |= EDU_STATUS_COMPUTING;
        this.startFactorial();
        break;
      case EduReg.STATUS:
        // Only IRQFACT is writable; COMPUTING is the device's.
        if (v32 & EDU_STATUS_IRQFACT) this.status |= EDU_STATUS_IRQFACT;
        else this.status &= ~EDU_STATUS_IRQFACT;
        break;
      case EduReg.IRQ_RAISE:
        this.raiseIrq(v32);
        break;
      case EduReg.IRQ_ACK:
        this.lowerIrq(v32);
        break;
      case EduReg.DMA_SRC:
        if (!this.dmaRunning) this.dmaSrc = value;
        break;
      case EduReg.DMA_DST:
        if (!this.dmaRunning) this.dmaDst = value;
        break;
      case EduReg.DMA_COUNT:
        if (!this.dmaRunning) this.dmaCount = value;
        break;
      case EduReg.DMA_CMD:
        // As QEMU: a command without the start bit, or while a transfer runs, is ignored.
        if (!(value & BigInt(EDU_DMA_RUN)) || this.dmaRunning) break;
        this.dmaCmd = value;
        this.startDma();
        break;
      default:
        break;
    }
  }

  private sizeOk(addr: number, size: AccessSize): boolean {
    return addr < 0x80 ? size === 4 : size === 4 || size === 8;
  }

  // ---- interrupts -----------------------------------------------------------------------------------

  private raiseIrq(val: number): void {
    this.irqStatus = (this.irqStatus | val) >>> 0;
    if (this.irqStatus) {
      this.stats.interruptsRaised++;
      this.pci.raise(0);
    }
  }

  private lowerIrq(val: number): void {
    this.irqStatus = (this.irqStatus & ~val) >>> 0;
    if (!this.irqStatus) this.pci.lower();
  }

  // ---- factorial ------------------------------------------------------------------------------------

  private startFactorial(): void {
    if (this.stopped) return; // resumed by setRunning(true)
    const epoch = this.factEpoch;
    this.factTimer = schedule(this.factDelayMs, () => {
      this.factTimer = undefined;
      if (epoch !== this.factEpoch) return;
      this.fact = eduFactorial(this.fact);
      this.status &= ~EDU_STATUS_COMPUTING;
      this.stats.factorials++;
      if (this.status & EDU_STATUS_IRQFACT) this.raiseIrq(EDU_FACT_IRQ);
    });
  }

  // ---- DMA ------------------------------------------------------------------------------------------

  private get dmaRunning(): boolean {
    return (this.dmaCmd & BigInt(EDU_DMA_RUN)) !== 0n;
  }

  private startDma(): void {
    if (this.stopped) return; // resumed by setRunning(true)
    const epoch = this.dmaEpoch;
    this.dmaTimer = schedule(this.dmaDelayMs, () => {
      this.dmaTimer = undefined;
      if (epoch !== this.dmaEpoch) return;
      // runDma never rejects; the catch is belt and braces so nothing escapes into the event loop.
      const run = this.runDma(epoch).catch((err: unknown) => this.log.error({ err }, 'edu: DMA bug'));
      const tracked: Promise<void> = run.finally(() => {
        if (this.dmaInflight === tracked) this.dmaInflight = undefined;
      });
      this.dmaInflight = tracked;
    });
  }

  private async runDma(epoch: number): Promise<void> {
    const cmd = this.dmaCmd;
    const count = this.dmaCount;
    const toRam = (cmd & BigInt(EDU_DMA_DIR_TO_RAM)) !== 0n;
    // The edu side and the guest side of the transfer.
    const eduAddr = toRam ? this.dmaSrc : this.dmaDst;
    const ramAddr = (toRam ? this.dmaDst : this.dmaSrc) & this.dmaMask;
    const ctx = this.ctx;
    let error: number = EduDmaError.NONE;
    let detail: unknown;

    if (eduAddr < EDU_DMA_START || count > EDU_DMA_SIZE || eduAddr + count > EDU_DMA_START + EDU_DMA_SIZE) {
      error = EduDmaError.RANGE;
    } else if (!ctx) {
      error = EduDmaError.NO_CLIENT;
    } else if (!this.pci.busMasterEnabled) {
      error = EduDmaError.BUS_MASTER;
    } else if (ramAddr + count > U64 + 1n) {
      error = EduDmaError.FAULT;
      detail = 'guest address range wraps';
    } else if (count > 0n) {
      const at = Number(eduAddr - EDU_DMA_START);
      const n = Number(count);
      try {
        if (toRam) {
          await ctx.dma.write(ramAddr, this.buffer.slice(at, at + n));
        } else {
          const data = await ctx.dma.read(ramAddr, n);
          if (epoch !== this.dmaEpoch) return;
          if (data.length !== n) throw new Error(`short DMA read: ${data.length} of ${n} bytes`);
          this.buffer.set(data, at);
        }
      } catch (err) {
        error = EduDmaError.FAULT;
        detail = err instanceof Error ? err.message : String(err);
      }
    }
    // A reset, detach or close while the transfer was in flight already settled it.
    if (epoch !== this.dmaEpoch) return;

    this.dmaCmd &= ~BigInt(EDU_DMA_RUN);
    if (error !== EduDmaError.NONE) {
      this.recordDmaError(error);
      this.log.warn(
        {
          error,
          detail,
          src: `0x${this.dmaSrc.toString(16)}`,
          dst: `0x${this.dmaDst.toString(16)}`,
          count: `0x${count.toString(16)}`,
          cmd: Number(cmd),
        },
        'edu: DMA transfer failed',
      );
    } else {
      this.stats.dmaTransfers++;
      this.stats.dmaBytes += Number(count);
    }
    if (cmd & BigInt(EDU_DMA_IRQ)) this.raiseIrq(EDU_DMA_IRQ_VALUE);
  }

  private recordDmaError(code: number): void {
    this.dmaErrorCount++;
    this.dmaLastError = code;
    this.stats.dmaErrors++;
    this.stats.lastDmaError = code;
  }

  /** Drop a scheduled or in-flight DMA transfer. */
  private stopDma(): void {
    this.dmaEpoch++;
    cancel(this.dmaTimer);
    this.dmaTimer = undefined;
  }

  /** Drop a scheduled factorial. */
  private stopFactorial(): void {
    this.factEpoch++;
    cancel(this.factTimer);
    this.factTimer = undefined;
  }

  // ---- migration ------------------------------------------------------------------------------------

  saveState(): EduState {
    return {
      liveness: this.liveness,
      fact: this.fact,
      status: this.status,
      irqStatus: this.irqStatus,
      dmaSrc: this.dmaSrc.toString(),
      dmaDst: this.dmaDst.toString(),
      dmaCount: this.dmaCount.toString(),
      dmaCmd: this.dmaCmd.toString(),
      dmaErrorCount: this.dmaErrorCount,
      dmaLastError: this.dmaLastError,
      buffer: this.buffer.slice(),
    };
  }

  loadState(state: unknown): void {
    const s = checkEduState(state);
    // Whatever was scheduled belongs to the state being replaced.
    this.stopDma();
    this.stopFactorial();
    this.liveness = s.liveness;
    this.fact = s.fact;
    this.status = s.status;
    this.irqStatus = s.irqStatus;
    this.dmaSrc = BigInt(s.dmaSrc);
    this.dmaDst = BigInt(s.dmaDst);
    this.dmaCount = BigInt(s.dmaCount);
    this.dmaCmd = BigInt(s.dmaCmd);
    this.dmaErrorCount = s.dmaErrorCount;
    this.dmaLastError = s.dmaLastError;
    this.buffer.set(s.buffer);
    if (!this.stopped) this.resumePending();
  }

  async setRunning(running: boolean): Promise<void> {
    if (running) {
      if (!this.stopped) return;
      this.stopped = false;
      this.resumePending();
      return;
    }
    this.stopped = true;
    // Hold scheduled work (its state stays latched in the registers)...
    this.factEpoch++;
    cancel(this.factTimer);
    this.factTimer = undefined;
    if (this.dmaTimer) {
      this.dmaEpoch++;
      cancel(this.dmaTimer);
      this.dmaTimer = undefined;
    }
    // ...and let a transfer already touching guest memory finish: it cannot be taken back.
    if (this.dmaInflight) await this.dmaInflight;
  }

  /** Start the work the registers say is pending (after a stop or a load). */
  private resumePending(): void {
    if (this.status & EDU_STATUS_COMPUTING && !this.factTimer) this.startFactorial();
    if (this.dmaRunning && !this.dmaTimer && !this.dmaInflight) this.startDma();
  }

  // ---- PciDeviceModel -------------------------------------------------------------------------------

  reset(): void {
    this.stopDma();
    this.stopFactorial();
    this.liveness = 0;
    this.fact = 0;
    this.status = 0;
    this.irqStatus = 0;
    this.dmaSrc = 0n;
    this.dmaDst = 0n;
    this.dmaCount = 0n;
    this.dmaCmd = 0n;
    this.dmaErrorCount = 0;
    this.dmaLastError = 0;
    this.buffer.fill(0);
  }

  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }

  detach(): void {
    // The client's memory is gone: a pending or in-flight transfer fails; the factorial carries on.
    if (this.dmaRunning) {
      this.stopDma();
      this.dmaCmd &= ~BigInt(EDU_DMA_RUN);
      this.recordDmaError(EduDmaError.NO_CLIENT);
      this.log.warn('edu: client detached during a DMA transfer');
    }
    this.ctx = undefined;
  }

  close(): void {
    this.stopDma();
    this.stopFactorial();
    this.ctx = undefined;
  }
}

/** The edu model's saved state (msgpackr-encoded inside the PCI state; u64 registers as decimal strings). */
export interface EduState {
  liveness: number;
  fact: number;
  status: number;
  irqStatus: number;
  dmaSrc: string;
  dmaDst: string;
  dmaCount: string;
  dmaCmd: string;
  dmaErrorCount: number;
  dmaLastError: number;
  buffer: Uint8Array;
}

const U32_FIELDS = ['liveness', 'fact', 'status', 'irqStatus', 'dmaErrorCount', 'dmaLastError'] as const;
const U64_FIELDS = ['dmaSrc', 'dmaDst', 'dmaCount', 'dmaCmd'] as const;

/** Validates a saved edu state (DeviceError EINVAL on anything else). */
function checkEduState(state: unknown): EduState {
  const bad = (what: string): never => {
    throw new DeviceError(Errno.EINVAL, `edu migration state refused: ${what}`);
  };
  if (typeof state !== 'object' || state === null) bad('not an object');
  const s = state as Record<string, unknown>;
  for (const k of U32_FIELDS) {
    const v = s[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffffffff) bad(`${k} = ${String(v)}`);
  }
  for (const k of U64_FIELDS) {
    const v = s[k];
    if (typeof v !== 'string' || !/^[0-9]{1,20}$/.test(v) || BigInt(v) > U64) bad(`${k} = ${String(v)}`);
  }
  if (!(s.buffer instanceof Uint8Array) || s.buffer.length !== Number(EDU_DMA_SIZE)) bad('DMA buffer');
  return s as unknown as EduState;
}

/** The edu device as the engine sees it, plus its counters. */
export type EduDevice = PciDevice<Edu> & { readonly stats: Readonly<EduStats> };

/** Create an edu device (see Edu for the options). */
export function createEdu(opts: EduOptions = {}): EduDevice {
  const edu = new Edu(opts);
  return Object.defineProperty(edu.pci, 'stats', { get: () => edu.stats, enumerable: true }) as EduDevice;
}
