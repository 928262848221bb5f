// Runs INSIDE the VM guest (Node over the 9p share, see test/vm/mirror.test.ts): our vfio-user server passes the
// guest's `edu` (bound to vfio-pci, behind the emulated VT-d) through with the VFIO type1 or the iommufd backend,
// and a vfio-user client in the same process plays the VMM over a real UNIX socket: DMA_MAP of memfds, edu
// programmed through the server (REGION_WRITE and the mmap'ed BAR), the bytes checked in the memfd, the host
// IOMMU state checked through the kernel (DMA_AVAIL, IOAS areas).
//
//   node test/dist/vm/guest/mirror-guest.js <type1|iommufd|bench> [BDF] [--log=debug] [--pairs=N] [--stages=a,b] [--rows=backend]
//     [--handover=off]
//   (mode and BDF default to $MODE and $BDF)
//
// Prints `ok - ...` / `FAIL - ...` / `skip - ...` per check and ends with `N passed, N failed, N skipped`; exits 1
// when anything failed. `bench` prints `BENCH {json}` lines instead (test/bench/iommu-bench.mjs).

import { spawn, spawnSync } from 'node:child_process';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { GuestMemory, type RegionMapping, VfioUserClient } from 'vfio-user-client';
import {
  closeFd,
  dupFd,
  eventfd,
  eventfdRead,
  iommufd,
  MAP_SHARED,
  mapAddress,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
  pread,
  pwrite,
  U64_MAX,
  vfio,
} from 'vfio-user-native';
import { IrqIndex } from 'vfio-user-protocol';
import { DmaAddressSpace, type IommuBackend, IommuMirror, VfioUserServer } from 'vfio-user-server';
import { pidAlive } from '../../lib/procs.js';
import { poll, sleep } from '../../lib/wait.js';

// The server's modules that its package index does not export (yet): loaded from its dist by path.
type SelectMod = typeof import('../../../server/src/iommu/select.js');
type DevicesMod = typeof import('../../../server/src/devices/index.js');
type Type1Mod = typeof import('../../../server/src/iommu/vfio-type1.js');
type IommufdMod = typeof import('../../../server/src/iommu/iommufd.js');
type VfioPciMod = typeof import('../../../server/src/devices/vfio-pci.js');
type HostDeviceBackend = import('../../../server/src/iommu/host-device.js').HostDeviceBackend;
type HostMapping = import('../../../server/src/iommu/backend.js').HostMapping;
const dist = new URL('../../../../server/dist/src/', import.meta.url);
const load = async <T>(p: string): Promise<T> => (await import(new URL(p, dist).href)) as T;
const { createIommuBackend } = await load<SelectMod>('iommu/select.js');
const { createDevice } = await load<DevicesMod>('devices/index.js');
const { VfioType1Backend } = await load<Type1Mod>('iommu/vfio-type1.js');
const { IommufdBackend } = await load<IommufdMod>('iommu/iommufd.js');
type VfioType1Backend = InstanceType<Type1Mod['VfioType1Backend']>;
type IommufdBackend = InstanceType<IommufdMod['IommufdBackend']>;
type VfioPciDevice = InstanceType<VfioPciMod['VfioPciDevice']>;

// Options as `--name=value`; MODE and BDF come from the environment /init exports unless given as positional
// arguments.
const opts = new Map(
  process.argv
    .slice(2)
    .filter((a) => a.startsWith('--'))
    .map((a) => a.slice(2).split('=') as [string, string]),
);
const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const mode = positional[0] ?? process.env.MODE ?? 'type1';
const bdf = positional[1] ?? process.env.BDF ?? '0000:00:03.0';
const logLevel = (opts.get('log') ?? 'silent') as pino.Level | 'silent';
const logger = pino({ level: logLevel }, pino.destination(2));

let passed = 0;
let failed = 0;
const skipped = 0;
function check(ok: boolean, what: string): boolean {
  console.log(`${ok ? 'ok' : 'FAIL'} - ${what}`);
  if (ok) passed++;
  else failed++;
  return ok;
}
const hex = (v: bigint | number) => `0x${v.toString(16)}`;
const PAGE = 0x1000n;

/** The errno code a promise rejects with, or 'ok'. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

// ------------------------------------------------------------------------------------------------------------
// edu, driven through any register access path (vfio-user messages, the client's BAR mmap, a raw VFIO fd)

interface RegIo {
  read32(off: number): Promise<number>;
  write32(off: number, v: number): Promise<void>;
  write64(off: number, v: bigint): Promise<void>;
}

const EDU = {
  IDENT: 0x00,
  LIVENESS: 0x04,
  IRQ_STATUS: 0x24,
  IRQ_RAISE: 0x60,
  IRQ_ACK: 0x64,
  SRC: 0x80,
  DST: 0x88,
  CNT: 0x90,
  CMD: 0x98,
};
const EDU_BUF = 0x40000n;

class Edu {
  constructor(readonly io: RegIo) {}

  /** One edu transfer; the edu-side range is validated here because an out-of-range edu DMA aborts QEMU. */
  async dma(src: bigint, dst: bigint, count: number, toRam: boolean): Promise<void> {
    const edu = toRam ? src : dst;
    if (count <= 0 || count > 0x1000 || edu < EDU_BUF || edu + BigInt(count) > EDU_BUF + 0x1000n) {
      throw new RangeError('refusing an out-of-range edu transfer');
    }
    await this.io.write64(EDU.SRC, src);
    await this.io.write64(EDU.DST, dst);
    await this.io.write64(EDU.CNT, BigInt(count));
    await this.io.write64(EDU.CMD, toRam ? 3n : 1n);
    // Completion comes from a 100 ms virtual-clock timer.
    for (let i = 0; i < 2000; i++) {
      if (((await this.io.read32(EDU.CMD)) & 1) === 0) return;
      await sleep(5);
    }
    throw new Error('edu DMA timed out');
  }

  /** RAM(src) -> edu buffer -> RAM(dst). */
  async roundtrip(src: bigint, dst: bigint, n: number): Promise<void> {
    await this.dma(src, EDU_BUF, n, false);
    await this.dma(EDU_BUF, dst, n, true);
  }
}

function clientIo(c: VfioUserClient): RegIo {
  const dv = (n: number) => new DataView(new ArrayBuffer(n));
  return {
    async read32(off) {
      const b = await c.regionRead(0, BigInt(off), 4);
      return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, true);
    },
    async write32(off, v) {
      const d = dv(4);
      d.setUint32(0, v, true);
      await c.regionWrite(0, BigInt(off), new Uint8Array(d.buffer));
    },
    async write64(off, v) {
      const d = dv(8);
      d.setBigUint64(0, v, true);
      await c.regionWrite(0, BigInt(off), new Uint8Array(d.buffer));
    },
  };
}

/** BAR0 through the client's mmap of the region fd: aligned 32-bit loads/stores (edu accepts 4 bytes at 0x80+). */
function mmapIo(words: Uint32Array): RegIo {
  return {
    async read32(off) {
      return words[off / 4]!;
    },
    async write32(off, v) {
      words[off / 4] = v;
    },
    async write64(off, v) {
      // A 4-byte write sets the whole 64-bit edu register (zero-extended): our IOVAs are below 4 GiB.
      if (v >> 32n !== 0n) throw new RangeError('mmap path: 64-bit value');
      words[off / 4] = Number(v);
    },
  };
}

/** A raw VFIO device fd (no vfio-user in between): for the late-attach case and the bench. */
function rawIo(fd: number): { io: RegIo; enableBusMaster(): void } {
  const bar0 = vfio.regionInfo(fd, 0);
  const cfg = vfio.regionInfo(fd, 7);
  const b4 = new Uint8Array(4);
  const b8 = new Uint8Array(8);
  const v4 = new DataView(b4.buffer);
  const v8 = new DataView(b8.buffer);
  return {
    io: {
      async read32(off) {
        vfio.regionRead(fd, bar0, BigInt(off), b4);
        return v4.getUint32(0, true);
      },
      async write32(off, v) {
        v4.setUint32(0, v, true);
        vfio.regionWrite(fd, bar0, BigInt(off), b4);
      },
      async write64(off, v) {
        v8.setBigUint64(0, v, true);
        vfio.regionWrite(fd, bar0, BigInt(off), b8);
      },
    },
    enableBusMaster() {
      const c = new Uint8Array(2);
      pread(fd, c, cfg.offset + 4n);
      c[0]! |= 0x6;
      pwrite(fd, c, cfg.offset + 4n);
    },
  };
}

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (seed + i * 7 + (i >> 8)) & 0xff;
  return out;
}
const equal = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((v, i) => v === b[i]);
const allBytes = (a: Uint8Array, v: number) => a.every((x) => x === v);

