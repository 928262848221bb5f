// eventfd counters and FdWatcher readiness on real eventfds.
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, eventfd, eventfdRead, eventfdWrite, FD_CLOEXEC, FdWatcher, fdFlags } from '../lib/index.js';
import { type CodedError, noLeak, tick, ticks, waitFor } from './helpers.js';

const E = suite('native: eventfd');

E('write adds, read returns and resets; 0n when nothing is pending; always close-on-exec', () =>
  noLeak(() => {
    const fd = eventfd();
    assert.ok(fdFlags(fd) & FD_CLOEXEC);
    assert.is(eventfdRead(fd), 0n);
    eventfdWrite(fd);
    eventfdWrite(fd, 41n);
    assert.is(eventfdRead(fd), 42n);
    assert.is(eventfdRead(fd), 0n);
    closeFd(fd);
    const init = eventfd(7);
    assert.is(eventfdRead(init), 7n);
    closeFd(init);
  }),
);

E('semaphore mode reads 1 at a time', () =>
  noLeak(() => {
    const fd = eventfd(3, { semaphore: true });
    assert.equal([eventfdRead(fd), eventfdRead(fd), eventfdRead(fd), eventfdRead(fd)], [1n, 1n, 1n, 0n]);
    closeFd(fd);
  }),
);

E('eventfdRead never blocks, even on a blocking eventfd', () =>
  noLeak(() => {
    const fd = eventfd(0, { nonblock: false });
    const t0 = Date.now();
    assert.is(eventfdRead(fd), 0n);
    assert.ok(Date.now() - t0 < 1000);
    eventfdWrite(fd, 2n);
    assert.is(eventfdRead(fd), 2n);
    closeFd(fd);
  }),
);

E('FdWatcher counts signals from separate wakeups, stops after close()', () =>
  noLeak(async () => {
    const fd = eventfd();
    let total = 0n;
    let calls = 0;
    const w = new FdWatcher(fd, () => {
      calls++;
      total += eventfdRead(fd);
    });
    for (let i = 0; i < 5; i++) {
      eventfdWrite(fd);
      await waitFor(() => total === BigInt(i + 1), 2000, `signal ${i + 1}`);
    }
    assert.is(calls, 5);
    w.close();
    w.close();
    await tick();
    eventfdWrite(fd);
    await ticks(5);
    assert.is(calls, 5, 'no callbacks after close');
    closeFd(fd);
  }),
);

E('a second watcher on the same fd is EEXIST; errors carry the syscall', () =>
  noLeak(async () => {
    const fd = eventfd();
    const w = new FdWatcher(fd, () => {
      eventfdRead(fd);
    });
    let err: CodedError | undefined;
    try {
      new FdWatcher(fd, () => {});
    } catch (e) {
      err = e as CodedError;
    }
    assert.is(err?.code, 'EEXIST');
    assert.is(err?.syscall, 'uv_poll_init');
    w.close();
    await tick();
    closeFd(fd);
    let e2: CodedError | undefined;
    try {
      eventfdWrite(fd);
    } catch (e) {
      e2 = e as CodedError;
    }
    assert.is(e2?.code, 'EBADF');
    assert.is(e2?.syscall, 'write(eventfd)');
  }),
);

E('eventfdWrite past the counter maximum is EAGAIN on a non-blocking eventfd', () =>
  noLeak(() => {
    const fd = eventfd();
    eventfdWrite(fd, 0xfffffffffffffffen);
    let err: CodedError | undefined;
    try {
      eventfdWrite(fd, 1n);
    } catch (e) {
      err = e as CodedError;
    }
    assert.is(err?.code, 'EAGAIN');
    assert.is(eventfdRead(fd), 0xfffffffffffffffen);
    closeFd(fd);
  }),
);

E.run();
