// VFIO/iommufd wrappers without /dev/vfio or /dev/iommu: uAPI layouts against the kernel's, clean failures
// (ENOENT when the nodes are absent, ENOTTY with the ioctl's name on a wrong fd, EBADF on a closed one), busy
// mappings during async ioctls, and the synchronous map/unmap twins failing exactly like the async ones. The
// guest-side end-to-end run is test/vfio-smoke.ts (and test/vm/mirror.test.ts through the server's backends).
import { existsSync } from 'node:fs';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { closeFd, eventfd, iommufd, layouts, memfdCreate, mmap, munmap, vfio } from '../lib/index.js';
import { type CodedError, noLeak, thrown } from './helpers.js';

async function rejected(p: Promise<unknown>): Promise<CodedError> {
  try {
    await p;
  } catch (err) {
    return err as CodedError;
  }
  throw new Error('expected a rejection');
}

// The kernel uAPI (x86_64): every VFIO and iommufd ioctl is _IO(';', nr) = 0x3b00 | nr.
const IOCTLS: Record<string, number> = {
  VFIO_GET_API_VERSION: 0x3b64,
  VFIO_CHECK_EXTENSION: 0x3b65,
  VFIO_SET_IOMMU: 0x3b66,
  VFIO_GROUP_GET_STATUS: 0x3b67,
  VFIO_GROUP_SET_CONTAINER: 0x3b68,
  VFIO_GROUP_UNSET_CONTAINER: 0x3b69,
  VFIO_GROUP_GET_DEVICE_FD: 0x3b6a,
  VFIO_DEVICE_GET_INFO: 0x3b6b,
  VFIO_DEVICE_GET_REGION_INFO: 0x3b6c,
  VFIO_DEVICE_GET_IRQ_INFO: 0x3b6d,
  VFIO_DEVICE_SET_IRQS: 0x3b6e,
  VFIO_DEVICE_RESET: 0x3b6f,
  VFIO_IOMMU_GET_INFO: 0x3b70,
  VFIO_IOMMU_MAP_DMA: 0x3b71,
  VFIO_IOMMU_UNMAP_DMA: 0x3b72,
  VFIO_IOMMU_DIRTY_PAGES: 0x3b75,
  VFIO_DEVICE_FEATURE: 0x3b75,
  VFIO_DEVICE_BIND_IOMMUFD: 0x3b76,
  VFIO_DEVICE_ATTACH_IOMMUFD_PT: 0x3b77,
  VFIO_DEVICE_DETACH_IOMMUFD_PT: 0x3b78,
  IOMMU_DESTROY: 0x3b80,
  IOMMU_IOAS_ALLOC: 0x3b81,
  IOMMU_IOAS_ALLOW_IOVAS: 0x3b82,
  IOMMU_IOAS_COPY: 0x3b83,
  IOMMU_IOAS_IOVA_RANGES: 0x3b84,
  IOMMU_IOAS_MAP: 0x3b85,
  IOMMU_IOAS_UNMAP: 0x3b86,
  IOMMU_OPTION: 0x3b87,
  IOMMU_VFIO_IOAS: 0x3b88,
  IOMMU_HWPT_ALLOC: 0x3b89,
  IOMMU_GET_HW_INFO: 0x3b8a,
  IOMMU_IOAS_MAP_FILE: 0x3b8f,
  IOMMU_IOAS_CHANGE_PROCESS: 0x3b92,
};

