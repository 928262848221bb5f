// UNIX datagram sockets (sd_notify): path and abstract-namespace sockets, non-blocking send and receive, modes,
// errors, no fd leaks.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { bindDatagram, closeFd, FD_CLOEXEC, fdFlags, recvDatagram, sendDatagram } from '../lib/index.js';
import { type CodedError, noLeak } from './helpers.js';

const D = suite('native: datagram');

D('send to a bound path socket, receive in order, null when empty; socket file 0600; cloexec', () =>
  noLeak(() => {
    const dir = mkdtempSync(join(tmpdir(), 'vu-dgram-'));
    try {
      const path = join(dir, 'notify');
      const fd = bindDatagram(path);
      assert.ok(fdFlags(fd) & FD_CLOEXEC);
      assert.is(statSync(path).mode & 0o777, 0o600);
      assert.is(recvDatagram(fd), null);
      assert.is(sendDatagram(path, 'READY=1'), 7);
      assert.is(sendDatagram(path, new Uint8Array([0x53, 0x3d, 0x78])), 3);
      assert.is(recvDatagram(fd)?.toString(), 'READY=1');
      assert.is(recvDatagram(fd)?.toString(), 'S=x');
      assert.is(recvDatagram(fd), null);
      closeFd(fd);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }),
);

D('abstract namespace: @name', () =>
  noLeak(() => {
    const name = `@vfio-user-test-${process.pid}-${Date.now()}`;
    const fd = bindDatagram(name);
    sendDatagram(name, 'STATUS=hello\nREADY=1');
    assert.is(recvDatagram(fd)?.toString(), 'STATUS=hello\nREADY=1');
    closeFd(fd);
  }),
);

D('errors: nobody listening (ECONNREFUSED / ENOENT), empty and too-long paths', () =>
  noLeak(() => {
    const dir = mkdtempSync(join(tmpdir(), 'vu-dgram-'));
    try {
      const e1 = (() => {
        try {
          sendDatagram(join(dir, 'absent'), 'x');
        } catch (e) {
          return e as CodedError;
        }
      })();
      assert.is(e1?.code, 'ENOENT');
      assert.is(e1?.syscall, 'sendto');
      const e2 = (() => {
        try {
          sendDatagram(`@vfio-user-nobody-${process.pid}`, 'x');
        } catch (e) {
          return e as CodedError;
        }
      })();
      assert.is(e2?.code, 'ECONNREFUSED');
      assert.throws(() => sendDatagram('', 'x'), /EINVAL/);
      assert.throws(() => sendDatagram(`/${'a'.repeat(200)}`, 'x'), /ENAMETOOLONG/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }),
);

D.run();
