// An NVMe 1.4 controller with one namespace over a raw image file: the subset Linux's nvme driver uses.
//
// BAR0 (16 KiB, 64-bit): controller registers at 0x0, doorbells from 0x1000 (CAP.DSTRD = 0: SQyTDBL at
// 0x1000 + 8y, CQyHDBL at 0x1000 + 8y + 4), the MSI-X table at 0x2000 and its PBA at 0x3000. One MSI-X vector
// per completion queue (the vector the host names in Create I/O CQ), falling back to one MSI vector, then INTx
// (a level: asserted while an interrupt-enabled CQ holds entries the host has not consumed, unless INTMS masks it).
//
// Flow: a tail doorbell write fetches the new submission entries (in place when guest RAM is mapped), each command
// runs asynchronously (image I/O on the threadpool straight into the guest pages its PRPs name), and its
// completion is posted in completion order, followed by the CQ's interrupt. A full CQ holds completions until the
// host's head doorbell makes room. Nothing a guest writes blocks the event loop: a doorbell write only parses
// entries and starts work.
//
// Controller reset (CC.EN 1 -> 0, DEVICE_RESET, FLR): no new command is fetched, the I/O in flight is waited for
// (the threadpool may still be writing guest pages), its completions are dropped, queues and features return to
// their defaults, and only then CSTS.RDY clears. A shutdown notification (CC.SHN) flushes the image
// (fdatasync) and then reports CSTS.SHST = complete.
//
// Migration: registers, queues (ring positions, phase, pending completions), features and the outstanding Async
// Event Requests. Stopping waits for the commands in flight to complete (their completions are part of the state);
// doorbell writes while stopped are latched and processed once running again.
import { Errno } from 'vfio-user-protocol';
import { type DeviceContext, DeviceError, type DeviceLogger } from '../../device.js';
import { type AccessSize, PciDevice, type PciDeviceModel } from '../../pci/index.js';
import {
  AdminOpcode,
  CC_EN,
  CC_SHN_SHIFT,
  CQE_SIZE,
  CSTS_CFS,
  CSTS_RDY,
  CSTS_SHST_SHIFT,
  DSM_AD,
  FeatureId,
  IdentifyCns,
  IoOpcode,
  LogPage,
  NVME_MDTS,
  NVME_PAGE,
  NVME_VERSION,
  NvmeReg,
  SHST_COMPLETE,
  SQE_SIZE,
  STATUS_DNR,
  Status,
  WZ_DEAC,
} from './constants.js';
import { GuestMemory, type GuestSegment } from './guest-memory.js';
import {
  activeNamespaceList,
  derivedId,
  firmwareLog,
  identifyController,
  identifyNamespace,
  NVME_DEVICE_ID,
  NVME_VENDOR_ID,
  namespaceDescriptors,
  smartLog,
} from './identify.js';
import { ImageFile } from './image.js';
import { NvmeStatusError, prpSegments } from './prp.js';
import {
  type Command,
  type Completion,
  CompletionQueue,
  encodeCompletion,
  parseCommand,
  SubmissionQueue,
} from './queues.js';

export const NVME_BAR0_SIZE = 0x4000;
const MSIX_TABLE = 0x2000;
const MSIX_PBA = 0x3000;
/** Most I/O queue pairs (doorbells and MSI-X vectors fit BAR0 up to 255 + admin). */
export const NVME_MAX_QUEUES = 64;
/** CAP.MQES + 1: entries per queue. */
export const NVME_MAX_QUEUE_ENTRIES = 1024;
/** CAP.TO in 500 ms units: how long the host waits for CSTS.RDY. */
const CAP_TIMEOUT = 20;
const MAX_AER = 4;
const MAX_DSM_RANGES = 256;
const MAX_LOG_BYTES = 64 * 1024;
/** Bytes of bounce buffers (the copying path) alive at once; further commands wait their turn. */
const BOUNCE_BUDGET = 64 << 20;

/** A byte budget: acquire waits (FIFO) until the bytes fit. */
class ByteBudget {
  private used = 0;
  private readonly waiters: { bytes: number; go: () => void }[] = [];
  constructor(private readonly limit: number) {}
  acquire(bytes: number): Promise<void> {
    if (this.waiters.length === 0 && this.used + bytes <= this.limit) {
      this.used += bytes;
      return Promise.resolve();
    }
    return new Promise((go) => this.waiters.push({ bytes, go }));
  }
  release(bytes: number): void {
    this.used -= bytes;
    while (this.waiters.length > 0 && this.used + this.waiters[0]!.bytes <= this.limit) {
      const w = this.waiters.shift()!;
      this.used += w.bytes;
      w.go();
    }
  }
}

/** The nvme device's options: the image file and its size, serial number, queue count, block size (docs/nvme.md). */
export interface NvmeOptions {
  /** Raw image file; created (sparse) when missing. */
  image: string;
  /** Namespace size in bytes (default: the image's size; an image shorter than this is grown, sparse). */
  size?: bigint;
  serial?: string;
  /** I/O queue pairs offered (Set Features Number of Queues), 1..64 (default 4). */
  queues?: number;
  /** Logical block size: 512 (default) or 4096. */
  blockSize?: number;
  /** Offer Doorbell Buffer Config (shadow doorbells + event indexes); default false, see docs/nvme.md. */
  shadowDoorbells?: boolean;
  name?: string;
  log?: DeviceLogger;
}

/** Counters of the NVMe controller: commands by kind, errors, interrupts, doorbell writes, resets and shutdowns. */
export interface NvmeStats {
  adminCommands: number;
  ioCommands: number;
  reads: number;
  writes: number;
  flushes: number;
  discards: number;
  writeZeroes: number;
  errors: number;
  interrupts: number;
  doorbellWrites: number;
  /** Commands whose data took the copying path (guest memory without an fd, or not mapped in one piece). */
  bounced: number;
  resets: number;
  shutdowns: number;
}

const U32 = 0xffffffffn;

/**
 * An NVMe controller over a raw image file: admin and I/O queues in guest memory, MSI-X completions (docs/nvme.md).
 */
export class NvmeController implements PciDeviceModel {
  readonly pci: PciDevice<NvmeController>;
  readonly image: ImageFile;
  readonly stats: NvmeStats = {
    adminCommands: 0,
    ioCommands: 0,
    reads: 0,
    writes: 0,
    flushes: 0,
    discards: 0,
    writeZeroes: 0,
    errors: 0,
    interrupts: 0,
    doorbellWrites: 0,
    bounced: 0,
    resets: 0,
    shutdowns: 0,
  };
  readonly serial: string;
  readonly maxQueues: number;
  readonly lbaShift: number;
  readonly blocks: bigint;
  private readonly shadowDoorbells: boolean;
  private readonly nguid: Uint8Array;
  private readonly uuid: Uint8Array;
  private readonly startedAt = Date.now();
  private readonly bounceBudget = new ByteBudget(BOUNCE_BUDGET);