// Struct sizes of the kernel uAPI (linux/vfio.h, linux/iommufd.h, x86_64).
const SIZES: Record<string, number> = {
  vfio_group_status: 8,
  vfio_iommu_type1_info: 24,
  vfio_info_cap_header: 8,
  vfio_iommu_type1_info_cap_iova_range: 16,
  vfio_iova_range: 16,
  vfio_iommu_type1_info_cap_migration: 32,
  vfio_iommu_type1_info_dma_avail: 12,
  vfio_iommu_type1_dma_map: 32,
  vfio_iommu_type1_dma_unmap: 24,
  vfio_bitmap: 24,
  vfio_iommu_type1_dirty_bitmap: 8,
  vfio_iommu_type1_dirty_bitmap_get: 40,
  vfio_device_info: 24,
  vfio_region_info: 32,
  // region caps (vfio-user's region-info caps use the same layouts): header 8 + two u32
  vfio_region_info_cap_sparse_mmap: 16,
  vfio_region_sparse_mmap_area: 16,
  vfio_region_info_cap_type: 16,
  vfio_irq_info: 16,
  vfio_irq_set: 20,
  vfio_device_feature: 8,
  vfio_device_bind_iommufd: 24,
  vfio_device_attach_iommufd_pt: 16,
  vfio_device_detach_iommufd_pt: 12,
  iommu_destroy: 8,
  iommu_ioas_alloc: 12,
  iommu_iova_range: 16,
  iommu_ioas_iova_ranges: 32,
  iommu_ioas_allow_iovas: 24,
  iommu_ioas_copy: 40,
  iommu_ioas_map: 40,
  iommu_ioas_map_file: 40,
  iommu_ioas_unmap: 24,
  iommu_option: 24,
  iommu_vfio_ioas: 12,
  iommu_ioas_change_process: 8,
};

// Field offsets of the kernel uAPI.
const OFFSETS: Record<string, number> = {
  'vfio_group_status.flags': 4,
  'vfio_iommu_type1_info.flags': 4,
  'vfio_iommu_type1_info.iova_pgsizes': 8,
  'vfio_iommu_type1_info.cap_offset': 16,
  'vfio_info_cap_header.id': 0,
  'vfio_info_cap_header.version': 2,
  'vfio_info_cap_header.next': 4,
  'vfio_iommu_type1_info_cap_iova_range.nr_iovas': 8,
  'vfio_iommu_type1_info_cap_iova_range.iova_ranges': 16,
  'vfio_iommu_type1_info_cap_migration.flags': 8,
  'vfio_iommu_type1_info_cap_migration.pgsize_bitmap': 16,
  'vfio_iommu_type1_info_cap_migration.max_dirty_bitmap_size': 24,
  'vfio_iommu_type1_info_dma_avail.avail': 8,
  'vfio_iommu_type1_dma_map.flags': 4,
  'vfio_iommu_type1_dma_map.vaddr': 8,
  'vfio_iommu_type1_dma_map.iova': 16,
  'vfio_iommu_type1_dma_map.size': 24,
  'vfio_iommu_type1_dma_unmap.flags': 4,
  'vfio_iommu_type1_dma_unmap.iova': 8,
  'vfio_iommu_type1_dma_unmap.size': 16,
  'vfio_iommu_type1_dma_unmap.data': 24,
  'vfio_bitmap.pgsize': 0,
  'vfio_bitmap.size': 8,
  'vfio_bitmap.data': 16,
  'vfio_device_info.flags': 4,
  'vfio_device_info.num_regions': 8,
  'vfio_device_info.num_irqs': 12,
  'vfio_device_info.cap_offset': 16,
  'vfio_region_info.flags': 4,
  'vfio_region_info.index': 8,
  'vfio_region_info.cap_offset': 12,
  'vfio_region_info.size': 16,
  'vfio_region_info.offset': 24,
  'vfio_region_info_cap_sparse_mmap.nr_areas': 8,
  'vfio_region_info_cap_sparse_mmap.areas': 16,
  'vfio_region_info_cap_type.type': 8,
  'vfio_region_info_cap_type.subtype': 12,
  'vfio_irq_info.flags': 4,
  'vfio_irq_info.index': 8,
  'vfio_irq_info.count': 12,
  'vfio_irq_set.flags': 4,
  'vfio_irq_set.index': 8,
  'vfio_irq_set.start': 12,
  'vfio_irq_set.count': 16,
  'vfio_irq_set.data': 20,
  'vfio_device_feature.flags': 4,
  'vfio_device_feature.data': 8,
  'vfio_device_bind_iommufd.flags': 4,
  'vfio_device_bind_iommufd.iommufd': 8,
  'vfio_device_bind_iommufd.out_devid': 12,
  'vfio_device_bind_iommufd.token_uuid_ptr': 16,
  'vfio_device_attach_iommufd_pt.pt_id': 8,
  'vfio_device_attach_iommufd_pt.pasid': 12,
  'vfio_device_detach_iommufd_pt.pasid': 8,
  'iommu_destroy.id': 4,
  'iommu_ioas_alloc.flags': 4,
  'iommu_ioas_alloc.out_ioas_id': 8,
  'iommu_iova_range.last': 8,
  'iommu_ioas_iova_ranges.ioas_id': 4,
  'iommu_ioas_iova_ranges.num_iovas': 8,
  'iommu_ioas_iova_ranges.allowed_iovas': 16,
  'iommu_ioas_iova_ranges.out_iova_alignment': 24,
  'iommu_ioas_allow_iovas.num_iovas': 8,
  'iommu_ioas_allow_iovas.allowed_iovas': 16,
  'iommu_ioas_copy.length': 16,
  'iommu_ioas_copy.dst_iova': 24,
  'iommu_ioas_copy.src_iova': 32,
  'iommu_ioas_map.flags': 4,
  'iommu_ioas_map.ioas_id': 8,
  'iommu_ioas_map.user_va': 16,
  'iommu_ioas_map.length': 24,
  'iommu_ioas_map.iova': 32,
  'iommu_ioas_map_file.flags': 4,
  'iommu_ioas_map_file.ioas_id': 8,
  'iommu_ioas_map_file.fd': 12,
  'iommu_ioas_map_file.start': 16,
  'iommu_ioas_map_file.length': 24,
  'iommu_ioas_map_file.iova': 32,
  'iommu_ioas_unmap.ioas_id': 4,
  'iommu_ioas_unmap.iova': 8,
  'iommu_ioas_unmap.length': 16,
  'iommu_option.option_id': 4,
  'iommu_option.op': 8,
  'iommu_option.object_id': 12,
  'iommu_option.val64': 16,
  'iommu_vfio_ioas.op': 8,
};

