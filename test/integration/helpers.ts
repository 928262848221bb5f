// Shared pieces of the client <-> server integration tests: a server on a fresh UNIX socket in a temp dir, and
// a small PCI-shaped device with a scratch BAR, an mmap-able BAR backed by a memfd, a DMA copy engine and an
// IRQ doorbell, so every access path can be checked for bytes.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeFd, MAP_SHARED, memfdCreate, mmap, munmap, PROT_READ, PROT_WRITE } from 'vfio-user-native';
import { DeviceInfoFlags, RegionInfoFlags } from 'vfio-user-protocol';
import {
  type DeviceContext,
  DeviceError,
  type IrqDescription,
  IrqInfoFlags,
  type RegionDescription,
  type ServerOptions,
  type VfioUserDevice,
  VfioUserServer,
} from 'vfio-user-server';

export interface TestServer {
  server: VfioUserServer;
  path: string;
  close(): Promise<void>;
}

export async function startServer(
  device: VfioUserDevice,
  opts: Omit<ServerOptions, 'socketPath' | 'device'> = {},
): Promise<TestServer> {
  const dir = mkdtempSync(join(tmpdir(), 'vu-it-'));
  const path = join(dir, 'vfio-user.sock');
  const server = new VfioUserServer({ ...opts, socketPath: path, device });
  await server.start();
  return {
    server,
    path,
    close: async () => {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** BAR0 layout of ScratchDevice. */
export const Scratch = {
  /** 0x000-0x7ff: plain read/write memory (the "scratch register" file). */
  MEM_SIZE: 0x800,
  /** DMA engine: copy COUNT bytes from IOVA SRC to IOVA DST, then signal MSI-X vector DONE_VECTOR. */
  DMA_SRC: 0x800,
  DMA_DST: 0x808,
  DMA_COUNT: 0x810,
  /** Write 1 to start. */
  DMA_CMD: 0x814,
  /** 0 idle, 1 busy, 2 done, 0x80 | errno on failure. */
  DMA_STATUS: 0x818,
  /** Write (index << 16 | vector): the device triggers that interrupt. */
  IRQ_RAISE: 0x820,
  /** Last trigger() result of IRQ_RAISE: 1 signalled, 0 not (masked -> pending, or no eventfd). */
  IRQ_RESULT: 0x824,
  BAR0_SIZE: 0x1000,
  /** BAR2: 16 KiB, the first and third pages trapped, pages 1 and 3 mmap-able (two sparse areas). */
  BAR2_SIZE: 0x4000,
  DONE_VECTOR: 0,
  MSIX_VECTORS: 8,
} as const;

/**
 * A minimal VfioUserDevice: 9 regions (BAR0 scratch + registers, BAR2 memfd-backed with sparse areas, config),
 * 5 IRQ indexes (INTx 1 automasked, MSI-X 8 maskable). State survives detach/attach; reset() clears it.
 */
export class ScratchDevice implements VfioUserDevice {
  readonly flags = DeviceInfoFlags.PCI | DeviceInfoFlags.RESET;
  readonly numRegions = 9;
  readonly numIrqs = 5;
  readonly mem = new Uint8Array(Scratch.MEM_SIZE);
  readonly config = new Uint8Array(256);
  readonly bar2fd: number;
  private bar2: ArrayBuffer | undefined;
  readonly bar2bytes: Uint8Array;
  private ctx: DeviceContext | undefined;
  dmaSrc = 0n;
  dmaDst = 0n;
  dmaCount = 0;
  dmaStatus = 0;
  irqResult = 0;
  attaches = 0;
  detaches = 0;
  resets = 0;

  constructor() {
    this.bar2fd = memfdCreate('scratch-bar2', Scratch.BAR2_SIZE);
    this.bar2 = mmap(this.bar2fd, 0n, Scratch.BAR2_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED);
    this.bar2bytes = new Uint8Array(this.bar2);
    const dv = new DataView(this.config.buffer);
    dv.setUint16(0, 0x1b36, true);
    dv.setUint16(2, 0x0005, true);
  }

  regionInfo(index: number): RegionDescription {
    const rw = RegionInfoFlags.READ | RegionInfoFlags.WRITE;
    if (index === 0) return { size: BigInt(Scratch.BAR0_SIZE), flags: rw };
    if (index === 2) {
      return {
        size: BigInt(Scratch.BAR2_SIZE),
        flags: rw | RegionInfoFlags.MMAP,
        mmap: {
          fd: this.bar2fd,
          offset: 0n,
          areas: [
            { offset: 0x1000n, size: 0x1000n },
            { offset: 0x3000n, size: 0x1000n },
          ],
        },
      };
    }
    if (index === 7) return { size: 256n, flags: rw };
    return { size: 0n, flags: 0 };
  }

  irqInfo(index: number): IrqDescription {
    if (index === 0)
      return { flags: IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE | IrqInfoFlags.AUTOMASKED, count: 1 };
    if (index === 2)
      return { flags: IrqInfoFlags.EVENTFD | IrqInfoFlags.MASKABLE | IrqInfoFlags.NORESIZE, count: 8 };
    if (index === 3) return { flags: IrqInfoFlags.EVENTFD, count: 1 };
    return { flags: IrqInfoFlags.EVENTFD, count: 0 };
  }

  private bytesOf(index: number): Uint8Array {
    if (index === 2) return this.bar2bytes;
    if (index === 7) return this.config;
    throw new DeviceError(22, `region ${index} has no backing bytes`);
  }

  regionRead(index: number, offset: bigint, count: number): Uint8Array {
    const end = offset + BigInt(count);
    if (index === 0) {
      if (end > BigInt(Scratch.BAR0_SIZE)) throw new DeviceError(22, 'past the end of BAR0');
      const o = Number(offset);
      if (end <= BigInt(Scratch.MEM_SIZE)) return this.mem.slice(o, o + count);
      const regs = new Uint8Array(Scratch.BAR0_SIZE - Scratch.MEM_SIZE);
      const dv = new DataView(regs.buffer);
      dv.setBigUint64(Scratch.DMA_SRC - Scratch.MEM_SIZE, this.dmaSrc, true);
      dv.setBigUint64(Scratch.DMA_DST - Scratch.MEM_SIZE, this.dmaDst, true);
      dv.setUint32(Scratch.DMA_COUNT - Scratch.MEM_SIZE, this.dmaCount, true);
      dv.setUint32(Scratch.DMA_STATUS - Scratch.MEM_SIZE, this.dmaStatus, true);
      dv.setUint32(Scratch.IRQ_RESULT - Scratch.MEM_SIZE, this.irqResult, true);
      const all = new Uint8Array(Scratch.BAR0_SIZE);
      all.set(this.mem);
      all.set(regs, Scratch.MEM_SIZE);
      return all.slice(o, o + count);
    }
    const b = this.bytesOf(index);
    if (end > BigInt(b.length)) throw new DeviceError(22, `past the end of region ${index}`);
    return b.slice(Number(offset), Number(end));
  }

  regionWrite(index: number, offset: bigint, data: Uint8Array): void {
    const end = offset + BigInt(data.length);
    if (index === 0) {
      if (end > BigInt(Scratch.BAR0_SIZE)) throw new DeviceError(22, 'past the end of BAR0');
      const o = Number(offset);
      if (end <= BigInt(Scratch.MEM_SIZE)) {
        this.mem.set(data, o);
        return;
      }
      const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const u = () => (data.length === 8 ? dv.getBigUint64(0, true) : BigInt(dv.getUint32(0, true)));
      if (o === Scratch.DMA_SRC) this.dmaSrc = u();
      else if (o === Scratch.DMA_DST) this.dmaDst = u();
      else if (o === Scratch.DMA_COUNT) this.dmaCount = Number(u());
      else if (o === Scratch.DMA_CMD && u() === 1n) this.startDma();
      else if (o === Scratch.IRQ_RAISE) {
        const v = Number(u());
        this.irqResult = this.ctx?.irq.trigger(v >>> 16, v & 0xffff) ? 1 : 0;
      } else throw new DeviceError(22, `no register at 0x${o.toString(16)}`);
      return;
    }
    const b = this.bytesOf(index);
    if (end > BigInt(b.length)) throw new DeviceError(22, `past the end of region ${index}`);
    b.set(data, Number(offset));
  }

  /** Copy through the DMA accessor; the reply to the CMD write never waits for it (deadlock rule). */
  private startDma(): void {
    const ctx = this.ctx;
    this.dmaStatus = 1;
    const src = this.dmaSrc;
    const dst = this.dmaDst;
    const n = this.dmaCount;
    setImmediate(async () => {
      if (!ctx) {
        this.dmaStatus = 0x80 | 19;
        return;
      }
      try {
        const data = await ctx.dma.read(src, n);
        await ctx.dma.write(dst, data);
        this.dmaStatus = 2;
      } catch (e) {
        const errno = (e as { errno?: number }).errno;
        this.dmaStatus = 0x80 | (typeof errno === 'number' ? errno & 0x7f : 14);
      }
      ctx.irq.trigger(2, Scratch.DONE_VECTOR);
    });
  }

  reset(): void {
    this.resets++;
    this.mem.fill(0);
    this.bar2bytes.fill(0);
    this.dmaSrc = 0n;
    this.dmaDst = 0n;
    this.dmaCount = 0;
    this.dmaStatus = 0;
  }

  attach(ctx: DeviceContext): void {
    this.attaches++;
    this.ctx = ctx;
  }

  detach(): void {
    this.detaches++;
    this.ctx = undefined;
  }

  close(): void {
    if (this.bar2) {
      munmap(this.bar2);
      this.bar2 = undefined;
      closeFd(this.bar2fd);
    }
  }
}

/** Little-endian u32 / u64 as bytes. */
export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}
export function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}
export function readU32(b: Uint8Array, off = 0): number {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(off, true);
}
