// The public device API beyond registers, through a real client and server: DMA map/unmap events reach the
// device (with quiesce first), zero-copy views of guest memory exist exactly for memfds sealed against
// shrinking, device-specific regions from index 9 (with their TYPE capability), and a device that answers region
// accesses asynchronously still gets its replies in arrival order.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { VfioUserClient } from 'vfio-user-client';
import { addSeals, closeFd, F_SEAL_SHRINK, memfdCreate, pwrite } from 'vfio-user-native';
import {
  type DeviceContext,
  type DmaRegionInfo,
  PciDevice,
  type PciDeviceModel,
  type VfioUserDevice,
} from 'vfio-user-server';
import { sleep } from '../lib/wait.js';
import { startServer } from './helpers.js';

class Watcher implements PciDeviceModel {
  readonly events: string[] = [];
  ctx: DeviceContext | undefined;
  readonly pci = new PciDevice(
    {
      vendorId: 0x1234,
      deviceId: 0x0042,
      classCode: 0xff0000,
      bars: [{ size: 4096 }],
      regions: [
        {
          size: 16,
          type: { type: 0x80001234, subtype: 7 },
          read: (offset, count) => this.vendor.slice(Number(offset), Number(offset) + count),
          write: (offset, data) => this.vendor.set(data, Number(offset)),
        },
        { size: 4096, read: (_o, count) => new Uint8Array(count).fill(0x5a) },
      ],
    },
    this,
  );
  readonly vendor = new Uint8Array(16);
  attach(ctx: DeviceContext): void {
    this.ctx = ctx;
  }
  detach(): void {
    this.ctx = undefined;
  }
  dmaMapped(r: DmaRegionInfo): void {
    this.events.push(`map ${r.iova.toString(16)}+${r.size.toString(16)} zeroCopy=${r.zeroCopy}`);
  }
  async dmaUnmapped(r: DmaRegionInfo): Promise<void> {
    await sleep(5);
    this.events.push(`unmap ${r.iova.toString(16)}`);
  }
  quiesce(): void {
    this.events.push('quiesce');
  }
}

test('DMA events, quiesce, zero-copy views only for shrink-sealed memfds', async () => {
  const model = new Watcher();
  const s = await startServer(model.pci);
  const sealed = memfdCreate('sealed', 0x2000);
  addSeals(sealed, F_SEAL_SHRINK);
  const plain = memfdCreate('plain', 0x2000);
  const c = await VfioUserClient.connect(s.path);
  try {
    await c.negotiate();
    await c.dmaMap({ address: 0x100000n, size: 0x2000n, fd: sealed });
    await c.dmaMap({ address: 0x200000n, size: 0x2000n, fd: plain });
    await c.dmaMap({ address: 0x300000n, size: 0x1000n }); // fd-less: DMA messages
    assert.equal(model.events, [
      'map 100000+2000 zeroCopy=true',
      'map 200000+2000 zeroCopy=false',
      'map 300000+1000 zeroCopy=false',
    ]);
    const dma = model.ctx!.dma;
    // A view is the guest's memory itself: the client's pwrite shows through, and a write through it lands.
    pwrite(sealed, new Uint8Array([1, 2, 3, 4]), 0x0ffen);
    const views = dma.views!(0x100ffen, 4, 'write')!;
    assert.equal(
      views.map((v) => [...v]),
      [[1, 2, 3, 4]],
    );
    views[0]!.set([9, 9], 2);
    assert.equal([...(await dma.read(0x100ffen, 4))], [1, 2, 9, 9]);
    // Not for unsealed files (could shrink under us: SIGBUS) nor for fd-less memory: copy instead.
    assert.is(dma.views!(0x200000n, 16, 'read'), undefined);
    assert.is(dma.views!(0x300000n, 16, 'read'), undefined);
    // Coverage is checked like read/write.
    assert.throws(() => dma.views!(0x101ff0n, 32, 'read'), /not mapped/);
    await c.dmaUnmap({ address: 0x100000n, size: 0x2000n });
    assert.equal(model.events.slice(3), ['quiesce', 'unmap 100000']);
    // The region is gone from the access API. A view the device kept past dmaUnmapped is never dangling (the
    // file's mapping may stay cached, see docs/dma-address-space.md), but it is the device's to drop there.
    assert.throws(() => dma.views!(0x100ffen, 4, 'read'), /not mapped/);
    await c.reset();
    assert.equal(model.events.at(-1), 'quiesce');
  } finally {
    c.close();
    await s.close();
    closeFd(sealed);
    closeFd(plain);
  }
  // Disconnect unmaps the rest: each region is reported once.
  assert.ok(
    model.events.includes('unmap 200000') && model.events.includes('unmap 300000'),
    model.events.join(),
  );
});