const V = suite('native: vfio/iommufd');

V('ioctl numbers match the kernel uAPI', () => {
  const l = layouts();
  for (const [name, nr] of Object.entries(IOCTLS)) assert.is(l.ioctl[name], nr, name);
  assert.is(Object.keys(l.ioctl).length, Object.keys(IOCTLS).length, 'no unchecked ioctl');
});

V('struct sizes and field offsets match the kernel uAPI', () => {
  const l = layouts();
  for (const [name, n] of Object.entries(SIZES)) assert.is(l.size[name], n, `sizeof ${name}`);
  for (const [name, n] of Object.entries(OFFSETS)) assert.is(l.offset[name], n, `offsetof ${name}`);
  assert.is(Object.keys(l.size).length, Object.keys(SIZES).length, 'no unchecked size');
  assert.is(Object.keys(l.offset).length, Object.keys(OFFSETS).length, 'no unchecked offset');
});

V('uAPI constants used by the TS layer agree with the headers', () => {
  const c = layouts().constant;
  assert.is(c.VFIO_TYPE1v2_IOMMU, vfio.TYPE1v2_IOMMU);
  assert.is(c.VFIO_UNMAP_ALL, vfio.EXT_UNMAP_ALL);
  assert.is(c.VFIO_UPDATE_VADDR, vfio.EXT_UPDATE_VADDR);
  assert.is(c.VFIO_GROUP_FLAGS_VIABLE, vfio.GROUP_FLAGS_VIABLE);
  assert.is(c.VFIO_GROUP_FLAGS_CONTAINER_SET, vfio.GROUP_FLAGS_CONTAINER_SET);
  assert.is(c.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, vfio.CAP_IOVA_RANGE);
  assert.is(c.VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, vfio.CAP_MIGRATION);
  assert.is(c.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, vfio.CAP_DMA_AVAIL);
  assert.is(c.VFIO_DMA_MAP_FLAG_READ, vfio.DMA_MAP_FLAG_READ);
  assert.is(c.VFIO_DMA_MAP_FLAG_WRITE, vfio.DMA_MAP_FLAG_WRITE);
  assert.is(c.VFIO_DMA_MAP_FLAG_VADDR, vfio.DMA_MAP_FLAG_VADDR);
  assert.is(c.VFIO_DMA_UNMAP_FLAG_ALL, vfio.DMA_UNMAP_FLAG_ALL);
  assert.is(c.VFIO_DEVICE_FLAGS_RESET, vfio.DEVICE_FLAGS_RESET);
  assert.is(c.VFIO_DEVICE_FLAGS_CAPS, vfio.DEVICE_FLAGS_CAPS);
  assert.is(c.VFIO_REGION_INFO_FLAG_MMAP, vfio.REGION_INFO_FLAG_MMAP);
  assert.is(c.VFIO_REGION_INFO_FLAG_CAPS, vfio.REGION_INFO_FLAG_CAPS);
  assert.is(c.VFIO_REGION_INFO_CAP_SPARSE_MMAP, vfio.REGION_INFO_CAP_SPARSE_MMAP);
  assert.is(c.VFIO_REGION_INFO_CAP_TYPE, vfio.REGION_INFO_CAP_TYPE);
  assert.is(c.VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, vfio.REGION_INFO_CAP_MSIX_MAPPABLE);
  assert.is(c.VFIO_IRQ_SET_DATA_NONE, vfio.IRQ_SET_DATA_NONE);
  assert.is(c.VFIO_IRQ_SET_DATA_BOOL, vfio.IRQ_SET_DATA_BOOL);
  assert.is(c.VFIO_IRQ_SET_DATA_EVENTFD, vfio.IRQ_SET_DATA_EVENTFD);
  assert.is(c.VFIO_IRQ_SET_ACTION_TRIGGER, vfio.IRQ_SET_ACTION_TRIGGER);
  assert.is(c.VFIO_PCI_CONFIG_REGION_INDEX, vfio.PCI_CONFIG_REGION_INDEX);
  assert.is(c.VFIO_PCI_MSIX_IRQ_INDEX, vfio.PCI_MSIX_IRQ_INDEX);
  assert.is(c.IOMMU_IOAS_MAP_FIXED_IOVA, iommufd.IOAS_MAP_FIXED_IOVA);
  assert.is(c.IOMMU_IOAS_MAP_READABLE, iommufd.IOAS_MAP_READABLE);
  assert.is(c.IOMMU_IOAS_MAP_WRITEABLE, iommufd.IOAS_MAP_WRITEABLE);
  assert.is(c.IOMMU_OPTION_HUGE_PAGES, iommufd.OPTION_HUGE_PAGES);
  assert.is(c.IOMMU_OPTION_OP_GET, iommufd.OPTION_OP_GET);
});

