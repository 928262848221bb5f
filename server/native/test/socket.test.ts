// Connection/Listener on real UNIX sockets: framing, fd passing, backpressure, close semantics, listener files.
import { lstatSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Connection,
  closeFd,
  closeIfSameOpenFile,
  dupFd,
  eventfd,
  eventfdRead,
  FD_CLOEXEC,
  fdFlags,
  fdInfo,
  Listener,
  memfdCreate,
  O_RDONLY,
  openFds,
  openPath,
  sameOpenFile,
  socketpair,
} from '../lib/index.js';
import {
  checkPatterned,
  closeAll,
  collect,
  frame,
  mixedPlan,
  noLeak,
  patterned,
  taggedEventfds,
  thrown,
  ticks,
  waitFor,
} from './helpers.js';

function pair(): [Connection, Connection] {
  const [a, b] = socketpair();
  return [Connection.fromFd(a), Connection.fromFd(b)];
}

async function closeBoth(a: Connection, b: Connection): Promise<void> {
  a.close();
  b.close();
  await ticks(2);
}

const S = suite('native: connection');

S(
  'sameOpenFile: an fd received is the open file description sent (kcmp); another open of the file is not',
  () =>
    noLeak(async () => {
      const [a, b] = pair();
      const rb = collect(b);
      const memfd = memfdCreate('ram', 4096);
      assert.ok(a.send(frame(1, 2), [memfd]));
      await waitFor(() => rb.msgs.length === 1, 2000, 'message');
      const got = rb.fds[0]![0]!;
      const ro = openPath(`/proc/self/fd/${memfd}`, O_RDONLY);
      const other = memfdCreate('other', 4096);
      assert.ok(got !== memfd && sameOpenFile(memfd, got), 'received over SCM_RIGHTS: the same description');
      const d = dupFd(got);
      assert.ok(sameOpenFile(got, d), 'dup');
      assert.ok(!sameOpenFile(memfd, ro), 'another open of the same file');
      assert.ok(!sameOpenFile(memfd, other), 'another file');
      assert.ok(!sameOpenFile(memfd, 1 << 20), 'a bad fd: false, no throw');
      for (const fd of [memfd, got, d, ro, other]) closeFd(fd);
      await closeBoth(a, b);
    }),
);

S(
  'closeIfSameOpenFile: takes a duplicate (at once outside a read burst, at its end inside one), leaves others',
  () =>
    noLeak(async () => {
      const memfd = memfdCreate('ram', 4096);
      const other = memfdCreate('other', 4096);
      const base = openFds();
      // Outside a read burst: closed at once.
      assert.ok(closeIfSameOpenFile(dupFd(memfd), memfd));
      assert.is(openFds(), base, 'closed at once');
      const ro = openPath(`/proc/self/fd/${memfd}`, O_RDONLY);
      assert.not.ok(closeIfSameOpenFile(ro, memfd), 'another open of the file');
      assert.not.ok(closeIfSameOpenFile(other, memfd), 'another file');
      assert.not.ok(closeIfSameOpenFile(memfd, memfd), 'the kept fd itself');
      assert.is(fdInfo(ro).type, 'file', 'left to the caller');
      closeFd(ro);
      // Inside a read burst (message handlers): each received duplicate is still open after the call, and gone
      // with the burst, the burst's duplicates by close_range.
      const [a, b] = pair();
      let stillOpen = 0;
      let taken = 0;
      b.start(
        {
          onMessage(_data, fds) {
            for (const fd of fds) {
              if (closeIfSameOpenFile(fd, memfd)) taken++;
              else closeFd(fd);
              if (fdInfo(fd).type === 'file') stillOpen++;
            }
          },
          onClose() {},
        },
        { framing: 'exact' },
      );
      for (let seq = 0; seq < 40; seq++) a.send(patterned(seq, 48), [memfd]);
      await waitFor(() => taken === 40, 2000, '40 duplicates taken');
      assert.is(stillOpen, 40, 'closed at the end of the burst, not in the handler');
      await waitFor(() => openFds() === base + 2, 2000, 'every duplicate closed (the socketpair left)');
      await closeBoth(a, b);
      closeFd(memfd);
      closeFd(other);
    }),
);

S('a message with eventfds arrives whole; the fds are new, close-on-exec and the same files', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const rb = collect(b);
    const efds = taggedEventfds(7, 2);
    assert.ok(a.send(frame(1, 2, Buffer.from('hello')), efds));
    const inos = efds.map((fd) => fdInfo(fd).ino);
    for (const fd of efds) closeFd(fd);
    await waitFor(() => rb.msgs.length === 1, 2000, 'message');
    assert.is(rb.msgs[0]!.subarray(16).toString(), 'hello');
    assert.is(rb.msgs[0]!.readUInt32LE(4), 21);
    assert.is(rb.fds[0]!.length, 2);
    rb.fds[0]!.forEach((fd, j) => {
      assert.ok(fdFlags(fd) & FD_CLOEXEC, 'received fd is close-on-exec');
      assert.is(fdInfo(fd).ino, inos[j]);
      assert.is(eventfdRead(fd), BigInt(7 * 4 + j + 1));
    });
    closeAll(rb.fds);
    await closeBoth(a, b);
  }),
);

