// GET_REGION_INFO (argsz two-phase, caps, fd, mmap), GET_IRQ_INFO, eventfd IRQs signalled by the peer, and fd
// ownership through all of it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, eventfdWrite, memfdCreate, openFdsBackTo, openFdsSettled, pwrite } from 'vfio-user-native';
import { ProtocolViolationError } from '../src/index.js';
import { concat, dv, le, negotiated } from './fake-peer.js';

const REGION_INFO = 5;
const IRQ_INFO = 7;
const SET_IRQS = 8;

/** A region-info payload: 32-byte info + a sparse cap (areas) + a type cap. */
function regionInfoWithCaps(index: number, size: bigint, offset: bigint, areas: [bigint, bigint][]) {
  const sparseLen = 16 + 16 * areas.length;
  const full = 32 + sparseLen + 16;
  const info = le([4, full], [4, 0x1 | 0x2 | 0x4 | 0x8], [4, index], [4, 32], [8, size], [8, offset]);
  const sparse = concat(
    le([2, 1], [2, 1], [4, 32 + sparseLen], [4, areas.length], [4, 0]),
    ...areas.map(([o, s]) => le([8, o], [8, s])),
  );
  const type = le([2, 2], [2, 1], [4, 0], [4, 0x8086], [4, 7]);
  return concat(info, sparse, type);
}

test('GET_REGION_INFO: argsz 32 first, then the full argsz; caps, fd and mmap', async () => {
  const before = await openFdsSettled();
  const { client, peer } = await negotiated();
  const memfd = memfdCreate('bar', 0x4000);
  pwrite(memfd, Buffer.from([0x11, 0x22, 0x33, 0x44]), 0x1000n + 0x1000n);
  const full = regionInfoWithCaps(2, 0x3000n, 0x1000n, [
    [0x1000n, 0x1000n],
    [0x2000n, 0x1000n],
  ]);
  const p = client.getRegionInfo(2);
  const m1 = await peer.expect(REGION_INFO);
  assert.is(m1.size, 48);
  assert.equal([dv(m1.payload).getUint32(0, true), dv(m1.payload).getUint32(8, true)], [32, 2]);
  // Truncated reply: only the 32-byte info, CAPS cleared, argsz = the full size (as libvfio-user does).
  const trunc = full.slice(0, 32);
  dv(trunc).setUint32(4, 0x7, true);
  dv(trunc).setUint32(12, 0, true);
  peer.reply(m1, trunc);
  const m2 = await peer.expect(REGION_INFO);
  assert.is(dv(m2.payload).getUint32(0, true), full.length);
  peer.reply(m2, full, [memfd]);
  closeFd(memfd);
  const info = await p;
  assert.is(info.roundTrips, 2);
  assert.is(info.size, 0x3000n);
  assert.is(info.offset, 0x1000n);
  assert.equal(info.sparseAreas, [
    { offset: 0x1000n, size: 0x1000n },
    { offset: 0x2000n, size: 0x1000n },
  ]);
  assert.equal(info.type, { type: 0x8086, subtype: 7 });
  assert.equal(
    info.caps.map((c) => c.id),
    [1, 2],
  );
  assert.ok(info.fd !== undefined);
  const map = client.mmapRegion(info, info.sparseAreas![0]);
  assert.equal([...map.bytes.subarray(0, 4)], [0x11, 0x22, 0x33, 0x44]);
  map.bytes[4] = 0x55; // shared with the "server"
  assert.is(client.ownedResources.mappings, 1);
  client.close();
  peer.close();
  assert.equal(client.ownedResources, { regionFds: 0, mappings: 0, irqEventfds: 0 });
  assert.is(await openFdsBackTo(before), before);
});

test('GET_REGION_INFO: a reply that fits needs one round trip; CAPS with cap_offset 0 is refused (QEMU)', async () => {
  const { client, peer } = await negotiated();
  const p = client.getRegionInfo(7);
  peer.reply(await peer.expect(REGION_INFO), le([4, 32], [4, 3], [4, 7], [4, 0], [8, 256n], [8, 0n]));
  const info = await p;
  assert.equal([info.roundTrips, info.size, info.flags, info.caps.length], [1, 256n, 3, 0]);
  const q = client.getRegionInfo(0, { argsz: 64 });
  peer.reply(await peer.expect(REGION_INFO), le([4, 64], [4, 0xf], [4, 0], [4, 0], [8, 4096n], [8, 0n]));
  await q.then(
    () => assert.unreachable(),
    (e) => assert.instance(e, ProtocolViolationError),
  );
  assert.not.ok(client.closed, 'a malformed body fails the call, not the connection');
  client.close();
  peer.close();
});

test('GET_IRQ_INFO layout', async () => {
  const { client, peer } = await negotiated();
  const p = client.getIrqInfo(3);
  const m = await peer.expect(IRQ_INFO);
  assert.equal([m.size, dv(m.payload).getUint32(0, true), dv(m.payload).getUint32(8, true)], [32, 16, 3]);
  peer.reply(m, le([4, 16], [4, 0x9], [4, 3], [4, 1]));
  assert.equal(await p, { argsz: 16, flags: 9, index: 3, count: 1 });
  client.close();
  peer.close();
});

test('enableEventfds: the client watches the eventfds it sent and counts signals', async () => {
  const before = await openFdsSettled();
  const { client, peer } = await negotiated({ max_msg_fds: 2 });
  const p = client.enableEventfds(2, 0, [true, true, -1, true]);
  const ms = [await peer.expect(SET_IRQS), await peer.expect(SET_IRQS), await peer.expect(SET_IRQS)];
  assert.equal(
    ms.map((m) => [dv(m.payload).getUint32(12, true), dv(m.payload).getUint32(16, true), m.fds.length]),
    [
      [0, 2, 2],
      [2, 1, 0],
      [3, 1, 1],
    ],
  );
  for (const m of ms) peer.reply(m);
  const efds = await p;
  assert.is(efds[2], undefined);
  // The "server" fires vector 1 twice and vector 3 once.
  const v1 = ms[0]!.fds[1]!;
  const v3 = ms[2]!.fds[0]!;
  eventfdWrite(v1, 1n);
  eventfdWrite(v1, 1n);
  eventfdWrite(v3, 1n);
  await efds[1]!.wait(2);
  await efds[3]!.wait(1);
  assert.is(efds[0]!.count, 0);
  assert.is(client.irqs.get(2, 1)!.count, 2);
  // Disable: DATA_NONE|TRIGGER count 0; our eventfds are closed.
  const d = client.disableIrqs(2);
  const dm = await peer.expect(SET_IRQS);
  assert.equal([dv(dm.payload).getUint32(4, true), dv(dm.payload).getUint32(16, true)], [0x21, 0]);
  peer.reply(dm);
  await d;
  assert.is(client.irqs.openCount, 0);
  client.close();
  peer.close();
  assert.is(await openFdsBackTo(before), before);
});

test('a failed SET_IRQS closes the eventfds it created', async () => {
  const before = await openFdsSettled();
  const { client, peer } = await negotiated();
  const p = client.enableEventfds(1, 0, 2);
  peer.replyError(await peer.expect(SET_IRQS), 22);
  await p.then(
    () => assert.unreachable(),
    (e) => assert.is((e as { errno: number }).errno, 22),
  );
  assert.is(client.irqs.openCount, 0);
  peer.closeReceivedFds();
  client.close();
  peer.close();
  assert.is(await openFdsBackTo(before), before);
});

test.run();
