// mmap/munmap on real memfds and files, seals, positioned I/O beyond 4 GiB, fd utilities.
import { ftruncateSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  addSeals,
  closeFd,
  dupFd,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  FD_CLOEXEC,
  fdFlags,
  fdInfo,
  fdInspect,
  getSeals,
  MAP_PRIVATE,
  MAP_SHARED,
  MAX_MAPPING_LENGTH,
  mapAddress,
  mappingCount,
  memfdCreate,
  mmap,
  munmap,
  O_RDONLY,
  O_RDWR,
  openFds,
  openPath,
  PROT_READ,
  PROT_WRITE,
  pread,
  pwrite,
  S_IFREG,
  socketpair,
} from '../lib/index.js';
import { noLeak, thrown, ticks } from './helpers.js';

const GiB = 1n << 30n;
const PAGE = 4096n;

const M = suite('native: memory');
let dir = '';
M.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vu-mem-'));
});
M.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

M('mmap at an unaligned offset sees what pwrite wrote; writes through the view reach the file', () =>
  noLeak(() => {
    const fd = memfdCreate('ram', 1 << 20);
    const off = 0x12345n;
    pwrite(fd, Buffer.from('guest data'), off);
    const ab = mmap(fd, off, 64, PROT_READ | PROT_WRITE, MAP_SHARED);
    const u8 = new Uint8Array(ab);
    assert.is(Buffer.from(u8.subarray(0, 10)).toString(), 'guest data');
    assert.is(mapAddress(ab) % PAGE, off % PAGE, 'view starts at the remainder within the page');
    u8.set(Buffer.from('reply'), 20);
    const back = Buffer.alloc(5);
    pread(fd, back, off + 20n);
    assert.is(back.toString(), 'reply');
    munmap(ab);
    closeFd(fd);
  }),
);

M('munmap detaches every view; a second munmap and foreign buffers are EINVAL', () =>
  noLeak(() => {
    const base = mappingCount();
    const fd = memfdCreate('ram', 8192);
    const ab = mmap(fd, 0n, 8192);
    const u8 = new Uint8Array(ab);
    const dv = new DataView(ab, 100);
    u8[0] = 1;
    assert.is(mappingCount(), base + 1);
    munmap(ab);
    assert.is(mappingCount(), base);
    assert.is(ab.byteLength, 0);
    assert.is(u8.length, 0);
    assert.is(u8[0], undefined);
    u8[0] = 5; // a no-op on a detached view, never a write to freed memory
    assert.throws(() => dv.getUint8(0), TypeError);
    const e = thrown(() => munmap(ab));
    assert.is(e.code, 'EINVAL');
    assert.is(e.syscall, 'munmap');
    assert.is(thrown(() => munmap(new ArrayBuffer(16))).code, 'EINVAL');
    assert.is(thrown(() => mapAddress(new ArrayBuffer(16))).code, 'EINVAL');
    assert.is(thrown(() => mapAddress(ab)).code, 'EINVAL');
    closeFd(fd);
  }),
);

M('mmap past EOF is refused (EOVERFLOW) instead of a later SIGBUS; up to EOF works', () =>
  noLeak(() => {
    const fd = memfdCreate('small', 10000);
    const e = thrown(() => mmap(fd, 8192n, 4096));
    assert.is(e.code, 'EOVERFLOW');
    assert.is(e.syscall, 'mmap');
    const ab = mmap(fd, 8192n, 10000 - 8192);
    assert.is(ab.byteLength, 1808);
    assert.is(new Uint8Array(ab)[1807], 0);
    munmap(ab);
    closeFd(fd);
  }),
);

M('lengths above buffer.constants.MAX_LENGTH are refused up front (map windows instead)', () =>
  noLeak(() => {
    const fd = memfdCreate('big', 5n * GiB); // sparse
    const e = thrown(() => mmap(fd, 0n, MAX_MAPPING_LENGTH + 4096));
    assert.ok(e instanceof RangeError);
    assert.is(e.code, 'ERR_OUT_OF_RANGE');
    // A 1 GiB window high in the file works.
    const ab = mmap(fd, 4n * GiB, Number(GiB));
    assert.is(ab.byteLength, Number(GiB));
    munmap(ab);
    closeFd(fd);
  }),
);

