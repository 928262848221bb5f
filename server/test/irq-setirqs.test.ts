// DEVICE_SET_IRQS semantics on the IRQ controller with real eventfds: assign/de-assign/re-assign, disable,
// loopback triggers (NONE/BOOL), masking and pending bits, automasked INTx with NONE|UNMASK and with a KVM-style
// resample eventfd, validation errnos, and fd hygiene.

import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import { SetIrqsFlags as F, IrqIndex } from 'vfio-user-protocol';
import { IrqController, IrqError } from '../src/irq/irq-controller.js';
import { TestDevice } from './engine-fixtures.js';
import { until } from './wait.js';

const E = constants.errno;
const TRIG_EVENTFD = F.DATA_EVENTFD | F.ACTION_TRIGGER;
const { MSIX, INTX, ERR, REQ } = IrqIndex;

/** n eventfds: the test keeps the originals (to count signals), the controller gets dups. */
function eventfds(n: number): { mine: number[]; theirs: number[] } {
  const mine = Array.from({ length: n }, () => native.eventfd());
  return { mine, theirs: mine.map((fd) => native.dupFd(fd)) };
}
const count = (fd: number) => Number(native.eventfdRead(fd));
const closeAll = (fds: number[]) => {
  for (const fd of fds) native.closeFd(fd);
};

function setup() {
  const dev = new TestDevice();
  const irq = new IrqController(dev);
  return { dev, irq };
}

test('EVENTFD|TRIGGER assigns per-vector eventfds; triggers signal exactly that vector', () => {
  const { dev, irq } = setup();
  const { mine, theirs } = eventfds(8);
  // QEMU-style chunks: start 0 count 4, then start 4 count 4.
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 4 }, theirs.slice(0, 4));
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 4, count: 4 }, theirs.slice(4));
  for (let v = 0; v < 8; v++) assert.ok(irq.isEnabled(MSIX, v));
  assert.not.ok(irq.isEnabled(MSIX, 8));
  assert.not.ok(irq.isEnabled(INTX, 0));
  assert.ok(irq.trigger(MSIX, 5));
  assert.ok(irq.trigger(MSIX, 5));
  assert.ok(irq.trigger(MSIX, 0));
  assert.equal(mine.map(count), [1, 0, 0, 0, 0, 2, 0, 0]);
  // No eventfd: nothing signalled, nothing pending.
  assert.not.ok(irq.trigger(INTX, 0));
  assert.is(irq.stats.dropped, 1);
  assert.ok(dev.irqChanges.includes(MSIX));
  irq.reset();
  closeAll(mine);
  dev.close();
});

test('EVENTFD with 0 fds de-assigns; NONE|TRIGGER count 0 disables the index; both close the fds', () => {
  const { dev, irq } = setup();
  const fds0 = native.openFds();
  const { mine, theirs } = eventfds(4);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 4 }, theirs);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 1, count: 2 }, []); // de-assign 1..2
  assert.equal(
    [0, 1, 2, 3].map((v) => irq.isEnabled(MSIX, v)),
    [true, false, false, true],
  );
  for (let v = 0; v < 4; v++) irq.trigger(MSIX, v);
  assert.equal(mine.map(count), [1, 0, 0, 1]);
  assert.is(native.openFds() - fds0, 4 + 2, 'two controller fds closed');
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSIX, start: 0, count: 0 }, []);
  assert.not.ok(irq.isEnabled(MSIX, 0));
  assert.not.ok(irq.trigger(MSIX, 3));
  assert.equal(mine.map(count), [0, 0, 0, 0]);
  assert.is(native.openFds() - fds0, 4, 'every controller fd closed');
  // Disabling an index without vectors (REQ) is a harmless no-op.
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_TRIGGER, index: REQ, start: 0, count: 0 }, []);
  closeAll(mine);
  dev.close();
});

test('re-assigning a vector closes the old eventfd; the new one receives the triggers', () => {
  const { dev, irq } = setup();
  const a = eventfds(1);
  const b = eventfds(1);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 1 }, a.theirs);
  const fds1 = native.openFds();
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 1 }, b.theirs);
  assert.is(native.openFds(), fds1 - 1 + 0, 'old dup closed (the new one was already counted)');
  irq.trigger(MSIX, 0);
  assert.is(count(a.mine[0]!), 0);
  assert.is(count(b.mine[0]!), 1);
  irq.reset();
  closeAll([...a.mine, ...b.mine]);
  dev.close();
});

