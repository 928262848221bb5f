// The edu device through the VfioUserDevice interface, with a Uint8Array-backed DMA accessor.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { IrqIndex, RegionInfoFlags } from 'vfio-user-protocol';
import { DeviceError, IrqInfoFlags } from '../src/device.js';
import { createEdu, EduDmaError, EduReg, eduFactorial } from '../src/devices/edu.js';
import { createDevice, deviceNames } from '../src/devices/index.js';
import { CONFIG, cfgRead, cfgWrite, makeContext, regRead, regWrite, walkLegacy } from './pci-test-context.js';
import { sleep, until } from './wait.js';

const RAM = 0x100000n;
const ALL32 = 0xffffffffn;
const ALL64 = 0xffffffffffffffffn;

function setup(opts: Parameters<typeof createEdu>[0] = {}) {
  const dev = createEdu(opts);
  const ctx = makeContext(RAM, 0x10000);
  dev.attach(ctx);
  const rd = (off: number, size: 4 | 8 = 4) => regRead(dev, 0, off, size);
  const wr = (off: number, value: bigint | number, size: 4 | 8 = 4) => regWrite(dev, 0, off, size, value);
  return { dev, ctx, rd, wr };
}

/** Program and run one DMA transfer, waiting for the start bit to clear. */
async function dma(
  t: ReturnType<typeof setup>,
  src: bigint,
  dst: bigint,
  count: bigint,
  cmd: number,
): Promise<void> {
  t.wr(EduReg.DMA_SRC, src, 8);
  t.wr(EduReg.DMA_DST, dst, 8);
  t.wr(EduReg.DMA_COUNT, count, 8);
  t.wr(EduReg.DMA_CMD, cmd, 8);
  assert.is(t.rd(EduReg.DMA_CMD) & 1n, 1n, 'running');
  await until(() => (t.rd(EduReg.DMA_CMD) & 1n) === 0n);
}

const Edu = suite('edu');

Edu('PCI identity, BAR0, MSI capability, region and IRQ info', () => {
  const dev = createEdu();
  assert.is(cfgRead(dev, 0x00, 4), 0x11e81234);
  assert.is(cfgRead(dev, 0x08, 4), 0x00ff0010, 'class 0x00ff, prog-if 0, revision 0x10');
  assert.is(cfgRead(dev, 0x2c, 4), 0x11001af4, 'QEMU default subsystem');
  assert.is(cfgRead(dev, 0x3d, 1), 1, 'INTA');
  assert.is(cfgRead(dev, 0x10, 4), 0, '32-bit non-prefetchable memory');
  cfgWrite(dev, 0x10, 4, 0xffffffff);
  assert.is(cfgRead(dev, 0x10, 4), 0xfff00000, '1 MiB');
  for (let off = 0x14; off <= 0x24; off += 4) assert.is(cfgRead(dev, off, 4), 0);
  const chain = walkLegacy(dev.regionRead(CONFIG, 0n, 256));
  assert.equal(chain, [{ id: 0x05, offset: 0x40 }]);
  assert.is(
    cfgRead(dev, 0x42, 2),
    0x0080,
    'MSI: 1 vector, 64-bit, no masking (as QEMU msi_init(.., 1, true, false))',
  );
  assert.equal(dev.regionInfo(0), { size: 1n << 20n, flags: RegionInfoFlags.READ | RegionInfoFlags.WRITE });
  for (const i of [1, 2, 3, 4, 5, 6, 8]) assert.is(dev.regionInfo(i).size, 0n);
  assert.equal(dev.regionInfo(7), { size: 256n, flags: 3 });
  assert.equal(dev.irqInfo(IrqIndex.INTX), { count: 1, flags: 0x7 });
  assert.equal(dev.irqInfo(IrqIndex.MSI), { count: 1, flags: IrqInfoFlags.EVENTFD | IrqInfoFlags.NORESIZE });
  assert.equal(dev.irqInfo(IrqIndex.MSIX), { count: 0, flags: 0 });
  assert.equal(dev.irqInfo(IrqIndex.ERR), { count: 1, flags: 0x1 });
  assert.equal(dev.irqInfo(IrqIndex.REQ), { count: 0, flags: 0 });
});