// ------------------------------------------------------------------------------------------------------------
// The server + client pair

interface Rig {
  backend: IommuBackend;
  device: VfioPciDevice;
  server: VfioUserServer;
  client: VfioUserClient;
  sock: string;
}

let rigs = 0;

/** Undo actions of the running stage, run (latest first) when it ends, also when it aborted half-way. */
const cleanups: (() => unknown)[] = [];
function onCleanup(fn: () => unknown): void {
  cleanups.push(fn);
}
async function runCleanups(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try {
      await fn();
    } catch (e) {
      console.log(`# cleanup failed: ${(e as Error).message}`);
    }
  }
}
/** An fd closed by the stage's cleanup (exactly once). */
function stageFd(fd: number): number {
  onCleanup(() => closeFd(fd));
  return fd;
}

async function startRig(
  choice: 'vfio' | 'iommufd',
  hostFds: Record<string, number> = {},
  backend?: IommuBackend,
): Promise<Rig> {
  const b =
    backend ??
    (await createIommuBackend(choice, {
      hostFds,
      device: { name: 'vfio-pci', params: { host: bdf } },
      log: logger.child({ module: 'select' }),
    }));
  const device = createDevice('vfio-pci', {
    host: bdf,
    hostDevice: (b as HostDeviceBackend).hostDevice(),
    log: logger,
  }) as unknown as VfioPciDevice;
  const sock = `/tmp/mirror-${process.pid}-${rigs++}.sock`;
  const server = new VfioUserServer({ socketPath: sock, device, iommu: b, logger });
  onCleanup(() => server.close());
  onCleanup(() => b.close()); // when start() failed; idempotent otherwise
  await server.start();
  const client = await VfioUserClient.connect(sock);
  onCleanup(() => client.close());
  await client.negotiate();
  return { backend: b, device, server, client, sock };
}

function disconnected(server: VfioUserServer): Promise<void> {
  return new Promise((r) => server.once('disconnect', () => r()));
}

async function stopRig(r: Rig): Promise<void> {
  if (!r.client.closed) {
    const gone = disconnected(r.server);
    r.client.close();
    await gone;
  }
  await r.server.close();
}

/** Host entries now: type1 DMA_AVAIL, or for iommufd the bytes an unmap of everything removed (destructive). */
function dmaAvail(b: IommuBackend): number {
  return (b as VfioType1Backend).hostInfo().dmaAvail ?? -1;
}

