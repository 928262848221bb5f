// Cross-process: a child (test/peer.ts) on the other end of a socketpair sends memfds and eventfds; shared
// memory and interrupts work both ways; 200 mixed messages; peer credentials; MSG_CTRUNC under RLIMIT_NOFILE.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Connection,
  closeFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  FdWatcher,
  fdInfo,
  Listener,
  mmap,
  munmap,
  socketpair,
} from '../lib/index.js';
import {
  checkPatterned,
  childDone,
  closeAll,
  collect,
  havePrlimit,
  jsonFrame,
  mixedPlan,
  noLeak,
  parseJson,
  spawnPeer,
  waitFor,
  withTimeout,
} from './helpers.js';

const P = suite('native: cross-process');

/** A socketpair whose far end goes to a child as fd 3 (our copy of that end is closed once spawned). */
function withChild(role: string, opts: { nofile?: number } = {}) {
  const [mine, theirs] = socketpair();
  const child = spawnPeer(role, theirs, opts);
  const done = childDone(child);
  closeFd(theirs);
  return { conn: Connection.fromFd(mine), child, done };
}

P('memfd at an unaligned offset and eventfds: both sides see each other’s writes and signals', () =>
  noLeak(async () => {
    const { conn, done } = withChild('memfd');
    const r = collect(conn);
    await waitFor(() => r.msgs.length >= 1, 10000, 'hello from the child');
    const hello = parseJson(r.msgs[0]!);
    const [memfd, childEfd] = r.fds[0]!;
    assert.is(hello.op, 'hello');
    assert.ok(memfd !== undefined && childEfd !== undefined);
    assert.is(fdInfo(memfd!).type, 'file');
    const off = BigInt(hello.offset as number);
    const len = hello.length as number;
    const ab = mmap(memfd!, off, len);
    const view = new Uint8Array(ab);
    for (let i = 0; i < len; i++) assert.is(view[i], (i * 7 + 3) & 0xff, `byte ${i} written by the child`);
    for (let i = 0; i < len; i++) view[i] = 0xa5 ^ (i & 0xff);
    for (let i = 0; i < 3; i++) eventfdWrite(childEfd!);

    const myEfd = eventfd();
    let signals = 0n;
    const w = new FdWatcher(myEfd, () => {
      signals += eventfdRead(myEfd);
    });
    conn.send(jsonFrame(2, 101, { op: 'signal-me', times: 5 }), [myEfd]);
    await waitFor(() => r.msgs.length >= 2, 10000, 'result from the child');
    const result = parseJson(r.msgs[1]!);
    assert.equal(result, { op: 'result', signals: 3, sawReply: true });
    await waitFor(() => signals === 5n, 5000, '5 signals from the child');
    w.close();
    closeFd(myEfd);
    munmap(ab);
    closeFd(memfd!);
    closeFd(childEfd!);
    conn.close();
    const exit = await withTimeout(done, 10000, 'child exit');
    assert.is(exit.code, 0);
  }),
);

for (const framing of ['bulk', 'exact'] as const) {
  P(`${framing}: 200 back-to-back mixed messages with 0-3 fds from another process`, () =>
    noLeak(async () => {
      const { conn, done } = withChild('flood');
      const r = collect(conn, { framing });
      await waitFor(() => r.msgs.length === 201, 20000, '200 messages + done');
      const plan = mixedPlan(200);
      for (let seq = 0; seq < 200; seq++) {
        assert.ok(checkPatterned(r.msgs[seq]!, seq), `content of message ${seq}`);
        assert.equal(
          r.fds[seq]!.map((fd) => eventfdRead(fd)),
          Array.from({ length: plan[seq]!.nfds }, (_, j) => BigInt(seq * 4 + j + 1)),
          `fds of message ${seq}`,
        );
      }
      assert.is(parseJson(r.msgs[200]!).op, 'done');
      closeAll(r.fds);
      conn.close();
      assert.is((await withTimeout(done, 10000, 'child exit')).code, 0);
    }),
  );
}

P(
  'a child connects to a Listener; peer credentials name the child (a socketpair would name its creator)',
  () =>
    noLeak(async () => {
      const dir = mkdtempSync(join(tmpdir(), 'vu-proc-'));
      const path = join(dir, 'l.sock');
      const lis = Listener.listen(path);
      const accepted: Connection[] = [];
      lis.start((c) => accepted.push(c));
      const child = spawnPeer('idle', path);
      const done = childDone(child);
      await waitFor(() => accepted.length === 1, 10000, 'accept');
      const conn = accepted[0]!;
      const r = collect(conn);
      await waitFor(() => r.msgs.length === 1, 10000, 'ready');
      assert.is(parseJson(r.msgs[0]!).pid, child.pid);
      assert.equal(conn.peerCredentials(), {
        pid: child.pid,
        uid: process.getuid!(),
        gid: process.getgid!(),
      });
      conn.close();
      assert.is((await withTimeout(done, 10000, 'child exit')).code, 0);
      lis.close();
      rmSync(dir, { recursive: true, force: true });
    }),
);

P('socketpair credentials are the creator’s, in both processes', () =>
  noLeak(async () => {
    const { conn, done } = withChild('idle');
    const r = collect(conn);
    await waitFor(() => r.msgs.length === 1, 10000, 'ready');
    assert.is(conn.peerCredentials().pid, process.pid);
    conn.close();
    assert.is((await withTimeout(done, 10000, 'child exit')).code, 0);
  }),
);

P(
  'MSG_CTRUNC (receiver out of fds) marks that message, closes what arrived, and the connection goes on',
  async () => {
    if (!havePrlimit()) {
      console.log('  (skipped: prlimit not installed)');
      return;
    }
    await noLeak(async () => {
      const { conn, done } = withChild('ctrunc', { nofile: 64 });
      const r = collect(conn);
      await waitFor(() => r.msgs.length === 1, 10000, 'ready');
      const fds = Array.from({ length: 10 }, () => eventfd());
      conn.send(jsonFrame(2, 100, { op: 'take these' }), fds);
      for (const fd of fds) closeFd(fd);
      conn.send(jsonFrame(3, 100, { op: 'and this, without fds' }));
      const exit = await withTimeout(done, 10000, 'child exit');
      assert.is(exit.code, 0);
      const report = JSON.parse(exit.stdout.trim()) as {
        seen: { fds: number; fdsTruncated: boolean; open: number }[];
        baseline: number;
      };
      assert.equal(
        report.seen.map((s) => [s.fds, s.fdsTruncated]),
        [
          [0, true],
          [0, false],
        ],
        'the truncated message comes marked and without fds; the next one as usual',
      );
      assert.is(report.seen[0]!.open, report.baseline, 'the fds that did arrive were closed');
      conn.close();
    });
  },
);

P('accept4 EMFILE is reported, then retried after a pause (no busy loop)', async () => {
  if (!havePrlimit()) {
    console.log('  (skipped: prlimit not installed)');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'vu-emfile-'));
  const path = join(dir, 'l.sock');
  const child = spawnPeer('emfile', path, { nofile: 64 });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  const done = childDone(child);
  await waitFor(() => out.includes('listening'), 10000, 'child listening');
  const client = Connection.connect(path); // completes in the kernel backlog; the child cannot accept yet
  const exit = await withTimeout(done, 10000, 'child exit');
  client.close();
  rmSync(dir, { recursive: true, force: true });
  assert.is(exit.code, 0);
  const report = JSON.parse(out.split('\n').filter((l) => l.startsWith('{'))[0]!) as {
    errors: string[];
    accepted: number;
  };
  assert.equal(report, { errors: ['EMFILE'], accepted: 1 });
});

P.run();
