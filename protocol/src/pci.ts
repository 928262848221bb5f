// PCI / PCI Express configuration space: register offsets and bits, named as in the PCI Local Bus and PCIe Base
// specifications (and Linux's include/uapi/linux/pci_regs.h, whose names most readers know). A vfio-user PCI
// device's config space is region 7 (PciRegion.CONFIG) on the wire, so these are the shared vocabulary of the
// server's PCI model and the client's PCI helpers, defined once here.

/** VFIO's PCI region indexes (`VFIO_PCI_*_REGION_INDEX`): a vfio-user PCI device numbers its regions this way. */
export const PciRegion = {
  BAR0: 0,
  BAR1: 1,
  BAR2: 2,
  BAR3: 3,
  BAR4: 4,
  BAR5: 5,
  ROM: 6,
  CONFIG: 7,
  VGA: 8,
} as const;

/** The first device-specific region index (after VGA; VFIO_PCI_NUM_REGIONS). */
export const FIRST_DEVICE_REGION = 9;

/** Size of a conventional PCI function's config space (256 bytes); also where PCIe extended capabilities start. */
export const PCI_CONFIG_SIZE = 0x100;
/** Size of a PCI Express function's config space (4 KiB). */
export const PCIE_CONFIG_SIZE = 0x1000;

// Type 0 header.
/** Type 0 header: Vendor ID (16-bit). */
export const PCI_VENDOR_ID = 0x00;
/** Type 0 header: Device ID (16-bit). */
export const PCI_DEVICE_ID = 0x02;
/** Type 0 header: Command register (16-bit, PCI_COMMAND_* bits). */
export const PCI_COMMAND = 0x04;
/** Type 0 header: Status register (16-bit, PCI_STATUS_* bits). */
export const PCI_STATUS = 0x06;
/** Type 0 header: Revision ID (8-bit). */
export const PCI_REVISION_ID = 0x08;
/** Type 0 header: programming interface, the low byte of the 24-bit class code. */
export const PCI_CLASS_PROG = 0x09;
/** Type 0 header: sub-class and base class (16-bit), the high bytes of the class code. */
export const PCI_CLASS_DEVICE = 0x0a;
/** Type 0 header: Cache Line Size (8-bit, read/write, no effect on emulation). */
export const PCI_CACHE_LINE_SIZE = 0x0c;
/** Type 0 header: Latency Timer (8-bit). */
export const PCI_LATENCY_TIMER = 0x0d;
/** Type 0 header: Header Type (8-bit; bit 7 = multi-function). */
export const PCI_HEADER_TYPE = 0x0e;
/** Type 0 header: BIST (8-bit; 0 = no built-in self test). */
export const PCI_BIST = 0x0f;
/** Type 0 header: BAR0; BARn is at PCI_BASE_ADDRESS_0 + 4n (a 64-bit BAR takes two). */
export const PCI_BASE_ADDRESS_0 = 0x10;
/** Type 0 header: CardBus CIS pointer (32-bit). */
export const PCI_CARDBUS_CIS = 0x28;
/** Type 0 header: Subsystem Vendor ID (16-bit). */
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
/** Type 0 header: Subsystem ID (16-bit). */
export const PCI_SUBSYSTEM_ID = 0x2e;
/** Type 0 header: Expansion ROM base address (32-bit; bit 0 = PCI_ROM_ADDRESS_ENABLE). */
export const PCI_ROM_ADDRESS = 0x30;
/** Type 0 header: offset of the first capability (8-bit; valid when PCI_STATUS_CAP_LIST is set). */
export const PCI_CAPABILITY_LIST = 0x34;
/** Type 0 header: Interrupt Line (8-bit, written by firmware, no effect on the device). */
export const PCI_INTERRUPT_LINE = 0x3c;
/** Type 0 header: Interrupt Pin (8-bit; 0 = none, 1..4 = INTA#..INTD#). */
export const PCI_INTERRUPT_PIN = 0x3d;
/** Type 0 header: Min_Gnt (8-bit). */
export const PCI_MIN_GNT = 0x3e;
/** Type 0 header: Max_Lat (8-bit). */
export const PCI_MAX_LAT = 0x3f;
/** First byte after the type 0 header: where capabilities may start. */
export const PCI_STD_HEADER_SIZEOF = 0x40;

