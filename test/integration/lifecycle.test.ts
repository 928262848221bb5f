// Disconnects and reconnects: a client that dies mid-message, a new client that finds the device state kept but
// the old DMA maps and IRQ eventfds gone, and no fd left behind in the (in-process) server after all of it.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory, VfioUserClient } from 'vfio-user-client';
import { openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import { Command, encodeMessage, MsgFlags } from 'vfio-user-protocol';
import { sleep, until } from '../lib/wait.js';
import { readU32, Scratch, ScratchDevice, startServer, u32, u64 } from './helpers.js';

const MSIX = 2;

test('disconnect mid-message, reconnect: device state kept, maps and IRQ fds dropped, no fd leaks', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const baseline = await openFdsSettled();

  // First client: a scratch value, an fd map, eventfds, a region fd and a mapping.
  const a = await VfioUserClient.connect(s.path);
  await a.negotiate();
  await a.regionWrite(0, 0x30n, u32(0xfeedbeef));
  const mem = GuestMemory.create(0x10000);
  await a.mapMemory(mem, { address: 0x100000n });
  await a.enableEventfds(MSIX, 0, 4);
  const bar2 = await a.getRegionInfo(2);
  a.mmapRegion(bar2, bar2.sparseAreas![0]);
  assert.is(s.server.dma.stats.maps, 1);
  const withA = await openFdsSettled();
  assert.ok(withA > baseline);

  // Die in the middle of a REGION_WRITE: a header announcing 16 + 16 + 8 bytes, and only 20 of them.
  const msg = encodeMessage(
    { id: 99, command: Command.REGION_WRITE, flags: MsgFlags.TYPE_COMMAND },
    new Uint8Array([...u64(0x30n), ...u32(0), ...u32(8), 1, 2, 3, 4, 5, 6, 7, 8]),
  );
  a.sendRaw(msg.subarray(0, 20));
  await sleep(10);
  a.close();
  mem.close();
  await until(() => !s.server.clients.active, 2000, 'the server to notice the disconnect');
  assert.is(dev.detaches, 1);
  assert.is(
    await openFdsBackTo(baseline),
    baseline,
    'the server closed the DMA fd, the eventfds and everything else',
  );

  // Second client: the scratch register survived (the partial write was never applied), the old state did not.
  const b = await VfioUserClient.connect(s.path);
  await b.negotiate();
  assert.is(dev.attaches, 2);
  assert.is(readU32(await b.regionRead(0, 0x30n, 4)), 0xfeedbeef);
  assert.is(s.server.dma.stats.unmaps, 1, 'the old map was dropped');
  // The device cannot reach the old IOVA any more...
  await b.regionWrite(0, BigInt(Scratch.DMA_SRC), u64(0x100000n));
  await b.regionWrite(0, BigInt(Scratch.DMA_DST), u64(0x100010n));
  await b.regionWrite(0, BigInt(Scratch.DMA_COUNT), u32(4));
  await b.regionWrite(0, BigInt(Scratch.DMA_CMD), u32(1));
  await until(() => dev.dmaStatus !== 1);
  assert.ok(dev.dmaStatus & 0x80, 'DMA to a map of the previous client fails');
  // ...and the same range can be mapped again (MAP-30).
  const mem2 = GuestMemory.create(0x10000);
  await b.mapMemory(mem2, { address: 0x100000n });
  // The old eventfds are gone: a trigger finds no eventfd until the new client sets its own.
  await b.regionWrite(0, BigInt(Scratch.IRQ_RAISE), u32((MSIX << 16) | 1));
  assert.is(readU32(await b.regionRead(0, BigInt(Scratch.IRQ_RESULT), 4)), 0);
  const [e] = await b.enableEventfds(MSIX, 1, 1);
  await b.regionWrite(0, BigInt(Scratch.IRQ_RAISE), u32((MSIX << 16) | 1));
  await e!.wait(1);
  b.close();
  mem2.close();
  await until(() => !s.server.clients.active);
  assert.is(await openFdsBackTo(baseline), baseline);
  await s.close();
});

test('a client that disconnects while the server awaits its DMA reply: cleanup, next client served', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const baseline = await openFdsSettled();
  const a = await VfioUserClient.connect(s.path);
  await a.negotiate();
  let asked = 0;
  // Never answer: the read stays in flight on the server.
  a.setDmaHandler({
    read: () => {
      asked++;
      return new Promise<Uint8Array>(() => {});
    },
    write: () => undefined,
  });
  await a.dmaMap({ address: 0x10000n, size: 0x1000n });
  await a.regionWrite(0, BigInt(Scratch.DMA_SRC), u64(0x10000n));
  await a.regionWrite(0, BigInt(Scratch.DMA_DST), u64(0x10800n));
  await a.regionWrite(0, BigInt(Scratch.DMA_COUNT), u32(16));
  await a.regionWrite(0, BigInt(Scratch.DMA_CMD), u32(1));
  await until(() => asked === 1, 2000, 'the server DMA_READ');
  // The server still answers commands while its DMA waits (no deadlock on one socket).
  assert.is(readU32(await a.regionRead(0, BigInt(Scratch.DMA_STATUS), 4)), 1);
  a.close();
  await until(() => dev.dmaStatus !== 1, 2000, 'the abandoned DMA to fail');
  assert.ok(dev.dmaStatus & 0x80);
  const b = await VfioUserClient.connect(s.path);
  await b.negotiate();
  assert.is((await b.getDeviceInfo()).numRegions, 9);
  b.close();
  await until(() => !s.server.clients.active);
  assert.is(await openFdsBackTo(baseline), baseline);
  await s.close();
});

test('a second client waits until the first leaves, then gets the device', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const a = await VfioUserClient.connect(s.path);
  await a.negotiate();
  const b = await VfioUserClient.connect(s.path, { timeoutMs: 3000 });
  const pb = b.negotiate();
  await until(() => s.server.clients.waiting === 1, 2000, 'the second client to be parked');
  await a.regionWrite(0, 0n, u32(7));
  a.close();
  await pb;
  assert.is(readU32(await b.regionRead(0, 0n, 4)), 7);
  b.close();
  await s.close();
});

test('the server going away rejects pending requests with a connection error', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const c = await VfioUserClient.connect(s.path);
  await c.negotiate();
  const closed = c.whenClosed();
  await s.close();
  await closed;
  await c.getDeviceInfo().then(
    () => assert.unreachable(),
    (e) => assert.is((e as Error).name, 'ConnectionClosedError'),
  );
  c.close();
});

test.run();
