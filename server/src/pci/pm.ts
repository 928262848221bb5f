// The Power Management capability (PCI PM 1.2): D0 and D3hot, no PME. No_Soft_Reset is set, so a D3hot -> D0
// transition keeps the device's state (the OS then need not re-initialise it).
import type { CapabilityAllocator } from './capabilities.js';
import type { ConfigSpace } from './config-space.js';
import {
  PCI_CAP_ID_PM,
  PCI_PM_CTRL,
  PCI_PM_CTRL_NO_SOFT_RESET,
  PCI_PM_CTRL_STATE_MASK,
  PCI_PM_PMC,
  PCI_PM_SIZEOF,
} from './constants.js';

/** The power management capability: D0/D3hot power states, No_Soft_Reset. */
export class PmCapability {
  readonly offset: number;

  constructor(
    private readonly cfg: ConfigSpace,
    caps: CapabilityAllocator,
  ) {
    const off = caps.add(PCI_CAP_ID_PM, PCI_PM_SIZEOF);
    this.offset = off;
    cfg.set16(off + PCI_PM_PMC, 0x3); // version 3 (PM 1.2); no D1/D2, no PME
    cfg.set16(off + PCI_PM_CTRL, PCI_PM_CTRL_NO_SOFT_RESET);
    cfg.setWmask(off + PCI_PM_CTRL, 2, PCI_PM_CTRL_STATE_MASK);
    cfg.onWrite(off + PCI_PM_CTRL, 2, (prev) => {
      // D1 and D2 are not supported: "the write completes normally, the data is discarded" (PM 1.2 5.6.3).
      const state = this.cfg.get16(off + PCI_PM_CTRL) & PCI_PM_CTRL_STATE_MASK;
      if (state === 1 || state === 2) {
        const old = prev.getUint16(off + PCI_PM_CTRL, true) & PCI_PM_CTRL_STATE_MASK;
        this.cfg.set16(
          off + PCI_PM_CTRL,
          (this.cfg.get16(off + PCI_PM_CTRL) & ~PCI_PM_CTRL_STATE_MASK) | old,
        );
      }
    });
  }

  /** The power state the guest selected: 0 = D0, 3 = D3hot. */
  get powerState(): number {
    return this.cfg.get16(this.offset + PCI_PM_CTRL) & PCI_PM_CTRL_STATE_MASK;
  }
}
