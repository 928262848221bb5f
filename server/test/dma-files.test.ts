// fd-backed DMA regions through real memfds: one mapping per file (QEMU's per-map duplicate fds), bytes visible
// both ways, the pread/pwrite fallback, read-only regions behind a private view, mapping windows, file growth,
// fd checks with their errnos, and no fd or mapping leaks.

import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import { DmaMapFlags } from 'vfio-user-protocol';
import { DmaAddressSpace } from '../src/dma/address-space.js';
import type { DmaError } from '../src/dma/errors.js';
import type { DmaRegion } from '../src/dma/region.js';
import { rejects } from './engine-fixtures.js';
import { sleep } from './wait.js';

const E = constants.errno;
const RW = DmaMapFlags.READ | DmaMapFlags.WRITE;
const MiB = 1 << 20;

function pattern(n: number, seed: number): Uint8Array {
  return new Uint8Array(n).map((_, i) => (i * 31 + seed) & 0xff);
}

function preadN(fd: number, n: number, off: bigint): Uint8Array {
  const b = new Uint8Array(n);
  assert.is(native.pread(fd, b, off), n);
  return b;
}

test('one mapping per file: 16 maps with duplicate fds share one mmap and one kept fd', async () => {
  const memfd = native.memfdCreate('guest-ram', MiB);
  const fds0 = native.openFds();
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace();
  const regions: DmaRegion[] = [];
  for (let i = 0; i < 16; i++) {
    // The vIOMMU pattern: IOVA page i backed by guest page 2i, each DMA_MAP with a fresh dup.
    regions.push(
      await s.map({
        iova: 0x10000000n + BigInt(i) * 0x1000n,
        size: 0x1000n,
        prot: RW,
        fd: native.dupFd(memfd),
        fileOffset: BigInt(2 * i) * 0x1000n,
      }),
    );
  }
  const snap = s.snapshot();
  assert.is(snap.live, 16);
  assert.is(snap.files, 1);
  assert.is(snap.mappings, 1);
  assert.is(native.mappingCount() - maps0, 1);
  assert.is(native.openFds() - fds0, 1, 'only one fd kept for the file');
  assert.ok(regions.every((r) => r.access === 'mmap' && r.fd === regions[0]!.fd));
  assert.ok(regions.every((r) => r.fileId === regions[0]!.fileId));

  // Unmapping some keeps the others working.
  await s.unmap(0x10000000n, 0x8000n);
  native.pwrite(memfd, new Uint8Array([1, 2, 3, 4]), 30n * 0x1000n);
  assert.equal(await s.read(0x10000000n + 15n * 0x1000n, 4), new Uint8Array([1, 2, 3, 4]));
  await s.unmapAll();
  assert.is(native.openFds(), fds0, 'the kept fd is closed with the last region');
  assert.is(native.mappingCount(), maps0);
  native.closeFd(memfd);
});

test('bytes are visible both ways through the mapped view, at the right file offset', async () => {
  const memfd = native.memfdCreate('ram', 4 * MiB);
  const s = new DmaAddressSpace();
  // iova 0x100000 is file offset 0x100000 (QEMU's split RAM map), another region at a distinct IOVA.
  const r = await s.map({
    iova: 0x100000n,
    size: 0x200000n,
    prot: RW,
    fd: native.dupFd(memfd),
    fileOffset: 0x100000n,
  });
  assert.is(r.access, 'mmap');
  const data = pattern(0x3000, 7);
  await s.write(0x1ff000n, data);
  assert.equal(preadN(memfd, 0x3000, 0x1ff000n), data, 'device write reaches the file');
  const fromGuest = pattern(0x800, 99);
  native.pwrite(memfd, fromGuest, 0x280000n);
  assert.equal(await s.read(0x280000n, 0x800), fromGuest, 'guest write reaches the device');
  // The host-address view: one segment for a region inside one window.
  const segs = r.hostSegments();
  assert.is(segs.length, 1);
  assert.is(segs[0]!.iova, 0x100000n);
  assert.is(segs[0]!.size, 0x200000n);
  assert.ok(segs[0]!.vaddr > 0n);
  await s.close();
  native.closeFd(memfd);
});

