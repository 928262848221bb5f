// DMA address space rules: DMA_MAP validation (alignment, prot, wrap, EEXIST, ENOSPC), DMA_UNMAP semantics
// (exact, covering one or many, empty, bisecting, unmap-all), the access API across adjacent mappings and its
// typed errors, and 65,535 live mappings.

import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DmaMapFlags } from 'vfio-user-protocol';
import { DmaAddressSpace, type DmaMessageTransport } from '../src/dma/address-space.js';
import { DmaError, DmaMapError } from '../src/dma/errors.js';
import { rejects } from './engine-fixtures.js';

const E = constants.errno;
const RW = DmaMapFlags.READ | DmaMapFlags.WRITE;

/** A message transport backed by a plain buffer, standing in for the client's guest memory. */
function fakeGuest(size = 1 << 20): DmaMessageTransport & { mem: Uint8Array; calls: string[] } {
  const mem = new Uint8Array(size);
  const calls: string[] = [];
  return {
    mem,
    calls,
    async read(iova, length) {
      calls.push(`r ${iova} ${length}`);
      return mem.slice(Number(iova), Number(iova) + length);
    },
    async write(iova, data) {
      calls.push(`w ${iova} ${data.length}`);
      mem.set(data, Number(iova));
    },
  };
}

test('DMA_MAP validation: prot, size, wrap, alignment', async () => {
  const s = new DmaAddressSpace();
  await rejects(s.map({ iova: 0n, size: 0x1000n, prot: 0 }), E.EINVAL, 'neither READ nor WRITE');
  await rejects(s.map({ iova: 0n, size: 0x1000n, prot: 0x4 }), E.EINVAL, 'unknown prot bit');
  await rejects(s.map({ iova: 0n, size: 0n, prot: RW }), E.EINVAL, 'size 0');
  await rejects(s.map({ iova: (1n << 64n) - 0x1000n, size: 0x2000n, prot: RW }), E.EINVAL, 'wrap');
  await rejects(s.map({ iova: 0x800n, size: 0x1000n, prot: RW }), E.EINVAL, 'address misaligned');
  await rejects(s.map({ iova: 0x1000n, size: 0x1800n, prot: RW }), E.EINVAL, 'size misaligned');
  assert.is(s.size, 0);
  // The very top page is fine (end == 2^64).
  const top = await s.map({ iova: (1n << 64n) - 0x1000n, size: 0x1000n, prot: DmaMapFlags.READ });
  assert.is(top.end, 1n << 64n);
  assert.is(s.snapshot().mapFailures.EINVAL, 6);
});

test('DMA_MAP overlap is EEXIST: partial, inside, containing, identical; adjacent is fine', async () => {
  const s = new DmaAddressSpace();
  await s.map({ iova: 0x2000n, size: 0x2000n, prot: RW });
  await rejects(s.map({ iova: 0x1000n, size: 0x2000n, prot: RW }), E.EEXIST, 'partial overlap');
  await rejects(s.map({ iova: 0x3000n, size: 0x1000n, prot: RW }), E.EEXIST, 'inside');
  await rejects(s.map({ iova: 0n, size: 0x10000n, prot: RW }), E.EEXIST, 'containing');
  await rejects(s.map({ iova: 0x2000n, size: 0x2000n, prot: RW }), E.EEXIST, 'identical re-map');
  await rejects(
    s.map({ iova: 0x2000n, size: 0x2000n, prot: DmaMapFlags.READ }),
    E.EEXIST,
    'same range, other prot',
  );
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x4000n, size: 0x1000n, prot: RW });
  assert.is(s.size, 3);
});

test('max mappings: ENOSPC, and room again after an unmap', async () => {
  const s = new DmaAddressSpace({ maxMappings: 3 });
  for (let i = 0n; i < 3n; i++) await s.map({ iova: i * 0x1000n, size: 0x1000n, prot: RW });
  await rejects(s.map({ iova: 0x10000n, size: 0x1000n, prot: RW }), E.ENOSPC);
  await s.unmap(0n, 0x1000n);
  await s.map({ iova: 0x10000n, size: 0x1000n, prot: RW });
  assert.is(s.size, 3);
});

