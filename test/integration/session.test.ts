// Client <-> server over a real UNIX socket: negotiation variants, device/region/IRQ info, region I/O by message
// and through mmap, pipelining and posted writes, chunking by the server's limits.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { NegotiationError, QEMU_VERSION_JSON, VfioUserClient, VfioUserError } from 'vfio-user-client';
import { Command, encodeVersionRequest } from 'vfio-user-protocol';
import { readU32, Scratch, ScratchDevice, startServer, type TestServer, u32 } from './helpers.js';

async function withServer(
  fn: (s: TestServer, dev: ScratchDevice) => Promise<void>,
  opts: Parameters<typeof startServer>[1] = {},
) {
  const dev = new ScratchDevice();
  const s = await startServer(dev, opts);
  try {
    await fn(s, dev);
  } finally {
    await s.close();
  }
}

test('QEMU-shaped negotiation: 214-byte request, reply within QEMU limits and <= 214 bytes', () =>
  withServer(async (s) => {
    const c = await VfioUserClient.connect(s.path);
    const r = await c.negotiate({
      capabilities: new TextEncoder().encode(`${QEMU_VERSION_JSON}\0`),
      qemuLimits: true,
    });
    assert.is(r.major, 0);
    assert.is(r.minor, 0);
    assert.ok(r.replySize <= 214, `reply of ${r.replySize} bytes`);
    assert.is(r.capabilities.maxMsgFds, 16);
    assert.is(r.capabilities.maxDataXferSize, 1048576);
    assert.is(r.capabilities.present.includes('twin_socket'), false, 'not offered by QEMU, so not enabled');
    assert.equal(r.warnings, []);
    c.close();
  }));

test('negotiation variants: minor above the server, no JSON, twin socket, a wrong major', () =>
  withServer(async (s) => {
    const a = await VfioUserClient.connect(s.path);
    const ra = await a.negotiate({ minor: 99 });
    assert.ok(ra.minor <= 99);
    assert.ok(ra.json !== undefined, 'the server always sends JSON');
    assert.is((await a.getDeviceInfo()).numRegions, 9);
    a.close();

    // No JSON at all: the server's reply must fit our 20-byte request (its choice: no JSON either), so the
    // spec's defaults apply to it, max_msg_fds 1 among them: eventfds then go one per SET_IRQS.
    const b = await VfioUserClient.connect(s.path);
    const rb = await b.negotiate({ capabilities: null });
    assert.ok(
      rb.replySize <= 20 || rb.capabilities.present.includes('max_msg_fds'),
      `reply of ${rb.replySize} bytes`,
    );
    let setIrqs = 0;
    b.onOutbound((m) => {
      if (m.header.command === Command.DEVICE_SET_IRQS) setIrqs++;
    });
    await b.enableEventfds(2, 0, 3);
    assert.is(setIrqs, b.serverCaps.maxMsgFds === 1 ? 3 : 1);
    b.close();

    const t = await VfioUserClient.connect(s.path);
    const rt = await t.negotiate({ twinSocket: true });
    assert.ok(rt.twinSocket, 'twin socket accepted');
    assert.ok(t.conn.hasTwin);
    assert.is((await t.getIrqInfo(2)).count, Scratch.MSIX_VECTORS);
    t.close();

    const w = await VfioUserClient.connect(s.path);
    const reply = await w.request(Command.VERSION, encodeVersionRequest({ major: 1, minor: 0 }));
    assert.is(reply.header.flags, 0x21);
    assert.is(reply.header.error, 22);
    await w.whenClosed();
    w.close();
  }));

test('strict negotiation catches limits the server advertises beyond QEMU (max_msg_fds 17)', () =>
  withServer(
    async (s) => {
      const c = await VfioUserClient.connect(s.path);
      try {
        await c.negotiate({ qemuLimits: true });
        assert.unreachable('should refuse');
      } catch (e) {
        assert.instance(e, NegotiationError);
        assert.match((e as Error).message, /max_msg_fds 17/);
      }
      c.close();
      const d = await VfioUserClient.connect(s.path);
      const r = await d.negotiate();
      assert.is(r.capabilities.maxMsgFds, 17);
      d.close();
    },
    { maxMsgFds: 17 },
  ));

test('device, region and IRQ info; region I/O on BAR0 and config', () =>
  withServer(async (s) => {
    const c = await VfioUserClient.connect(s.path);
    await c.negotiate();
    const info = await c.getDeviceInfo();
    assert.equal(info, { argsz: 16, flags: 3, numRegions: 9, numIrqs: 5 });
    const bar0 = await c.getRegionInfo(0);
    assert.equal([bar0.size, bar0.flags, bar0.fd, bar0.roundTrips], [0x1000n, 3, undefined, 1]);
    const absent = await c.getRegionInfo(1);
    assert.is(absent.size, 0n);
    const intx = await c.getIrqInfo(0);
    assert.equal([intx.flags, intx.count], [7, 1]);
    await c.regionWrite(0, 0x10n, u32(0xcafef00d));
    assert.is(readU32(await c.regionRead(0, 0x10n, 4)), 0xcafef00d);
    const cfg = await c.regionRead(7, 0n, 256);
    assert.is(cfg[0] | (cfg[1]! << 8), 0x1b36);
    await c.regionRead(0, 0x1000n, 4).then(
      () => assert.unreachable(),
      (e) => assert.is((e as VfioUserError).errno, 22),
    );
    await c.getRegionInfo(42).then(
      () => assert.unreachable(),
      (e) => assert.instance(e, VfioUserError),
    );
    c.close();
  }));

