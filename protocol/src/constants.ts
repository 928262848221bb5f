// Wire-level constants of vfio-user (QEMU docs/interop/vfio-user.rst, "Header" and "Commands").

/** Every message starts with a 16-byte header (spec: "Header"). */
export const HEADER_SIZE = 16;

/** Command numbers (spec: "Commands"). 14 (the removed DIRTY_PAGES) is deliberately absent. */
export enum Command {
  VERSION = 1,
  DMA_MAP = 2,
  DMA_UNMAP = 3,
  DEVICE_GET_INFO = 4,
  DEVICE_GET_REGION_INFO = 5,
  DEVICE_GET_REGION_IO_FDS = 6,
  DEVICE_GET_IRQ_INFO = 7,
  DEVICE_SET_IRQS = 8,
  REGION_READ = 9,
  REGION_WRITE = 10,
  DMA_READ = 11,
  DMA_WRITE = 12,
  DEVICE_RESET = 13,
  REGION_WRITE_MULTI = 15,
  DEVICE_FEATURE = 16,
  MIG_DATA_READ = 17,
  MIG_DATA_WRITE = 18,
}

/** Header `flags` bits: type in bits 0-3 (0 command, 1 reply), NO_REPLY bit 4, ERROR bit 5; the rest reserved. */
export const MsgFlags = {
  TYPE_MASK: 0xf,
  TYPE_COMMAND: 0,
  TYPE_REPLY: 1,
  NO_REPLY: 0x10,
  ERROR: 0x20,
} as const;

/** Every command number this package knows, in numeric order. */
export const ALL_COMMANDS: readonly Command[] = Object.freeze(
  Object.values(Command)
    .filter((v): v is Command => typeof v === 'number')
    .sort((a, b) => a - b),
);

/** True for a command number defined by the current spec (so 0, 14 and anything above 18 are false). */
export function isKnownCommand(command: number): command is Command {
  return typeof Command[command as Command] === 'string';
}

/** `DMA_MAP`, `REGION_READ`, ... or `UNKNOWN(n)`; for logs and error messages. */
export function commandName(command: number): string {
  return isKnownCommand(command) ? Command[command] : `UNKNOWN(${command})`;
}

/**
 * Who sends the request of a command. Only DMA_READ/DMA_WRITE go server -> client (spec: "DMA Read/Write");
 * a client sending one is a direction violation (conformance HDR-18).
 */
export function commandSender(command: Command): 'client' | 'server' {
  return command === Command.DMA_READ || command === Command.DMA_WRITE ? 'server' : 'client';
}

/** The spec's default `max_data_xfer_size` (1 MiB) when a peer does not send the key. */
export const DEFAULT_MAX_DATA_XFER_SIZE = 1048576;

/**
 * Room for the largest fixed part any data-carrying message adds to `max_data_xfer_size`
 * (REGION_READ reply / DMA_WRITE request: 16-byte header + 16-byte payload header). The addon's framing
 * cap is max_data_xfer_size + 64 (docs/native-addon.md).
 */
export const MESSAGE_OVERHEAD = 64;

/** The Framer's default cap on a message's `size`: the default transfer size plus the fixed overhead. */
export const DEFAULT_MAX_MESSAGE_SIZE = DEFAULT_MAX_DATA_XFER_SIZE + MESSAGE_OVERHEAD;

/**
 * The DMA page: the spec's default `pgsizes`, QEMU's page granule (its pgsizes must have the low 12 bits clear)
 * and the smallest x86 IOMMU page. DMA_MAP addresses, sizes and file offsets are multiples of it.
 */
export const PAGE_SIZE = 4096;

/** PAGE_SIZE as a bigint, for IOVA arithmetic. */
export const PAGE_SIZE_BIG = BigInt(PAGE_SIZE);

/**
 * The spec's default `max_dma_maps`: live DMA mappings a server supports. It is also the most QEMU accepts and
 * the default `dma_entry_limit` of the kernel's VFIO type1 IOMMU.
 */
export const DEFAULT_MAX_DMA_MAPS = 65535;

/** The kernel's `SCM_MAX_FD`: no legal sender can put more fds into one message. */
export const SCM_MAX_FD = 253;

/**
 * The protocol version this package implements. The major must match the peer's (spec: "Version"); the minor is
 * the highest we speak, and a server replies min(client minor, this). 2 is what libvfio-user replies; minors do
 * not change any layout this package knows.
 */
export const PROTOCOL_VERSION = Object.freeze({ major: 0, minor: 2 });

/**
 * Limits a receiver enforces while decoding (all optional).
 * - `maxDataXferSize`: the largest `count`/`size` of data a message may carry or ask for; normally the receiver's
 *   own advertised `max_data_xfer_size` (spec: "the peer must not exceed"). Defaults to the spec's 1 MiB, so a
 *   forgotten limit can never let a 16-byte REGION_READ request a 4 GiB reply.
 * - `maxMsgFds`: the receiver's advertised `max_msg_fds`; a message carrying more fds is EINVAL (HDR-26,
 *   IRQS-35). Not checked when absent.
 */
export interface Limits {
  maxDataXferSize?: number;
  maxMsgFds?: number;
}