test('device-specific regions from index 9, with the TYPE capability', async () => {
  const model = new Watcher();
  const s = await startServer(model.pci);
  const c = await VfioUserClient.connect(s.path);
  try {
    await c.negotiate();
    assert.is((await c.getDeviceInfo()).numRegions, 11);
    const r9 = await c.getRegionInfo(9);
    assert.is(r9.size, 16n);
    assert.equal(r9.type, { type: 0x80001234, subtype: 7 });
    await c.regionWrite(9, 4n, new Uint8Array([7, 8]));
    assert.equal([...(await c.regionRead(9, 3n, 4))], [0, 7, 8, 0]);
    const r10 = await c.getRegionInfo(10);
    assert.is(r10.flags & 0x3, 0x1, 'read-only');
    assert.equal([...(await c.regionRead(10, 100n, 3))], [0x5a, 0x5a, 0x5a]);
    await c.regionWrite(10, 0n, new Uint8Array(1)).then(
      () => assert.unreachable('write to a read-only region'),
      (e: { errno?: number }) => assert.is(e.errno, 22),
    );
    await c.regionRead(9, 12n, 8).then(
      () => assert.unreachable('read past the end'),
      (e: { errno?: number }) => assert.is(e.errno, 22),
    );
  } finally {
    c.close();
    await s.close();
  }
});

test('asynchronous region handlers: replies keep the arrival order', async () => {
  // Region 0 answers reads after a delay that shrinks with the offset, writes at once.
  const inner = new Watcher().pci;
  const log: string[] = [];
  const device: VfioUserDevice = Object.assign(Object.create(inner) as VfioUserDevice, {
    regionRead(index: number, offset: bigint, count: number) {
      if (index !== 0) return inner.regionRead(index, offset, count);
      return new Promise<Uint8Array>((res) =>
        setTimeout(
          () => {
            log.push(`read ${offset}`);
            res(new Uint8Array(count).fill(Number(offset)));
          },
          40 - Number(offset) * 10,
        ),
      );
    },
    regionWrite(index: number, offset: bigint, data: Uint8Array) {
      if (index === 0) log.push(`write ${offset}`);
      else inner.regionWrite(index, offset, data);
    },
  });
  const s = await startServer(device);
  const c = await VfioUserClient.connect(s.path);
  try {
    await c.negotiate();
    const order: string[] = [];
    const ops = [
      c.regionRead(0, 0n, 1).then((b) => order.push(`r0=${b[0]}`)),
      c.regionWrite(0, 8n, new Uint8Array(1)).then(() => order.push('w8')),
      c.regionRead(0, 1n, 1).then((b) => order.push(`r1=${b[0]}`)),
      c.regionRead(0, 2n, 1).then((b) => order.push(`r2=${b[0]}`)),
    ];
    await Promise.all(ops);
    // The second read would finish first if the session did not wait: it does, for every later message.
    assert.equal(log, ['read 0', 'write 8', 'read 1', 'read 2']);
    assert.equal(order, ['r0=0', 'w8', 'r1=1', 'r2=2']);
  } finally {
    c.close();
    await s.close();
  }
  inner.close();
});

test.run();