test('pread/pwrite fallback when mapping is disabled', async () => {
  const memfd = native.memfdCreate('ram', MiB);
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace({ mapViews: false });
  const r = await s.map({
    iova: 0x40000n,
    size: 0x40000n,
    prot: RW,
    fd: native.dupFd(memfd),
    fileOffset: 0x80000n,
  });
  assert.is(r.access, 'fd');
  assert.is(native.mappingCount(), maps0);
  assert.equal(r.hostSegments(), []);
  const data = pattern(0x2345, 3);
  await s.write(0x41000n, data);
  assert.equal(preadN(memfd, data.length, 0x81000n), data);
  native.pwrite(memfd, new Uint8Array([9, 8, 7]), 0xbfffdn);
  assert.equal(await s.read(0x7fffdn, 3), new Uint8Array([9, 8, 7]));
  await rejects(s.read(0x7fffdn, 4), E.EFAULT, 'one byte past the end');
  await s.close();
  native.closeFd(memfd);
});

test('READ-only regions: private view for JS, writes refused, file untouched, updates still visible', async () => {
  const memfd = native.memfdCreate('rom', 0x10000);
  native.pwrite(memfd, pattern(0x10000, 1), 0n);
  const s = new DmaAddressSpace();
  const ro = await s.map({
    iova: 0xc0000n,
    size: 0x10000n,
    prot: DmaMapFlags.READ,
    fd: native.dupFd(memfd),
    fileOffset: 0n,
  });
  const piece = ro.pieces[0]!;
  assert.is(piece.view.kind, 'private');
  assert.is(piece.shared.kind, 'shared');
  assert.is(s.snapshot().mappings, 2);
  assert.equal(await s.read(0xc0010n, 16), pattern(0x10000, 1).subarray(0x10, 0x20));

  const err = (await rejects(s.write(0xc0000n, new Uint8Array(4)), E.EPERM)) as DmaError;
  assert.is(err.kind, 'permission');
  // A stray write straight into the view (a device-model bug) lands in a private copy, not in guest memory,
  // and does not kill the process.
  piece.view.bytes[piece.viewOffset + 0x2000] = 0xee;
  assert.is(preadN(memfd, 1, 0x2000n)[0], pattern(0x10000, 1)[0x2000]);
  // Untouched pages keep following the file.
  native.pwrite(memfd, new Uint8Array([0xab, 0xcd]), 0x8000n);
  assert.equal(await s.read(0xc8000n, 2), new Uint8Array([0xab, 0xcd]));
  // The host IOMMU still gets the shared mapping's address.
  assert.is(ro.hostSegments()[0]!.vaddr, piece.shared.addressOf(0n));
  await s.close();
  native.closeFd(memfd);
});

test('windows: a region crossing a window boundary gets one piece per window', async () => {
  const memfd = native.memfdCreate('big', 0x40000);
  const s = new DmaAddressSpace({ windowSize: 0x10000 });
  const r = await s.map({
    iova: 0x100000n,
    size: 0x20000n,
    prot: RW,
    fd: native.dupFd(memfd),
    fileOffset: 0x8000n,
  });
  assert.is(r.pieces.length, 3); // [0x8000,0x10000) [0x10000,0x20000) [0x20000,0x28000)
  assert.is(s.snapshot().mappings, 3);
  const segs = r.hostSegments();
  assert.equal(
    segs.map((x) => [x.iova, x.size]),
    [
      [0x100000n, 0x8000n],
      [0x108000n, 0x10000n],
      [0x118000n, 0x8000n],
    ],
  );
  const data = pattern(0x12000, 5);
  await s.write(0x107000n, data); // spans all three pieces
  assert.equal(preadN(memfd, data.length, 0xf000n), data);
  assert.equal(await s.read(0x107000n, data.length), data);
  // A second region in window 1 reuses that window's mapping.
  await s.map({ iova: 0x200000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0x30000n });
  assert.is(s.snapshot().mappings, 4);
  await s.map({ iova: 0x201000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0x11000n });
  assert.is(s.snapshot().mappings, 4);
  await s.close();
  assert.is(s.snapshot().mappings, 0);
  native.closeFd(memfd);
});

