// DMA through the real server: the map/unmap rules, 65,535 live maps of one memfd, and the device reaching guest
// memory by each path (server mmap of the fd, pread/pwrite on it, DMA_READ/WRITE messages to the client), each
// checked for the bytes in the client's own memory.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory, VfioUserClient, type VfioUserError } from 'vfio-user-client';
import { openFdsBackTo, openFdsSettled } from 'vfio-user-native';
import { DmaUnmapFlags } from 'vfio-user-protocol';
import { until } from '../lib/wait.js';
import { readU32, Scratch, ScratchDevice, startServer, type TestServer, u32, u64 } from './helpers.js';

const errnoOf = (e: unknown) => (e as VfioUserError).errno;

async function expectErrno(p: Promise<unknown>, errno: number, what: string) {
  await p.then(
    () => assert.unreachable(`${what}: expected errno ${errno}`),
    (e) => assert.is(errnoOf(e), errno, what),
  );
}

async function session(opts: Parameters<typeof startServer>[1] = {}, clientOpts = {}) {
  const dev = new ScratchDevice();
  const s: TestServer = await startServer(dev, opts);
  const c = await VfioUserClient.connect(s.path, clientOpts);
  await c.negotiate();
  return { dev, s, c };
}

/** Program the device's copy engine and wait for it; returns the final status register. */
async function deviceCopy(c: VfioUserClient, src: bigint, dst: bigint, count: number): Promise<number> {
  await c.regionWrite(0, BigInt(Scratch.DMA_SRC), u64(src));
  await c.regionWrite(0, BigInt(Scratch.DMA_DST), u64(dst));
  await c.regionWrite(0, BigInt(Scratch.DMA_COUNT), u32(count));
  await c.regionWrite(0, BigInt(Scratch.DMA_CMD), u32(1));
  let status = 1;
  const t0 = Date.now();
  while (status === 1) {
    if (Date.now() - t0 > 5000) throw new Error('device DMA never finished');
    status = readU32(await c.regionRead(0, BigInt(Scratch.DMA_STATUS), 4));
  }
  return status;
}

test('DMA_MAP/UNMAP rules: overlap EEXIST, alignment EINVAL, covering and empty unmaps, bisect EINVAL, ALL', async () => {
  const { s, c } = await session();
  const mem = GuestMemory.create(0x10000);
  await c.mapMemory(mem, { address: 0x100000n, size: 0x4000 });
  await expectErrno(c.mapMemory(mem, { address: 0x102000n, size: 0x4000 }), 17, 'partial overlap');
  await expectErrno(c.mapMemory(mem, { address: 0x100000n, size: 0x4000 }), 17, 'identical re-map');
  await expectErrno(c.dmaMap({ address: 0x200800n, size: 0x1000n }), 22, 'misaligned');
  await expectErrno(c.dmaMap({ address: 0x300000n, size: 0x1000n, flags: 0 }), 22, 'neither READ nor WRITE');
  await c.mapMemory(mem, { address: 0x104000n, size: 0x1000, memoryOffset: 0x4000, withFd: false });
  await c.mapMemory(mem, { address: 0x105000n, size: 0x1000, memoryOffset: 0x5000, flags: 1 });
  assert.is(s.server.dma.stats.maps, 3);
  // A range that cuts a mapping: EINVAL, nothing removed.
  await expectErrno(c.dmaUnmap({ address: 0x101000n, size: 0x1000n }), 22, 'bisect');
  // Nothing there: fine (vIOMMU-window semantics).
  await c.dmaUnmap({ address: 0x800000n, size: 0x1000n });
  // One range covering two whole mappings and empty space.
  const echo = await c.dmaUnmap({ address: 0x104000n, size: 0x10000n });
  assert.equal(echo, { argsz: 24, flags: 0, address: 0x104000n, size: 0x10000n });
  assert.is(s.server.dma.stats.unmaps, 2);
  assert.is(c.dmaWindows.size, 1);
  await c.dmaUnmap({ address: 0n, size: 0n, flags: DmaUnmapFlags.ALL });
  assert.is(s.server.dma.stats.unmaps, 3);
  assert.is(c.dmaWindows.size, 0);
  await expectErrno(
    c.dmaUnmap({ address: 0x1000n, size: 0n, flags: DmaUnmapFlags.ALL }),
    22,
    'ALL with a range',
  );
  c.close();
  await s.close();
  mem.close();
});

