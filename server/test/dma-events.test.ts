// Address-space events and the IOMMU mirror: order of added/removed events, replay to a late subscriber,
// refusals with their errno and no half state, removal completing before memory goes away, and the mirror's
// policies and counters against a recording backend.

import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as native from 'vfio-user-native';
import { DmaMapFlags } from 'vfio-user-protocol';
import { DmaAddressSpace, type DmaListener } from '../src/dma/address-space.js';
import type { DmaRegion } from '../src/dma/region.js';
import type { HostFacts, HostMapping, IommuBackend, MapsBy } from '../src/iommu/backend.js';
import { IommuMirror } from '../src/iommu/mirror.js';
import { NoneBackend } from '../src/iommu/none.js';
import { rejects } from './engine-fixtures.js';
import { sleep } from './wait.js';

const E = constants.errno;
const RW = DmaMapFlags.READ | DmaMapFlags.WRITE;

const hex = (r: DmaRegion) => `0x${r.iova.toString(16)}`;

class Recorder implements DmaListener {
  events: string[] = [];
  refuse = new Map<bigint, number>();
  allRemoved?: (rs: readonly DmaRegion[]) => void;
  constructor(
    readonly name = 'L',
    batch = false,
  ) {
    if (batch) this.allRemoved = (rs) => void this.events.push(`${this.name} all ${rs.length}`);
  }
  regionAdded(r: DmaRegion): void {
    const errno = this.refuse.get(r.iova);
    if (errno) throw Object.assign(new Error('refused'), { errno });
    this.events.push(`${this.name} + ${hex(r)}`);
  }
  regionRemoved(r: DmaRegion): void {
    this.events.push(`${this.name} - ${hex(r)}`);
  }
}

test('events arrive in order; covering unmaps remove per region; unmap-all uses the batch hook', async () => {
  const s = new DmaAddressSpace();
  const a = new Recorder('A');
  const b = new Recorder('B', true);
  await s.subscribe(a);
  await s.subscribe(b);
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x2000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x8000n, size: 0x1000n, prot: RW });
  await s.unmap(0n, 0x4000n);
  await s.unmapAll();
  assert.equal(a.events, [
    'A + 0x1000',
    'A + 0x2000',
    'A + 0x8000',
    'A - 0x1000',
    'A - 0x2000',
    'A - 0x8000',
  ]);
  // Removal goes to the latest subscriber first.
  assert.equal(b.events, ['B + 0x1000', 'B + 0x2000', 'B + 0x8000', 'B - 0x1000', 'B - 0x2000', 'B all 1']);
});

test('a late subscriber hears the live regions replayed in IOVA order, then live events', async () => {
  const s = new DmaAddressSpace();
  await s.map({ iova: 0x9000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x3000n, size: 0x1000n, prot: RW });
  const late = new Recorder();
  const quiet = new Recorder('Q');
  await s.subscribe(late);
  await s.subscribe(quiet, { replay: false });
  await s.map({ iova: 0x5000n, size: 0x1000n, prot: RW });
  assert.equal(late.events, ['L + 0x3000', 'L + 0x9000', 'L + 0x5000']);
  assert.equal(quiet.events, ['Q + 0x5000']);
});

test('a refused map fails with the subscriber errno, rolls back earlier subscribers, leaves no trace', async () => {
  const memfd = native.memfdCreate('ram', 0x10000);
  const fds0 = native.openFds();
  const maps0 = native.mappingCount();
  const s = new DmaAddressSpace();
  const first = new Recorder('A');
  const second = new Recorder('B');
  const third = new Recorder('C');
  await s.subscribe(first);
  await s.subscribe(second);
  await s.subscribe(third);
  second.refuse.set(0x4000n, E.ENOMEM);
  await rejects(
    s.map({ iova: 0x4000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n }),
    E.ENOMEM,
  );
  assert.equal(first.events, ['A + 0x4000', 'A - 0x4000']);
  assert.equal(second.events, []);
  assert.equal(third.events, [], 'later subscribers never hear of it');
  assert.is(s.size, 0);
  assert.is(s.find(0x4000n), undefined);
  assert.is(s.snapshot().files, 0);
  assert.is(native.openFds(), fds0, 'the fd is closed');
  assert.is(native.mappingCount(), maps0, 'the mapping is gone');
  assert.is(s.snapshot().mapFailures.ENOMEM, 1);
  // Once accepted, the same map goes through.
  second.refuse.clear();
  await s.map({ iova: 0x4000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n });
  assert.is(s.size, 1);
  await s.close();
  native.closeFd(memfd);
});