async function iommufdAreasBytes(b: IommuBackend): Promise<bigint | string> {
  const ids = (b as IommufdBackend).ids;
  try {
    return await iommufd.ioasUnmap(ids.iommufd, { ioasId: ids.ioas, iova: 0n, length: U64_MAX });
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

// ------------------------------------------------------------------------------------------------------------
// The main scenario: one server, one client, everything a VMM does

const IOVA_A = 0x100000n;
const IOVA_B = 0x200000n;
const IOVA_C = 0x300000n;
const OFF_A = 0x0;
const OFF_B = 0x10000;
const OFF_C = 0x20000;
const CHURN_BASE = 0x1000_0000n;
const IOVA_BIG = 0x80_0000n;
const BIG = 0x40_0000; // 4 MiB: above the backends' synchronous-ioctl threshold (2 MiB)

/** What the steps of the main scenario share. */
interface MainScenario {
  type1: boolean;
  rig: Rig;
  /** DMA_AVAIL at the start (type1; 65535 for iommufd, which has no entry limit). */
  avail0: number;
  /** The guest RAM the client maps (A, B and C live in it). */
  ram: GuestMemory;
  /** edu through REGION_READ/WRITE and through the mmap-ed BAR0. */
  edu: Edu;
  eduMmap: Edu;
  /** BAR0's mapping of the device fd (unmapped before the disconnect). */
  bar0Map: RegionMapping;
}

async function mainScenario(kind: 'type1' | 'iommufd'): Promise<void> {
  const t0 = performance.now();
  const rig = await startRig(kind === 'type1' ? 'vfio' : 'iommufd');
  const { server, device, backend } = rig;
  const type1 = kind === 'type1';
  check(
    backend.name === (type1 ? 'vfio-type1' : 'iommufd') && device.host.via === backend.name,
    `${kind}: server up with the ${backend.name} backend holding ${bdf} (${(performance.now() - t0).toFixed(0)} ms)`,
  );
  const avail0 = checkHostFacts(rig, type1);
  const forwarded = await checkForwardedDevice(rig);
  const sc: MainScenario = {
    type1,
    rig,
    avail0,
    ram: GuestMemory.create(0x100000, 'guest-ram'),
    ...forwarded,
  };
  const a = await checkDmaThroughIommu(sc);
  const c = await checkReadOnlyMap(sc);
  await checkRefusedMaps(sc);
  await checkUnmaps(sc, c);
  await checkBigMapOnThreadpool(sc);
  await checkInterrupts(sc);
  const churn = churnPages();
  await checkChurn(sc, churn);
  await checkDisconnectAndReplay(sc, churn, a);
  await server.close();
  sc.ram.close();
  churn.mem.close();
}

/** Host facts and what the server advertised from them in VERSION; returns DMA_AVAIL at the start. */
function checkHostFacts(rig: Rig, type1: boolean): number {
  const { server, client, backend } = rig;
  const facts = server.hostFacts!;
  const caps = client.serverCaps;
  const msiFree = facts.iovaRanges.every((r) => r.last < 0xfee00000n || r.start > 0xfeefffffn);
  check(
    msiFree && facts.iovaRanges.length >= 2,
    `host IOVA ranges exclude the MSI window: ${facts.iovaRanges.map((r) => `${hex(r.start)}-${hex(r.last)}`).join(' ')}`,
  );
  const avail0 = type1 ? dmaAvail(backend) : 65535;
  if (type1) {
    check(
      BigInt(caps.pgsizes) === (facts.pgsizes & ((1n << 53n) - 1n)) && (caps.pgsizes & 0x1000) !== 0,
      `pgsizes advertised = host iova_pgsizes ${hex(caps.pgsizes)}`,
    );
    check(
      caps.maxDmaMaps === Math.min(avail0, 65535) && avail0 > 0,
      `max_dma_maps ${caps.maxDmaMaps} = DMA_AVAIL ${avail0}`,
    );
  } else {
    check(
      caps.pgsizes === 0x1000 && caps.maxDmaMaps === 65535,
      `pgsizes ${hex(caps.pgsizes)}, max_dma_maps ${caps.maxDmaMaps} (iommufd: no entry limit)`,
    );
    check(
      (backend as IommufdBackend).usesMapFile,
      'IOMMU_IOAS_MAP_FILE probed present: maps go straight from the client fd',
    );
  }
  return avail0;
}

/** DEVICE_GET_INFO, BAR0 and config space forwarded from the host; edu reached both ways. */
async function checkForwardedDevice(rig: Rig): Promise<{ edu: Edu; eduMmap: Edu; bar0Map: RegionMapping }> {
  const { client } = rig;
  const di = await client.getDeviceInfo();
  check(
    (di.flags & 0x2) !== 0 && di.numRegions === 9 && di.numIrqs === 5,
    `DEVICE_GET_INFO from the host: flags ${hex(di.flags)}, ${di.numRegions} regions, ${di.numIrqs} irqs`,
  );
  const bar0 = await client.getRegionInfo(0);
  check(
    bar0.size === 0x100000n && (bar0.flags & 0x7) === 0x7 && bar0.fd !== undefined,
    `BAR0: size ${hex(bar0.size)}, flags ${hex(bar0.flags)} (R|W|MMAP), device fd handed over, offset ${hex(bar0.offset)}`,
  );
  const cfg = await client.regionRead(7, 0n, 4);
  const ids = new DataView(cfg.buffer, cfg.byteOffset).getUint32(0, true);
  check(ids === 0x11e81234, `config space forwarded: ids ${hex(ids)}`);
  const cmd = await client.regionRead(7, 4n, 2);
  cmd[0]! |= 0x6;
  await client.regionWrite(7, 4n, cmd);
  const cmd2 = await client.regionRead(7, 4n, 2);
  check(
    (cmd2[0]! & 0x6) === 0x6,
    `PCI_COMMAND memory+bus master enabled through the config region (${hex(cmd2[0]!)})`,
  );

  const edu = new Edu(clientIo(client));
  const ident = await edu.io.read32(EDU.IDENT);
  await edu.io.write32(EDU.LIVENESS, 0x12345678);
  const live = await edu.io.read32(EDU.LIVENESS);
  check(
    ident === 0x010000ed && live === ~0x12345678 >>> 0,
    `edu ident ${hex(ident)} and liveness through REGION_READ/WRITE`,
  );
  const bar0Map = client.mmapRegion(bar0);
  const words = new Uint32Array(bar0Map.buffer);
  const eduMmap = new Edu(mmapIo(words));
  check(words[0] === 0x010000ed, `BAR0 mmap of the device fd reads ident ${hex(words[0]!)}`);
  return { edu, eduMmap, bar0Map };
}

/** DMA through the host IOMMU: maps A and B, edu copies between them; returns A's contents. */
async function checkDmaThroughIommu(sc: MainScenario): Promise<Uint8Array> {
  const { type1, avail0, ram, edu, eduMmap } = sc;
  const { server, client, backend } = sc.rig;
  const a = pattern(0x2000, 0x11);
  ram.write(OFF_A, a);
  await client.mapMemory(ram, { address: IOVA_A, memoryOffset: OFF_A, size: 0x2000 });
  await client.mapMemory(ram, { address: IOVA_B, memoryOffset: OFF_B, size: 0x2000 });
  check(
    server.mirror.stats.live === 2,
    `DMA_MAP A and B mirrored (live ${server.mirror.stats.live}, pages ${server.mirror.stats.pagesPinned})`,
  );
  if (type1) check(dmaAvail(backend) === avail0 - 2, `DMA_AVAIL dropped by 2 (${dmaAvail(backend)})`);
  await edu.roundtrip(IOVA_A, IOVA_B, 0x1000);
  check(
    equal(ram.read(OFF_B, 0x1000), a.subarray(0, 0x1000)) && allBytes(ram.read(OFF_B + 0x1000, 0x1000), 0),
    'edu DMA A -> edu -> B (BAR writes over vfio-user): 4096 bytes in the memfd, nothing beyond',
  );
  ram.fill(0, OFF_B, 0x2000);
  await eduMmap.roundtrip(IOVA_A + 0xf80n, IOVA_B + 0x800n, 0x100);
  check(
    equal(ram.read(OFF_B + 0x800, 0x100), a.subarray(0xf80, 0x1080)) && allBytes(ram.read(OFF_B, 0x800), 0),
    'edu DMA programmed through the mmap-ed BAR, at offsets across a page boundary',
  );
  return a;
}

/** A read-only map: the device may read it, not write it; returns C's contents. */
async function checkReadOnlyMap(sc: MainScenario): Promise<Uint8Array> {
  const { ram, edu } = sc;
  const { client } = sc.rig;
  const c = pattern(0x1000, 0x55);
  ram.write(OFF_C, c);
  await client.mapMemory(ram, { address: IOVA_C, memoryOffset: OFF_C, size: 0x1000, flags: 0x1 });
  ram.fill(0, OFF_B, 0x2000);
  await edu.roundtrip(IOVA_C, IOVA_B, 0x1000);
  check(equal(ram.read(OFF_B, 0x1000), c), 'READ-only map: the device reads it');
  await edu.dma(EDU_BUF, IOVA_C, 0x1000, true);
  check(
    equal(ram.read(OFF_C, 0x1000), c),
    'READ-only map: a device write is blocked (memfd unchanged, DMAR fault)',
  );
  return c;
}

/** Maps the address space or the host refuses (reserved MSI window, overlaps, misalignment) leave nothing. */
async function checkRefusedMaps(sc: MainScenario): Promise<void> {
  const { type1, avail0 } = sc;
  const { client, backend } = sc.rig;
  const mem2 = stageFd(memfdCreate('extra', 0x10000));
  const tryMap = (address: bigint, size: bigint, offset = 0n, flags = 3) =>
    outcome(client.dmaMap({ address, size, fd: mem2, offset, flags }));
  const msi = await tryMap(0xfee00000n, PAGE);
  check(msi === 'EINVAL', `DMA_MAP in the reserved MSI window 0xfee00000 refused: ${msi}`);
  const overlaps = [
    await tryMap(IOVA_A, 0x2000n),
    await tryMap(IOVA_A + PAGE, PAGE),
    await tryMap(IOVA_A - PAGE, 0x2000n),
  ];
  check(
    overlaps.every((o) => o === 'EEXIST'),
    `overlapping maps (identical, inside, straddling) refused: ${overlaps.join(' ')}`,
  );
  const misaligned = await tryMap(0x500800n, PAGE);
  check(misaligned === 'EINVAL', `misaligned DMA_MAP refused: ${misaligned}`);
  // The kernel itself agrees on the reserved window (the mirror refused before asking it), and keeps nothing.
  const probeBuf = mmap(mem2, 0n, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED);
  const direct = await outcome(
    Promise.resolve().then(() =>
      backend.map({
        iova: 0xfee00000n,
        size: PAGE,
        read: true,
        write: true,
        fd: mem2,
        fileOffset: 0n,
        vaddr: mapAddress(probeBuf),
      }),
    ),
  );
  check(direct === 'EINVAL', `the host kernel refuses a map at 0xfee00000 too: ${direct}`);
  if (type1) check(dmaAvail(backend) === avail0 - 3, 'the refused maps left no host entry');
  munmap(probeBuf);
}

/** Unmaps: of nothing, bisecting (refused), and of B (the device faults there; A keeps working). */
async function checkUnmaps(sc: MainScenario, c: Uint8Array): Promise<void> {
  const { type1, avail0, ram, edu } = sc;
  const { client, backend } = sc.rig;
  const nothing = await outcome(client.dmaUnmap({ address: 0x7000000n, size: 0x100000n }));
  check(nothing === 'ok', `DMA_UNMAP of a range holding nothing succeeds (${nothing})`);
  const bisect = await outcome(client.dmaUnmap({ address: IOVA_A, size: PAGE }));
  check(bisect === 'EINVAL', `DMA_UNMAP bisecting a mapping refused: ${bisect}`);
  await client.dmaUnmap({ address: IOVA_B, size: 0x2000n });
  ram.fill(0xee, OFF_B, 0x2000);
  await edu.dma(EDU_BUF, IOVA_B, 0x1000, true);
  check(
    allBytes(ram.read(OFF_B, 0x2000), 0xee),
    'after DMA_UNMAP B, edu DMA to its IOVA is blocked (memfd unchanged, DMAR fault)',
  );
  ram.fill(0, OFF_A, 0x2000);
  await edu.dma(EDU_BUF, IOVA_A, 0x100, true);
  check(
    equal(ram.read(OFF_A, 0x100), c.subarray(0, 0x100)),
    'the still-mapped A keeps working after the fault',
  );
  if (type1)
    check(
      dmaAvail(backend) === avail0 - 2,
      `DMA_AVAIL back up by one after the unmap (${dmaAvail(backend)})`,
    );
}

/** A region above the synchronous-ioctl threshold: its map and unmap pin on the threadpool. */
async function checkBigMapOnThreadpool(sc: MainScenario): Promise<void> {
  const { type1, avail0, edu } = sc;
  const { client, backend } = sc.rig;
  const paths = (backend as VfioType1Backend | IommufdBackend).ioctlPath.counts;
  const bigMem = GuestMemory.create(BIG, 'big');
  const p0 = { ...paths };
  const bigSrc = pattern(0x1000, 0x99);
  bigMem.write(0, bigSrc);
  await client.mapMemory(bigMem, { address: IOVA_BIG, memoryOffset: 0, size: BIG });
  await edu.roundtrip(IOVA_BIG, IOVA_BIG + BigInt(BIG) - PAGE, 0x1000);
  check(
    paths.async === p0.async + 1 &&
      paths.sync === p0.sync &&
      equal(bigMem.read(BIG - 0x1000, 0x1000), bigSrc),
    `${BIG >> 20} MiB DMA_MAP mapped on the threadpool (above the 2 MiB sync threshold): edu DMA reaches its last page`,
  );
  await client.dmaUnmap({ address: IOVA_BIG, size: BigInt(BIG) });
  check(
    paths.async === p0.async + 2 && paths.sync === p0.sync && (!type1 || dmaAvail(backend) === avail0 - 2),
    `its DMA_UNMAP ran on the threadpool too (paths: ${JSON.stringify(paths)})`,
  );
  bigMem.close();
}

/** Interrupts through the engine: MSI, then INTx (automasked by the host, unmasked by the client). */
async function checkInterrupts(sc: MainScenario): Promise<void> {
  const { edu } = sc;
  const { client, device } = sc.rig;
  const [ev] = await client.enableEventfds(IrqIndex.MSI, 0, 1);
  await edu.io.write32(EDU.IRQ_RAISE, 0x1);
  const gotMsi = await poll(() => (ev?.count ?? 0) > 0, 2000);
  await edu.io.write32(EDU.IRQ_ACK, 0x1);
  check(
    gotMsi && device.stats.irqPassthrough > 0,
    "edu MSI reached the client's eventfd (eventfd given to VFIO_DEVICE_SET_IRQS)",
  );
  await client.disableIrqs(IrqIndex.MSI);
  const [intx] = await client.enableEventfds(IrqIndex.INTX, 0, 1);
  await edu.io.write32(EDU.IRQ_RAISE, 0x2);
  const first = await poll(() => (intx?.count ?? 0) === 1, 2000);
  await edu.io.write32(EDU.IRQ_ACK, 0x2);
  await client.unmaskIrqs(IrqIndex.INTX, 0, 1);
  await edu.io.write32(EDU.IRQ_RAISE, 0x2);
  const second = await poll(() => (intx?.count ?? 0) === 2, 2000);
  await edu.io.write32(EDU.IRQ_ACK, 0x2);
  await client.unmaskIrqs(IrqIndex.INTX, 0, 1);
  check(
    first && second,
    `edu INTx reached the client twice, the host's automask lifted by the client's unmask (${intx?.count})`,
  );
  await client.disableIrqs(IrqIndex.INTX);
  // The pass-through hook itself, called as the engine will: the client's eventfd goes straight to the host
  // (VFIO_DEVICE_SET_IRQS) and the host device signals it with no hop through this process.
  const efd = stageFd(eventfd());
  device.setIrqs(IrqIndex.MSI, 0x4 | 0x20, 0, 1, [efd]);
  const passedBefore = device.stats.irqPassthrough;
  await edu.io.write32(EDU.IRQ_RAISE, 0x4);
  let signalled = 0n;
  await poll(() => {
    signalled += eventfdRead(efd);
    return signalled > 0n;
  }, 2000);
  await edu.io.write32(EDU.IRQ_ACK, 0x4);
  device.setIrqs(IrqIndex.MSI, 0x1 | 0x20, 0, 0, []);
  check(
    signalled > 0n && device.stats.irqPassthrough > passedBefore,
    'SET_IRQS pass-through hook: the host device signals the eventfd given to VFIO directly',
  );
}

/** One guest IOTLB entry (4 KiB page) mapped or unmapped at CHURN_BASE + i pages. */
interface ChurnPages {
  mem: GuestMemory;
  mapPage(cl: VfioUserClient, i: number, off?: number): Promise<unknown>;
  unmapPage(cl: VfioUserClient, i: number): Promise<unknown>;
}

function churnPages(): ChurnPages {
  const mem = GuestMemory.create(0x100000, 'churn');
  // Pipelined requests each carry the client's reply timeout from the moment they are sent: a slow (TCG, loaded)
  // guest may need more than QEMU's 5 s for the tail of a 1024-deep pipeline.
  const timeoutMs = 60_000;
  return {
    mem,
    mapPage: (cl, i, off = i % 256) =>
      cl.mapMemory(mem, {
        address: CHURN_BASE + BigInt(i) * PAGE,
        memoryOffset: off * 0x1000,
        size: 0x1000,
        timeoutMs,
      }),
    unmapPage: (cl, i) => cl.dmaUnmap({ address: CHURN_BASE + BigInt(i) * PAGE, size: PAGE, timeoutMs }),
  };
}

/**
 * vIOMMU-style churn: one DMA_MAP per guest IOTLB entry (4 KiB), each later unmapped on its own, sent one at a
 * time (latency-bound) and pipelined as QEMU does inside a memory transaction; then a guest IOTLB flush:
 * naturally aligned windows covering many entries (and, past them, none).
 */
async function checkChurn(sc: MainScenario, { mapPage, unmapPage }: ChurnPages): Promise<void> {
  const { type1, avail0 } = sc;
  const { server, client, backend } = sc.rig;
  const paths = (backend as VfioType1Backend | IommufdBackend).ioctlPath.counts;
  const seq = 300;
  const before = server.mirror.stats.maps;
  const p1 = { ...paths };
  let t = performance.now();
  for (let i = 0; i < seq; i++) {
    await mapPage(client, i);
    await unmapPage(client, i);
  }
  let ms = performance.now() - t;
  check(
    paths.sync === p1.sync + 2 * seq && paths.async === p1.async,
    `the ${seq} 4 KiB maps and ${seq} unmaps each took the synchronous ioctl, none the threadpool`,
  );
  check(
    server.mirror.stats.maps - before === seq && server.mirror.stats.live === 2,
    `${seq} sequential 4 KiB map/unmap pairs mirrored (${((seq * 1000) / ms).toFixed(0)} pairs/s round trip)`,
  );
  if (type1) check(dmaAvail(backend) === avail0 - 2, 'DMA_AVAIL unchanged after the sequential pairs');
  const burst = 1024;
  t = performance.now();
  await Promise.all(Array.from({ length: burst }, (_, i) => mapPage(client, i)));
  const mapped = server.mirror.stats.live;
  const availMid = type1 ? dmaAvail(backend) : 0;
  await Promise.all(Array.from({ length: burst }, (_, i) => unmapPage(client, i)));
  ms = performance.now() - t;
  check(
    mapped === 2 + burst && server.mirror.stats.live === 2 && (!type1 || availMid === avail0 - 2 - burst),
    `${burst} pipelined 4 KiB maps then ${burst} single-page unmaps mirrored in order (${((burst * 1000) / ms).toFixed(0)} pairs/s)`,
  );
  await Promise.all(Array.from({ length: burst }, (_, i) => mapPage(client, i)));
  if (type1)
    check(dmaAvail(backend) === avail0 - 2 - burst, `DMA_AVAIL dropped by ${burst} (${dmaAvail(backend)})`);
  await client.dmaUnmap({ address: CHURN_BASE, size: 0x200000n });
  await client.dmaUnmap({ address: CHURN_BASE + 0x200000n, size: 0x200000n });
  await client.dmaUnmap({ address: CHURN_BASE + 0x400000n, size: 0x400000n });
  check(
    server.mirror.stats.live === 2,
    'covering DMA_UNMAPs (2 MiB and 4 MiB windows) removed the other 1024 entries',
  );
  if (type1) check(dmaAvail(backend) === avail0 - 2, 'DMA_AVAIL back after the churn');
}

/** Disconnect: everything unmapped on the host; reconnect and replay (the VMM's late attach). */
async function checkDisconnectAndReplay(sc: MainScenario, churn: ChurnPages, a: Uint8Array): Promise<void> {
  const { type1, avail0, ram } = sc;
  const { server, client, backend } = sc.rig;
  const { mapPage } = churn;
  const churnMem = churn.mem;
  await Promise.all(Array.from({ length: 256 }, (_, i) => mapPage(client, i, i)));
  const pinned = server.mirror.stats.pagesPinned;
  sc.bar0Map.unmap();
  const gone = disconnected(server);
  client.close();
  await gone;
  const s = server.mirror.stats;
  check(
    s.live === 0 && s.pagesPinned === 0,
    `client disconnect: the mirror holds nothing (${pinned} pages were pinned)`,
  );
  if (type1) {
    check(dmaAvail(backend) === avail0, `client disconnect: DMA_AVAIL back at its start value ${avail0}`);
  } else {
    const left = await iommufdAreasBytes(backend);
    check(
      left === 0n || left === 'ENOENT',
      `client disconnect: no IOAS area left (unmap of 0..U64_MAX removed ${left})`,
    );
  }
  const c2 = await VfioUserClient.connect(sc.rig.sock);
  await c2.negotiate();
  const edu2 = new Edu(clientIo(c2));
  const t = performance.now();
  await Promise.all([
    c2.mapMemory(ram, { address: IOVA_A, memoryOffset: OFF_A, size: 0x2000 }),
    ...Array.from({ length: 256 }, (_, i) => mapPage(c2, i, i)),
  ]);
  const replayMs = performance.now() - t;
  ram.write(OFF_A, a);
  churnMem.fill(0, 0x7000, 0x1000);
  await edu2.roundtrip(IOVA_A, CHURN_BASE + 7n * PAGE, 0x1000);
  check(
    server.mirror.stats.live === 257 && equal(churnMem.read(0x7000, 0x1000), a.subarray(0, 0x1000)),
    `reconnect: 257 maps replayed in ${replayMs.toFixed(0)} ms and edu DMA lands in a replayed page`,
  );
  const gone2 = disconnected(server);
  c2.close();
  await gone2;
  if (type1) check(dmaAvail(backend) === avail0, 'second disconnect: DMA_AVAIL back at its start value');
  else check((await iommufdAreasBytes(backend)) === 0n, 'second disconnect: no IOAS area left');
  // The only refusal that reached the mirror is the reserved-window map (the others stopped in the address space).
  const failures = JSON.stringify(server.mirror.stats.failures);
  check(failures === '{"EINVAL":1}', `mirror failure counters: ${failures}`);
}

// ------------------------------------------------------------------------------------------------------------
// The mirror subscribing late to an address space that already holds regions (replay), straight on a backend

async function lateAttachScenario(kind: 'type1' | 'iommufd'): Promise<void> {
  // The fallback paths run against the kernel here: iommufd maps with IOAS_MAP of our own mapping (MAP_FILE off),
  // type1 unmaps everything with two 2^63-byte halves (VFIO_UNMAP_ALL off), and every map goes to the threadpool
  // (syncMaxSize 0n: the path large regions take, here with 4 KiB ones).
  const backend =
    kind === 'type1'
      ? new VfioType1Backend({ bdf, unmapAllFlag: false, syncMaxSize: 0n, log: logger })
      : new IommufdBackend({ bdf, mapFile: false, syncMaxSize: 0n, log: logger });
  const space = new DmaAddressSpace({ pageSize: 4096n });
  const mem = GuestMemory.create(0x100000, 'late');
  const n = 64;
  for (let i = 0; i < n; i++) {
    await space.map({
      iova: CHURN_BASE + BigInt(i) * PAGE,
      size: PAGE,
      prot: 3,
      fd: dupFd(mem.fd),
      fileOffset: BigInt(i) * PAGE,
    });
  }
  const src = pattern(0x1000, 0x77);
  mem.write(0, src);
  const mirror = new IommuMirror(backend, logger);
  onCleanup(() => space.close());
  onCleanup(() => mirror.close());
  await mirror.start(space);
  const paths = backend.ioctlPath.counts;
  check(
    paths.async === n && paths.sync === 0,
    `syncMaxSize 0n: the ${n} replayed 4 KiB maps all pinned on the threadpool (${JSON.stringify(paths)})`,
  );
  const avail = kind === 'type1' ? dmaAvail(backend) : undefined;
  const dev = backend.hostDevice();
  const raw = rawIo(dev.fd);
  raw.enableBusMaster();
  const edu = new Edu(raw.io);
  await edu.roundtrip(CHURN_BASE, CHURN_BASE + 9n * PAGE, 0x1000);
  check(
    mirror.stats.live === n &&
      equal(mem.read(9 * 0x1000, 0x1000), src) &&
      (avail === undefined || avail === 65535 - n),
    `${kind}${kind === 'iommufd' ? ' (IOAS_MAP, MAP_FILE off)' : ' (UNMAP_ALL off)'}: late mirror attach replays ${n} live regions onto the host${avail === undefined ? '' : ` (DMA_AVAIL ${avail})`}, DMA lands`,
  );
  await space.unmapAll();
  const after = kind === 'type1' ? dmaAvail(backend) : await iommufdAreasBytes(backend);
  check(
    mirror.stats.live === 0 && (after === 65535 || after === 0n || after === 'ENOENT'),
    `unmap-all after the replay (${kind === 'type1' ? 'two 2^63 halves' : '0..U64_MAX'}) leaves nothing (${after})`,
  );
  await mirror.close();
  await space.close();
  mem.close();
}

// ------------------------------------------------------------------------------------------------------------
// type1: the entry limit and pre-opened fds; a host error must pass through, and a failed map must leave nothing

const LIMIT_PARAM = '/sys/module/vfio_iommu_type1/parameters/dma_entry_limit';

async function type1LimitScenario(): Promise<void> {
  const limit = 64;
  writeFileSync(LIMIT_PARAM, String(limit)); // snapshotted at SET_IOMMU, i.e. when the backend opens
  // A management layer opens the container and group and hands them over (keeping dups to watch the host).
  const container = stageFd(vfio.openContainer());
  const group = stageFd(vfio.openGroup(vfio.iommuGroupOf(bdf)));
  let rig: Rig;
  try {
    rig = await startRig('vfio', { container: dupFd(container), group: dupFd(group) });
  } finally {
    writeFileSync(LIMIT_PARAM, '65535');
  }
  const { client, server } = rig;
  check(
    client.serverCaps.maxDmaMaps === limit,
    `dma_entry_limit ${limit}: max_dma_maps advertised ${client.serverCaps.maxDmaMaps} (pre-opened container/group fds)`,
  );
  const mem = GuestMemory.create(0x100000, 'limit');
  for (let i = 0; i < limit - 1; i++) {
    await client.mapMemory(mem, {
      address: CHURN_BASE + BigInt(i) * PAGE,
      memoryOffset: i * 0x1000,
      size: 0x1000,
    });
  }
  // The management side takes one host entry behind the server's back: the kernel's ENOSPC must reach the client.
  const own = stageFd(memfdCreate('mgmt', 0x1000));
  const ownBuf = mmap(own, 0n, 0x1000, PROT_READ | PROT_WRITE, MAP_SHARED);
  await vfio.mapDma(container, { iova: 0x8000_0000n, size: PAGE, buffer: ownBuf });
  const last = CHURN_BASE + BigInt(limit - 1) * PAGE;
  const host = await outcome(client.mapMemory(mem, { address: last, memoryOffset: 0, size: 0x1000 }));
  check(
    host === 'ENOSPC' && (server.mirror.stats.failures.ENOSPC ?? 0) === 1,
    `the host's ENOSPC (entry limit) reaches the client unchanged: ${host}`,
  );
  await vfio.unmapDma(container, { iova: 0x8000_0000n, size: PAGE });
  const again = await outcome(client.mapMemory(mem, { address: last, memoryOffset: 0, size: 0x1000 }));
  check(again === 'ok', `the same map succeeds once an entry is free: ${again}`);
  const over = await outcome(client.mapMemory(mem, { address: last + PAGE, memoryOffset: 0, size: 0x1000 }));
  check(
    over === 'ENOSPC' && vfio.getInfo(container).dmaAvail === 0,
    `map ${limit + 1} refused with ENOSPC at the advertised limit: ${over}`,
  );
  await client.dmaUnmap({ address: CHURN_BASE, size: 0x100000n });

  // A region crossing the server's 1 GiB mapping window is two host entries; when the second fails (an entry
  // the management side put there), the first must be undone before the error goes back.
  const big = stageFd(memfdCreate('big', (1n << 30n) + 0x2000n));
  const cross = 0x4000_0000n;
  await vfio.mapDma(container, { iova: cross + PAGE, size: PAGE, buffer: ownBuf });
  const avail = vfio.getInfo(container).dmaAvail;
  const half = await outcome(
    client.dmaMap({ address: cross, size: 0x2000n, fd: big, offset: (1n << 30n) - PAGE }),
  );
  check(
    half === 'EEXIST' && vfio.getInfo(container).dmaAvail === avail,
    `a map whose second host segment fails is rolled back: ${half}, DMA_AVAIL unchanged (${avail})`,
  );
  await vfio.unmapDma(container, { iova: cross + PAGE, size: PAGE });
  const whole = await outcome(
    client.dmaMap({ address: cross, size: 0x2000n, fd: big, offset: (1n << 30n) - PAGE }),
  );
  check(
    whole === 'ok' && vfio.getInfo(container).dmaAvail === limit - 2,
    `the window-crossing map then succeeds as 2 host entries (${whole})`,
  );
  await stopRig(rig);
  check(
    vfio.getInfo(container).dmaAvail === limit,
    `after disconnect and close, DMA_AVAIL is back at ${limit}`,
  );
  munmap(ownBuf);
  mem.close();
}

// ------------------------------------------------------------------------------------------------------------
// The real command line: `vfio-user-server --device vfio-pci,host=BDF --iommu vfio|iommufd` as its own process,
// with pre-opened container/group (or iommufd) fds from us acting as the management layer, which lets us watch
// the host IOMMU state of the server's container from outside.

async function cliScenario(kind: 'type1' | 'iommufd'): Promise<void> {
  const bin = fileURLToPath(new URL('../../../../server/bin/vfio-user-server.js', import.meta.url));
  const sock = `/tmp/mirror-cli-${process.pid}.sock`;
  const type1 = kind === 'type1';
  const passed: number[] = [];
  const args = ['--socket-path', sock, '--device', `vfio-pci,host=${bdf}`, '--log-format', 'json'];
  let container = -1;
  let ifd = -1;
  if (type1) {
    container = stageFd(vfio.openContainer());
    const group = stageFd(vfio.openGroup(vfio.iommuGroupOf(bdf)));
    passed.push(dupFd(container), dupFd(group));
    args.push('--iommu', 'vfio', '--vfio-container-fd', '3', '--vfio-group-fd', '4');
  } else {
    ifd = stageFd(iommufd.open());
    passed.push(dupFd(ifd));
    args.push('--iommu', 'iommufd', '--iommufd-fd', '3');
  }
  const t = performance.now();
  // As an unprivileged VMM helper would run: without CAP_IPC_LOCK and with a 1 MiB RLIMIT_MEMLOCK, so pinning is
  // accounted and a map beyond the limit fails in the kernel (ENOMEM) rather than succeeding as root.
  const limits = [
    '--memlock=1048576:1048576',
    'setpriv',
    '--bounding-set=-ipc_lock',
    '--inh-caps=-ipc_lock',
    '--',
  ];
  const child = spawn('prlimit', [...limits, process.execPath, bin, ...args], {
    stdio: ['ignore', 'ignore', 'pipe', ...passed],
  });
  for (const fd of passed) closeFd(fd); // the child has its own now
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  onCleanup(async () => {
    child.kill('SIGKILL');
    await exited;
  });
  const records: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: (r: Record<string, unknown>) => void }[] = [];
  createInterface({ input: child.stderr! }).on('line', (line) => {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      console.log(`# server: ${line}`);
      return;
    }
    records.push(rec);
    if ((rec.level as number) >= 50) console.log(`# server ${rec.level}: ${line}`);
    for (const w of waiters.filter((x) => x.msg === rec.msg)) w.resolve(rec);
  });
  const logged = (msg: string, ms: number) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const seen = records.find((r) => r.msg === msg);
      if (seen) return resolve(seen);
      const timer = setTimeout(() => reject(new Error(`server never logged '${msg}'`)), ms);
      waiters.push({
        msg,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      });
      void exited.then((code) => reject(new Error(`server exited (${code}) before logging '${msg}'`)));
    });
  await logged('ready', 120_000);
  const attached = records.find(
    (r) => r.msg === 'iommufd IOAS attached' || r.msg === 'VFIO type1 container attached',
  );
  const ioas = attached?.ioas as number | undefined;
  check(
    !!attached,
    `CLI: vfio-user-server --iommu ${type1 ? 'vfio' : 'iommufd'} ready in ${((performance.now() - t) / 1000).toFixed(1)} s (${String(attached?.msg)})`,
  );
  const avail0 = type1 ? vfio.getInfo(container).dmaAvail : undefined;
  const client = await VfioUserClient.connect(sock);
  onCleanup(() => client.close());
  await client.negotiate();
  if (type1)
    check(
      client.serverCaps.maxDmaMaps === avail0,
      `CLI: max_dma_maps ${client.serverCaps.maxDmaMaps} = DMA_AVAIL of the handed-over container`,
    );
  const ram = GuestMemory.create(0x10000, 'cli');
  onCleanup(() => ram.close());
  const src = pattern(0x1000, 0x3c);
  ram.write(0, src);
  await client.mapMemory(ram, { address: IOVA_A, memoryOffset: 0, size: 0x2000 });
  await client.mapMemory(ram, { address: IOVA_B, memoryOffset: 0x8000, size: 0x2000 });
  if (type1)
    check(
      vfio.getInfo(container).dmaAvail === avail0! - 2,
      'CLI: the server process mirrored 2 maps into the container',
    );
  const cmd = await client.regionRead(7, 4n, 2);
  cmd[0]! |= 0x6;
  await client.regionWrite(7, 4n, cmd);
  const edu = new Edu(clientIo(client));
  await edu.roundtrip(IOVA_A, IOVA_B, 0x1000);
  check(equal(ram.read(0x8000, 0x1000), src), 'CLI: edu DMA through the server process lands in the memfd');

  // Hand-over (docs/handover.md; off with --handover=off, which the second type1 boot passes to save a Node.js
  // start under TCG): SIGUSR2 moves the device, the container/group/device fds (or the iommufd, its IOAS and the
  // device cdev) and the live host entries to a new process, with no host unmap or map: DMA_AVAIL does not move,
  // the successor logs 0 maps and 0 unmaps, type1 entries change owner with MAP_DMA(VADDR).
  let serverPid = child.pid!;
  if (opts.get('handover') !== 'off') {
    const availBefore = type1 ? vfio.getInfo(container).dmaAvail : undefined;
    const oldPid = child.pid!;
    const th = performance.now();
    process.kill(oldPid, 'SIGUSR2');
    const rec = await loggedAfter(records, 'hand-over complete: serving', 90_000);
    serverPid = rec.pid as number;
    onCleanup(() => {
      try {
        process.kill(serverPid, 'SIGKILL');
      } catch {
        // gone
      }
    });
    const oldCode = await exited;
    check(
      oldCode === 0 &&
        serverPid !== oldPid &&
        rec.hostBackend === (type1 ? 'vfio-type1' : 'iommufd') &&
        rec.hostEntriesAdopted === 2 &&
        rec.hostMaps === 0 &&
        rec.hostUnmaps === 0 &&
        rec.hostVaddrUpdates === (type1 ? 2 : 0),
      `CLI hand-over: pid ${oldPid} (exit ${oldCode}) -> ${serverPid} in ${((performance.now() - th) / 1000).toFixed(1)} s, paused ${String(rec.pausedMs)} ms; ${String(rec.hostBackend)}: ${String(rec.hostEntriesAdopted)} host entries adopted, ${String(rec.hostMaps)} maps, ${String(rec.hostUnmaps)} unmaps, ${String(rec.hostVaddrUpdates)} vaddr updates`,
    );
    console.log(`# hand-over pause with the ${kind} backend: ${String(rec.pausedMs)} ms`);
    if (type1) {
      const after = vfio.getInfo(container).dmaAvail;
      check(
        after === availBefore,
        `CLI hand-over: DMA_AVAIL ${after} = ${availBefore}: no host entry was removed or added`,
      );
    }
    const src2 = pattern(0x1000, 0x77);
    ram.write(0, src2);
    await edu.roundtrip(IOVA_A, IOVA_B, 0x1000);
    check(
      equal(ram.read(0x8000, 0x1000), src2),
      'CLI hand-over: edu DMA through the adopted host entries lands in the memfd',
    );
  }
  // The unmap below is the successor's, of an entry the first process mapped (type1: only its owner may).
  await client.dmaUnmap({ address: IOVA_B, size: 0x2000n });
  ram.fill(0x5a, 0x8000, 0x2000);
  await edu.dma(EDU_BUF, IOVA_B, 0x1000, true);
  check(allBytes(ram.read(0x8000, 0x2000), 0x5a), 'CLI: after DMA_UNMAP the DMA is blocked');
  const capEff = BigInt(
    `0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${serverPid}/status`, 'utf8'))?.[1] ?? '0'}`,
  );
  const bigMem = GuestMemory.create(0x200000, 'cli-big');
  onCleanup(() => bigMem.close());
  const overLimit = await outcome(client.mapMemory(bigMem, { address: 0x4000_0000n }));
  check(
    (capEff & (1n << 14n)) === 0n && overLimit === 'ENOMEM',
    `CLI: a 2 MiB map over the server's 1 MiB RLIMIT_MEMLOCK (no CAP_IPC_LOCK) reaches the client as ${overLimit}`,
  );
  client.close();
  // A second client is served only once the first session's clean-up (host unmap-all) has finished.
  const c2 = await VfioUserClient.connect(sock);
  onCleanup(() => c2.close());
  await c2.negotiate();
  if (type1) {
    const avail = vfio.getInfo(container).dmaAvail;
    check(avail === avail0, `CLI: client disconnect left nothing pinned (DMA_AVAIL ${avail} = ${avail0})`);
  } else {
    const left = await outcome(
      iommufd.ioasUnmap(ifd, { ioasId: ioas ?? 0, iova: 0n, length: U64_MAX }).then((n) => {
        if (n !== 0n) throw Object.assign(new Error(`${n} bytes were still mapped`), { code: `${n} bytes` });
      }),
    );
    check(
      left === 'ok' || left === 'ENOENT',
      `CLI: client disconnect left no area in IOAS ${ioas} (${left})`,
    );
  }
  c2.close();
  process.kill(serverPid, 'SIGTERM');
  const stopped = await loggedAfter(records, 'stopped', 30_000).catch(() => undefined);
  for (let i = 0; i < 500 && pidAlive(serverPid); i++) await sleep(20);
  const code = stopped && !pidAlive(serverPid) ? 0 : null;
  const counters = (stopped?.iommu ?? {}) as {
    live?: number;
    pagesPinned?: number;
    failures?: Record<string, number>;
  };
  check(
    code === 0 && counters.live === 0 && counters.pagesPinned === 0 && counters.failures?.ENOMEM === 1,
    `CLI: SIGTERM to the successor -> clean shutdown (exit ${code}, mirror counters ${JSON.stringify(counters)})`,
  );
}

