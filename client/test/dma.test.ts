// DMA_MAP/UNMAP from the client, and the client serving the server's DMA_READ/DMA_WRITE from its own memory
// with QEMU's answers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { eventfd, openFdsBackTo, openFdsSettled, pread } from 'vfio-user-native';
import { DmaUnmapFlags } from 'vfio-user-protocol';
import { GuestMemory } from '../src/index.js';
import { concat, dv, le, msg, negotiated, sleep } from './fake-peer.js';

const DMA_MAP = 2;
const DMA_UNMAP = 3;
const DMA_READ = 11;
const DMA_WRITE = 12;

test('DMA_MAP layout, with and without fd; the fd is a live copy of the memfd', async () => {
  const mem = GuestMemory.create(0x4000);
  mem.write(0x1000, Uint8Array.of(0xab, 0xcd));
  const { client, peer } = await negotiated();
  const p = client.mapMemory(mem, { address: 0x100000n, memoryOffset: 0x1000, size: 0x2000 });
  const m = await peer.expect(DMA_MAP);
  assert.is(m.size, 48);
  const d = dv(m.payload);
  assert.equal(
    [
      d.getUint32(0, true),
      d.getUint32(4, true),
      d.getBigUint64(8, true),
      d.getBigUint64(16, true),
      d.getBigUint64(24, true),
    ],
    [32, 3, 0x1000n, 0x100000n, 0x2000n],
  );
  assert.is(m.fds.length, 1);
  assert.ok(m.fds[0] !== mem.fd, 'the peer got its own copy');
  const buf = Buffer.alloc(2);
  pread(m.fds[0]!, buf, 0x1000n);
  assert.equal([...buf], [0xab, 0xcd]);
  peer.reply(m);
  await p;
  const q = client.mapMemory(mem, { address: 0x200000n, withFd: false, flags: 1 });
  const m2 = await peer.expect(DMA_MAP);
  assert.is(m2.fds.length, 0);
  assert.is(dv(m2.payload).getUint32(4, true), 1);
  assert.is(dv(m2.payload).getBigUint64(8, true), 0n);
  peer.reply(m2);
  await q;
  assert.is(client.dmaWindows.size, 2);
  client.close();
  peer.close();
  mem.close();
});

test('dmaMap with transferFd closes the caller fd after sending; a failed map keeps no window', async () => {
  const { client, peer } = await negotiated();
  const mem = GuestMemory.create(4096);
  const before = await openFdsSettled();
  const fd = eventfd();
  const p = client.dmaMap({ address: 0n, size: 4096n, fd, transferFd: true });
  const m = await peer.expect(DMA_MAP);
  peer.replyError(m, 17);
  await p.then(
    () => assert.unreachable(),
    (e) => assert.is((e as { errno: number }).errno, 17),
  );
  peer.closeReceivedFds();
  assert.is(await openFdsBackTo(before), before);
  assert.is(client.dmaWindows.size, 0);
  client.close();
  peer.close();
  mem.close();
});

test('DMA_UNMAP: layout, echo parsed, FLAG_ALL clears every window', async () => {
  const mem = GuestMemory.create(0x3000);
  const { client, peer } = await negotiated();
  for (const a of [0x1000n, 0x2000n, 0x3000n]) {
    const p = client.mapMemory(mem, { address: a, size: 0x1000, memoryOffset: Number(a - 0x1000n) });
    peer.reply(await peer.expect(DMA_MAP));
    await p;
  }
  const u = client.dmaUnmap({ address: 0x2000n, size: 0x1000n });
  const m = await peer.expect(DMA_UNMAP);
  assert.is(m.size, 40);
  peer.reply(m, m.payload);
  const echo = await u;
  assert.equal(echo, { argsz: 24, flags: 0, address: 0x2000n, size: 0x1000n });
  assert.is(client.dmaWindows.size, 2);
  const all = client.dmaUnmap({ address: 0n, size: 0n, flags: DmaUnmapFlags.ALL });
  const ma = await peer.expect(DMA_UNMAP);
  assert.is(dv(ma.payload).getUint32(4, true), 2);
  peer.reply(ma);
  assert.is(await all, undefined, 'header-only reply accepted');
  assert.is(client.dmaWindows.size, 0);
  client.close();
  peer.close();
  mem.close();
});

async function serverDma(
  peer: Awaited<ReturnType<typeof negotiated>>['peer'],
  id: number,
  cmd: number,
  payload: Uint8Array,
  fds: number[] = [],
) {
  peer.send(msg(id, cmd, 0, payload), fds);
  return peer.next();
}