M('read-only file: PROT_WRITE|MAP_SHARED is EACCES; MAP_PRIVATE works and never reaches the file', () =>
  noLeak(() => {
    const path = join(dir, 'ro.bin');
    writeFileSync(path, Buffer.alloc(8192, 0x11));
    const fd = openPath(path, O_RDONLY);
    const e = thrown(() => mmap(fd, 0n, 8192, PROT_READ | PROT_WRITE, MAP_SHARED));
    assert.is(e.code, 'EACCES');
    assert.is(e.errno, 13);
    const ab = mmap(fd, 0n, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE);
    const u8 = new Uint8Array(ab);
    assert.is(u8[100], 0x11);
    u8.fill(0x22);
    assert.is(u8[100], 0x22);
    munmap(ab);
    assert.is(readFileSync(path)[100], 0x11);
    const ro = mmap(fd, 4096n, 100, PROT_READ, MAP_SHARED);
    assert.is(new Uint8Array(ro)[0], 0x11);
    munmap(ro);
    closeFd(fd);
  }),
);

M('prot without PROT_READ, unknown flags and bad lengths are refused', () =>
  noLeak(() => {
    const fd = memfdCreate('x', 4096);
    assert.is(thrown(() => mmap(fd, 0n, 4096, PROT_WRITE, MAP_SHARED)).code, 'EINVAL');
    assert.is(thrown(() => mmap(fd, 0n, 4096, PROT_READ, MAP_SHARED | MAP_PRIVATE)).code, 'EINVAL');
    assert.is(thrown(() => mmap(fd, 0n, 4096, PROT_READ, MAP_SHARED | 0x10 /* MAP_FIXED */)).code, 'EINVAL');
    assert.ok(thrown(() => mmap(fd, 0n, 0)) instanceof RangeError);
    assert.is(thrown(() => mmap(98765, 0n, 4096)).code, 'EBADF');
    closeFd(fd);
  }),
);

M('a mapping dropped without munmap is unmapped by the finalizer', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const fd = memfdCreate('gc', 4096);
  const base = mappingCount();
  (() => {
    for (let i = 0; i < 10; i++) new Uint8Array(mmap(fd, 0n, 4096))[0] = i;
  })();
  assert.is(mappingCount(), base + 10);
  for (let i = 0; i < 20 && mappingCount() > base; i++) {
    gc();
    await ticks(2);
  }
  assert.is(mappingCount(), base);
  closeFd(fd);
});

M(
  'fdInspect: the DMA_MAP facts in one call; a frozen-seals hint skips F_GET_SEALS for that same file only',
  () =>
    noLeak(() => {
      const a = memfdCreate('ram', 65536);
      addSeals(a, F_SEAL_SHRINK | F_SEAL_SEAL);
      const f = fdInspect(a);
      assert.equal(
        [f.format, f.exact, f.size, f.flags & 3, f.seals],
        [S_IFREG, true, 65536, O_RDWR, F_SEAL_SHRINK | F_SEAL_SEAL],
      );
      const info = fdInfo(a);
      assert.equal([BigInt(f.dev), BigInt(f.ino)], [info.dev, info.ino]);
      const sealed = { dev: f.dev, ino: f.ino, seals: F_SEAL_SHRINK | F_SEAL_SEAL };
      // Another fd of the same inode: the hint's seals are reported as they are (frozen by F_SEAL_SEAL). A hint
      // with different bits shows that they come from the hint, not from fcntl.
      const dup = dupFd(a);
      const ro = openPath(`/proc/self/fd/${a}`, O_RDONLY);
      assert.is(fdInspect(dup, sealed).seals, sealed.seals);
      assert.is(
        fdInspect(ro, { ...sealed, seals: F_SEAL_SEAL | F_SEAL_WRITE }).seals,
        F_SEAL_SEAL | F_SEAL_WRITE,
      );
      assert.is(
        fdInspect(ro, sealed).flags & 3,
        O_RDONLY,
        'F_GETFL still runs: the access mode is per open file',
      );
      // A hint without F_SEAL_SEAL is not trusted; another file ignores the hint.
      assert.is(fdInspect(dup, { ...sealed, seals: F_SEAL_SHRINK }).seals, F_SEAL_SHRINK | F_SEAL_SEAL);
      const b = memfdCreate('other', 4096);
      assert.is(fdInspect(b, { ...sealed, seals: F_SEAL_SEAL | F_SEAL_WRITE }).seals, 0);
      for (const fd of [a, dup, ro, b]) closeFd(fd);
    }),
);

