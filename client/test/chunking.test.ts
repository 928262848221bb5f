// The client honours the server's limits: SET_IRQS eventfds are split into runs of valid fds / -1 no longer than
// max_msg_fds (as QEMU does), region I/O is split by max_data_xfer_size, posted writes carry NO_REPLY.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, eventfd, openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import { SetIrqsFlags } from 'vfio-user-protocol';
import { VfioUserError } from '../src/index.js';
import { dv, le, negotiated, type PeerMsg, sleep } from './fake-peer.js';

const SET_IRQS = 8;
const REGION_READ = 9;
const REGION_WRITE = 10;

function irqFields(m: PeerMsg) {
  const d = dv(m.payload);
  return {
    argsz: d.getUint32(0, true),
    flags: d.getUint32(4, true),
    index: d.getUint32(8, true),
    start: d.getUint32(12, true),
    count: d.getUint32(16, true),
    nfds: m.fds.length,
  };
}

test('SET_IRQS eventfds: runs of valid fds and of -1, each <= max_msg_fds, one message each', async () => {
  const { client, peer } = await negotiated({ max_msg_fds: 3, max_data_xfer_size: 4096 });
  const mine = Array.from({ length: 6 }, () => eventfd());
  // vectors 10..: fd fd fd fd -1 -1 -1 -1 fd fd
  const fds = [mine[0]!, mine[1]!, mine[2]!, mine[3]!, -1, -1, -1, -1, mine[4]!, mine[5]!];
  const p = client.setIrqs({
    index: 2,
    flags: SetIrqsFlags.DATA_EVENTFD | SetIrqsFlags.ACTION_TRIGGER,
    start: 10,
    count: fds.length,
    fds,
  });
  const got: ReturnType<typeof irqFields>[] = [];
  for (let i = 0; i < 5; i++) {
    const m = await peer.expect(SET_IRQS);
    got.push(irqFields(m));
    assert.is(m.size, 36, 'argsz 20, no data: fds travel in SCM_RIGHTS');
    peer.reply(m);
  }
  assert.is(await p, 5);
  assert.equal(
    got.map((g) => [g.start, g.count, g.nfds]),
    [
      [10, 3, 3],
      [13, 1, 1],
      [14, 3, 0],
      [17, 1, 0],
      [18, 2, 2],
    ],
  );
  for (const g of got) {
    assert.is(g.flags, 0x24);
    assert.is(g.index, 2);
    assert.is(g.argsz, 20);
  }
  assert.ok(await peer.quiet(30));
  for (const fd of mine) closeFd(fd);
  client.close();
  peer.close();
});

test('SET_IRQS with max_msg_fds 0 refuses to send fds; DATA_EVENTFD with no fds de-assigns in one message', async () => {
  const { client, peer } = await negotiated({ max_msg_fds: 0 });
  const e = eventfd();
  try {
    await client.setIrqs({ index: 1, flags: 0x24, start: 0, count: 1, fds: [e] });
    assert.unreachable();
  } catch (err) {
    assert.instance(err, VfioUserError);
  }
  const p = client.setIrqs({ index: 1, flags: 0x24, start: 0, count: 4, fds: [] });
  const m = await peer.expect(SET_IRQS);
  assert.equal(irqFields(m), { argsz: 20, flags: 0x24, index: 1, start: 0, count: 4, nfds: 0 });
  peer.reply(m);
  assert.is(await p, 1);
  closeFd(e);
  client.close();
  peer.close();
});

test('server max_msg_fds absent: the spec default (1) applies; QEMU default (8) on request', async () => {
  const { client, peer } = await negotiated({});
  assert.is(client.serverCaps.maxMsgFds, 1);
  const fds = [eventfd(), eventfd()];
  const p = client.setIrqs({ index: 2, flags: 0x24, start: 0, count: 2, fds });
  const a = await peer.expect(SET_IRQS);
  const b = await peer.expect(SET_IRQS);
  assert.is(a.fds.length, 1);
  assert.is(b.fds.length, 1);
  assert.is(irqFields(b).start, 1);
  peer.reply(a);
  peer.reply(b);
  await p;
  for (const fd of fds) closeFd(fd);
  client.close();
  peer.close();
});

test('DATA_BOOL carries one byte per vector', async () => {
  const { client, peer } = await negotiated();
  const p = client.setIrqs({ index: 0, flags: 0x2 | 0x8, start: 0, count: 3, bools: [true, false, true] });
  const m = await peer.expect(SET_IRQS);
  assert.is(m.size, 16 + 23);
  assert.equal([...m.payload.subarray(20)], [1, 0, 1]);
  assert.is(irqFields(m).argsz, 23);
  peer.reply(m);
  await p;
  client.close();
  peer.close();
});