  private mem: GuestMemory | undefined;

  // Registers.
  private cc = 0;
  private csts = 0;
  private aqa = 0;
  private asq = 0n;
  private acq = 0n;
  private intms = 0;

  private sqs = new Map<number, SubmissionQueue>();
  private cqs = new Map<number, CompletionQueue>();
  /** Outstanding Async Event Request command ids. */
  private aers: number[] = [];
  /** Set Features values by feature id (defaults are implied by absence). */
  private features = new Map<number, number>();
  /** Number of Queues granted (0-based SQ count, 0-based CQ count). */
  private grantedQueues: number;
  /** Doorbell Buffer Config: shadow doorbell and event index pages (0 = off). */
  private dbbuf = 0n;
  private eventIdx = 0n;

  /** Bumped by every controller reset: work of an older epoch must not touch the new state. */
  private epoch = 0;
  /** Commands in flight (all queues), for reset, stop and close. */
  private inflight = new Set<Promise<void>>();
  private stopped = false;
  /** A reset in progress (CC.EN cleared while commands were in flight). */
  private resetting: Promise<void> | undefined;

  constructor(opts: NvmeOptions) {
    this.serial = (opts.serial ?? 'VFIOUSERNVME0001').slice(0, 20);
    const q = opts.queues ?? 4;
    if (!Number.isInteger(q) || q < 1 || q > NVME_MAX_QUEUES)
      throw new Error(`nvme: queues must be 1..${NVME_MAX_QUEUES}`);
    this.maxQueues = q;
    this.grantedQueues = ((q - 1) << 16) | (q - 1);
    const bs = opts.blockSize ?? 512;
    if (bs !== 512 && bs !== 4096) throw new Error('nvme: blockSize must be 512 or 4096');
    this.lbaShift = bs === 512 ? 9 : 12;
    this.shadowDoorbells = opts.shadowDoorbells ?? false;
    this.image = new ImageFile(opts.image, opts.size);
    this.blocks = this.image.size >> BigInt(this.lbaShift);
    if (this.blocks === 0n) {
      void this.image.close();
      throw new Error(`nvme: image smaller than one ${bs}-byte block`);
    }
    this.nguid = derivedId(this.serial, 'nguid');
    this.uuid = derivedId(this.serial, 'uuid');
    try {
      this.pci = new PciDevice<NvmeController>(
        {
          name: opts.name ?? 'nvme',
          vendorId: NVME_VENDOR_ID,
          deviceId: NVME_DEVICE_ID,
          subsystemVendorId: 0x1af4,
          subsystemId: 0x1100,
          classCode: 0x010802, // mass storage, non-volatile memory, NVM Express
          revision: 0x02,
          bars: [
            {
              size: NVME_BAR0_SIZE,
              is64: true,
              maxAccess: 8,
              handler: { read: (o, s) => this.read(o, s), write: (o, s, v) => this.write(o, s, v) },
            },
          ],
          caps: {
            pm: true,
            msi: { vectors: 1, is64: true, perVectorMask: true },
            msix: { vectors: q + 1, bar: 0, tableOffset: MSIX_TABLE, pbaOffset: MSIX_PBA },
            pcie: true,
          },
          intxPin: 1,
          log: opts.log,
        },
        this,
      );
    } catch (err) {
      void this.image.close();
      throw err;
    }
  }

  private get log(): DeviceLogger {
    return this.pci.log;
  }

  get cap(): bigint {
    return (
      BigInt(NVME_MAX_QUEUE_ENTRIES - 1) | // MQES
      (1n << 16n) | // CQR: queues must be physically contiguous
      (BigInt(CAP_TIMEOUT) << 24n) | // TO
      (0n << 32n) | // DSTRD
      (1n << 37n) | // CSS: NVM command set
      (0n << 48n) | // MPSMIN 4 KiB
      (0n << 52n) // MPSMAX 4 KiB
    );
  }

  // ---- registers --------------------------------------------------------------------------------------

  read(off: number, size: AccessSize): bigint | number {
    if (off >= NvmeReg.DOORBELLS) return 0; // doorbells read 0 (write-only)
    const v = this.reg64(off & ~7);
    const shift = BigInt((off & 7) * 8);
    const mask = size === 8 ? (1n << 64n) - 1n : (1n << BigInt(size * 8)) - 1n;
    return (v >> shift) & mask;
  }

  /** The 8 bytes of registers at an 8-aligned offset. */
  private reg64(off: number): bigint {
    const lo = (o: number): number => {
      switch (o) {
        case NvmeReg.VS:
          return NVME_VERSION;
        case NvmeReg.INTMS:
        case NvmeReg.INTMC:
          return this.intms;
        case NvmeReg.CC:
          return this.cc;
        case NvmeReg.CSTS:
          return this.csts;
        case NvmeReg.AQA:
          return this.aqa;
        default:
          return 0;
      }
    };
    switch (off) {
      case NvmeReg.CAP:
        return this.cap;
      case NvmeReg.ASQ:
        return this.asq;
      case NvmeReg.ACQ:
        return this.acq;
      default:
        return BigInt(lo(off)) | (BigInt(lo(off + 4)) << 32n);
    }
  }

  write(off: number, size: AccessSize, value: bigint): void {
    if (off >= NvmeReg.DOORBELLS) {
      if (size !== 4 || off & 3) {
        this.log.debug({ off, size }, 'nvme: doorbell write not one dword, ignored');
        return;
      }
      this.doorbell((off - NvmeReg.DOORBELLS) >> 2, Number(value & 0xffffn));
      return;
    }
    // 8-byte writes to 64-bit registers; 4-byte writes to either half.
    if (size === 8) {
      if (off === NvmeReg.ASQ || off === NvmeReg.ACQ) {
        this.write64(off, value);
      } else {
        this.write32(off, Number(value & U32));
        this.write32(off + 4, Number((value >> 32n) & U32));
      }
      return;
    }
    if (size !== 4 || off & 3) {
      this.log.debug({ off, size }, 'nvme: register write not one dword, ignored');
      return;
    }
    this.write32(off, Number(value & U32));
  }