S('orderly EOF: onClose fires once without an error; fd reads -1 afterwards', () =>
  noLeak(async () => {
    const [a, b] = pair();
    let closes = 0;
    let error: Error | undefined;
    b.start({
      onMessage() {},
      onClose(err) {
        closes++;
        error = err;
      },
    });
    assert.ok(b.fd >= 0);
    a.close();
    await waitFor(() => closes === 1, 2000, 'onClose');
    assert.is(error, undefined);
    assert.is(b.fd, -1);
    b.close();
    b.close();
    await ticks(3);
    assert.is(closes, 1);
    assert.is(b.send(frame(1, 1)), false, 'send after close is dropped');
  }),
);

for (const framing of ['bulk', 'exact'] as const) {
  S(`${framing}: a message split across several writes keeps its fds`, () =>
    noLeak(async () => {
      const [a, b] = pair();
      const rb = collect(b, { framing });
      const msg = patterned(5, 3000);
      const efds = taggedEventfds(5, 3);
      a.send(msg.subarray(0, 5), efds); // fds go with the first 5 bytes (not even a whole header)
      for (const fd of efds) closeFd(fd);
      await ticks(3);
      assert.is(rb.msgs.length, 0);
      a.send(msg.subarray(5, 1000));
      await ticks(3);
      a.send(msg.subarray(1000));
      await waitFor(() => rb.msgs.length === 1, 2000, 'message');
      assert.ok(checkPatterned(rb.msgs[0]!, 5));
      assert.equal(
        rb.fds[0]!.map((fd) => eventfdRead(fd)),
        [21n, 22n, 23n],
      );
      closeAll(rb.fds);
      await closeBoth(a, b);
    }),
  );

  S(`${framing}: 200 back-to-back messages of 16 B..70 KB with 0-3 fds each`, () =>
    noLeak(async () => {
      const [a, b] = pair();
      const rb = collect(b, { framing });
      const ra = collect(a);
      const plan = mixedPlan(200);
      let queued = false;
      plan.forEach((p, seq) => {
        const fds = taggedEventfds(seq, p.nfds);
        if (!a.send(patterned(seq, p.size), fds)) queued = true;
        for (const fd of fds) closeFd(fd);
      });
      await waitFor(() => rb.msgs.length === 200, 10000, '200 messages');
      for (let seq = 0; seq < 200; seq++) {
        assert.ok(checkPatterned(rb.msgs[seq]!, seq), `content of message ${seq}`);
        const tags = rb.fds[seq]!.map((fd) => eventfdRead(fd));
        assert.equal(
          tags,
          Array.from({ length: plan[seq]!.nfds }, (_, j) => BigInt(seq * 4 + j + 1)),
          `fds of message ${seq}`,
        );
      }
      assert.ok(queued, 'the sender hit backpressure at least once');
      await waitFor(() => ra.drains >= 1, 2000, 'onDrain');
      closeAll(rb.fds);
      await closeBoth(a, b);
    }),
  );
}

S('exact: two messages in one sendmsg with the fds for the first: the fds belong to the first', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const rb = collect(b, { framing: 'exact' });
    const efds = taggedEventfds(1, 2);
    a.send(Buffer.concat([patterned(1, 48), patterned(2, 40), patterned(3, 32)]), efds);
    for (const fd of efds) closeFd(fd);
    await waitFor(() => rb.msgs.length === 3, 2000, 'three messages');
    assert.equal(
      rb.fds[0]!.map((fd) => eventfdRead(fd)),
      [5n, 6n],
    );
    assert.is(rb.fds[1]!.length, 0);
    assert.is(rb.fds[2]!.length, 0);
    for (let i = 0; i < 3; i++) assert.ok(checkPatterned(rb.msgs[i]!, i + 1));
    closeAll(rb.fds);
    await closeBoth(a, b);
  }),
);

