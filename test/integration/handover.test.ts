// Hand-over (docs/handover.md) without QEMU: the real `vfio-user-server` program serving edu to the client
// library (DMA maps of real memfds, IRQ eventfds, edu DMA), handed over to a new process with SIGUSR2 several
// times while the client keeps doing MMIO and edu DMA; the PID changes, the client never notices. Then the
// failure paths: a successor that fails to start, one of an incompatible build, one that hangs (never READY),
// a shutdown signal in the middle of a hand-over, and a successor refusing a state of another format; each time
// the running server keeps serving (or stops cleanly) and the successor it gave up on is killed. Every test ends
// by checking that no process it started (each has the test's temp dir on its command line) survives it.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GuestMemory, VfioUserClient } from 'vfio-user-client';
import { Connection, closeFd, socketpair } from 'vfio-user-native';
import { Edu } from '../lib/edu-regs.js';
import { killStrays, pidAlive } from '../lib/procs.js';
import { sleep, until } from '../lib/wait.js';
import { readU32, u32, u64 } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
// test/dist/integration -> server/bin/vfio-user-server.js
const BIN = join(here, '..', '..', '..', 'server', 'bin', 'vfio-user-server.js');
const CLI = join(here, '..', '..', '..', 'server', 'dist', 'src', 'cli.js');
const NATIVE = join(here, '..', '..', '..', 'server', 'native', 'dist', 'lib', 'index.js');
const STATE = join(here, '..', '..', '..', 'server', 'dist', 'src', 'handover', 'state.js');
const BAR0 = 0;
const CONFIG = 7;
const INTX = 0;

interface Running {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  dir: string;
  path: string;
}

/** Starts `node <script> --socket-path ...` with JSON logs collected (from every process writing to the pipe). */
async function startCli(script: string, dir: string, extra: string[] = []): Promise<Running> {
  const path = join(dir, 'vu.sock');
  const child = spawn(process.execPath, [script, '--socket-path', path, '--log-format', 'json', ...extra], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let buf = '';
  child.stderr!.on('data', (d: Buffer) => {
    buf += d.toString();
    let nl = buf.indexOf('\n');
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        logs.push({ msg: line });
      }
      nl = buf.indexOf('\n');
    }
  });
  const r = { child, logs, dir, path };
  await until(() => logs.some((l) => l.msg === 'ready'), 10_000, 'the server to be ready');
  return r;
}

const logged = (r: Running, msg: string) => r.logs.filter((l) => l.msg === msg);

const rd = async (c: VfioUserClient, reg: number): Promise<number> =>
  readU32(await c.regionRead(BAR0, BigInt(reg), 4));
const wr = (c: VfioUserClient, reg: number, v: number | bigint) =>
  c.regionWrite(BAR0, BigInt(reg), typeof v === 'bigint' ? u64(v) : u32(v));

async function eduDma(c: VfioUserClient, src: bigint, dst: bigint, count: number, toRam: boolean) {
  await wr(c, Edu.DMA_SRC, src);
  await wr(c, Edu.DMA_DST, dst);
  await wr(c, Edu.DMA_COUNT, BigInt(count));
  await wr(c, Edu.DMA_CMD, BigInt(1 | (toRam ? 2 : 0)));
  const t0 = Date.now();
  while ((await rd(c, Edu.DMA_CMD)) & 1) {
    if (Date.now() - t0 > 5000) throw new Error('edu DMA never finished');
  }
}

/** A client with a memfd map, `extraMaps` more maps of the same memfd, an fd-less map and INTx on an eventfd. */
async function attach(path: string, extraMaps: number) {
  const c = await VfioUserClient.connect(path, { maxDataXferSize: 4096 });
  await c.negotiate({ qemuLimits: true });
  await c.regionWrite(CONFIG, 4n, Uint8Array.of(0x06, 0x00)); // memory + bus master
  const mem = GuestMemory.create(0x10000);
  await c.mapMemory(mem, { address: 0x100000n, size: 0x4000 });
  await c.mapMemory(mem, { address: 0x200000n, size: 0x2000, memoryOffset: 0x4000, withFd: false });
  for (let i = 0; i < extraMaps; i++) {
    await c.mapMemory(mem, {
      address: 0x10000000n + BigInt(i) * 0x1000n,
      size: 0x1000,
      memoryOffset: 0x8000,
    });
  }
  const [intx] = await c.enableEventfds(INTX, 0, 1);
  return { c, mem, intx: intx! };
}

