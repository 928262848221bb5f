// Block I/O on the threadpool: preadv/pwritev between a real file and mmapped memfd pages (and JS buffers),
// zero fill past EOF, the mapping kept busy while in flight, fallocate hole punching, fdatasync, bad arguments.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  blockFallocate,
  blockRead,
  blockReadNowait,
  blockSync,
  blockWrite,
  closeFd,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  MAP_SHARED,
  memfdCreate,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from '../lib/index.js';

const dir = mkdtempSync(join(tmpdir(), 'blockio-'));

test('pwritev from mapped pages and a JS buffer, preadv back into mapped pages; EOF reads zeros', async () => {
  const path = join(dir, 'a.img');
  writeFileSync(path, new Uint8Array(3 * 4096));
  const fd = openSync(path, 'r+');
  const mfd = memfdCreate('blockio', 4 * 4096);
  const ab = mmap(mfd, 0n, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED);
  try {
    const pages = new Uint8Array(ab);
    for (let i = 0; i < pages.length; i++) pages[i] = (i * 7) & 0xff;
    const js = new Uint8Array(100).fill(0xab);
    // Two discontiguous mapped pieces and a heap buffer, written at offset 512.
    const n = await blockWrite(fd, 512n, [pages.subarray(0, 1000), js, pages.subarray(8192, 9000)]);
    assert.is(n, 1000 + 100 + 808);
    const file = readFileSync(path);
    assert.equal(new Uint8Array(file.subarray(512, 1512)), pages.slice(0, 1000));
    assert.equal(new Uint8Array(file.subarray(1512, 1612)), js);
    assert.equal(new Uint8Array(file.subarray(1612, 2420)), pages.slice(8192, 9000));
    // Read back into a mapped page, running 4 KiB past the 12 KiB file end: the tail reads zeros.
    const dst = pages.subarray(4096, 4096 + 8192);
    const r = blockRead(fd, 8192n, [dst]);
    assert.throws(() => munmap(ab), /EBUSY|busy/, 'mapping busy while the read is in flight');
    assert.is(await r, 8192);
    assert.equal(dst.slice(0, 4096), new Uint8Array(file.subarray(8192, 12288)));
    assert.ok(
      dst.subarray(4096).every((b) => b === 0),
      'zeros past EOF',
    );
  } finally {
    munmap(ab);
    closeFd(mfd);
    closeSync(fd);
  }
});

test('preadv2 RWF_NOWAIT: a page-cache hit is read synchronously, a short read says -1', async () => {
  const path = join(dir, 'c.img');
  writeFileSync(path, new Uint8Array(8192).fill(7)); // just written: in the page cache
  const fd = openSync(path, 'r');
  try {
    const a = new Uint8Array(4096);
    const b = new Uint8Array(1024);
    assert.is(blockReadNowait(fd, 0n, [a, b]), 5120);
    assert.ok(a.every((x) => x === 7) && b.every((x) => x === 7));
    assert.is(blockReadNowait(fd, 4096n, [new Uint8Array(8192)]), -1, 'past EOF: short, use blockRead');
    assert.throws(() => blockReadNowait(fd, 0n, [new Uint16Array(2) as unknown as Uint8Array]), /Uint8Array/);
  } finally {
    closeSync(fd);
  }
});

test('fallocate punches a hole, fdatasync succeeds, errors reject with errno', async () => {
  const path = join(dir, 'b.img');
  writeFileSync(path, new Uint8Array(1 << 20).fill(1));
  const fd = openSync(path, 'r+');
  try {
    await blockSync(fd);
    const before = statSync(path).blocks;
    await blockFallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0n, 512n * 1024n);
    assert.ok(statSync(path).blocks < before, 'blocks freed');
    assert.is(statSync(path).size, 1 << 20, 'size kept');
    assert.ok(
      readFileSync(path)
        .subarray(0, 512 * 1024)
        .every((b) => b === 0),
    );
    await blockFallocate(fd, 0x7fff, 0n, 4096n).then(
      () => assert.unreachable('bad mode'),
      (e) => assert.is((e as { code?: string }).code, 'EOPNOTSUPP'),
    );
  } finally {
    closeSync(fd);
  }
  assert.throws(() => blockRead(-1, 0n, []), /fd/, 'negative fd: TypeError at the call');
  await blockRead(100000, 0n, [new Uint8Array(16)]).then(
    () => assert.unreachable('closed fd'),
    (e) => assert.is((e as { code?: string }).code, 'EBADF'),
  );
  assert.throws(() => blockWrite(0, 0n, [new Uint16Array(4) as unknown as Uint8Array]), /Uint8Array/);
  assert.throws(() => blockWrite(0, 0n, new Array(5000).fill(new Uint8Array(1))), /at most/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
