// QEMU's edu device as the tests see it: BAR0 register offsets and fixed values, written down here from the
// spec (QEMU docs/specs/edu.rst) plus our DMA error register at 0x9c, for the tests that drive our edu model from
// outside (test/integration through the client, test/qemu and test/vm through QEMU).
//
// Deliberately NOT imported from the server's device model (server/src/devices/edu.ts: EduReg, EDU_IDENT...): a
// wrong offset there must make these tests fail, not silently move both sides.

/** edu's BAR0 registers (QEMU docs/specs/edu.rst; 0x9c is our DMA error register) and fixed values. */
export const Edu = {
  IDENT: 0x00,
  LIVENESS: 0x04,
  FACTORIAL: 0x08,
  STATUS: 0x20,
  IRQ_STATUS: 0x24,
  IRQ_RAISE: 0x60,
  IRQ_ACK: 0x64,
  DMA_SRC: 0x80,
  DMA_DST: 0x88,
  DMA_COUNT: 0x90,
  DMA_CMD: 0x98,
  DMA_ERROR: 0x9c,
  /** The device-side DMA buffer (4 KiB). */
  BUFFER: 0x40000n,
  IDENT_VALUE: 0x010000ed,
  VENDOR_DEVICE: 0x11e81234,
  BAR0_SIZE: 0x100000,
} as const;
