// Proves the qtest + QMP harness against plain QEMU (no vfio-user device): PCI config cycles through
// 0xcf8/0xcfc, guest RAM through read/write, sized MMIO accessors on RAM, QMP commands and events.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { pciConfigAddress, QtestListener, qtestArgs } from '../lib/qtest.js';

const unavailable = qemuUnavailableReason();

test('pciConfigAddress follows the 0xcf8 formula', () => {
  assert.is(pciConfigAddress(5, 0, 0x10), 0x80002810);
  assert.is(pciConfigAddress(0, 0, 0), 0x80000000);
  assert.is(pciConfigAddress(31, 7, 0xff), 0x8000fffc);
  assert.throws(() => pciConfigAddress(32, 0, 0));
});

test('qtest: host bridge ids, guest RAM, QMP', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const tmp = makeTempDir();
  const qtSock = join(tmp.dir, 'qtest.sock');
  const listener = await QtestListener.listen(qtSock);
  const qemu = spawnQemu({
    args: [...qtestArgs(qtSock), '-machine', 'pc', '-m', '128M'],
    qmpSocket: join(tmp.dir, 'qmp.sock'),
    timeoutMs: 30_000,
  });
  try {
    const qt = await listener.accept(20_000, qemu.exited);
    const qmp = await qemu.qmp();

    // i440FX host bridge at 00:00.0 on the pc machine.
    const id = await qt.pciReadl(0, 0, 0);
    assert.is(id & 0xffff, 0x8086, 'vendor');
    assert.is(id >>> 16, 0x1237, 'device');
    assert.is(await qt.pciReadw(0, 0, 0), 0x8086);
    assert.is(await qt.pciReadw(0, 0, 2), 0x1237);
    assert.is(await qt.pciReadb(0, 0, 1), 0x80);
    // An empty slot reads all-ones.
    assert.is(await qt.pciReadl(31, 0, 0), 0xffffffff);

    // Guest RAM: bulk and sized accesses see the same bytes (little-endian).
    const data = new Uint8Array(64).map((_, i) => (i * 37 + 11) & 0xff);
    await qt.memwrite(0x100000, data);
    assert.equal(await qt.memread(0x100000, 64), data);
    await qt.writel(0x200000, 0xdeadbeef);
    assert.equal([...(await qt.memread(0x200000, 4))], [0xef, 0xbe, 0xad, 0xde]);
    await qt.writeq(0x200008, 0x0123456789abcdefn);
    assert.is(await qt.readq(0x200008), 0x0123456789abcdefn);
    assert.is(await qt.readw(0x20000a), 0x89ab);
    assert.is(await qt.readb(0x20000f), 0x01);
    await qt.memset(0x300000, 16, 0x5a);
    assert.equal(await qt.memread(0x300000, 16), new Uint8Array(16).fill(0x5a));
    // A failing command rejects instead of hanging.
    let failed = false;
    await qt.command('no_such_command').catch(() => {
      failed = true;
    });
    assert.ok(failed, 'unknown command must fail');

    // QMP: a query, then system_reset produces a RESET event and RAM survives a reset.
    const status = await qmp.execute<{ status: string }>('query-status');
    assert.type(status.status, 'string');
    await qmp.execute('system_reset');
    const ev = await qmp.waitEvent('RESET', 10_000);
    assert.is(ev.event, 'RESET');
    assert.equal(await qt.memread(0x100000, 64), data);

    const exit = await qemu.stop(qmp);
    assert.is(exit.timedOut, false);
    assert.is(exit.code, 0, exit.stderr);
    qt.close();
  } finally {
    listener.close();
    qemu.kill('SIGKILL');
    await qemu.exited;
    tmp.cleanup();
  }
});

test.run();
