// End-to-end check of the VFIO/iommufd wrappers against a real passed-through PCI device (run inside a guest
// with an IOMMU, e.g. QEMU + intel-iommu + edu bound to vfio-pci). Not a uvu file.
//
//   node server/native/dist/test/vfio-smoke.js --bdf 0000:00:03.0 [--backend auto|type1|iommufd] [--json]
//
// Prints one line per step ("ok <step>: ..." / "FAIL <step>: ...") and ends with "N passed, M failed";
// exits non-zero on any failure. Needs root (or access to /dev/vfio, /dev/iommu) and CAP_IPC_LOCK or enough
// RLIMIT_MEMLOCK for the 2 MiB test mapping.
import { existsSync } from 'node:fs';
import {
  closeFd,
  eventfd,
  iommufd,
  isErrno,
  memfdCreate,
  mmap,
  munmap,
  U64_MAX,
  vfio,
} from '../lib/index.js';

const argv = process.argv.slice(2);
const opt = (name: string, dflt?: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const bdf = opt('--bdf');
const asJson = argv.includes('--json');
if (!bdf) {
  console.error('usage: vfio-smoke --bdf 0000:00:03.0 [--backend auto|type1|iommufd] [--json]');
  process.exit(2);
}
let backend = opt('--backend', 'auto')!;
if (backend === 'auto') {
  backend =
    existsSync('/dev/iommu') && existsSync(`/sys/bus/pci/devices/${bdf}/vfio-dev`) ? 'iommufd' : 'type1';
}

const SIZE = 2n << 20n;
const IOVA = 0x100000n;
let passed = 0;
let failed = 0;
const report: { step: string; ok: boolean; detail: string }[] = [];
/** Run in order at the end: device/group/container fds first (closing them unmaps), then the memory. */
const cleanups: (() => void)[] = [];
const memCleanups: (() => void)[] = [];

function line(step: string, ok: boolean, detail: string) {
  if (ok) passed++;
  else failed++;
  report.push({ step, ok, detail });
  if (!asJson) console.log(`${ok ? 'ok' : 'FAIL'} ${step}${detail ? `: ${detail}` : ''}`);
}

const show = (v: unknown) =>
  JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : (x as unknown)));

async function step<T>(
  name: string,
  fn: () => T | Promise<T>,
  detail?: (v: T) => string,
): Promise<T | undefined> {
  try {
    const v = await fn();
    line(name, true, detail ? detail(v) : '');
    return v;
  } catch (err) {
    const e = err as Error & { code?: string; syscall?: string };
    line(name, false, `${e.syscall ?? ''} ${e.code ?? ''} ${e.message}`.trim());
    return undefined;
  }
}

/** Expects `fn` to fail with `code`. */
async function expectErr(name: string, code: string, fn: () => unknown) {
  try {
    await fn();
    line(name, false, `expected ${code}, got success`);
  } catch (err) {
    line(name, isErrno(err, code), `${(err as Error).message}`);
  }
}

function check(name: string, cond: boolean, detail: string) {
  line(name, cond, detail);
}

async function deviceChecks(dev: number) {
  const info = await step('VFIO_DEVICE_GET_INFO', () => vfio.deviceGetInfo(dev), show);
  if (!info) return;
  for (let i = 0; i < info.numRegions; i++) {
    await step(`VFIO_DEVICE_GET_REGION_INFO[${i}]`, () => vfio.regionInfo(dev, i), show);
  }
  const cfg = await step(
    'config space read (vendor/device)',
    () => {
      const region = vfio.regionInfo(dev, vfio.PCI_CONFIG_REGION_INDEX);
      const buf = Buffer.alloc(4);
      if (vfio.regionRead(dev, region, 0n, buf) !== 4) throw new Error('short read');
      return buf.readUInt32LE(0);
    },
    (v) => `0x${v.toString(16).padStart(8, '0')}`,
  );
  if (cfg !== undefined)
    check('vendor id is not 0xffff', (cfg & 0xffff) !== 0xffff, `0x${(cfg & 0xffff).toString(16)}`);
  for (let i = 0; i < info.numIrqs; i++) {
    const irq = await step(`VFIO_DEVICE_GET_IRQ_INFO[${i}]`, () => vfio.irqInfo(dev, i), show);
    if (!irq || irq.count === 0 || !(irq.flags & vfio.IRQ_INFO_EVENTFD)) continue;
    if (i !== vfio.PCI_MSI_IRQ_INDEX && i !== vfio.PCI_MSIX_IRQ_INDEX) continue;
    const efd = eventfd();
    await step(`VFIO_DEVICE_SET_IRQS[${i}] assign 1 eventfd`, () =>
      vfio.setIrqs(dev, { index: i, eventfds: [efd] }),
    );
    await step(`VFIO_DEVICE_SET_IRQS[${i}] disable`, () => vfio.setIrqs(dev, { index: i, count: 0 }));
    closeFd(efd);
  }
  if (info.flags & vfio.DEVICE_FLAGS_RESET) await step('VFIO_DEVICE_RESET', () => vfio.reset(dev));
  else line('VFIO_DEVICE_RESET', true, 'skipped: device has no RESET flag');
}

