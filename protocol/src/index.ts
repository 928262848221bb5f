// vfio-user-protocol: the vfio-user wire protocol (QEMU docs/interop/vfio-user.rst), byte-exact, with no I/O.
// This index is the package's public surface, listed name by name (no `export *`), one block per module: every
// wire constant (commands, flags, limits, errnos) is defined once in this package and imported from here by the
// server and the client.

// Byte helpers and integer limits.
export {
  concatBytes,
  fromHex,
  toHex,
  U32_MAX,
  U64_MAX,
} from './bytes.js';
// The VERSION capabilities JSON.
export {
  CAPABILITY_RANGES,
  type Capabilities,
  DEFAULT_CAPABILITIES,
  DEFAULT_MIGRATION,
  encodeCapabilities,
  parseCapabilities,
} from './capabilities.js';
// Request/reply codecs by command.
export {
  checkCommand,
  decodeReply,
  decodeRequest,
  encodeReply,
  encodeRequest,
  fdRule,
  type ReplyTypes,
  type RequestTypes,
  strictRequestFds,
} from './codec.js';
// Commands, header flags, limits and the protocol version.
export {
  ALL_COMMANDS,
  Command,
  commandName,
  commandSender,
  DEFAULT_MAX_DATA_XFER_SIZE,
  DEFAULT_MAX_DMA_MAPS,
  DEFAULT_MAX_MESSAGE_SIZE,
  HEADER_SIZE,
  isKnownCommand,
  type Limits,
  MESSAGE_OVERHEAD,
  MsgFlags,
  PAGE_SIZE,
  PAGE_SIZE_BIG,
  PROTOCOL_VERSION,
  SCM_MAX_FD,
} from './constants.js';
// The errno table, the ErrnoError base, ProtocolError.
export {
  Errno,
  ErrnoError,
  type ErrnoName,
  errnoName,
  errnoOf,
  fail,
  ProtocolError,
  type ProtocolErrorCode,
} from './errors.js';
// The pure-TypeScript stream framer (the reference for the addon's framing).
export {
  type Frame,
  Framer,
  FramingError,
} from './framer.js';
// The 16-byte header and whole messages.
export {
  checkHeader,
  decodeHeader,
  encodeErrorReply,
  encodeHeader,
  encodeMessage,
  encodeReplyMessage,
  type Header,
  isCommand,
  isErrorReply,
  isReply,
  messageIdOf,
  messageType,
  plainCommandOf,
  replyErrno,
  wantsReply,
  writeReplyMessage,
} from './header.js';
// fd-count rules shared by the message codecs.
export {
  ANY_FDS,
  checkFds,
  type EmptyReply,
  type FdRule,
  fdCountFits,
  NO_FDS,
} from './messages/common.js';
// DEVICE_FEATURE.
export {
  DEVICE_FEATURE_SIZE,
  DeviceFeatureFlags,
  type DeviceFeatureReply,
  type DeviceFeatureRequest,
  type DmaLoggingControl,
  type DmaLoggingRange,
  type DmaLoggingReport,
  decodeDeviceFeatureReply,
  decodeDeviceFeatureRequest,
  decodeDmaLoggingControl,
  decodeDmaLoggingReport,
  decodeMigDeviceState,
  decodeMigrationFlags,
  deviceFeatureEcho,
  deviceFeatureGetReply,
  dirtyBitmapSize,
  encodeDeviceFeatureReply,
  encodeDeviceFeatureRequest,
  encodeDmaLoggingControl,
  encodeDmaLoggingReport,
  encodeMigDeviceState,
  encodeMigrationFlags,
  FEATURE_OPS,
  Feature,
  featureIndex,
  type MigDeviceStateData,
} from './messages/device-feature.js';
// DEVICE_INFO.
export {
  DEVICE_INFO_SIZE,
  type DeviceGetInfoReply,
  type DeviceGetInfoRequest,
  DeviceInfoFlags,
  decodeDeviceGetInfoReply,
  decodeDeviceGetInfoRequest,
  encodeDeviceGetInfoReply,
  encodeDeviceGetInfoRequest,
} from './messages/device-info.js';
// DEVICE_RESET.
export {
  type DeviceResetReply,
  type DeviceResetRequest,
  decodeDeviceResetReply,
  decodeDeviceResetRequest,
  encodeDeviceResetReply,
  encodeDeviceResetRequest,
} from './messages/device-reset.js';
// DMA_MAP.
export {
  DMA_MAP_FD_RULE,
  DMA_MAP_SIZE,
  DmaMapFlags,
  type DmaMapReply,
  type DmaMapRequest,
  decodeDmaMapReply,
  decodeDmaMapRequest,
  encodeDmaMapReply,
  encodeDmaMapRequest,
} from './messages/dma-map.js';
// DMA_RW.
export {
  DMA_RW_SIZE,
  DMA_WRITE_REPLY_ERRATUM_SIZE,
  type DmaReadReply,
  type DmaReadRequest,
  type DmaWriteReply,
  type DmaWriteRequest,
  decodeDmaReadReply,
  decodeDmaReadRequest,
  decodeDmaWriteReply,
  decodeDmaWriteRequest,
  encodeDmaReadReply,
  encodeDmaReadRequest,
  encodeDmaWriteReply,
  encodeDmaWriteRequest,
} from './messages/dma-rw.js';
// DMA_UNMAP.
export {
  DMA_UNMAP_BITMAP_SIZE,
  DMA_UNMAP_SIZE,
  type DmaUnmapBitmap,
  type DmaUnmapEcho,
  DmaUnmapFlags,
  type DmaUnmapReply,
  type DmaUnmapRequest,
  decodeDmaUnmapReply,
  decodeDmaUnmapRequest,
  dmaUnmapEcho,
  encodeDmaUnmapEchoOf,
  encodeDmaUnmapReply,
  encodeDmaUnmapRequest,
} from './messages/dma-unmap.js';
// IRQ_INFO.
export {
  decodeIrqInfoReply,
  decodeIrqInfoRequest,
  encodeIrqInfoReply,
  encodeIrqInfoRequest,
  IRQ_INFO_SIZE,
  IrqIndex,
  IrqInfoFlags,
  type IrqInfoReply,
  type IrqInfoRequest,
} from './messages/irq-info.js';
// MIG_DATA.
export {
  decodeMigDataReadReply,
  decodeMigDataReadRequest,
  decodeMigDataWriteReply,
  decodeMigDataWriteRequest,
  encodeMigDataReadReply,
  encodeMigDataReadRequest,
  encodeMigDataWriteReply,
  encodeMigDataWriteRequest,
  MIG_DATA_SIZE,
  type MigDataReadReply,
  type MigDataReadRequest,
  type MigDataWriteReply,
  type MigDataWriteRequest,
} from './messages/mig-data.js';
// The migration state machine (DEVICE_FEATURE MIG_DEVICE_STATE).
export {
  isRequestableMigState,
  MigrationFlags,
  MigState,
  type MigStateValue,
  migStatePath,
} from './messages/mig-state.js';
// REGION_INFO.
export {
  checkSparseAreas,
  decodeRegionInfoReply,
  decodeRegionInfoRequest,
  encodeRegionInfoReply,
  encodeRegionInfoReplyFor,
  encodeRegionInfoRequest,
  isRegionInfoTruncated,
  REGION_INFO_SIZE,
  type RegionCap,
  RegionCapId,
  type RegionInfoDescription,
  RegionInfoFlags,
  type RegionInfoReply,
  type RegionInfoRequest,
  regionCapSize,
  regionInfoReplyFdRule,
  regionInfoReplyFor,
  regionInfoReplyLength,
  type SparseMmapArea,
} from './messages/region-info.js';
// REGION_IO_FDS.
export {
  decodeRegionIoFdsReply,
  decodeRegionIoFdsRequest,
  encodeRegionIoFdsReply,
  encodeRegionIoFdsReplyFor,
  encodeRegionIoFdsRequest,
  IO_FD_SUB_REGION_SIZE,
  type IoFdSubRegion,
  IoFdType,
  REGION_IO_FDS_SIZE,
  type RegionIoFdsReply,
  type RegionIoFdsRequest,
  regionIoFdsReplyFdRule,
  regionIoFdsReplyFor,
} from './messages/region-io-fds.js';
// REGION_RW.
export {
  decodeRegionReadReply,
  decodeRegionReadRequest,
  decodeRegionWriteReply,
  decodeRegionWriteRequest,
  encodeRegionReadReply,
  encodeRegionReadRequest,
  encodeRegionWriteReply,
  encodeRegionWriteRequest,
  REGION_RW_SIZE,
  type RegionReadReply,
  type RegionReadRequest,
  type RegionWriteReply,
  type RegionWriteRequest,
  regionRwCountOf,
  regionRwOffsetOf,
  regionRwRegionOf,
  writeRegionRwReply,
} from './messages/region-rw.js';
// REGION_WRITE_MULTI.
export {
  decodeRegionWriteMultiReply,
  decodeRegionWriteMultiRequest,
  encodeRegionWriteMultiReply,
  encodeRegionWriteMultiRequest,
  type RegionWriteMultiEntry,
  type RegionWriteMultiReply,
  type RegionWriteMultiRequest,
  WRITE_MULTI_ENTRY_SIZE,
  WRITE_MULTI_HEADER_SIZE,
  WRITE_MULTI_MAX_DATA,
} from './messages/region-write-multi.js';
// SET_IRQS.
export {
  checkSetIrqsAgainstDevice,
  decodeSetIrqsReply,
  decodeSetIrqsRequest,
  encodeSetIrqsReply,
  encodeSetIrqsRequest,
  SET_IRQS_ACTION_TYPE_MASK,
  SET_IRQS_DATA_TYPE_MASK,
  SET_IRQS_SIZE,
  type SetIrqsAction,
  type SetIrqsData,
  SetIrqsFlags,
  type SetIrqsReply,
  type SetIrqsRequest,
  setIrqsAction,
  setIrqsData,
  setIrqsFdRule,
} from './messages/set-irqs.js';
// VERSION.
export {
  decodeVersionReply,
  decodeVersionRequest,
  encodeVersionReply,
  encodeVersionRequest,
  type VersionReply,
  type VersionRequest,
  versionReplyFdRule,
} from './messages/version.js';
// VERSION negotiation: the server's reply, the client's judgement of it.
export { negotiateVersion, type VersionNegotiation } from './negotiation.js';
// PCI config space offsets and bits, VFIO's PCI region indexes (shared by the server's PCI model and the client).
// Everything pci.ts exports is public vocabulary and nothing else, so it is re-exported whole: the server's
// pci/constants.ts lists the same names for device authors, and one list is enough.
export * from './pci.js';
// What QEMU sends and accepts beyond the spec.
export {
  checkQemuVersionReply,
  QEMU_LIMITS,
  QEMU_OMITTED_MAX_MSG_FDS,
  QEMU_VERSION_JSON,
  QEMU_VERSION_REQUEST_SIZE,
  qemuLimitProblems,
} from './qemu.js';
// 64-bit range arithmetic.
export {
  isPowerOfTwo,
  rangeOverflows,
  rangesOverlap,
  rangeWithin,
  saturatingAdd64,
  U64_END,
  u32RangeWithin,
} from './ranges.js';
// Wire tracing: the recorded-stream file format and the one-line-per-message dissector.
export {
  describeMessage,
  encodeTraceFileHeader,
  encodeTraceRecordHeader,
  flagNames,
  formatTraceLine,
  type MessageSummary,
  TRACE_FILE_HEADER_SIZE,
  TRACE_MAGIC,
  TRACE_MAX_BODY,
  TRACE_RECORD_HEADER_SIZE,
  TRACE_VERSION,
  type TraceFileHeader,
  TraceFlags,
  TraceFormatError,
  TraceKind,
  type TraceLine,
  TracePairer,
  TraceParser,
  type TraceRecord,
} from './trace.js';
export {
  checkVersionReply,
  judgeVersionReply,
  type OmittedDefaults,
  proposedCapabilities,
  type ServerCapabilities,
  twinSocketFdProblem,
  type VersionProposal,
  type VersionReplyCheck,
  type VersionReplyReport,
  type VersionReplyRules,
} from './version-reply.js';