S(
  'exact: the first read at a message boundary (header and 32 bytes behind it) gives fds to the right message',
  () =>
    noLeak(async () => {
      const [a, b] = pair();
      const efds = [taggedEventfds(0, 1), taggedEventfds(2, 1), taggedEventfds(4, 1)].flat();
      // Each step is queued whole while the reader waits at a message boundary, so its first read takes a header
      // and the 32 bytes behind it.
      // 1. A message split by its sender: header alone, then the body with an fd: the fd is the message's.
      const split = patterned(0, 48);
      a.send(split.subarray(0, 16));
      a.send(split.subarray(16), [efds[0]!]);
      const rb = collect(b, { framing: 'exact' });
      await waitFor(() => rb.msgs.length === 1, 2000, 'message 0');
      // 2. A header-only message, then a 48-byte one with an fd in a sendmsg of its own: the read crosses into the
      //    second message, whose fd it brings (the kernel ends a read with the segment that carried fds).
      a.send(patterned(1, 16));
      a.send(patterned(2, 48), [efds[1]!]);
      await waitFor(() => rb.msgs.length === 3, 2000, 'messages 1-2');
      // 3. A 40-byte message with an fd behind a 24-byte one.
      a.send(patterned(3, 24));
      a.send(patterned(4, 40), [efds[2]!]);
      await waitFor(() => rb.msgs.length === 5, 2000, 'messages 3-4');
      for (const fd of efds) closeFd(fd);
      for (let seq = 0; seq < 5; seq++)
        assert.ok(checkPatterned(rb.msgs[seq]!, seq), `content of message ${seq}`);
      assert.equal(
        rb.fds.map((list) => list.map((fd) => eventfdRead(fd))),
        [[1n], [], [9n], [], [17n]],
      );
      closeAll(rb.fds);
      await closeBoth(a, b);
    }),
);

S('exact: 300 pipelined messages, every other one with an fd, read ahead header by header', () =>
  noLeak(async () => {
    const [a, b] = pair();
    collect(a); // drains what the socket buffer does not take at once
    // Written before the reader starts, so reads also find the next message's header.
    for (let seq = 0; seq < 300; seq++) {
      const fds = seq % 2 ? taggedEventfds(seq, 1) : [];
      a.send(patterned(seq, 16 + (seq % 5) * 8), fds);
      for (const fd of fds) closeFd(fd);
    }
    const rb = collect(b, { framing: 'exact' });
    await waitFor(() => rb.msgs.length === 300, 5000, '300 messages');
    for (let seq = 0; seq < 300; seq++) {
      assert.ok(checkPatterned(rb.msgs[seq]!, seq), `content of message ${seq}`);
      assert.equal(
        rb.fds[seq]!.map((fd) => eventfdRead(fd)),
        seq % 2 ? [BigInt(seq * 4 + 1)] : [],
        `fds of message ${seq}`,
      );
    }
    closeAll(rb.fds);
    await closeBoth(a, b);
  }),
);

S('replies sent from onMessage keep their order and their fds; one sent before close() still leaves', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const ra = collect(a);
    let results: boolean[] = [];
    b.start(
      {
        onMessage(data, fds) {
          for (const fd of fds) closeFd(fd);
          const seq = data.readUInt32LE(8);
          // Every third reply carries an eventfd: it must not travel with a corked reply before it.
          const efds = seq % 3 === 2 ? taggedEventfds(seq, 1) : [];
          results.push(b.send(patterned(seq, 24 + (seq % 4) * 100), efds));
          for (const fd of efds) closeFd(fd);
          if (seq === 99) b.close();
        },
        onClose() {},
      },
      { framing: 'exact' },
    );
    for (let seq = 0; seq < 100; seq++) a.send(patterned(seq, 32));
    await waitFor(() => ra.msgs.length === 100, 5000, '100 replies');
    assert.ok(
      results.every((r) => r),
      'send() inside onMessage reports the reply as sent',
    );
    for (let seq = 0; seq < 100; seq++) {
      assert.ok(checkPatterned(ra.msgs[seq]!, seq), `reply ${seq}`);
      assert.equal(
        ra.fds[seq]!.map((fd) => eventfdRead(fd)),
        seq % 3 === 2 ? [BigInt(seq * 4 + 1)] : [],
        `fds of reply ${seq}`,
      );
    }
    await waitFor(() => ra.closed, 2000, 'EOF after the last reply');
    results = [];
    closeAll(ra.fds);
    await closeBoth(a, b);
  }),
);

