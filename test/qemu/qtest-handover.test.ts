// Hand-over under a real QEMU (docs/handover.md): QEMU attached with memfd guest RAM (DMA maps live), the test
// drives MMIO and edu DMA continuously while the server (the real program) is handed over 20 times with SIGUSR2.
// Every register read returns what the device model says, every edu DMA lands, the PID changes each time, and
// QEMU logs no vfio-user error (it would on any reply it did not expect, or on an EOF).
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { killStrays, pidAlive } from '../lib/procs.js';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { QtestListener } from '../lib/qtest.js';
import { poll } from '../lib/wait.js';
import { qtestCommand } from './cmdline.js';
import { eduDma, enableBar0, factorial, pattern, reg32, SLOT, setReg32 } from './edu-qtest.js';
import { Edu, ServerProcess, Stages } from './harness.js';

const unavailable = qemuUnavailableReason();
const HANDOVERS = 20;

test(`${HANDOVERS} hand-overs under QEMU while MMIO and edu DMA run`, async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const st = new Stages('hand-over under QEMU');
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const qtestSocket = join(tmp.dir, 'qtest.sock');
  const srv = new ServerProcess(vfioSocket);
  const listener = await QtestListener.listen(qtestSocket);
  let qemu: ReturnType<typeof spawnQemu> | undefined;
  let pid = srv.child.pid!;
  let testFailure: unknown;
  try {
    if (!(await poll(() => srv.all('ready').length > 0, 10_000))) throw new Error(`no ready:\n${srv.stderr}`);
    qemu = spawnQemu({
      args: qtestCommand({ qtestSocket, vfioSocket, ram: 'memfd' }),
      qmpSocket: join(tmp.dir, 'qmp.sock'),
      timeoutMs: 240_000,
    });
    const qt = await listener.accept(20_000, qemu.exited);
    assert.is(await qt.pciReadl(SLOT, 0, 0), Edu.VENDOR_DEVICE);
    await enableBar0(qt);
    await qt.pciWritew(SLOT, 0, 4, 0x06); // memory + bus master
    st.mark('QEMU start + device set up');

    // The workload: liveness, factorial and edu DMA both ways, over and over, checked every time.
    const SRC = 0x100000n;
    const DST = 0x200000n;
    let rounds = 0;
    let stop = false;
    let failure: unknown;
    const work = (async () => {
      while (!stop) {
        const v = (rounds * 0x9e3779b1) >>> 0;
        await setReg32(qt, Edu.LIVENESS, v);
        assert.is(await reg32(qt, Edu.LIVENESS), ~v >>> 0, 'liveness');
        assert.is(
          await factorial(qt, 5 + (rounds % 7)),
          [120, 720, 5040, 40320, 362880, 3628800, 39916800][rounds % 7],
        );
        const data = pattern(1024, rounds & 0xff);
        await qt.memwrite(SRC, data);
        await eduDma(qt, SRC, Edu.BUFFER, 1024, false);
        await eduDma(qt, Edu.BUFFER, DST, 1024, true);
        assert.equal(await qt.memread(DST, 1024), data, `edu DMA round ${rounds}`);
        assert.is(await reg32(qt, Edu.DMA_ERROR), 0, 'no DMA error');
        rounds++;
      }
    })().catch((e) => {
      failure = e;
    });

    const paused: number[] = [];
    for (let i = 0; i < HANDOVERS; i++) {
      const r0 = rounds;
      await poll(() => rounds >= r0 + 1 || failure !== undefined, 10_000);
      if (failure) throw failure;
      const done = srv.all('hand-over complete: serving').length;
      const failed = srv.all('hand-over failed, still serving').length;
      process.kill(pid, 'SIGUSR2');
      const ok = await poll(
        () =>
          srv.all('hand-over complete: serving').length > done ||
          srv.all('hand-over failed, still serving').length > failed,
        20_000,
      );
      const f = srv.all('hand-over failed, still serving');
      assert.is(f.length, failed, `hand-over ${i + 1} failed: ${String(f.at(-1)?.reason)}`);
      assert.ok(ok, `hand-over ${i + 1} did not complete:\n${srv.stderr.slice(-3000)}`);
      const rec = srv.all('hand-over complete: serving').at(-1)!;
      assert.is(rec.previousPid, pid);
      assert.is.not(rec.pid, pid, 'a new process serves');
      assert.ok((rec.regions as number) > 0, 'the guest RAM maps came along');
      assert.is(rec.hostMaps, 0, 'no host remap');
      paused.push(rec.pausedMs as number);
      assert.ok(await poll(() => !pidAlive(pid), 5000), 'the old process exits');
      pid = rec.pid as number;
    }
    const r0 = rounds;
    await poll(() => rounds >= r0 + 2 || failure !== undefined, 10_000);
    stop = true;
    await work;
    if (failure) throw failure;
    st.mark(`${HANDOVERS} hand-overs, ${rounds} rounds of MMIO + DMA`);
    assert.ok(rounds >= HANDOVERS, 'the workload ran throughout');
    const exitOk =
      srv.all('hand-over complete: exiting').length +
      srv.all('hand-over complete: the successor serves, exiting').length;
    assert.is(exitOk, HANDOVERS, 'every old process handed over and exited');
    assert.not.match(qemu.stderr, /vfio-user|vfio_user/i, `QEMU logged a vfio-user problem:\n${qemu.stderr}`);
    paused.sort((a, b) => a - b);
    console.log(
      `[timing] hand-over under QEMU: pause median ${paused[paused.length >> 1]!.toFixed(1)} ms, max ${paused.at(-1)!.toFixed(1)} ms (${HANDOVERS} hand-overs, ${rounds} workload rounds)`,
    );
    const qmp = await qemu.qmp();
    const exit = await qemu.stop(qmp);
    assert.is(exit.code, 0, exit.stderr);
    qt.close();
    process.kill(pid, 'SIGTERM');
    assert.ok(await poll(() => !pidAlive(pid), 5000), 'the last server stops');
    st.mark('shutdown');
    st.print();
  } catch (err) {
    testFailure = err;
  } finally {
    listener.close();
    qemu?.kill('SIGKILL');
    await qemu?.exited;
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    srv.child.kill('SIGKILL');
  }
  // No server process survives: not the last one, nor a successor of a hand-over in flight (every one has the
  // temp dir on its command line).
  const stray = await killStrays(tmp.dir, testFailure ? 0 : 5000);
  tmp.cleanup();
  if (testFailure) throw testFailure;
  assert.equal(stray, [], `server processes survived the test: ${stray.join(', ')}`);
});

test.run();
