// PCI helpers for clients of PCI devices: what every device test does before it can see an interrupt — read and
// write config space (region 7), find a capability, enable the device, and turn on MSI or MSI-X with eventfds the
// client watches. They speak PCI (config space offsets and bits from the PCI Local Bus specification) over the
// client's REGION_READ/REGION_WRITE, so they work against any vfio-user PCI server.
import {
  IrqIndex,
  PCI_CAP_ID_EXP,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_MSIX,
  PCI_CAP_ID_PM,
  PCI_CAP_ID_VNDR,
  PCI_CAPABILITY_LIST,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_QMASK,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_FLAGS_QSIZE,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PciRegion,
} from 'vfio-user-protocol';
import type { VfioUserClient } from './client.js';
import type { IrqEventfd } from './irqs.js';

/** VFIO's PCI config space region index (PciRegion.CONFIG of vfio-user-protocol). */
export const CONFIG_REGION = PciRegion.CONFIG;

/** The standard capability IDs findCapability is usually asked for (vfio-user-protocol's PCI_CAP_ID_*). */
export const PciCapId = {
  PM: PCI_CAP_ID_PM,
  MSI: PCI_CAP_ID_MSI,
  VENDOR: PCI_CAP_ID_VNDR,
  EXP: PCI_CAP_ID_EXP,
  MSIX: PCI_CAP_ID_MSIX,
} as const;

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
  if (!(le(hdr.subarray(PCI_STATUS, PCI_STATUS + 2)) & PCI_STATUS_CAP_LIST)) return undefined;
  let p = hdr[PCI_CAPABILITY_LIST]! & 0xfc;
  for (let n = 0; p && n < 48; n++) {
    if (hdr[p] === id) return p;
    p = hdr[p + 1]! & 0xfc;
  }
  return undefined;
}

/** PCI_COMMAND: memory decoding and bus mastering on, INTx disabled when `intx` is false (what a driver does first). */
export async function enableDevice(client: VfioUserClient, opts: { intx?: boolean } = {}): Promise<void> {
  const cmd = await configRead(client, PCI_COMMAND, 2);
  let want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
  want = opts.intx === false ? want | PCI_COMMAND_INTX_DISABLE : want & ~PCI_COMMAND_INTX_DISABLE;
  if (want !== cmd) await configWrite(client, PCI_COMMAND, 2, want);
}

/**
 * Turn on MSI with `vectors` vectors (a power of two up to what the device offers): eventfds for them (watched
 * by the client: `await irqs[0].wait()`), then the capability's Multiple Message Enable and MSI Enable bits.
 * Throws when the device has no MSI capability or offers fewer vectors.
 */
export async function enableMsi(client: VfioUserClient, vectors = 1): Promise<IrqEventfd[]> {
  const cap = await findCapability(client, PciCapId.MSI);
  if (cap === undefined) throw new Error('the device has no MSI capability');
  const flags = await configRead(client, cap + PCI_MSI_FLAGS, 2);
  const log2 = Math.log2(vectors);
  if (!Number.isInteger(log2) || log2 > (flags & PCI_MSI_FLAGS_QMASK) >> 1) {
    throw new RangeError(
      `MSI: ${vectors} vectors requested, the device offers ${1 << ((flags & PCI_MSI_FLAGS_QMASK) >> 1)}`,
    );
  }
  const fds = await client.enableEventfds(IrqIndex.MSI, 0, vectors);
  await configWrite(
    client,
    cap + PCI_MSI_FLAGS,
    2,
    (flags & ~PCI_MSI_FLAGS_QSIZE) | (log2 << 4) | PCI_MSI_FLAGS_ENABLE,
  );
  return fds as IrqEventfd[];
}

/**
 * Turn on MSI-X with its first `vectors` vectors (default: all): eventfds for them, then MSI-X Enable with the
 * function mask cleared. Vectors masked in the device's MSI-X table stay pending until unmasked there.
 */
export async function enableMsix(client: VfioUserClient, vectors?: number): Promise<IrqEventfd[]> {
  const cap = await findCapability(client, PciCapId.MSIX);
  if (cap === undefined) throw new Error('the device has no MSI-X capability');
  const flags = await configRead(client, cap + PCI_MSIX_FLAGS, 2);
  const size = (flags & PCI_MSIX_FLAGS_QSIZE) + 1;
  const n = vectors ?? size;
  if (n < 1 || n > size) throw new RangeError(`MSI-X: ${n} vectors requested, the device offers ${size}`);
  const fds = await client.enableEventfds(IrqIndex.MSIX, 0, n);
  await configWrite(
    client,
    cap + PCI_MSIX_FLAGS,
    2,
    (flags & ~PCI_MSIX_FLAGS_MASKALL) | PCI_MSIX_FLAGS_ENABLE,
  );
  return fds as IrqEventfd[];
}
