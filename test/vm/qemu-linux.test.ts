// A Linux guest (Debian 6.12, busybox initramfs, q35 + intel-iommu under TCG) sees our edu through QEMU's
// vfio-user-pci: sysfs ids, class and resources (BAR0 = 1 MiB) and the raw config space match the device, its
// DMA through the guest's IOMMU lands, and its INTx and MSI interrupts arrive: test/vm/guest/edu-irq.c binds it to the guest's vfio-pci, raises edu's
// interrupt (register 0x60) N times per kind, and counts each on the eventfd and in /proc/interrupts. The server
// starts in this process, on the host, with guest RAM shared as a memfd; in the middle of the INTx rounds it is
// handed over (docs/handover.md) to a new process, the real CLI, which serves the rest of the run: the guest
// notices nothing (every interrupt of both kinds arrives), and the two processes' counters add up.
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  assertGuestPassed,
  bootContext,
  bootGuest,
  buildGuestProgram,
  guestKernel,
  guestUnavailableReason,
  projectRoot,
} from '../lib/guest.js';
import { killStrays, pidAlive } from '../lib/procs.js';
import { makeTempDir } from '../lib/qemu.js';
import { poll } from '../lib/wait.js';
import { guestDeviceOptions, renderCommand, TEST_DOC_DIR, testDocMismatch } from '../qemu/cmdline.js';
import { Stages, startEduServer } from '../qemu/harness.js';

// test/dist/vm/x.test.js -> test/vm/guest/edu-irq.c
const source = join(dirname(fileURLToPath(import.meta.url)), '../../vm/guest/edu-irq.c');
const ROUNDS = 16;
const BIN = join(projectRoot, 'server', 'bin', 'vfio-user-server.js');
type HandoverMod = typeof import('../../server/src/handover/index.js');
const { handOver } = (await import(
  pathToFileURL(join(projectRoot, 'server', 'dist', 'src', 'handover', 'index.js')).href
)) as HandoverMod;

/** One control-socket request (`--control-socket`): the answer's result. */
function control(path: string, command: string): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const s = connect(path);
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      s.end();
      const a = JSON.parse(buf.slice(0, nl)) as {
        ok: boolean;
        result?: Record<string, unknown>;
        error?: string;
      };
      if (a.ok) resolve(a.result ?? {});
      else reject(new Error(a.error));
    });
    s.on('error', reject);
    s.write(`${command}\n`);
  });
}

