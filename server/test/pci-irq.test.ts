// INTx level semantics and routing through the IrqSink.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { IrqIndex } from 'vfio-user-protocol';
import { PciDevice, type PciDeviceSpec } from '../src/pci/index.js';
import { cfgRead, cfgWrite, makeContext } from './pci-test-context.js';

const base: PciDeviceSpec = { vendorId: 0x1234, deviceId: 3, classCode: 0, caps: { msi: { vectors: 1 } } };
const INTX = { index: IrqIndex.INTX, vector: 0 };

const Irq = suite('pci interrupts');

Irq('INTx is a level: one trigger per assertion, STATUS.Interrupt mirrors it', () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  dev.attach(ctx);
  assert.is(dev.raise(), 'intx');
  assert.equal(ctx.irq.events, [INTX]);
  assert.is(cfgRead(dev, 0x06, 2) & 0x8, 0x8);
  assert.ok(dev.intxAsserted);
  dev.raise();
  assert.is(ctx.irq.events.length, 1, 'already asserted: no new edge');
  dev.lower();
  assert.is(cfgRead(dev, 0x06, 2) & 0x8, 0);
  assert.not.ok(dev.intxAsserted);
  dev.raise();
  assert.is(ctx.irq.events.length, 1, 'INTx is automasked until the client unmasks it');
  dev.intxUnmasked();
  assert.is(ctx.irq.events.length, 2);
});

Irq('unmask re-fires a line that is still asserted, and only then', () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  dev.attach(ctx);
  dev.raise();
  dev.intxUnmasked();
  assert.is(ctx.irq.count(IrqIndex.INTX), 2, 'guest EOIed without clearing the source');
  dev.irqStateChanged(IrqIndex.INTX);
  assert.is(ctx.irq.count(IrqIndex.INTX), 3, 'irqStateChanged(INTX) does the same');
  dev.irqStateChanged(IrqIndex.MSI);
  assert.is(ctx.irq.events.length, 3);
  dev.lower();
  dev.intxUnmasked();
  dev.irqStateChanged(IrqIndex.INTX);
  assert.is(ctx.irq.count(IrqIndex.INTX), 3);
});

Irq('a line raised with no eventfd (or no client) fires once one is wired', () => {
  const dev = new PciDevice(base);
  assert.is(dev.raise(), 'intx', 'no client: the line is still asserted');
  const ctx = makeContext();
  ctx.irq.disabled.add('0:0');
  dev.attach(ctx);
  dev.intxUnmasked();
  assert.equal(ctx.irq.events, []);
  ctx.irq.disabled.clear();
  dev.irqStateChanged(IrqIndex.INTX);
  assert.equal(ctx.irq.events, [INTX]);
});

Irq('COMMAND.Interrupt Disable holds the line back until cleared', () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  dev.attach(ctx);
  cfgWrite(dev, 0x04, 2, 0x0400);
  dev.raise();
  assert.equal(ctx.irq.events, []);
  assert.is(cfgRead(dev, 0x06, 2) & 0x8, 0x8, 'status still shows the interrupt');
  dev.intxUnmasked();
  assert.equal(ctx.irq.events, []);
  cfgWrite(dev, 0x05, 1, 0x00);
  assert.equal(ctx.irq.events, [INTX]);
});

Irq('pin 0: nothing to raise', () => {
  const dev = new PciDevice({ ...base, caps: {}, intxPin: 0 });
  const ctx = makeContext();
  dev.attach(ctx);
  assert.is(dev.raise(), 'none');
  assert.equal(ctx.irq.events, []);
});

Irq('MSI enabled: raise goes to MSI, lower() is harmless, unmask does not fire INTx', () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  dev.attach(ctx);
  cfgWrite(dev, dev.msi!.offset + 2, 2, 1);
  assert.is(dev.raise(), 'msi');
  assert.is(dev.raise(), 'msi');
  assert.equal(ctx.irq.events, [
    { index: IrqIndex.MSI, vector: 0 },
    { index: IrqIndex.MSI, vector: 0 },
  ]);
  dev.lower();
  dev.intxUnmasked();
  assert.is(ctx.irq.events.length, 2);
  assert.is(cfgRead(dev, 0x06, 2) & 0x8, 0);
});

Irq('a trigger latched as pending by the sink is delivered once, by the sink', () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  ctx.irq.masked.add('0:0');
  dev.attach(ctx);
  dev.raise();
  assert.equal(ctx.irq.events, []);
  ctx.irq.unmask(IrqIndex.INTX, 0, dev);
  assert.equal(ctx.irq.events, [INTX], "one delivery, not the sink's plus a re-fire");
});

Irq(
  'with automask (as the engine): one signal per assertion, re-fire only for a line still up at EOI',
  () => {
    const dev = new PciDevice(base);
    const ctx = makeContext();
    ctx.irq.automask.add(IrqIndex.INTX);
    dev.attach(ctx);
    const eoi = () => ctx.irq.unmask(IrqIndex.INTX, 0, dev);
    // 1. Raise, the ISR clears the source, EOI: one interrupt.
    dev.raise();
    dev.lower();
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 1);
    // 2. Raise, EOI without clearing the source: re-fired; then cleared: no more.
    dev.raise();
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 3);
    dev.lower();
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 3);
    // 3. Cleared and raised again before the EOI: delivered once at the EOI, nothing left pending.
    dev.raise();
    dev.lower();
    dev.raise();
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 5);
    assert.is(ctx.irq.pending.size, 0);
    dev.lower();
    eoi();
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 5, 'no spurious interrupt later');
    // 4. An INTx SET_IRQS that is not an unmask (here: MASK) while the line is up.
    dev.raise();
    assert.is(ctx.irq.count(IrqIndex.INTX), 6);
    ctx.irq.masked.add('0:0');
    dev.irqStateChanged(IrqIndex.INTX);
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 7, 'the line, still up, fires once at the unmask');
    dev.lower();
    eoi();
    assert.is(ctx.irq.count(IrqIndex.INTX), 7);
    assert.is(ctx.irq.pending.size, 0);
  },
);

Irq('reset de-asserts INTx; detach forgets the sink', async () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  dev.attach(ctx);
  dev.raise();
  await dev.reset();
  assert.not.ok(dev.intxAsserted);
  assert.is(cfgRead(dev, 0x06, 2) & 0x8, 0);
  dev.detach();
  dev.raise();
  assert.is(ctx.irq.events.length, 1, 'nothing signalled after detach');
});

Irq('signalError fires the ERR eventfd', () => {
  const dev = new PciDevice(base);
  const ctx = makeContext();
  assert.not.ok(dev.signalError(), 'no client');
  dev.attach(ctx);
  assert.ok(dev.signalError());
  assert.equal(ctx.irq.events, [{ index: IrqIndex.ERR, vector: 0 }]);
});

Irq.run();
