// The 4 KiB Identify data structures (NVMe 1.4 section 5.15.2) and the log pages Linux reads.
import { createHash } from 'node:crypto';
import { NVME_MDTS, NVME_VERSION, OACS_DBBUF, ONCS_DSM, ONCS_WRITE_ZEROES } from './constants.js';

export const NVME_VENDOR_ID = 0x1b36; // Red Hat's PCI id, as QEMU's nvme (1b36:0010)
export const NVME_DEVICE_ID = 0x0010;
const IDENTIFY_SIZE = 4096;

export interface ControllerIdentity {
  serial: string;
  model: string;
  firmware: string;
  /** Number of namespaces (NN). */
  namespaces: number;
  /** Advertise Doorbell Buffer Config (shadow doorbells). */
  dbbuf: boolean;
  /** Outstanding Abort commands (ACL, 0-based) and Async Event Requests (AERL, 0-based) we accept. */
  abortLimit: number;
  aerLimit: number;
  maxQueueEntries: number;
}

function ascii(buf: Uint8Array, at: number, len: number, text: string): void {
  buf.fill(0x20, at, at + len);
  for (let i = 0; i < Math.min(len, text.length); i++) buf[at + i] = text.charCodeAt(i) & 0x7f;
}

export function identifyController(id: ControllerIdentity): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, NVME_VENDOR_ID, true); // VID
  dv.setUint16(2, 0x1af4, true); // SSVID
  ascii(b, 4, 20, id.serial);
  ascii(b, 24, 40, id.model);
  ascii(b, 64, 8, id.firmware);
  b[72] = 6; // RAB
  b[73] = 0x00; // IEEE OUI (none)
  b[77] = NVME_MDTS;
  dv.setUint16(78, 0, true); // CNTLID
  dv.setUint32(80, NVME_VERSION, true);
  b[111] = 1; // CNTRLTYPE: I/O controller
  dv.setUint16(256, id.dbbuf ? OACS_DBBUF : 0, true); // OACS
  b[258] = id.abortLimit;
  b[259] = id.aerLimit;
  b[260] = 0x03; // FRMW: slot 1 read-only, one slot
  b[261] = 0x00; // LPA
  b[262] = 0; // ELPE: one error log entry
  b[263] = 0; // NPSS: one power state
  dv.setUint16(266, 0x0157, true); // WCTEMP 343 K
  dv.setUint16(268, 0x0175, true); // CCTEMP 373 K
  b[512] = (6 << 4) | 6; // SQES
  b[513] = (4 << 4) | 4; // CQES
  dv.setUint16(514, id.maxQueueEntries, true); // MAXCMD
  dv.setUint32(516, id.namespaces, true); // NN
  dv.setUint16(520, ONCS_DSM | ONCS_WRITE_ZEROES, true); // ONCS
  b[525] = 1; // VWC: a volatile write cache (the host page cache): Flush means fdatasync
  ascii(b, 768, 256, `nqn.2024-01.io.github.vfio-user-node:nvme:${id.serial}`);
  b.fill(0, 768 + `nqn.2024-01.io.github.vfio-user-node:nvme:${id.serial}`.length, 1024);
  // Power state 0: 25 W, no latencies.
  dv.setUint16(2048, 2500, true);
  return b;
}

export interface NamespaceIdentity {
  blocks: bigint;
  lbaShift: number;
  /** 16 bytes, also the EUI-64 source. */
  nguid: Uint8Array;
}

export function identifyNamespace(ns: NamespaceIdentity): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, ns.blocks, true); // NSZE
  dv.setBigUint64(8, ns.blocks, true); // NCAP
  dv.setBigUint64(16, ns.blocks, true); // NUSE
  b[24] = 1 << 0; // NSFEAT: thin provisioning (sparse image)
  b[25] = 0; // NLBAF: one format
  b[26] = 0; // FLBAS: format 0
  b[33] = 0x01 | 0x08; // DLFEAT: deallocated blocks read zeros; Write Zeroes may deallocate
  b.set(ns.nguid, 104); // NGUID
  b.set(ns.nguid.subarray(0, 8), 120); // EUI64
  dv.setUint32(128, ns.lbaShift << 16, true); // LBAF0: LBADS, no metadata, best performance
  return b;
}

/** CNS 0x02: active namespace ids above `after`. */
export function activeNamespaceList(count: number, after: number): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  const dv = new DataView(b.buffer);
  let at = 0;
  for (let nsid = after + 1; nsid <= count && at < IDENTIFY_SIZE; nsid++, at += 4)
    dv.setUint32(at, nsid, true);
  return b;
}

/** CNS 0x03: identification descriptors: NGUID (type 2) and UUID (type 3). */
export function namespaceDescriptors(nguid: Uint8Array, uuid: Uint8Array): Uint8Array {
  const b = new Uint8Array(IDENTIFY_SIZE);
  b[0] = 2;
  b[1] = 16;
  b.set(nguid, 4);
  b[20] = 3;
  b[21] = 16;
  b.set(uuid, 24);
  return b;
}

/** A stable 16-byte id derived from the serial (and a label). */
export function derivedId(serial: string, label: string): Uint8Array {
  const h = createHash('sha256').update(`${label}:${serial}`).digest();
  const id = new Uint8Array(h.subarray(0, 16));
  if (label === 'uuid') {
    id[6] = (id[6]! & 0x0f) | 0x50; // version 5-like
    id[8] = (id[8]! & 0x3f) | 0x80;
  }
  return id;
}

export interface SmartCounters {
  bytesRead: number;
  bytesWritten: number;
  readCommands: number;
  writeCommands: number;
  powerOnSeconds: number;
}

/** Log page 0x02, SMART / Health Information (512 bytes). Data units are thousands of 512-byte units. */
export function smartLog(c: SmartCounters): Uint8Array {
  const b = new Uint8Array(512);
  const dv = new DataView(b.buffer);
  dv.setUint16(1, 273 + 40, true); // composite temperature, 40 C in Kelvin
  b[3] = 100; // available spare
  b[4] = 10; // threshold
  const units = (bytes: number) => BigInt(Math.ceil(bytes / 512 / 1000));
  dv.setBigUint64(32, units(c.bytesRead), true);
  dv.setBigUint64(48, units(c.bytesWritten), true);
  dv.setBigUint64(64, BigInt(c.readCommands), true);
  dv.setBigUint64(80, BigInt(c.writeCommands), true);
  dv.setBigUint64(128, BigInt(Math.floor(c.powerOnSeconds / 3600)), true);
  return b;
}

/** Log page 0x03, firmware slots: slot 1 active. */
export function firmwareLog(firmware: string): Uint8Array {
  const b = new Uint8Array(512);
  b[0] = 1;
  ascii(b, 8, 8, firmware);
  return b;
}
