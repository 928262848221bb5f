// A small NVMe host driver for tests and benchmarks, over the vfio-user client library: guest RAM is a memfd the
// test owns (mapped to the server with or without its fd), registers are REGION_READ/WRITE on BAR0, doorbells are
// REGION_WRITEs (awaited, or posted), completions are found by polling the phase bit in guest memory, and
// interrupts are counted on the eventfds the client hands over. It does what Linux's nvme driver does at probe
// (disable, admin queue, enable, identify, number of queues, I/O queue pairs) and then reads, writes, discards.
import { GuestMemory, type IrqEventfd, VfioUserClient } from 'vfio-user-client';
import { until } from './wait.js';

export const REG = {
  CAP: 0x00,
  VS: 0x08,
  INTMS: 0x0c,
  INTMC: 0x10,
  CC: 0x14,
  CSTS: 0x1c,
  AQA: 0x24,
  ASQ: 0x28,
  ACQ: 0x30,
};
export const CC_ENABLE = 1 | (6 << 16) | (4 << 20); // EN, IOSQES 64, IOCQES 16, NVM, 4 KiB pages
const PAGE = 4096;
const BAR0 = 0;
const CONFIG = 7;
const MSIX = 2;
const INTX = 0;

export interface Cqe {
  dw0: number;
  sqhd: number;
  sqid: number;
  cid: number;
  /** SCT << 8 | SC (without the DNR/M bits). */
  status: number;
  dnr: boolean;
}

export interface Sqe {
  opcode: number;
  nsid?: number;
  prp1?: bigint;
  prp2?: bigint;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  /** DW0 bits 15:8 (FUSE, PSDT) raw, for malformed-command tests. */
  flags?: number;
}

interface Queue {
  id: number;
  /** Guest memory offset of the ring. */
  sqOff: number;
  cqOff: number;
  size: number;
  sqTail: number;
  cqHead: number;
  phase: number;
  vector: number;
  nextCid: number;
}

export interface DriverOptions {
  /** Guest RAM size (default 32 MiB). */
  memSize?: number;
  /** Map guest RAM with its fd (default true); false = the server reaches it only through DMA messages. */
  withFd?: boolean;
  /** Guest-physical (IOVA) base of guest RAM (default 1 GiB). */
  base?: bigint;
  /** Interrupts: MSI-X vectors with eventfds (default), INTx, or none (polling). */
  irq?: 'msix' | 'intx' | 'none';
  /** Posted doorbell writes (no reply awaited). */
  postedDoorbells?: boolean;
}

export class NvmeDriver {
  readonly queues = new Map<number, Queue>();
  /** Eventfds per MSI-X vector (or [INTx]). */
  irqs: (IrqEventfd | undefined)[] = [];
  private brk = 0;
  msixCap = 0;

  private constructor(
    readonly c: VfioUserClient,
    readonly mem: GuestMemory,
    readonly base: bigint,
    readonly opts: DriverOptions,
  ) {}

  static async open(path: string, opts: DriverOptions = {}): Promise<NvmeDriver> {
    const c = await VfioUserClient.connect(path);
    await c.negotiate();
    const mem = GuestMemory.create(opts.memSize ?? 32 << 20, 'nvme-guest');
    const base = opts.base ?? 1n << 30n;
    await c.mapMemory(mem, { address: base, withFd: opts.withFd ?? true });
    const d = new NvmeDriver(c, mem, base, opts);
    // Bus master + memory space.
    const cmd = await d.cfg16(4);
    await d.cfgWrite16(4, cmd | 0x6);
    d.msixCap = await d.findCap(0x11);
    return d;
  }

  /** Address of guest memory offset `off`. */
  iova(off: number): bigint {
    return this.base + BigInt(off);
  }

  /** Page-aligned guest memory, bump-allocated (never freed: tests are short). */
  alloc(bytes: number): number {
    const off = this.brk;
    this.brk += Math.ceil(bytes / PAGE) * PAGE;
    if (this.brk > this.mem.size) throw new Error('test guest memory exhausted');
    return off;
  }

  // ---- registers and config space ----