test('a file that grew gets a longer mapping for new regions; the old one lives while used', async () => {
  const memfd = native.memfdCreate('grow', 0x10000);
  const s = new DmaAddressSpace();
  const a = await s.map({ iova: 0n, size: 0x10000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n });
  native.pwrite(memfd, new Uint8Array([1]), 0x1ffffn); // the file is now 128 KiB
  const b = await s.map({
    iova: 0x100000n,
    size: 0x10000n,
    prot: RW,
    fd: native.dupFd(memfd),
    fileOffset: 0x10000n,
  });
  assert.is(s.snapshot().mappings, 2);
  assert.is.not(a.pieces[0]!.view, b.pieces[0]!.view);
  await s.write(0x10n, new Uint8Array([5]));
  assert.equal(await s.read(0x1ffffn - 0x10000n + 0x100000n, 1), new Uint8Array([1]));
  await s.unmap(0n, 0x10000n);
  assert.is(s.snapshot().mappings, 1);
  assert.is(preadN(memfd, 1, 0x10n)[0], 5);
  await s.close();
  native.closeFd(memfd);
});

test('fd checks: wrong fd types, short files, read-only fds, write seals, misaligned offsets; no leaks', async () => {
  const fds0 = native.openFds();
  const s = new DmaAddressSpace();
  const map = (fd: number, prot = RW, size = 0x1000n, fileOffset = 0n) =>
    s.map({ iova: 0x1000n, size, prot, fd, fileOffset });

  await rejects(map(native.eventfd()), E.ENODEV, 'eventfd');
  const [sa, sb] = native.socketpair();
  await rejects(map(sa), E.ENODEV, 'socket');
  native.closeFd(sb);
  const short = native.memfdCreate('short', 0x1000);
  await rejects(map(native.dupFd(short), RW, 0x2000n), E.EINVAL, 'file shorter than the region');
  await rejects(map(native.dupFd(short), RW, 0x1000n, 0x1000n), E.EINVAL, 'offset at EOF');
  await rejects(map(native.dupFd(short), RW, 0x1000n, 0x800n), E.EINVAL, 'misaligned file offset');
  const ro = native.openPath(`/proc/self/fd/${short}`, native.O_RDONLY);
  await rejects(map(ro, RW), E.EACCES, 'read-only fd with WRITE');
  const sealed = native.memfdCreate('sealed', 0x1000);
  native.addSeals(sealed, native.F_SEAL_WRITE);
  await rejects(map(native.dupFd(sealed), RW), E.EPERM, 'write-sealed with WRITE');
  assert.is(s.size, 0);
  assert.is(s.snapshot().files, 0);
  // READ-only through a read-only fd or on a write-sealed file is fine.
  const r1 = await map(native.openPath(`/proc/self/fd/${short}`, native.O_RDONLY), DmaMapFlags.READ);
  assert.is(r1.access, 'mmap');
  await s.unmap(0x1000n, 0x1000n);
  const r2 = await map(native.dupFd(sealed), DmaMapFlags.READ);
  assert.is(r2.access, 'mmap');
  await s.close();
  native.closeFd(short);
  native.closeFd(sealed);
  assert.is(native.openFds(), fds0, 'every fd handed to map() is closed');
});