test('a subscriber refusing a replayed region is rolled back and not subscribed', async () => {
  const s = new DmaAddressSpace();
  for (const iova of [0x1000n, 0x2000n, 0x3000n]) await s.map({ iova, size: 0x1000n, prot: RW });
  const r = new Recorder();
  r.refuse.set(0x3000n, E.EINVAL);
  await rejects(s.subscribe(r), E.EINVAL);
  assert.equal(r.events, ['L + 0x1000', 'L + 0x2000', 'L - 0x2000', 'L - 0x1000']);
  await s.map({ iova: 0x8000n, size: 0x1000n, prot: RW });
  assert.is(r.events.length, 4, 'not subscribed');
  assert.is(s.size, 4);
});

test('removal: subscribers run while the memory is still mapped; unmap resolves only after they finish', async () => {
  const memfd = native.memfdCreate('ram', 0x10000);
  // Without the idle-mapping cache the file's mapping goes with its last region (files.ts; the cache is
  // covered in dma-files.test.ts).
  const s = new DmaAddressSpace({ idleMappings: { count: 0 } });
  let release!: () => void;
  const seen: string[] = [];
  await s.subscribe({
    regionAdded() {},
    async regionRemoved(r) {
      seen.push(
        `removing, view length ${r.pieces[0]!.view.bytes.length}, in table ${s.find(r.iova) !== undefined}`,
      );
      await new Promise<void>((res) => {
        release = res;
      });
      seen.push('released');
    },
  });
  const r = await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n });
  const view = r.pieces[0]!.view.bytes;
  let unmapped = false;
  const p = s.unmap(0x1000n, 0x1000n).then(() => {
    unmapped = true;
  });
  // A later map waits behind the unmap (one mutation at a time, in call order).
  let mapped = false;
  const q = s.map({ iova: 0x1000n, size: 0x1000n, prot: RW }).then(() => {
    mapped = true;
  });
  await sleep(20);
  assert.equal(seen, ['removing, view length 65536, in table false']);
  assert.is(unmapped, false);
  assert.is(mapped, false);
  release();
  await p;
  assert.is(unmapped, true);
  assert.is(view.length, 0, 'the mapping is unmapped (views detached) by the time unmap resolves');
  await q;
  assert.is(mapped, true);
  await s.close();
  native.closeFd(memfd);
});

test('a failing removal still removes the region but reports the errno', async () => {
  const s = new DmaAddressSpace();
  await s.subscribe({
    regionAdded() {},
    regionRemoved() {
      throw Object.assign(new Error('host said EBUSY'), { errno: E.EBUSY });
    },
  });
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW });
  await rejects(s.unmap(0x1000n, 0x1000n), E.EBUSY);
  assert.is(s.size, 0);
});

// ---- the mirror ----------------------------------------------------------------------------------------------

class RecordingBackend implements IommuBackend {
  readonly name = 'recording';
  calls: string[] = [];
  maps: HostMapping[] = [];
  failMap: number | undefined;
  /** Refuse (ENOMEM) every map after this many more succeeded. */
  failMapAfter: number | undefined;
  failUnmap: number | undefined;
  closed = false;
  constructor(
    readonly mapsBy: MapsBy,
    readonly facts: HostFacts = {
      pgsizes: 0x40201000n,
      iovaRanges: [
        { start: 0n, last: 0xfedfffffn },
        { start: 0xfef00000n, last: 0xffffffffffffn },
      ],
      maxDmaMaps: 65535,
    },
  ) {}
  async attach(): Promise<HostFacts> {
    this.calls.push('attach');
    return this.facts;
  }
  async map(e: HostMapping): Promise<void> {
    if (this.failMap) throw Object.assign(new Error('map failed'), { errno: this.failMap });
    if (this.failMapAfter !== undefined && this.failMapAfter-- <= 0) {
      throw Object.assign(new Error('map failed'), { errno: E.ENOMEM });
    }
    this.calls.push(
      `map 0x${e.iova.toString(16)}+0x${e.size.toString(16)} fd=${e.fd !== undefined} vaddr=${e.vaddr !== undefined}`,
    );
    this.maps.push(e);
  }
  async unmap(iova: bigint, size: bigint): Promise<void> {
    if (this.failUnmap) throw Object.assign(new Error('unmap failed'), { errno: this.failUnmap });
    this.calls.push(`unmap 0x${iova.toString(16)}+0x${size.toString(16)}`);
  }
  async unmapAll(): Promise<void> {
    this.calls.push('unmapAll');
  }
  async close(): Promise<void> {
    this.closed = true;
    this.calls.push('close');
  }
}