  async r32(off: number): Promise<number> {
    const b = await this.c.regionRead(BAR0, BigInt(off), 4);
    return new DataView(b.buffer, b.byteOffset).getUint32(0, true);
  }
  async r64(off: number): Promise<bigint> {
    const b = await this.c.regionRead(BAR0, BigInt(off), 8);
    return new DataView(b.buffer, b.byteOffset).getBigUint64(0, true);
  }
  async w32(off: number, v: number, posted = false): Promise<void> {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v >>> 0, true);
    await this.c.regionWrite(BAR0, BigInt(off), b, posted ? { posted: true } : {});
  }
  async w64(off: number, v: bigint): Promise<void> {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    await this.c.regionWrite(BAR0, BigInt(off), b);
  }
  async cfg16(off: number): Promise<number> {
    const b = await this.c.regionRead(CONFIG, BigInt(off), 2);
    return b[0]! | (b[1]! << 8);
  }
  async cfgWrite16(off: number, v: number): Promise<void> {
    await this.c.regionWrite(CONFIG, BigInt(off), Uint8Array.of(v & 0xff, v >> 8));
  }
  private async findCap(id: number): Promise<number> {
    const cfg = await this.c.regionRead(CONFIG, 0n, 256);
    let p = cfg[0x34]! & 0xfc;
    for (let i = 0; p && i < 48; i++) {
      if (cfg[p] === id) return p;
      p = cfg[p + 1]! & 0xfc;
    }
    return 0;
  }

  async waitFor(cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<void> {
    await until(cond, timeoutMs, what, 1);
  }

  // ---- bring-up ----

  /** Interrupt set-up as the driver would: MSI-X with `vectors` eventfds, or INTx. */
  async setupIrqs(vectors: number): Promise<void> {
    const mode = this.opts.irq ?? 'msix';
    if (mode === 'msix') {
      const ctl = await this.cfg16(this.msixCap + 2);
      await this.cfgWrite16(this.msixCap + 2, ctl | 0x8000);
      this.irqs = await this.c.enableEventfds(MSIX, 0, vectors);
    } else if (mode === 'intx') {
      this.irqs = await this.c.enableEventfds(INTX, 0, 1);
    }
  }

  /** Disable, set up the admin queue pair (`entries` each), enable, wait for RDY. */
  async enable(entries = 32): Promise<void> {
    await this.disable();
    const sqOff = this.alloc(entries * 64);
    const cqOff = this.alloc(entries * 16);
    this.mem.bytes.fill(0, cqOff, cqOff + entries * 16);
    await this.w32(REG.AQA, ((entries - 1) << 16) | (entries - 1));
    await this.w64(REG.ASQ, this.iova(sqOff));
    await this.w64(REG.ACQ, this.iova(cqOff));
    await this.w32(REG.CC, CC_ENABLE);
    await this.waitFor(async () => ((await this.r32(REG.CSTS)) & 1) === 1, 'CSTS.RDY = 1');
    this.queues.clear();
    this.queues.set(0, {
      id: 0,
      sqOff,
      cqOff,
      size: entries,
      sqTail: 0,
      cqHead: 0,
      phase: 1,
      vector: 0,
      nextCid: 1,
    });
  }

  async disable(): Promise<void> {
    const cc = await this.r32(REG.CC);
    await this.w32(REG.CC, cc & ~1);
    await this.waitFor(async () => ((await this.r32(REG.CSTS)) & 1) === 0, 'CSTS.RDY = 0');
  }

  // ---- commands ----

  /** Place a command in queue `qid`'s ring (no doorbell yet); returns its cid. */
  place(qid: number, e: Sqe): number {
    const q = this.queues.get(qid)!;
    const cid = q.nextCid;
    q.nextCid = (q.nextCid + 1) & 0xffff || 1;
    const at = q.sqOff + q.sqTail * 64;
    const b = this.mem.bytes.subarray(at, at + 64);
    b.fill(0);
    const dv = new DataView(b.buffer, b.byteOffset, 64);
    dv.setUint32(0, (e.opcode | ((e.flags ?? 0) << 8) | (cid << 16)) >>> 0, true);
    dv.setUint32(4, e.nsid ?? 0, true);
    dv.setBigUint64(24, e.prp1 ?? 0n, true);
    dv.setBigUint64(32, e.prp2 ?? 0n, true);
    dv.setUint32(40, (e.cdw10 ?? 0) >>> 0, true);
    dv.setUint32(44, (e.cdw11 ?? 0) >>> 0, true);
    dv.setUint32(48, (e.cdw12 ?? 0) >>> 0, true);
    dv.setUint32(52, (e.cdw13 ?? 0) >>> 0, true);
    q.sqTail = (q.sqTail + 1) % q.size;
    return cid;
  }

  ring(qid: number): Promise<void> {
    const q = this.queues.get(qid)!;
    return this.w32(0x1000 + qid * 8, q.sqTail, this.opts.postedDoorbells);
  }

  /** The next completion of queue `qid` if one is posted (advances the head; no doorbell). */
  poll(qid: number): Cqe | undefined {
    const q = this.queues.get(qid)!;
    const at = q.cqOff + q.cqHead * 16;
    const dv = new DataView(this.mem.bytes.buffer, this.mem.bytes.byteOffset + at, 16);
    const dw3 = dv.getUint32(12, true);
    if (((dw3 >>> 16) & 1) !== q.phase) return undefined;
    q.cqHead = (q.cqHead + 1) % q.size;
    if (q.cqHead === 0) q.phase ^= 1;
    const status = (dw3 >>> 17) & 0x7fff;
    const dw2 = dv.getUint32(8, true);
    return {
      dw0: dv.getUint32(0, true),
      sqhd: dw2 & 0xffff,
      sqid: dw2 >>> 16,
      cid: dw3 & 0xffff,
      status: status & 0x7ff,
      dnr: (status & 0x4000) !== 0,
    };
  }

  ringCq(qid: number): Promise<void> {
    const q = this.queues.get(qid)!;
    return this.w32(0x1000 + qid * 8 + 4, q.cqHead, this.opts.postedDoorbells);
  }

  /** Wait for `n` completions on queue `qid` (polling guest memory), then ring the CQ head doorbell once. */
  async reap(qid: number, n: number, timeoutMs = 10000): Promise<Cqe[]> {
    const out: Cqe[] = [];
    const t0 = Date.now();
    while (out.length < n) {
      const e = this.poll(qid);
      if (e) {
        out.push(e);
        continue;
      }
      if (Date.now() - t0 > timeoutMs) throw new Error(`queue ${qid}: ${out.length} of ${n} completions`);
      await new Promise((r) => setImmediate(r));
    }
    await this.ringCq(qid);
    return out;
  }

  /** One command, waited for. */
  async cmd(qid: number, e: Sqe): Promise<Cqe> {
    const cid = this.place(qid, e);
    await this.ring(qid);
    const [c] = await this.reap(qid, 1);
    if (c!.cid !== cid) throw new Error(`completion for cid ${c!.cid}, expected ${cid}`);
    return c!;
  }

  async admin(e: Sqe): Promise<Cqe> {
    return this.cmd(0, e);
  }

  /** Identify into a fresh page; returns the 4 KiB and the completion. */
  async identify(cns: number, nsid = 0, csi = 0): Promise<{ cqe: Cqe; data: Uint8Array }> {
    const off = this.alloc(PAGE);
    const cqe = await this.admin({ opcode: 0x06, nsid, prp1: this.iova(off), cdw10: cns, cdw11: csi << 24 });
    return { cqe, data: this.mem.bytes.slice(off, off + PAGE) };
  }

  /** Create I/O queue pair `qid` (CQ with interrupt vector `vector`, then SQ). */
  async createQueuePair(qid: number, entries: number, vector: number, ien = true): Promise<void> {
    const cqOff = this.alloc(entries * 16);
    const sqOff = this.alloc(entries * 64);
    this.mem.bytes.fill(0, cqOff, cqOff + entries * 16);
    let c = await this.admin({
      opcode: 0x05,
      prp1: this.iova(cqOff),
      cdw10: ((entries - 1) << 16) | qid,
      cdw11: (vector << 16) | (ien ? 2 : 0) | 1,
    });
    if (c.status) throw new Error(`Create I/O CQ ${qid}: status 0x${c.status.toString(16)}`);
    c = await this.admin({
      opcode: 0x01,
      prp1: this.iova(sqOff),
      cdw10: ((entries - 1) << 16) | qid,
      cdw11: (qid << 16) | 1,
    });
    if (c.status) throw new Error(`Create I/O SQ ${qid}: status 0x${c.status.toString(16)}`);
    this.queues.set(qid, {
      id: qid,
      sqOff,
      cqOff,
      size: entries,
      sqTail: 0,
      cqHead: 0,
      phase: 1,
      vector,
      nextCid: 1,
    });
  }

  async deleteQueuePair(qid: number): Promise<void> {
    let c = await this.admin({ opcode: 0x00, cdw10: qid });
    if (c.status) throw new Error(`Delete I/O SQ ${qid}: status 0x${c.status.toString(16)}`);
    c = await this.admin({ opcode: 0x04, cdw10: qid });
    if (c.status) throw new Error(`Delete I/O CQ ${qid}: status 0x${c.status.toString(16)}`);
    this.queues.delete(qid);
  }

  /**
   * PRP1/PRP2 for a buffer at guest offset `off` of `len` bytes (pages contiguous in guest memory), building a PRP
   * list page when needed. `listOffset` places the list inside its page (to force chaining: 8-byte slots left).
   */
  prps(off: number, len: number, listOffset = 0): { prp1: bigint; prp2: bigint } {
    const first = Math.min(len, PAGE - (off % PAGE));
    const prp1 = this.iova(off);
    let left = len - first;
    if (left === 0) return { prp1, prp2: 0n };
    let next = off + first;
    if (left <= PAGE) return { prp1, prp2: this.iova(next) };
    const pages: bigint[] = [];
    for (; left > 0; left -= PAGE, next += PAGE) pages.push(this.iova(next));
    // Lists: each holds (PAGE - start)/8 slots; the last slot chains when more remain.
    let listOff = this.alloc(PAGE) + listOffset;
    const prp2 = this.iova(listOff);
    let i = 0;
    while (i < pages.length) {
      const slots = (PAGE - (listOff % PAGE)) / 8;
      const dv = new DataView(this.mem.bytes.buffer, this.mem.bytes.byteOffset + listOff, slots * 8);
      const remaining = pages.length - i;
      if (remaining <= slots) {
        for (let s = 0; s < remaining; s++) dv.setBigUint64(s * 8, pages[i++]!, true);
        break;
      }
      for (let s = 0; s < slots - 1; s++) dv.setBigUint64(s * 8, pages[i++]!, true);
      const nextList = this.alloc(PAGE);
      dv.setBigUint64((slots - 1) * 8, this.iova(nextList), true);
      listOff = nextList;
    }
    return { prp1, prp2 };
  }

  /** Read or write `blocks` blocks at `lba` from/to guest offset `off` through queue `qid`. */
  rwCmd(write: boolean, lba: bigint, blocks: number, off: number, bytes: number, listOffset = 0): Sqe {
    const { prp1, prp2 } = this.prps(off, bytes, listOffset);
    return {
      opcode: write ? 0x01 : 0x02,
      nsid: 1,
      prp1,
      prp2,
      cdw10: Number(lba & 0xffffffffn),
      cdw11: Number(lba >> 32n),
      cdw12: blocks - 1,
    };
  }

  close(): void {
    this.c.close();
    this.mem.close();
  }
}

/** Bring a controller up like Linux: enable, identify, number of queues, `ioQueues` I/O pairs of `entries`. */
export async function bringUp(d: NvmeDriver, ioQueues = 1, entries = 64): Promise<void> {
  await d.setupIrqs(ioQueues + 1);
  await d.enable();
  const id = await d.identify(1);
  if (id.cqe.status) throw new Error('identify controller failed');
  const nq = await d.admin({ opcode: 0x09, cdw10: 0x07, cdw11: ((ioQueues - 1) << 16) | (ioQueues - 1) });
  if (nq.status) throw new Error('set features (number of queues) failed');
  for (let q = 1; q <= ioQueues; q++) await d.createQueuePair(q, entries, q);
}
