// Hostile clients against a real vfio-user-server process (edu), over real sockets with real memfds, eventfds and
// pipes (docs/hardening.md). Each reproduction is one of issue #15's: before the fixes the server died (SIGBUS),
// stopped answering (a blocking interrupt write), spun at 100% CPU (a hung-up unmask fd) or spent seconds and
// gigabytes on a msgpack bomb. Each test ends with the server alive, a new client answered well within 100 ms,
// and the server's fd count (and RSS, where the attack allocated) back to its baseline.
import { execFileSync } from 'node:child_process';
import { ftruncateSync, readFileSync, writeSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { VfioUserClient } from 'vfio-user-client';
import { VfioUserClient as Client } from 'vfio-user-client';
import {
  addSeals,
  closeFd,
  eventfd,
  eventfdWrite,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  fdInfo,
  memfdCreate,
  O_NONBLOCK,
  pipe,
} from 'vfio-user-native';
import {
  Command,
  DeviceFeatureFlags,
  encodeMessage,
  encodeMigDeviceState,
  Feature,
  MigState,
  MsgFlags,
  SetIrqsFlags,
} from 'vfio-user-protocol';
import { Edu } from '../lib/edu-regs.js';
import { sleep } from '../lib/wait.js';
import { u32, u64 } from './helpers.js';
import { answers, client, ServerProcess, timedIdent } from './hostile-helpers.js';

const BAR0 = 0;
const CONFIG = 7;
const INTX = 0;
/** What "answering" means here (the bar): well below it even on a loaded 2-CPU machine. */
const ANSWER_MS = 100;

/** Gives INTx one eventfd (`fd`) for `action` (trigger or unmask). */
function setIntxFd(c: VfioUserClient, action: number, fd: number): Promise<unknown> {
  return c.setIrqs({ index: INTX, flags: SetIrqsFlags.DATA_EVENTFD | action, start: 0, count: 1, fds: [fd] });
}

let server: ServerProcess;
let baseFds = 0;
let baseRssKiB = 0;

test.before(async () => {
  server = await ServerProcess.start();
  await answers(server); // warm up: the first client loads code paths
  baseFds = await server.settledFds(-1, 300);
  baseRssKiB = server.stats().rssKiB;
});

test.after(async () => {
  await server.stop();
});

/** Alive, answering a new client within ANSWER_MS, fds back to the baseline. */
async function assertRecovered(what: string): Promise<number> {
  assert.ok(
    server.alive,
    `${what}: server died (${JSON.stringify(server.exit)}): ${server.stderr.slice(-1500)}`,
  );
  const ms = await answers(server);
  assert.ok(ms < ANSWER_MS, `${what}: next request answered in ${ms.toFixed(1)} ms`);
  const fds = await server.settledFds(baseFds);
  assert.is(fds, baseFds, `${what}: server fds back to the baseline`);
  return ms;
}

const wr = (c: VfioUserClient, reg: number, v: bigint) => c.regionWrite(BAR0, BigInt(reg), u64(v));
const rd32 = async (c: VfioUserClient, reg: number) =>
  Buffer.from(await c.regionRead(BAR0, BigInt(reg), 4)).readUInt32LE(0);

/**
 * Bus master on, then an edu DMA of `count` bytes (toRam: device -> guest memory). Returns 0 on success, else
 * edu's error code (DMA_ERROR is count << 16 | last code: a new error bumps the count).
 */
async function eduDma(c: VfioUserClient, iova: bigint, count: number, toRam: boolean): Promise<number> {
  await c.regionWrite(CONFIG, 4n, Uint8Array.of(0x06, 0x00));
  const before = await rd32(c, Edu.DMA_ERROR);
  await wr(c, Edu.DMA_SRC, toRam ? Edu.BUFFER : iova);
  await wr(c, Edu.DMA_DST, toRam ? iova : Edu.BUFFER);
  await wr(c, Edu.DMA_COUNT, BigInt(count));
  await wr(c, Edu.DMA_CMD, toRam ? 3n : 1n);
  const t0 = Date.now();
  while ((await rd32(c, Edu.DMA_CMD)) & 1) {
    if (Date.now() - t0 > 5000) throw new Error('edu DMA never finished');
    await sleep(1);
  }
  const after = await rd32(c, Edu.DMA_ERROR);
  return after >>> 16 === before >>> 16 ? 0 : after & 0xffff;
}

/** Runs `fn` with a fresh client, closed whatever happens (the server serves one client at a time). */
async function withClient(fn: (c: VfioUserClient) => Promise<void>): Promise<void> {
  const c = await client(server);
  try {
    await fn(c);
  } finally {
    c.close();
  }
}

test('1. a memfd truncated after DMA_MAP: the device gets a DMA error, no SIGBUS', async () => {
  for (const [truncateTo, offset, toRam] of [
    [0, 0, false],
    [0, 0, true],
    [4096, 8192, false],
    [4096, 8192, true],
  ] as const) {
    const fd = memfdCreate('hostile-shrink', 0x10000);
    await withClient(async (c) => {
      await c.dmaMap({ address: 0x100000n, size: 0x10000n, flags: 3, offset: 0n, fd });
      ftruncateSync(fd, truncateTo);
      const err = await eduDma(c, 0x100000n + BigInt(offset), 64, toRam);
      assert.ok(server.alive, `truncate to ${truncateTo}, DMA at +${offset}: server alive`);
      assert.is(err, 2, `edu reports a DMA fault`);
      // The same client carries on: a DMA inside the part still backed works.
      if (truncateTo > 0)
        assert.is(await eduDma(c, 0x100000n, 64, toRam), 0, 'the remaining page still works');
      assert.ok((await timedIdent(c)) < ANSWER_MS);
    });
    closeFd(fd);
    await assertRecovered(`truncate to ${truncateTo}`);
  }
});

test('1b. a sealed memfd (F_SEAL_SHRINK, as QEMU sends) keeps working through the fast path', async () => {
  const fd = memfdCreate('hostile-sealed', 0x10000);
  await withClient(async (c) => {
    addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW);
    await c.dmaMap({ address: 0x100000n, size: 0x10000n, flags: 3, offset: 0n, fd });
    assert.throws(() => ftruncateSync(fd, 0), /EPERM/);
    assert.is(await eduDma(c, 0x100000n, 4096, false), 0);
    assert.is(await eduDma(c, 0x108000n, 4096, true), 0);
  });
  closeFd(fd);
  await assertRecovered('sealed memfd');
});

