// Control experiment for the VM harness: QEMU's built-in `edu` behind the emulated VT-d, bound to vfio-pci in a
// Linux guest, driven by test/vm/guest/edu-vfio.c through a real type1 container (Debian 6.12) and, when the
// self-built kernel is cached, through iommufd + the VFIO cdev. If this fails, the harness (not our server) is
// broken; the same program later runs against our vfio-user edu.
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

// test/dist/vm/x.test.js -> test/vm/guest/edu-vfio.c
const source = join(dirname(fileURLToPath(import.meta.url)), '../../vm/guest/edu-vfio.c');

async function runEdu(kernel: string, mode: 'type1' | 'iommufd'): Promise<void> {
  const reason = guestUnavailableReason(kernel);
  assert.is(reason, null, `${reason}`);
  const bin = await buildGuestProgram(source);
  const r = await bootGuest({
    kernel,
    mode,
    devices: ['edu,dma_mask=0xffffffff'],
    bind: ['1234:11e8'],
    files: [{ path: '/bin/edu-vfio', source: bin }],
    script: '/bin/edu-vfio "$MODE" "$BDF"',
    timeoutMs: 150_000,
  });
  const checks = assertGuestPassed(r, { program: 'edu-vfio', minChecks: 20 });
  const context = bootContext(r);
  // The negative check must have come from the IOMMU, not from a DMA that went elsewhere.
  assert.match(
    r.qemu.stderr,
    /detected (sspte permission error|translation failure)/,
    `no vIOMMU fault${context}`,
  );
  console.log(
    `  ${kernel}/${mode}: ${checks} checks, init at ${r.timings.initUptime}s guest time, ` +
      `wall ${(r.timings.wallMs / 1000).toFixed(1)}s`,
  );
}

test('edu through vfio-pci, type1 container (Debian 6.12 guest)', async () => {
  await runEdu('debian', 'type1');
});

if (guestKernel('iommufd')) {
  test('edu through vfio-pci, iommufd + cdev (self-built kernel)', async () => {
    await runEdu('iommufd', 'iommufd');
  });
  test('edu through vfio-pci, type1 container (self-built kernel)', async () => {
    await runEdu('iommufd', 'type1');
  });
} else {
  console.log('  (iommufd kernel not built: run test/setup/prepare-guest.sh; iommufd cases not run)');
}

test.run();
