// The interval table under the DMA address space: ordering, lookup, overlap queries, block splits/merges, and
// a randomized comparison against a brute-force model.

import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Interval, IntervalTable } from '../src/dma/interval-table.js';

interface E extends Interval {
  tag: number;
}
const iv = (iova: bigint, size: bigint, tag = 0): E => ({ iova, end: iova + size, tag });

test('empty table answers nothing', () => {
  const t = new IntervalTable<E>();
  assert.is(t.size, 0);
  assert.is(t.find(0n), undefined);
  assert.is(t.overlaps(0n, 1n << 64n), false);
  assert.equal(t.overlapping(0n, 100n), []);
  assert.is(t.remove(iv(0n, 1n)), false);
});

test('emptied and refilled (one map+unmap pair at a time): the kept empty block is never looked into', () => {
  const t = new IntervalTable<E>();
  for (let round = 0; round < 3; round++) {
    const a = iv(0x5000n, 0x1000n, round);
    t.insert(a);
    assert.is(t.find(0x5000n), a);
    assert.is(t.remove(a), true);
    assert.is(t.size, 0);
    assert.is(t.find(0x5000n), undefined);
    assert.is(t.overlaps(0n, 1n << 64n), false);
    assert.equal(t.overlapping(0n, 1n << 64n), []);
    assert.equal(t.toArray(), []);
    assert.is(t.remove(a), false, 'removed twice');
  }
  // Refilled in both directions after emptying.
  const b = iv(0x9000n, 0x1000n, 1);
  const c = iv(0x1000n, 0x1000n, 2);
  t.insert(b);
  t.insert(c);
  assert.equal(
    t.toArray().map((x) => x.tag),
    [2, 1],
  );
  assert.equal(
    [...t].map((x) => x.tag),
    [2, 1],
  );
});

test('first in, first out (pipelined map+unmap pairs): the copied block keeps order and lookups', () => {
  const t = new IntervalTable<E>();
  const live: E[] = [];
  let next = 0n;
  for (let step = 0; step < 2000; step++) {
    // 64 in flight, like the bench; every 7th step a map below the others (an IOVA that wrapped round).
    while (live.length < 64) {
      const e =
        step % 7 === 0 && live.length === 63 ? iv(next % 0x40n, 1n, Number(next)) : iv(0x1000n + next, 1n);
      next++;
      if (t.overlaps(e.iova, e.end)) continue;
      t.insert(e);
      live.push(e);
      live.sort((x, y) => (x.iova < y.iova ? -1 : 1));
    }
    const gone = step % 5 === 0 ? live.splice(live.length >> 1, 1)[0]! : live.shift()!;
    assert.ok(t.remove(gone));
    assert.is(t.size, live.length);
    assert.is(t.find(gone.iova), undefined);
  }
  assert.equal(t.toArray(), live);
  for (const e of live) assert.is(t.find(e.iova), e);
});

test('find: start inclusive, end exclusive, gaps empty', () => {
  const t = new IntervalTable<E>();
  const a = iv(0x1000n, 0x1000n, 1);
  const b = iv(0x3000n, 0x2000n, 2);
  t.insert(b);
  t.insert(a);
  assert.is(t.find(0xfffn), undefined);
  assert.is(t.find(0x1000n), a);
  assert.is(t.find(0x1fffn), a);
  assert.is(t.find(0x2000n), undefined);
  assert.is(t.find(0x3000n), b);
  assert.is(t.find(0x4fffn), b);
  assert.is(t.find(0x5000n), undefined);
  assert.is(t.get(0x3000n), b);
  assert.is(t.get(0x3001n), undefined);
  assert.equal(
    t.toArray().map((x) => x.tag),
    [1, 2],
  );
});