V('absent device nodes fail cleanly with ENOENT (syscall open)', () => {
  const cases: [string, () => number][] = [
    ['/dev/vfio/vfio', () => vfio.openContainer()],
    ['/dev/iommu', () => iommufd.open()],
    ['/dev/vfio/424242', () => vfio.openGroup(424242)],
    ['/dev/vfio/devices/vfio4242', () => vfio.openDevice('/dev/vfio/devices/vfio4242')],
  ];
  for (const [path, open] of cases) {
    if (existsSync(path)) continue; // a host with VFIO: covered by test/vfio-smoke.ts instead
    const e = thrown(open);
    assert.is(e.code, 'ENOENT', path);
    assert.is(e.errno, 2);
    assert.is(e.syscall, 'open');
  }
  const e = thrown(() => vfio.iommuGroupOf('0000:ff:1f.7'));
  assert.is(e.code, 'ENOENT');
  assert.is(thrown(() => vfio.cdevPathOf('0000:ff:1f.7')).code, 'ENOENT');
  assert.is(thrown(() => vfio.openDevice('0000:ff:1f.7')).code, 'ENOENT');
});

V('synchronous wrappers on a non-VFIO fd: ENOTTY named after the ioctl', () =>
  noLeak(() => {
    const fd = memfdCreate('not-vfio', 4096);
    const efd = eventfd();
    const cases: [string, () => unknown][] = [
      ['VFIO_GET_API_VERSION', () => vfio.getApiVersion(fd)],
      ['VFIO_CHECK_EXTENSION', () => vfio.checkExtension(fd, vfio.TYPE1v2_IOMMU)],
      ['VFIO_SET_IOMMU', () => vfio.setIommu(fd)],
      ['VFIO_GROUP_GET_STATUS', () => vfio.groupGetStatus(fd)],
      ['VFIO_GROUP_SET_CONTAINER', () => vfio.groupSetContainer(fd, fd)],
      ['VFIO_GROUP_UNSET_CONTAINER', () => vfio.groupUnsetContainer(fd)],
      ['VFIO_GROUP_GET_DEVICE_FD', () => vfio.getDeviceFd(fd, '0000:00:03.0')],
      ['VFIO_IOMMU_GET_INFO', () => vfio.getInfo(fd)],
      ['VFIO_DEVICE_GET_INFO', () => vfio.deviceGetInfo(fd)],
      ['VFIO_DEVICE_GET_REGION_INFO', () => vfio.regionInfo(fd, 0)],
      ['VFIO_DEVICE_GET_IRQ_INFO', () => vfio.irqInfo(fd, vfio.PCI_MSIX_IRQ_INDEX)],
      [
        'VFIO_DEVICE_SET_IRQS',
        () => vfio.setIrqs(fd, { index: vfio.PCI_MSIX_IRQ_INDEX, eventfds: [efd, -1] }),
      ],
      ['VFIO_DEVICE_SET_IRQS', () => vfio.setIrqs(fd, { index: 0, bools: [true] })],
      ['VFIO_DEVICE_SET_IRQS', () => vfio.setIrqs(fd, { index: 0, count: 0 })],
      ['VFIO_DEVICE_RESET', () => vfio.reset(fd)],
      ['VFIO_DEVICE_FEATURE', () => vfio.deviceFeature(fd, vfio.DEVICE_FEATURE_GET | 1, new Uint8Array(8))],
      ['VFIO_DEVICE_BIND_IOMMUFD', () => vfio.bindIommufd(fd, efd)],
      ['VFIO_DEVICE_ATTACH_IOMMUFD_PT', () => vfio.attachPt(fd, 2)],
      ['VFIO_DEVICE_DETACH_IOMMUFD_PT', () => vfio.detachPt(fd)],
      ['IOMMU_IOAS_ALLOC', () => iommufd.ioasAlloc(fd)],
      ['IOMMU_DESTROY', () => iommufd.destroy(fd, 1)],
      ['IOMMU_IOAS_IOVA_RANGES', () => iommufd.iovaRanges(fd, 2)],
      ['IOMMU_IOAS_ALLOW_IOVAS', () => iommufd.allowIovas(fd, 2, [{ start: 0x100000n, end: 0x3fffffffn }])],
      ['IOMMU_OPTION', () => iommufd.optionGet(fd, iommufd.OPTION_RLIMIT_MODE)],
      ['IOMMU_OPTION', () => iommufd.optionSet(fd, iommufd.OPTION_HUGE_PAGES, 1n, 2)],
    ];
    for (const [name, call] of cases) {
      const e = thrown(call);
      assert.is(e.syscall, name);
      assert.is(e.code, 'ENOTTY', name);
      assert.is(e.errno, 25);
      assert.ok(e.message.startsWith(`${name}: `), e.message);
    }
    closeFd(fd);
    closeFd(efd);
  }),
);