Edu('identification; access sizes as QEMU (below 0x80 4 bytes only)', () => {
  const t = setup();
  assert.is(t.rd(EduReg.IDENT), 0x010000edn);
  assert.is(regRead(t.dev, 0, 0, 1), 0xffn);
  assert.is(regRead(t.dev, 0, 0, 2), 0xffffn);
  assert.is(regRead(t.dev, 0, 0, 8), ALL64);
  assert.is(t.rd(0x0c), ALL32, 'no register');
  assert.is(t.rd(0x1000), ALL32);
  regWrite(t.dev, 0, EduReg.LIVENESS, 2, 0x1234);
  assert.is(t.rd(EduReg.LIVENESS), 0n, '2-byte write ignored');
  assert.ok(t.ctx.log.at('debug').length >= 4);
});

Edu('liveness: reads the NOT of the last value written', () => {
  const t = setup();
  assert.is(t.rd(EduReg.LIVENESS), 0n);
  t.wr(EduReg.LIVENESS, 0x12345678);
  assert.is(t.rd(EduReg.LIVENESS), 0xedcba987n);
  t.wr(EduReg.LIVENESS, 0);
  assert.is(t.rd(EduReg.LIVENESS), ALL32);
});

Edu('factorial mod 2^32, computed asynchronously with the busy bit', async () => {
  const t = setup();
  const exact = (n: number) => {
    let r = 1n;
    for (let i = 2n; i <= BigInt(n); i++) r *= i;
    return Number(r & 0xffffffffn);
  };
  for (const n of [0, 1, 5, 10, 12, 13, 20, 33, 34, 35, 1000, 0xffffffff]) {
    assert.is(eduFactorial(n), n <= 40 ? exact(n) : 0, `${n}!`);
  }
  t.wr(EduReg.FACTORIAL, 10);
  assert.is(t.rd(EduReg.STATUS) & 1n, 1n, 'busy right after the write');
  assert.is(t.rd(EduReg.FACTORIAL), 10n);
  t.wr(EduReg.FACTORIAL, 3);
  await until(() => (t.rd(EduReg.STATUS) & 1n) === 0n);
  assert.is(t.rd(EduReg.FACTORIAL), 3628800n, 'the write while busy was ignored');
  t.wr(EduReg.FACTORIAL, 13);
  await until(() => (t.rd(EduReg.STATUS) & 1n) === 0n);
  assert.is(t.rd(EduReg.FACTORIAL), 1932053504n);
  assert.equal(t.ctx.irq.events, [], 'no interrupt without status 0x80');
  assert.is(t.dev.stats.factorials, 2);
});

Edu('factorial with interrupt (INTx), acknowledged by the ISR', async () => {
  const t = setup({ factDelayMs: 2 });
  t.wr(EduReg.STATUS, 0x81);
  assert.is(t.rd(EduReg.STATUS), 0x80n, 'only 0x80 is writable');
  t.wr(EduReg.FACTORIAL, 5);
  await until(() => t.ctx.irq.events.length > 0);
  assert.is(t.rd(EduReg.FACTORIAL), 120n);
  assert.is(t.rd(EduReg.IRQ_STATUS), 1n);
  assert.equal(t.ctx.irq.events, [{ index: IrqIndex.INTX, vector: 0 }]);
  assert.ok(t.dev.intxAsserted);
  t.wr(EduReg.IRQ_ACK, 1);
  assert.is(t.rd(EduReg.IRQ_STATUS), 0n);
  assert.not.ok(t.dev.intxAsserted);
  assert.is(cfgRead(t.dev, 0x06, 2) & 0x8, 0);
  t.wr(EduReg.STATUS, 0);
  assert.is(t.rd(EduReg.STATUS), 0n);
});

