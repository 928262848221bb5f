// Test support for the PCI model and device tests: a DmaAccessor over a plain Uint8Array "guest RAM", a
// recording IrqSink, a recording logger, and config/BAR access helpers that go through VfioUserDevice only.
import type { DeviceContext, DeviceLogger, DmaAccessor, IrqSink, VfioUserDevice } from '../src/device.js';

export class DmaFault extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DmaFault';
  }
}

/** Guest RAM at IOVA [base, base+size); optional read-only sub-ranges. Anything else faults. */
export class GuestRam implements DmaAccessor {
  readonly bytes: Uint8Array;
  readonly readOnly: Array<{ start: bigint; end: bigint }> = [];
  reads = 0;
  writes = 0;

  constructor(
    readonly base: bigint,
    size: number,
  ) {
    this.bytes = new Uint8Array(size);
  }

  private index(iova: bigint, length: number): number {
    if (iova < this.base || iova + BigInt(length) > this.base + BigInt(this.bytes.length)) {
      throw new DmaFault(`unmapped IOVA 0x${iova.toString(16)}+${length}`);
    }
    return Number(iova - this.base);
  }

  async read(iova: bigint, length: number): Promise<Uint8Array> {
    await Promise.resolve();
    const at = this.index(iova, length);
    this.reads++;
    return this.bytes.slice(at, at + length);
  }

  async write(iova: bigint, data: Uint8Array): Promise<void> {
    await Promise.resolve();
    const at = this.index(iova, data.length);
    const end = iova + BigInt(data.length);
    if (this.readOnly.some((r) => iova < r.end && r.start < end)) {
      throw new DmaFault(`write to read-only IOVA 0x${iova.toString(16)}`);
    }
    this.writes++;
    this.bytes.set(data, at);
  }
}

/**
 * Records every signal. Behaves like the engine's IrqController: a vector can lack an eventfd (`disabled`:
 * trigger returns false, dropped) or be masked (trigger returns false and latches `pending`, delivered by
 * unmask()); indexes in `automask` mask themselves on every signal, as INTx does (IrqInfo AUTOMASKED).
 */
export class RecordingIrqSink implements IrqSink {
  readonly events: Array<{ index: number; vector: number }> = [];
  readonly masked = new Set<string>();
  readonly disabled = new Set<string>();
  readonly pending = new Set<string>();
  readonly automask = new Set<number>();

  trigger(index: number, vector: number): boolean {
    const key = `${index}:${vector}`;
    if (!this.isEnabled(index, vector)) return false;
    if (this.masked.has(key)) {
      this.pending.add(key);
      return false;
    }
    this.signal(index, vector);
    return true;
  }

  private signal(index: number, vector: number): void {
    this.events.push({ index, vector });
    if (this.automask.has(index)) this.masked.add(`${index}:${vector}`);
  }

  /** SET_IRQS NONE|UNMASK as the IrqController does it: deliver what is pending, then tell the device. */
  unmask(index: number, vector: number, device?: VfioUserDevice): void {
    const key = `${index}:${vector}`;
    this.masked.delete(key);
    if (this.pending.delete(key)) this.signal(index, vector);
    device?.irqStateChanged?.(index);
  }

  isEnabled(index: number, vector: number): boolean {
    return !this.disabled.has(`${index}:${vector}`);
  }

  count(index: number, vector = 0): number {
    return this.events.filter((e) => e.index === index && e.vector === vector).length;
  }

  clear(): void {
    this.events.length = 0;
  }
}

export class RecordingLogger implements DeviceLogger {
  readonly records: Array<{ level: string; obj: object | string; msg: string | undefined }> = [];
  private rec(level: string) {
    return (obj: object | string, msg?: string) => {
      this.records.push({ level, obj, msg });
    };
  }
  trace = this.rec('trace');
  debug = this.rec('debug');
  info = this.rec('info');
  warn = this.rec('warn');
  error = this.rec('error');
  at(level: string) {
    return this.records.filter((r) => r.level === level);
  }
}

export interface TestContext extends DeviceContext {
  dma: GuestRam;
  irq: RecordingIrqSink;
  log: RecordingLogger;
}