/** The first record with `msg` in `records` (filled as the log arrives), whichever process wrote it. */
async function loggedAfter(
  records: Record<string, unknown>[],
  msg: string,
  ms: number,
): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  for (;;) {
    const r = records.find((x) => x.msg === msg);
    if (r) return r;
    if (performance.now() - t0 > ms) throw new Error(`no server logged '${msg}' within ${ms} ms`);
    await sleep(20);
  }
}

async function iommufdPreopenedScenario(): Promise<void> {
  const ifd = iommufd.open();
  const dev = vfio.openDevice(bdf);
  const rig = await startRig('iommufd', { iommufd: ifd, device: dev });
  const { client } = rig;
  const mem = GuestMemory.create(0x10000, 'preopened');
  const src = pattern(0x800, 0x99);
  mem.write(0x1000, src);
  await client.mapMemory(mem, { address: IOVA_A, memoryOffset: 0, size: 0x4000 });
  const cmd = await client.regionRead(7, 4n, 2);
  cmd[0]! |= 0x6;
  await client.regionWrite(7, 4n, cmd);
  await new Edu(clientIo(client)).roundtrip(IOVA_A + 0x1000n, IOVA_A + 0x3000n, 0x800);
  check(equal(mem.read(0x3000, 0x800), src), 'iommufd with pre-opened /dev/iommu and cdev fds: DMA lands');
  await stopRig(rig);
  mem.close();
}

