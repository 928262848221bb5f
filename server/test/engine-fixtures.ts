// Shared fixtures for the engine tests (dma-*, irq-*, session-*, server-*): a small but real test device, plus
// waiting and errno-assertion helpers.
//
// TestDevice: PCI, RESET, 9 regions, 5 IRQ indexes.
// - BAR0 (index 0): 4 KiB of scratch registers, READ|WRITE. Offsets 0x100.. form a tiny DMA engine:
//   0x108 src iova (u64), 0x110 dst iova (u64), 0x118 length (u32), 0x11c status (u32: 0 idle/busy, 1 done, else
//   the failing errno + 0x100). Writing 1 to 0x100 starts an asynchronous copy src -> dst through the DMA
//   accessor (after the REGION_WRITE reply), then triggers MSI-X vector 0.
// - BAR1 (index 1): 8 KiB backed by a memfd, mappable, with one sparse area [0x1000, +0x1000).
// - BAR4 (index 4): 1 MiB of zeros, READ|WRITE (writes ignored): for large replies.
// - CONFIG (index 7): 256 bytes, vendor 0x1b36 device 0x0005.
// - others absent. BAR0 contents survive detach (device state is kept across clients); reset() clears them.
// IRQs: INTx 1 (EVENTFD|MASKABLE|AUTOMASKED), MSI 2, MSI-X 8 (EVENTFD|MASKABLE|NORESIZE), ERR 1, REQ 0.

import { readdirSync, readlinkSync } from 'node:fs';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import { DeviceInfoFlags, IrqIndex, RegionInfoFlags } from 'vfio-user-protocol';
import {
  type DeviceContext,
  DeviceError,
  type IrqDescription,
  type RegionDescription,
  type VfioUserDevice,
} from '../src/device.js';

const EINVAL = 22;

export class TestDevice implements VfioUserDevice {
  readonly flags = DeviceInfoFlags.PCI | DeviceInfoFlags.RESET;
  readonly numRegions = 9;
  readonly numIrqs = 5;
  readonly bar0 = new Uint8Array(0x1000);
  readonly config = new Uint8Array(256);
  readonly bar1Fd: number;
  ctx: DeviceContext | undefined;
  attaches = 0;
  detaches = 0;
  resets = 0;
  irqChanges: number[] = [];
  /** Completed DMA-engine runs (resolved promises for tests). */
  dmaDone: Promise<void> = Promise.resolve();

  constructor() {
    this.bar1Fd = native.memfdCreate('test-bar1', 0x2000);
    new DataView(this.config.buffer).setUint32(0, 0x00051b36, true);
  }

  regionInfo(index: number): RegionDescription {
    switch (index) {
      case 0:
        return { size: 0x1000n, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE };
      case 1:
        return {
          size: 0x2000n,
          flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE | RegionInfoFlags.MMAP,
          mmap: { fd: this.bar1Fd, offset: 0n, areas: [{ offset: 0x1000n, size: 0x1000n }] },
        };
      case 4:
        return { size: 0x100000n, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE };
      case 7:
        return { size: 256n, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE };
      default:
        return { size: 0n, flags: 0 };
    }
  }

  irqInfo(index: number): IrqDescription {
    switch (index) {
      case IrqIndex.INTX:
        return { flags: 0x7, count: 1 };
      case IrqIndex.MSI:
        return { flags: 0x9, count: 2 };
      case IrqIndex.MSIX:
        return { flags: 0xb, count: 8 };
      case IrqIndex.ERR:
        return { flags: 0x1, count: 1 };
      default:
        return { flags: 0x1, count: 0 };
    }
  }

  private store(index: number): Uint8Array {
    if (index === 0) return this.bar0;
    if (index === 7) return this.config;
    if (index === 1) return new Uint8Array(0x2000);
    throw new DeviceError(EINVAL, `region ${index} absent`);
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array | Promise<Uint8Array> {
    const o = Number(offset);
    if (index === 4) return new Uint8Array(count);
    if (index === 1) {
      const b = new Uint8Array(count);
      native.pread(this.bar1Fd, b, offset);
      return b;
    }
    return this.store(index).slice(o, o + count);
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void | Promise<void> {
    const o = Number(offset);
    if (index === 4) return;
    if (index === 1) {
      native.pwrite(this.bar1Fd, data, offset);
      return;
    }
    this.store(index).set(data, o);
    if (index === 0 && o === 0x100 && data[0] === 1) this.startDma();
  }

  private startDma(): void {
    const dv = new DataView(this.bar0.buffer);
    const src = dv.getBigUint64(0x108, true);
    const dst = dv.getBigUint64(0x110, true);
    const len = dv.getUint32(0x118, true);
    dv.setUint32(0x11c, 0, true);
    const ctx = this.ctx;
    if (!ctx) return;
    // Asynchronous, after the REGION_WRITE reply: never make a reply wait on a DMA round trip.
    this.dmaDone = (async () => {
      await new Promise((r) => setImmediate(r));
      try {
        const data = await ctx.dma.read(src, len);
        await ctx.dma.write(dst, data);
        dv.setUint32(0x11c, 1, true);
      } catch (err) {
        dv.setUint32(0x11c, 0x100 + ((err as { errno?: number }).errno ?? 5), true);
      }
      ctx.irq.trigger(IrqIndex.MSIX, 0);
    })();
  }

  reset(): void {
    this.resets++;
    this.bar0.fill(0);
  }

  attach(ctx: DeviceContext): void {
    this.attaches++;
    this.ctx = ctx;
  }

  detach(): void {
    this.detaches++;
    this.ctx = undefined;
  }

  irqStateChanged(index: number): void {
    this.irqChanges.push(index);
  }

  close(): void {
    native.closeFd(this.bar1Fd);
  }
}

/** Awaits `p` and asserts it rejects with `errno` (a positive errno property); returns the rejection. */
export async function rejects(p: Promise<unknown>, errno: number, what?: string): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    assert.is((err as { errno?: number }).errno, errno, `${what ?? 'errno'}: ${(err as Error).message}`);
    return err;
  }
  assert.unreachable(`${what ?? 'operation'} should have failed with errno ${errno}`);
}

/** `/proc/self/fd` as `fd -> target` strings (for fd-leak diagnostics). */
export function fdTable(): string[] {
  const out: string[] = [];
  for (const f of readdirSync('/proc/self/fd')) {
    try {
      out.push(`${f}->${readlinkSync(`/proc/self/fd/${f}`)}`);
    } catch {
      // the directory's own fd, gone by now
    }
  }
  return out;
}
