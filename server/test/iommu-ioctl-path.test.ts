// The synchronous fast path of the VFIO backends: which map/unmap ioctls run on the event loop (at most
// SYNC_IOCTL_MAX_SIZE) and which on the threadpool, and that a failing sync ioctl still comes back as a rejected
// promise, never as an exception (a successful sync one returns undefined: the mirror then needs no promise hop).
// Against real kernels: test/vm/mirror.test.ts.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IoctlPath, SYNC_IOCTL_MAX_SIZE } from '../src/iommu/host-device.js';
import { IommufdBackend } from '../src/iommu/iommufd.js';
import { VfioType1Backend } from '../src/iommu/vfio-type1.js';

const MiB = 1n << 20n;

test('IoctlPath: sync up to 2 MiB inclusive, threadpool above, counted', () => {
  assert.is(SYNC_IOCTL_MAX_SIZE, 2n * MiB);
  const p = new IoctlPath();
  assert.is(p.syncMaxSize, SYNC_IOCTL_MAX_SIZE);
  assert.ok(p.sync(4096n));
  assert.ok(p.sync(2n * MiB));
  assert.not.ok(p.sync(2n * MiB + 4096n));
  assert.not.ok(p.sync(1n << 30n));
  assert.equal(p.counts, { sync: 2, async: 2 });
});

test('IoctlPath: 0n sends every (non-empty) map and unmap to the threadpool; bad thresholds are refused', () => {
  const p = new IoctlPath(0n);
  assert.not.ok(p.sync(4096n));
  assert.equal(p.counts, { sync: 0, async: 1 });
  assert.ok(new IoctlPath(1n << 30n).sync(1n << 30n));
  assert.throws(() => new IoctlPath(-1n), RangeError);
  assert.throws(() => new IoctlPath(4096 as unknown as bigint), RangeError);
});

test('backends take the threshold from their constructor (default 2 MiB)', () => {
  assert.is(new VfioType1Backend().ioctlPath.syncMaxSize, SYNC_IOCTL_MAX_SIZE);
  assert.is(new IommufdBackend().ioctlPath.syncMaxSize, SYNC_IOCTL_MAX_SIZE);
  assert.is(new VfioType1Backend({ syncMaxSize: 0n }).ioctlPath.syncMaxSize, 0n);
  assert.is(new IommufdBackend({ syncMaxSize: 64n * MiB }).ioctlPath.syncMaxSize, 64n * MiB);
  assert.throws(() => new VfioType1Backend({ syncMaxSize: -4096n }), RangeError);
  assert.throws(() => new IommufdBackend({ syncMaxSize: -1n }), RangeError);
});

/** What a promise rejected with (fails when it resolves, or when there is no promise: a synchronous success). */
async function rejection(p: Promise<unknown> | undefined): Promise<Error> {
  if (p === undefined) throw new Error('expected a rejection, got a synchronous success');
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

// A backend that was never opened has no container/iommufd (fd -1): every ioctl wrapper refuses it, which is
// enough to see which wrapper ran and that a synchronous throw comes back as a rejection, not as an exception.
for (const make of [() => new VfioType1Backend(), () => new IommufdBackend({ mapFile: false })]) {
  const name = make().name;
  test(`${name}: small map/unmap take the sync ioctl, large ones the threadpool; failures reject`, async () => {
    const b = make();
    const small = { iova: 0x100000n, size: 4096n, read: true, write: true, vaddr: 0x7f0000000000n };
    const large = { iova: 0x40000000n, size: 4n * MiB, read: true, write: true, vaddr: 0x7f0000000000n };
    let p: Promise<void> | undefined;
    assert.not.throws(() => {
      p = b.map(small);
    }, 'map() never throws synchronously');
    assert.instance(await rejection(p!), RangeError);
    assert.equal(b.ioctlPath.counts, { sync: 1, async: 0 });
    assert.instance(await rejection(b.unmap(small.iova, small.size)), RangeError);
    assert.equal(b.ioctlPath.counts, { sync: 2, async: 0 });
    assert.instance(await rejection(b.map(large)), RangeError);
    assert.instance(await rejection(b.unmap(large.iova, large.size)), RangeError);
    assert.equal(b.ioctlPath.counts, { sync: 2, async: 2 });
    await b.close();
  });
}

test.run();
