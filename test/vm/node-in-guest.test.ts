// Proves that the host's Node and the project tree run inside a guest over the read-only 9p share of the host
// root (docs/testing.md): the self-built kernel (9p built in, /dev/iommu present) and the Debian kernel (9p as
// modules loaded from the initramfs, no /dev/iommu). nodeInGuest's environment variables reach Node intact.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bootContext, bootGuest, guestKernel, guestUnavailableReason, nodeInGuest } from '../lib/guest.js';

const probe = `
const fs = require('node:fs');
let ro = false;
try { fs.writeFileSync(process.cwd() + '/.guest-write-probe', 'x'); } catch (e) { ro = e.code === 'EROFS'; }
fs.writeFileSync('/dev/shm/guest-shm-probe', 'shm');
console.log('NODE-IN-GUEST ' + JSON.stringify({
  version: process.version,
  iommu: fs.existsSync('/dev/iommu'),
  vfio: fs.existsSync('/dev/vfio') ? fs.readdirSync('/dev/vfio').sort() : [],
  cdevs: fs.existsSync('/dev/vfio/devices') ? fs.readdirSync('/dev/vfio/devices') : [],
  project: fs.existsSync(process.cwd() + '/package.json'),
  readOnly: ro,
  shm: fs.readFileSync('/dev/shm/guest-shm-probe', 'utf8'),
  kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
  env: process.env.GUEST_ENV_PROBE ?? null,
}));
`;

/** Quotes, spaces, `=` and `$` must survive both shells (the payload's and the chroot's). */
const ENV_VALUE = `it's "quoted" a=b $HOME`;

async function nodeProbe(kernel: string): Promise<Record<string, unknown>> {
  const reason = guestUnavailableReason(kernel);
  assert.is(reason, null, `${reason}`);
  const r = await bootGuest({
    kernel,
    hostRoot: true,
    devices: ['edu,dma_mask=0xffffffff'],
    bind: ['1234:11e8'],
    script: nodeInGuest(['-e', probe], { env: { GUEST_ENV_PROBE: ENV_VALUE } }),
    timeoutMs: 150_000,
  });
  const context = bootContext(r);
  const m = /^NODE-IN-GUEST (.*)$/m.exec(r.output);
  assert.ok(m, `no probe output${context}`);
  assert.is(r.exitCode, 0, `payload exit status${context}`);
  console.log(`  ${kernel}: ${m![1]} (wall ${(r.timings.wallMs / 1000).toFixed(1)}s)`);
  return JSON.parse(m![1]!) as Record<string, unknown>;
}

if (guestKernel('iommufd')) {
  test('node runs in the self-built guest over 9p and sees /dev/iommu', async () => {
    const p = await nodeProbe('iommufd');
    assert.is(p.version, process.version);
    assert.is(p.iommu, true);
    assert.ok((p.vfio as string[]).includes('devices'), 'VFIO cdev directory');
    assert.equal(p.cdevs, ['vfio0']);
    assert.is(p.project, true);
    assert.is(p.readOnly, true, 'the host root must be shared read-only');
    assert.is(p.shm, 'shm');
    assert.is(p.env, ENV_VALUE);
  });
} else {
  console.log(
    '  (iommufd kernel not built: run test/setup/prepare-guest.sh; its node-in-guest case not run)',
  );
}

test('node runs in the Debian guest over 9p (modules) and sees type1 only', async () => {
  const p = await nodeProbe('debian');
  assert.is(p.version, process.version);
  assert.is(p.iommu, false);
  assert.ok((p.vfio as string[]).includes('vfio'), '/dev/vfio/vfio');
  assert.is(p.project, true);
  assert.is(p.readOnly, true);
  assert.is(p.shm, 'shm');
  assert.is(p.env, ENV_VALUE);
});

test.run();