test('NONE and BOOL TRIGGER fire from the client side (loopback)', () => {
  const { dev, irq } = setup();
  const { mine, theirs } = eventfds(2);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSI, start: 0, count: 2 }, theirs);
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSI, start: 1, count: 1 }, []);
  assert.equal(mine.map(count), [0, 1]);
  irq.setIrqs(
    { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: MSI, start: 0, count: 2, data: new Uint8Array([1, 0]) },
    [],
  );
  assert.equal(mine.map(count), [1, 0]);
  irq.reset();
  closeAll(mine);
  dev.close();
});
const MSI = IrqIndex.MSI;

test('MASK makes triggers pending; UNMASK fires the pending one once', () => {
  const { dev, irq } = setup();
  const { mine, theirs } = eventfds(2);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 2 }, theirs);
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_MASK, index: MSIX, start: 0, count: 1 }, []);
  assert.not.ok(irq.trigger(MSIX, 0));
  assert.not.ok(irq.trigger(MSIX, 0));
  assert.ok(irq.trigger(MSIX, 1));
  assert.equal(irq.state(MSIX, 0), { enabled: true, masked: true, pending: true });
  assert.equal(mine.map(count), [0, 1]);
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_UNMASK, index: MSIX, start: 0, count: 1 }, []);
  assert.equal(mine.map(count), [1, 0]);
  assert.equal(irq.state(MSIX, 0), { enabled: true, masked: false, pending: false });
  // BOOL masks only the flagged vectors.
  irq.setIrqs(
    { flags: F.DATA_BOOL | F.ACTION_MASK, index: MSIX, start: 0, count: 2, data: new Uint8Array([0, 1]) },
    [],
  );
  assert.ok(irq.trigger(MSIX, 0));
  assert.not.ok(irq.trigger(MSIX, 1));
  assert.equal(mine.map(count), [1, 0]);
  assert.is(irq.stats.pended, 3);
  irq.reset();
  closeAll(mine);
  dev.close();
});

test('INTx is automasked: one signal per unmask (NONE|UNMASK, as QEMU under TCG)', () => {
  const { dev, irq } = setup();
  const { mine, theirs } = eventfds(1);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: INTX, start: 0, count: 1 }, theirs);
  assert.ok(irq.trigger(INTX, 0));
  assert.not.ok(irq.trigger(INTX, 0), 'masked by its own signal');
  assert.is(count(mine[0]!), 1);
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_UNMASK, index: INTX, start: 0, count: 1 }, []);
  assert.is(count(mine[0]!), 1, 'the pending level fires on unmask');
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_UNMASK, index: INTX, start: 0, count: 1 }, []);
  assert.is(count(mine[0]!), 0, 'nothing pending: no spurious signal');
  assert.ok(irq.trigger(INTX, 0));
  assert.is(count(mine[0]!), 1);
  irq.reset();
  closeAll(mine);
  dev.close();
});

test('EVENTFD|UNMASK on INTx (KVM resample): each signal of the watched fd unmasks', async () => {
  const { dev, irq } = setup();
  const trig = eventfds(1);
  const resample = eventfds(1);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: INTX, start: 0, count: 1 }, trig.theirs);
  irq.setIrqs({ flags: F.DATA_EVENTFD | F.ACTION_UNMASK, index: INTX, start: 0, count: 1 }, resample.theirs);
  assert.ok(irq.trigger(INTX, 0));
  assert.not.ok(irq.trigger(INTX, 0));
  assert.is(count(trig.mine[0]!), 1);
  // The guest EOIs: KVM signals the resample eventfd.
  native.eventfdWrite(resample.mine[0]!, 1n);
  await until(() => irq.stats.signals === 2, 2000, 'resample unmask');
  assert.is(count(trig.mine[0]!), 1);
  assert.equal(irq.state(INTX, 0), { enabled: true, masked: true, pending: false });
  // Again, with nothing pending: just unmasked.
  native.eventfdWrite(resample.mine[0]!, 1n);
  await until(() => !irq.state(INTX, 0).masked, 2000, 'unmask');
  assert.is(count(trig.mine[0]!), 0);
  // De-assign the resample fd: it is closed and no longer watched.
  const fds = native.openFds();
  irq.setIrqs({ flags: F.DATA_EVENTFD | F.ACTION_UNMASK, index: INTX, start: 0, count: 1 }, []);
  assert.is(native.openFds(), fds - 1);
  irq.reset();
  closeAll([...trig.mine, ...resample.mine]);
  dev.close();
});

