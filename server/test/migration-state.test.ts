// Device-side migration: the PciDevice's msgpackr state stream (save/load between two edu instances, refusal of
// foreign, truncated and malformed streams without side effects), edu quiescing while stopped, and the dirty
// log's bitmap arithmetic.
import { pack, unpack } from 'msgpackr';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { DeviceError, MigrationFlags } from '../src/device.js';
import { createEdu, EDU_DMA_START, EduReg } from '../src/devices/edu.js';
import { DirtyLog } from '../src/dma/dirty.js';
import { PciDevice } from '../src/pci/index.js';
import { cfgRead, cfgWrite, makeContext, regRead, regWrite } from './pci-test-context.js';
import { sleep, until } from './wait.js';

const RAM = 0x100000n;

function edu(opts: Parameters<typeof createEdu>[0] = {}) {
  const dev = createEdu(opts);
  const ctx = makeContext(RAM, 0x10000);
  dev.attach(ctx);
  const rd = (off: number, size: 4 | 8 = 4) => regRead(dev, 0, off, size);
  const wr = (off: number, value: bigint | number, size: 4 | 8 = 4) => regWrite(dev, 0, off, size, value);
  return { dev, ctx, rd, wr, mig: dev.migration! };
}

/** Reads every register the guest can see, plus the DMA buffer and config space. */
function visible(t: ReturnType<typeof edu>) {
  const regs: Record<string, bigint> = {};
  for (const [name, off] of Object.entries(EduReg)) {
    if (name === 'IRQ_RAISE' || name === 'IRQ_ACK') continue;
    regs[name] = t.rd(off, off >= 0x80 && off !== EduReg.DMA_ERROR ? 8 : 4);
  }
  return {
    regs,
    // The 4 KiB DMA buffer is not visible through BAR0 (as in QEMU): read the model's.
    buffer: Buffer.from(t.dev.model!.buffer),
    config: Buffer.from(t.dev.regionRead(7, 0n, 256)),
  };
}

function throwsEinval(fn: () => void, what: string): void {
  try {
    fn();
  } catch (err) {
    assert.instance(err, DeviceError, what);
    assert.is((err as DeviceError).errno, 22, what);
    return;
  }
  assert.unreachable(`${what}: accepted`);
}

const State = suite('migration: device state');

State('edu offers STOP_COPY and PRE_COPY; a model without the hooks offers nothing', () => {
  const t = edu();
  assert.is(t.mig.flags, MigrationFlags.STOP_COPY | MigrationFlags.PRE_COPY);
  const plain = new PciDevice({ vendorId: 1, deviceId: 2, classCode: 0xff0000 }, {});
  assert.is(plain.migration, undefined);
  t.dev.close();
  plain.close();
});