/** One round of device work: liveness, a factorial, edu DMA RAM -> edu -> RAM (fd map and fd-less map). */
async function work(c: VfioUserClient, mem: GuestMemory, round: number): Promise<void> {
  await wr(c, Edu.LIVENESS, round);
  assert.is(await rd(c, Edu.LIVENESS), ~round >>> 0, 'liveness');
  await wr(c, Edu.FACTORIAL, 5);
  while ((await rd(c, Edu.STATUS)) & 1) await sleep(0);
  assert.is(await rd(c, Edu.FACTORIAL), 120);
  const pattern = Uint8Array.from({ length: 1024 }, (_, i) => (i * 7 + round) & 0xff);
  mem.write(0, pattern);
  await eduDma(c, 0x100000n, Edu.BUFFER, 1024, false);
  await eduDma(c, Edu.BUFFER, 0x101000n, 1024, true);
  assert.equal(mem.read(0x1000, 1024), pattern, 'edu DMA through the fd map');
  await eduDma(c, Edu.BUFFER, 0x200000n, 1024, true);
  assert.equal(mem.read(0x4000, 1024), pattern, 'edu DMA through DMA_WRITE messages');
  assert.is(await rd(c, Edu.DMA_ERROR), 0, 'no DMA error');
}

async function stop(r: Running): Promise<number | null> {
  if (r.child.exitCode !== null) return r.child.exitCode;
  const done = new Promise<number | null>((res) => r.child.once('exit', (code) => res(code)));
  r.child.kill('SIGTERM');
  return done;
}

/**
 * Runs a test body with a fresh temp dir (every server and successor it starts has the dir on its command line),
 * then checks that none of them outlived the body (after a grace period for exits in flight): a stray server is
 * killed and fails the test, also when the body itself failed (its error is reported first).
 */
async function noStrays(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vu-ho-'));
  let failure: unknown;
  try {
    await body(dir);
  } catch (err) {
    failure = err;
  }
  const stray = await killStrays(dir);
  rmSync(dir, { recursive: true, force: true });
  if (failure) throw failure;
  assert.equal(stray, [], `server processes survived the test: ${stray.join(', ')}`);
}

test('handed over 5 times with SIGUSR2 while the client keeps doing MMIO and edu DMA', () =>
  noStrays(async (dir) => {
    const r = await startCli(BIN, dir);
    const { c, mem, intx } = await attach(r.path, 100);
    const pids = [r.child.pid!];
    let pid = r.child.pid!;
    let stopWork = false;
    let rounds = 0;
    let failure: unknown;
    const background = (async () => {
      while (!stopWork) {
        await work(c, mem, rounds++);
      }
    })().catch((e) => {
      failure = e;
    });
    const roundsDone = async (n: number, what: string) => {
      const before = rounds;
      await until(() => rounds >= before + n || failure !== undefined, 15_000, what);
      if (failure) throw failure;
    };
    try {
      for (let i = 0; i < 5; i++) {
        await roundsDone(2, `work before hand-over ${i + 1}`);
        const done = logged(r, 'hand-over complete: serving').length;
        process.kill(pid, 'SIGUSR2');
        await until(
          () => logged(r, 'hand-over complete: serving').length > done,
          15_000,
          `hand-over ${i + 1}`,
        );
        const rec = logged(r, 'hand-over complete: serving').at(-1)!;
        const next = rec.pid as number;
        assert.is.not(next, pid, 'a new process serves');
        assert.is(rec.previousPid, pid);
        pid = next;
        pids.push(pid);
        assert.is(rec.regions, 102, 'every DMA region came along');
        assert.is(rec.hostEntriesAdopted, 102, 'host entries adopted, none remapped');
        assert.is(rec.hostMaps, 0);
        await until(() => !pidAlive(pids.at(-2)!), 5000, 'the old process to exit');
      }
      await roundsDone(3, 'work after the hand-overs');
      // INTx still reaches our eventfd after the hand-overs (the eventfd travelled).
      const n = intx.count;
      await c.unmaskIrqs(INTX, 0, 1);
      await wr(c, Edu.IRQ_RAISE, 1);
      await intx.wait(n + 1, 3000);
      await wr(c, Edu.IRQ_ACK, 1);
      stopWork = true;
      await background;
      if (failure) throw failure;
      assert.is(new Set(pids).size, 6, 'six processes served the device');
      const stats = logged(r, 'hand-over complete: serving').map((l) => l.pausedMs as number);
      console.log(
        `[timing] hand-over with 102 DMA maps: paused ${stats.map((x) => x.toFixed(1)).join(', ')} ms`,
      );
      assert.ok(logged(r, 'hand-over failed, still serving').length === 0);
      c.close();
      mem.close();
      // The last process still shuts down cleanly.
      process.kill(pid, 'SIGTERM');
      await until(() => !pidAlive(pid), 5000, 'the last process to exit');
    } finally {
      stopWork = true;
      c.close();
      await background;
      await stop(r);
    }
  }));