test('2. a blocking eventfd at its maximum as the INTx trigger: the signal fails, the loop does not block', async () => {
  const efd = eventfd(0, { nonblock: false });
  eventfdWrite(efd, 0xfffffffffffffffen);
  await withClient(async (c) => {
    await setIntxFd(c, SetIrqsFlags.ACTION_TRIGGER, efd);
    // IRQ_RAISE: edu signals INTx from inside the REGION_WRITE handler.
    const t0 = performance.now();
    await c.regionWrite(BAR0, BigInt(Edu.IRQ_RAISE), u32(1), { timeoutMs: 2000 });
    const ms = performance.now() - t0;
    assert.ok(ms < ANSWER_MS, `IRQ_RAISE answered in ${ms.toFixed(1)} ms`);
    assert.ok((await timedIdent(c)) < ANSWER_MS);
  });
  closeFd(efd);
  await assertRecovered('full eventfd');
  assert.ok(
    server.records((r) => String(r.msg).startsWith('interrupt not signalled')).length >= 1,
    'the failed signal is logged',
  );
});

test('2b. a pipe nobody reads as the INTx trigger (full after 8,192 signals): never blocks', async () => {
  const [r, w] = pipe();
  // Fill the (blocking) pipe from our side first: the state after 8,192 MSIs nobody read (64 KiB).
  assert.not.ok(fdInfo(w).flags & O_NONBLOCK, 'a blocking write end');
  assert.is(writeSync(w, Buffer.alloc(65536)), 65536);
  await withClient(async (c) => {
    await setIntxFd(c, SetIrqsFlags.ACTION_TRIGGER, w);
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      await c.regionWrite(BAR0, BigInt(Edu.IRQ_RAISE), u32(1), { timeoutMs: 2000 });
      await c.regionWrite(BAR0, BigInt(Edu.IRQ_ACK), u32(1), { timeoutMs: 2000 });
      await c.unmaskIrqs(INTX, 0, 1);
      assert.ok(performance.now() - t0 < 3 * ANSWER_MS, 'raise/ack/unmask answered');
    }
  });
  closeFd(r);
  closeFd(w);
  await assertRecovered('full pipe');
});