  private write64(off: number, value: bigint): void {
    if (this.cc & CC_EN) {
      this.log.debug({ off }, 'nvme: admin queue base written while enabled, ignored');
      return;
    }
    const v = value & ~0xfffn; // page aligned
    if (off === NvmeReg.ASQ) this.asq = v;
    else this.acq = v;
  }

  private write32(off: number, v: number): void {
    switch (off) {
      case NvmeReg.INTMS:
        this.intms = (this.intms | v) >>> 0;
        return;
      case NvmeReg.INTMC:
        this.intms = (this.intms & ~v) >>> 0;
        this.updateIntx(true);
        return;
      case NvmeReg.CC:
        this.writeCc(v >>> 0);
        return;
      case NvmeReg.AQA:
        if (!(this.cc & CC_EN)) this.aqa = v & 0x0fff0fff;
        return;
      case NvmeReg.ASQ:
      case NvmeReg.ASQ + 4:
      case NvmeReg.ACQ:
      case NvmeReg.ACQ + 4: {
        const base = off & ~7;
        const cur = base === NvmeReg.ASQ ? this.asq : this.acq;
        const next = off === base ? (cur & ~U32) | BigInt(v >>> 0) : (cur & U32) | (BigInt(v >>> 0) << 32n);
        this.write64(base, next);
        return;
      }
      default:
        // CAP, VS, CSTS, NSSR (no subsystem reset), CMB registers: read-only or absent.
        return;
    }
  }

  private writeCc(v: number): void {
    const was = this.cc;
    this.cc = v;
    const shn = (v >> CC_SHN_SHIFT) & 3;
    const wasShn = (was >> CC_SHN_SHIFT) & 3;
    if (shn && !wasShn) this.shutdown();
    if (!shn && wasShn) this.csts &= ~(3 << CSTS_SHST_SHIFT);
    if (v & CC_EN && !(was & CC_EN)) this.enable();
    else if (!(v & CC_EN) && was & CC_EN) this.disable();
  }

  private enable(): void {
    if (this.resetting) {
      // The host re-enabled before a reset finished: enable once it has.
      this.resetting.then(() => {
        if (this.cc & CC_EN && !(this.csts & CSTS_RDY)) this.enable();
      });
      return;
    }
    const css = (this.cc >> 4) & 7;
    const mps = (this.cc >> 7) & 0xf;
    const iosqes = (this.cc >> 16) & 0xf;
    const iocqes = (this.cc >> 20) & 0xf;
    const asqs = (this.aqa & 0xfff) + 1;
    const acqs = ((this.aqa >> 16) & 0xfff) + 1;
    const bad =
      css !== 0
        ? 'CC.CSS is not NVM'
        : mps !== 0
          ? 'CC.MPS is not 4 KiB'
          : (iosqes !== 0 && iosqes !== 6) || (iocqes !== 0 && iocqes !== 4)
            ? 'CC.IOSQES/IOCQES are not 64/16 bytes'
            : asqs < 2 || acqs < 2
              ? 'admin queues need at least 2 entries'
              : this.asq === 0n || this.acq === 0n
                ? 'admin queue base is 0'
                : undefined;
    if (bad) {
      this.log.warn({ cc: this.cc, aqa: this.aqa }, `nvme: enable refused: ${bad}`);
      this.csts |= CSTS_CFS;
      return;
    }
    const cq = new CompletionQueue(0, this.acq, acqs, 0, true);
    const sq = new SubmissionQueue(0, this.asq, asqs, 0);
    cq.sqs.add(0);
    this.cqs.set(0, cq);
    this.sqs.set(0, sq);
    this.csts = (this.csts & ~CSTS_CFS) | CSTS_RDY;
    this.log.debug({ asqs, acqs }, 'nvme: controller enabled');
  }

  private disable(): void {
    this.stats.resets++;
    const done = this.controllerReset().then(() => {
      if (this.resetting === done) this.resetting = undefined;
    });
    this.resetting = done;
  }

  /** Drop all queue state; resolves once nothing in flight can touch guest memory any more. CSTS.RDY clears then. */
  private async controllerReset(): Promise<void> {
    this.epoch++;
    this.sqs.clear();
    this.cqs.clear();
    this.aers = [];
    this.features.clear();
    this.grantedQueues = ((this.maxQueues - 1) << 16) | (this.maxQueues - 1);
    this.dbbuf = 0n;
    this.eventIdx = 0n;
    this.pci.lower();
    await this.settle();
    this.csts &= ~CSTS_RDY;
  }

  private shutdown(): void {
    this.stats.shutdowns++;
    this.csts = (this.csts & ~(3 << CSTS_SHST_SHIFT)) | (1 << CSTS_SHST_SHIFT); // occurring
    const epoch = this.epoch;
    this.settle()
      .then(() => this.image.flush())
      .catch((err: unknown) => this.log.warn({ err }, 'nvme: flush at shutdown failed'))
      .finally(() => {
        if (epoch !== this.epoch && !((this.cc >> CC_SHN_SHIFT) & 3)) return;
        this.csts = (this.csts & ~(3 << CSTS_SHST_SHIFT)) | (SHST_COMPLETE << CSTS_SHST_SHIFT);
        this.log.debug('nvme: shutdown complete');
      });
  }

  /** Wait for every command in flight to finish. */
  private async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  // ---- doorbells --------------------------------------------------------------------------------------

  private doorbell(index: number, value: number): void {
    this.stats.doorbellWrites++;
    const qid = index >> 1;
    if (!(this.csts & CSTS_RDY) || this.resetting) return;
    if (index & 1) {
      const cq = this.cqs.get(qid);
      if (!cq || value >= cq.size) {
        this.log.debug({ qid, value }, 'nvme: CQ head doorbell for no queue or past its size, ignored');
        return;
      }
      cq.head = value;
      this.shadowCqHead(cq);
      this.drainPending(cq);
      this.updateIntx(false);
      return;
    }
    const sq = this.sqs.get(qid);
    if (!sq || value >= sq.size) {
      this.log.debug({ qid, value }, 'nvme: SQ tail doorbell for no queue or past its size, ignored');
      return;
    }
    sq.tail = value;
    this.processSq(sq);
  }