test('same fd again: a QEMU-sealed file sent as one open file description is recognised; the checks still hold', async () => {
  // QEMU's guest RAM: a memfd sealed against grow and shrink, the same fd sent with every DMA_MAP (each received
  // fd is a new fd of that one open file description: dupFd here).
  const memfd = native.memfdCreate('qemu-ram', 16 * 0x1000);
  native.addSeals(memfd, native.F_SEAL_GROW | native.F_SEAL_SHRINK | native.F_SEAL_SEAL);
  const fds0 = native.openFds();
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace();
  for (let i = 0; i < 200; i++) {
    const iova = 0x10000000n + BigInt(i % 16) * 0x1000n;
    await s.map({
      iova,
      size: 0x1000n,
      prot: RW,
      fd: native.dupFd(memfd),
      fileOffset: BigInt(i % 16) * 0x1000n,
    });
    native.pwrite(memfd, new Uint8Array([i]), BigInt(i % 16) * 0x1000n);
    assert.equal(await s.read(iova, 1), new Uint8Array([i]));
    await s.unmap(iova, 0x1000n);
    assert.is(native.openFds(), fds0 + 1, 'one fd kept for the latest file, every duplicate closed');
  }
  assert.is(native.mappingCount() - maps0, 1, 'one mmap for all 200 pairs');
  await sleep(400);
  assert.is(native.openFds(), fds0, 'the kept fd goes 250 ms after the last region');
  assert.is(s.snapshot().cachedMappings, 1, 'while the mapping stays cached');
  // Past the end: refused as on the long way (the size is known and frozen).
  await rejects(
    s.map({ iova: 0x1000n, size: 0x2000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 15n * 0x1000n }),
    E.EINVAL,
    'past EOF',
  );
  // A read-only open file description of the same file (another description: the long way) refuses WRITE.
  const ro = native.openPath(`/proc/self/fd/${memfd}`, native.O_RDONLY);
  await rejects(
    s.map({ iova: 0x1000n, size: 0x1000n, prot: RW, fd: ro }),
    E.EACCES,
    'read-only fd with WRITE',
  );
  // ...and serves READ, becoming the file's fd; a WRITE through a duplicate of *that* description (the same
  // description as the kept fd: the short way) is refused all the same.
  const ro2 = native.openPath(`/proc/self/fd/${memfd}`, native.O_RDONLY);
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: DmaMapFlags.READ, fd: ro2 });
  await s.unmap(0x1000n, 0x1000n);
  const dupRo = native.dupFd(ro2);
  await rejects(
    s.map({ iova: 0x1000n, size: 0x1000n, prot: RW, fd: dupRo }),
    E.EACCES,
    'same description, read-only',
  );
  assert.is(s.size, 0);
  await s.unmapAll();
  assert.is(native.mappingCount(), maps0, 'unmap-all flushes the cache');
  assert.is(native.openFds(), fds0, 'and closes the kept fd');
  await s.close();
  native.closeFd(memfd);
});

test('1000 map/unmap cycles of duplicate fds leak no fd and no mapping', async () => {
  const memfd = native.memfdCreate('churn', MiB);
  const s = new DmaAddressSpace();
  const fds0 = native.openFds();
  const maps0 = native.mappingCount();
  for (let i = 0; i < 1000; i++) {
    const iova = BigInt(i % 64) * 0x1000n;
    await s.map({
      iova,
      size: 0x1000n,
      prot: i % 3 ? RW : DmaMapFlags.READ,
      fd: native.dupFd(memfd),
      fileOffset: iova,
    });
    if (i % 4 === 3) await s.unmap(0n, 0x40000n);
  }
  await s.unmapAll();
  assert.is(native.openFds(), fds0);
  assert.is(native.mappingCount(), maps0);
  native.closeFd(memfd);
});

test('idle cache: a page mapped and unmapped 100 times maps its file once; fds closed; unmap-all flushes', async () => {
  const memfd = native.memfdCreate('guest-ram', MiB);
  const fds0 = native.openFds();
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace();
  for (let i = 0; i < 100; i++) {
    const iova = 0x10000000n + BigInt(i % 8) * 0x1000n;
    await s.map({
      iova,
      size: 0x1000n,
      prot: RW,
      fd: native.dupFd(memfd),
      fileOffset: BigInt(i % 8) * 0x1000n,
    });
    native.pwrite(memfd, new Uint8Array([i]), BigInt(i % 8) * 0x1000n);
    assert.equal(await s.read(iova, 1), new Uint8Array([i]));
    await s.unmap(iova, 0x1000n);
    assert.is(native.openFds(), fds0 + 1, 'the latest file keeps one fd while its mapping is cached');
  }
  assert.is(native.mappingCount() - maps0, 1, 'one mmap for all 100 pairs');
  assert.equal(
    [s.snapshot().mappings, s.snapshot().cachedMappings, s.snapshot().files],
    [0, 1, 0],
    'idle, cached, no live file',
  );
  // A read-only region of the same file adds the private view; both are reused.
  const ro = await s.map({ iova: 0x2000n, size: 0x1000n, prot: DmaMapFlags.READ, fd: native.dupFd(memfd) });
  assert.is(ro.pieces[0]!.view.kind, 'private');
  assert.is(native.mappingCount() - maps0, 2);
  await s.unmapAll();
  assert.is(native.mappingCount(), maps0, 'unmap-all flushes the cache');
  assert.is(s.snapshot().cachedMappings, 0);
  assert.is(native.openFds(), fds0);
  await s.close();
  native.closeFd(memfd);
});

