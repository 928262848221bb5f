// Device drivers: the device-specific knowledge some cases need ("*dev*" in the catalogue): a scratch register
// that reads back what was written, and a way to make the server DMA or raise an interrupt. Only devices the
// suite knows get these; the others skip those cases with a reason.

import { readSync, writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fail } from './conn.js';
import type { Session } from './session.js';

export interface Scratch {
  region: number;
  offset: bigint;
  /** Access widths the register accepts (bytes). */
  widths: number[];
}

export interface DevDriver {
  name: string;
  scratch: Scratch;
  /** Longest single DMA the device does. */
  maxDma: number;
  /** Copy `count` bytes from guest memory at `iova` into the device (device-side offset `devOff`). */
  dmaFromGuest(s: Session, iova: bigint, devOff: number, count: number): Promise<DmaOutcome>;
  /** Copy `count` bytes from the device (offset `devOff`) to guest memory at `iova`. */
  dmaToGuest(s: Session, iova: bigint, devOff: number, count: number): Promise<DmaOutcome>;
  /** Read/write the device-side buffer without DMA. */
  readBuffer(s: Session, devOff: number, count: number): Promise<Buffer>;
  writeBuffer(s: Session, devOff: number, data: Buffer): Promise<void>;
  /** Make the device raise its interrupt (MSI vector 0 when enabled, else INTx); returns how to clear it. */
  raiseIrq(s: Session): Promise<void>;
  ackIrq(s: Session): Promise<void>;
  /** Start a DMA and return without waiting for it. */
  startDma(s: Session, toGuest: boolean, iova: bigint, devOff: number, count: number): Promise<void>;
  /** Wait for a started DMA to finish (polling over `s`). */
  waitDma(s: Session, timeoutMs?: number): Promise<DmaOutcome>;
}

export interface DmaOutcome {
  /** The device finished the transfer (it may still have hit an error). */
  done: boolean;
  ms: number;
}

// Generic PCI helpers over config space (region 7).
const CFG = 7;

async function cfgCap(s: Session, id: number): Promise<number | null> {
  const hdr = await s.readOk(CFG, 0n, 256);
  if (!(hdr.readUInt16LE(6) & 0x10)) return null;
  let p = hdr[0x34]! & 0xfc;
  for (let n = 0; p && n < 48; n++) {
    if (hdr[p] === id) return p;
    p = hdr[p + 1]! & 0xfc;
  }
  return null;
}

/** COMMAND |= MEM | BUS MASTER, Interrupt Disable cleared (what a driver does before using a device). */
export async function pciEnable(s: Session): Promise<void> {
  const cmd = (await s.readOk(CFG, 4n, 2)).readUInt16LE(0);
  const want = (cmd | 0x6) & ~0x400;
  if (want !== cmd) {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(want);
    await s.writeOk(CFG, 4n, b);
  }
}

/** Set or clear MSI Enable in the MSI capability; false when the device has none. */
export async function pciSetMsi(s: Session, on: boolean): Promise<boolean> {
  const p = await cfgCap(s, 0x05);
  if (p === null) return false;
  const ctl = (await s.readOk(CFG, BigInt(p + 2), 2)).readUInt16LE(0);
  const b = Buffer.alloc(2);
  b.writeUInt16LE(on ? ctl | 1 : ctl & ~1);
  await s.writeOk(CFG, BigInt(p + 2), b);
  return true;
}

// QEMU's edu device (hw/misc/edu.c), PCI 1234:11e8, BAR0. Its 4 KiB buffer at edu address 0x40000 is reachable
// only by DMA, so the driver keeps a private memfd-backed "bounce" map per session to move bytes in and out.
const EDU = {
  BAR: 0,
  IRQ_STATUS: 0x24n,
  IRQ_RAISE: 0x60n,
  IRQ_ACK: 0x64n,
  DMA_SRC: 0x80n,
  DMA_DST: 0x88n,
  DMA_COUNT: 0x90n,
  DMA_CMD: 0x98n,
  CMD_RUN: 0x1n,
  CMD_TO_RAM: 0x2n,
  BUF: 0x40000n,
  BUF_SIZE: 4096,
  /** Below edu's 28-bit DMA mask, away from the IOVAs cases use. */
  BOUNCE_IOVA: 0xe000000n,
} as const;

