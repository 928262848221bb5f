// Firmware: SeaBIOS on q35 (TCG) enumerates our edu behind vfio-user-pci. Its debug log (isa-debugcon, port 0x402)
// must show the device's ids at 00:05.0 and BAR0 mapped as 1 MiB of memory; the address SeaBIOS chose must be
// what the device's own config space holds. QEMU is killed once the log shows both lines (SeaBIOS then only
// looks for a boot device).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { poll } from '../lib/wait.js';
import { renderCommand, seabiosCommand, TEST_DOC_DIR, testDocMismatch } from './cmdline.js';
import { Stages, startEduServer } from './harness.js';

const unavailable = qemuUnavailableReason();

test('SeaBIOS (q35) enumerates the device and maps BAR0', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable} (run make qemu)`);
  const st = new Stages('SeaBIOS enumeration (q35, TCG)');
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const logFile = join(tmp.dir, 'seabios.log');
  const srv = await startEduServer(vfioSocket);
  const qemu = spawnQemu({ args: seabiosCommand({ vfioSocket, logFile }), timeoutMs: 60_000 });
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'latin1') : '');
  const initRe = /PCI: init bdf=00:05\.0 id=1234:11e8/;
  const barRe = /PCI: map device bdf=00:05\.0\s+bar 0, addr ([0-9a-f]+), size 00100000 \[mem\]/;
  try {
    const seen = await poll(() => qemu.done || (initRe.test(log()) && barRe.test(log())), 45_000);
    st.mark('boot to PCI init');
    const text = log();
    assert.ok(
      seen && !qemu.done,
      `SeaBIOS did not get there (QEMU ${qemu.done ? 'exited' : 'running'}):\n${text}\n${qemu.stderr}`,
    );
    assert.match(text, /PCI: init bdf=00:05\.0 id=1234:11e8/);
    const bar = barRe.exec(text);
    assert.ok(bar, text);
    const addr = Number.parseInt(bar![1]!, 16);
    assert.is(addr % 0x100000, 0, 'BAR0 naturally aligned');
    // Nothing else of ours was mapped: no second BAR, no ROM.
    assert.not.match(text, /bdf=00:05\.0\s+bar [1-6]/, 'only BAR0');
    // SeaBIOS's config writes went through QEMU to the device.
    const raw = srv.edu.regionRead(7, 0x10n, 4);
    assert.is(
      new DataView(raw.buffer, raw.byteOffset, 4).getUint32(0, true),
      addr,
      'device BAR0 = SeaBIOS address',
    );
    const s = srv.server.stats;
    assert.ok((s.messages.DMA_MAP ?? 0) >= 1 && (s.messages.DEVICE_RESET ?? 0) >= 1, JSON.stringify(s));
    assert.equal(s.errors, {}, 'no error replies');
    const doc = testDocMismatch(renderCommand(qemu.command, [[tmp.dir, TEST_DOC_DIR]]));
    assert.is(doc, null, doc ?? '');
    console.log(
      `  SeaBIOS: ${text
        .split('\n')
        .filter((l) => /bdf=00:05\.0/.test(l))
        .join(' | ')}; ` +
        `${s.messages.DMA_MAP} DMA_MAP, ${s.messages.DMA_UNMAP ?? 0} DMA_UNMAP, ${s.messages.REGION_READ} REGION_READ, ` +
        `${s.messages.REGION_WRITE} REGION_WRITE, ${s.messages.DEVICE_RESET} DEVICE_RESET`,
    );
    qemu.kill('SIGKILL');
    await qemu.exited;
    st.mark('kill');
    st.print();
  } finally {
    qemu.kill('SIGKILL');
    await qemu.exited;
    await srv.close();
    tmp.cleanup();
  }
});

test.run();