  /** With shadow doorbells: pick up tails the host wrote only to the shadow page, and publish event indexes. */
  private readShadow(sq: SubmissionQueue): void {
    if (!this.dbbuf || sq.id === 0 || !this.mem) return;
    const at = this.dbbuf + BigInt(sq.id * 8);
    const v = this.mem.direct(at, 4, false);
    if (!v) return;
    const tail = new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true);
    if (tail < sq.size) sq.tail = tail;
  }

  private writeEventIdx(sq: SubmissionQueue): void {
    if (!this.eventIdx || sq.id === 0 || !this.mem) return;
    const at = this.eventIdx + BigInt(sq.id * 8);
    const v = this.mem.direct(at, 4, true);
    if (!v) return;
    new DataView(v.buffer, v.byteOffset, 4).setUint32(0, sq.tail, true);
  }

  /**
   * With shadow doorbells the host writes CQ heads to the shadow page and rings the MMIO doorbell only when it
   * crosses the CQ's event index: take the newest head from the shadow, and publish it as the event index so the
   * host's next head update that matters (one that can make room) comes as an MMIO write.
   */
  private shadowCqHead(cq: CompletionQueue): void {
    if (!this.dbbuf || cq.id === 0 || !this.mem) return;
    const at = this.dbbuf + BigInt(cq.id * 8 + 4);
    const v = this.mem.direct(at, 4, false);
    if (v) {
      const head = new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true);
      if (head < cq.size) cq.head = head;
    }
    const e = this.mem.direct(this.eventIdx + BigInt(cq.id * 8 + 4), 4, true);
    if (e) new DataView(e.buffer, e.byteOffset, 4).setUint32(0, cq.head, true);
  }

  /** Fetch and start every entry between head and tail. */
  private processSq(sq: SubmissionQueue): void {
    if (this.stopped || sq.deleted || sq.fetching) return;
    const mem = this.mem;
    if (!mem) return;
    if (!this.pci.busMasterEnabled) {
      this.log.debug('nvme: doorbell with bus mastering disabled, nothing fetched');
      return;
    }
    for (;;) {
      this.readShadow(sq);
      while (sq.head !== sq.tail) {
        const addr = sq.entryAddress(sq.head);
        const view = mem.direct(addr, SQE_SIZE, false);
        if (!view) {
          this.fetchSlow(sq, addr);
          return;
        }
        sq.head = (sq.head + 1) % sq.size;
        this.start(sq, parseCommand(view));
      }
      if (!this.dbbuf || sq.id === 0) return;
      // Publish how far we got, then look again: the host may have written the shadow tail before it saw our
      // event index (and so skipped the MMIO doorbell).
      this.writeEventIdx(sq);
      const before = sq.tail;
      this.readShadow(sq);
      if (sq.tail === before) return;
    }
  }

  /** The copying path for a submission entry (fd-less guest memory): one fetch at a time per queue. */
  private fetchSlow(sq: SubmissionQueue, addr: bigint): void {
    const mem = this.mem!;
    const epoch = this.epoch;
    sq.fetching = true;
    mem.read(addr, SQE_SIZE).then(
      (bytes) => {
        sq.fetching = false;
        if (epoch !== this.epoch || sq.deleted) return;
        sq.head = (sq.head + 1) % sq.size;
        this.start(sq, parseCommand(bytes));
        this.processSq(sq);
      },
      (err: unknown) => {
        sq.fetching = false;
        if (epoch !== this.epoch) return;
        this.fatal(`submission entry fetch at 0x${addr.toString(16)} failed: ${(err as Error).message}`);
      },
    );
  }

  /** Controller Fatal Status: the host resets the controller. */
  private fatal(why: string): void {
    this.log.warn(`nvme: controller fatal: ${why}`);
    this.csts |= CSTS_CFS;
  }

  private start(sq: SubmissionQueue, cmd: Command): void {
    const epoch = this.epoch;
    sq.inflight++;
    const run = (sq.id === 0 ? this.admin(cmd) : this.io(cmd)).then(
      (r) => r,
      (err: unknown): Result => {
        if (err instanceof NvmeStatusError) return { status: err.status };
        this.log.warn({ err, opcode: cmd.opcode, sqid: sq.id }, 'nvme: command failed');
        return { status: Status.INTERNAL };
      },
    );
    const tracked: Promise<void> = run.then((r) => {
      this.inflight.delete(tracked);
      sq.inflight--;
      if (sq.inflight === 0) for (const f of sq.idle.splice(0)) f();
      if (r === PENDING || epoch !== this.epoch || sq.deleted) return;
      if (r.status) {
        this.stats.errors++;
        this.log.debug({ opcode: cmd.opcode, sqid: sq.id, status: r.status }, 'nvme: command error');
      }
      this.complete(sq.cqid, { dw0: r.dw0 ?? 0, sqid: sq.id, cid: cmd.cid, status: r.status });
    });
    this.inflight.add(tracked);
  }

  // ---- completions and interrupts ---------------------------------------------------------------------

  private complete(cqid: number, c: Completion): void {
    const cq = this.cqs.get(cqid);
    if (!cq) return;
    if (cq.full) this.shadowCqHead(cq);
    if (cq.pending.length > 0 || cq.full) {
      cq.pending.push(c);
      return;
    }
    if (this.post(cq, c)) this.interrupt(cq);
  }

  /** Write one entry at the tail. False when guest memory refused it (the controller is then fatal). */
  private post(cq: CompletionQueue, c: Completion): boolean {
    const mem = this.mem;
    if (!mem) return false;
    const sq = this.sqs.get(c.sqid);
    const sqhd = sq ? sq.head : 0;
    const addr = cq.entryAddress(cq.tail);
    const view = mem.direct(addr, CQE_SIZE, true);
    if (view) {
      encodeCompletion(c, sqhd, cq.phase, view);
      mem.dirtied(addr, CQE_SIZE);
    } else {
      const buf = new Uint8Array(CQE_SIZE);
      encodeCompletion(c, sqhd, cq.phase, buf);
      // Message path: the write is ordered before the interrupt by the session (messages go out in order).
      mem
        .write(addr, buf)
        .catch((err: unknown) => this.fatal(`completion write failed: ${(err as Error).message}`));
    }
    cq.tail = (cq.tail + 1) % cq.size;
    if (cq.tail === 0) cq.phase ^= 1;
    return true;
  }

  private drainPending(cq: CompletionQueue): void {
    let posted = false;
    while (cq.pending.length > 0 && !cq.full) {
      posted = this.post(cq, cq.pending.shift()!) || posted;
    }
    if (posted) this.interrupt(cq);
  }

  private interrupt(cq: CompletionQueue): void {
    if (!cq.irqEnabled || this.stopped) return;
    const msix = this.pci.msix?.enabled;
    const vector = msix ? cq.vector : 0;
    if (!msix && this.intms & (1 << vector)) return; // INTMS masks MSI/INTx vectors only
    this.stats.interrupts++;
    this.pci.raise(vector);
  }

  /** INTx is a level: drop it when no interrupt-enabled CQ holds unconsumed entries; `recheck` re-raises. */
  private updateIntx(recheck: boolean): void {
    if (this.pci.msix?.enabled || this.pci.msi?.enabled) {
      if (recheck) for (const cq of this.cqs.values()) if (cq.outstanding) this.interrupt(cq);
      return;
    }
    let any = false;
    for (const cq of this.cqs.values()) if (cq.irqEnabled && cq.outstanding) any = true;
    if (!any || this.intms & 1) this.pci.lower();
    else if (recheck) this.pci.raise(0);
  }

  // ---- admin commands ---------------------------------------------------------------------------------

  private async admin(cmd: Command): Promise<Result> {
    this.stats.adminCommands++;
    switch (cmd.opcode) {
      case AdminOpcode.IDENTIFY:
        return this.identify(cmd);
      case AdminOpcode.CREATE_CQ:
        return this.createCq(cmd);
      case AdminOpcode.CREATE_SQ:
        return this.createSq(cmd);
      case AdminOpcode.DELETE_SQ:
        return this.deleteSq(cmd);
      case AdminOpcode.DELETE_CQ:
        return this.deleteCq(cmd);
      case AdminOpcode.SET_FEATURES:
        return this.setFeatures(cmd);
      case AdminOpcode.GET_FEATURES:
        return this.getFeatures(cmd);
      case AdminOpcode.GET_LOG_PAGE:
        return this.getLogPage(cmd);
      case AdminOpcode.ASYNC_EVENT:
        if (this.aers.length >= MAX_AER) return refused(Status.AER_LIMIT);
        // Held until an event (none is generated) or a reset.
        this.aers.push(cmd.cid);
        return PENDING;
      case AdminOpcode.ABORT:
        // Commands run to completion quickly; report "not aborted" (DW0 bit 0).
        return { status: Status.SUCCESS, dw0: 1 };
      case AdminOpcode.KEEP_ALIVE:
        return { status: Status.SUCCESS };
      case AdminOpcode.DOORBELL_BUFFER_CONFIG:
        return this.doorbellBufferConfig(cmd);
      default:
        return refused(Status.INVALID_OPCODE);
    }
  }

  private async toHost(cmd: Command, data: Uint8Array, length = data.length): Promise<Result> {
    const mem = this.mem!;
    const segs = await prpSegments(mem, cmd.prp1, cmd.prp2, length);
    try {
      await mem.scatter(segs, data.subarray(0, length));
    } catch (err) {
      throw new NvmeStatusError(Status.DATA_TRANSFER_ERROR, String(err));
    }
    return { status: Status.SUCCESS };
  }

  private identify(cmd: Command): Promise<Result> {
    const cns = cmd.cdw10 & 0xff;
    const csi = (cmd.cdw11 >>> 24) & 0xff;
    switch (cns) {
      case IdentifyCns.CONTROLLER:
        return this.toHost(
          cmd,
          identifyController({
            serial: this.serial,
            model: 'vfio-user-node NVMe',
            firmware: '1.0',
            namespaces: 1,
            dbbuf: this.shadowDoorbells,
            abortLimit: 3,
            aerLimit: MAX_AER - 1,
            maxQueueEntries: NVME_MAX_QUEUE_ENTRIES,
          }),
        );
      case IdentifyCns.NAMESPACE:
        if (cmd.nsid !== 1) return Promise.resolve(refused(Status.INVALID_NS));
        return this.toHost(
          cmd,
          identifyNamespace({ blocks: this.blocks, lbaShift: this.lbaShift, nguid: this.nguid }),
        );
      case IdentifyCns.ACTIVE_NS_LIST:
        if (cmd.nsid >= 0xfffffffe) return Promise.resolve(refused(Status.INVALID_NS));
        return this.toHost(cmd, activeNamespaceList(1, cmd.nsid));
      case IdentifyCns.NS_DESC_LIST:
        if (cmd.nsid !== 1) return Promise.resolve(refused(Status.INVALID_NS));
        return this.toHost(cmd, namespaceDescriptors(this.nguid, this.uuid));
      case IdentifyCns.CS_CONTROLLER:
        // The NVM command set's controller structure: all limits 0 = none beyond MDTS.
        if (csi !== 0) return Promise.resolve(refused(Status.INVALID_FIELD));
        return this.toHost(cmd, new Uint8Array(4096));
      default:
        return Promise.resolve(refused(Status.INVALID_FIELD));
    }
  }

  /** What CREATE_CQ and CREATE_SQ share: queue id, size and a physically contiguous queue, or their refusal. */
  private newQueueArgs(
    cmd: Command,
    existing: ReadonlyMap<number, unknown>,
  ): { qid: number; size: number } | { status: number } {
    const qid = cmd.cdw10 & 0xffff;
    const size = (cmd.cdw10 >>> 16) + 1;
    const pc = cmd.cdw11 & 1;
    if (qid === 0 || qid > this.maxQueues || existing.has(qid)) return refused(Status.INVALID_QID);
    if (size < 2 || size > NVME_MAX_QUEUE_ENTRIES) return refused(Status.INVALID_QSIZE);
    if (!pc || cmd.prp1 === 0n || cmd.prp1 & 0xfffn) return refused(Status.INVALID_FIELD);
    return { qid, size };
  }

  private createCq(cmd: Command): Result {
    const q = this.newQueueArgs(cmd, this.cqs);
    if ('status' in q) return q;
    const ien = (cmd.cdw11 & 2) !== 0;
    const iv = cmd.cdw11 >>> 16;
    if (iv > this.maxQueues) return refused(Status.INVALID_VECTOR);
    this.cqs.set(q.qid, new CompletionQueue(q.qid, cmd.prp1, q.size, iv, ien));
    return { status: Status.SUCCESS };
  }

  private createSq(cmd: Command): Result {
    const q = this.newQueueArgs(cmd, this.sqs);
    if ('status' in q) return q;
    const cqid = cmd.cdw11 >>> 16;
    const cq = this.cqs.get(cqid);
    if (cqid === 0 || !cq) return refused(Status.CQ_INVALID);
    cq.sqs.add(q.qid);
    this.sqs.set(q.qid, new SubmissionQueue(q.qid, cmd.prp1, q.size, cqid));
    return { status: Status.SUCCESS };
  }

  private async deleteSq(cmd: Command): Promise<Result> {
    const qid = cmd.cdw10 & 0xffff;
    const sq = this.sqs.get(qid);
    if (qid === 0 || !sq) return refused(Status.INVALID_QID);
    sq.deleted = true;
    this.sqs.delete(qid);
    this.cqs.get(sq.cqid)?.sqs.delete(qid);
    // Commands of that queue still running finish without a completion.
    if (sq.inflight > 0) await new Promise<void>((r) => sq.idle.push(r));
    return { status: Status.SUCCESS };
  }

  private deleteCq(cmd: Command): Result {
    const qid = cmd.cdw10 & 0xffff;
    const cq = this.cqs.get(qid);
    if (qid === 0 || !cq) return refused(Status.INVALID_QID);
    if (cq.sqs.size > 0) return refused(Status.INVALID_QUEUE_DELETION);
    this.cqs.delete(qid);
    this.updateIntx(false);
    return { status: Status.SUCCESS };
  }

  private setFeatures(cmd: Command): Result {
    const fid = cmd.cdw10 & 0xff;
    if (cmd.cdw10 & (1 << 31)) return refused(Status.FEATURE_NOT_SAVEABLE);
    switch (fid) {
      case FeatureId.NUM_QUEUES: {
        const nsqr = cmd.cdw11 & 0xffff;
        const ncqr = cmd.cdw11 >>> 16;
        if (nsqr === 0xffff || ncqr === 0xffff) return refused(Status.INVALID_FIELD);
        const max = this.maxQueues - 1;
        this.grantedQueues = (Math.min(ncqr, max) << 16) | Math.min(nsqr, max);
        return { status: Status.SUCCESS, dw0: this.grantedQueues };
      }
      case FeatureId.VOLATILE_WC:
      case FeatureId.ARBITRATION:
      case FeatureId.POWER_MGMT:
      case FeatureId.TEMP_THRESHOLD:
      case FeatureId.ERROR_RECOVERY:
      case FeatureId.IRQ_COALESCE:
      case FeatureId.IRQ_CONFIG:
      case FeatureId.WRITE_ATOMIC:
      case FeatureId.ASYNC_EVENT:
        this.features.set(fid, cmd.cdw11);
        return { status: Status.SUCCESS };
      default:
        return refused(Status.INVALID_FIELD);
    }
  }

  private getFeatures(cmd: Command): Result {
    const fid = cmd.cdw10 & 0xff;
    const sel = (cmd.cdw10 >>> 8) & 7;
    if (sel === 3) return { status: Status.SUCCESS, dw0: 0x4 }; // capabilities: changeable
    switch (fid) {
      case FeatureId.NUM_QUEUES:
        return { status: Status.SUCCESS, dw0: this.grantedQueues };
      case FeatureId.VOLATILE_WC:
        return { status: Status.SUCCESS, dw0: this.features.get(fid) ?? 1 };
      case FeatureId.TEMP_THRESHOLD:
        return { status: Status.SUCCESS, dw0: this.features.get(fid) ?? 0x157 };
      case FeatureId.IRQ_CONFIG:
        return { status: Status.SUCCESS, dw0: cmd.cdw11 & 0xffff };
      case FeatureId.ARBITRATION:
      case FeatureId.POWER_MGMT:
      case FeatureId.ERROR_RECOVERY:
      case FeatureId.IRQ_COALESCE:
      case FeatureId.WRITE_ATOMIC:
      case FeatureId.ASYNC_EVENT:
        return { status: Status.SUCCESS, dw0: this.features.get(fid) ?? 0 };
      default:
        return refused(Status.INVALID_FIELD);
    }
  }

  private getLogPage(cmd: Command): Promise<Result> {
    const lid = cmd.cdw10 & 0xff;
    const numd = ((cmd.cdw10 >>> 16) | ((cmd.cdw11 & 0xffff) << 16)) + 1;
    const offset = BigInt(cmd.cdw12) | (BigInt(cmd.cdw13) << 32n);
    let page: Uint8Array;
    switch (lid) {
      case LogPage.ERROR:
        page = new Uint8Array(64);
        break;
      case LogPage.SMART:
        page = smartLog({
          bytesRead: this.image.stats.bytesRead,
          bytesWritten: this.image.stats.bytesWritten,
          readCommands: this.stats.reads,
          writeCommands: this.stats.writes,
          powerOnSeconds: (Date.now() - this.startedAt) / 1000,
        });
        break;
      case LogPage.FW_SLOT:
        page = firmwareLog('1.0');
        break;
      case LogPage.CHANGED_NS:
        page = new Uint8Array(4096);
        break;
      default:
        return Promise.resolve(refused(Status.INVALID_LOG_PAGE));
    }
    const len = numd * 4;
    // Every log page we have fits in 4 KiB; a larger request is refused rather than allocated (thousands of admin
    // commands could each ask for megabytes).
    if (offset & 3n || len > MAX_LOG_BYTES) return Promise.resolve(refused(Status.INVALID_FIELD));
    const out = new Uint8Array(len);
    if (offset < BigInt(page.length)) out.set(page.subarray(Number(offset), Number(offset) + len));
    return this.toHost(cmd, out);
  }

  private doorbellBufferConfig(cmd: Command): Result {
    if (!this.shadowDoorbells) return refused(Status.INVALID_OPCODE);
    if (!cmd.prp1 || !cmd.prp2 || cmd.prp1 & 0xfffn || cmd.prp2 & 0xfffn)
      return refused(Status.INVALID_FIELD);
    this.dbbuf = cmd.prp1;
    this.eventIdx = cmd.prp2;
    return { status: Status.SUCCESS };
  }

  // ---- NVM commands -----------------------------------------------------------------------------------

  private async io(cmd: Command): Promise<Result> {
    this.stats.ioCommands++;
    if (cmd.psdt !== 0) return refused(Status.INVALID_FIELD); // no SGLs (SGLS = 0)
    if (cmd.opcode === IoOpcode.FLUSH) {
      if (cmd.nsid !== 1 && cmd.nsid !== 0xffffffff) return refused(Status.INVALID_NS);
      this.stats.flushes++;
      await this.image.flush();
      return { status: Status.SUCCESS };
    }
    if (cmd.nsid !== 1) return refused(Status.INVALID_NS);
    switch (cmd.opcode) {
      case IoOpcode.READ:
      case IoOpcode.WRITE:
        return this.readWrite(cmd, cmd.opcode === IoOpcode.WRITE);
      case IoOpcode.WRITE_ZEROES: {
        const r = this.lbaRange(cmd);
        if ('status' in r) return r;
        this.stats.writeZeroes++;
        await this.image.zero(r.offset, r.length, (cmd.cdw12 & WZ_DEAC) !== 0);
        return { status: Status.SUCCESS };
      }
      case IoOpcode.DSM:
        return this.datasetManagement(cmd);
      default:
        return refused(Status.INVALID_OPCODE);
    }
  }

  private lbaRange(cmd: Command): { offset: bigint; length: bigint } | { status: number } {
    const slba = BigInt(cmd.cdw10 >>> 0) | (BigInt(cmd.cdw11 >>> 0) << 32n);
    const nlb = BigInt((cmd.cdw12 & 0xffff) + 1);
    if (slba + nlb > this.blocks) return refused(Status.LBA_RANGE);
    const shift = BigInt(this.lbaShift);
    return { offset: slba << shift, length: nlb << shift };
  }

  private async readWrite(cmd: Command, write: boolean): Promise<Result> {
    const r = this.lbaRange(cmd);
    if ('status' in r) return r;
    const length = Number(r.length);
    if (length > NVME_PAGE << NVME_MDTS) return refused(Status.INVALID_FIELD);
    const mem = this.mem!;
    const segs = await prpSegments(mem, cmd.prp1, cmd.prp2, length);
    if (write) this.stats.writes++;
    else this.stats.reads++;
    // Reads fill guest memory (device writes it); writes drain it.
    const views = mem.views(segs, !write);
    try {
      if (views) {
        const n = write ? await this.image.write(r.offset, views) : await this.image.read(r.offset, views);
        if (n !== length) throw new Error(`short transfer: ${n} of ${length} bytes`);
        if (!write) mem.markDirty(segs);
        return { status: Status.SUCCESS };
      }
      return await this.bounce(mem, segs, r.offset, length, write);
    } catch (err) {
      if (err instanceof NvmeStatusError) throw err;
      this.log.warn({ err, write, offset: r.offset.toString() }, 'nvme: I/O failed');
      return { status: write ? Status.WRITE_FAULT : Status.UNRECOVERED_READ };
    }
  }

  /** The copying path: guest memory without an fd (or split across mappings) goes through a buffer. */
  private async bounce(
    mem: GuestMemory,
    segs: GuestSegment[],
    offset: bigint,
    length: number,
    write: boolean,
  ): Promise<Result> {
    this.stats.bounced++;
    await this.bounceBudget.acquire(length);
    try {
      return await this.bounceCopy(mem, segs, offset, length, write);
    } finally {
      this.bounceBudget.release(length);
    }
  }

  private async bounceCopy(
    mem: GuestMemory,
    segs: GuestSegment[],
    offset: bigint,
    length: number,
    write: boolean,
  ): Promise<Result> {
    if (write) {
      let data: Uint8Array;
      try {
        data = await mem.gather(segs, length);
      } catch (err) {
        throw new NvmeStatusError(Status.DATA_TRANSFER_ERROR, String(err));
      }
      await this.image.write(offset, [data]);
      return { status: Status.SUCCESS };
    }
    const data = new Uint8Array(length);
    await this.image.read(offset, [data]);
    try {
      await mem.scatter(segs, data);
    } catch (err) {
      throw new NvmeStatusError(Status.DATA_TRANSFER_ERROR, String(err));
    }
    return { status: Status.SUCCESS };
  }

  private async datasetManagement(cmd: Command): Promise<Result> {
    const nr = (cmd.cdw10 & 0xff) + 1;
    if (!(cmd.cdw11 & DSM_AD)) return { status: Status.SUCCESS }; // only hints: nothing to do
    if (nr > MAX_DSM_RANGES) return refused(Status.INVALID_FIELD);
    const mem = this.mem!;
    const segs = await prpSegments(mem, cmd.prp1, cmd.prp2, nr * 16);
    let list: Uint8Array;
    try {
      list = await mem.gather(segs, nr * 16);
    } catch (err) {
      throw new NvmeStatusError(Status.DATA_TRANSFER_ERROR, String(err));
    }
    const dv = new DataView(list.buffer);
    const shift = BigInt(this.lbaShift);
    const ranges: { offset: bigint; length: bigint }[] = [];
    for (let i = 0; i < nr; i++) {
      const nlb = BigInt(dv.getUint32(i * 16 + 4, true));
      const slba = dv.getBigUint64(i * 16 + 8, true);
      if (nlb === 0n) continue;
      if (slba + nlb > this.blocks) return refused(Status.LBA_RANGE);
      ranges.push({ offset: slba << shift, length: nlb << shift });
    }
    this.stats.discards++;
    for (const r of ranges) await this.image.discard(r.offset, r.length);
    return { status: Status.SUCCESS };
  }

  // ---- PciDeviceModel ---------------------------------------------------------------------------------

  async reset(): Promise<void> {
    this.cc = 0;
    this.aqa = 0;
    this.asq = 0n;
    this.acq = 0n;
    this.intms = 0;
    this.csts = 0;
    await this.controllerReset();
    this.csts = 0;
  }

  attach(ctx: DeviceContext): void {
    this.mem = new GuestMemory(ctx.dma);
  }

  detach(): void {
    // The client's memory is gone: commands still running fail their guest accesses and post nothing.
    this.mem = undefined;
  }

  close(): void {
    this.epoch++;
    this.stopped = true;
    void this.settle().then(() => this.image.close());
  }

  /** Close and wait until the image fd is closed (tests, server shutdown). */
  async closeAndWait(): Promise<void> {
    this.close();
    await this.settle();
    await this.image.close();
  }

  // ---- migration --------------------------------------------------------------------------------------

  async setRunning(running: boolean): Promise<void> {
    if (running) {
      if (!this.stopped) return;
      this.stopped = false;
      for (const sq of this.sqs.values()) this.processSq(sq);
      for (const cq of this.cqs.values()) if (cq.outstanding) this.interrupt(cq);
      return;
    }
    this.stopped = true;
    await this.settle();
  }

  saveState(): NvmeState {
    return {
      version: 1,
      blocks: this.blocks.toString(),
      lbaShift: this.lbaShift,
      regs: {
        cc: this.cc,
        csts: this.csts,
        aqa: this.aqa,
        asq: this.asq.toString(),
        acq: this.acq.toString(),
        intms: this.intms,
      },
      cqs: [...this.cqs.values()].map((q) => ({
        id: q.id,
        base: q.base.toString(),
        size: q.size,
        vector: q.vector,
        ien: q.irqEnabled,
        head: q.head,
        tail: q.tail,
        phase: q.phase,
        pending: q.pending.map((c) => [c.dw0, c.sqid, c.cid, c.status]),
      })),
      sqs: [...this.sqs.values()].map((q) => ({
        id: q.id,
        base: q.base.toString(),
        size: q.size,
        cqid: q.cqid,
        head: q.head,
        tail: q.tail,
      })),
      aers: [...this.aers],
      features: [...this.features.entries()],
      grantedQueues: this.grantedQueues,
      dbbuf: this.dbbuf.toString(),
      eventIdx: this.eventIdx.toString(),
    };
  }

  loadState(state: unknown): void {
    const s = checkState(state, this);
    this.epoch++;
    this.cc = s.regs.cc;
    this.csts = s.regs.csts;
    this.aqa = s.regs.aqa;
    this.asq = BigInt(s.regs.asq);
    this.acq = BigInt(s.regs.acq);
    this.intms = s.regs.intms;
    this.cqs.clear();
    this.sqs.clear();
    for (const q of s.cqs) {
      const cq = new CompletionQueue(q.id, BigInt(q.base), q.size, q.vector, q.ien);
      cq.head = q.head;
      cq.tail = q.tail;
      cq.phase = q.phase;
      for (const [dw0, sqid, cid, status] of q.pending) cq.pending.push({ dw0, sqid, cid, status });
      this.cqs.set(q.id, cq);
    }
    for (const q of s.sqs) {
      const sq = new SubmissionQueue(q.id, BigInt(q.base), q.size, q.cqid);
      sq.head = q.head;
      sq.tail = q.tail;
      this.sqs.set(q.id, sq);
      this.cqs.get(q.cqid)?.sqs.add(q.id);
    }
    this.aers = [...s.aers];
    this.features = new Map(s.features);
    this.grantedQueues = s.grantedQueues;
    this.dbbuf = BigInt(s.dbbuf);
    this.eventIdx = BigInt(s.eventIdx);
    if (!this.stopped) for (const sq of this.sqs.values()) this.processSq(sq);
  }
}