test('3. an UNMASK fd that hangs up (pipe, write end closed): the watcher disarms, no busy loop', async () => {
  await withClient(async (c) => {
    const [r, w] = pipe();
    await setIntxFd(c, SetIrqsFlags.ACTION_UNMASK, r);
    closeFd(w);
    closeFd(r);
    await sleep(50);
    const share = await server.cpuShare(1000);
    assert.ok(share < 0.2, `server CPU while idle with a hung-up unmask fd: ${(share * 100).toFixed(0)}%`);
    assert.ok((await timedIdent(c)) < ANSWER_MS);
    assert.ok(
      server.records((x) => String(x.msg).startsWith('IRQ mask/unmask fd is dead')).length >= 1,
      'the dead fd is reported',
    );
  });
  await assertRecovered('hung-up unmask fd');
});

/** The migration stream frame: 'VUMS' + u32 length + body. */
function frameHeader(length: number): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x534d5556, 0);
  h.writeUInt32LE(length, 4);
  return h;
}

const setState = (c: VfioUserClient, s: number) =>
  c.deviceFeature({
    feature: Feature.MIG_DEVICE_STATE,
    ops: DeviceFeatureFlags.SET,
    data: encodeMigDeviceState({ deviceState: s }),
    timeoutMs: 30_000,
  });

for (const [name, element, count] of [
  ['128 Mi empty arrays', 0x90, 128 << 20],
  ['200 Mi nils', 0xc0, 200 << 20],
] as const) {
  test(`4. msgpack bomb during RESUMING (${name}): refused as it arrives, EINVAL in milliseconds, RSS bounded`, async () => {
    let ms = 0;
    let grewMiB = 0;
    let refusedAt = -1;
    let sentMiB = 0;
    await withClient(async (c) => {
      await c.reset();
      await setState(c, MigState.RESUMING);
      const body = 5 + count; // dd <u32 N> + N elements
      const head = Buffer.concat([frameHeader(body), Buffer.from([0xdd, 0, 0, 0, 0])]);
      head.writeUInt32BE(count, 9);
      const CHUNK = 1 << 20;
      const chunk = Buffer.alloc(CHUNK, element);
      let sent = 0;
      const total = head.length + count;
      let peakKiB = 0;
      const t0 = performance.now();
      // A client that keeps sending after the refusal gets EINVAL for every write; the server buffers none of it.
      for (let i = 0; sent < total && i < 32; i++) {
        const n = Math.min(CHUNK, total - sent);
        const data =
          sent === 0 ? Buffer.concat([head, chunk.subarray(0, n - head.length)]) : chunk.subarray(0, n);
        const errno = await c.migDataWrite(data, { timeoutMs: 10_000 }).then(
          () => 0,
          (e: { errno?: number }) => e.errno ?? -1,
        );
        if (errno !== 0) {
          assert.is(errno, 22, 'EINVAL for the write');
          if (refusedAt < 0) refusedAt = i;
        }
        sent += n;
        peakKiB = Math.max(peakKiB, server.stats().rssKiB);
      }
      sentMiB = sent / (1 << 20);
      assert.is(
        refusedAt,
        0,
        'the write carrying the bomb header is refused (the walk checks counts as they arrive)',
      );
      const err = await setState(c, MigState.STOP).then(
        () => undefined,
        (e: unknown) => e as { errno?: number },
      );
      ms = performance.now() - t0;
      peakKiB = Math.max(peakKiB, server.stats().rssKiB);
      assert.is(err?.errno, 22, 'EINVAL');
      assert.ok(ms < 3000, `writes and STOP refused in ${ms.toFixed(0)} ms`);
      grewMiB = (peakKiB - baseRssKiB) / 1024;
      // Nothing of the bomb is buffered: the growth is the transport's chunks in flight, not the data.
      assert.ok(grewMiB < 64, `RSS grew by ${grewMiB.toFixed(0)} MiB while ${sentMiB} MiB of bomb were sent`);
      assert.ok((await timedIdent(c)) < ANSWER_MS);
      await c.reset();
    });
    await assertRecovered(`msgpack bomb ${name}`);
    const afterMiB = (server.stats().rssKiB - baseRssKiB) / 1024;
    console.log(
      `  bomb ${name}: refused at write ${refusedAt}, ${sentMiB} MiB sent, writes + STOP -> EINVAL in ${ms.toFixed(1)} ms, RSS baseline ${(baseRssKiB / 1024).toFixed(0)} MiB, peak +${grewMiB.toFixed(0)} MiB, after +${afterMiB.toFixed(0)} MiB`,
    );
  });
}

