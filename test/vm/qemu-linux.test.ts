// A Linux guest (Debian 6.12, busybox initramfs, q35 + intel-iommu under TCG) sees our edu through QEMU's
// vfio-user-pci: sysfs ids, class and resources (BAR0 = 1 MiB) and the raw config space match the device, and
// its INTx and MSI interrupts arrive: test/vm/guest/edu-irq.c binds it to the guest's vfio-pci, raises edu's
// interrupt (register 0x60) N times per kind, and counts each on the eventfd and in /proc/interrupts. The server
// runs in this process, on the host, with guest RAM shared as a memfd.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  assertGuestPassed,
  bootContext,
  bootGuest,
  buildGuestProgram,
  guestKernel,
  guestUnavailableReason,
} from '../lib/guest.js';
import { makeTempDir } from '../lib/qemu.js';
import { guestDeviceOptions, renderCommand, TEST_DOC_DIR, testDocMismatch } from '../qemu/cmdline.js';
import { Stages, startEduServer } from '../qemu/harness.js';

// test/dist/vm/x.test.js -> test/vm/guest/edu-irq.c
const source = join(dirname(fileURLToPath(import.meta.url)), '../../vm/guest/edu-irq.c');
const ROUNDS = 16;

test('Linux guest: sysfs view of our edu, INTx and MSI interrupts through vfio-user-pci', async () => {
  const reason = guestUnavailableReason('debian');
  assert.is(reason, null, `${reason}`);
  const st = new Stages('Linux guest (sysfs + INTx/MSI)');
  const bin = await buildGuestProgram(source);
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const srv = await startEduServer(vfioSocket);
  st.mark('build + server start');
  try {
    const r = await bootGuest({
      kernel: 'debian',
      ...guestDeviceOptions(vfioSocket),
      bind: ['1234:11e8'],
      files: [{ path: '/bin/edu-irq', source: bin }],
      script: `/bin/edu-irq "$BDF" ${ROUNDS}`,
      timeoutMs: 150_000,
    });
    st.mark('boot + run + poweroff');
    const context = bootContext(r);
    assert.match(r.console, /bound 0000:00:05\.0 \(1234:11e8\) to vfio-pci/, `not bound${context}`);
    assertGuestPassed(r, { program: 'edu-irq', minChecks: 20 });

    // The server's side of it: every raise reached the device and went out as an eventfd signal, over INTx (index
    // 0) and MSI (index 1, which QEMU only sets up once the guest enabled MSI).
    assert.is(srv.edu.stats.interruptsRaised, 2 * ROUNDS, 'interrupts raised by edu');
    assert.ok(
      srv.server.irq.stats.signals >= 2 * ROUNDS,
      `eventfd signals: ${JSON.stringify(srv.server.irq.stats)}`,
    );
    assert.equal(srv.server.stats.errors, {}, `no error replies: ${JSON.stringify(srv.server.stats)}`);
    const lat = [...r.output.matchAll(/^irq (\S+) (\d+) (\d+)$/gm)].map((m) => `${m[1]} ${m[3]} us`);
    console.log(
      `  guest: init at ${r.timings.initUptime}s, payload done at ${r.timings.endUptime}s guest time; ` +
        `mean raise->eventfd latency ${lat.join(', ')}; ${srv.server.stats.messages.DEVICE_SET_IRQS} SET_IRQS`,
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
    await srv.close();
    tmp.cleanup();
  }
});

test.run();