test('DMA_UNMAP: exact, covering many, covering nothing, bisecting, misaligned', async () => {
  const s = new DmaAddressSpace();
  for (let i = 0n; i < 8n; i++) await s.map({ iova: 0x100000n + i * 0x1000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x200000n, size: 0x4000n, prot: RW });

  // Exact match.
  let gone = await s.unmap(0x100000n, 0x1000n);
  assert.is(gone.length, 1);
  // A window covering 4 whole mappings plus empty space.
  gone = await s.unmap(0x100000n, 0x5000n);
  assert.equal(
    gone.map((r) => r.iova),
    [0x101000n, 0x102000n, 0x103000n, 0x104000n],
  );
  // Nothing there: success, nothing removed.
  gone = await s.unmap(0x40000000n, 0x200000n);
  assert.is(gone.length, 0);
  // Bisecting the 16 KiB mapping at either end, or in the middle: EINVAL and nothing removed.
  await rejects(s.unmap(0x200000n, 0x1000n), E.EINVAL, 'first page of a larger map');
  await rejects(s.unmap(0x203000n, 0x2000n), E.EINVAL, 'straddles the end');
  await rejects(s.unmap(0x1ff000n, 0x2000n), E.EINVAL, 'straddles the start');
  // A covering window that also cuts one mapping removes nothing at all.
  await rejects(s.unmap(0x105000n, 0xfc000n), E.EINVAL, 'covers some, cuts one');
  assert.is(s.size, 4);
  await rejects(s.unmap(0x100800n, 0x1000n), E.EINVAL, 'misaligned');
  await rejects(s.unmap(0x100000n, 0n), E.EINVAL, 'size 0');
  // The 1 MiB naturally aligned window a vIOMMU sends when a guest drops many pages at once.
  gone = await s.unmap(0x100000n, 0x100000n);
  assert.is(gone.length, 3);
  gone = await s.unmap(0x200000n, 0x4000n);
  assert.is(gone.length, 1);
  assert.is(s.size, 0);
  // Unmap, then map the same range again.
  await s.map({ iova: 0x200000n, size: 0x4000n, prot: RW });
});

test('unmap-all removes everything; on an empty space it is a no-op', async () => {
  const s = new DmaAddressSpace();
  assert.is((await s.unmapAll()).length, 0);
  for (let i = 0n; i < 100n; i++) await s.map({ iova: i * 0x10000n, size: 0x1000n, prot: RW });
  assert.is((await s.unmapAll()).length, 100);
  assert.is(s.size, 0);
  assert.is(s.find(0n), undefined);
  assert.is(s.snapshot().unmaps, 100);
});

test('page size from the host: 64 KiB pages refuse 4 KiB maps', async () => {
  const s = new DmaAddressSpace();
  s.configure({ pageSize: 0x10000n });
  await rejects(s.map({ iova: 0x1000n, size: 0x1000n, prot: RW }), E.EINVAL);
  await s.map({ iova: 0x10000n, size: 0x10000n, prot: RW });
  assert.throws(() => s.configure({ pageSize: 0x1000n }), /live/);
  assert.throws(() => new DmaAddressSpace({ pageSize: 3000n }), /power of two/);
});

test('65,535 live mappings: map, lookup, unmap stay cheap', async () => {
  const s = new DmaAddressSpace();
  const n = 65535;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    // Interleave two halves so inserts land in the middle of the table, not only at its end.
    const k = i % 2 === 0 ? i / 2 : n - (i + 1) / 2;
    await s.map({ iova: BigInt(k) * 0x1000n, size: 0x1000n, prot: RW });
  }
  const t1 = process.hrtime.bigint();
  assert.is(s.size, n);
  await rejects(s.map({ iova: BigInt(n) * 0x1000n, size: 0x1000n, prot: RW }), E.ENOSPC, 'the 65,536th');
  let hits = 0;
  for (let i = 0; i < 200000; i++) {
    const iova = BigInt((i * 7919) % n) * 0x1000n + 0x10n;
    if (s.find(iova)) hits++;
  }
  const t2 = process.hrtime.bigint();
  assert.is(hits, 200000);
  for (let i = 0; i < n; i += 2) await s.unmap(BigInt(i) * 0x1000n, 0x1000n);
  const t3 = process.hrtime.bigint();
  assert.is(s.size, (n - 1) / 2);
  await s.unmapAll();
  assert.is(s.size, 0);
  const us = (a: bigint, b: bigint, k: number) => (Number(b - a) / 1000 / k).toFixed(2);
  console.log(
    `    65,535 maps: map ${us(t0, t1, n)} us, lookup ${us(t1, t2, 200000)} us, unmap ${us(t2, t3, (n + 1) / 2)} us (per op)`,
  );
});