/**
 * A successor that says HELLO in the right format and then hangs: it never answers READY, ignores SIGTERM and
 * the channel closing, and touches `mark` when the STATE arrives (only SIGKILL ends it).
 */
function hangingSuccessor(mark: string): string {
  return `import { writeFileSync } from 'node:fs';
import { Connection } from ${JSON.stringify(NATIVE)};
import { HANDOVER_FORMAT, buildId } from ${JSON.stringify(STATE)};
process.on('SIGTERM', () => {});
const c = Connection.fromFd(3);
c.start({ onMessage(d) { if (d.readUInt32LE(8) === 2) writeFileSync(${JSON.stringify(mark)}, 'STATE'); }, onClose() {} },
  { framing: 'exact', maxMessageSize: 64 << 20 });
const body = Buffer.from(JSON.stringify({ format: HANDOVER_FORMAT, build: buildId(), pid: process.pid }));
const h = Buffer.alloc(16); h.writeUInt32LE(0x4f485556, 0); h.writeUInt32LE(16 + body.length, 4); h.writeUInt32LE(1, 8);
c.send(Buffer.concat([h, body]));
setInterval(() => {}, 1 << 30);
`;
}

/** The successor the last hand-over of `r` started (its pid, from the running server's log). */
const lastSuccessor = (r: Running): number =>
  logged(r, 'hand-over: successor started').at(-1)!.successor as number;

/** A copy of the CLI entry point we can replace, as an upgrade would replace the code on disk. */
function entryIn(dir: string): string {
  const p = join(dir, 'entry.mjs');
  writeFileSync(p, `import(${JSON.stringify(CLI)});\n`);
  return p;
}

test('failure paths: the successor exits at once, is of another build, or hangs; the server keeps serving and kills it', () =>
  noStrays(async (dir) => {
    const entry = entryIn(dir);
    const r = await startCli(entry, dir);
    const { c, mem } = await attach(r.path, 3);
    await work(c, mem, 1);
    const failures = () => logged(r, 'hand-over failed, still serving');
    const cases: [string, string, RegExp][] = [
      ['exits at once', 'process.exit(3);\n', /exited with status 3/],
      [
        'speaks another format',
        `import { Connection } from ${JSON.stringify(NATIVE)};
const c = Connection.fromFd(3);
c.start({ onMessage() {}, onClose() { process.exit(0); } });
const body = Buffer.from(JSON.stringify({ format: 999, build: 'future' }));
const h = Buffer.alloc(16); h.writeUInt32LE(0x4f485556, 0); h.writeUInt32LE(16 + body.length, 4); h.writeUInt32LE(1, 8);
c.send(Buffer.concat([h, body]));
`,
        /incompatible: format 999/,
      ],
      [
        'hangs (never READY)',
        hangingSuccessor(join(dir, 'state-seen')),
        /no READY from the successor within 4000 ms/,
      ],
    ];
    for (const [what, code, reason] of cases) {
      writeFileSync(entry, code);
      const n = failures().length;
      process.kill(r.child.pid!, 'SIGUSR2');
      await until(() => failures().length > n, 20_000, `the failure (${what})`);
      assert.match(
        String(failures().at(-1)!.reason),
        reason,
        `${what}: ${String(failures().at(-1)!.reason)}`,
      );
      // The successor it gave up on is gone (killed and reaped), whatever it did.
      assert.not.ok(pidAlive(lastSuccessor(r)), `${what}: the successor was killed`);
      await work(c, mem, 2);
    }
    // And after all that, a good successor still takes over.
    writeFileSync(entry, `import(${JSON.stringify(CLI)});\n`);
    process.kill(r.child.pid!, 'SIGUSR2');
    await until(() => logged(r, 'hand-over complete: serving').length === 1, 15_000, 'the hand-over');
    await work(c, mem, 3);
    const pid = logged(r, 'hand-over complete: serving')[0]!.pid as number;
    c.close();
    mem.close();
    process.kill(pid, 'SIGTERM');
    await until(() => !pidAlive(pid), 5000, 'the successor to exit');
    await stop(r);
  }));