for (const framing of ['bulk', 'exact'] as const) {
  S(
    `${framing}: onInboxMessage answers by returning a length; declined messages reach onMessage with their fds`,
    () =>
      noLeak(async () => {
        const [a, b] = pair();
        const ra = collect(a);
        const slow: { seq: number; fds: number[]; bytes: Buffer }[] = [];
        const kept: number[] = [];
        b.start(
          {
            onInboxMessage(inbox, size, fds) {
              const seq = inbox.readUInt32LE(8);
              if (seq % 4 === 1) return -1; // declined: onMessage gets a copy, with the same fds
              if (fds) kept.push(...fds); // handled: the fds are ours
              if (seq % 4 === 2) return 0; // handled, no reply
              // The reply is built in the outbox from the inbox bytes, then sent by the addon.
              const n = 16 + (size - 16) * 2;
              b.outbox.set(inbox.subarray(0, size), 0);
              b.outbox.set(inbox.subarray(16, size), size);
              b.outbox.writeUInt32LE(n, 4);
              return n;
            },
            onMessage(data, fds) {
              slow.push({ seq: data.readUInt32LE(8), fds, bytes: data });
            },
            onClose() {},
          },
          { framing },
        );
        for (let seq = 0; seq < 40; seq++) {
          const m = patterned(seq, 24 + seq * 10);
          const efds = seq % 5 === 0 ? taggedEventfds(seq, 1) : [];
          a.send(m, efds);
          closeAll([efds]);
        }
        // a message bigger than the inbox (4,000 bytes) never takes the fast path
        a.send(patterned(41, 5000));
        await waitFor(() => slow.length === 11, 5000, 'declined messages');
        await waitFor(() => ra.msgs.length === 20, 5000, 'replies');
        assert.equal(
          slow.map((x) => x.seq),
          [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41],
        );
        for (const x of slow) {
          assert.ok(checkPatterned(x.bytes, x.seq), `copy of message ${x.seq}`);
          assert.equal(
            x.fds.map((fd) => eventfdRead(fd)),
            x.seq % 5 === 0 ? [BigInt(x.seq * 4 + 1)] : [],
            `fds of declined message ${x.seq}`,
          );
        }
        const replied = [...Array(40).keys()].filter((seq) => seq % 4 === 0 || seq % 4 === 3);
        replied.forEach((seq, i) => {
          const r = ra.msgs[i]!;
          const size = 24 + seq * 10;
          assert.is(r.length, 16 + (size - 16) * 2, `reply ${seq} length`);
          assert.is(r.readUInt32LE(8), seq, `reply ${i} is to message ${seq}: order kept`);
          assert.ok(r.subarray(size).equals(r.subarray(16, size)), `reply ${seq} body`);
        });
        assert.equal(
          kept.map((fd) => eventfdRead(fd)),
          [0, 5, 10, 15, 20, 25, 30, 35].filter((seq) => seq % 4 !== 1).map((seq) => BigInt(seq * 4 + 1)),
          'fds of handled messages',
        );
        closeAll([kept]);
        closeAll(slow.map((x) => x.fds));
        closeAll(ra.fds);
        await closeBoth(a, b);
      }),
  );
}

S('onInboxMessage returning more than the outbox holds fails the connection with ERANGE', () =>
  noLeak(async () => {
    const [a, b] = pair();
    let err: (Error & { code?: string }) | undefined;
    let closed = false;
    b.start({
      onInboxMessage: () => b.outbox.length + 1,
      onMessage() {},
      onClose(e) {
        closed = true;
        err = e;
      },
    });
    a.send(frame(1, 2));
    await waitFor(() => closed, 2000, 'onClose');
    assert.is(err?.code, 'ERANGE');
    await closeBoth(a, b);
  }),
);

