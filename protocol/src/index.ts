// vfio-user-protocol: the vfio-user wire protocol (QEMU docs/interop/vfio-user.rst), byte-exact, with no I/O.
// One module per concern: constants, errors, header, framer, capabilities JSON, version negotiation, one codec
// per message under messages/, and a dispatch table in codec.ts.

export { concatBytes, fromHex, toHex, U32_MAX, U64_MAX } from './bytes.js';
export * from './capabilities.js';
export * from './codec.js';
export * from './constants.js';
export * from './errors.js';
export * from './framer.js';
export * from './header.js';
export * from './messages/index.js';
export * from './negotiation.js';
export * from './ranges.js';
