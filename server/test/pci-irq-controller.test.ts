// The PCI interrupt routing against the engine's real IrqController and real eventfds: INTx level semantics
// across automask/unmask (SET_IRQS NONE|UNMASK as QEMU sends under TCG), and MSI.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, dupFd, eventfd, eventfdRead } from 'vfio-user-native';
import { IrqIndex, SetIrqsFlags } from 'vfio-user-protocol';
import { createEdu, EduReg } from '../src/devices/edu.js';
import { IrqController } from '../src/irq/irq-controller.js';
import { cfgWrite, GuestRam, RecordingLogger, regWrite } from './pci-test-context.js';

const { DATA_NONE, DATA_EVENTFD, ACTION_TRIGGER, ACTION_UNMASK } = SetIrqsFlags;

function wire(index: number) {
  const dev = createEdu();
  const irq = new IrqController(dev);
  const efd = eventfd();
  const ours = dupFd(efd); // the controller owns efd; we read the same counter through a dup
  irq.setIrqs({ flags: DATA_EVENTFD | ACTION_TRIGGER, index, start: 0, count: 1 }, [efd]);
  dev.attach({ dma: new GuestRam(0x100000n, 0x1000), irq, log: new RecordingLogger() });
  return {
    dev,
    irq,
    /** Signals since the last call. */
    signals: () => Number(eventfdRead(ours)),
    eoi: () =>
      irq.setIrqs({ flags: DATA_NONE | ACTION_UNMASK, index: IrqIndex.INTX, start: 0, count: 1 }, []),
    raise: (v: number) => regWrite(dev, 0, EduReg.IRQ_RAISE, 4, v),
    ack: (v: number) => regWrite(dev, 0, EduReg.IRQ_ACK, 4, v),
    close: () => {
      dev.detach();
      irq.reset();
      closeFd(ours);
    },
  };
}

const Ctl = suite('pci interrupts with the IrqController');

Ctl('edu INTx: one signal per interrupt, re-fire at EOI only while the status is non-zero', () => {
  const t = wire(IrqIndex.INTX);
  t.raise(1);
  assert.is(t.signals(), 1);
  assert.ok(t.irq.state(IrqIndex.INTX, 0).masked, 'automasked');
  t.raise(2);
  assert.is(t.signals(), 0, 'level already up, client masked');
  t.ack(1);
  t.eoi();
  assert.is(t.signals(), 1, 'status still 2: the line re-fires at EOI');
  t.ack(2);
  t.eoi();
  assert.is(t.signals(), 0);
  // Cleared and raised again before the EOI: exactly one signal, nothing left pending in the controller.
  t.raise(4);
  assert.is(t.signals(), 1);
  t.ack(4);
  t.raise(8);
  assert.is(t.signals(), 0);
  t.eoi();
  assert.is(t.signals(), 1);
  t.ack(8);
  t.eoi();
  t.eoi();
  assert.is(t.signals(), 0);
  assert.equal(t.irq.state(IrqIndex.INTX, 0), { enabled: true, masked: false, pending: false });
  t.close();
});

Ctl('edu INTx raised before the eventfd is wired fires on wiring', () => {
  const dev = createEdu();
  const irq = new IrqController(dev);
  dev.attach({ dma: new GuestRam(0n, 16), irq, log: new RecordingLogger() });
  regWrite(dev, 0, EduReg.IRQ_RAISE, 4, 1);
  assert.is(irq.stats.dropped, 1);
  const efd = eventfd();
  const ours = dupFd(efd);
  irq.setIrqs({ flags: DATA_EVENTFD | ACTION_TRIGGER, index: IrqIndex.INTX, start: 0, count: 1 }, [efd]);
  assert.is(Number(eventfdRead(ours)), 1);
  irq.reset();
  closeFd(ours);
});

Ctl('edu MSI: every raise signals vector 0', () => {
  const t = wire(IrqIndex.MSI);
  cfgWrite(t.dev, 0x42, 2, 0x0001);
  t.raise(1);
  t.raise(2);
  assert.is(t.signals(), 2);
  assert.is(t.irq.stats.signals, 2);
  t.close();
});

Ctl.run();