test('5. a huge fd-backed DMA_MAP (1 TiB, sparse memfd) does not stall the loop; its far end still works', async () => {
  const TIB = 1n << 40n;
  const fd = memfdCreate('hostile-huge', TIB);
  let mapMs = 0;
  await withClient(async (c) => {
    const t0 = performance.now();
    await c.dmaMap({ address: 1n << 44n, size: TIB, flags: 3, offset: 0n, fd, timeoutMs: 20_000 });
    mapMs = performance.now() - t0;
    // The issue measured 2.6-3.3 s with the loop blocked before windows were mapped lazily (#14).
    assert.ok(mapMs < 1000, `1 TiB DMA_MAP answered in ${mapMs.toFixed(0)} ms`);
    assert.ok((await timedIdent(c)) < ANSWER_MS, 'the next request is answered at once');
    assert.is(await eduDma(c, (1n << 44n) + TIB - 4096n, 64, true), 0, 'DMA at the far end of the region');
    assert.is(await eduDma(c, 1n << 44n, 64, false), 0, 'and at its start');
    await c.dmaUnmap({ address: 1n << 44n, size: TIB });
  });
  closeFd(fd);
  await assertRecovered('1 TiB map');
  console.log(`  1 TiB DMA_MAP answered in ${mapMs.toFixed(1)} ms`);
});

test('5b. a 64 TiB DMA_MAP and a request pipelined behind it are both answered; DMA works at its far end', async () => {
  const SIZE = 64n << 40n;
  const IOVA = 1n << 50n;
  const fd = memfdCreate('hostile-64t', SIZE);
  await withClient(async (c) => {
    const t0 = performance.now();
    // The request behind the map is answered as soon as the map is: the map must not hold the loop for long.
    const map = c.dmaMap({ address: IOVA, size: SIZE, flags: 3, offset: 0n, fd, timeoutMs: 20_000 });
    const ident = timedIdent(c, 20_000);
    await map;
    const mapMs = performance.now() - t0;
    await ident;
    const bothMs = performance.now() - t0;
    // QEMU waits 5 s for any reply: generous, far above what is measured (docs: make bench).
    assert.ok(mapMs < 5000, `64 TiB DMA_MAP answered in ${mapMs.toFixed(0)} ms`);
    assert.ok(bothMs < 5000, `the request behind it answered after ${bothMs.toFixed(0)} ms`);
    assert.ok((await timedIdent(c)) < 1000, 'and the next one too');
    assert.is(await eduDma(c, IOVA + SIZE - 4096n, 64, true), 0, 'DMA at the far end of the region');
    await c.dmaUnmap({ address: IOVA, size: SIZE });
    console.log(
      `  64 TiB DMA_MAP answered in ${mapMs.toFixed(1)} ms, the request behind it after ${bothMs.toFixed(1)} ms`,
    );
  });
  closeFd(fd);
  await assertRecovered('64 TiB map');
});