test('a shutdown signal during a hand-over kills the successor and stops the server cleanly', () =>
  noStrays(async (dir) => {
    const entry = entryIn(dir);
    const r = await startCli(entry, dir);
    const { c, mem } = await attach(r.path, 3);
    await work(c, mem, 1);
    const mark = join(dir, 'state-seen');
    writeFileSync(entry, hangingSuccessor(mark));
    process.kill(r.child.pid!, 'SIGUSR2');
    // The successor has the state (and copies of every fd): the device is stopped, the client waits.
    await until(() => existsSync(mark), 15_000, 'the successor to get the STATE');
    const successor = lastSuccessor(r);
    const code = await stop(r);
    assert.is(code, 0, 'the server stops cleanly');
    assert.is(logged(r, 'hand-over in progress: ending it before shutting down').length, 1);
    assert.match(
      String(logged(r, 'hand-over failed, still serving').at(-1)?.reason),
      /cancelled: signal SIGTERM/,
    );
    assert.ok(logged(r, 'stopped').length === 1, 'a normal shutdown');
    assert.not.ok(pidAlive(successor), 'the successor was killed and reaped');
    assert.not.ok(existsSync(r.path), 'the socket file is removed as in any shutdown');
    c.close();
    mem.close();
  }));

test('a device with neither a migration nor a hand-over facet is refused up front and keeps serving', () =>
  noStrays(async (dir) => {
    // The counter example has no saveState/loadState: its state could not move to another process.
    const counter = join(here, '..', '..', '..', 'examples', 'counter', 'counter.js');
    const r = await startCli(BIN, dir, ['--device', `${counter},start=7`]);
    const c = await VfioUserClient.connect(r.path);
    await c.negotiate();
    await c.regionWrite(BAR0, 4n, u32(5)); // COUNT += 5
    process.kill(r.child.pid!, 'SIGUSR2');
    await until(() => logged(r, 'hand-over refused, still serving').length === 1, 10_000, 'the refusal');
    assert.match(
      String(logged(r, 'hand-over refused, still serving')[0]!.reason),
      /the device has neither a migration nor a hand-over facet/,
    );
    assert.is(logged(r, 'hand-over: successor started').length, 0, 'no successor was started');
    assert.is(readU32(await c.regionRead(BAR0, 0n, 4)), 12, 'the same process serves, state intact');
    c.close();
    assert.is(await stop(r), 0);
  }));