Edu('interrupt raise / acknowledge / status over INTx', () => {
  const t = setup();
  t.wr(EduReg.IRQ_RAISE, 0x5);
  assert.is(t.rd(EduReg.IRQ_STATUS), 5n);
  assert.equal(t.ctx.irq.events, [{ index: IrqIndex.INTX, vector: 0 }]);
  assert.is(cfgRead(t.dev, 0x06, 2) & 0x8, 0x8);
  t.wr(EduReg.IRQ_RAISE, 0x2);
  assert.is(t.ctx.irq.events.length, 1, 'level already high');
  t.wr(EduReg.IRQ_ACK, 0x1);
  assert.is(t.rd(EduReg.IRQ_STATUS), 6n);
  assert.ok(t.dev.intxAsserted, 'still pending bits: line stays up');
  t.dev.intxUnmasked();
  assert.is(t.ctx.irq.events.length, 2, 'EOI with the line up re-fires');
  t.wr(EduReg.IRQ_ACK, 0x6);
  assert.not.ok(t.dev.intxAsserted);
  t.dev.intxUnmasked();
  assert.is(t.ctx.irq.events.length, 2);
  t.wr(EduReg.IRQ_RAISE, 0);
  assert.is(t.ctx.irq.events.length, 2, 'raising 0 does nothing');
  assert.is(t.dev.stats.interruptsRaised, 2);
});

Edu('MSI when the guest enabled it, INTx otherwise', () => {
  const t = setup();
  cfgWrite(t.dev, 0x44, 4, 0xfee00000);
  cfgWrite(t.dev, 0x4c, 2, 0x4041);
  cfgWrite(t.dev, 0x42, 2, 0x0001);
  t.wr(EduReg.IRQ_RAISE, 0x1);
  t.wr(EduReg.IRQ_RAISE, 0x2);
  assert.equal(t.ctx.irq.events, [
    { index: IrqIndex.MSI, vector: 0 },
    { index: IrqIndex.MSI, vector: 0 },
  ]);
  assert.not.ok(t.dev.intxAsserted);
  t.wr(EduReg.IRQ_ACK, 0x3);
  cfgWrite(t.dev, 0x42, 2, 0);
  t.ctx.irq.clear();
  t.wr(EduReg.IRQ_RAISE, 0x1);
  assert.equal(t.ctx.irq.events, [{ index: IrqIndex.INTX, vector: 0 }]);
});

Edu('DMA registers: 4- and 8-byte access, the upper dword alone reads all-ones', () => {
  const t = setup();
  t.wr(EduReg.DMA_SRC, 0x1122334455667788n, 8);
  assert.is(t.rd(EduReg.DMA_SRC, 8), 0x1122334455667788n);
  assert.is(t.rd(EduReg.DMA_SRC, 4), 0x55667788n);
  assert.is(t.rd(EduReg.DMA_SRC + 4, 4), ALL32, 'as QEMU: no register at 0x84');
  t.wr(EduReg.DMA_SRC, 0xaabbccdd, 4);
  assert.is(t.rd(EduReg.DMA_SRC, 8), 0xaabbccddn, 'a 4-byte write sets the whole register');
  t.wr(EduReg.DMA_CMD, 0x4, 8);
  assert.is(t.rd(EduReg.DMA_CMD, 8), 0n, 'a command without the start bit is ignored');
  assert.is(regRead(t.dev, 0, EduReg.DMA_DST, 2), 0xffffn, '2-byte access above 0x80: all-ones');
  assert.is(t.rd(EduReg.DMA_ERROR), 0n);
});

Edu('DMA round trip RAM -> edu -> RAM, bytes checked', async () => {
  const t = setup();
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  const a = t.ctx.dma.bytes.subarray(0x0000, 0x1000);
  for (let i = 0; i < a.length; i++) a[i] = (i * 31 + 7) & 0xff;
  await dma(t, RAM, 0x40000n, 4096n, 0x1);
  assert.equal(t.dev.model!.buffer, a.slice());
  await dma(t, 0x40000n, RAM + 0x2000n, 4096n, 0x3);
  assert.equal(t.ctx.dma.bytes.subarray(0x2000, 0x3000), a.slice());
  // A partial transfer in the middle of the buffer.
  await dma(t, 0x40100n, RAM + 0x5003n, 0x33n, 0x3);
  assert.equal(t.ctx.dma.bytes.subarray(0x5003, 0x5036), a.slice(0x100, 0x133));
  assert.is(t.ctx.dma.bytes[0x5036], 0, 'nothing past the count');
  // Count 0 completes without touching memory.
  const writes = t.ctx.dma.writes;
  await dma(t, 0x40000n, RAM + 0x6000n, 0n, 0x3);
  assert.is(t.ctx.dma.writes, writes);
  assert.is(t.rd(EduReg.DMA_ERROR), 0n);
  assert.is(t.dev.stats.dmaTransfers, 4);
  assert.is(t.dev.stats.dmaBytes, 4096 * 2 + 0x33);
  assert.equal(t.ctx.irq.events, []);
});