State(
  'save on one edu, load on another: registers, factorial, DMA buffer and config space equal',
  async () => {
    const a = edu();
    a.wr(EduReg.LIVENESS, 0x12345678);
    a.wr(EduReg.FACTORIAL, 10);
    await until(() => (a.rd(EduReg.STATUS) & 1n) === 0n);
    assert.is(a.rd(EduReg.FACTORIAL), 3628800n);
    a.wr(EduReg.STATUS, 0x80);
    // Fill the DMA buffer with a real transfer from guest RAM.
    const pattern = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);
    a.ctx.dma.bytes.set(pattern);
    cfgWrite(a.dev, 0x04, 2, 0x0006); // memory + bus master
    a.wr(EduReg.DMA_SRC, RAM, 8);
    a.wr(EduReg.DMA_DST, EDU_DMA_START, 8);
    a.wr(EduReg.DMA_COUNT, 4096n, 8);
    a.wr(EduReg.DMA_CMD, 1, 8);
    await until(() => (a.rd(EduReg.DMA_CMD) & 1n) === 0n);
    assert.equal(a.dev.model!.buffer, pattern);
    a.wr(EduReg.DMA_SRC, 0x1122334455667788n, 8);
    a.wr(EduReg.DMA_DST, 0x40010n, 8);
    a.wr(EduReg.DMA_COUNT, 0x20n, 8);
    cfgWrite(a.dev, 0x10, 4, 0xfe000000); // BAR0 address
    cfgWrite(a.dev, 0x44, 4, 0xfee00000); // MSI address
    a.wr(EduReg.IRQ_RAISE, 0x40);
    const before = visible(a);

    await a.mig.setRunning?.(false);
    const stream = a.mig.saveState();
    // The stream is msgpack with a version/identity header.
    const decoded = unpack(stream) as { magic: string; version: number; id: { vendor: number } };
    assert.is(decoded.magic, 'vfio-user-ts/pci');
    assert.is(decoded.version, 1);
    assert.is(decoded.id.vendor, 0x1234);

    const b = edu();
    assert.not.equal(visible(b), before, 'a fresh edu differs');
    await b.mig.setRunning?.(false);
    b.mig.loadState(stream);
    await b.mig.setRunning?.(true);
    assert.equal(visible(b), before);
    assert.is(b.rd(EduReg.LIVENESS), ~0x12345678n & 0xffffffffn);
    assert.is(b.rd(EduReg.FACTORIAL), 3628800n);
    assert.is(b.dev.intxAsserted, true, 'the INTx level travels with the state');
    assert.is(cfgRead(b.dev, 0x44, 4), 0xfee00000);
    a.dev.close();
    b.dev.close();
  },
);

State('stopped edu makes no progress; a factorial latched in STOP completes on the destination', async () => {
  const a = edu({ factDelayMs: 20 });
  a.wr(EduReg.FACTORIAL, 5);
  assert.is(a.rd(EduReg.STATUS) & 1n, 1n, 'computing');
  await a.mig.setRunning?.(false);
  await sleep(60);
  assert.is(a.rd(EduReg.STATUS) & 1n, 1n, 'held while stopped');
  assert.is(a.rd(EduReg.FACTORIAL), 5n);
  // A write that starts work while stopped only latches it.
  const stream = a.mig.saveState();

  const b = edu({ factDelayMs: 20 });
  await b.mig.setRunning?.(false);
  b.mig.loadState(stream);
  assert.is(b.rd(EduReg.STATUS) & 1n, 1n, 'the destination holds it too while stopped');
  await b.mig.setRunning?.(true);
  await until(() => (b.rd(EduReg.STATUS) & 1n) === 0n);
  assert.is(b.rd(EduReg.FACTORIAL), 120n);

  // The source resumes its own copy as well.
  await a.mig.setRunning?.(true);
  await until(() => (a.rd(EduReg.STATUS) & 1n) === 0n);
  assert.is(a.rd(EduReg.FACTORIAL), 120n);
  a.dev.close();
  b.dev.close();
});

State('a DMA started while stopped runs only after resuming', async () => {
  const t = edu();
  cfgWrite(t.dev, 0x04, 2, 0x0006);
  t.ctx.dma.bytes.fill(0xab, 0, 16);
  await t.mig.setRunning?.(false);
  t.wr(EduReg.DMA_SRC, RAM, 8);
  t.wr(EduReg.DMA_DST, EDU_DMA_START, 8);
  t.wr(EduReg.DMA_COUNT, 16n, 8);
  t.wr(EduReg.DMA_CMD, 1, 8);
  await sleep(20);
  assert.is(t.rd(EduReg.DMA_CMD) & 1n, 1n, 'still pending');
  assert.is(t.dev.model!.buffer[0], 0);
  await t.mig.setRunning?.(true);
  await until(() => (t.rd(EduReg.DMA_CMD) & 1n) === 0n);
  assert.is(t.dev.model!.buffer[0], 0xab);
  t.dev.close();
});

