// The PCI device model: build a PciDevice from a PciDeviceSpec and a PciDeviceModel (see pci-device.ts).
export * from './bar.js';
export * from './capabilities.js';
export * from './config-space.js';
export * from './constants.js';
export * from './interrupts.js';
export * from './memfd.js';
export * from './migration.js';
export { checkMsgpack, type MsgpackBudget, MsgpackBudgetError, MsgpackBudgetWalk } from './msgpack-budget.js';
export * from './msi.js';
export * from './msix.js';
export * from './pci-device.js';
export * from './pcie.js';
export * from './pm.js';
export * from './shared-memory.js';
