// Driving our edu behind QEMU's vfio-user-pci through qtest: what firmware would do (config cycles through
// 0xcf8/0xcfc, BAR sizing and assignment, COMMAND) and what a driver would do (edu registers over MMIO, DMA).

import type { QtestClient } from '../lib/qtest.js';
import { poll } from '../lib/wait.js';
import { Edu } from './harness.js';

/** Our device's slot on bus 0 (`addr: "05.0"`). */
export const SLOT = 5;
/** Where the tests put BAR0 (in the pc/q35 PCI hole, 1 MiB aligned). */
export const BAR0_ADDR = 0xfe000000;

/** Sizes BAR0 (all-ones, read back, restore) and returns what it read back. */
export async function sizeBar(qt: QtestClient, reg: number, probe = 0xffffffff): Promise<number> {
  const orig = await qt.pciReadl(SLOT, 0, reg);
  await qt.pciWritel(SLOT, 0, reg, probe);
  const v = await qt.pciReadl(SLOT, 0, reg);
  await qt.pciWritel(SLOT, 0, reg, orig);
  return v >>> 0;
}

/** Programs BAR0 at `addr` and enables memory decoding and bus mastering. */
export async function enableBar0(qt: QtestClient, addr = BAR0_ADDR): Promise<void> {
  await qt.pciWritel(SLOT, 0, 0x10, addr);
  await qt.pciWritew(SLOT, 0, 0x04, 0x0006);
}

/** BAR0 register read over MMIO. */
export function reg32(qt: QtestClient, off: number, bar = BAR0_ADDR): Promise<number> {
  return qt.readl(bar + off);
}

export async function setReg32(qt: QtestClient, off: number, v: number, bar = BAR0_ADDR): Promise<void> {
  await qt.writel(bar + off, v);
}

/** Writes n to the factorial register and waits for the computing bit to clear; returns n! mod 2^32. */
export async function factorial(qt: QtestClient, n: number, bar = BAR0_ADDR): Promise<number> {
  await qt.writel(bar + Edu.FACTORIAL, n);
  const done = await poll(async () => ((await qt.readl(bar + Edu.STATUS)) & 1) === 0, 5000);
  if (!done) throw new Error(`factorial(${n}) did not complete`);
  return (await qt.readl(bar + Edu.FACTORIAL)) >>> 0;
}

/** One edu transfer; `toRam` = edu buffer -> guest RAM. Waits for the start bit to clear. */
export async function eduDma(
  qt: QtestClient,
  src: bigint,
  dst: bigint,
  count: number,
  toRam: boolean,
  bar = BAR0_ADDR,
): Promise<void> {
  await qt.writeq(bar + Edu.DMA_SRC, src);
  await qt.writeq(bar + Edu.DMA_DST, dst);
  await qt.writeq(bar + Edu.DMA_COUNT, BigInt(count));
  await qt.writeq(bar + Edu.DMA_CMD, toRam ? 3n : 1n);
  const done = await poll(async () => ((await qt.readq(bar + Edu.DMA_CMD)) & 1n) === 0n, 10_000);
  if (!done) throw new Error(`edu DMA ${src.toString(16)} -> ${dst.toString(16)} did not complete`);
}

/** A recognisable pattern: byte i = (seed + 7i + (i >> 8)) & 0xff. */
export function pattern(n: number, seed: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (seed + i * 7 + (i >> 8)) & 0xff);
}
