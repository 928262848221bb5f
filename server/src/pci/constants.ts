// PCI / PCI Express register offsets and bits, named as in the PCI Local Bus and PCIe Base specifications
// (and Linux's include/uapi/linux/pci_regs.h, whose names most readers know).

/** Config space sizes: conventional PCI and PCI Express. */
export const PCI_CONFIG_SIZE = 0x100;
export const PCIE_CONFIG_SIZE = 0x1000;

// Type 0 header.
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BIST = 0x0f;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_CARDBUS_CIS = 0x28;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
export const PCI_MIN_GNT = 0x3e;
export const PCI_MAX_LAT = 0x3f;
/** First byte after the type 0 header: where capabilities may start. */
export const PCI_STD_HEADER_SIZEOF = 0x40;

// COMMAND bits.
export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_SPECIAL = 0x8;
export const PCI_COMMAND_INVALIDATE = 0x10;
export const PCI_COMMAND_PARITY = 0x40;
export const PCI_COMMAND_SERR = 0x100;
export const PCI_COMMAND_FAST_BACK = 0x200;
export const PCI_COMMAND_INTX_DISABLE = 0x400;

// STATUS bits.
export const PCI_STATUS_INTERRUPT = 0x8;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_STATUS_PARITY = 0x100;
export const PCI_STATUS_SIG_TARGET_ABORT = 0x800;
export const PCI_STATUS_REC_TARGET_ABORT = 0x1000;
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
export const PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000;
export const PCI_STATUS_DETECTED_PARITY = 0x8000;
/** The STATUS bits software clears by writing 1 (RW1C). */
export const PCI_STATUS_RW1C_MASK =
  PCI_STATUS_PARITY |
  PCI_STATUS_SIG_TARGET_ABORT |
  PCI_STATUS_REC_TARGET_ABORT |
  PCI_STATUS_REC_MASTER_ABORT |
  PCI_STATUS_SIG_SYSTEM_ERROR |
  PCI_STATUS_DETECTED_PARITY;

// BAR register low bits.
export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8;
export const PCI_ROM_ADDRESS_ENABLE = 0x1;

// Capability IDs.
export const PCI_CAP_ID_PM = 0x01;
export const PCI_CAP_ID_MSI = 0x05;
export const PCI_CAP_ID_EXP = 0x10;
export const PCI_CAP_ID_MSIX = 0x11;
// Extended capability IDs.
export const PCI_EXT_CAP_ID_DSN = 0x0003;

// PM capability.
export const PCI_PM_PMC = 0x02;
export const PCI_PM_CTRL = 0x04;
export const PCI_PM_CTRL_STATE_MASK = 0x3;
export const PCI_PM_CTRL_NO_SOFT_RESET = 0x8;
export const PCI_PM_SIZEOF = 8;

// MSI capability.
export const PCI_MSI_FLAGS = 0x02;
export const PCI_MSI_FLAGS_ENABLE = 0x1;
export const PCI_MSI_FLAGS_QMASK = 0xe; // Multiple Message Capable
export const PCI_MSI_FLAGS_QSIZE = 0x70; // Multiple Message Enable
export const PCI_MSI_FLAGS_64BIT = 0x80;
export const PCI_MSI_FLAGS_MASKBIT = 0x100;
export const PCI_MSI_ADDRESS_LO = 0x04;

// MSI-X capability.
export const PCI_MSIX_FLAGS = 0x02;
export const PCI_MSIX_FLAGS_QSIZE = 0x7ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_TABLE = 0x04;
export const PCI_MSIX_PBA = 0x08;
export const PCI_MSIX_SIZEOF = 12;
export const PCI_MSIX_ENTRY_SIZE = 16;
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 12;
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;

// PCI Express capability (version 2 layout).
export const PCI_EXP_FLAGS = 0x02;
export const PCI_EXP_DEVCAP = 0x04;
export const PCI_EXP_DEVCAP_RBER = 0x8000;
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
export const PCI_EXP_DEVCTL = 0x08;
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;
export const PCI_EXP_DEVSTA = 0x0a;
export const PCI_EXP_LNKCAP = 0x0c;
export const PCI_EXP_LNKCTL = 0x10;
export const PCI_EXP_LNKSTA = 0x12;
export const PCI_EXP_DEVCAP2 = 0x24;
export const PCI_EXP_DEVCTL2 = 0x28;
export const PCI_EXP_LNKCAP2 = 0x2c;
export const PCI_EXP_LNKCTL2 = 0x30;
export const PCI_EXP_LNKSTA2 = 0x32;
export const PCI_EXP_SIZEOF_V2 = 0x3c;

/** The first extended capability lives at 0x100 (PCIe config space only). */
export const PCI_CFG_SPACE_SIZE = 0x100;
