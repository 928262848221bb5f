// Backend selection (`--iommu none|vfio|iommufd|auto`) and the host-side failure paths that need no VFIO: the
// real backends are exercised against real kernels in the VM tests (test/vm/mirror.test.ts).

import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, eventfd, memfdCreate } from 'vfio-user-native';
import { normaliseBdf } from '../src/device.js';
import { createDevice } from '../src/devices/index.js';
import { IommufdBackend } from '../src/iommu/iommufd.js';
import {
  createIommuBackend,
  hasVfioCdev,
  IOMMU_CHOICES,
  isIommuChoice,
  resolveIommuChoice,
} from '../src/iommu/select.js';
import { VfioType1Backend } from '../src/iommu/vfio-type1.js';

const E = constants.errno;
const BDF = '0000:00:03.0';
const vfioPci = (params: Record<string, string> = { host: BDF }) => ({ name: 'vfio-pci', params });

/** A fake /dev + /sys tree for `auto`. */
function fakeRoot(o: { iommu: boolean; cdev: boolean }): { root: string; done(): void } {
  const root = mkdtempSync(join(tmpdir(), 'iommu-select-'));
  mkdirSync(join(root, 'dev'));
  if (o.iommu) writeFileSync(join(root, 'dev/iommu'), '');
  const dev = join(root, 'sys/bus/pci/devices', BDF);
  mkdirSync(dev, { recursive: true });
  if (o.cdev) mkdirSync(join(dev, 'vfio-dev/vfio0'), { recursive: true });
  return { root, done: () => rmSync(root, { recursive: true, force: true }) };
}

test('IOMMU_CHOICES and isIommuChoice', () => {
  assert.equal([...IOMMU_CHOICES], ['none', 'vfio', 'iommufd', 'auto']);
  assert.ok(isIommuChoice('auto'));
  assert.not.ok(isIommuChoice('type1'));
});

test('auto: iommufd with /dev/iommu and a cdev, vfio otherwise, none without a host device', () => {
  const both = fakeRoot({ iommu: true, cdev: true });
  const noCdev = fakeRoot({ iommu: true, cdev: false });
  const noIommu = fakeRoot({ iommu: false, cdev: true });
  try {
    assert.ok(hasVfioCdev(BDF, both.root));
    assert.is(resolveIommuChoice('auto', { device: vfioPci(), root: both.root }), 'iommufd');
    assert.is(resolveIommuChoice('auto', { device: vfioPci(), root: noCdev.root }), 'vfio');
    assert.is(resolveIommuChoice('auto', { device: vfioPci(), root: noIommu.root }), 'vfio');
    assert.is(resolveIommuChoice('auto', { device: { name: 'edu', params: {} }, root: both.root }), 'none');
    // Pre-opened fds decide: an iommufd selects iommufd, a container or group selects vfio.
    assert.is(
      resolveIommuChoice('auto', { device: vfioPci(), hostFds: { iommufd: 7 }, root: noIommu.root }),
      'iommufd',
    );
    assert.is(
      resolveIommuChoice('auto', { device: vfioPci(), hostFds: { group: 7 }, root: both.root }),
      'vfio',
    );
  } finally {
    both.done();
    noCdev.done();
    noIommu.done();
  }
});

test('auto with only a device fd: a character device (cdev) means iommufd when /dev/iommu exists', () => {
  const r = fakeRoot({ iommu: true, cdev: false });
  const notChar = memfdCreate('not-a-cdev', 4096);
  try {
    assert.is(
      resolveIommuChoice('auto', { device: vfioPci({}), hostFds: { device: notChar }, root: r.root }),
      'vfio',
    );
  } finally {
    closeFd(notChar);
    r.done();
  }
});

test('vfio/iommufd without a host device are configuration errors', () => {
  assert.throws(() => resolveIommuChoice('vfio', { device: { name: 'edu', params: {} } }), /host device/);
  assert.throws(() => resolveIommuChoice('iommufd', { device: vfioPci({}) }), /host device/);
  assert.is(resolveIommuChoice('vfio', { device: vfioPci({}), hostFds: { device: 5 } }), 'vfio');
  assert.is(resolveIommuChoice('none', { device: vfioPci() }), 'none');
  assert.throws(() => resolveIommuChoice('vfio', { device: vfioPci({ host: 'nonsense' }) }), /PCI address/);
});

test('normaliseBdf', () => {
  assert.is(normaliseBdf('00:03.0'), '0000:00:03.0');
  assert.is(normaliseBdf('0000:0A:1f.7'), '0000:0a:1f.7');
  assert.throws(() => normaliseBdf('0000:00:03'), /PCI address/);
});

test('createIommuBackend: none, and mismatched pre-opened fds', async () => {
  const none = await createIommuBackend('none', { device: vfioPci() });
  assert.is(none.name, 'none');
  let err: unknown;
  try {
    await createIommuBackend('vfio', { device: vfioPci(), hostFds: { iommufd: 99 } });
  } catch (e) {
    err = e;
  }
  assert.match(String(err), /--iommufd-fd/);
});

// On machines without VFIO (the project's hosts): opening fails with an errno, and nothing leaks.
if (!existsSync('/dev/vfio/vfio')) {
  test('without /dev/vfio: type1 fails with ENOENT and owns (closes) the fds it was given', async () => {
    const spare = eventfd();
    const b = new VfioType1Backend({ bdf: BDF, hostFds: { device: spare } });
    let err: { errno?: number } | undefined;
    try {
      await b.attach();
    } catch (e) {
      err = e as { errno?: number };
    }
    assert.is(err?.errno, E.ENOENT);
    // The pre-opened fd was released with the failed set-up.
    assert.throws(() => closeFd(spare));
    await b.close();
  });
}
if (!existsSync('/dev/iommu')) {
  test('without /dev/iommu: iommufd fails with ENOENT', async () => {
    const b = new IommufdBackend({ bdf: BDF });
    let errno: number | undefined;
    try {
      b.open();
    } catch (e) {
      errno = (e as { errno?: number }).errno;
    }
    assert.is(errno, E.ENOENT);
    await b.unmapAll(); // nothing opened: a no-op
    await b.close();
  });
}

test('vfio-pci refuses to start without a VFIO backend', () => {
  assert.throws(() => createDevice('vfio-pci', { host: BDF }), /VFIO host IOMMU backend/);
});

test.run();