for (const framing of ['bulk', 'exact'] as const) {
  S(`${framing}: direct reads answer plain REGION_READs of the given bytes while the budget lasts`, () =>
    noLeak(async () => {
      const [a, b] = pair();
      const ra = collect(a);
      const REGION_READ = 9; // the protocol's command number; the reply flag is 1 (a reply)
      const bytes = Uint8Array.from({ length: 300 }, (_, i) => (i * 13 + 5) & 0xff);
      const control = new Int32Array(new ArrayBuffer(8));
      b.setDirectReads({
        control,
        regions: [undefined, bytes],
        command: REGION_READ,
        replyFlags: 1,
        maxCount: 16,
        sendHigh: 1 << 20,
      });
      control[0] = 5;
      const seen: number[] = [];
      const seenFds: number[][] = [];
      b.start(
        {
          onMessage(data, fds) {
            seen.push(data.readUInt16LE(0));
            seenFds.push(fds);
          },
          onClose() {},
        },
        { framing },
      );
      const msg = (
        id: number,
        region: number,
        offset: number,
        count: number,
        o: { flags?: number; command?: number; extra?: number } = {},
      ) => {
        const m = Buffer.alloc(32 + (o.extra ?? 0));
        m.writeUInt16LE(id, 0);
        m.writeUInt16LE(o.command ?? REGION_READ, 2);
        m.writeUInt32LE(m.length, 4);
        m.writeUInt32LE(o.flags ?? 0, 8);
        m.writeBigUInt64LE(BigInt(offset), 16);
        m.writeUInt32LE(region, 24);
        m.writeUInt32LE(count, 28);
        return m;
      };
      const efd = eventfd(7);
      const send = (m: Buffer, fds?: number[]) => a.send(m, fds);
      send(msg(0, 1, 0, 4)); // answered
      send(msg(1, 1, 296, 4)); // answered: the last 4 bytes
      send(msg(2, 1, 297, 4)); // past the end
      send(msg(3, 0, 0, 4)); // a region without bytes
      send(msg(4, 1, 0, 4, { flags: 4 })); // NO_REPLY
      send(msg(5, 1, 0, 0)); // count 0
      send(msg(6, 1, 0, 17)); // more than maxCount
      send(msg(7, 1, 0, 4), [efd]); // comes with an fd
      send(msg(8, 1, 0, 4, { command: 10 })); // not a REGION_READ
      send(msg(9, 1, 0, 4, { extra: 8 })); // not 32 bytes
      await waitFor(() => seen.length === 8, 5000, 'declined reads');
      bytes[8] = 0xee; // the bytes are read where they lie: a change is seen by the next read
      send(msg(10, 1, 8, 8)); // answered
      send(msg(11, 1, 100, 16)); // answered
      send(msg(12, 1, 299, 1)); // answered: the budget is spent
      send(msg(13, 1, 0, 4)); // to JS
      await waitFor(() => seen.length === 9 && ra.msgs.length === 5, 5000, 'replies');
      assert.equal(seen, [2, 3, 4, 5, 6, 7, 8, 9, 13]);
      assert.is(seenFds[5]!.length, 1, 'the fd of the declined read reached onMessage');
      assert.is(control[0], 0, 'budget spent');
      assert.is(control[1], 5, 'reads answered');
      const want = [
        [0, 0, 4],
        [1, 296, 4],
        [10, 8, 8],
        [11, 100, 16],
        [12, 299, 1],
      ] as const;
      want.forEach(([id, offset, count], i) => {
        const r = ra.msgs[i]!;
        assert.is(r.length, 32 + count, `reply ${id}: length`);
        assert.is(r.readUInt16LE(0), id, 'id');
        assert.is(r.readUInt16LE(2), REGION_READ, 'command');
        assert.is(r.readUInt32LE(4), 32 + count, 'size');
        assert.is(r.readUInt32LE(8), 1, 'a reply');
        assert.is(r.readUInt32LE(12), 0, 'no error');
        assert.is(Number(r.readBigUInt64LE(16)), offset, 'offset echoed');
        assert.is(r.readUInt32LE(24), 1, 'region echoed');
        assert.is(r.readUInt32LE(28), count, 'count echoed');
        assert.equal([...r.subarray(32)], [...bytes.subarray(offset, offset + count)], `reply ${id}: data`);
      });
      assert.is(ra.msgs[2]![32], 0xee);
      closeAll(seenFds);
      closeFd(efd);
      await closeBoth(a, b);
    }),
  );
}

S('setDirectReads checks its arguments and refuses a closed connection', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const opts = {
      control: new Int32Array(2),
      regions: [new Uint8Array(300)],
      command: 9,
      replyFlags: 1,
      maxCount: 16,
      sendHigh: 1 << 20,
    };
    assert.match(thrown(() => b.setDirectReads({ ...opts, control: new Int32Array(1) })).message, /control/);
    assert.match(
      thrown(() => b.setDirectReads({ ...opts, control: new Uint32Array(2) as unknown as Int32Array }))
        .message,
      /control/,
    );
    assert.match(
      thrown(() => b.setDirectReads({ ...opts, regions: [new Uint16Array(4) as unknown as Uint8Array] }))
        .message,
      /regions\[0\]/,
    );
    b.setDirectReads(opts); // and again: the table is replaced
    b.setDirectReads(opts);
    b.close();
    assert.is((thrown(() => b.setDirectReads(opts)) as Error & { code?: string }).code, 'EBADF');
    await closeBoth(a, b);
  }),
);

S('bulk: fds glued behind an earlier fd-less message belong to the message that starts in that read', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const rb = collect(b);
    const m1 = patterned(1, 100);
    const m2 = patterned(2, 200);
    const efds = taggedEventfds(2, 1);
    a.send(Buffer.concat([m1, m2.subarray(0, 40)]), efds);
    closeFd(efds[0]!);
    await ticks(3);
    a.send(m2.subarray(40));
    await waitFor(() => rb.msgs.length === 2, 2000, 'two messages');
    assert.is(rb.fds[0]!.length, 0);
    assert.equal(
      rb.fds[1]!.map((fd) => eventfdRead(fd)),
      [9n],
    );
    closeAll(rb.fds);
    await closeBoth(a, b);
  }),
);