test('overlaps / overlapping: partial, inside, containing, adjacent', () => {
  const t = new IntervalTable<E>();
  const a = iv(0x2000n, 0x2000n, 1); // [0x2000, 0x4000)
  const b = iv(0x4000n, 0x1000n, 2); // adjacent
  t.insert(a);
  t.insert(b);
  assert.ok(t.overlaps(0x1000n, 0x3000n), 'partial from below');
  assert.ok(t.overlaps(0x2800n, 0x2900n), 'inside');
  assert.ok(t.overlaps(0n, 0x10000n), 'containing');
  assert.not.ok(t.overlaps(0x1000n, 0x2000n), 'adjacent below');
  assert.not.ok(t.overlaps(0x5000n, 0x6000n), 'adjacent above');
  assert.equal(
    t.overlapping(0x3fffn, 0x4001n).map((x) => x.tag),
    [1, 2],
  );
  assert.equal(
    t.overlapping(0n, 1n << 64n).map((x) => x.tag),
    [1, 2],
  );
  assert.equal(t.overlapping(0x5000n, 1n << 64n), []);
});

test('top of the 64-bit space', () => {
  const t = new IntervalTable<E>();
  const top = iv((1n << 64n) - 0x1000n, 0x1000n, 9);
  t.insert(top);
  assert.is(t.find((1n << 64n) - 1n), top);
  assert.ok(t.overlaps((1n << 64n) - 1n, 1n << 64n));
});

test('many entries: block splits and merges keep order and lookups', () => {
  const t = new IntervalTable<E>();
  const n = 5000;
  // Insert in a scrambled order (stride coprime to n) to exercise splits in the middle.
  for (let k = 0; k < n; k++) {
    const i = (k * 7919) % n;
    t.insert(iv(BigInt(i) * 0x2000n, 0x1000n, i));
  }
  assert.is(t.size, n);
  const arr = t.toArray();
  for (let i = 0; i < n; i++) assert.is(arr[i]!.tag, i);
  for (let i = 0; i < n; i += 37) {
    assert.is(t.find(BigInt(i) * 0x2000n + 0xfffn)!.tag, i);
    assert.is(t.find(BigInt(i) * 0x2000n + 0x1000n), undefined);
  }
  // Remove every other one, then check again.
  for (let i = 0; i < n; i += 2) assert.ok(t.remove(arr[i]!));
  assert.is(t.size, n / 2);
  for (let i = 0; i < n; i++) {
    const hit = t.find(BigInt(i) * 0x2000n);
    if (i % 2 === 0) assert.is(hit, undefined);
    else assert.is(hit!.tag, i);
  }
  assert.equal(
    t.overlapping(0n, 0x2000n * 10n).map((x) => x.tag),
    [1, 3, 5, 7, 9],
  );
  // Removing something not in the table (same iova, other object) is refused.
  assert.not.ok(t.remove(iv(0x2000n, 0x1000n, 1)));
  const rest = t.clear();
  assert.is(rest.length, n / 2);
  assert.is(t.size, 0);
});

test('randomized against a brute-force model', () => {
  let seed = 12345;
  const rnd = (m: number) => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % m;
  };
  const t = new IntervalTable<E>();
  const model: E[] = [];
  for (let step = 0; step < 20000; step++) {
    const start = BigInt(rnd(4096)) * 0x1000n;
    const size = BigInt(1 + rnd(8)) * 0x1000n;
    const end = start + size;
    const brute = model.filter((e) => e.iova < end && e.end > start).sort((a, b) => Number(a.iova - b.iova));
    assert.equal(t.overlapping(start, end), brute);
    assert.is(t.overlaps(start, end), brute.length > 0);
    if (rnd(3) !== 0 && brute.length === 0) {
      const e = iv(start, size, step);
      t.insert(e);
      model.push(e);
    } else if (brute.length > 0) {
      const victim = brute[rnd(brute.length)]!;
      assert.ok(t.remove(victim));
      model.splice(model.indexOf(victim), 1);
    }
    const probe = BigInt(rnd(4096 * 0x1000 + 0x8000));
    const expect = model.find((e) => probe >= e.iova && probe < e.end);
    assert.is(t.find(probe), expect);
  }
  assert.is(t.size, model.length);
});

test.run();