Edu('DMA completion interrupt 0x100', async () => {
  const t = setup();
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  await dma(t, RAM, 0x40000n, 64n, 0x5);
  assert.is(t.rd(EduReg.IRQ_STATUS), 0x100n);
  assert.equal(t.ctx.irq.events, [{ index: IrqIndex.INTX, vector: 0 }]);
  t.wr(EduReg.IRQ_ACK, 0x100);
  assert.not.ok(t.dev.intxAsserted);
});

Edu('DMA registers are read-only while a transfer runs; the delay is honoured', async () => {
  const t = setup({ dmaDelayMs: 30 });
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  t.ctx.dma.bytes.fill(0xab, 0, 16);
  t.wr(EduReg.DMA_SRC, RAM, 8);
  t.wr(EduReg.DMA_DST, 0x40000n, 8);
  t.wr(EduReg.DMA_COUNT, 16n, 8);
  const t0 = Date.now();
  t.wr(EduReg.DMA_CMD, 1, 8);
  t.wr(EduReg.DMA_SRC, 0xdead0000n, 8);
  t.wr(EduReg.DMA_COUNT, 4096n, 8);
  t.wr(EduReg.DMA_CMD, 3, 8);
  assert.is(t.rd(EduReg.DMA_SRC, 8), RAM);
  assert.is(t.rd(EduReg.DMA_CMD, 8), 1n);
  await until(() => (t.rd(EduReg.DMA_CMD) & 1n) === 0n);
  assert.ok(Date.now() - t0 >= 25, 'completed after the configured delay');
  assert.equal([...t.dev.model!.buffer.subarray(0, 17)], [...new Array(16).fill(0xab), 0]);
});

Edu('DMA errors are reported, never thrown: unmapped, read-only, range, bus master, no client', async () => {
  const t = setup();
  const err = () => Number(t.rd(EduReg.DMA_ERROR));
  // Bus mastering off.
  await dma(t, RAM, 0x40000n, 16n, 0x1);
  assert.is(err(), (1 << 16) | EduDmaError.BUS_MASTER);
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  // Unmapped IOVA, both directions.
  t.dev.model!.buffer.fill(0x11);
  await dma(t, 0xdead0000n, 0x40000n, 16n, 0x1);
  assert.is(err(), (2 << 16) | EduDmaError.FAULT);
  assert.is(t.dev.model!.buffer[0], 0x11, 'buffer untouched');
  await dma(t, 0x40000n, RAM + 0xfff8n, 16n, 0x3);
  assert.is(err(), (3 << 16) | EduDmaError.FAULT, 'crosses the end of the mapping');
  // Read-only guest memory.
  t.ctx.dma.readOnly.push({ start: RAM + 0x8000n, end: RAM + 0x9000n });
  await dma(t, 0x40000n, RAM + 0x8000n, 16n, 0x3);
  assert.is(err(), (4 << 16) | EduDmaError.FAULT);
  assert.is(t.ctx.dma.bytes[0x8000], 0);
  // Edu-side range: below the buffer, past it, too long, wrapping.
  await dma(t, RAM, 0x3ffffn, 1n, 0x1);
  await dma(t, RAM, 0x40fffn, 2n, 0x1);
  await dma(t, RAM, 0x40000n, 4097n, 0x1);
  await dma(t, 0xfffffffffffffff0n, RAM, 0x20n, 0x3);
  await dma(t, 0x40000n, RAM, 0xffffffffffffffffn, 0x3);
  assert.is(err(), (9 << 16) | EduDmaError.RANGE);
  // Guest-side wrap.
  await dma(t, 0x40000n, 0xfffffffffffffff0n, 0x20n, 0x3);
  assert.is(err(), (10 << 16) | EduDmaError.FAULT);
  // The completion interrupt still fires, so a driver waiting for it does not hang.
  await dma(t, 0xdead0000n, 0x40000n, 16n, 0x5);
  assert.is(t.rd(EduReg.IRQ_STATUS), 0x100n);
  assert.is(t.dev.stats.dmaErrors, 11);
  assert.is(t.dev.stats.dmaTransfers, 0);
  assert.ok(t.ctx.log.at('warn').length >= 11);
  // No client at all.
  t.dev.detach();
  t.wr(EduReg.DMA_CMD, 1, 8);
  await until(() => (t.rd(EduReg.DMA_CMD) & 1n) === 0n);
  assert.is(err() & 0xff, EduDmaError.NO_CLIENT);
  // The device still works afterwards.
  t.dev.attach(t.ctx);
  t.ctx.dma.bytes.set([1, 2, 3, 4], 0x100);
  await dma(t, RAM + 0x100n, 0x40000n, 4n, 0x1);
  assert.equal([...t.dev.model!.buffer.subarray(0, 4)], [1, 2, 3, 4]);
});