S('all messages of one wakeup are delivered in one callback scope (microtasks run after the last)', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const order: string[] = [];
    b.start({
      onMessage(_d, fds) {
        order.push('m');
        queueMicrotask(() => order.push('u'));
        for (const fd of fds) closeFd(fd);
      },
      onClose() {},
    });
    a.send(Buffer.concat([frame(1, 1), frame(2, 1), frame(3, 1)]));
    await waitFor(() => order.length === 6, 2000, 'three messages and their microtasks');
    assert.is(order.join(''), 'mmmuuu');
    await closeBoth(a, b);
  }),
);

S('the handlers object is `this` in callbacks', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const seen: unknown[] = [];
    const handlers = {
      tag: 'h',
      onMessage(this: { tag: string }) {
        seen.push(this.tag);
      },
      onClose(this: { tag: string }) {
        seen.push(`${this.tag}-closed`);
      },
    };
    b.start(handlers);
    a.send(frame(1, 1));
    await waitFor(() => seen.length === 1, 2000, 'message');
    a.close();
    await waitFor(() => seen.length === 2, 2000, 'close');
    assert.equal(seen, ['h', 'h-closed']);
  }),
);

for (const framing of ['bulk', 'exact'] as const) {
  S(`${framing}: size < 16 is EPROTO and closes the connection (fds that came with it are closed)`, () =>
    noLeak(async () => {
      const [a, b] = pair();
      const rb = collect(b, { framing });
      const bad = frame(1, 1);
      bad.writeUInt32LE(8, 4);
      const efd = eventfd(0);
      a.send(bad, [efd]);
      closeFd(efd);
      await waitFor(() => rb.closed, 2000, 'close');
      assert.is(rb.closeErr?.code, 'EPROTO');
      assert.is(rb.closeErr?.errno, 71);
      assert.is(rb.closeErr?.syscall, 'recvmsg');
      assert.is(rb.msgs.length, 0);
      a.close();
    }),
  );
}

S('size above maxMessageSize is EPROTO; setMaxMessageSize raises the cap', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const rb = collect(b, { maxMessageSize: 4096 });
    a.send(patterned(1, 4096));
    await waitFor(() => rb.msgs.length === 1, 2000, 'message at the cap');
    b.setMaxMessageSize(8192);
    a.send(patterned(2, 8192));
    await waitFor(() => rb.msgs.length === 2, 2000, 'message at the raised cap');
    a.send(patterned(3, 8193).subarray(0, 16)); // the header alone is enough to refuse
    await waitFor(() => rb.closed, 2000, 'close');
    assert.is(rb.closeErr?.code, 'EPROTO');
    assert.match(rb.closeErr?.message ?? '', /above the limit/);
    assert.throws(() => b.setMaxMessageSize(8), /at least 16|\[16/);
    a.close();
  }),
);

S('EOF in the middle of a message is EPROTO', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const rb = collect(b);
    a.send(patterned(1, 100).subarray(0, 50));
    await ticks(2);
    a.close();
    await waitFor(() => rb.closed, 2000, 'close');
    assert.is(rb.closeErr?.code, 'EPROTO');
    assert.match(rb.closeErr?.message ?? '', /middle of a message/);
  }),
);

S('backpressure: a large message to a paused peer queues, queued fds are dups, onDrain fires once', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const ra = collect(a);
    const rb = collect(b);
    b.pause();
    const big = patterned(1, 8 * 1024 * 1024);
    assert.is(a.send(big), false, 'an 8 MiB message cannot fit the socket buffer');
    assert.ok(a.queuedBytes > 0);
    const efds = taggedEventfds(2, 2);
    assert.is(a.send(frame(2, 1, Buffer.from('after')), efds), false, 'queued behind the big one');
    for (const fd of efds) closeFd(fd); // the queue holds its own duplicates
    await ticks(5);
    assert.is(rb.msgs.length, 0);
    assert.is(ra.drains, 0);
    b.resume();
    await waitFor(() => rb.msgs.length === 2, 10000, 'both messages');
    await waitFor(() => ra.drains === 1, 2000, 'onDrain');
    assert.is(a.queuedBytes, 0);
    assert.ok(checkPatterned(rb.msgs[0]!, 1));
    assert.is(rb.fds[0]!.length, 0);
    assert.is(rb.msgs[1]!.subarray(16).toString(), 'after');
    assert.equal(
      rb.fds[1]!.map((fd) => eventfdRead(fd)),
      [9n, 10n],
    );
    await ticks(3);
    assert.is(ra.drains, 1);
    closeAll(rb.fds);
    await closeBoth(a, b);
  }),
);