V('async maps reject with the ioctl name; the mapping is busy (munmap EBUSY) until they settle', () =>
  noLeak(async () => {
    const fd = memfdCreate('not-vfio', 1 << 20);
    const ab = mmap(fd, 0n, 1 << 20);
    const p1 = rejected(
      vfio.mapDma(fd, { iova: 0x100000n, size: 0x10000n, buffer: ab, bufferOffset: 0x1000n }),
    );
    const p2 = rejected(iommufd.ioasMap(fd, { ioasId: 2, iova: 0x100000n, length: 0x10000n, buffer: ab }));
    const busy = thrown(() => munmap(ab));
    assert.is(busy.code, 'EBUSY');
    const e1 = await p1;
    assert.is(e1.syscall, 'VFIO_IOMMU_MAP_DMA');
    assert.is(e1.code, 'ENOTTY');
    assert.is(e1.errno, 25);
    const e2 = await p2;
    assert.is(e2.syscall, 'IOMMU_IOAS_MAP');
    munmap(ab); // no longer busy
    closeFd(fd);
  }),
);

V('async unmaps and MAP_FILE reject cleanly and release their private fd dups', () =>
  noLeak(async () => {
    const fd = memfdCreate('not-vfio', 1 << 20);
    const cases: [string, Promise<CodedError>][] = [
      ['VFIO_IOMMU_UNMAP_DMA', rejected(vfio.unmapDma(fd, { iova: 0x100000n, size: 0x1000n }))],
      ['VFIO_IOMMU_UNMAP_DMA', rejected(vfio.unmapDma(fd, { all: true }))],
      [
        'IOMMU_IOAS_UNMAP',
        rejected(iommufd.ioasUnmap(fd, { ioasId: 2, iova: 0n, length: (1n << 64n) - 1n })),
      ],
      [
        'IOMMU_IOAS_MAP_FILE',
        rejected(iommufd.ioasMapFile(fd, { ioasId: 2, fd, start: 0n, length: 0x10000n, iova: 0x100000n })),
      ],
      [
        'IOMMU_IOAS_MAP',
        rejected(iommufd.ioasMap(fd, { ioasId: 2, iova: 0n, length: 4096n, userVa: 0x7f0000000000n })),
      ],
      ['VFIO_IOMMU_MAP_DMA', rejected(vfio.mapDma(fd, { iova: 0n, size: 4096n, vaddr: 0x7f0000000000n }))],
    ];
    closeFd(fd); // closing the caller's fd mid-flight is harmless: the calls use their own dups
    for (const [name, p] of cases) {
      const e = await p;
      assert.is(e.syscall, name);
      assert.is(e.code, 'ENOTTY', name);
    }
  }),
);

