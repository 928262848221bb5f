// The PCI Express capability (version 2, endpoint, one lane at 2.5 GT/s) and the optional Device Serial
// Number extended capability. Function Level Reset is advertised by default: writing Initiate FLR in Device
// Control calls `onFlr` (the PciDevice resets after the write completes); the bit always reads 0.
import type { CapabilityAllocator } from './capabilities.js';
import type { ConfigSpace } from './config-space.js';
import {
  PCI_CAP_ID_EXP,
  PCI_EXP_DEVCAP,
  PCI_EXP_DEVCAP_FLR,
  PCI_EXP_DEVCAP_RBER,
  PCI_EXP_DEVCTL,
  PCI_EXP_DEVCTL_BCR_FLR,
  PCI_EXP_DEVSTA,
  PCI_EXP_FLAGS,
  PCI_EXP_LNKCAP,
  PCI_EXP_LNKCAP2,
  PCI_EXP_LNKCTL,
  PCI_EXP_LNKCTL2,
  PCI_EXP_LNKSTA,
  PCI_EXP_SIZEOF_V2,
  PCI_EXT_CAP_ID_DSN,
} from './constants.js';

/** The PCI Express capability a PciDevice offers: FLR, device serial number. */
export interface PcieSpec {
  /** Advertise and implement Function Level Reset (default true). */
  flr?: boolean;
  /** Add a Device Serial Number extended capability with this 64-bit serial. */
  dsn?: bigint;
}

/** The PCI Express capability (version 2, endpoint) and its extended capabilities; initiates FLR. */
export class PcieCapability {
  readonly offset: number;
  readonly flr: boolean;
  readonly dsnOffset: number;

  constructor(cfg: ConfigSpace, caps: CapabilityAllocator, spec: PcieSpec, onFlr: () => void) {
    const off = caps.add(PCI_CAP_ID_EXP, PCI_EXP_SIZEOF_V2);
    this.offset = off;
    this.flr = spec.flr ?? true;
    cfg.set16(off + PCI_EXP_FLAGS, 0x2); // capability version 2, device/port type 0: PCI Express Endpoint
    // Max payload 128 B, role-based error reporting (mandatory for v2), FLR if enabled.
    cfg.set32(off + PCI_EXP_DEVCAP, PCI_EXP_DEVCAP_RBER | (this.flr ? PCI_EXP_DEVCAP_FLR : 0));
    // Device Control default: relaxed ordering, no snoop, max read request 512 B (PCIe 7.5.3.4).
    cfg.set16(off + PCI_EXP_DEVCTL, 0x2810);
    // Error reporting enables, relaxed ordering, MPS (only 128 B is supported, but the field is RW),
    // extended tag, no snoop, MRRS; plus Initiate FLR when it is advertised.
    cfg.setWmask(off + PCI_EXP_DEVCTL, 2, 0x7fff | (this.flr ? PCI_EXP_DEVCTL_BCR_FLR : 0));
    cfg.setW1cmask(off + PCI_EXP_DEVSTA, 2, 0x000f); // error detected bits
    cfg.set32(off + PCI_EXP_LNKCAP, 0x11); // 2.5 GT/s, x1, port 0
    cfg.setWmask(off + PCI_EXP_LNKCTL, 2, 0x01cb); // ASPM control, RCB, common clock, ext sync, clock PM
    cfg.set16(off + PCI_EXP_LNKSTA, 0x11); // current speed 2.5 GT/s, width x1
    cfg.set32(off + PCI_EXP_LNKCAP2, 0x2); // supported link speeds: 2.5 GT/s
    cfg.set16(off + PCI_EXP_LNKCTL2, 0x1); // target link speed 2.5 GT/s
    cfg.setWmask(off + PCI_EXP_LNKCTL2, 2, 0x000f);
    if (this.flr) {
      cfg.onWrite(off + PCI_EXP_DEVCTL, 2, () => {
        const ctl = cfg.get16(off + PCI_EXP_DEVCTL);
        if (ctl & PCI_EXP_DEVCTL_BCR_FLR) {
          cfg.set16(off + PCI_EXP_DEVCTL, ctl & ~PCI_EXP_DEVCTL_BCR_FLR);
          onFlr();
        }
      });
    }

    // Device Serial Number: header, then the 64-bit serial; all read-only.
    if (spec.dsn !== undefined) {
      const dsn = BigInt.asUintN(64, spec.dsn);
      this.dsnOffset = caps.addExtended(PCI_EXT_CAP_ID_DSN, 1, 12);
      cfg.set32(this.dsnOffset + 4, Number(dsn & 0xffffffffn));
      cfg.set32(this.dsnOffset + 8, Number(dsn >> 32n));
    } else {
      this.dsnOffset = 0;
    }
  }
}
