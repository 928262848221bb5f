// VfioUserServer over a real socket path: start/close, one client at a time with a wait queue and its limit,
// reconnect with the device state kept and the DMA/IRQ state dropped, an inherited listening fd, stats and
// events, and the IOMMU facts reaching the advertised capabilities.

import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import {
  Command,
  decodeRegionReadReply,
  decodeVersionReply,
  encodeDeviceGetInfoRequest,
  encodeDmaMapRequest,
  encodeRegionReadRequest,
  encodeRegionWriteRequest,
  encodeSetIrqsRequest,
  parseCapabilities,
} from 'vfio-user-protocol';
import type { HostFacts, HostMapping, IommuBackend } from '../src/iommu/backend.js';
import { VfioUserServer } from '../src/server.js';
import { TestDevice } from './engine-fixtures.js';
import { isOk, RawClient } from './session-harness.js';
import { sleep, until } from './wait.js';

const dir = mkdtempSync(join(tmpdir(), 'vfio-user-server-test-'));
let n = 0;
const sockPath = () => join(dir, `s${n++}.sock`);
const u32le = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);

function connect(path: string): RawClient {
  return new RawClient(native.Connection.connect(path));
}

test('start, serve, close: the socket file appears and goes, stats and events', async () => {
  const path = sockPath();
  const device = new TestDevice();
  const server = new VfioUserServer({ socketPath: path, device });
  const events: string[] = [];
  server.on('connect', () => events.push('connect')).on('disconnect', () => events.push('disconnect'));
  await server.start();
  assert.ok(existsSync(path));
  assert.equal(server.capabilities, {
    maxMsgFds: 16,
    maxDataXferSize: 1048576,
    pgsizes: 4096,
    maxDmaMaps: 65535,
    twinSocket: true,
  });
  const c = connect(path);
  assert.ok(isOk(await c.version()));
  assert.ok(isOk(await c.request(Command.DEVICE_GET_INFO, encodeDeviceGetInfoRequest())));
  c.close();
  await until(() => events.length === 2, 2000, 'disconnect event');
  assert.equal(events, ['connect', 'disconnect']);
  assert.is(server.stats.connections, 1);
  assert.is(server.stats.messages.VERSION, 1);
  assert.is(server.stats.messages.DEVICE_GET_INFO, 1);
  await server.close();
  assert.not.ok(existsSync(path), 'socket file removed');
  assert.is(device.detaches, 1);
  assert.throws(() => native.Connection.connect(path));
});

test('reconnect: device state kept, DMA maps and IRQ fds dropped, VERSION required again', async () => {
  const path = sockPath();
  const device = new TestDevice();
  const server = new VfioUserServer({ socketPath: path, device });
  await server.start();
  const fds0 = native.openFds();
  const memfd = native.memfdCreate('guest', 0x100000);
  const a = connect(path);
  await a.version();
  await a.request(
    Command.REGION_WRITE,
    encodeRegionWriteRequest({ offset: 0x44n, region: 0, data: u32le(0xc0ffee) }),
  );
  await a.request(
    Command.DMA_MAP,
    encodeDmaMapRequest({ flags: 3, offset: 0n, address: 0x100000n, size: 0x100000n }),
    { give: [native.dupFd(memfd)] },
  );
  const e = native.eventfd();
  await a.request(
    Command.DEVICE_SET_IRQS,
    encodeSetIrqsRequest({ flags: 0x24, index: 2, start: 0, count: 1 }),
    { give: [native.dupFd(e)] },
  );
  assert.is(server.dma.size, 1);
  assert.ok(server.irq.isEnabled(2, 0));
  a.close();
  await until(() => !server.clients.active, 2000, 'session end');
  assert.is(server.dma.size, 0);
  assert.not.ok(server.irq.isEnabled(2, 0));
  assert.is(native.openFds(), fds0 + 2, 'only our memfd and eventfd');

  const b = connect(path);
  const r = await b.request(
    Command.REGION_READ,
    encodeRegionReadRequest({ offset: 0x44n, region: 0, count: 4 }),
  );
  assert.is(r.h.error, 22, 'VERSION first');
  await until(() => b.closed);
  const c = connect(path);
  await c.version();
  const rr = await c.request(
    Command.REGION_READ,
    encodeRegionReadRequest({ offset: 0x44n, region: 0, count: 4 }),
  );
  assert.equal(decodeRegionReadReply(rr.payload).data, u32le(0xc0ffee));
  assert.ok(
    isOk(
      await c.request(
        Command.DMA_MAP,
        encodeDmaMapRequest({ flags: 3, offset: 0n, address: 0x100000n, size: 0x100000n }),
        { give: [native.dupFd(memfd)] },
      ),
    ),
  );
  c.close();
  await server.close();
  native.closeFd(memfd);
  native.closeFd(e);
  assert.is(device.attaches, 2);
});