V('DMA map arguments are checked before any ioctl', () =>
  noLeak(async () => {
    const fd = memfdCreate('x', 8192);
    const ab = mmap(fd, 0n, 8192);
    const outside = await rejected(
      vfio.mapDma(fd, { iova: 0n, size: 8192n, buffer: ab, bufferOffset: 4096n }),
    );
    assert.is(outside.code, 'EINVAL');
    const foreign = await rejected(vfio.mapDma(fd, { iova: 0n, size: 16n, buffer: new ArrayBuffer(16) }));
    assert.is(foreign.code, 'EINVAL');
    const none = await rejected(iommufd.ioasMap(fd, { ioasId: 1, iova: 0n, length: 4096n }));
    assert.ok(none instanceof TypeError);
    assert.throws(() => vfio.setIrqs(fd, { index: 0, eventfds: [-(2 ** 40)] }), RangeError);
    munmap(ab);
    closeFd(fd);
  }),
);

/** The observable shape of an addon errno Error, to compare a sync throw with the async rejection. */
function shape(e: CodedError): Record<string, unknown> {
  return { ctor: e.constructor.name, message: e.message, code: e.code, errno: e.errno, syscall: e.syscall };
}

V('sync maps/unmaps on a non-VFIO fd throw what the async ones reject with (ENOTTY, the ioctl name)', () =>
  noLeak(async () => {
    const fd = memfdCreate('not-vfio', 1 << 20);
    const va = 0x7f0000000000n;
    const full = (1n << 64n) - 1n;
    // [ioctl, sync call, async call], each given the mmap() buffer to use.
    const cases: [string, (b: ArrayBuffer) => unknown, (b: ArrayBuffer) => Promise<unknown>][] = [
      [
        'VFIO_IOMMU_MAP_DMA',
        (b) => vfio.mapDmaSync(fd, { iova: 0x100000n, size: 0x10000n, buffer: b, bufferOffset: 0x1000n }),
        (b) => vfio.mapDma(fd, { iova: 0x100000n, size: 0x10000n, buffer: b, bufferOffset: 0x1000n }),
      ],
      [
        'VFIO_IOMMU_MAP_DMA',
        () => vfio.mapDmaSync(fd, { iova: 0n, size: 4096n, vaddr: va, flags: 1 }),
        () => vfio.mapDma(fd, { iova: 0n, size: 4096n, vaddr: va, flags: 1 }),
      ],
      [
        'VFIO_IOMMU_UNMAP_DMA',
        () => vfio.unmapDmaSync(fd, { iova: 0x100000n, size: 0x1000n }),
        () => vfio.unmapDma(fd, { iova: 0x100000n, size: 0x1000n }),
      ],
      [
        'VFIO_IOMMU_UNMAP_DMA',
        () => vfio.unmapDmaSync(fd, { all: true }),
        () => vfio.unmapDma(fd, { all: true }),
      ],
      [
        'IOMMU_IOAS_MAP',
        (b) => iommufd.ioasMapSync(fd, { ioasId: 2, iova: 0x100000n, length: 0x10000n, buffer: b }),
        (b) => iommufd.ioasMap(fd, { ioasId: 2, iova: 0x100000n, length: 0x10000n, buffer: b }),
      ],
      [
        'IOMMU_IOAS_MAP',
        () => iommufd.ioasMapSync(fd, { ioasId: 2, iova: 0n, length: 4096n, userVa: va }),
        () => iommufd.ioasMap(fd, { ioasId: 2, iova: 0n, length: 4096n, userVa: va }),
      ],
      [
        'IOMMU_IOAS_MAP_FILE',
        () =>
          iommufd.ioasMapFileSync(fd, { ioasId: 2, fd, start: 0x1000n, length: 0x10000n, iova: 0x100000n }),
        () => iommufd.ioasMapFile(fd, { ioasId: 2, fd, start: 0x1000n, length: 0x10000n, iova: 0x100000n }),
      ],
      [
        'IOMMU_IOAS_UNMAP',
        () => iommufd.ioasUnmapSync(fd, { ioasId: 2, iova: 0n, length: full }),
        () => iommufd.ioasUnmap(fd, { ioasId: 2, iova: 0n, length: full }),
      ],
    ];
    // Every sync call first: it must leave its buffer's mapping released (munmap succeeds right after).
    const syncBuf = mmap(fd, 0n, 1 << 20);
    const errors = cases.map(([, sync]) => thrown(() => sync(syncBuf)));
    munmap(syncBuf);
    const asyncBuf = mmap(fd, 0n, 1 << 20);
    for (const [i, [name, , async]] of cases.entries()) {
      const e = errors[i]!;
      assert.ok(e instanceof Error, name);
      assert.is(e.syscall, name);
      assert.is(e.code, 'ENOTTY', name);
      assert.is(e.errno, 25);
      assert.ok(e.message.startsWith(`${name}: `), e.message);
      assert.equal(shape(e), shape(await rejected(async(asyncBuf))), `${name}: sync throw = async rejection`);
    }
    munmap(asyncBuf);
    closeFd(fd);
  }),
);