// ------------------------------------------------------------------------------------------------------------
// bench: map+unmap pairs per second through the server (and straight on the backend), per backend

/** Pairs run before the backend rows are timed (the JIT tiers up slowly under TCG; see bench()). */
const BACKEND_WARM_UP = 3000;
/** Rounds of the interleaved rows (raw-c, backend, addon-floor), and of the other rows. */
const BACKEND_ROUNDS = 21;
const OTHER_ROUNDS = 3;

/**
 * The lean addon calls, for the addon-floor row: the calls the backends' wrappers end in, operands in the addon's
 * argument block (server/native/lib/vfio.ts). Also a tree from before the block took every operand (the bench runs
 * against an older tree for before/after figures in one boot): its lean calls take fd, ids and flags as arguments.
 */
type NativeVfioMod = typeof import('../../../server/native/lib/vfio.js');
type AddonMod = typeof import('../../../server/native/lib/addon.js');
const nativeDist = new URL('../../../../server/native/dist/lib/', import.meta.url);
const nv = (await import(new URL('vfio.js', nativeDist).href)) as NativeVfioMod;
const { addon: rawAddon } = (await import(new URL('addon.js', nativeDist).href)) as AddonMod;
const oldLean = rawAddon as unknown as Record<string, (...a: number[]) => unknown>;
const { ioctlArgs, ARG_ADDR, ARG_IOVA, ARG_SIZE } = nv;
const blockInts: Int32Array | undefined = nv.ioctlInts;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