async function type1() {
  const container = await step(
    'open /dev/vfio/vfio',
    () => vfio.openContainer(),
    (fd) => `fd ${fd}`,
  );
  if (container === undefined) return;
  cleanups.push(() => closeFd(container));
  await step('VFIO_GET_API_VERSION == 0', () => {
    const v = vfio.getApiVersion(container);
    if (v !== vfio.API_VERSION) throw new Error(`got ${v}`);
    return v;
  });
  await step('CHECK_EXTENSION(TYPE1v2) == 1', () => {
    if (vfio.checkExtension(container, vfio.TYPE1v2_IOMMU) !== 1) throw new Error('TYPE1v2 missing');
  });
  const group = await step(
    'iommu group',
    () => vfio.iommuGroupOf(bdf!),
    (g) => String(g),
  );
  if (group === undefined) return;
  const gfd = await step(
    'open group',
    () => vfio.openGroup(group),
    (fd) => `fd ${fd}`,
  );
  if (gfd === undefined) return;
  cleanups.unshift(() => closeFd(gfd));
  const st = await step(
    'GROUP_GET_STATUS viable',
    () => vfio.groupGetStatus(gfd),
    (f) => `flags 0x${f.toString(16)}`,
  );
  if (st !== undefined) check('group viable', (st & vfio.GROUP_FLAGS_VIABLE) !== 0, `flags ${st}`);
  await step('GROUP_SET_CONTAINER', () => vfio.groupSetContainer(gfd, container));
  await step('SET_IOMMU(TYPE1v2)', () => vfio.setIommu(container, vfio.TYPE1v2_IOMMU));
  const info = await step('IOMMU_GET_INFO', () => vfio.getInfo(container), show);
  const unmapAll = vfio.checkExtension(container, vfio.EXT_UNMAP_ALL) === 1;
  line('CHECK_EXTENSION(UNMAP_ALL)', true, String(unmapAll));

  const mfd = memfdCreate('smoke-ram', SIZE);
  const ab = mmap(mfd, 0n, Number(SIZE));
  memCleanups.push(() => {
    munmap(ab);
    closeFd(mfd);
  });
  await step('MAP_DMA 2 MiB at 0x100000', () =>
    vfio.mapDma(container, { iova: IOVA, size: SIZE, buffer: ab }),
  );
  const after = await step('DMA_AVAIL decremented', () => vfio.getInfo(container).dmaAvail, String);
  if (info?.dmaAvail !== undefined && after !== undefined)
    check('dmaAvail - 1', after === info.dmaAvail - 1, `${info.dmaAvail} -> ${after}`);
  await expectErr('MAP_DMA overlap -> EEXIST', 'EEXIST', () =>
    vfio.mapDma(container, { iova: IOVA, size: 4096n, buffer: ab }),
  );
  await expectErr('UNMAP_DMA bisecting -> EINVAL', 'EINVAL', () =>
    vfio.unmapDma(container, { iova: IOVA, size: 4096n }),
  );
  await step('UNMAP_DMA nothing there -> 0', async () => {
    const n = await vfio.unmapDma(container, { iova: 0x40000000n, size: 4096n });
    if (n !== 0n) throw new Error(`got ${n}`);
  });
  await step('UNMAP_DMA exact -> size', async () => {
    const n = await vfio.unmapDma(container, { iova: IOVA, size: SIZE });
    if (n !== SIZE) throw new Error(`got ${n}`);
  });
  if (unmapAll) {
    await step('MAP_DMA again + UNMAP_DMA(ALL)', async () => {
      await vfio.mapDma(container, { iova: IOVA, size: SIZE, buffer: ab });
      const n = await vfio.unmapDma(container, { all: true });
      if (n !== SIZE) throw new Error(`got ${n}`);
    });
  }
  const dev = await step(
    'GROUP_GET_DEVICE_FD',
    () => vfio.getDeviceFd(gfd, bdf!),
    (fd) => `fd ${fd}`,
  );
  if (dev !== undefined) {
    await deviceChecks(dev);
    closeFd(dev);
  }
  await step('GROUP_UNSET_CONTAINER', () => vfio.groupUnsetContainer(gfd));
}