test('mirror: fd maps reach the backend with fd, offset and address; fd-less ones are recorded only', async () => {
  const memfd = native.memfdCreate('ram', 0x100000);
  const s = new DmaAddressSpace();
  const backend = new RecordingBackend('file');
  const mirror = new IommuMirror(backend);
  await s.map({ iova: 0x100000n, size: 0x2000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0x4000n }); // before start: replayed
  await mirror.start(s);
  await s.map({ iova: 0xc0000n, size: 0x20000n, prot: DmaMapFlags.READ }); // ROM, no fd
  await s.map({
    iova: 0x200000n,
    size: 0x1000n,
    prot: DmaMapFlags.READ,
    fd: native.dupFd(memfd),
    fileOffset: 0x8000n,
  });
  assert.equal(backend.calls, [
    'attach',
    'map 0x100000+0x2000 fd=true vaddr=false',
    'map 0x200000+0x1000 fd=true vaddr=false',
  ]);
  const m = backend.maps[0]!;
  assert.is(m.fileOffset, 0x4000n);
  assert.equal([m.read, m.write], [true, true], 'READ|WRITE');
  assert.equal([backend.maps[1]!.read, backend.maps[1]!.write], [true, false], 'READ only');
  assert.is(mirror.stats.maps, 2);
  assert.is(mirror.stats.unmirrored, 1);
  assert.is(mirror.stats.live, 2);
  assert.is(mirror.stats.pagesPinned, 3);
  // A covering unmap is normalised into exact per-entry unmaps.
  await s.unmap(0n, 0x400000n);
  assert.equal(backend.calls.slice(3), ['unmap 0x100000+0x2000', 'unmap 0x200000+0x1000']);
  assert.is(mirror.stats.unmirrored, 0);
  assert.is(mirror.stats.live, 0);
  assert.is(mirror.stats.pagesPinned, 0);
  assert.is(mirror.stats.unmaps, 2);
  // Unmap-all is one backend call.
  await s.map({ iova: 0n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n });
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n });
  await s.unmapAll();
  assert.equal(backend.calls.slice(-1), ['unmapAll']);
  assert.is(mirror.stats.unmaps, 4);
  await mirror.close();
  assert.ok(backend.closed);
  await s.map({ iova: 0n, size: 0x1000n, prot: RW });
  assert.is(backend.calls.filter((c) => c.startsWith('map')).length, 4, 'unsubscribed after close');
  await s.close();
  native.closeFd(memfd);
});

test('mirror: host refusals (reserved IOVA, misalignment, backend errno) fail the DMA_MAP and are counted', async () => {
  const memfd = native.memfdCreate('ram', 0x100000);
  const s = new DmaAddressSpace();
  const backend = new RecordingBackend('file', {
    pgsizes: 0x10000n,
    iovaRanges: [{ start: 0n, last: 0xfedfffffn }],
    maxDmaMaps: 10,
  });
  const mirror = new IommuMirror(backend);
  await mirror.start(s);
  await rejects(
    s.map({ iova: 0xfee00000n, size: 0x10000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n }),
    E.EINVAL,
    'MSI window',
  );
  await rejects(
    s.map({ iova: 0x1000n, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n }),
    E.EINVAL,
    '4 KiB on a 64 KiB host',
  );
  backend.failMap = E.EFAULT;
  await rejects(
    s.map({ iova: 0x10000n, size: 0x10000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0n }),
    E.EFAULT,
  );
  assert.equal(mirror.stats.failures, { EINVAL: 2, EFAULT: 1 });
  assert.is(s.size, 0);
  backend.failMap = undefined;
  // fd-less maps in the reserved window are fine: nothing is mirrored.
  await s.map({ iova: 0xfee00000n, size: 0x1000n, prot: RW });
  assert.is(mirror.stats.unmirrored, 1);
  await s.close();
  native.closeFd(memfd);
});

test('mirror: host ENOENT on unmap is success; other unmap errors are reported and retried by unmap-all', async () => {
  const memfd = native.memfdCreate('ram', 0x100000);
  const s = new DmaAddressSpace();
  const backend = new RecordingBackend('nothing');
  const mirror = new IommuMirror(backend);
  await mirror.start(s);
  for (const iova of [0n, 0x1000n])
    await s.map({ iova, size: 0x1000n, prot: RW, fd: native.dupFd(memfd), fileOffset: iova });
  backend.failUnmap = E.ENOENT;
  await s.unmap(0n, 0x1000n);
  backend.failUnmap = E.EBUSY;
  await rejects(s.unmap(0x1000n, 0x1000n), E.EBUSY);
  assert.is(s.size, 0);
  assert.equal(mirror.stats.failures, { EBUSY: 1 });
  backend.failUnmap = undefined;
  await s.unmapAll();
  assert.equal(backend.calls.slice(-1), ['unmapAll'], 'the stale host entry is swept');
  await mirror.close();
  await s.close();
  native.closeFd(memfd);
});

