// Defences against a hostile client's fds, on real memfds, eventfds and pipes: guarded copies survive a memfd
// truncated under its mapping (SIGBUS), interrupt signals never block, hang-ups stop watchers, the fd limit.
import { ftruncateSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  closeFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  FdWatcher,
  fdInfo,
  guardedCopy,
  MAP_SHARED,
  memfdCreate,
  mmap,
  munmap,
  nofileLimit,
  O_NONBLOCK,
  PROT_READ,
  PROT_WRITE,
  pipe,
  setNofileLimit,
  setNonBlocking,
  signalFd,
} from '../lib/index.js';
import { noLeak, ticks } from './helpers.js';

const G = suite('native: guard');
const EAGAIN = 11;

G('guardedCopy copies both ways and refuses ranges outside the views', () =>
  noLeak(() => {
    const fd = memfdCreate('guard', 8192);
    const ab = mmap(fd, 0n, 8192, PROT_READ | PROT_WRITE, MAP_SHARED);
    const m = new Uint8Array(ab);
    const src = Uint8Array.from({ length: 100 }, (_, i) => i);
    assert.ok(guardedCopy(m, 4000, src, 10, 90));
    assert.equal([...m.subarray(4000, 4090)], [...src.subarray(10)]);
    const back = new Uint8Array(90);
    assert.ok(guardedCopy(back, 0, m, 4000, 90));
    assert.equal([...back], [...src.subarray(10)]);
    assert.ok(guardedCopy(back, 0, m, 0, 0), 'an empty copy is fine');
    assert.throws(() => guardedCopy(back, 1, m, 0, 90), /outside/);
    assert.throws(() => guardedCopy(back, 0, m, 8190, 4), /outside/);
    munmap(ab);
    closeFd(fd);
  }),
);

G('guardedCopy: a memfd truncated under its mapping is a false, not a SIGBUS; the process lives', () =>
  noLeak(() => {
    const fd = memfdCreate('guard-shrink', 65536);
    const ab = mmap(fd, 0n, 65536, PROT_READ | PROT_WRITE, MAP_SHARED);
    const m = new Uint8Array(ab);
    const buf = new Uint8Array(64);
    ftruncateSync(fd, 4096);
    assert.ok(guardedCopy(buf, 0, m, 0, 64), 'the first page is still there');
    assert.not.ok(guardedCopy(buf, 0, m, 8192, 64), 'read past the new end');
    assert.not.ok(guardedCopy(m, 8192, buf, 0, 64), 'write past the new end');
    assert.not.ok(guardedCopy(buf, 0, m, 4090, 64), 'straddling the end');
    ftruncateSync(fd, 0);
    for (let i = 0; i < 1000; i++)
      assert.not.ok(guardedCopy(buf, 0, m, 0, 64), 'repeated faults stay caught');
    ftruncateSync(fd, 65536);
    assert.ok(guardedCopy(buf, 0, m, 8192, 64), 'grown back: pages read as zero again');
    assert.equal([...buf], new Array(64).fill(0));
    munmap(ab);
    closeFd(fd);
  }),
);

G('signalFd never blocks: a full blocking eventfd answers EAGAIN, the flag is set again if cleared', () =>
  noLeak(() => {
    const fd = eventfd(0, { nonblock: false });
    eventfdWrite(fd, 0xfffffffffffffffen); // counter at its maximum: a blocking write(1) would wait
    const t0 = Date.now();
    assert.is(signalFd(fd), EAGAIN);
    assert.ok(Date.now() - t0 < 500);
    assert.ok(fdInfo(fd).flags & O_NONBLOCK, 'made non-blocking');
    assert.is(eventfdRead(fd), 0xfffffffffffffffen);
    assert.is(signalFd(fd), 0);
    assert.is(eventfdRead(fd), 1n);
    closeFd(fd);
  }),
);

G('signalFd on a pipe nobody reads: EAGAIN once full; setNonBlocking', () =>
  noLeak(() => {
    const [r, w] = pipe();
    setNonBlocking(w);
    assert.ok(fdInfo(w).flags & O_NONBLOCK);
    let n = 0;
    let err = signalFd(w);
    while (err === 0) {
      n++;
      err = signalFd(w);
    }
    assert.is(err, EAGAIN);
    assert.ok(n >= 512, `${n} signals fit`);
    closeFd(r);
    assert.is(signalFd(w), 32 /* EPIPE: no reader (SIGPIPE is ignored by Node) */);
    closeFd(w);
  }),
);

G('FdWatcher stops on a hang-up and reports EPIPE instead of waking on every loop turn', async () => {
  const [r, w] = pipe();
  let calls = 0;
  let error: (Error & { code?: string }) | undefined;
  const watcher = new FdWatcher(r, (err) => {
    calls++;
    if (err) error = err;
  });
  closeFd(w);
  await ticks(50);
  assert.is(calls, 1, 'one callback, not one per loop turn');
  assert.is(error?.code, 'EPIPE');
  watcher.close();
  closeFd(r);
});

G('nofileLimit / setNofileLimit', () => {
  const before = nofileLimit();
  assert.ok(before.soft > 0 || before.soft === -1);
  const lowered = setNofileLimit(Math.max(256, before.soft === -1 ? 4096 : before.soft - 1));
  assert.ok(lowered.soft <= (before.soft === -1 ? 4096 : before.soft));
  const back = setNofileLimit(before.soft === -1 ? 1 << 20 : before.soft);
  assert.is(back.hard, before.hard);
  assert.is(back.soft, before.soft === -1 ? back.soft : before.soft);
});

G.run();
