// Discovery: what the server under test offers (its capabilities, device info, regions with their caps, IRQs,
// config-space identity, migration), gathered once on a fresh connection before the cases run. Cases use it to
// pick their targets and to skip, with a reason, what the server does not offer.
import { expectOk } from './conn.js';
import { type DevDriver, driverFor, type Scratch } from './devices.js';
import type { ServerCaps, Session } from './session.js';
import {
  DeviceFlag,
  type DeviceInfo,
  Feature,
  Irq,
  type IrqInfo,
  Region,
  RegionFlag,
  type RegionInfo,
} from './wire.js';

export interface RegionEntry {
  info: RegionInfo;
  /** fds that came with the full-size reply. */
  nfds: number;
  /** argsz the server asked for with a 32-byte budget. */
  neededArgsz: number;
}

export interface DeviceProfile {
  caps: ServerCaps;
  versionRaw: string | null;
  info: DeviceInfo;
  regions: RegionEntry[];
  irqs: IrqInfo[];
  vendor: number;
  device: number;
  configSize: bigint;
  /** Interrupt pin (config 0x3d). */
  pin: number;
  reset: boolean;
  driver: DevDriver | null;
  scratch: Scratch | null;
  /** A region with MMAP (N). */
  mmapRegion: number | null;
  /** An absent BAR (size 0) (Z). */
  absentBar: number | null;
  /** Implemented memory BARs (index → size). */
  memBars: { index: number; size: bigint; is64: boolean; prefetch: boolean }[];
  /** The IRQ index with the most vectors among MSI-X and MSI (preferring MSI-X). */
  vectors: { index: number; count: number } | null;
  migration: boolean;
  migrationFlags: bigint | null;
  writeMultiple: boolean;
}

export async function discover(s: Session, scratchOverride: Scratch | null): Promise<DeviceProfile> {
  const info = await s.info();
  const regions: RegionEntry[] = [];
  for (let i = 0; i < info.numRegions && i < 256; i++) {
    const first = await s.regionInfoMsg(i, 32);
    const p = expectOk(first, `GET_REGION_INFO ${i}`);
    const neededArgsz = p.readUInt32LE(0);
    for (const fd of first.fds) s.conn.native.closeFd(fd);
    const { info: ri, fds } = await s.regionInfo(i);
    regions.push({ info: ri, nfds: fds.length, neededArgsz });
  }
  const irqs: IrqInfo[] = [];
  for (let i = 0; i < info.numIrqs && i < 64; i++) irqs.push(await s.irqInfo(i));

  const cfg = regions[Region.CONFIG]?.info;
  let vendor = 0xffff;
  let device = 0xffff;
  let pin = 0;
  const memBars: DeviceProfile['memBars'] = [];
  if (cfg && cfg.size >= 64n) {
    const hdr = await s.readOk(Region.CONFIG, 0n, 64);
    vendor = hdr.readUInt16LE(0);
    device = hdr.readUInt16LE(2);
    pin = hdr[0x3d]!;
    for (let b = 0; b < 6; b++) {
      const r = regions[b]?.info;
      if (!r || r.size === 0n) continue;
      const bar = hdr.readUInt32LE(0x10 + 4 * b);
      if (bar & 1) continue; // I/O BAR
      memBars.push({ index: b, size: r.size, is64: (bar & 0x6) === 0x4, prefetch: (bar & 0x8) !== 0 });
    }
  }
  const driver = driverFor(vendor, device);
  let mmapRegion: number | null = null;
  let absentBar: number | null = null;
  for (let i = 0; i < regions.length; i++) {
    const r = regions[i]!.info;
    if (mmapRegion === null && r.flags & RegionFlag.MMAP && r.size > 0n) mmapRegion = i;
    if (absentBar === null && i < 6 && r.size === 0n) absentBar = i;
  }
  let vectors: DeviceProfile['vectors'] = null;
  for (const idx of [Irq.MSIX, Irq.MSI]) {
    const q = irqs[idx];
    if (q && q.count > 0 && (!vectors || q.count > vectors.count)) vectors = { index: idx, count: q.count };
  }
  // Migration: offered if the feature probe for MIGRATION/GET succeeds.
  let migration = false;
  let migrationFlags: bigint | null = null;
  const probe = await s.feature(16, Feature.MIGRATION | Feature.GET | Feature.PROBE);
  if (!(probe.hdr.flags & 0x20)) {
    const get = await s.feature(16, Feature.MIGRATION | Feature.GET);
    if (!(get.hdr.flags & 0x20) && get.payload.length >= 16) {
      migration = true;
      migrationFlags = get.payload.readBigUInt64LE(8);
    }
  }
  return {
    caps: s.caps,
    versionRaw: s.version.rawJson,
    info,
    regions,
    irqs,
    vendor,
    device,
    configSize: cfg?.size ?? 0n,
    pin,
    reset: (info.flags & DeviceFlag.RESET) !== 0,
    driver,
    scratch: scratchOverride ?? driver?.scratch ?? null,
    mmapRegion,
    absentBar,
    memBars,
    vectors,
    migration,
    migrationFlags,
    writeMultiple: s.caps.writeMultiple,
  };
}

export function describeProfile(p: DeviceProfile): string[] {
  const hx = (n: number) => n.toString(16).padStart(4, '0');
  const lines = [
    `device ${hx(p.vendor)}:${hx(p.device)}${p.driver ? ` (driver: ${p.driver.name})` : ' (no device driver: *dev* cases skip)'}`,
    `flags 0x${p.info.flags.toString(16)}, ${p.info.numRegions} regions, ${p.info.numIrqs} irq indexes, reset ${p.reset ? 'yes' : 'no'}`,
    `caps ${JSON.stringify(p.caps.raw)}`,
  ];
  for (let i = 0; i < p.regions.length; i++) {
    const r = p.regions[i]!.info;
    if (r.size === 0n) continue;
    const caps = r.caps.map((c) => (c.id === 1 ? `sparse×${c.areas?.length ?? 0}` : `cap${c.id}`)).join(',');
    lines.push(
      `region ${i}: size 0x${r.size.toString(16)} flags 0x${r.flags.toString(16)}${caps ? ` caps ${caps}` : ''}` +
        `${p.regions[i]!.nfds ? ` fds ${p.regions[i]!.nfds}` : ''}`,
    );
  }
  lines.push(`irqs ${p.irqs.map((q) => `${q.index}:${q.count}/0x${q.flags.toString(16)}`).join(' ')}`);
  lines.push(`migration ${p.migration ? `yes (flags 0x${p.migrationFlags?.toString(16)})` : 'no'}`);
  lines.push(`write_multiple ${p.writeMultiple ? 'offered' : 'not offered'}`);
  return lines;
}
