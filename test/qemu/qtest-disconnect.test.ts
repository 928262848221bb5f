// The server dies under a running QEMU. The server is the real program (`vfio-user-server`, spawned) and is
// killed with SIGKILL, as a crash would. QEMU must keep running (QMP answers), the device's config space and BAR
// read all-ones, and a new server can be started on the same socket path (the dead one left its socket file).
// QEMU's vfio-user client does not reconnect: the new server never sees a client and the device stays dead until
// QEMU is restarted (docs/qemu.md, "Server restarts").
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { QtestListener } from '../lib/qtest.js';
import { sleep } from '../lib/wait.js';
import { qtestCommand } from './cmdline.js';
import { BAR0_ADDR, enableBar0, factorial, reg32, SLOT } from './edu-qtest.js';
import { Edu, ServerProcess, Stages } from './harness.js';

const unavailable = qemuUnavailableReason();

test('kill -9 the server: QEMU keeps running, reads return all-ones, a new server takes the socket', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const st = new Stages('disconnect (server killed under QEMU)');
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const qtestSocket = join(tmp.dir, 'qtest.sock');
  const first = new ServerProcess(vfioSocket);
  let second: ServerProcess | undefined;
  const listener = await QtestListener.listen(qtestSocket);
  let qemu: ReturnType<typeof spawnQemu> | undefined;
  try {
    await first.waitFor('ready');
    st.mark('server start (process)');
    qemu = spawnQemu({
      args: qtestCommand({ qtestSocket, vfioSocket, ram: 'memfd' }),
      qmpSocket: join(tmp.dir, 'qmp.sock'),
      timeoutMs: 60_000,
    });
    const qt = await listener.accept(20_000, qemu.exited);
    const qmp = await qemu.qmp();
    assert.is(await qt.pciReadl(SLOT, 0, 0), Edu.VENDOR_DEVICE);
    await enableBar0(qt);
    assert.is(await reg32(qt, Edu.IDENT), Edu.IDENT_VALUE);
    assert.is(await factorial(qt, 6), 720);
    assert.ok(first.has('serving client'));
    st.mark('QEMU start + device works');

    first.child.kill('SIGKILL');
    const gone = await first.exited;
    assert.is(gone.signal, 'SIGKILL');
    assert.ok(existsSync(vfioSocket), 'a killed server leaves its socket file behind');
    // QEMU notices the EOF in its main loop and logs it.
    await qemu.waitForOutput(/failed to read header: EOF/, 5000);
    st.mark('kill');

    const status = await qmp.execute<{ status: string; running: boolean }>('query-status');
    assert.type(status.status, 'string', 'QMP still answers');
    assert.not.ok(qemu.done, 'QEMU is still running');
    assert.is(await qt.pciReadl(SLOT, 0, 0x00), 0xffffffff, 'config reads return all-ones');
    assert.is(await qt.pciReadw(SLOT, 0, 0x02), 0xffff);
    assert.is(await qt.readl(BAR0_ADDR + Edu.IDENT), 0xffffffff, 'BAR0 reads return all-ones');
    await qt.writel(BAR0_ADDR + Edu.LIVENESS, 1); // dropped, must not hang or kill QEMU
    st.mark('dead-device checks');

    // A new server on the same path: the stale socket file is replaced.
    second = new ServerProcess(vfioSocket);
    await second.waitFor('ready');
    st.mark('second server start');
    // QEMU does not reconnect: nobody connects to the new server and the device stays dead.
    await sleep(1000);
    st.mark('1 s wait for a reconnect');
    assert.not.ok(second.has('serving client'), 'QEMU did not reconnect (see docs/qemu.md)');
    assert.is(await qt.pciReadl(SLOT, 0, 0x00), 0xffffffff, 'still all-ones with a new server listening');
    const again = await qmp.execute<{ status: string }>('query-status');
    assert.is(again.status, status.status);

    const exit = await qemu.stop(qmp);
    assert.is(exit.code, 0, `QEMU exits normally after losing its server\n${exit.stderr}`);
    qt.close();
    second.child.kill('SIGTERM');
    const end = await second.exited;
    assert.is(end.code, 0, second.stderr);
    assert.not.ok(existsSync(vfioSocket), 'the second server removed the socket at SIGTERM');
    st.mark('shutdown');
    st.print();
  } finally {
    listener.close();
    qemu?.kill('SIGKILL');
    await qemu?.exited;
    first.child.kill('SIGKILL');
    second?.child.kill('SIGKILL');
    tmp.cleanup();
  }
});

test.run();