export function makeContext(base = 0x100000n, size = 0x10000): TestContext {
  return { dma: new GuestRam(base, size), irq: new RecordingIrqSink(), log: new RecordingLogger() };
}

export const CONFIG = 7;

/** The devices under test answer synchronously; a promise here is a test bug. */
function sync(b: Uint8Array | Promise<Uint8Array>): Uint8Array {
  if (!(b instanceof Uint8Array)) throw new Error('the device answered a region read asynchronously');
  return b;
}

export function cfgRead(dev: VfioUserDevice, off: number, size: 1 | 2 | 4): number {
  const b = sync(dev.regionRead(CONFIG, BigInt(off), size));
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return size === 1 ? v.getUint8(0) : size === 2 ? v.getUint16(0, true) : v.getUint32(0, true);
}

export function cfgWrite(dev: VfioUserDevice, off: number, size: 1 | 2 | 4, value: number): void {
  const b = new Uint8Array(size);
  const v = new DataView(b.buffer);
  if (size === 1) v.setUint8(0, value);
  else if (size === 2) v.setUint16(0, value, true);
  else v.setUint32(0, value >>> 0, true);
  dev.regionWrite(CONFIG, BigInt(off), b);
}

export function regRead(dev: VfioUserDevice, region: number, off: number, size: 1 | 2 | 4 | 8): bigint {
  const b = sync(dev.regionRead(region, BigInt(off), size));
  let v = 0n;
  for (let i = size - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
  return v;
}

export function regWrite(
  dev: VfioUserDevice,
  region: number,
  off: number,
  size: 1 | 2 | 4 | 8,
  value: bigint | number,
) {
  const b = new Uint8Array(size);
  let v = BigInt.asUintN(64, BigInt(value));
  for (let i = 0; i < size; i++) {
    b[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  dev.regionWrite(region, BigInt(off), b);
}

/** Independent capability walkers (not the implementation's), over a config image. */
export function walkLegacy(cfg: Uint8Array): Array<{ id: number; offset: number }> {
  const out: Array<{ id: number; offset: number }> = [];
  if (!(cfg[6]! & 0x10)) return out;
  let p = cfg[0x34]!;
  const seen = new Set<number>();
  while (p !== 0) {
    if (p < 0x40 || p > 0xfc || seen.has(p)) throw new Error(`bad capability pointer 0x${p.toString(16)}`);
    seen.add(p);
    out.push({ id: cfg[p]!, offset: p });
    p = cfg[p + 1]!;
  }
  return out;
}

export function walkExtended(cfg: Uint8Array): Array<{ id: number; version: number; offset: number }> {
  const out: Array<{ id: number; version: number; offset: number }> = [];
  const v = new DataView(cfg.buffer, cfg.byteOffset, cfg.byteLength);
  let p = 0x100;
  const seen = new Set<number>();
  for (;;) {
    if (p < 0x100 || p > 0xffc || seen.has(p))
      throw new Error(`bad extended capability pointer 0x${p.toString(16)}`);
    seen.add(p);
    const h = v.getUint32(p, true);
    if (h === 0) break;
    out.push({ id: h & 0xffff, version: (h >>> 16) & 0xf, offset: p });
    p = h >>> 20;
    if (p === 0) break;
  }
  return out;
}

/** Expect `fn` to throw (or, if it returns a promise, to reject with) a DeviceError with `errno`. */
export function expectDeviceError(fn: () => unknown, errno: number): void | Promise<void> {
  const check = (err: unknown) => {
    const e = err as { name?: string; errno?: number };
    if (e?.name !== 'DeviceError' || e.errno !== errno) {
      throw new Error(`expected DeviceError errno ${errno}, got ${String(err)}`);
    }
  };
  let r: unknown;
  try {
    r = fn();
  } catch (err) {
    check(err);
    return;
  }
  if (r && typeof (r as Promise<unknown>).then === 'function') {
    return (r as Promise<unknown>).then(() => {
      throw new Error(`expected DeviceError errno ${errno}, got success`);
    }, check);
  }
  throw new Error(`expected DeviceError errno ${errno}, got success`);
}