test('65,535 live 4 KiB maps of one memfd, then one more (ENOSPC), then unmap-all; no fd left behind', async () => {
  const before = await openFdsSettled();
  const { s, c } = await session();
  const n = 65535;
  const mem = GuestMemory.create(n * 4096);
  const t0 = process.hrtime.bigint();
  // Pipelined in windows, as QEMU's vIOMMU path does.
  const window = 2048;
  for (let base = 0; base < n; base += window) {
    const ps: Promise<unknown>[] = [];
    for (let i = base; i < Math.min(n, base + window); i++) {
      ps.push(
        c.mapMemory(mem, { address: 0x1_0000_0000n + BigInt(i) * 4096n, memoryOffset: i * 4096, size: 4096 }),
      );
    }
    await Promise.all(ps);
  }
  const mapNs = process.hrtime.bigint() - t0;
  assert.is(c.dmaWindows.size, n);
  await expectErrno(
    c.mapMemory(mem, { address: 0x2_0000_0000n, size: 4096, memoryOffset: 0 }),
    28,
    'one more than max_dma_maps',
  );
  // The server keeps far fewer fds than maps: one file, mapped once.
  const during = await openFdsSettled();
  assert.ok(during - before < 64, `fds while mapped: ${during - before} above baseline`);
  // The device can DMA into the last page (by mmap of the one file).
  mem.write((n - 1) * 4096, Uint8Array.of(0x5a, 0xa5));
  const last = 0x1_0000_0000n + BigInt(n - 1) * 4096n;
  assert.is(await deviceCopy(c, last, last + 2n, 2), 2);
  assert.equal([...mem.read((n - 1) * 4096 + 2, 2)], [0x5a, 0xa5]);
  const t1 = process.hrtime.bigint();
  await c.dmaUnmap({ address: 0n, size: 0n, flags: DmaUnmapFlags.ALL });
  const unmapNs = process.hrtime.bigint() - t1;
  assert.is(s.server.dma.stats.unmaps, n);
  console.log(
    `  65535 pipelined DMA_MAPs: ${(Number(mapNs) / 1e6).toFixed(0)} ms (${((n * 1e9) / Number(mapNs)).toFixed(0)}/s); ` +
      `unmap-all: ${(Number(unmapNs) / 1e6).toFixed(1)} ms`,
  );
  c.close();
  await s.close();
  mem.close();
  assert.is(await openFdsBackTo(before), before);
});

for (const mapViews of [true, false]) {
  const path = mapViews ? 'mmap' : 'pread/pwrite';
  test(`device DMA through an fd map (${path}): bytes land in the client memfd, no DMA messages`, async () => {
    const { s, c } = await session({ mapViews });
    const mem = GuestMemory.create(0x5000);
    await c.mapMemory(mem, { address: 0x40000n, size: 0x4000 });
    const src = Uint8Array.from({ length: 0x1800 }, (_, i) => (i * 13 + 1) & 0xff);
    mem.write(0x100, src);
    assert.is(await deviceCopy(c, 0x40100n, 0x42000n, src.length), 2);
    assert.equal(mem.read(0x2000, src.length), src);
    assert.is(c.dmaStats.reads + c.dmaStats.writes, 0, 'no message DMA needed');
    // A read-only map: the device may read it but not write into it.
    await c.mapMemory(mem, { address: 0x80000n, size: 0x1000, memoryOffset: 0x4000, flags: 1 });
    const st = await deviceCopy(c, 0x40100n, 0x80000n, 16);
    assert.ok(st & 0x80, `write into a read-only map must fail (status 0x${st.toString(16)})`);
    assert.equal([...mem.read(0x4000, 16)], new Array(16).fill(0));
    mem.write(0x4000, Uint8Array.of(0xee));
    assert.is(await deviceCopy(c, 0x80000n, 0x40000n, 1), 2, 'reading a read-only map is fine');
    assert.is(mem.read(0, 1)[0], 0xee);
    c.close();
    await s.close();
    mem.close();
  });
}

test('device DMA into an fd-less map: the server sends DMA_READ/DMA_WRITE, chunked by our max_data_xfer_size', async () => {
  const { s, c } = await session({}, { maxDataXferSize: 4096 });
  const mem = GuestMemory.create(0x8000);
  await c.mapMemory(mem, { address: 0x10000n, withFd: false });
  const src = Uint8Array.from({ length: 10000 }, (_, i) => (i * 31 + 7) & 0xff);
  mem.write(0, src);
  assert.is(await deviceCopy(c, 0x10000n, 0x14000n, src.length), 2);
  assert.equal(mem.read(0x4000, src.length), src, 'the bytes arrived in the client memory');
  assert.is(c.dmaStats.reads, 3, '10000 bytes read as 4096 + 4096 + 1808');
  assert.is(c.dmaStats.writes, 3);
  assert.is(c.dmaStats.maxCount, 4096);
  assert.equal(
    c.dmaLog.filter((e) => e.command === 12).map((e) => [e.address, e.count]),
    [
      [0x14000n, 4096n],
      [0x15000n, 4096n],
      [0x16000n, 1808n],
    ],
  );
  // Outside every map: the client answers EFAULT and the device reports the failure.
  const st = await deviceCopy(c, 0x10000n, 0x90000n, 16);
  assert.ok(st & 0x80, `status 0x${st.toString(16)}`);
  c.close();
  await s.close();
  mem.close();
});

test('DMA between an fd map and an fd-less map, over the twin socket', async () => {
  const dev = new ScratchDevice();
  const s = await startServer(dev);
  const c = await VfioUserClient.connect(s.path);
  assert.ok((await c.negotiate({ twinSocket: true })).twinSocket);
  const mem = GuestMemory.create(0x4000);
  await c.mapMemory(mem, { address: 0x10000n, size: 0x2000 });
  await c.mapMemory(mem, { address: 0x20000n, size: 0x2000, memoryOffset: 0x2000, withFd: false });
  mem.write(0x10, Uint8Array.of(1, 2, 3, 4, 5));
  assert.is(await deviceCopy(c, 0x10010n, 0x20100n, 5), 2);
  assert.equal([...mem.read(0x2100, 5)], [1, 2, 3, 4, 5]);
  assert.is(c.dmaStats.writes, 1);
  await until(() => c.dmaLog.length > 0);
  assert.ok(
    c.dmaLog.every((e) => e.channel === 'twin'),
    'server DMA travels on the twin socket',
  );
  c.close();
  await s.close();
  mem.close();
});

test.run();