test('5c. SIGTERM while a 64 TiB DMA_MAP is in flight: the server shuts down cleanly and promptly', async () => {
  const SIZE = 64n << 40n;
  const s = await ServerProcess.start();
  const fd = memfdCreate('hostile-64t-term', SIZE);
  try {
    const c = await client(s);
    const map = c.dmaMap({ address: 1n << 50n, size: SIZE, flags: 3, offset: 0n, fd, timeoutMs: 20_000 });
    map.catch(() => {}); // answered or cut off by the shutdown: either is fine
    closeFd(fd);
    const t0 = performance.now();
    s.child.kill('SIGTERM');
    // stop() would SIGKILL after 5 s; wait for the exit on its own, with a limit far above a normal shutdown.
    const exited = await Promise.race([s.exited.then(() => true), sleep(15_000).then(() => false)]);
    const ms = performance.now() - t0;
    c.close();
    assert.ok(exited, `the server exited after SIGTERM (waited ${ms.toFixed(0)} ms)`);
    assert.equal(s.exit, { code: 0, signal: null }, 'a clean exit, not a kill');
    assert.ok(
      s.records((r) => r.signal === 'SIGTERM' || /SIGTERM/.test(String(r.msg))).length >= 1,
      'it logged the signal',
    );
    console.log(`  SIGTERM with a 64 TiB DMA_MAP in flight: exited in ${ms.toFixed(0)} ms`);
  } finally {
    await s.stop();
  }
});

test('limits: a client that never sends VERSION is disconnected at the deadline; the next one is served', async () => {
  const s = await ServerProcess.start(['--version-timeout-ms', '300']);
  try {
    const base = await s.settledFds(-1, 300);
    const idle = await Client.connect(s.path);
    const t0 = performance.now();
    const closed = await Promise.race([idle.whenClosed().then(() => performance.now() - t0), sleep(3000)]);
    assert.ok(typeof closed === 'number', 'the server closed the idle connection');
    assert.ok((closed as number) >= 250 && (closed as number) < 1500, `closed after ${closed} ms`);
    idle.close();
    const ms = await answers(s);
    assert.ok(ms < ANSWER_MS);
    assert.is(await s.settledFds(base), base);
    assert.ok(s.records((r) => String(r.reason).startsWith('no VERSION within 300 ms')).length === 1);
  } finally {
    await s.stop();
  }
});

test('limits: 50,000 failing NO_REPLY messages make a few log lines, not megabytes', async () => {
  const before = server.stderrBytes;
  await withClient(async (c) => {
    // DMA_UNMAP without a payload: EINVAL, and NO_REPLY hides it from the client.
    const msg = encodeMessage({
      id: 7,
      command: Command.DMA_UNMAP,
      flags: MsgFlags.TYPE_COMMAND | MsgFlags.NO_REPLY,
    });
    for (let i = 0; i < 50_000; i++) c.sendRaw(msg);
    assert.ok((await timedIdent(c, 10_000)) < 10_000);
  });
  const logged = server.stderrBytes - before;
  assert.ok(logged < 16_384, `${logged} bytes of log for 50,000 failing messages`);
  assert.ok(
    server.records((r) => r.msg === 'NO_REPLY command failed').length >= 1,
    'the failure is still logged (once per interval)',
  );
  await assertRecovered('NO_REPLY flood');
});