function benchRow(kind: string, label: string, pairs: number, secs: number[], extra: object = {}): void {
  const s = Math.min(...secs);
  console.log(
    `BENCH ${JSON.stringify({ backend: kind, path: label, pairs, seconds: +s.toFixed(4), pairsPerSec: Math.round(pairs / s), rounds: secs.length, medianPairsPerSec: Math.round(pairs / median(secs)), ...extra })}`,
  );
}

async function bench(kind: 'type1' | 'iommufd', pairs: number): Promise<void> {
  const mem = GuestMemory.create(0x100000, 'bench');
  // Warm-up before timing: under TCG the JIT tiers up slowly (a few hundred pairs still run unoptimised code, at a
  // third of the steady rate), while the C loop has nothing to warm; the server is a long-running process.
  // A pair that finished synchronously (undefined) is not awaited: no promise hop the C loop does not have.
  const round = async (fn: (i: number) => void | Promise<void>, from: number, n: number): Promise<number> => {
    const t = performance.now();
    for (let i = from; i < from + n; i++) {
      const r = fn(i);
      if (r) await r;
    }
    return (performance.now() - t) / 1000;
  };
  // `rounds` rounds of `pairs` after `warm` pairs, reported like the C loop: the fastest round, and the median.
  const run = async (
    label: string,
    fn: (i: number) => void | Promise<void>,
    warm: number,
    rounds: number,
  ) => {
    await round(fn, 0, warm);
    const secs: number[] = [];
    for (let k = 0; k < rounds; k++) secs.push(await round(fn, warm + k * pairs, pairs));
    benchRow(kind, label, pairs, secs);
  };
  // The backend alone (no protocol, no address space): with the synchronous ioctls for small sizes (the default),
  // then with every ioctl on the threadpool (syncMaxSize 0n, the behaviour before the fast path).
  const view = mmap(mem.fd, 0n, 0x100000, PROT_READ | PROT_WRITE, MAP_SHARED);
  const vaddr = mapAddress(view);
  // The mappings as the mirror hands them over (its bigints exist already), made before timing like the C loop's
  // structs: pair i maps page i % 256 of the memfd at IOVA page i % 4096, as iommu-bench.c does.
  // The objects have the shape the mirror builds for this backend (server/src/iommu/mirror.ts), so the backend's
  // call sites see what they see in a server.
  const maps: HostMapping[] = Array.from({ length: 4096 }, (_, i) => {
    const iova = CHURN_BASE + BigInt(i) * PAGE;
    const page = BigInt(i % 256) * PAGE;
    return kind === 'type1'
      ? { iova, size: PAGE, read: true, write: true, vaddr: vaddr + page }
      : { iova, size: PAGE, read: true, write: true, fd: mem.fd, fileOffset: page };
  });
  for (const [label, syncMaxSize] of [
    ['backend', undefined],
    ['backend-async', 0n],
  ] as const) {
    const b = newBackend(kind, syncMaxSize);
    await b.attach();
    // Awaited only when the backend answers with a promise, as the mirror does (a synchronous success returns
    // undefined).
    const backendPair = (i: number) => {
      const m = maps[i % 4096]!;
      const mapped = b.map(m);
      if (mapped) return mapped.then(() => b.unmap(m.iova, PAGE));
      return b.unmap(m.iova, PAGE);
    };
    if (label === 'backend-async') {
      if (opts.get('rows') !== 'interleaved') await run(label, backendPair, 200, OTHER_ROUNDS);
    } else await interleaved(kind, b, mem.fd, maps, backendPair, pairs, round);
    await b.close();
  }
  // The backend rows ran first, in a process that had done nothing else (as a server's backend is only called by
  // its mirror); the protocol rows after them.
  // Through the server: with the backend's synchronous ioctls for small sizes (the default), then with every
  // ioctl on the threadpool (syncMaxSize 0n, the behaviour before the fast path).
  for (const [label, syncMaxSize] of [
    ['vfio-user', undefined],
    ['vfio-user-async', 0n],
  ] as const) {
    // --rows=backend: only the backend rows; --rows=interleaved: only raw-c, backend, addon-floor (development)
    if (opts.get('rows') === 'backend' || opts.get('rows') === 'interleaved') break;
    const rig = await startRig(kind === 'type1' ? 'vfio' : 'iommufd', {}, newBackend(kind, syncMaxSize));
    await run(
      label,
      async (i) => {
        const address = CHURN_BASE + BigInt(i % 4096) * PAGE;
        await rig.client.mapMemory(mem, { address, memoryOffset: (i % 256) * 0x1000, size: 0x1000 });
        await rig.client.dmaUnmap({ address, size: PAGE });
      },
      200,
      OTHER_ROUNDS,
    );
    await stopRig(rig);
  }
  munmap(view);
  mem.close();
  if (opts.get('rows') === 'interleaved') return;
  // The largest synchronous ioctls (2 MiB, the threshold): how long one map+unmap pair holds the event loop.
  const big = GuestMemory.create(0x200000, 'bench-2m');
  const bigView = mmap(big.fd, 0n, 0x200000, PROT_READ | PROT_WRITE, MAP_SHARED);
  const bigVa = mapAddress(bigView);
  const b = newBackend(kind, undefined);
  await b.attach();
  const size = 0x200000n;
  const pair = async () => {
    await b.map({
      iova: CHURN_BASE,
      size,
      read: true,
      write: true,
      fd: big.fd,
      fileOffset: 0n,
      vaddr: bigVa,
    });
    await b.unmap(CHURN_BASE, size);
  };
  for (let i = 0; i < 10; i++) await pair();
  const n = 100;
  let worst = 0;
  const t = performance.now();
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    await pair();
    worst = Math.max(worst, performance.now() - s);
  }
  const s = (performance.now() - t) / 1000;
  const sync = b.ioctlPath.counts.async === 0;
  console.log(
    `BENCH ${JSON.stringify({ backend: kind, path: 'backend-2MiB', size: 0x200000, sync, pairs: n, seconds: +s.toFixed(3), pairsPerSec: Math.round(n / s), usPerPair: Math.round((s * 1e6) / n), worstUs: Math.round(worst * 1000) })}`,
  );
  await b.close();
  munmap(bigView);
  big.close();
}

