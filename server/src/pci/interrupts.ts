// Interrupt routing for a PCI function: one `raise(vector)` for device models, delivered as MSI-X, MSI or
// INTx depending on what the guest enabled in config space.
//
// INTx is a level: raise() asserts it, lower() de-asserts it. vfio-user has no "de-assert" message: the client
// automasks INTx when the eventfd fires and unmasks it (SET_IRQS NONE|UNMASK, or the KVM resample fd) after
// the guest's EOI. The engine then calls irqStateChanged(INTX) (the same as intxUnmasked()); a line that is
// still asserted fires again, which is how a level interrupt behaves. STATUS.Interrupt Status mirrors the
// line, and COMMAND.Interrupt Disable keeps an asserted line from being signalled until it is cleared.
//
// The engine's IrqSink latches a trigger on a masked vector as "pending" and delivers it at the unmask, and it
// calls irqStateChanged after *every* INTx SET_IRQS (assign, mask, unmask, disable), so the router keeps its
// own view of the client's automask to signal each assertion once:
// - `clientMasked`: we signalled (or the sink latched our trigger) and no unmask has been seen since: a new
//   assertion waits for the unmask instead of piling up in the sink;
// - `sinkHolds`: our trigger was latched as pending in the sink, which delivers it at the unmask; the next
//   irqStateChanged therefore does not signal again.
// A trigger that found no eventfd (isEnabled false) leaves both clear: the line fires when one is wired.

import { IrqIndex } from 'vfio-user-protocol';
import type { DeviceLogger, IrqSink } from '../device.js';
import type { ConfigSpace } from './config-space.js';
import { PCI_COMMAND, PCI_COMMAND_INTX_DISABLE, PCI_STATUS, PCI_STATUS_INTERRUPT } from './constants.js';
import type { MsiCapability } from './msi.js';
import type { MsixCapability } from './msix.js';

/** Which mechanism a raise() used. */
export type IrqRoute = 'msix' | 'msi' | 'intx' | 'none';

/**
 * Interrupt delivery of a PCI function: raise(vector) goes out as MSI-X, MSI or INTx, whichever the guest enabled;
 * INTx as a level.
 */
export class InterruptRouter {
  private asserted = false;
  private clientMasked = false;
  private sinkHolds = false;
  msi: MsiCapability | undefined;
  msix: MsixCapability | undefined;

  constructor(
    private readonly cfg: ConfigSpace,
    private readonly pin: number,
    private readonly sink: () => IrqSink | undefined,
    private readonly log: () => DeviceLogger,
  ) {
    cfg.onWrite(PCI_COMMAND, 2, (prev) => {
      const was = prev.getUint16(PCI_COMMAND, true) & PCI_COMMAND_INTX_DISABLE;
      // Clearing Interrupt Disable with the line asserted signals it (the client saw nothing so far).
      if (was && !this.intxDisabled && this.asserted && !this.clientMasked) this.fireIntx();
    });
  }

  /** Signal `index`/`vector` on the client's eventfd; false when nothing was signalled. */
  trigger(index: number, vector: number): boolean {
    const sink = this.sink();
    if (!sink) {
      this.log().debug({ index, vector }, 'interrupt with no client attached');
      return false;
    }
    return sink.trigger(index, vector);
  }

  private get intxDisabled(): boolean {
    return (this.cfg.get16(PCI_COMMAND) & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** The INTx line level. */
  get intxAsserted(): boolean {
    return this.asserted;
  }

  /** Migration restore: the saved INTx line level (the new client's eventfds learn it through intxUnmasked). */
  restoreIntx(asserted: boolean): void {
    this.asserted = asserted;
  }

  /**
   * Raise interrupt `vector`: MSI-X when enabled (function-masked or masked: pending), else MSI when enabled
   * (masked: pending), else assert INTx (the vector is ignored; there is one line).
   */
  raise(vector = 0): IrqRoute {
    if (this.msix?.enabled) {
      if (vector >= this.msix.vectors) {
        this.log().debug({ vector }, 'MSI-X vector out of range, dropped');
        return 'none';
      }
      this.msix.notify(vector);
      return 'msix';
    }
    if (this.msi?.enabled) {
      this.msi.notify(vector);
      return 'msi';
    }
    if (this.pin === 0) return 'none';
    if (!this.asserted) {
      this.asserted = true;
      this.cfg.update16(PCI_STATUS, PCI_STATUS_INTERRUPT, true);
      if (!this.intxDisabled && !this.clientMasked) this.fireIntx();
    }
    return 'intx';
  }

  /** De-assert INTx (MSI/MSI-X are edge-like: nothing to do). */
  lower(): void {
    if (!this.asserted) return;
    this.asserted = false;
    this.cfg.update16(PCI_STATUS, PCI_STATUS_INTERRUPT, false);
  }

  /**
   * The client unmasked INTx, or changed its INTx eventfds (irqStateChanged): a still-asserted line fires
   * again, unless the sink is holding our last trigger as pending (it delivers that one itself).
   */
  intxUnmasked(): void {
    if (this.sinkHolds) {
      this.sinkHolds = false;
      return;
    }
    this.clientMasked = false;
    if (this.asserted && !this.intxDisabled && !this.msi?.enabled && !this.msix?.enabled) this.fireIntx();
  }

  private fireIntx(): void {
    const sink = this.sink();
    if (this.trigger(IrqIndex.INTX, 0)) {
      // Signalled: the client automasked INTx.
      this.clientMasked = true;
      this.sinkHolds = false;
    } else if (sink?.isEnabled(IrqIndex.INTX, 0)) {
      // Masked: latched as pending in the sink, delivered at the unmask.
      this.clientMasked = true;
      this.sinkHolds = true;
    } else {
      this.clientMasked = false;
      this.sinkHolds = false;
    }
  }

  /** A new client (or none): forget what we knew about the previous one's masking. */
  sinkChanged(): void {
    this.clientMasked = false;
    this.sinkHolds = false;
  }

  reset(): void {
    this.asserted = false;
    this.clientMasked = false;
    this.sinkHolds = false;
  }
}
