// vIOMMU: our edu behind QEMU's vfio-user-pci and an emulated VT-d (intel-iommu, intremap=on, caching-mode=on),
// driven by the same guest program as the control experiment (test/vm/guest/edu-vfio.c; edu-control.test.ts runs
// it against QEMU's built-in edu). In the guest the device is bound to vfio-pci; the program maps two 8 KiB
// buffers at IOVAs 0x100000 (A) and 0x200000 (B) through the guest's VFIO type1 container (and, on the self-built
// kernel, through iommufd), makes edu DMA A -> edu -> B, unmaps B and checks that a DMA to B's IOVA no longer lands.
//
// With the vIOMMU the device's DMA addresses are guest IOVAs: QEMU translates the guest's IOMMU mappings into
// DMA_MAP/DMA_UNMAP messages (one per 4 KiB page, each with the guest RAM memfd at the page's guest-physical
// offset). The test asserts from the server's own record that it received those maps and unmaps for the guest's
// IOVAs, and that the blocked DMA failed in the server (edu's DMA error register), not somewhere else.
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
import { type DmaEvent, Stages, startEduServer } from '../qemu/harness.js';

// test/dist/vm/x.test.js -> test/vm/guest/edu-vfio.c
const source = join(dirname(fileURLToPath(import.meta.url)), '../../vm/guest/edu-vfio.c');
const PAGE = 0x1000n;
const IOVA_A = 0x100000n;
const IOVA_B = 0x200000n;
/** edu-vfio's buffers are two pages. */
const BUF = 2n * PAGE;

/** The 4 KiB pages of [iova, iova + size). */
const pages = (iova: bigint, size: bigint) =>
  Array.from({ length: Number(size / PAGE) }, (_, i) => iova + BigInt(i) * PAGE);

/**
 * Index of the first event of `kind` for exactly the page at `iova`, from `from` on; -1 when none. (Before the
 * guest turns translation on, QEMU maps guest RAM 1:1 in large sections; those are not what this looks for.)
 */
function findEvent(ev: DmaEvent[], kind: DmaEvent['kind'], iova: bigint, from = 0): number {
  for (let i = from; i < ev.length; i++) {
    const e = ev[i]!;
    if (e.kind === kind && e.iova === iova && e.size === PAGE) return i;
  }
  return -1;
}

async function run(kernel: string, mode: 'type1' | 'iommufd'): Promise<void> {
  const reason = guestUnavailableReason(kernel);
  assert.is(reason, null, `${reason}`);
  const st = new Stages(`vIOMMU guest, ${kernel}/${mode}`);
  const bin = await buildGuestProgram(source);
  const tmp = makeTempDir();
  const vfioSocket = join(tmp.dir, 'vfio-user.sock');
  const srv = await startEduServer(vfioSocket);
  st.mark('build + server start');
  try {
    const r = await bootGuest({
      kernel,
      mode,
      ...guestDeviceOptions(vfioSocket),
      bind: ['1234:11e8'],
      files: [{ path: '/bin/edu-vfio', source: bin }],
      script: '/bin/edu-vfio "$MODE" "$BDF"',
      timeoutMs: 150_000,
    });
    st.mark('boot + run + poweroff');
    const context = bootContext(r);
    assert.match(r.console, /bound 0000:00:05\.0 \(1234:11e8\) to vfio-pci/, `not bound${context}`);
    const checks = assertGuestPassed(r, { program: 'edu-vfio', minChecks: 20 });

    // The guest's IOMMU mappings reached the server as DMA_MAPs of its IOVAs, backed by the guest RAM memfd, and
    // its unmaps as DMA_UNMAPs; B's pages were unmapped before the blocked transfer.
    const ev = srv.dma;
    const dump = () =>
      ev
        .filter((e) => e.size <= 0x10000n)
        .map((e) => `${e.kind} 0x${e.iova.toString(16)}+0x${e.size.toString(16)} ${e.access}`)
        .join('\n');
    for (const iova of [...pages(IOVA_A, BUF), ...pages(IOVA_B, BUF)]) {
      const m = findEvent(ev, 'map', iova);
      assert.ok(m >= 0, `no DMA_MAP for IOVA 0x${iova.toString(16)}\n${dump()}`);
      const e = ev[m]!;
      assert.is(e.access, 'mmap', 'the page came with the guest RAM memfd and is reached through it');
      assert.is(e.prot, 0x3, 'read + write');
      assert.ok(
        findEvent(ev, 'unmap', iova, m + 1) > m,
        `no DMA_UNMAP for IOVA 0x${iova.toString(16)}\n${dump()}`,
      );
    }
    // The guest pages behind A and B are distinct guest-physical pages (the memfd offsets), not the IOVAs.
    const offsets = new Set(
      [...pages(IOVA_A, BUF), ...pages(IOVA_B, BUF)].map((i) => ev[findEvent(ev, 'map', i)]!.fileOffset),
    );
    assert.is(offsets.size, 4, 'four distinct guest pages');
    const s = srv.server.stats;
    assert.ok(s.dmaMaps >= 4 && s.dmaUnmaps >= 4, `DMA_MAP/DMA_UNMAP counters: ${JSON.stringify(s)}`);
    // The blocked DMA was refused by the server's address space: edu recorded a fault (DMA error register).
    assert.ok(srv.edu.stats.dmaErrors >= 1, `edu DMA errors: ${JSON.stringify(srv.edu.stats)}`);
    assert.is(srv.edu.stats.lastDmaError, 2, 'the last DMA error is a FAULT (unmapped IOVA)');
    assert.equal(s.errors, {}, `no error replies: ${JSON.stringify(s)}`);
    console.log(
      `  ${kernel}/${mode}: ${checks} checks; server saw ${s.messages.DMA_MAP} DMA_MAP, ` +
        `${s.messages.DMA_UNMAP} DMA_UNMAP; edu ${srv.edu.stats.dmaTransfers} transfers, ` +
        `${srv.edu.stats.dmaErrors} refused; init at ${r.timings.initUptime}s guest time`,
    );

    const k = guestKernel(kernel)!.kernel;
    const line = renderCommand(r.command, [
      [tmp.dir, TEST_DOC_DIR],
      [k, kernel === 'debian' ? 'vmlinuz' : 'bzImage'],
      [/^\/tmp\/vfio-guest-[^/]+\/initrd\.cpio\.gz$/, 'initrd.cpio.gz'],
    ]);
    const doc = testDocMismatch(line);
    assert.is(doc, null, doc ?? '');
    st.print();
  } finally {
    await srv.close();
    tmp.cleanup();
  }
}

test('vIOMMU: guest vfio-pci type1 maps, edu DMA through them, unmapped IOVA blocked (Debian 6.12)', async () => {
  await run('debian', 'type1');
});

if (guestKernel('iommufd')) {
  test('vIOMMU: the same through the guest iommufd + VFIO cdev (self-built kernel)', async () => {
    await run('iommufd', 'iommufd');
  });
} else {
  console.log('  (iommufd kernel not built: run test/setup/prepare-guest.sh; its vIOMMU case not run)');
}

test.run();
