// Our edu behind QEMU's vfio-user-pci, driven through qtest (`-accel qtest`: no guest CPU, deterministic): config
// cycles, BAR sizing and assignment, edu registers over MMIO, and edu DMA guest RAM -> device -> guest RAM,
// checked byte for byte in guest RAM. Twice: guest RAM as a shared memfd (DMA_MAPs carry fds, the server maps
// guest RAM and no DMA message crosses the socket) and as plain `-m` (no fds: every device DMA is a
// DMA_READ/DMA_WRITE message to QEMU). The path is asserted from the server's own DMA regions and QEMU's trace of
// server->client requests.
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { QtestListener } from '../lib/qtest.js';
import { poll } from '../lib/wait.js';
import {
  type GuestRam,
  qtestCommand,
  renderCommand,
  TEST_DOC_DIR,
  testDocMismatch,
  withoutOptions,
} from './cmdline.js';
import {
  BAR0_ADDR,
  eduDma,
  enableBar0,
  factorial,
  pattern,
  reg32,
  SLOT,
  setReg32,
  sizeBar,
} from './edu-qtest.js';
import { Edu, hex, Stages, startEduServer } from './harness.js';

const unavailable = qemuUnavailableReason();

/** Guest RAM addresses of the transfer: source, destination (plus a guard page after it). */
const SRC = 0x100000n;
const DST = 0x200000n;
const LEN = 4096;