test('mirror: by address, one host entry per mapping window; a failed one rolls back those already made', async () => {
  const memfd = native.memfdCreate('ram', 0x40000);
  const s = new DmaAddressSpace({ windowSize: 0x10000 });
  const backend = new RecordingBackend('address', {
    pgsizes: 0x1000n,
    iovaRanges: [{ start: 0n, last: 0xffffffffn }],
    maxDmaMaps: 100,
  });
  const mirror = new IommuMirror(backend);
  await mirror.start(s);
  // 0x8000 bytes from file offset 0xc000: the window boundary at 0x10000 splits it into two entries.
  await s.map({ iova: 0x100000n, size: 0x8000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0xc000n });
  assert.equal(backend.calls.slice(1), [
    'map 0x100000+0x4000 fd=false vaddr=true',
    'map 0x104000+0x4000 fd=false vaddr=true',
  ]);
  assert.is(mirror.stats.maps, 1, 'one client region');
  backend.failMapAfter = 1;
  await rejects(
    s.map({ iova: 0x200000n, size: 0x8000n, prot: RW, fd: native.dupFd(memfd), fileOffset: 0xc000n }),
    E.ENOMEM,
    'second entry refused',
  );
  assert.equal(backend.calls.slice(3), ['map 0x200000+0x4000 fd=false vaddr=true', 'unmap 0x200000+0x4000']);
  assert.is(s.size, 1, 'nothing half-added');
  assert.equal(mirror.stats.failures, { ENOMEM: 1 });
  await s.close();
  native.closeFd(memfd);
});

test('none backend: protocol-default facts, accepts everything, counts no pinned pages', async () => {
  const none = new NoneBackend();
  const facts = await none.attach();
  assert.is(facts.pgsizes, 4096n);
  assert.is(facts.maxDmaMaps, 65535);
  const s = new DmaAddressSpace();
  const mirror = new IommuMirror(none);
  await mirror.start(s);
  await s.map({ iova: 0n, size: 0x100000n, prot: RW });
  assert.is(mirror.stats.maps, 1);
  assert.is(mirror.stats.pagesPinned, 0);
  await mirror.close();
  await s.close();
});

test('none backend: the counters and host entries without per-region records, as with a recording backend', async () => {
  // The `none` mirror keeps no record per region (mirror.ts `lean`); what it reports must be what a backend that
  // maps nothing reports with records: the same counters and the same entries for a hand-over.
  const s = new DmaAddressSpace();
  await s.map({ iova: 0x10000n, size: 0x1000n, prot: RW }); // before the mirror: heard of by replay
  const none = new IommuMirror(new NoneBackend());
  await none.start(s);
  const plain: IommuBackend = {
    name: 'plain',
    mapsBy: 'nothing',
    pins: false,
    attach: () => new NoneBackend().attach(),
    map() {},
    unmap() {},
    async unmapAll() {},
    async close() {},
  };
  const recorded = new IommuMirror(plain);
  await recorded.start(s);
  const same = (what: string) => {
    assert.equal(none.stats, { ...recorded.stats, backend: 'none' }, what);
    assert.equal(none.exportEntries(), recorded.exportEntries(), `${what}: entries`);
  };
  same('after replay');
  for (let i = 0n; i < 5n; i++) await s.map({ iova: 0x20000n + i * 0x1000n, size: 0x1000n, prot: RW });
  same('after maps');
  await s.unmap(0x20000n, 0x2000n); // covering unmap of two
  await s.unmap(0x30000n, 0x1000n); // empty unmap
  await rejects(s.unmap(0x10000n, 0x800n), E.EINVAL, 'bisecting unmap');
  await rejects(s.map({ iova: 0x10800n, size: 0x1000n, prot: RW }), E.EINVAL, 'misaligned map');
  same('after unmaps');
  assert.is(none.stats.live, 4);
  assert.is(none.stats.unmaps, 2);
  await s.unmapAll();
  same('after unmap-all');
  assert.is(none.stats.live, 0);
  assert.equal(none.exportEntries(), []);
  await s.map({ iova: 0x40000n, size: 0x1000n, prot: RW });
  await none.close();
  await recorded.close();
  assert.is(none.stats.live, 0, 'close forgets the entries');
  assert.equal(none.exportEntries(), []);
  await s.close();
});

test.run();
