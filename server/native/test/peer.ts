// Child-process peer for the cross-process tests. Its fd 3 is one end of a socketpair; argv[2] is the role.
// Not a test file itself (uvu only loads *.test.js).
import {
  Connection,
  closeFd,
  dupFd,
  eventfd,
  eventfdRead,
  eventfdWrite,
  FdWatcher,
  Listener,
  memfdCreate,
  mmap,
  openFds,
} from '../lib/index.js';
import { jsonFrame, mixedPlan, parseJson, patterned, taggedEventfds } from './helpers.js';

const role = process.argv[2];
// argv[3], when given, is a socket path: connect to it instead of using fd 3 (role 'emfile': listen on it).
const conn =
  role === 'emfile'
    ? (undefined as unknown as Connection)
    : process.argv[3]
      ? Connection.connect(process.argv[3])
      : Connection.fromFd(3);

function fail(msg: string): never {
  process.stderr.write(`peer(${role}): ${msg}\n`);
  process.exit(2);
}

if (role === 'memfd') {
  // Shares a memfd (written at an unaligned offset) and an eventfd; expects the parent to write back into the
  // memfd and signal the eventfd 3 times; signals the parent's eventfd 5 times.
  const OFF = 0x1234;
  const LEN = 4096;
  const memfd = memfdCreate('peer-ram', 1 << 20);
  const ram = new Uint8Array(mmap(memfd, 0n, 1 << 20));
  for (let i = 0; i < LEN; i++) ram[OFF + i] = (i * 7 + 3) & 0xff;
  let signals = 0n;
  const myEfd = eventfd(0);
  const watcher = new FdWatcher(myEfd, () => {
    signals += eventfdRead(myEfd);
    maybeDone();
  });
  let gotSignalRequest = false;
  let reported = false;
  function maybeDone() {
    if (signals < 3n || !gotSignalRequest || reported) return;
    reported = true;
    let sawReply = true;
    for (let i = 0; i < LEN; i++) if (ram[OFF + i] !== (0xa5 ^ (i & 0xff))) sawReply = false;
    conn.send(jsonFrame(3, 102, { op: 'result', signals: Number(signals), sawReply }));
  }
  conn.start({
    onMessage(data, fds) {
      const m = parseJson(data);
      if (m.op === 'signal-me') {
        if (fds.length !== 1) fail(`signal-me with ${fds.length} fds`);
        for (let i = 0; i < Number(m.times); i++) eventfdWrite(fds[0]!);
        closeFd(fds[0]!);
        gotSignalRequest = true;
        maybeDone();
      } else {
        for (const fd of fds) closeFd(fd);
      }
    },
    onClose() {
      watcher.close();
      closeFd(myEfd);
      process.exit(0);
    },
  });
  conn.send(jsonFrame(1, 100, { op: 'hello', offset: OFF, length: LEN }), [memfd, myEfd]);
  closeFd(memfd); // the mapping stays; the parent got its own reference
} else if (role === 'flood') {
  // 200 back-to-back messages of 16 B .. 70 KB with 0-3 tagged eventfds each, then 'done'.
  const plan = mixedPlan(200);
  conn.start({
    onMessage(_d, fds) {
      for (const fd of fds) closeFd(fd);
    },
    onClose() {
      process.exit(0);
    },
  });
  plan.forEach((p, seq) => {
    const fds = taggedEventfds(seq, p.nfds);
    conn.send(patterned(seq, p.size), fds);
    for (const fd of fds) closeFd(fd); // queued sends hold their own dups
  });
  conn.send(jsonFrame(0xffff, 101, { op: 'done' }));
} else if (role === 'idle') {
  conn.start({
    onMessage(_d, fds) {
      for (const fd of fds) closeFd(fd);
    },
    onClose() {
      process.exit(0);
    },
  });
  conn.send(jsonFrame(1, 100, { op: 'ready', pid: process.pid }));
} else if (role === 'ctrunc') {
  // Run under a low RLIMIT_NOFILE: fill the table to 4 free slots, then receive a message with 10 fds. The
  // kernel installs what fits and sets MSG_CTRUNC; the message must come marked (fdsTruncated) with no fds, the
  // fds that did arrive closed, and the connection must go on (the next message arrives as usual).
  const fillers: number[] = [];
  try {
    for (;;) fillers.push(dupFd(0));
  } catch {
    // EMFILE: the table is full
  }
  for (let i = 0; i < 4; i++) closeFd(fillers.pop()!);
  const baseline = openFds();
  const seen: { fds: number; fdsTruncated: boolean; open: number }[] = [];
  conn.start({
    onMessage(_d, fds, fdsTruncated) {
      seen.push({ fds: fds.length, fdsTruncated, open: openFds() });
      for (const fd of fds) closeFd(fd);
      if (seen.length < 2) return;
      for (const fd of fillers) closeFd(fd);
      process.stdout.write(`${JSON.stringify({ seen, baseline })}\n`);
      process.exit(0);
    },
    onClose(err) {
      process.stdout.write(`${JSON.stringify({ unexpected: 'closed', message: err?.message })}\n`);
      process.exit(0);
    },
  });
  conn.send(jsonFrame(1, 100, { op: 'ready' }));
} else if (role === 'emfile') {
  // Listen, then exhaust the fd table: accept4 fails with EMFILE, which is reported once; freeing fds lets the
  // listener's delayed retry accept the waiting connection.
  const lis = Listener.listen(process.argv[3]!);
  const fillers: number[] = [];
  const errors: string[] = [];
  let accepted = 0;
  lis.start(
    (c) => {
      accepted++;
      c.close();
      lis.close();
      process.stdout.write(`${JSON.stringify({ errors, accepted })}\n`);
      process.exit(0);
    },
    (err) => {
      errors.push((err as Error & { code: string }).code);
      for (const fd of fillers.splice(0)) closeFd(fd);
    },
  );
  try {
    for (;;) fillers.push(dupFd(0));
  } catch {
    // EMFILE: the table is full
  }
  process.stdout.write('listening\n');
} else {
  fail(`unknown role ${role}`);
}