test('idle cache bounds: count, bytes and age; {count: 0} disables it', async () => {
  const maps0 = native.mappingCount();
  const files = [0, 1, 2].map((i) => native.memfdCreate(`f${i}`, 0x10000));
  const cycle = async (s: DmaAddressSpace) => {
    for (const fd of files) {
      await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW, fd: native.dupFd(fd) });
      await s.unmap(0x1000n, 0x1000n);
    }
  };
  const byCount = new DmaAddressSpace({ idleMappings: { count: 2 } });
  await cycle(byCount);
  assert.is(byCount.snapshot().cachedMappings, 2, 'oldest evicted past the count');
  assert.is(native.mappingCount() - maps0, 2);
  await byCount.close();
  const byBytes = new DmaAddressSpace({ idleMappings: { bytes: 0x18000 } });
  await cycle(byBytes);
  assert.is(byBytes.snapshot().cachedMappings, 1, '64 KiB windows, 96 KiB allowed');
  await byBytes.close();
  const byAge = new DmaAddressSpace({ idleMappings: { ms: 30 } });
  await cycle(byAge);
  assert.is(byAge.snapshot().cachedMappings, 3);
  await sleep(150);
  assert.is(byAge.snapshot().cachedMappings, 0, 'evicted after the idle time');
  assert.is(native.mappingCount(), maps0);
  const off = new DmaAddressSpace({ idleMappings: { count: 0 } });
  await cycle(off);
  assert.is(native.mappingCount(), maps0, 'no cache: unmapped with the last region');
  await off.close();
  await byAge.close();
  for (const fd of files) native.closeFd(fd);
});

test('lazy windows: a region of more than 4 windows maps a window only when it is touched', async () => {
  const memfd = native.memfdCreate('lazy', 0x100000);
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace({ windowSize: 0x10000 });
  const r = await s.map({ iova: 0x1000000n, size: 0x100000n, prot: RW, fd: native.dupFd(memfd) });
  assert.is(r.access, 'mmap');
  assert.is(native.mappingCount(), maps0, 'nothing mapped at DMA_MAP time');
  const data = pattern(0x20, 4);
  await s.write(0x1050000n - 0x10n, data); // straddles windows 4 and 5
  assert.equal(preadN(memfd, 0x20, 0x4fff0n), data);
  assert.is(native.mappingCount() - maps0, 2, 'the two touched windows');
  assert.equal(await s.read(0x1050000n - 0x10n, 0x20), data);
  assert.is(r.hostSegments().length, 16, 'host addresses map every window');
  assert.is(native.mappingCount() - maps0, 16);
  await s.close();
  assert.is(native.mappingCount(), maps0);
  native.closeFd(memfd);
});

test('a 1 TiB map maps nothing up front; device access maps one window; unmap releases it', async () => {
  const TiB = 1n << 40n;
  const memfd = native.memfdCreate('huge', TiB);
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace();
  const r = await s.map({ iova: TiB, size: TiB, prot: RW, fd: native.dupFd(memfd) });
  assert.is(native.mappingCount(), maps0);
  assert.is(r.touched, undefined);
  const at = TiB + (TiB >> 1n) + 0x123n;
  await s.write(at, new Uint8Array([0xab, 0xcd]));
  assert.equal(preadN(memfd, 2, (TiB >> 1n) + 0x123n), new Uint8Array([0xab, 0xcd]));
  assert.is(native.mappingCount() - maps0, 1, 'one 1 GiB window');
  await s.unmap(TiB, TiB);
  assert.is(s.size, 0);
  await s.close();
  assert.is(native.mappingCount(), maps0);
  native.closeFd(memfd);
});

test.run();