S('pause inside onMessage holds the rest; resume delivers it without new data', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const got: number[] = [];
    b.start({
      onMessage(d) {
        got.push(d.readUInt16LE(0));
        if (got.length === 1) b.pause();
      },
      onClose() {},
    });
    a.send(Buffer.concat([frame(1, 1), frame(2, 1), frame(3, 1)]));
    await waitFor(() => got.length === 1, 2000, 'first message');
    await ticks(5);
    assert.equal(got, [1]);
    b.resume();
    await waitFor(() => got.length === 3, 2000, 'the rest');
    assert.equal(got, [1, 2, 3]);
    await closeBoth(a, b);
  }),
);

S('close() inside onMessage stops delivery; undelivered fds are closed by the addon', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const got: number[] = [];
    let closes = 0;
    b.start({
      onMessage(d, fds) {
        got.push(d.readUInt16LE(0));
        for (const fd of fds) closeFd(fd);
        b.close();
      },
      onClose() {
        closes++;
      },
    });
    b.pause(); // let everything arrive first, in one buffer
    a.send(frame(1, 1));
    const efds = taggedEventfds(2, 3);
    a.send(frame(2, 1), efds);
    for (const fd of efds) closeFd(fd);
    a.send(frame(3, 1));
    await ticks(2);
    b.resume();
    await waitFor(() => closes === 1, 2000, 'close');
    assert.equal(got, [1]);
    a.close();
  }),
);

S('an exception thrown by onMessage reaches uncaughtException; the connection keeps working', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const errors: Error[] = [];
    const onUncaught = (err: Error) => errors.push(err);
    const saved = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', onUncaught);
    const got: number[] = [];
    try {
      b.start({
        onMessage(d) {
          got.push(d.readUInt16LE(0));
          if (got.length === 1) throw new Error('handler bug');
        },
        onClose() {},
      });
      a.send(frame(1, 1));
      await waitFor(() => errors.length === 1, 2000, 'uncaughtException');
      a.send(frame(2, 1));
      await waitFor(() => got.length === 2, 2000, 'second message');
    } finally {
      process.removeListener('uncaughtException', onUncaught);
      for (const l of saved) process.on('uncaughtException', l as (e: Error) => void);
    }
    assert.is(errors[0]!.message, 'handler bug');
    await closeBoth(a, b);
  }),
);

S('send: invalid fds throw EBADF without breaking the stream; > 253 fds is a RangeError', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const rb = collect(b);
    const e = thrown(() => a.send(frame(1, 1), [987654]));
    assert.is(e.code, 'EBADF');
    assert.is(e.syscall, 'sendmsg');
    assert.throws(
      () => a.send(frame(1, 1), new Array(254).fill(0)),
      (err: Error) => err instanceof RangeError,
    );
    assert.throws(
      () => a.send(new Uint8Array(0), [0]),
      (err: Error) => err instanceof RangeError,
    );
    assert.ok(a.send(frame(2, 1)));
    await waitFor(() => rb.msgs.length === 1, 2000, 'message');
    assert.is(rb.msgs[0]!.readUInt16LE(0), 2);
    await closeBoth(a, b);
  }),
);

S('start twice is refused (EALREADY)', () =>
  noLeak(async () => {
    const [a, b] = pair();
    collect(b);
    const e = thrown(() => collect(b));
    assert.is(e.code, 'EALREADY');
    await closeBoth(a, b);
  }),
);

S('a peer that disappears: send reports EPIPE through onClose', () =>
  noLeak(async () => {
    const [a, b] = pair();
    const ra = collect(a);
    a.pause(); // not reading: the EOF goes unnoticed, the write discovers the loss
    b.close();
    await ticks(2);
    assert.is(ra.closed, false);
    assert.is(a.send(frame(1, 1)), false);
    await waitFor(() => ra.closed, 2000, 'close');
    assert.is(ra.closeErr?.code, 'EPIPE');
    assert.is(ra.closeErr?.syscall, 'sendmsg');
    assert.is(a.send(frame(1, 1)), false);
  }),
);

S(
  'prefill carries a MSG_CTRUNC mark across a hand-over: no fds, fdsTruncated, the next message is plain',
  async () => {
    const [a, b] = pair();
    const efd = eventfd(0);
    const marks: boolean[] = [];
    const fds: number[][] = [];
    b.prefill(frame(1, 2), [efd], true); // the fds that came before the truncation: closed by the connection
    b.prefill(frame(2, 3));
    b.start({
      onMessage(_data, f, fdsTruncated) {
        fds.push(f);
        marks.push(fdsTruncated);
      },
      onClose() {},
    });
    await waitFor(() => marks.length === 2, 2000, 'two prefilled messages');
    assert.equal(marks, [true, false]);
    assert.equal(fds, [[], []]);
    assert.throws(() => fdFlags(efd), /EBADF/, 'the partial set was closed');
    await closeBoth(a, b);
  },
);

