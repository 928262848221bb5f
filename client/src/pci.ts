// PCI helpers for clients of PCI devices: what every device test does before it can see an interrupt — read and
// write config space (region 7), find a capability, enable the device, and turn on MSI or MSI-X with eventfds the
// client watches. They speak PCI (config space offsets and bits from the PCI Local Bus specification) over the
// client's REGION_READ/REGION_WRITE, so they work against any vfio-user PCI server.
import { IrqIndex } from 'vfio-user-protocol';
import type { VfioUserClient } from './client.js';
import type { IrqEventfd } from './irqs.js';

/** VFIO's PCI config space region index (a vfio-user PCI device uses VFIO's region numbering). */
export const CONFIG_REGION = 7;

/** Standard capability IDs (PCI spec, "Capability IDs"). */
export const PciCapId = { PM: 0x01, MSI: 0x05, VENDOR: 0x09, EXP: 0x10, MSIX: 0x11 } as const;

const COMMAND = 0x04;
const COMMAND_MEMORY = 0x2;
const COMMAND_MASTER = 0x4;
const COMMAND_INTX_DISABLE = 0x400;
const STATUS = 0x06;
const STATUS_CAP_LIST = 0x10;
const CAPABILITY_LIST = 0x34;
const MSI_FLAGS = 0x02;
const MSI_FLAGS_ENABLE = 0x1;
const MSI_FLAGS_QMASK = 0xe;
const MSI_FLAGS_QSIZE = 0x70;
const MSIX_FLAGS = 0x02;
const MSIX_FLAGS_QSIZE = 0x7ff;
const MSIX_FLAGS_MASKALL = 0x4000;
const MSIX_FLAGS_ENABLE = 0x8000;

function le(bytes: Uint8Array): number {
  let v = 0;
  for (let i = bytes.length - 1; i >= 0; i--) v = v * 256 + bytes[i]!;
  return v;
}

/** Read a 1, 2 or 4-byte config space register (little-endian). */
export async function configRead(client: VfioUserClient, offset: number, size: 1 | 2 | 4): Promise<number> {
  return le(await client.regionRead(CONFIG_REGION, BigInt(offset), size));
}

/** Write a 1, 2 or 4-byte config space register (little-endian). */
export async function configWrite(
  client: VfioUserClient,
  offset: number,
  size: 1 | 2 | 4,
  value: number,
): Promise<void> {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
  await client.regionWrite(CONFIG_REGION, BigInt(offset), b);
}

/**
 * The config space offset of the first standard capability with ID `id` (PciCapId), or undefined. The list walk
 * is bounded (48 entries), so a looping list cannot hang the caller.
 */
export async function findCapability(client: VfioUserClient, id: number): Promise<number | undefined> {
  const hdr = await client.regionRead(CONFIG_REGION, 0n, 256);
  if (!(le(hdr.subarray(STATUS, STATUS + 2)) & STATUS_CAP_LIST)) return undefined;
  let p = hdr[CAPABILITY_LIST]! & 0xfc;
  for (let n = 0; p && n < 48; n++) {
    if (hdr[p] === id) return p;
    p = hdr[p + 1]! & 0xfc;
  }
  return undefined;
}

/** COMMAND: memory decoding and bus mastering on, INTx disabled when `intx` is false (what a driver does first). */
export async function enableDevice(client: VfioUserClient, opts: { intx?: boolean } = {}): Promise<void> {
  const cmd = await configRead(client, COMMAND, 2);
  let want = cmd | COMMAND_MEMORY | COMMAND_MASTER;
  want = opts.intx === false ? want | COMMAND_INTX_DISABLE : want & ~COMMAND_INTX_DISABLE;
  if (want !== cmd) await configWrite(client, COMMAND, 2, want);
}

/**
 * Turn on MSI with `vectors` vectors (a power of two up to what the device offers): eventfds for them (watched
 * by the client: `await irqs[0].wait()`), then the capability's Multiple Message Enable and MSI Enable bits.
 * Throws when the device has no MSI capability or offers fewer vectors.
 */
export async function enableMsi(client: VfioUserClient, vectors = 1): Promise<IrqEventfd[]> {
  const cap = await findCapability(client, PciCapId.MSI);
  if (cap === undefined) throw new Error('the device has no MSI capability');
  const flags = await configRead(client, cap + MSI_FLAGS, 2);
  const log2 = Math.log2(vectors);
  if (!Number.isInteger(log2) || log2 > (flags & MSI_FLAGS_QMASK) >> 1) {
    throw new RangeError(
      `MSI: ${vectors} vectors requested, the device offers ${1 << ((flags & MSI_FLAGS_QMASK) >> 1)}`,
    );
  }
  const fds = await client.enableEventfds(IrqIndex.MSI, 0, vectors);
  await configWrite(client, cap + MSI_FLAGS, 2, (flags & ~MSI_FLAGS_QSIZE) | (log2 << 4) | MSI_FLAGS_ENABLE);
  return fds as IrqEventfd[];
}

/**
 * Turn on MSI-X with its first `vectors` vectors (default: all): eventfds for them, then MSI-X Enable with the
 * function mask cleared. Vectors masked in the device's MSI-X table stay pending until unmasked there.
 */
export async function enableMsix(client: VfioUserClient, vectors?: number): Promise<IrqEventfd[]> {
  const cap = await findCapability(client, PciCapId.MSIX);
  if (cap === undefined) throw new Error('the device has no MSI-X capability');
  const flags = await configRead(client, cap + MSIX_FLAGS, 2);
  const size = (flags & MSIX_FLAGS_QSIZE) + 1;
  const n = vectors ?? size;
  if (n < 1 || n > size) throw new RangeError(`MSI-X: ${n} vectors requested, the device offers ${size}`);
  const fds = await client.enableEventfds(IrqIndex.MSIX, 0, n);
  await configWrite(client, cap + MSIX_FLAGS, 2, (flags & ~MSIX_FLAGS_MASKALL) | MSIX_FLAGS_ENABLE);
  return fds as IrqEventfd[];
}