/**
 * The rows that make the target's ratio, timed in interleaved rounds so that load on the shared host hits them
 * alike: in each round (in a rotating order) one round of
 *   - raw-c: iommu-bench.c in a child process, mapping through THIS backend's container or IOAS and the same
 *     memfd (inherited as fd 3 and 4), with the same IOVAs, sizes and flags: the same kernel work, no JavaScript;
 *   - backend: b.map + b.unmap, as the mirror calls them;
 *   - addon-floor: the two lean addon calls the backend's wrappers end in, with the argument block filled and
 *     nothing else: the least a JavaScript caller of the addon can pay per pair.
 * Each row gives its fastest round and its median, and the ratios of both to raw-c's.
 */
async function interleaved(
  kind: 'type1' | 'iommufd',
  b: VfioType1Backend | IommufdBackend,
  memfd: number,
  maps: HostMapping[],
  backendPair: (i: number) => void | Promise<void>,
  pairs: number,
  round: (fn: (i: number) => void | Promise<void>, from: number, n: number) => Promise<number>,
): Promise<void> {
  const raw = opts.get('raw');
  const fd = b instanceof IommufdBackend ? b.ids.iommufd : b.containerFd;
  const ioas = b instanceof IommufdBackend ? b.ids.ioas : 0;
  const flags = kind === 'type1' ? vfio.DMA_MAP_FLAG_READ | vfio.DMA_MAP_FLAG_WRITE : 0x7;
  const floorPair =
    kind === 'type1'
      ? (i: number) => {
          const m = maps[i % 4096]!;
          ioctlArgs[ARG_IOVA] = m.iova;
          ioctlArgs[ARG_SIZE] = PAGE;
          ioctlArgs[ARG_ADDR] = m.vaddr!;
          if (blockInts) {
            blockInts[nv.INT_FD] = fd;
            blockInts[nv.INT_FLAGS] = flags;
            nv.lean.vfioMapDma();
            ioctlArgs[ARG_SIZE] = PAGE;
            blockInts[nv.INT_FLAGS] = 0;
            nv.lean.vfioUnmapDma();
          } else {
            oldLean.vfioMapDmaArgs!(fd, flags);
            ioctlArgs[ARG_SIZE] = PAGE;
            oldLean.vfioUnmapDmaArgs!(fd, 0);
          }
        }
      : (i: number) => {
          const m = maps[i % 4096]!;
          ioctlArgs[ARG_IOVA] = m.iova;
          ioctlArgs[ARG_SIZE] = PAGE;
          ioctlArgs[ARG_ADDR] = m.fileOffset!;
          if (blockInts) {
            blockInts[nv.INT_FD] = fd;
            blockInts[nv.INT_ID] = ioas;
            blockInts[nv.INT_FLAGS] = flags;
            blockInts[nv.INT_FILE_FD] = memfd;
            nv.lean.ioasMapFile();
            ioctlArgs[ARG_SIZE] = PAGE;
            nv.lean.ioasUnmap();
          } else {
            oldLean.iommufdIoasMapFileArgs!(fd, ioas, flags, memfd);
            ioctlArgs[ARG_SIZE] = PAGE;
            oldLean.iommufdIoasUnmapArgs!(fd, ioas);
          }
        };
  // raw-c serves one round per byte written to its command FIFO and answers with the round's time.
  const dir = mkdtempSync(join(tmpdir(), 'iommu-bench-'));
  const cmdPath = join(dir, 'cmd');
  const resPath = join(dir, 'res');
  let cmdFd = -1;
  let resFd = -1;
  let child: ReturnType<typeof spawn> | undefined;
  if (raw) {
    for (const p of [cmdPath, resPath]) {
      if (spawnSync('mkfifo', [p]).status !== 0) throw new Error(`mkfifo ${p} failed`);
    }
    const args = ['--fds', kind, String(pairs), '1', String(ioas), '--serve', cmdPath, resPath];
    child = spawn(raw, args, { stdio: ['ignore', 'inherit', 'inherit', fd, memfd] });
    cmdFd = openSync(cmdPath, 'w'); // blocks until the child opened its end (no event loop needed)
    resFd = openSync(resPath, 'r');
  }
  const res = new Float64Array(1);
  const rawRound = (): number => {
    writeSync(cmdFd, 'r');
    if (readSync(resFd, new Uint8Array(res.buffer)) !== 8) throw new Error('iommu-bench: no round time');
    return res[0]!;
  };
  const rows: [string, (k: number) => Promise<number> | number][] = [
    ['backend', (k) => round(backendPair, BACKEND_WARM_UP + k * pairs, pairs)],
    ['addon-floor', (k) => round(floorPair, BACKEND_WARM_UP + k * pairs, pairs)],
  ];
  if (raw) rows.unshift(['raw-c', rawRound]);
  await round(backendPair, 0, BACKEND_WARM_UP);
  await round(floorPair, 0, BACKEND_WARM_UP);
  const secs = new Map(rows.map(([label]) => [label, [] as number[]]));
  for (let k = 0; k < BACKEND_ROUNDS; k++) {
    for (let j = 0; j < rows.length; j++) {
      const [label, fn] = rows[(j + k) % rows.length]!;
      secs.get(label)!.push(await fn(k));
    }
  }
  if (child) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    closeSync(cmdFd); // the C loop ends at the end of its command FIFO
    closeSync(resFd);
    const code = await exited;
    if (code !== 0) throw new Error(`iommu-bench --serve exited with ${code}`);
  }
  rmSync(dir, { recursive: true, force: true });
  for (const [label, s] of secs)
    benchRow(kind, label, pairs, s, { interleaved: true, secs: s.map((x) => +x.toFixed(4)) });
}