type Result = { status: number; dw0?: number } | typeof PENDING;
/** A refusal: `status` with Do Not Retry (the same command would fail again). */
const refused = (status: number): { status: number } => ({ status: status | STATUS_DNR });
/** The command completes later (Async Event Request). */
const PENDING = Symbol('pending');

export interface NvmeState {
  version: 1;
  blocks: string;
  lbaShift: number;
  regs: { cc: number; csts: number; aqa: number; asq: string; acq: string; intms: number };
  cqs: {
    id: number;
    base: string;
    size: number;
    vector: number;
    ien: boolean;
    head: number;
    tail: number;
    phase: number;
    pending: [number, number, number, number][];
  }[];
  sqs: { id: number; base: string; size: number; cqid: number; head: number; tail: number }[];
  aers: number[];
  features: [number, number][];
  grantedQueues: number;
  dbbuf: string;
  eventIdx: string;
}

const isU32 = (v: unknown): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
const isU64Str = (v: unknown): v is string =>
  typeof v === 'string' && /^[0-9]{1,20}$/.test(v) && BigInt(v) < 1n << 64n;

/** Validates a saved NVMe state against this controller (DeviceError EINVAL on anything else). */
function checkState(state: unknown, c: NvmeController): NvmeState {
  const bad = (what: string): never => {
    throw new DeviceError(Errno.EINVAL, `nvme migration state refused: ${what}`);
  };
  if (typeof state !== 'object' || state === null) bad('not an object');
  const s = state as NvmeState;
  if (s.version !== 1) bad('version');
  if (s.blocks !== c.blocks.toString() || s.lbaShift !== c.lbaShift) bad('namespace geometry differs');
  const r = s.regs;
  if (!r || ![r.cc, r.csts, r.aqa, r.intms].every(isU32) || !isU64Str(r.asq) || !isU64Str(r.acq))
    bad('registers');
  if (!Array.isArray(s.cqs) || !Array.isArray(s.sqs) || s.cqs.length > NVME_MAX_QUEUES + 1) bad('queues');
  if (s.sqs.length > NVME_MAX_QUEUES + 1) bad('queues');
  const ids = new Set<number>();
  for (const q of s.cqs) {
    if (!q || !isU32(q.id) || q.id > c.maxQueues || ids.has(q.id) || !isU64Str(q.base)) bad('CQ');
    ids.add(q.id);
    if (!isU32(q.size) || q.size < 2 || q.size > NVME_MAX_QUEUE_ENTRIES) bad('CQ size');
    if (!isU32(q.head) || !isU32(q.tail) || q.head >= q.size || q.tail >= q.size) bad('CQ ring');
    if ((q.phase !== 0 && q.phase !== 1) || !isU32(q.vector) || typeof q.ien !== 'boolean') bad('CQ fields');
    if (!Array.isArray(q.pending) || q.pending.length > NVME_MAX_QUEUE_ENTRIES * (NVME_MAX_QUEUES + 1))
      bad('CQ pending');
    for (const p of q.pending)
      if (!Array.isArray(p) || p.length !== 4 || !p.every(isU32)) bad('CQ pending entry');
  }
  const sqIds = new Set<number>();
  for (const q of s.sqs) {
    if (!q || !isU32(q.id) || q.id > c.maxQueues || sqIds.has(q.id) || !isU64Str(q.base)) bad('SQ');
    sqIds.add(q.id);
    if (!isU32(q.size) || q.size < 2 || q.size > NVME_MAX_QUEUE_ENTRIES) bad('SQ size');
    if (!isU32(q.head) || !isU32(q.tail) || q.head >= q.size || q.tail >= q.size) bad('SQ ring');
    if (!isU32(q.cqid) || !ids.has(q.cqid)) bad('SQ completion queue');
  }
  if (!Array.isArray(s.aers) || s.aers.length > MAX_AER || !s.aers.every(isU32)) bad('AERs');
  if (!Array.isArray(s.features) || s.features.length > 32) bad('features');
  for (const f of s.features) if (!Array.isArray(f) || f.length !== 2 || !f.every(isU32)) bad('feature');
  if (!isU32(s.grantedQueues) || !isU64Str(s.dbbuf) || !isU64Str(s.eventIdx)) bad('fields');
  return s;
}

/** The NVMe device as the engine sees it, plus its controller (stats, image). */
export type NvmeDevice = PciDevice<NvmeController> & { readonly controller: NvmeController };

/** Create the nvme device: an NVMe SSD backed by a raw image file (docs/nvme.md). */
export function createNvme(opts: NvmeOptions): NvmeDevice {
  const c = new NvmeController(opts);
  return Object.defineProperty(c.pci, 'controller', { value: c, enumerable: true }) as NvmeDevice;
}
