// NVMe 1.4 numbers the controller model uses: BAR0 registers, command opcodes, status codes, identify and feature
// identifiers. Names follow the specification (and Linux's include/linux/nvme.h) so they can be grepped for.

/** BAR0 controller registers (NVMe 1.4 section 3.1). */
export const NvmeReg = {
  CAP: 0x00,
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
  AQA: 0x24,
  ASQ: 0x28,
  ACQ: 0x30,
  CMBLOC: 0x38,
  CMBSZ: 0x3c,
  /** First doorbell; with CAP.DSTRD = 0 SQyTDBL is at 0x1000 + 8y and CQyHDBL at 0x1000 + 8y + 4. */
  DOORBELLS: 0x1000,
} as const;

/** NVMe 1.4.0 in VS. */
export const NVME_VERSION = 0x00010400;

export const CC_EN = 1 << 0;
export const CC_CSS_SHIFT = 4;
export const CC_MPS_SHIFT = 7;
export const CC_AMS_SHIFT = 11;
export const CC_SHN_SHIFT = 14;
export const CC_IOSQES_SHIFT = 16;
export const CC_IOCQES_SHIFT = 20;

export const CSTS_RDY = 1 << 0;
export const CSTS_CFS = 1 << 1;
export const CSTS_SHST_SHIFT = 2;
export const SHST_NORMAL = 0;
export const SHST_COMPLETE = 2;

export const AdminOpcode = {
  DELETE_SQ: 0x00,
  CREATE_SQ: 0x01,
  GET_LOG_PAGE: 0x02,
  DELETE_CQ: 0x04,
  CREATE_CQ: 0x05,
  IDENTIFY: 0x06,
  ABORT: 0x08,
  SET_FEATURES: 0x09,
  GET_FEATURES: 0x0a,
  ASYNC_EVENT: 0x0c,
  KEEP_ALIVE: 0x18,
  DOORBELL_BUFFER_CONFIG: 0x7c,
} as const;

export const IoOpcode = {
  FLUSH: 0x00,
  WRITE: 0x01,
  READ: 0x02,
  WRITE_ZEROES: 0x08,
  DSM: 0x09,
} as const;

/** Status Code Type << 8 | Status Code (the 11 bits the CQE carries in bits 27:17 of DW3). */
export const Status = {
  SUCCESS: 0x000,
  INVALID_OPCODE: 0x001,
  INVALID_FIELD: 0x002,
  DATA_TRANSFER_ERROR: 0x004,
  INTERNAL: 0x006,
  ABORT_REQUESTED: 0x007,
  ABORT_SQ_DELETED: 0x008,
  INVALID_NS: 0x00b,
  CMD_SEQ_ERROR: 0x00c,
  LBA_RANGE: 0x080,
  // Command specific (SCT 1)
  CQ_INVALID: 0x100,
  INVALID_QID: 0x101,
  INVALID_QSIZE: 0x102,
  ABORT_LIMIT: 0x103,
  AER_LIMIT: 0x105,
  INVALID_VECTOR: 0x108,
  INVALID_LOG_PAGE: 0x109,
  INVALID_QUEUE_DELETION: 0x10c,
  FEATURE_NOT_SAVEABLE: 0x10d,
  // Media errors (SCT 2)
  WRITE_FAULT: 0x280,
  UNRECOVERED_READ: 0x281,
} as const;
/** Do Not Retry, in the 15-bit status field (bit 14 there, bit 31 of DW3). */
export const STATUS_DNR = 0x4000;

export const IdentifyCns = {
  NAMESPACE: 0x00,
  CONTROLLER: 0x01,
  ACTIVE_NS_LIST: 0x02,
  NS_DESC_LIST: 0x03,
  CS_CONTROLLER: 0x06,
} as const;

export const FeatureId = {
  ARBITRATION: 0x01,
  POWER_MGMT: 0x02,
  TEMP_THRESHOLD: 0x04,
  ERROR_RECOVERY: 0x05,
  VOLATILE_WC: 0x06,
  NUM_QUEUES: 0x07,
  IRQ_COALESCE: 0x08,
  IRQ_CONFIG: 0x09,
  WRITE_ATOMIC: 0x0a,
  ASYNC_EVENT: 0x0b,
} as const;

export const LogPage = {
  ERROR: 0x01,
  SMART: 0x02,
  FW_SLOT: 0x03,
  CHANGED_NS: 0x04,
  CMD_EFFECTS: 0x05,
} as const;

/** Submission/completion queue entry sizes (2^6, 2^4). */
export const SQE_SIZE = 64;
export const CQE_SIZE = 16;
/** Memory page size: CAP.MPSMIN = MPSMAX = 0, 4 KiB. */
export const NVME_PAGE = 4096;
/** Maximum Data Transfer Size as 2^MDTS pages: 512 KiB, one PRP list page. */
export const NVME_MDTS = 7;
/** Doorbell Buffer Config in OACS. */
export const OACS_DBBUF = 1 << 8;
/** ONCS: Dataset Management, Write Zeroes. */
export const ONCS_DSM = 1 << 2;
export const ONCS_WRITE_ZEROES = 1 << 3;
/** Dataset Management attribute: deallocate. */
export const DSM_AD = 1 << 2;
/** Write Zeroes CDW12: deallocate. */
export const WZ_DEAC = 1 << 25;