test('region reads are chunked by the server max_data_xfer_size and pipelined', async () => {
  const { client, peer } = await negotiated({ max_msg_fds: 8, max_data_xfer_size: 4096 });
  const p = client.regionRead(1, 0x100n, 10000);
  const reqs: PeerMsg[] = [];
  for (let i = 0; i < 3; i++) reqs.push(await peer.expect(REGION_READ));
  // All three are in flight before the first reply: pipelined.
  const fields = reqs.map((m) => {
    const d = dv(m.payload);
    return [d.getBigUint64(0, true), d.getUint32(8, true), d.getUint32(12, true), m.size];
  });
  assert.equal(fields, [
    [0x100n, 1, 4096, 32],
    [0x100n + 4096n, 1, 4096, 32],
    [0x100n + 8192n, 1, 1808, 32],
  ]);
  for (const m of reqs) {
    const d = dv(m.payload);
    const n = d.getUint32(12, true);
    const off = Number(d.getBigUint64(0, true));
    const data = Uint8Array.from({ length: n }, (_, i) => (off + i) & 0xff);
    peer.reply(m, new Uint8Array([...m.payload, ...data]));
  }
  const out = await p;
  assert.is(out.length, 10000);
  for (let i = 0; i < 10000; i++) if (out[i] !== ((0x100 + i) & 0xff)) assert.unreachable(`byte ${i}`);
  client.close();
  peer.close();
});

test('a short REGION_READ reply fails the read; a longer count is E2BIG', async () => {
  const { client, peer } = await negotiated(undefined, { strict: false });
  const p1 = client.regionRead(0, 0n, 4);
  const m1 = await peer.expect(REGION_READ);
  peer.reply(m1, new Uint8Array([...le([8, 0n], [4, 0], [4, 2]), 1, 2]));
  await p1.then(
    () => assert.unreachable(),
    (e) => assert.is((e as { errno: number }).errno, 71),
  );
  const p2 = client.regionRead(0, 0n, 2);
  const m2 = await peer.expect(REGION_READ);
  peer.reply(m2, new Uint8Array([...le([8, 0n], [4, 0], [4, 4]), 1, 2, 3, 4]));
  await p2.then(
    () => assert.unreachable(),
    (e) => assert.is((e as { errno: number }).errno, 7),
  );
  client.close();
  peer.close();
});

test('region writes: chunked, and posted writes carry NO_REPLY and are not awaited', async () => {
  const { client, peer } = await negotiated({ max_data_xfer_size: 1000 });
  const data = Uint8Array.from({ length: 2500 }, (_, i) => i & 0xff);
  const p = client.regionWrite(2, 0x40n, data);
  const ms = [
    await peer.expect(REGION_WRITE),
    await peer.expect(REGION_WRITE),
    await peer.expect(REGION_WRITE),
  ];
  assert.equal(
    ms.map((m) => [m.size, m.flags, dv(m.payload).getBigUint64(0, true), dv(m.payload).getUint32(12, true)]),
    [
      [16 + 16 + 1000, 0, 0x40n, 1000],
      [16 + 16 + 1000, 0, 0x40n + 1000n, 1000],
      [16 + 16 + 500, 0, 0x40n + 2000n, 500],
    ],
  );
  assert.equal([...ms[2]!.payload.subarray(16, 20)], [2000 & 0xff, 2001 & 0xff, 2002 & 0xff, 2003 & 0xff]);
  for (const m of ms) peer.reply(m, m.payload.subarray(0, 16));
  await p;
  await client.regionWrite(2, 0n, Uint8Array.of(1, 2, 3, 4), { posted: true });
  const posted = await peer.expect(REGION_WRITE);
  assert.is(posted.flags, 0x10);
  assert.is(client.conn.pendingCount, 0);
  client.close();
  peer.close();
});

test('REGION_WRITE_MULTI: refused unless offered; layout; NO_REPLY by default', async () => {
  const { client, peer } = await negotiated({ write_multiple: true });
  await client.regionWriteMulti([
    { region: 0, offset: 8n, data: le([4, 0xdeadbeef]) },
    { region: 1, offset: 16n, data: le([8, 0x0102030405060708n]) },
  ]);
  const m = await peer.expect(15);
  assert.is(m.flags, 0x10);
  assert.is(m.size, 16 + 8 + 48);
  const d = dv(m.payload);
  assert.is(d.getBigUint64(0, true), 2n);
  assert.is(d.getBigUint64(8, true), 8n);
  assert.is(d.getUint32(16, true), 0);
  assert.is(d.getUint32(20, true), 4);
  assert.is(d.getUint32(24, true), 0xdeadbeef);
  assert.is(d.getUint32(44, true), 8);
  client.close();
  peer.close();
  const other = await negotiated({});
  await other.client.regionWriteMulti([{ region: 0, offset: 0n, data: Uint8Array.of(1) }]).then(
    () => assert.unreachable(),
    (e) => assert.instance(e, VfioUserError),
  );
  other.client.close();
  other.peer.close();
});

test('no fds leak across all of the above', async () => {
  await sleep(10);
  const before = await openFdsSettled();
  const { client, peer } = await negotiated({ max_msg_fds: 2 });
  const p = client.enableEventfds(2, 0, 5);
  for (let i = 0; i < 3; i++) peer.reply(await peer.expect(SET_IRQS));
  await p;
  assert.is(client.ownedResources.irqEventfds, 5);
  client.close();
  peer.close();
  assert.is(await openFdsBackTo(before), before);
});

test.run();