test('sparse-mmap region: two round trips for the caps, one fd, mmap and messages see the same bytes', () =>
  withServer(async (s, dev) => {
    const c = await VfioUserClient.connect(s.path);
    await c.negotiate();
    const info = await c.getRegionInfo(2);
    assert.is(info.roundTrips, 2, 'the caps do not fit 32 bytes');
    assert.is(info.argsz, 32 + 16 + 32);
    assert.ok(info.fd !== undefined);
    assert.equal(info.sparseAreas, [
      { offset: 0x1000n, size: 0x1000n },
      { offset: 0x3000n, size: 0x1000n },
    ]);
    const area = c.mmapRegion(info, info.sparseAreas![1]);
    // Store through the client's mapping; the device sees it; REGION_READ returns it.
    area.bytes.set([1, 2, 3, 4], 0x10);
    assert.equal([...dev.bar2bytes.subarray(0x3010, 0x3014)], [1, 2, 3, 4]);
    assert.equal([...(await c.regionRead(2, 0x3010n, 4))], [1, 2, 3, 4]);
    // REGION_WRITE into the mapped area shows up in the client's mapping.
    await c.regionWrite(2, 0x3020n, Uint8Array.of(9, 8, 7));
    assert.equal([...area.bytes.subarray(0x20, 0x23)], [9, 8, 7]);
    // The trapped page is reachable by message only.
    await c.regionWrite(2, 0x0n, Uint8Array.of(0x42));
    assert.is(dev.bar2bytes[0], 0x42);
    assert.is(c.ownedResources.mappings, 1);
    c.close();
    assert.equal(c.ownedResources, { regionFds: 0, mappings: 0, irqEventfds: 0 });
  }));

test('pipelined requests and posted writes are processed in order', () =>
  withServer(async (s) => {
    const c = await VfioUserClient.connect(s.path);
    await c.negotiate();
    // 64 posted writes to the same register, then one read: it must see the last (HDR-27).
    for (let i = 1; i <= 64; i++) await c.regionWrite(0, 0x20n, u32(i), { posted: true });
    assert.is(readU32(await c.regionRead(0, 0x20n, 4)), 64);
    // 256 requests in flight at once, mixed reads and writes; every read sees the write issued before it.
    const ps: Promise<unknown>[] = [];
    const reads: Promise<Uint8Array>[] = [];
    for (let i = 0; i < 128; i++) {
      ps.push(c.regionWrite(0, 0x40n, u32(i * 3)));
      reads.push(c.regionRead(0, 0x40n, 4));
    }
    assert.ok(c.conn.pendingCount >= 200, `pipelined: ${c.conn.pendingCount} in flight`);
    await Promise.all(ps);
    const got = (await Promise.all(reads)).map((b) => readU32(b));
    assert.equal(
      got,
      Array.from({ length: 128 }, (_, i) => i * 3),
    );
    c.close();
  }));

test('region I/O is chunked by the server max_data_xfer_size', () =>
  withServer(
    async (s, dev) => {
      const c = await VfioUserClient.connect(s.path);
      const r = await c.negotiate();
      assert.is(r.capabilities.maxDataXferSize, 1024);
      let reads = 0;
      let writes = 0;
      c.onOutbound((m) => {
        if (m.header.command === Command.REGION_READ) reads++;
        if (m.header.command === Command.REGION_WRITE) writes++;
      });
      const data = Uint8Array.from({ length: Scratch.BAR2_SIZE }, (_, i) => (i * 7) & 0xff);
      await c.regionWrite(2, 0n, data);
      assert.is(writes, Scratch.BAR2_SIZE / 1024);
      assert.equal(dev.bar2bytes, data);
      const back = await c.regionRead(2, 0n, Scratch.BAR2_SIZE);
      assert.is(reads, Scratch.BAR2_SIZE / 1024);
      assert.equal(back, data);
      c.close();
    },
    { maxDataXferSize: 1024 },
  ));

test('reset: device state back to power-on, maps kept', () =>
  withServer(async (s, dev) => {
    const c = await VfioUserClient.connect(s.path);
    await c.negotiate();
    await c.regionWrite(0, 0n, u32(0x1234));
    await c.reset();
    assert.is(dev.resets, 1);
    assert.is(readU32(await c.regionRead(0, 0n, 4)), 0);
    c.close();
  }));

test.run();