State('foreign, truncated, malformed or tampered streams are refused and change nothing', () => {
  const a = edu();
  a.wr(EduReg.LIVENESS, 1);
  const good = a.mig.saveState();
  const b = edu();
  b.wr(EduReg.LIVENESS, 0x55);
  const before = visible(b);
  const s = unpack(good) as Record<string, unknown>;
  const model = s.model as Record<string, unknown>;
  const other = new PciDevice(
    { vendorId: 0x1234, deviceId: 0x11e9, classCode: 0xff0000 },
    { saveState: () => ({}), loadState: () => {} },
  );
  const cases: [string, Uint8Array][] = [
    ['truncated', good.subarray(0, good.length - 10)],
    ['empty', new Uint8Array(0)],
    ['junk', new Uint8Array(16).fill(0xee)],
    ['another device', other.migration!.saveState()],
    ['another version', pack({ ...s, version: 2 })],
    ['a short config space', pack({ ...s, config: new Uint8Array(64) })],
    ['a short DMA buffer', pack({ ...s, model: { ...model, buffer: new Uint8Array(10) } })],
    ['a bad register', pack({ ...s, model: { ...model, liveness: -1 } })],
    ['a bad u64 register', pack({ ...s, model: { ...model, dmaSrc: '18446744073709551616' } })],
    ['not an object', pack(42)],
  ];
  for (const [what, bytes] of cases) throwsEinval(() => b.mig.loadState(bytes), what);
  assert.equal(visible(b), before, 'nothing changed');
  b.mig.loadState(good);
  assert.is(b.rd(EduReg.LIVENESS), 0xfffffffen);
  a.dev.close();
  b.dev.close();
  other.close();
});

const Dirty = suite('migration: dirty log');

Dirty('marks pages, reports a range as a clear-on-read bitmap, bits outside the range 0', () => {
  const d = new DirtyLog();
  d.markDirty(0x1000n, 4); // not started: ignored
  d.start(0x1000n, []);
  assert.equal([...d.report(0x0n, 0x4000n, 0x1000n)], [0, 0, 0, 0, 0, 0, 0, 0]);
  d.markDirty(0x1ffen, 4); // pages 1 and 2
  d.markDirty(0x100000n, 1); // outside the reported range
  const first = d.report(0x0n, 0x4000n, 0x1000n);
  assert.equal([...first], [0b110, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal([...d.report(0x0n, 0x4000n, 0x1000n)], [0, 0, 0, 0, 0, 0, 0, 0], 'cleared');
  assert.is(d.report(0x100000n, 0x1000n, 0x1000n)[0], 1, 'the other range kept its bit');
});

Dirty('spans crossing 64-page words; a range list filters; other page sizes report nothing', () => {
  const d = new DirtyLog();
  d.start(0x1000n, []);
  d.markDirty(62n * 0x1000n, 4 * 0x1000); // pages 62..65
  const bm = d.report(0n, 128n * 0x1000n, 0x1000n);
  const words = new BigUint64Array(bm.buffer);
  assert.is(words[0], 0b11n << 62n);
  assert.is(words[1], 0b11n);
  assert.equal([...d.report(0n, 0x1000n, 0x2000n)], [0, 0, 0, 0, 0, 0, 0, 0]);
  d.stop();
  d.start(0x1000n, [{ iova: 0x3000n, length: 0x1000n }]);
  d.markDirty(0x0n, 0x8000);
  assert.is(d.report(0n, 0x8000n, 0x1000n)[0], 0b1000);
});

Dirty('a report range not aligned to the page size maps pages relative to iova', () => {
  const d = new DirtyLog();
  d.start(0x2000n, []);
  d.markDirty(0x2000n, 1); // logged page 1 = [0x2000, 0x4000)
  // Report from 0x1000: page b covers [0x1000 + b*0x2000, ...): b=0 [0x1000,0x3000) and b=1 [0x3000,0x5000).
  assert.is(d.report(0x1000n, 0x4000n, 0x2000n)[0], 0b11);
});

State.run();
Dirty.run();