// COMMAND bits.
/** Command: I/O space decoding enabled. */
export const PCI_COMMAND_IO = 0x1;
/** Command: memory space decoding enabled. */
export const PCI_COMMAND_MEMORY = 0x2;
/** Command: bus mastering (DMA) enabled. */
export const PCI_COMMAND_MASTER = 0x4;
/** Command: special cycles (hard-wired 0 on most devices). */
export const PCI_COMMAND_SPECIAL = 0x8;
/** Command: memory write and invalidate. */
export const PCI_COMMAND_INVALIDATE = 0x10;
/** Command: parity error response. */
export const PCI_COMMAND_PARITY = 0x40;
/** Command: SERR# enable. */
export const PCI_COMMAND_SERR = 0x100;
/** Command: fast back-to-back transactions. */
export const PCI_COMMAND_FAST_BACK = 0x200;
/** Command: INTx emulation disabled (the function must not assert INTx). */
export const PCI_COMMAND_INTX_DISABLE = 0x400;

// STATUS bits.
/** Status: INTx is asserted (read-only, independent of PCI_COMMAND_INTX_DISABLE). */
export const PCI_STATUS_INTERRUPT = 0x8;
/** Status: the capability list at PCI_CAPABILITY_LIST is valid. */
export const PCI_STATUS_CAP_LIST = 0x10;
/** Status: master data parity error (RW1C). */
export const PCI_STATUS_PARITY = 0x100;
/** Status: signalled target abort (RW1C). */
export const PCI_STATUS_SIG_TARGET_ABORT = 0x800;
/** Status: received target abort (RW1C). */
export const PCI_STATUS_REC_TARGET_ABORT = 0x1000;
/** Status: received master abort (RW1C). */
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
/** Status: signalled system error (RW1C). */
export const PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000;
/** Status: detected parity error (RW1C). */
export const PCI_STATUS_DETECTED_PARITY = 0x8000;
/** The Status bits software clears by writing 1 (RW1C). */
export const PCI_STATUS_RW1C_MASK =
  PCI_STATUS_PARITY |
  PCI_STATUS_SIG_TARGET_ABORT |
  PCI_STATUS_REC_TARGET_ABORT |
  PCI_STATUS_REC_MASTER_ABORT |
  PCI_STATUS_SIG_SYSTEM_ERROR |
  PCI_STATUS_DETECTED_PARITY;

// BAR register low bits.
/** BAR low bit: an I/O space BAR (0 = memory). */
export const PCI_BASE_ADDRESS_SPACE_IO = 0x1;
/** Memory BAR type bits: a 64-bit BAR (the next BAR register holds the high half). */
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x4;
/** Memory BAR bit: prefetchable. */
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x8;
/** Expansion ROM BAR bit 0: ROM address decoding enabled. */
export const PCI_ROM_ADDRESS_ENABLE = 0x1;

// Capability IDs.
/** Capability ID: power management. */
export const PCI_CAP_ID_PM = 0x01;
/** Capability ID: MSI. */
export const PCI_CAP_ID_MSI = 0x05;
/** Capability ID: vendor-specific. */
export const PCI_CAP_ID_VNDR = 0x09;
/** Capability ID: PCI Express. */
export const PCI_CAP_ID_EXP = 0x10;
/** Capability ID: MSI-X. */
export const PCI_CAP_ID_MSIX = 0x11;
// Extended capability IDs.
/** Extended capability ID (PCIe config space): Device Serial Number. */
export const PCI_EXT_CAP_ID_DSN = 0x0003;

// PM capability.
/** PM capability: Power Management Capabilities register (16-bit), offset in the capability. */
export const PCI_PM_PMC = 0x02;
/** PM capability: PMCSR, the control/status register (16-bit), offset in the capability. */
export const PCI_PM_CTRL = 0x04;
/** PMCSR: the power state field (D0..D3hot). */
export const PCI_PM_CTRL_STATE_MASK = 0x3;
/** PMCSR: No_Soft_Reset (D3hot -> D0 keeps the function's state). */
export const PCI_PM_CTRL_NO_SOFT_RESET = 0x8;
/** Size of the PM capability in bytes. */
export const PCI_PM_SIZEOF = 8;