async function run(ram: GuestRam): Promise<void> {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const st = new Stages(`qtest edu, ${ram} guest RAM`);
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const qtestSocket = join(tmp.dir, 'qtest.sock');
  const srv = await startEduServer(vfioSocket);
  const listener = await QtestListener.listen(qtestSocket);
  st.mark('server start');
  const args = qtestCommand({ qtestSocket, vfioSocket, ram, trace: ['vfio_user_recv_request'] });
  const qemu = spawnQemu({ args, timeoutMs: 60_000 });
  try {
    const qt = await listener.accept(20_000, qemu.exited);
    // QEMU answers qtest from its main loop, i.e. once the machine (and our device) is realized and reset.
    const id = await qt.pciReadl(SLOT, 0, 0x00);
    st.mark('QEMU start + device realize');
    assert.is(srv.server.stats.connections, 1);
    const m = srv.server.stats.messages;
    for (const c of [
      'VERSION',
      'DEVICE_GET_INFO',
      'DEVICE_GET_REGION_INFO',
      'DEVICE_GET_IRQ_INFO',
      'DEVICE_RESET',
    ]) {
      assert.ok((m[c] ?? 0) >= 1, `${c} received (${JSON.stringify(m)})`);
    }
    assert.equal(srv.server.stats.errors, {}, 'no error replies during realize');

    // ---- config space through 0xcf8/0xcfc
    assert.is(id, Edu.VENDOR_DEVICE, 'vendor:device');
    assert.is(await qt.pciReadw(SLOT, 0, 0x00), 0x1234);
    assert.is(await qt.pciReadw(SLOT, 0, 0x02), 0x11e8);
    assert.is(await qt.pciReadl(SLOT, 0, 0x08), 0x00ff0010, 'class 00ff00, revision 0x10');
    assert.is(await qt.pciReadb(SLOT, 0, 0x0e), 0x00, 'header type 0');
    assert.is(await qt.pciReadl(SLOT, 0, 0x2c), 0x11001af4, 'subsystem 1af4:1100');
    assert.is(await qt.pciReadb(SLOT, 0, 0x3d), 1, 'interrupt pin A');
    const status = await qt.pciReadw(SLOT, 0, 0x06);
    assert.ok(status & 0x10, `capability list bit (status ${hex(status)})`);
    const capPtr = await qt.pciReadb(SLOT, 0, 0x34);
    assert.is(await qt.pciReadb(SLOT, 0, capPtr), 0x05, `MSI capability at ${hex(capPtr)}`);

    // ---- BAR sizing and assignment
    assert.is(await sizeBar(qt, 0x10), 0xfff00000, 'BAR0: 1 MiB, 32-bit, non-prefetchable memory');
    for (const reg of [0x14, 0x18, 0x1c, 0x20, 0x24]) {
      assert.is(await sizeBar(qt, reg), 0, `unimplemented BAR ${hex(reg)} reads 0 after sizing`);
    }
    assert.is(await sizeBar(qt, 0x30, 0xfffff800), 0, 'no expansion ROM');
    await enableBar0(qt);
    assert.is(await qt.pciReadl(SLOT, 0, 0x10), BAR0_ADDR, 'BAR0 assigned');
    assert.is((await qt.pciReadw(SLOT, 0, 0x04)) & 0x6, 0x6, 'COMMAND: memory + bus master');
    // QEMU forwards config writes: the device itself holds the BAR address now.
    const raw = srv.edu.regionRead(7, 0x10n, 4);
    const devBar = new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0, true);
    assert.is(devBar, BAR0_ADDR, "the server's config space saw the assignment");
    st.mark('config + BARs');

    // ---- edu registers over MMIO
    assert.is(await reg32(qt, Edu.IDENT), Edu.IDENT_VALUE, 'ident');
    for (const v of [0x12345678, 0, 0xffffffff, 0xa5a55a5a]) {
      await setReg32(qt, Edu.LIVENESS, v);
      assert.is(await reg32(qt, Edu.LIVENESS), ~v >>> 0, `liveness ~${hex(v)}`);
    }
    assert.is(await factorial(qt, 10), 3628800, '10!');
    assert.is(await factorial(qt, 12), 479001600, '12!');
    assert.is(await factorial(qt, 13), 1932053504, '13! mod 2^32');
    // A 64-bit register access arrives as one 8-byte access.
    await qt.writeq(BAR0_ADDR + Edu.DMA_SRC, 0x1122334455667788n);
    assert.is(await qt.readq(BAR0_ADDR + Edu.DMA_SRC), 0x1122334455667788n, '64-bit DMA_SRC round trip');
    st.mark('MMIO');

    // ---- DMA: guest RAM -> edu buffer -> guest RAM
    const data = pattern(LEN, 0x3c);
    await qt.memwrite(SRC, data);
    await qt.memset(DST, 2 * LEN, 0xee);
    const before = { ...srv.edu.stats };
    await eduDma(qt, SRC, Edu.BUFFER, LEN, false);
    assert.equal(srv.edu.stats.dmaErrors, before.dmaErrors, 'RAM -> edu without errors');
    await eduDma(qt, Edu.BUFFER, DST, LEN, true);
    assert.equal(await qt.memread(DST, LEN), data, 'the bytes arrived in guest RAM');
    assert.equal(await qt.memread(DST + BigInt(LEN), LEN), new Uint8Array(LEN).fill(0xee), 'nothing beyond');
    // A smaller transfer at an offset inside the buffer, into an unaligned destination.
    await eduDma(qt, Edu.BUFFER + 0x100n, DST + 0x3n, 0x80, true);
    assert.equal(await qt.memread(DST + 0x3n, 0x80), data.subarray(0x100, 0x180), 'offset transfer');
    assert.is(srv.edu.stats.dmaTransfers - before.dmaTransfers, 3);
    assert.is(srv.edu.stats.dmaBytes - before.dmaBytes, 2 * LEN + 0x80);
    assert.is(srv.edu.stats.dmaErrors, before.dmaErrors);
    assert.is(await reg32(qt, Edu.DMA_ERROR), 0, 'DMA error register clear');
    st.mark('DMA');

    // ---- which path the DMA took
    const src = srv.server.dma.find(SRC);
    const dst = srv.server.dma.find(DST);
    assert.ok(src && dst, 'both addresses lie in client DMA maps');
    const snap = srv.server.dma.snapshot();
    const requests = (qemu.stderr.match(/vfio_user_recv_request\s+command 0x([bc])/g) ?? []).length;
    if (ram === 'memfd') {
      assert.is(src!.access, 'mmap', 'source reached through the mapped memfd');
      assert.is(dst!.access, 'mmap', 'destination reached through the mapped memfd');
      assert.ok(snap.files >= 1 && snap.mappings >= 1, `guest RAM file mapped (${JSON.stringify(snap)})`);
      assert.ok(
        srv.dma.some(
          (e) => e.kind === 'map' && e.access === 'mmap' && e.iova <= SRC && e.iova + e.size > DST,
        ),
        'a DMA_MAP with an fd covers main RAM',
      );
      assert.is(requests, 0, `no DMA_READ/DMA_WRITE messages (QEMU trace)\n${qemu.stderr}`);
    } else {
      assert.is(src!.access, 'message', 'no fd: source read with DMA_READ');
      assert.is(dst!.access, 'message', 'no fd: destination written with DMA_WRITE');
      assert.is(snap.files, 0, 'no guest RAM file');
      assert.ok(
        srv.dma.every((e) => e.access === 'message'),
        'no DMA_MAP carried an fd',
      );
      // One DMA_READ (RAM -> edu, 4 KiB) and two DMA_WRITEs reached QEMU (its stderr may still be in the pipe).
      const count = (cmd: string) =>
        (qemu.stderr.match(new RegExp(`vfio_user_recv_request\\s+command ${cmd}\\b`, 'g')) ?? []).length;
      await poll(() => count('0xb') >= 1 && count('0xc') >= 2, 2000);
      const reads = count('0xb');
      const writes = count('0xc');
      assert.is(reads, 1, `DMA_READ messages seen by QEMU\n${qemu.stderr}`);
      assert.is(writes, 2, 'DMA_WRITE messages seen by QEMU');
    }
    assert.equal(srv.server.stats.errors, {}, 'no error replies at all');

    const doc = testDocMismatch(
      renderCommand(withoutOptions(qemu.command, ['-trace']), [[tmp.dir, TEST_DOC_DIR]]),
    );
    assert.is(doc, null, doc ?? '');
    const exit = await qemu.stop(); // SIGTERM: QEMU shuts the device down and exits 0
    assert.is(exit.timedOut, false);
    assert.is(exit.code, 0, exit.stderr);
    qt.close();
    st.mark('shutdown');
    st.print();
  } finally {
    listener.close();
    qemu.kill('SIGKILL');
    await qemu.exited;
    await srv.close();
    tmp.cleanup();
  }
}

test('qtest: edu over vfio-user-pci with shared memfd guest RAM (server maps guest RAM)', async () => {
  await run('memfd');
});

test('qtest: edu over vfio-user-pci with plain -m guest RAM (DMA_READ/DMA_WRITE messages)', async () => {
  await run('anonymous');
});

test.run();