async function iommufdBackend() {
  const ifd = await step(
    'open /dev/iommu',
    () => iommufd.open(),
    (fd) => `fd ${fd}`,
  );
  if (ifd === undefined) return;
  cleanups.push(() => closeFd(ifd));
  const dev = await step(
    'open VFIO cdev',
    () => vfio.openDevice(bdf!),
    (fd) => `fd ${fd}`,
  );
  if (dev === undefined) return;
  cleanups.unshift(() => closeFd(dev));
  await step(
    'BIND_IOMMUFD',
    () => vfio.bindIommufd(dev, ifd),
    (id) => `devid ${id}`,
  );
  const ioas = await step(
    'IOAS_ALLOC',
    () => iommufd.ioasAlloc(ifd),
    (id) => `ioas ${id}`,
  );
  if (ioas === undefined) return;
  await step(
    'ATTACH_IOMMUFD_PT',
    () => vfio.attachPt(dev, ioas),
    (id) => `hwpt ${id}`,
  );
  await step('IOAS_IOVA_RANGES', () => iommufd.iovaRanges(ifd, ioas), show);
  await step('OPTION get HUGE_PAGES', () => iommufd.optionGet(ifd, iommufd.OPTION_HUGE_PAGES, ioas), String);
  const mfd = memfdCreate('smoke-ram', SIZE * 2n);
  const ab = mmap(mfd, 0n, Number(SIZE));
  memCleanups.push(() => {
    munmap(ab);
    closeFd(mfd);
  });
  await step(
    'IOAS_MAP (user VA) 2 MiB at 0x100000',
    () => iommufd.ioasMap(ifd, { ioasId: ioas, iova: IOVA, length: SIZE, buffer: ab }),
    show,
  );
  await expectErr('IOAS_MAP overlap -> EEXIST', 'EEXIST', () =>
    iommufd.ioasMap(ifd, { ioasId: ioas, iova: IOVA, length: 4096n, buffer: ab }),
  );
  await expectErr('IOAS_UNMAP nothing there -> ENOENT', 'ENOENT', () =>
    iommufd.ioasUnmap(ifd, { ioasId: ioas, iova: 0x40000000n, length: 4096n }),
  );
  await step('IOAS_UNMAP exact -> length', async () => {
    const n = await iommufd.ioasUnmap(ifd, { ioasId: ioas, iova: IOVA, length: SIZE });
    if (n !== SIZE) throw new Error(`got ${n}`);
  });
  try {
    const iova = await iommufd.ioasMapFile(ifd, {
      ioasId: ioas,
      fd: mfd,
      start: SIZE,
      length: SIZE,
      iova: IOVA,
    });
    line('IOAS_MAP_FILE (memfd, offset 2 MiB)', iova === IOVA, show(iova));
  } catch (err) {
    if (isErrno(err, 'ENOTTY')) line('IOAS_MAP_FILE', true, 'skipped: kernel < 6.13 (ENOTTY)');
    else line('IOAS_MAP_FILE', false, (err as Error).message);
  }
  await step(
    'IOAS_UNMAP all',
    () => iommufd.ioasUnmap(ifd, { ioasId: ioas, iova: 0n, length: U64_MAX }),
    show,
  );
  await deviceChecks(dev);
  await step('DETACH_IOMMUFD_PT', () => vfio.detachPt(dev));
  await step('DESTROY ioas', () => iommufd.destroy(ifd, ioas));
}

line('backend', true, backend);
if (backend === 'iommufd') await iommufdBackend();
else await type1();
for (const c of [...cleanups, ...memCleanups]) {
  try {
    c();
  } catch (err) {
    line('cleanup', false, (err as Error).message);
  }
}
if (asJson) console.log(JSON.stringify({ bdf, backend, passed, failed, steps: report }, null, 2));
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
