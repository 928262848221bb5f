// vfio-user-server: the device process. The engine (server, session, DMA address space, IRQs, IOMMU mirror)
// and the device contract.

export * from './device.js';
export {
  builtinDevice,
  createDevice,
  createEdu,
  createNvme,
  type DeviceDefinition,
  type DeviceEnvironment,
  DeviceOptionError,
  type DeviceOptionSchema,
  type DeviceOptionSpec,
  type DeviceOptionType,
  type DeviceOptionValues,
  defineDevice,
  deviceNames,
  type EduDevice,
  type EduStats,
  instantiateDevice,
  loadDeviceDefinition,
  NvmeController,
  type NvmeDevice,
  type NvmeOptions,
  type NvmeStats,
  parseDeviceOptions,
  registerDevice,
} from './devices/index.js';
export {
  DmaAddressSpace,
  type DmaAddressSpaceOptions,
  type DmaListener,
  type DmaMapParams,
  type DmaMessageTransport,
  type DmaSegment,
  type DmaStats,
} from './dma/address-space.js';
export type { DirtyPageLogging, DirtyRange } from './dma/dirty.js';
export { DmaError, type DmaErrorKind, DmaMapError } from './dma/errors.js';
export { DEFAULT_WINDOW_SIZE } from './dma/files.js';
export { type Interval, IntervalTable } from './dma/interval-table.js';
export { type DmaAccessKind, DmaRegion, type HostSegment } from './dma/region.js';
export type { HostFacts, HostMapping, IommuBackend, MapsBy } from './iommu/backend.js';
export { IommuMirror, type MirrorStats } from './iommu/mirror.js';
export { NoneBackend } from './iommu/none.js';
export {
  IrqController,
  IrqError,
  type IrqStats,
  type SetIrqsParams,
} from './irq/irq-controller.js';
export {
  builtinCommands,
  type ControlCommand,
  type ControlContext,
  ControlError,
  ControlServer,
} from './ops/control.js';
export { collectCounters, migrationStatus } from './ops/counters.js';
export { LATENCY_BUCKETS, type MetricsOptions, ServerMetrics, serveMetrics } from './ops/metrics.js';
export { SystemdNotifier } from './ops/notify.js';
export { type RecorderStats, WireRecorder } from './ops/record.js';
export { Tracing } from './ops/tracing.js';
// The PCI device model: everything a device author needs (also importable as `vfio-user-server/pci`).
export * from './pci/index.js';
export {
  type ActiveSessionInfo,
  type ConnectEvent,
  type DisconnectEvent,
  type ServerEvent,
  type ServerOptions,
  VfioUserServer,
} from './server.js';
export type { ServerOffer } from './session/negotiate.js';
export { Observers, type SessionObserver } from './session/observers.js';
export type { ServerStats } from './session/session.js';