test('access API: spans adjacent mappings, checks permission and coverage before moving a byte', async () => {
  const s = new DmaAddressSpace();
  const guest = fakeGuest();
  s.setMessageTransport(guest);
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x2000n, size: 0x1000n, prot: RW });
  await s.map({ iova: 0x3000n, size: 0x1000n, prot: DmaMapFlags.READ });
  await s.map({ iova: 0x5000n, size: 0x1000n, prot: DmaMapFlags.WRITE });

  const data = new Uint8Array(0x1800).map((_, i) => i & 0xff);
  await s.write(0x1800n, data); // spans 0x1000 and 0x2000
  assert.equal(guest.mem.subarray(0x1800, 0x3000), data);
  assert.equal(await s.read(0x1800n, 0x1800), data);
  assert.equal(
    await s.readv([
      { iova: 0x2f00n, length: 0x100 },
      { iova: 0x1800n, length: 4 },
    ]),
    new Uint8Array([...data.subarray(0x1700, 0x1800), 0, 1, 2, 3]),
  );

  // Write into the READ-only mapping: permission, and nothing written even to the writable part before it.
  guest.calls.length = 0;
  let err = (await rejects(s.write(0x2f00n, new Uint8Array(0x200)), E.EPERM)) as DmaError;
  assert.is(err.kind, 'permission');
  assert.is(err.iova, 0x3000n);
  assert.equal(guest.calls, []);
  // Read from the WRITE-only one.
  err = (await rejects(s.read(0x5000n, 4), E.EPERM)) as DmaError;
  assert.is(err.kind, 'permission');
  // A gap at 0x4000.
  err = (await rejects(s.read(0x3f00n, 0x200), E.EFAULT)) as DmaError;
  assert.is(err.kind, 'unmapped');
  assert.is(err.iova, 0x4000n);
  err = (await rejects(s.read(0x100000n, 1), E.EFAULT)) as DmaError;
  assert.is(err.kind, 'unmapped');
  // Malformed requests.
  err = (await rejects(s.read(0x1000n, -1), E.EINVAL)) as DmaError;
  assert.is(err.kind, 'range');
  err = (await rejects(s.read((1n << 64n) - 1n, 2), E.EINVAL)) as DmaError;
  assert.is(err.kind, 'range');
  await rejects(s.writev([{ iova: 0x1000n, length: 4 }], new Uint8Array(5)), E.EINVAL);
  assert.equal(await s.read(0x1000n, 0), new Uint8Array(0));
});

test('message access: no client -> ENOTCONN; an unmap fails the in-flight access at once', async () => {
  const s = new DmaAddressSpace();
  await s.map({ iova: 0x1000n, size: 0x1000n, prot: RW });
  const err = (await rejects(s.read(0x1000n, 4), E.ENOTCONN)) as DmaError;
  assert.is(err.kind, 'io');

  // A client that never answers.
  const never: DmaMessageTransport = {
    read: () => new Promise(() => {}),
    write: () => new Promise(() => {}),
  };
  s.setMessageTransport(never);
  const pending = s.read(0x1000n, 4);
  const pendingWrite = s.write(0x1800n, new Uint8Array(4));
  const gone = await s.unmap(0x1000n, 0x1000n);
  assert.is(gone.length, 1);
  for (const p of [pending, pendingWrite]) {
    const e = (await rejects(p, E.EFAULT)) as DmaError;
    assert.instance(e, DmaError);
    assert.is(e.kind, 'unmapped');
  }
  assert.is(gone[0]!.inflight, undefined);
});

test('transport errors become DmaError io with the errno', async () => {
  const s = new DmaAddressSpace();
  s.setMessageTransport({
    read: async () => {
      throw Object.assign(new Error('client said EFAULT'), { errno: E.EFAULT });
    },
    write: async () => {},
    // a short read
  });
  await s.map({ iova: 0n, size: 0x1000n, prot: RW });
  const e = (await rejects(s.read(0n, 8), E.EFAULT)) as DmaError;
  assert.is(e.kind, 'io');
  s.setMessageTransport({ read: async () => new Uint8Array(2), write: async () => {} });
  const e2 = (await rejects(s.read(0n, 8), E.EPROTO)) as DmaError;
  assert.is(e2.kind, 'io');
  assert.instance(new DmaMapError(E.EEXIST, 'x'), Error);
});

test.run();