test('a successor refuses a state of another format with a clear message (and touches nothing)', () =>
  noStrays(async (dir) => {
    const [mine, theirs] = socketpair();
    const child = spawn(
      process.execPath,
      [BIN, '--socket-path', join(dir, 'x.sock'), '--log-format', 'json'],
      {
        stdio: ['ignore', 'ignore', 'pipe', theirs],
        env: { ...process.env, VFIO_USER_HANDOVER_FD: '3' },
      },
    );
    closeFd(theirs);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const got: Buffer[] = [];
    const conn = Connection.fromFd(mine);
    conn.start({ onMessage: (d) => got.push(d), onClose() {} }, { framing: 'exact' });
    const send = (type: number, body: object) => {
      const b = Buffer.from(JSON.stringify(body));
      const h = Buffer.alloc(16);
      h.writeUInt32LE(0x4f485556, 0);
      h.writeUInt32LE(16 + b.length, 4);
      h.writeUInt32LE(type, 8);
      conn.send(Buffer.concat([h, b]));
    };
    // The successor first asks for the host IOMMU backend (none here), then builds its device and says HELLO.
    await until(() => got.length >= 1, 10_000, 'HOST_REQUEST');
    assert.is(got[0]!.readUInt32LE(8), 9, 'HOST_REQUEST first');
    send(10, { backend: 'none', fds: {}, meta: {} });
    await until(() => got.length >= 2, 10_000, 'HELLO');
    assert.is(got[1]!.readUInt32LE(8), 1, 'then HELLO');
    const hello = JSON.parse(got[1]!.toString('utf8', 16)) as { format: number };
    assert.is(typeof hello.format, 'number');
    send(2, { format: hello.format + 1, build: '99.0.0' });
    const code = await new Promise<number | null>((res) => child.once('exit', (c) => res(c)));
    await until(() => got.length >= 3, 2000, 'REFUSE');
    assert.is(got[2]!.readUInt32LE(8), 3, 'REFUSE');
    assert.match(
      got[2]!.toString('utf8', 16),
      /incompatible hand-over state: format \d+ from build 99\.0\.0/,
    );
    assert.is(code, 1);
    assert.match(err, /not taking over: incompatible hand-over state/);
    conn.close();
  }));

test('hand-over time with 10 and 60,000 live DMA maps (stop reading -> resume reading)', () =>
  noStrays(async (dir) => {
    const r = await startCli(BIN, dir);
    const c = await VfioUserClient.connect(r.path);
    await c.negotiate({ qemuLimits: true });
    await c.regionWrite(CONFIG, 4n, Uint8Array.of(0x06, 0x00));
    const mem = GuestMemory.create(0x10000);
    let pid = r.child.pid!;
    let live = 0;
    const timings: string[] = [];
    for (const maps of [10, 60_000]) {
      // 4 KiB maps of one memfd at consecutive IOVAs, as a vIOMMU guest's page-by-page DMA_MAPs look.
      const batch: Promise<unknown>[] = [];
      for (; live < maps; live++) {
        batch.push(
          c.mapMemory(mem, {
            address: 0x100000n + BigInt(live) * 0x1000n,
            size: 0x1000,
            memoryOffset: (live % 16) * 0x1000,
          }),
        );
        if (batch.length >= 256) await Promise.all(batch.splice(0));
      }
      await Promise.all(batch);
      const done = logged(r, 'hand-over complete: serving').length;
      process.kill(pid, 'SIGUSR2');
      const failed = logged(r, 'hand-over failed, still serving').length;
      await until(
        () => {
          const f = logged(r, 'hand-over failed, still serving');
          if (f.length > failed)
            throw new Error(`hand-over with ${maps} maps failed: ${String(f.at(-1)!.reason)}`);
          return logged(r, 'hand-over complete: serving').length > done;
        },
        60_000,
        `hand-over with ${maps} maps`,
      );
      const rec = logged(r, 'hand-over complete: serving').at(-1)!;
      assert.is(rec.regions, maps);
      assert.is(rec.hostMaps, 0, 'no host remap');
      pid = rec.pid as number;
      timings.push(`${maps} maps: ${(rec.pausedMs as number).toFixed(1)} ms`);
      // The device and every map still work: edu DMA through the last map.
      mem.write(0, Uint8Array.of(1, 2, 3, 4));
      await eduDma(c, 0x100000n, Edu.BUFFER, 4, false);
      await eduDma(c, Edu.BUFFER, 0x100000n + BigInt(maps - 1) * 0x1000n + 8n, 4, true);
      assert.equal(mem.read(((maps - 1) % 16) * 0x1000 + 8, 4), Uint8Array.of(1, 2, 3, 4));
    }
    console.log(`[timing] hand-over pause (stop reading -> resume reading): ${timings.join(', ')}`);
    c.close();
    mem.close();
    process.kill(pid, 'SIGTERM');
    await until(() => !pidAlive(pid), 10_000, 'the last process to exit');
    await stop(r);
  }));

test.run();