test('server DMA_READ/WRITE served from guest memory, across adjacent windows; QEMU errnos otherwise', async () => {
  const mem = GuestMemory.create(0x4000);
  const { client, peer } = await negotiated(undefined, { maxDataXferSize: 8192, strict: false });
  // Two adjacent windows backed by non-adjacent parts of the memfd, plus a read-only one.
  for (const [address, memoryOffset, flags] of [
    [0x10000n, 0x2000, 3],
    [0x11000n, 0x0, 3],
    [0x20000n, 0x3000, 1],
  ] as const) {
    const p = client.mapMemory(mem, { address, memoryOffset, size: 0x1000, flags, withFd: false });
    peer.reply(await peer.expect(DMA_MAP));
    await p;
  }
  // Write 8 bytes straddling the boundary at 0x11000.
  const data = Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8);
  let r = await serverDma(peer, 40, DMA_WRITE, concat(le([8, 0x10ffcn], [8, 8n]), data));
  assert.equal([r.id, r.command, r.flags, r.size], [40, DMA_WRITE, 1, 32]);
  assert.equal([dv(r.payload).getBigUint64(0, true), dv(r.payload).getBigUint64(8, true)], [0x10ffcn, 8n]);
  assert.equal([...mem.read(0x2ffc, 4)], [1, 2, 3, 4]);
  assert.equal([...mem.read(0, 4)], [5, 6, 7, 8]);
  r = await serverDma(peer, 41, DMA_READ, le([8, 0x10ffen], [8, 4n]));
  assert.equal([r.flags, r.size], [1, 16 + 16 + 4]);
  assert.equal([...r.payload.subarray(16)], [3, 4, 5, 6]);
  // Outside every map: EFAULT. Crossing the end of a map into nothing: EFAULT.
  r = await serverDma(peer, 42, DMA_READ, le([8, 0x30000n], [8, 4n]));
  assert.equal([r.flags, r.error], [0x21, 14]);
  r = await serverDma(peer, 43, DMA_READ, le([8, 0x11ffen], [8, 4n]));
  assert.equal([r.flags, r.error], [0x21, 14]);
  // Into a read-only map: refused.
  r = await serverDma(peer, 44, DMA_WRITE, concat(le([8, 0x20000n], [8, 1n]), Uint8Array.of(9)));
  assert.equal([r.flags, r.error], [0x21, 1]);
  assert.is(mem.read(0x3000, 1)[0], 0);
  // Reading a read-only map is fine.
  r = await serverDma(peer, 45, DMA_READ, le([8, 0x20000n], [8, 1n]));
  assert.is(r.flags, 1);
  // count above our max_data_xfer_size: E2BIG.
  r = await serverDma(peer, 46, DMA_READ, le([8, 0x10000n], [8, 8193n]));
  assert.equal([r.flags, r.error], [0x21, 7]);
  // fds attached: EINVAL (and closed).
  const before = await openFdsSettled();
  const e = eventfd();
  r = await serverDma(peer, 47, DMA_READ, le([8, 0x10000n], [8, 1n]), [e]);
  assert.equal([r.flags, r.error], [0x21, 22]);
  // Short payload / DMA_WRITE size mismatch: EINVAL.
  r = await serverDma(peer, 48, DMA_READ, le([8, 0x10000n]));
  assert.equal([r.flags, r.error], [0x21, 22]);
  r = await serverDma(peer, 49, DMA_WRITE, concat(le([8, 0x10000n], [8, 4n]), Uint8Array.of(1)));
  assert.equal([r.flags, r.error], [0x21, 22]);
  // NO_REPLY server request: performed, not answered.
  peer.send(msg(50, DMA_WRITE, 0x10, concat(le([8, 0x10000n], [8, 1n]), Uint8Array.of(0x77))));
  assert.ok(await peer.quiet(30));
  assert.is(mem.read(0x2000, 1)[0], 0x77);
  await import('vfio-user-native').then((n) => n.closeFd(e));
  assert.is(await openFdsBackTo(before), before);
  assert.is(client.dmaStats.writes, 2);
  assert.is(client.dmaStats.reads, 2);
  assert.is(client.dmaStats.errors, 7);
  assert.is(client.dmaStats.maxCount, 8193);
  assert.is(client.dmaLog.length, 11);
  // guestRead/guestWrite reach the same bytes by IOVA, across windows.
  assert.equal([...client.guestRead(0x10ffcn, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
  client.guestWrite(0x11000n, Uint8Array.of(0x99));
  assert.is(mem.read(0, 1)[0], 0x99);
  assert.throws(() => client.guestRead(0x30000n, 1), RangeError);
  assert.not.ok(client.closed, 'lenient mode survives all of it');
  client.close();
  peer.close();
  mem.close();
});

test('strict mode: a server request larger than max_data_xfer_size + header kills the connection', async () => {
  const { client, peer } = await negotiated(undefined, { maxDataXferSize: 4096 });
  const big = new Uint8Array(4097);
  peer.send(msg(1, DMA_WRITE, 0, concat(le([8, 0n], [8, 4097n]), big)));
  await client.whenClosed();
  assert.is(client.violations[0]!.kind, 'oversize-request');
  peer.close();
});

test('a custom DMA handler (async) replaces the windows', async () => {
  const { client, peer } = await negotiated();
  const writes: [bigint, number[]][] = [];
  client.setDmaHandler({
    read: async (address, count) => {
      await sleep(1);
      return address === 0xdead0000n ? new Uint8Array(count).fill(0x5a) : 14;
    },
    write: (address, data) => {
      writes.push([address, [...data]]);
      return undefined;
    },
  });
  let r = await serverDma(peer, 1, DMA_READ, le([8, 0xdead0000n], [8, 3n]));
  assert.equal([...r.payload.subarray(16)], [0x5a, 0x5a, 0x5a]);
  r = await serverDma(peer, 2, DMA_READ, le([8, 0n], [8, 3n]));
  assert.is(r.error, 14);
  r = await serverDma(peer, 3, DMA_WRITE, concat(le([8, 0x42n], [8, 2n]), Uint8Array.of(1, 2)));
  assert.is(r.flags, 1);
  assert.equal(writes, [[0x42n, [1, 2]]]);
  client.close();
  peer.close();
});

test.run();