Edu('a DMA accessor that throws synchronously or resolves short is contained', async () => {
  const t = setup();
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  const ctx = {
    ...t.ctx,
    dma: {
      read: (): Promise<Uint8Array> => {
        throw new Error('sync throw');
      },
      write: () => Promise.reject(new Error('async reject')),
    },
  };
  t.dev.detach();
  t.dev.attach(ctx);
  await dma(t, RAM, 0x40000n, 16n, 0x1);
  await dma(t, 0x40000n, RAM, 16n, 0x3);
  ctx.dma.read = () => Promise.resolve(new Uint8Array(3));
  await dma(t, RAM, 0x40000n, 16n, 0x1);
  assert.is(t.dev.stats.dmaErrors, 3);
  assert.is(Number(t.rd(EduReg.DMA_ERROR) & 0xffn), EduDmaError.FAULT);
});

Edu('detach during a transfer fails it; reset during one drops it', async () => {
  const t = setup({ dmaDelayMs: 20 });
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  t.ctx.dma.bytes.fill(0x77, 0, 16);
  await dma(t, RAM, 0x40000n, 16n, 0x1);
  t.wr(EduReg.DMA_DST, RAM + 0x100n, 8);
  t.wr(EduReg.DMA_SRC, 0x40000n, 8);
  t.wr(EduReg.DMA_CMD, 3, 8);
  t.dev.detach();
  assert.is(t.rd(EduReg.DMA_CMD) & 1n, 0n);
  assert.is(Number(t.rd(EduReg.DMA_ERROR)), (1 << 16) | EduDmaError.NO_CLIENT);
  await sleep(40);
  assert.is(t.ctx.dma.bytes[0x100], 0, 'the cancelled transfer never ran');

  t.dev.attach(t.ctx);
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  t.wr(EduReg.DMA_CMD, 3, 8);
  await t.dev.reset();
  await sleep(40);
  assert.is(t.ctx.dma.bytes[0x100], 0, 'reset dropped the transfer');
  assert.is(t.rd(EduReg.DMA_CMD, 8), 0n);
  assert.is(t.rd(EduReg.DMA_ERROR), 0n);
});

Edu('reset: registers and config back to power-on; factorial in flight dropped', async () => {
  const t = setup({ factDelayMs: 20 });
  const power = t.dev.regionRead(CONFIG, 0n, 256);
  t.wr(EduReg.LIVENESS, 1);
  t.wr(EduReg.STATUS, 0x80);
  t.wr(EduReg.FACTORIAL, 6);
  t.wr(EduReg.IRQ_RAISE, 0x10);
  t.wr(EduReg.DMA_COUNT, 9n, 8);
  cfgWrite(t.dev, 0x04, 2, 0x0406);
  cfgWrite(t.dev, 0x10, 4, 0xfe000000);
  cfgWrite(t.dev, 0x42, 2, 1);
  await t.dev.reset();
  assert.equal(t.dev.regionRead(CONFIG, 0n, 256), power);
  for (const r of [EduReg.LIVENESS, EduReg.FACTORIAL, EduReg.STATUS, EduReg.IRQ_STATUS])
    assert.is(t.rd(r), 0n);
  assert.is(t.rd(EduReg.DMA_COUNT, 8), 0n);
  assert.not.ok(t.dev.intxAsserted);
  await sleep(40);
  assert.is(t.rd(EduReg.FACTORIAL), 0n, 'the old factorial did not land');
  assert.is(t.ctx.irq.events.length, 1, 'only the raise before the reset');
});