test('limits: past the fd budget (RLIMIT_NOFILE less headroom) a DMA_MAP of a new file fails, not the session', async () => {
  // 600 fds: 88 distinct guest-memory files fit the budget (600 - 512 headroom).
  const s = await ServerProcess.start([], {}, ['prlimit', '--nofile=600:600']);
  const fds: number[] = [];
  try {
    const base = await s.settledFds(-1, 300);
    const c = await client(s);
    let ok = 0;
    let errno: number | undefined;
    for (let i = 0; i < 120 && errno === undefined; i++) {
      const fd = memfdCreate(`hostile-budget-${i}`, 4096);
      fds.push(fd);
      await c.dmaMap({ address: BigInt(i) << 20n, size: 4096n, flags: 3, offset: 0n, fd }).then(
        () => ok++,
        (e: { errno?: number }) => {
          errno = e.errno;
        },
      );
    }
    assert.is(errno, 24, 'EMFILE for the file past the budget');
    assert.is(ok, 88, 'every file within the budget was mapped');
    // A map of a file already held costs no fd: still fine.
    await c.dmaMap({ address: 0x80000000n, size: 4096n, flags: 3, offset: 0n, fd: fds[0]! });
    assert.ok((await timedIdent(c)) < ANSWER_MS);
    c.close();
    assert.ok((await answers(s)) < ANSWER_MS);
    assert.is(await s.settledFds(base), base, 'every file fd released with the session');
  } finally {
    for (const fd of fds) closeFd(fd);
    await s.stop();
  }
});

test('limits: SCM_RIGHTS truncated by the kernel (MSG_CTRUNC at RLIMIT_NOFILE) fails that DMA_MAP with EMFILE, not the session', async () => {
  const s = await ServerProcess.start();
  const fds: number[] = [];
  const soft = () => /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${s.pid}/limits`, 'utf8'))?.[1];
  const original = soft();
  try {
    const base = await s.settledFds(-1, 300);
    const c = await client(s);
    // The fd budget is sized from the limit at start-up. Lowered under the running server (an operator's
    // prlimit, or fds spent elsewhere), the limit is met by the kernel first: it cannot install the fd a DMA_MAP
    // carries and truncates the control data. Room for about 16 more fds:
    const limit = s.stats().fds + 16;
    execFileSync('prlimit', [`--pid=${s.pid}`, `--nofile=${limit}:`]);
    assert.is(soft(), String(limit));
    const map = (i: number, fd: number) =>
      c.dmaMap({ address: BigInt(i) << 20n, size: 4096n, flags: 3, offset: 0n, fd }).then(
        () => 0,
        (e: { errno?: number }) => e.errno ?? -1,
      );
    let ok = 0;
    let errno = 0;
    for (let i = 0; i < 64 && errno === 0; i++) {
      const fd = memfdCreate(`hostile-ctrunc-${i}`, 4096);
      fds.push(fd);
      errno = await map(i, fd);
      if (errno === 0) ok++;
    }
    assert.is(errno, 24, 'EMFILE for the DMA_MAP whose fd the kernel dropped');
    assert.ok(ok > 1, `${ok} files mapped before the limit`);
    assert.ok(s.alive, 'the server lives');
    assert.ok((await timedIdent(c)) < ANSWER_MS, 'the session answers the next request at once');
    // One readable line: the request, EMFILE and why.
    const lines = s.stderr.split('\n').filter((l) => l.includes('"EMFILE"'));
    assert.is(lines.length, 1, `one log line for the truncation: ${s.stderr.slice(-1500)}`);
    assert.ok(/"command":"DMA_MAP"/.test(lines[0]!) && lines[0]!.includes('MSG_CTRUNC'), lines[0]);
    // Room again (two mapped files released: the latest file keeps its fd for 250 ms after its last region, the
    // one before it does not, docs/dma-address-space.md): a new file maps, the session never noticed.
    await c.dmaUnmap({ address: BigInt(ok - 1) << 20n, size: 4096n });
    await c.dmaUnmap({ address: BigInt(ok - 2) << 20n, size: 4096n });
    const fd = memfdCreate('hostile-ctrunc-after', 4096);
    fds.push(fd);
    assert.is(await map(ok - 1, fd), 0, 'a later DMA_MAP with an fd succeeds');
    assert.is(await eduDma(c, BigInt(ok - 1) << 20n, 64, true), 0, 'and the device can DMA to it');
    c.close();
    execFileSync('prlimit', [`--pid=${s.pid}`, `--nofile=${original}:`]);
    assert.ok((await answers(s)) < ANSWER_MS);
    assert.is(await s.settledFds(base), base, 'every file fd released with the session');
  } finally {
    for (const fd of fds) closeFd(fd);
    await s.stop();
  }
});

test.run();
