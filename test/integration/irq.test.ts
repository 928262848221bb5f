// Interrupts through real eventfds: the client hands eventfds to the server with SET_IRQS (chunked by the
// server's max_msg_fds), the device triggers vectors, the client's watchers count the signals; masking holds a
// trigger pending until the unmask; INTx masks itself on every signal.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VfioUserClient } from 'vfio-user-client';
import { Command, SetIrqsFlags } from 'vfio-user-protocol';
import { sleep } from '../lib/wait.js';
import { readU32, Scratch, ScratchDevice, startServer, u32 } from './helpers.js';

const MSIX = 2;
const INTX = 0;

async function raise(c: VfioUserClient, index: number, vector: number): Promise<boolean> {
  await c.regionWrite(0, BigInt(Scratch.IRQ_RAISE), u32((index << 16) | vector));
  return readU32(await c.regionRead(0, BigInt(Scratch.IRQ_RESULT), 4)) === 1;
}

test('MSI-X eventfds: chunked by max_msg_fds, each vector signals its own eventfd', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev, { maxMsgFds: 3 });
  const c = await VfioUserClient.connect(s.path);
  await c.negotiate();
  let setIrqs = 0;
  c.onOutbound((m) => {
    if (m.header.command === Command.DEVICE_SET_IRQS) {
      setIrqs++;
      assert.ok(m.fds.length <= 3, `${m.fds.length} fds in one message`);
    }
  });
  // vectors 0..7: all but 4 get an eventfd -> runs [0-2] [3] [4 = -1] [5-7]
  const efds = await c.enableEventfds(MSIX, 0, [true, true, true, true, false, true, true, true]);
  assert.is(setIrqs, 4);
  for (const v of [0, 3, 5, 7]) assert.ok(await raise(c, MSIX, v), `vector ${v} signalled`);
  assert.ok(await raise(c, MSIX, 7));
  await efds[0]!.wait(1);
  await efds[3]!.wait(1);
  await efds[7]!.wait(2);
  assert.not.ok(await raise(c, MSIX, 4), 'no eventfd on vector 4: dropped');
  await sleep(20);
  assert.equal(
    efds.map((e) => e?.count),
    [1, 0, 0, 1, undefined, 1, 0, 2],
  );
  // De-assign vector 0 alone; the others keep working.
  await c.setIrqs({
    index: MSIX,
    flags: SetIrqsFlags.DATA_EVENTFD | SetIrqsFlags.ACTION_TRIGGER,
    start: 0,
    count: 1,
    fds: [-1],
  });
  assert.not.ok(await raise(c, MSIX, 0));
  assert.ok(await raise(c, MSIX, 1));
  await efds[1]!.wait(1);
  c.close();
  await s.close();
});

test('masking: a trigger on a masked vector is held pending and fires on unmask', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const c = await VfioUserClient.connect(s.path);
  await c.negotiate();
  const [e] = await c.enableEventfds(MSIX, 2, 1);
  await c.maskIrqs(MSIX, 2, 1);
  assert.not.ok(await raise(c, MSIX, 2), 'masked: not signalled');
  await sleep(20);
  assert.is(e!.count, 0);
  await c.unmaskIrqs(MSIX, 2, 1);
  await e!.wait(1);
  assert.is(e!.count, 1, 'the pending trigger fired once on unmask');
  assert.ok(await raise(c, MSIX, 2));
  await e!.wait(2);
  // The client can fire a vector itself (DATA_NONE|TRIGGER).
  await c.triggerIrqs(MSIX, 2, 1);
  await e!.wait(3);
  c.close();
  await s.close();
});

test('INTx is automasked: one signal per unmask', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const c = await VfioUserClient.connect(s.path);
  await c.negotiate();
  const [e] = await c.enableEventfds(INTX, 0, 1);
  assert.ok(await raise(c, INTX, 0));
  await e!.wait(1);
  assert.not.ok(await raise(c, INTX, 0), 'masked by the first signal');
  await sleep(20);
  assert.is(e!.count, 1);
  await c.unmaskIrqs(INTX, 0, 1); // the guest's EOI, as QEMU sends it under TCG (NONE|UNMASK)
  await e!.wait(2);
  // Disable the whole index: our eventfds close, triggers are dropped.
  await c.disableIrqs(INTX);
  assert.is(c.irqs.openCount, 0);
  await c.unmaskIrqs(INTX, 0, 1);
  assert.not.ok(await raise(c, INTX, 0));
  c.close();
  await s.close();
});

test('the device DMA completion interrupt arrives on the eventfd', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const c = await VfioUserClient.connect(s.path);
  await c.negotiate();
  const [done] = await c.enableEventfds(MSIX, Scratch.DONE_VECTOR, 1);
  await c.regionWrite(0, BigInt(Scratch.DMA_COUNT), u32(0));
  await c.regionWrite(0, BigInt(Scratch.DMA_CMD), u32(1));
  await done!.wait(1);
  c.close();
  await s.close();
});

test.run();