Edu('QEMU startup sequence (protocol 6.3)', async () => {
  const dev = createEdu();
  const ctx = makeContext();
  dev.attach(ctx);
  assert.is(dev.numRegions, 9);
  assert.is(dev.numIrqs, 5);
  const sizes = [0, 1, 2, 3, 4, 5].map((i) => dev.regionInfo(i).size);
  assert.equal(sizes, [1n << 20n, 0n, 0n, 0n, 0n, 0n]);
  assert.is(dev.irqInfo(IrqIndex.ERR).count, 1);
  const size = Number(dev.regionInfo(CONFIG).size);
  const dump = dev.regionRead(CONFIG, 0n, size);
  assert.is(dump.length, 256);
  const rom = cfgRead(dev, 0x30, 4);
  cfgWrite(dev, 0x30, 4, 0xfffff800);
  assert.is(cfgRead(dev, 0x30, 4), 0);
  cfgWrite(dev, 0x30, 4, rom);
  assert.is(cfgRead(dev, 0x10, 4) & 0xf, 0);
  assert.is(cfgRead(dev, 0x3d, 1), 1);
  assert.is(cfgRead(dev, 0x3d, 1), 1);
  // Reset.
  const cmd = cfgRead(dev, 0x04, 2);
  cfgWrite(dev, 0x04, 2, cmd & 0);
  await dev.reset();
  assert.is(cfgRead(dev, 0x3d, 1), 1);
  for (let off = 0x10; off <= 0x24; off += 4) cfgWrite(dev, off, 4, 0);
  assert.equal(dev.regionRead(CONFIG, 0n, 256), dump);
  assert.is(regRead(dev, 0, 0, 4), 0x010000edn);
});

Edu('hostile region accesses never escape as anything but DeviceError', () => {
  const t = setup();
  let seed = 12345;
  const rnd = (n: number) => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed % n;
  };
  const offsets = [
    0n,
    0x7cn,
    0x80n,
    0x9cn,
    0xfffffn,
    0x100000n,
    0xffffffffffffffffn,
    0x40000n,
    0xffn,
    0x100n,
  ];
  for (let i = 0; i < 3000; i++) {
    const region = rnd(10);
    const offset = rnd(2) ? offsets[rnd(offsets.length)]! : BigInt(rnd(0x100010));
    const count = [0, 1, 2, 3, 4, 5, 8, 16, 256, 4096][rnd(10)]!;
    try {
      if (rnd(2)) t.dev.regionRead(region, offset, count);
      else t.dev.regionWrite(region, offset, new Uint8Array(count).fill(rnd(256)));
    } catch (err) {
      if (!(err instanceof DeviceError)) throw err;
    }
  }
  assert.is(t.rd(EduReg.IDENT), 0x010000edn);
});

Edu('device registry', () => {
  assert.ok(deviceNames().includes('edu'));
  const dev = createDevice('edu', { dmaDelayMs: '5', dmaMask: '0xffffffff' });
  assert.is(cfgRead(dev, 0x02, 2), 0x11e8);
  assert.throws(() => createDevice('nope'), /unknown device 'nope'/);
  assert.throws(() => createDevice('edu', { dmaDelayMs: 'soon' }), /dmaDelayMs/);
  assert.throws(() => createDevice('edu', { dmaMask: 'x' }), /dmaMask/);
});

Edu('dmaMask clamps guest addresses like QEMU dma_mask', async () => {
  const t = setup({ dmaMask: 0xfffffffn });
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  t.ctx.dma.bytes.set([9, 8, 7], 0x10);
  await dma(t, 0x1_0000_0000n + RAM + 0x10n, 0x40000n, 3n, 0x1);
  assert.is(t.rd(EduReg.DMA_ERROR), 0n);
  assert.equal([...t.dev.model!.buffer.subarray(0, 3)], [9, 8, 7]);
});

Edu.run();