V("sync maps/unmaps on a closed fd: EBADF named after the ioctl (the caller's fd is used, not a dup)", () =>
  noLeak(() => {
    const fd = memfdCreate('closed', 4096);
    const ab = mmap(fd, 0n, 4096);
    closeFd(fd);
    const cases: [string, () => unknown][] = [
      ['VFIO_IOMMU_MAP_DMA', () => vfio.mapDmaSync(fd, { iova: 0n, size: 4096n, buffer: ab })],
      ['VFIO_IOMMU_UNMAP_DMA', () => vfio.unmapDmaSync(fd, { iova: 0n, size: 4096n })],
      ['IOMMU_IOAS_MAP', () => iommufd.ioasMapSync(fd, { ioasId: 1, iova: 0n, length: 4096n, buffer: ab })],
      [
        'IOMMU_IOAS_MAP_FILE',
        () => iommufd.ioasMapFileSync(fd, { ioasId: 1, fd, start: 0n, length: 4096n, iova: 0n }),
      ],
      ['IOMMU_IOAS_UNMAP', () => iommufd.ioasUnmapSync(fd, { ioasId: 1, iova: 0n, length: 4096n })],
    ];
    for (const [name, call] of cases) {
      const e = thrown(call);
      assert.is(e.syscall, name);
      assert.is(e.code, 'EBADF', name);
      assert.is(e.errno, 9);
    }
    munmap(ab); // not left busy
  }),
);