test('validation: every refusal is EINVAL and leaves state and fds alone', () => {
  const { dev, irq } = setup();
  const { mine, theirs } = eventfds(2);
  const cases: [string, Parameters<IrqController['setIrqs']>[0], number[]][] = [
    ['index = num_irqs', { flags: TRIG_EVENTFD, index: 5, start: 0, count: 1 }, theirs.slice(0, 1)],
    [
      'MASK|UNMASK',
      { flags: F.DATA_NONE | F.ACTION_MASK | F.ACTION_UNMASK, index: MSIX, start: 0, count: 1 },
      [],
    ],
    ['no ACTION', { flags: F.DATA_NONE, index: MSIX, start: 0, count: 1 }, []],
    [
      'NONE|BOOL',
      {
        flags: F.DATA_NONE | F.DATA_BOOL | F.ACTION_TRIGGER,
        index: MSIX,
        start: 0,
        count: 1,
        data: new Uint8Array(1),
      },
      [],
    ],
    ['no DATA', { flags: F.ACTION_TRIGGER, index: MSIX, start: 0, count: 1 }, []],
    ['start N-1 count 2', { flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSIX, start: 7, count: 2 }, []],
    ['start N+1', { flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSIX, start: 9, count: 1 }, []],
    ['overflow', { flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSIX, start: 284, count: 0xffffffff }, []],
    ['MASK on ERR', { flags: F.DATA_NONE | F.ACTION_MASK, index: ERR, start: 0, count: 1 }, []],
    ['MASK on REQ', { flags: F.DATA_NONE | F.ACTION_MASK, index: REQ, start: 0, count: 1 }, []],
    ['TRIGGER count 2 on ERR', { flags: F.DATA_NONE | F.ACTION_TRIGGER, index: ERR, start: 0, count: 2 }, []],
    ['count 0 start 1', { flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSIX, start: 1, count: 0 }, []],
    ['count 0 with MASK', { flags: F.DATA_NONE | F.ACTION_MASK, index: MSIX, start: 0, count: 0 }, []],
    [
      'count 0 with BOOL',
      { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: MSIX, start: 0, count: 0, data: new Uint8Array(0) },
      [],
    ],
    [
      'BOOL with an fd',
      { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: MSIX, start: 0, count: 1, data: new Uint8Array(1) },
      theirs.slice(0, 1),
    ],
    [
      'NONE with an fd',
      { flags: F.DATA_NONE | F.ACTION_TRIGGER, index: MSIX, start: 0, count: 1 },
      theirs.slice(0, 1),
    ],
    ['EVENTFD count 2, 1 fd', { flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 2 }, theirs.slice(0, 1)],
    [
      'BOOL count 2, 1 byte',
      { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: MSIX, start: 0, count: 2, data: new Uint8Array(1) },
      [],
    ],
    [
      'BOOL count 2, 3 bytes',
      { flags: F.DATA_BOOL | F.ACTION_TRIGGER, index: MSIX, start: 0, count: 2, data: new Uint8Array(3) },
      [],
    ],
    ['unknown flag', { flags: TRIG_EVENTFD | 0x40, index: MSIX, start: 0, count: 1 }, theirs.slice(0, 1)],
  ];
  const fds0 = native.openFds();
  for (const [what, p, fds] of cases) {
    try {
      irq.setIrqs(p, fds);
      assert.unreachable(`${what} should fail`);
    } catch (err) {
      assert.instance(err, IrqError, what);
      assert.is((err as IrqError).errno, E.EINVAL, what);
    }
  }
  assert.is(native.openFds(), fds0, 'no fd taken or closed');
  for (let v = 0; v < 8; v++) assert.not.ok(irq.isEnabled(MSIX, v));
  closeAll([...mine, ...theirs]);
  dev.close();
});

test('reset() closes every eventfd and watcher and clears masks', () => {
  const { dev, irq } = setup();
  const fds0 = native.openFds();
  const a = eventfds(8);
  const r = eventfds(1);
  irq.setIrqs({ flags: TRIG_EVENTFD, index: MSIX, start: 0, count: 8 }, a.theirs);
  irq.setIrqs({ flags: F.DATA_EVENTFD | F.ACTION_UNMASK, index: INTX, start: 0, count: 1 }, r.theirs);
  irq.setIrqs({ flags: F.DATA_NONE | F.ACTION_MASK, index: MSIX, start: 0, count: 8 }, []);
  irq.reset();
  assert.is(native.openFds(), fds0 + 9, 'only the test copies remain');
  assert.equal(irq.state(MSIX, 0), { enabled: false, masked: false, pending: false });
  closeAll([...a.mine, ...r.mine]);
  assert.is(native.openFds(), fds0);
  dev.close();
});

test.run();
