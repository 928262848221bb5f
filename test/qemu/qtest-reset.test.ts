// Machine reset: QMP `system_reset` makes QEMU send DEVICE_RESET, and our edu returns to its power-on state. The
// register values right after QEMU started (QEMU resets the machine, and so the device, once at start-up) are
// the reference; the test changes every piece of state it can reach, resets, and reads them all again through
// qtest. QEMU also clears BAR0 and COMMAND in the device's config space, which the server must see.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import type { QtestClient } from '../lib/qtest.js';
import { QtestListener } from '../lib/qtest.js';
import { poll } from '../lib/wait.js';
import { qtestCommand } from './cmdline.js';
import { BAR0_ADDR, eduDma, enableBar0, factorial, pattern, reg32, SLOT, setReg32 } from './edu-qtest.js';
import { Edu, hex, Stages, startEduServer } from './harness.js';

const unavailable = qemuUnavailableReason();

/** Every readable edu register. */
async function eduState(qt: QtestClient): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [name, off] of [
    ['LIVENESS', Edu.LIVENESS],
    ['FACTORIAL', Edu.FACTORIAL],
    ['STATUS', Edu.STATUS],
    ['IRQ_STATUS', Edu.IRQ_STATUS],
    ['DMA_ERROR', Edu.DMA_ERROR],
  ] as const) {
    out[name] = hex(await reg32(qt, off));
  }
  for (const [name, off] of [
    ['DMA_SRC', Edu.DMA_SRC],
    ['DMA_DST', Edu.DMA_DST],
    ['DMA_COUNT', Edu.DMA_COUNT],
    ['DMA_CMD', Edu.DMA_CMD],
  ] as const) {
    out[name] = hex(await qt.readq(BAR0_ADDR + off));
  }
  return out;
}

test('QMP system_reset delivers DEVICE_RESET and edu returns to its power-on state', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const st = new Stages('reset (qtest + QMP)');
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const qtestSocket = join(tmp.dir, 'qtest.sock');
  const srv = await startEduServer(vfioSocket);
  const listener = await QtestListener.listen(qtestSocket);
  const qemu = spawnQemu({
    args: qtestCommand({ qtestSocket, vfioSocket, ram: 'memfd' }),
    qmpSocket: join(tmp.dir, 'qmp.sock'),
    timeoutMs: 60_000,
  });
  try {
    const qt = await listener.accept(20_000, qemu.exited);
    const qmp = await qemu.qmp();
    assert.is(await qt.pciReadl(SLOT, 0, 0), Edu.VENDOR_DEVICE);
    st.mark('start');
    const resets = () => srv.server.stats.messages.DEVICE_RESET ?? 0;
    const resetsAtStart = resets();
    assert.ok(resetsAtStart >= 1, 'QEMU reset the device once at start-up');

    await enableBar0(qt);
    const powerOn = await eduState(qt);
    // Change everything: liveness, factorial, status (IRQ on factorial), an interrupt raised and left pending,
    // the DMA registers (through a real transfer), the DMA error register (a transfer outside the maps).
    await setReg32(qt, Edu.LIVENESS, 0x0badcafe);
    await setReg32(qt, Edu.STATUS, 0x80);
    assert.is(await factorial(qt, 7), 5040);
    await setReg32(qt, Edu.IRQ_RAISE, 0x40);
    await qt.memwrite(0x100000, pattern(64, 9));
    await eduDma(qt, 0x100000n, Edu.BUFFER, 64, false);
    await eduDma(qt, Edu.BUFFER, 0x3_0000_0000n, 64, true); // no RAM at 12 GiB: a DMA fault
    const changed = await eduState(qt);
    for (const k of [
      'LIVENESS',
      'FACTORIAL',
      'STATUS',
      'IRQ_STATUS',
      'DMA_ERROR',
      'DMA_SRC',
      'DMA_DST',
      'DMA_COUNT',
    ]) {
      assert.is.not(changed[k], powerOn[k], `${k} changed before the reset`);
    }
    assert.is(srv.edu.stats.dmaErrors, 1, 'the out-of-RAM transfer failed in the device');
    st.mark('change state');

    await qmp.execute('system_reset');
    await qmp.waitEvent('RESET', 10_000);
    // The RESET event comes when QEMU's reset handlers have run, DEVICE_RESET among them (a synchronous message).
    assert.ok(await poll(() => resets() === resetsAtStart + 1, 5000), `DEVICE_RESET count ${resets()}`);
    st.mark('system_reset');

    // QEMU cleared BAR0 and COMMAND in its copy and in the device's.
    assert.is(await qt.pciReadl(SLOT, 0, 0x10), 0, 'BAR0 unassigned after reset');
    assert.is((await qt.pciReadw(SLOT, 0, 0x04)) & 0x7, 0, 'COMMAND cleared');
    const raw = srv.edu.regionRead(7, 0x04n, 2);
    assert.is(raw[0]! & 0x7, 0, "the server's COMMAND register is cleared too");
    await enableBar0(qt);
    const after = await eduState(qt);
    assert.equal(after, powerOn, 'edu registers are back to their power-on values');
    assert.is(await reg32(qt, Edu.IDENT), Edu.IDENT_VALUE);
    // And the device works again.
    assert.is(await factorial(qt, 5), 120);
    await eduDma(qt, 0x100000n, Edu.BUFFER, 64, false);
    await eduDma(qt, Edu.BUFFER, 0x180000n, 64, true);
    assert.equal(await qt.memread(0x180000, 64), pattern(64, 9));
    assert.is(srv.server.stats.connections, 1, 'the same connection throughout');
    st.mark('check');

    const exit = await qemu.stop(qmp);
    assert.is(exit.code, 0, exit.stderr);
    qt.close();
    st.print();
  } finally {
    listener.close();
    qemu.kill('SIGKILL');
    await qemu.exited;
    await srv.close();
    tmp.cleanup();
  }
});

test.run();