V('sync map arguments are checked before any ioctl, like the async ones', () =>
  noLeak(async () => {
    const fd = memfdCreate('x', 8192);
    const ab = mmap(fd, 0n, 8192);
    // Outside the mapping / not a mapping of ours: EINVAL from the address lookup, the mapping not left busy.
    const outside = thrown(() =>
      vfio.mapDmaSync(fd, { iova: 0n, size: 8192n, buffer: ab, bufferOffset: 4096n }),
    );
    assert.is(outside.code, 'EINVAL');
    assert.is(outside.syscall, 'mapAddress');
    const outsideAsync = await rejected(
      vfio.mapDma(fd, { iova: 0n, size: 8192n, buffer: ab, bufferOffset: 4096n }),
    );
    assert.equal(shape(outside), shape(outsideAsync));
    const foreign = thrown(() =>
      iommufd.ioasMapSync(fd, { ioasId: 1, iova: 0n, length: 16n, buffer: new ArrayBuffer(16) }),
    );
    assert.is(foreign.code, 'EINVAL');
    // Neither a buffer nor an address.
    assert.throws(() => vfio.mapDmaSync(fd, { iova: 0n, size: 4096n }), TypeError);
    assert.throws(() => iommufd.ioasMapSync(fd, { ioasId: 1, iova: 0n, length: 4096n }), TypeError);
    // Out-of-range numbers and fds: RangeError, as for every wrapper.
    assert.throws(() => vfio.mapDmaSync(fd, { iova: -1n, size: 4096n, vaddr: 0n }), RangeError);
    assert.throws(() => vfio.unmapDmaSync(fd, { iova: 1n << 64n, size: 4096n }), RangeError);
    assert.throws(() => vfio.unmapDmaSync(-1, { iova: 0n, size: 4096n }), RangeError);
    assert.throws(() => iommufd.ioasUnmapSync(fd, { ioasId: -1, iova: 0n, length: 4096n }), RangeError);
    assert.throws(
      () => iommufd.ioasMapFileSync(fd, { ioasId: 1, fd: -1, start: 0n, length: 4096n, iova: 0n }),
      RangeError,
    );
    assert.throws(
      () => iommufd.ioasMapSync(fd, { ioasId: 1, iova: 0n, length: 4096n, buffer: ab, bufferOffset: -1n }),
      RangeError,
    );
    // The dirty-bitmap unmap is refused by the wrapper itself (its bitmap would be written through a raw pointer).
    const dirty = thrown(() => vfio.unmapDmaSync(fd, { iova: 0n, size: 4096n, flags: 1 }));
    assert.is(dirty.code, 'EINVAL');
    assert.is(dirty.syscall, 'VFIO_IOMMU_UNMAP_DMA');
    munmap(ab); // none of the refused calls left it busy
    closeFd(fd);
  }),
);

V.run();