test('Linux guest: sysfs view of our edu, INTx and MSI interrupts through vfio-user-pci', async () => {
  const reason = guestUnavailableReason('debian');
  assert.is(reason, null, `${reason}`);
  const st = new Stages('Linux guest (sysfs + INTx/MSI)');
  const bin = await buildGuestProgram(source);
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const srv = await startEduServer(vfioSocket);
  const ctl = join(tmp.dir, 'ctl.sock');
  st.mark('build + server start');
  // Mid-run hand-over: once half the INTx rounds were raised, the device moves to the CLI (its logs: warnings
  // only, on our stderr; its counters through its control socket).
  let handover: ReturnType<typeof handOver> | undefined;
  const watcher = setInterval(() => {
    if (handover || srv.edu.stats.interruptsRaised < ROUNDS / 2) return;
    handover = handOver(srv.server, srv.edu, {
      deviceName: 'edu',
      log: pino({ level: process.env.VFIO_USER_TEST_LOG ?? 'warn' }, pino.destination({ fd: 2, sync: true })),
      command: {
        args: [
          BIN,
          '--socket-path',
          vfioSocket,
          '--device',
          'edu',
          '--log-format',
          'json',
          '--log-level',
          'warn',
        ].concat(['--control-socket', ctl]),
      },
    });
  }, 2);
  let successor: number | undefined;
  try {
    const r = await bootGuest({
      kernel: 'debian',
      ...guestDeviceOptions(vfioSocket),
      bind: ['1234:11e8'],
      files: [{ path: '/bin/edu-irq', source: bin }],
      // The second half of the INTx rounds is slowed to 500 ms each: the window for the hand-over.
      script: `/bin/edu-irq "$BDF" ${ROUNDS} 500`,
      timeoutMs: 150_000,
    });
    st.mark('boot + run + poweroff');
    clearInterval(watcher);
    const context = bootContext(r);
    assert.match(r.console, /bound 0000:00:05\.0 \(1234:11e8\) to vfio-pci/, `not bound${context}`);
    assertGuestPassed(r, { program: 'edu-irq', minChecks: 23 });
    assert.match(
      r.output,
      /^ok - edu DMA after the interrupts/m,
      `no DMA check after the hand-over${context}`,
    );

    // The hand-over happened in the middle of the INTx rounds, and the successor served the rest.
    assert.ok(handover, `no hand-over: ${srv.edu.stats.interruptsRaised} interrupts raised${context}`);
    const ho = await handover!;
    assert.ok(ho.ok, `hand-over failed: ${ho.ok ? '' : ho.reason}`);
    successor = ho.ok ? ho.pid : undefined;
    const before = srv.edu.stats.interruptsRaised;
    assert.ok(before >= ROUNDS / 2 && before < 2 * ROUNDS, `handed over after ${before} interrupts`);
    const after = await control(ctl, 'stats');
    const raisedAfter = (after.device as { interruptsRaised: number }).interruptsRaised;
    const signalsAfter = (after.irq as { signals: number }).signals;
    const stats = after.stats as { errors: Record<string, number>; messages: Record<string, number> };

    // The server's side of it: every raise reached the device and went out as an eventfd signal, over INTx (index
    // 0) and MSI (index 1, which QEMU only sets up once the guest enabled MSI), in one process or the other.
    assert.is(before + raisedAfter, 2 * ROUNDS, 'interrupts raised by edu (both processes)');
    // One edu DMA round trip (2 transfers) before the interrupts, in this process; one after, in the successor.
    assert.is(srv.edu.stats.dmaTransfers, 2, 'DMA transfers before the hand-over');
    assert.is((after.device as { dmaTransfers: number }).dmaTransfers, 2, 'DMA transfers by the successor');
    assert.ok(
      srv.server.irq.stats.signals + signalsAfter >= 2 * ROUNDS,
      `eventfd signals: ${JSON.stringify(srv.server.irq.stats)} + ${signalsAfter}`,
    );
    // The counters came along with the session: these are the whole run's.
    assert.equal(stats.errors, {}, `no error replies: ${JSON.stringify(stats)}`);
    console.log(
      `  hand-over after ${before} of ${2 * ROUNDS} interrupts: pid ${process.pid} -> ${successor}, paused ` +
        `${ho.ok ? ho.pausedMs.toFixed(1) : '?'} ms; ${raisedAfter} interrupts raised by the successor`,
    );
    const lat = [...r.output.matchAll(/^irq (\S+) (\d+) (\d+)$/gm)].map((m) => `${m[1]} ${m[3]} us`);
    console.log(
      `  guest: init at ${r.timings.initUptime}s, payload done at ${r.timings.endUptime}s guest time; ` +
        `mean raise->eventfd latency ${lat.join(', ')}; ${stats.messages.DEVICE_SET_IRQS} SET_IRQS`,
    );

    const kernel = guestKernel('debian')!.kernel;
    const line = renderCommand(r.command, [
      [tmp.dir, TEST_DOC_DIR],
      [kernel, 'vmlinuz'],
      [/^\/tmp\/vfio-guest-[^/]+\/initrd\.cpio\.gz$/, 'initrd.cpio.gz'],
    ]);
    const doc = testDocMismatch(line);
    assert.is(doc, null, doc ?? '');
    st.print();
  } finally {
    clearInterval(watcher);
    const ho = await handover;
    if (ho?.ok) {
      // The first server was handed over: closing it would take nothing away (abandoned); stop the successor.
      process.kill(ho.pid, 'SIGTERM');
      await poll(() => !pidAlive(ho.pid), 10_000);
    } else await srv.close();
    const stray = await killStrays(tmp.dir, 5000);
    tmp.cleanup();
    assert.equal(stray, [], `server processes survived: ${stray.join(', ')}`);
  }
});

test.run();