S.run();

// ------------------------------------------------------------------------------------------------ Listener

const L = suite('native: listener');
let dir = '';

L.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'vu-native-'));
});
L.after(() => {
  rmSync(dir, { recursive: true, force: true });
});

L('listen creates the socket file 0600 by default and accepts; peer credentials are ours', () =>
  noLeak(async () => {
    const path = join(dir, 'a.sock');
    const oldMask = process.umask(0o002);
    let lis: Listener;
    try {
      lis = Listener.listen(path);
    } finally {
      process.umask(oldMask);
    }
    assert.is(lis.path, path);
    assert.ok(lstatSync(path).isSocket());
    assert.is(statSync(path).mode & 0o777, 0o600);
    const accepted: Connection[] = [];
    lis.start((c) => accepted.push(c));
    const client = Connection.connect(path);
    await waitFor(() => accepted.length === 1, 2000, 'accept');
    const server = accepted[0]!;
    assert.equal(server.peerCredentials(), {
      pid: process.pid,
      uid: process.getuid!(),
      gid: process.getgid!(),
    });
    assert.equal(client.peerCredentials().pid, process.pid);
    const rs = collect(server);
    client.send(frame(9, 1));
    await waitFor(() => rs.msgs.length === 1, 2000, 'message');
    client.close();
    await waitFor(() => rs.closed, 2000, 'close');
    lis.close();
    assert.throws(() => lstatSync(path), /ENOENT/);
  }),
);

L('mode is exact regardless of the umask', () =>
  noLeak(() => {
    const path = join(dir, 'b.sock');
    const oldMask = process.umask(0o077);
    try {
      const lis = Listener.listen(path, { mode: 0o660 });
      assert.is(statSync(path).mode & 0o777, 0o660);
      lis.close();
    } finally {
      process.umask(oldMask);
    }
  }),
);

L('a stale socket file is replaced; a live one gives EADDRINUSE; a non-socket is never removed', () =>
  noLeak(async () => {
    const path = join(dir, 'c.sock');
    const first = Listener.listen(path);
    first.close({ unlink: false });
    await ticks(2);
    assert.ok(lstatSync(path).isSocket(), 'stale file left behind');
    const second = Listener.listen(path);
    const accepted: Connection[] = [];
    second.start((c) => accepted.push(c));
    const e = thrown(() => Listener.listen(path));
    assert.is(e.code, 'EADDRINUSE');
    assert.is(e.syscall, 'bind');
    // the live listener still works (the probe connection was accepted too; close everything)
    const client = Connection.connect(path);
    await waitFor(() => accepted.length >= 2, 2000, 'accepts');
    client.close();
    for (const c of accepted) c.close();
    second.close();

    const file = join(dir, 'not-a-socket');
    writeFileSync(file, 'keep me');
    const e2 = thrown(() => Listener.listen(file));
    assert.is(e2.code, 'EADDRINUSE');
    assert.is(readFileSync(file, 'utf8'), 'keep me');
  }),
);

L('close() only unlinks the file it created', () =>
  noLeak(async () => {
    const path = join(dir, 'd.sock');
    const first = Listener.listen(path);
    first.close({ unlink: false });
    const second = Listener.listen(path); // replaced the stale file: a new inode
    first.close(); // idempotent, and must not remove second's file
    assert.ok(lstatSync(path).isSocket());
    second.close();
    assert.throws(() => lstatSync(path), /ENOENT/);
  }),
);

L('adopt() takes an inherited listening fd; a non-listening fd is EINVAL', () =>
  noLeak(async () => {
    const path = join(dir, 'e.sock');
    const orig = Listener.listen(path);
    const lis = Listener.adopt(dupFd(orig.fd));
    orig.close({ unlink: false });
    const accepted: Connection[] = [];
    lis.start((c) => accepted.push(c));
    const client = Connection.connect(path);
    await waitFor(() => accepted.length === 1, 2000, 'accept');
    client.close();
    accepted[0]!.close();
    lis.close();
    const [x, y] = socketpair();
    const e = thrown(() => Listener.adopt(x));
    assert.is(e.code, 'EINVAL');
    closeFd(x);
    closeFd(y);
  }),
);

L('connect to a missing path is ENOENT (syscall connect); a too-long path is ENAMETOOLONG', () => {
  const e = thrown(() => Connection.connect(join(dir, 'missing.sock')));
  assert.is(e.code, 'ENOENT');
  assert.is(e.errno, 2);
  assert.is(e.syscall, 'connect');
  const e2 = thrown(() => Listener.listen(join(dir, 'x'.repeat(200))));
  assert.is(e2.code, 'ENAMETOOLONG');
});

L.run();
