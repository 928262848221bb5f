// vfio-user-client: a vfio-user client for Node.js. Every command, typed and Promise-based, fd passing,
// chunking by the server's limits, serving the server's DMA_READ/DMA_WRITE from the client's own memory, and raw
// access for conformance testing. Wire constants and codecs come from vfio-user-protocol.

// Wire names a client user needs most, re-exported from vfio-user-protocol (where they are defined).
export {
  DmaMapFlags,
  errnoName,
  type OmittedDefaults,
  QEMU_LIMITS,
  QEMU_VERSION_JSON,
  type ServerCapabilities,
} from 'vfio-user-protocol';
export { type CapabilitiesJson, defaultClientCapabilities } from './caps.js';
export {
  type ClientOptions,
  type DeviceInfo,
  type DmaMapArgs,
  type DmaUnmapArgs,
  type FeatureArgs,
  type IrqInfo,
  type NegotiateOptions,
  type NegotiateResult,
  NegotiationError,
  type RegionInfo,
  type RegionIoFdsResult,
  type RegionIoOptions,
  type RegionMapping,
  type SetIrqsArgs,
  VfioUserClient,
} from './client.js';
export {
  buildMessage,
  type ChannelName,
  ClientConnection,
  type ConnectionOptions,
  type InboundMessage,
  type MessageTransport,
  type OutboundMessage,
  parseHeader,
  type RawReply,
  type RequestOptions,
  type ServerRequestHandler,
  type ServerRequestResult,
  type Violation,
} from './connection.js';
export { type DmaHandler, type DmaLogEntry, DmaServer, type DmaStats } from './dma.js';
export {
  ConnectionClosedError,
  commandName,
  ProtocolViolationError,
  VfioUserError,
  type ViolationKind,
} from './errors.js';
export { IrqEventfd, IrqEventfds } from './irqs.js';
export { type DmaWindow, DmaWindows, GuestMemory } from './memory.js';
export {
  CONFIG_REGION,
  configRead,
  configWrite,
  enableDevice,
  enableMsi,
  enableMsix,
  findCapability,
  PciCapId,
} from './pci.js';