const bounces = new WeakMap<Session, number>();

async function bounce(s: Session): Promise<number> {
  let fd = bounces.get(s);
  if (fd === undefined) {
    fd = s.conn.native.memfd('edu-bounce', EDU.BUF_SIZE);
    s.conn.whenClosed(() => s.conn.native.closeFd(fd!));
    await s.dmaMapOk({ address: EDU.BOUNCE_IOVA, size: BigInt(EDU.BUF_SIZE), flags: 3 }, fd);
    bounces.set(s, fd);
  }
  return fd;
}

export const eduDriver: DevDriver = {
  name: 'edu',
  scratch: { region: EDU.BAR, offset: EDU.DMA_SRC, widths: [4, 8] },
  maxDma: EDU.BUF_SIZE,
  async startDma(s, toGuest, iova, devOff, count) {
    await pciEnable(s);
    const dev = EDU.BUF + BigInt(devOff);
    await s.write64(EDU.BAR, EDU.DMA_SRC, toGuest ? dev : iova);
    await s.write64(EDU.BAR, EDU.DMA_DST, toGuest ? iova : dev);
    await s.write64(EDU.BAR, EDU.DMA_COUNT, BigInt(count));
    await s.write64(EDU.BAR, EDU.DMA_CMD, EDU.CMD_RUN | (toGuest ? EDU.CMD_TO_RAM : 0n));
  },
  async waitDma(s, timeoutMs = 5000) {
    const t0 = Date.now();
    for (;;) {
      const cmd = await s.read64(EDU.BAR, EDU.DMA_CMD);
      if (!(cmd & EDU.CMD_RUN)) return { done: true, ms: Date.now() - t0 };
      if (Date.now() - t0 > timeoutMs) return { done: false, ms: Date.now() - t0 };
      await sleep(2);
    }
  },
  async dmaFromGuest(s, iova, devOff, count) {
    await this.startDma(s, false, iova, devOff, count);
    return this.waitDma(s);
  },
  async dmaToGuest(s, iova, devOff, count) {
    await this.startDma(s, true, iova, devOff, count);
    return this.waitDma(s);
  },
  async readBuffer(s, devOff, count) {
    const fd = await bounce(s);
    const r = await this.dmaToGuest(s, EDU.BOUNCE_IOVA, devOff, count);
    if (!r.done) fail('edu: the bounce DMA did not finish');
    const b = Buffer.alloc(count);
    readSync(fd, b, 0, count, 0);
    return b;
  },
  async writeBuffer(s, devOff, data) {
    const fd = await bounce(s);
    writeSync(fd, data, 0, data.length, 0);
    const r = await this.dmaFromGuest(s, EDU.BOUNCE_IOVA, devOff, data.length);
    if (!r.done) fail('edu: the bounce DMA did not finish');
  },
  async raiseIrq(s) {
    await pciEnable(s);
    await s.write32(EDU.BAR, EDU.IRQ_RAISE, 0x1);
  },
  async ackIrq(s) {
    const st = await s.read32(EDU.BAR, EDU.IRQ_STATUS);
    if (st) await s.write32(EDU.BAR, EDU.IRQ_ACK, st);
  },
};

/** The driver for a PCI vendor:device id, if the suite knows the device. */
export function driverFor(vendor: number, device: number): DevDriver | null {
  if (vendor === 0x1234 && device === 0x11e8) return eduDriver;
  return null;
}

/** Parses `--scratch REGION:OFFSET[:WIDTH]`. */
export function parseScratch(s: string): Scratch {
  const [r, o, w] = s.split(':');
  const region = Number(r);
  if (!Number.isInteger(region) || o === undefined) fail(`bad --scratch '${s}' (REGION:OFFSET[:WIDTH])`);
  return { region, offset: BigInt(o), widths: [w ? Number(w) : 4] };
}