function newBackend(
  kind: 'type1' | 'iommufd',
  syncMaxSize: bigint | undefined,
): VfioType1Backend | IommufdBackend {
  return kind === 'type1'
    ? new VfioType1Backend({ bdf, syncMaxSize, log: logger })
    : new IommufdBackend({ bdf, syncMaxSize, log: logger });
}

// ------------------------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const t = performance.now();
  console.log(`mirror-guest: ${mode} on ${bdf}, node ${process.version}`);
  console.log(`# node started and modules loaded in ${process.uptime().toFixed(2)} s`);
  if (mode === 'bench') {
    const pairs = Number(opts.get('pairs') ?? 2000);
    // --backends=iommufd: one backend per process, as in a server (the JIT's feedback then sees one class).
    for (const kind of (opts.get('backends') ?? 'type1,iommufd').split(',')) {
      if (kind === 'type1') await bench('type1', pairs);
      else if (kind === 'iommufd' && opts.get('iommufd') !== 'off') {
        try {
          closeFd(iommufd.open());
        } catch (e) {
          console.log(`BENCH-SKIP iommufd: ${(e as Error).message}`);
          continue;
        }
        await bench('iommufd', pairs);
      }
    }
    return 0;
  }
  const kind = mode === 'iommufd' ? 'iommufd' : 'type1';
  const stages: [string, () => Promise<void>][] = [
    ['main', () => mainScenario(kind)],
    ['late-attach', () => lateAttachScenario(kind)],
    kind === 'type1' ? ['entry-limit', type1LimitScenario] : ['pre-opened', iommufdPreopenedScenario],
    ['cli', () => cliScenario(kind)],
  ];
  // --stages=a,b runs only those (development: one stage without the others' minutes under TCG).
  const only = opts.get('stages')?.split(',');
  for (const [name, fn] of stages) {
    if (only && !only.includes(name)) continue;
    const s = performance.now();
    try {
      await fn();
    } catch (e) {
      check(false, `${name}: aborted: ${(e as Error).stack ?? e}`);
    }
    await runCleanups();
    console.log(`# stage ${name}: ${((performance.now() - s) / 1000).toFixed(2)} s`);
  }
  console.log(`# total ${((performance.now() - t) / 1000).toFixed(2)} s`);
  console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
  return failed ? 1 : 0;
}

process.exitCode = await main();
// Nothing may keep the process alive (a leaked watcher or socket would hang the VM until its timeout).
setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