M('memfd seals: SHRINK blocks ftruncate; WRITE needs no writable shared mapping; SEAL freezes', () =>
  noLeak(() => {
    const fd = memfdCreate('sealed', 65536);
    assert.is(getSeals(fd), 0);
    addSeals(fd, F_SEAL_SHRINK);
    assert.is(getSeals(fd), F_SEAL_SHRINK);
    assert.throws(() => ftruncateSync(fd, 4096), /EPERM/);
    ftruncateSync(fd, 131072); // growing is still allowed
    const ab = mmap(fd, 0n, 4096);
    assert.is(thrown(() => addSeals(fd, F_SEAL_WRITE)).code, 'EBUSY');
    munmap(ab);
    addSeals(fd, F_SEAL_WRITE | F_SEAL_SEAL);
    assert.is(getSeals(fd), F_SEAL_SHRINK | F_SEAL_WRITE | F_SEAL_SEAL);
    assert.is(thrown(() => pwrite(fd, Buffer.from('x'), 0n)).code, 'EPERM');
    assert.is(thrown(() => mmap(fd, 0n, 4096, PROT_READ | PROT_WRITE, MAP_SHARED)).code, 'EPERM');
    const e = thrown(() => addSeals(fd, F_SEAL_SHRINK));
    assert.is(e.code, 'EPERM');
    assert.is(e.syscall, 'fcntl(F_ADD_SEALS)');
    closeFd(fd);

    const unsealable = memfdCreate('plain', 4096, { allowSealing: false });
    assert.is(getSeals(unsealable), F_SEAL_SEAL);
    closeFd(unsealable);
    const path = join(dir, 'regular.bin');
    writeFileSync(path, 'x');
    const rfd = openPath(path, O_RDWR);
    const e2 = thrown(() => getSeals(rfd));
    assert.is(e2.code, 'EINVAL');
    assert.is(e2.errno, 22);
    closeFd(rfd);
  }),
);

M('pread/pwrite at offsets above 4 GiB on a sparse memfd; a window mmap sees the same bytes', () =>
  noLeak(() => {
    const fd = memfdCreate('sparse', 8n * GiB);
    assert.is(fdInfo(fd).size, 8n * GiB);
    const off = 5n * GiB + 123n;
    const data = Buffer.from('beyond four gigabytes');
    assert.is(pwrite(fd, data, off), data.length);
    const back = Buffer.alloc(data.length);
    assert.is(pread(fd, back, off), data.length);
    assert.is(back.toString(), data.toString());
    const ab = mmap(fd, off, 4096);
    assert.is(Buffer.from(new Uint8Array(ab, 0, data.length)).toString(), data.toString());
    munmap(ab);
    assert.is(pread(fd, Buffer.alloc(16), 8n * GiB - 8n), 8, 'short read at EOF');
    assert.is(pread(fd, Buffer.alloc(16), 9n * GiB), 0);
    closeFd(fd);
  }),
);

M('fdInfo identifies files; dupFd is close-on-exec and the same file; openFds counts', () =>
  noLeak(() => {
    const before = openFds();
    const fd = memfdCreate('id', 12345);
    const d = dupFd(fd);
    assert.is(openFds(), before + 2);
    const a = fdInfo(fd);
    const b = fdInfo(d);
    assert.is(a.type, 'file');
    assert.is(a.size, 12345n);
    assert.is(a.flags & 3, O_RDWR);
    assert.is(a.ino, b.ino);
    assert.is(a.dev, b.dev);
    assert.ok(fdFlags(d) & FD_CLOEXEC);
    assert.is(a.fsType, 0x01021994, 'memfd lives on tmpfs');
    const [s1, s2] = socketpair();
    assert.is(fdInfo(s1).type, 'socket');
    assert.is(fdInfo(openPathDir()).type, 'dir');
    for (const x of [fd, d, s1, s2, lastDir]) closeFd(x);
    assert.is(thrown(() => fdInfo(fd)).code, 'EBADF');
    assert.is(thrown(() => closeFd(fd)).code, 'EBADF');
  }),
);

let lastDir = -1;
function openPathDir(): number {
  lastDir = openPath(dir, O_RDONLY);
  return lastDir;
}

M('openPath: ENOENT carries syscall open and errno 2', () => {
  const e = thrown(() => openPath(join(dir, 'nope'), O_RDWR));
  assert.is(e.code, 'ENOENT');
  assert.is(e.errno, 2);
  assert.is(e.syscall, 'open');
});

M.run();