test('one client at a time: the second waits (unanswered) until the first leaves; beyond the queue limit, refused', async () => {
  const path = sockPath();
  const server = new VfioUserServer({ socketPath: path, device: new TestDevice(), maxWaiting: 1 });
  await server.start();
  const first = connect(path);
  await first.version();
  const second = connect(path);
  const secondReply = second.version();
  let answered = false;
  void secondReply.then(() => {
    answered = true;
  });
  await until(() => server.clients.waiting === 1, 2000, 'second queued');
  const third = connect(path);
  await until(() => third.closed, 2000, 'third refused');
  assert.is(third.inbox.length, 0);
  await sleep(50);
  assert.not.ok(answered, 'the waiting client gets nothing while the first is served');
  assert.ok(
    isOk(await first.request(Command.DEVICE_GET_INFO, encodeDeviceGetInfoRequest())),
    'the first is undisturbed',
  );
  first.close();
  const r = await secondReply;
  assert.ok(isOk(r));
  assert.ok(isOk(await second.request(Command.DEVICE_GET_INFO, encodeDeviceGetInfoRequest())));
  assert.is(server.stats.connections, 2);
  second.close();
  await server.close();
});

test('a queued client that gave up is handled when its turn comes', async () => {
  const path = sockPath();
  const server = new VfioUserServer({ socketPath: path, device: new TestDevice() });
  await server.start();
  const first = connect(path);
  await first.version();
  const quitter = connect(path);
  quitter.send(Command.VERSION, new Uint8Array(4));
  await until(() => server.clients.waiting === 1);
  quitter.close();
  const next = connect(path);
  await until(() => server.clients.waiting === 2);
  first.close();
  assert.ok(isOk(await next.version()));
  assert.is(server.stats.connections, 3);
  next.close();
  await server.close();
});

test('inherited listening fd (--fd N); socketPath and fd are exclusive', async () => {
  const path = sockPath();
  const l = native.Listener.listen(path);
  const fd = native.dupFd(l.fd);
  l.close({ unlink: false });
  assert.throws(() => new VfioUserServer({ socketPath: path, fd, device: new TestDevice() }), /exclusive/);
  const server = new VfioUserServer({ fd, device: new TestDevice() });
  await server.start();
  const c = connect(path);
  assert.ok(isOk(await c.version()));
  c.close();
  await server.close();
  rmSync(path, { force: true });
});

test('IOMMU facts set pgsizes, max_dma_maps and the DMA limits; the backend is closed with the server', async () => {
  const calls: string[] = [];
  const backend: IommuBackend = {
    name: 'fake-type1',
    mapsBy: 'address',
    async attach(): Promise<HostFacts> {
      return { pgsizes: 0x40201000n, iovaRanges: [{ start: 0n, last: 0xfedfffffn }], maxDmaMaps: 3 };
    },
    async map(e: HostMapping) {
      calls.push(`map 0x${e.iova.toString(16)} vaddr=${e.vaddr !== undefined}`);
    },
    async unmap() {
      calls.push('unmap');
    },
    async unmapAll() {
      calls.push('unmapAll');
    },
    async close() {
      calls.push('close');
    },
  };
  const path = sockPath();
  const server = new VfioUserServer({ socketPath: path, device: new TestDevice(), iommu: backend });
  await server.start();
  const c = connect(path);
  const v = await c.version();
  const caps = parseCapabilities(decodeVersionReply(v.payload).capabilities).caps;
  assert.is(caps.pgsizes, 0x40201000);
  assert.is(caps.maxDmaMaps, 3);
  const memfd = native.memfdCreate('guest', 0x10000);
  for (let i = 0n; i < 4n; i++) {
    const r = await c.request(
      Command.DMA_MAP,
      encodeDmaMapRequest({ flags: 3, offset: i * 0x1000n, address: i * 0x1000n, size: 0x1000n }),
      { give: [native.dupFd(memfd)] },
    );
    assert.is(r.h.error, i < 3n ? 0 : 28, `map ${i}`);
  }
  const ro = await c.request(
    Command.DMA_MAP,
    encodeDmaMapRequest({ flags: 1, offset: 0n, address: 0xc0000n, size: 0x1000n }),
  );
  assert.is(ro.h.error, 28, 'ENOSPC also for fd-less maps');
  assert.equal(calls, ['map 0x0 vaddr=true', 'map 0x1000 vaddr=true', 'map 0x2000 vaddr=true']);
  assert.is(server.mirror.stats.live, 3);
  c.close();
  await until(() => !server.clients.active);
  assert.equal(calls.slice(3), ['unmapAll']);
  await server.close();
  assert.equal(calls.slice(-1), ['close']);
  native.closeFd(memfd);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