// MSI capability.
/** MSI capability: Message Control (16-bit), offset in the capability. */
export const PCI_MSI_FLAGS = 0x02;
/** MSI Message Control: MSI enabled. */
export const PCI_MSI_FLAGS_ENABLE = 0x1;
/** MSI Message Control: Multiple Message Capable (log2 of the vectors offered). */
export const PCI_MSI_FLAGS_QMASK = 0xe;
/** MSI Message Control: Multiple Message Enable (log2 of the vectors enabled). */
export const PCI_MSI_FLAGS_QSIZE = 0x70;
/** MSI Message Control: 64-bit message address capable. */
export const PCI_MSI_FLAGS_64BIT = 0x80;
/** MSI Message Control: per-vector masking capable. */
export const PCI_MSI_FLAGS_MASKBIT = 0x100;
/** MSI capability: Message Address (low 32 bits), offset in the capability. */
export const PCI_MSI_ADDRESS_LO = 0x04;

// MSI-X capability.
/** MSI-X capability: Message Control (16-bit), offset in the capability. */
export const PCI_MSIX_FLAGS = 0x02;
/** MSI-X Message Control: table size minus one. */
export const PCI_MSIX_FLAGS_QSIZE = 0x7ff;
/** MSI-X Message Control: Function Mask (every vector masked). */
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
/** MSI-X Message Control: MSI-X enabled. */
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
/** MSI-X capability: Table Offset/BIR (32-bit; BAR index in bits 0-2), offset in the capability. */
export const PCI_MSIX_TABLE = 0x04;
/** MSI-X capability: PBA Offset/BIR (32-bit; BAR index in bits 0-2), offset in the capability. */
export const PCI_MSIX_PBA = 0x08;
/** Size of the MSI-X capability in bytes. */
export const PCI_MSIX_SIZEOF = 12;
/** Size of one MSI-X table entry (address low/high, data, vector control). */
export const PCI_MSIX_ENTRY_SIZE = 16;
/** MSI-X table entry: Vector Control (32-bit), offset in the entry. */
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 12;
/** MSI-X Vector Control: the vector is masked. */
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;

// PCI Express capability (version 2 layout).
/** PCIe capability: PCI Express Capabilities register (16-bit), offset in the capability. */
export const PCI_EXP_FLAGS = 0x02;
/** PCIe capability: Device Capabilities (32-bit). */
export const PCI_EXP_DEVCAP = 0x04;
/** Device Capabilities: Role-Based Error Reporting. */
export const PCI_EXP_DEVCAP_RBER = 0x8000;
/** Device Capabilities: Function Level Reset capable. */
export const PCI_EXP_DEVCAP_FLR = 0x10000000;
/** PCIe capability: Device Control (16-bit). */
export const PCI_EXP_DEVCTL = 0x08;
/** Device Control: Initiate Function Level Reset (reads as 0). */
export const PCI_EXP_DEVCTL_BCR_FLR = 0x8000;
/** PCIe capability: Device Status (16-bit). */
export const PCI_EXP_DEVSTA = 0x0a;
/** PCIe capability: Link Capabilities (32-bit). */
export const PCI_EXP_LNKCAP = 0x0c;
/** PCIe capability: Link Control (16-bit). */
export const PCI_EXP_LNKCTL = 0x10;
/** PCIe capability: Link Status (16-bit). */
export const PCI_EXP_LNKSTA = 0x12;
/** PCIe capability: Device Capabilities 2 (32-bit). */
export const PCI_EXP_DEVCAP2 = 0x24;
/** PCIe capability: Device Control 2 (16-bit). */
export const PCI_EXP_DEVCTL2 = 0x28;
/** PCIe capability: Link Capabilities 2 (32-bit). */
export const PCI_EXP_LNKCAP2 = 0x2c;
/** PCIe capability: Link Control 2 (16-bit). */
export const PCI_EXP_LNKCTL2 = 0x30;
/** PCIe capability: Link Status 2 (16-bit). */
export const PCI_EXP_LNKSTA2 = 0x32;
/** Size of a version 2 PCIe capability (an endpoint's) in bytes. */
export const PCI_EXP_SIZEOF_V2 = 0x3c;
