/*
 * layouts(): ioctl numbers, struct sizes and field offsets as the compiler sees them, so a test can compare them
 * with the kernel's published uAPI layouts without /dev/vfio or /dev/iommu.
 */
#include "common.h"
#include "uapi.h"

#include <linux/version.h>

typedef struct {
  const char *name;
  uint32_t value;
} kv;

#define IOC(n) {#n, (uint32_t)(n)}
#define VIOC(n) {#n, (uint32_t)(VU_##n)}
#define SZ(t) {#t, (uint32_t)sizeof(struct t)}
#define VSZ(t) {#t, (uint32_t)sizeof(struct vu_##t)}
#define OFF(t, f) {#t "." #f, (uint32_t)offsetof(struct t, f)}
#define VOFF(t, f) {#t "." #f, (uint32_t)offsetof(struct vu_##t, f)}

static const kv ioctls[] = {
    IOC(VFIO_GET_API_VERSION),
    IOC(VFIO_CHECK_EXTENSION),
    IOC(VFIO_SET_IOMMU),
    IOC(VFIO_GROUP_GET_STATUS),
    IOC(VFIO_GROUP_SET_CONTAINER),
    IOC(VFIO_GROUP_UNSET_CONTAINER),
    IOC(VFIO_GROUP_GET_DEVICE_FD),
    IOC(VFIO_DEVICE_GET_INFO),
    IOC(VFIO_DEVICE_GET_REGION_INFO),
    IOC(VFIO_DEVICE_GET_IRQ_INFO),
    IOC(VFIO_DEVICE_SET_IRQS),
    IOC(VFIO_DEVICE_RESET),
    IOC(VFIO_IOMMU_GET_INFO),
    IOC(VFIO_IOMMU_MAP_DMA),
    IOC(VFIO_IOMMU_UNMAP_DMA),
    IOC(VFIO_IOMMU_DIRTY_PAGES),
    IOC(VFIO_DEVICE_FEATURE),
    VIOC(VFIO_DEVICE_BIND_IOMMUFD),
    VIOC(VFIO_DEVICE_ATTACH_IOMMUFD_PT),
    VIOC(VFIO_DEVICE_DETACH_IOMMUFD_PT),
    VIOC(IOMMU_DESTROY),
    VIOC(IOMMU_IOAS_ALLOC),
    VIOC(IOMMU_IOAS_ALLOW_IOVAS),
    VIOC(IOMMU_IOAS_COPY),
    VIOC(IOMMU_IOAS_IOVA_RANGES),
    VIOC(IOMMU_IOAS_MAP),
    VIOC(IOMMU_IOAS_UNMAP),
    VIOC(IOMMU_OPTION),
    VIOC(IOMMU_VFIO_IOAS),
    VIOC(IOMMU_HWPT_ALLOC),
    VIOC(IOMMU_GET_HW_INFO),
    VIOC(IOMMU_IOAS_MAP_FILE),
    VIOC(IOMMU_IOAS_CHANGE_PROCESS),
};

static const kv sizes[] = {
    SZ(vfio_group_status),
    SZ(vfio_iommu_type1_info),
    SZ(vfio_info_cap_header),
    SZ(vfio_iommu_type1_info_cap_iova_range),
    SZ(vfio_iova_range),
    SZ(vfio_iommu_type1_info_cap_migration),
    SZ(vfio_iommu_type1_info_dma_avail),
    SZ(vfio_iommu_type1_dma_map),
    SZ(vfio_iommu_type1_dma_unmap),
    SZ(vfio_bitmap),
    SZ(vfio_iommu_type1_dirty_bitmap),
    SZ(vfio_iommu_type1_dirty_bitmap_get),
    VSZ(vfio_device_info),
    SZ(vfio_region_info),
    SZ(vfio_region_info_cap_sparse_mmap),
    SZ(vfio_region_sparse_mmap_area),
    SZ(vfio_region_info_cap_type),
    SZ(vfio_irq_info),
    SZ(vfio_irq_set),
    SZ(vfio_device_feature),
    VSZ(vfio_device_bind_iommufd),
    VSZ(vfio_device_attach_iommufd_pt),
    VSZ(vfio_device_detach_iommufd_pt),
    VSZ(iommu_destroy),
    VSZ(iommu_ioas_alloc),
    VSZ(iommu_iova_range),
    VSZ(iommu_ioas_iova_ranges),
    VSZ(iommu_ioas_allow_iovas),
    VSZ(iommu_ioas_copy),
    VSZ(iommu_ioas_map),
    VSZ(iommu_ioas_map_file),
    VSZ(iommu_ioas_unmap),
    VSZ(iommu_option),
    VSZ(iommu_vfio_ioas),
    VSZ(iommu_ioas_change_process),
};

static const kv offsets[] = {
    OFF(vfio_group_status, flags),
    OFF(vfio_iommu_type1_info, flags),
    OFF(vfio_iommu_type1_info, iova_pgsizes),
    OFF(vfio_iommu_type1_info, cap_offset),
    OFF(vfio_info_cap_header, id),
    OFF(vfio_info_cap_header, version),
    OFF(vfio_info_cap_header, next),
    OFF(vfio_iommu_type1_info_cap_iova_range, nr_iovas),
    OFF(vfio_iommu_type1_info_cap_iova_range, iova_ranges),
    OFF(vfio_iommu_type1_info_cap_migration, flags),
    OFF(vfio_iommu_type1_info_cap_migration, pgsize_bitmap),
    OFF(vfio_iommu_type1_info_cap_migration, max_dirty_bitmap_size),
    OFF(vfio_iommu_type1_info_dma_avail, avail),
    OFF(vfio_iommu_type1_dma_map, flags),
    OFF(vfio_iommu_type1_dma_map, vaddr),
    OFF(vfio_iommu_type1_dma_map, iova),
    OFF(vfio_iommu_type1_dma_map, size),
    OFF(vfio_iommu_type1_dma_unmap, flags),
    OFF(vfio_iommu_type1_dma_unmap, iova),
    OFF(vfio_iommu_type1_dma_unmap, size),
    OFF(vfio_iommu_type1_dma_unmap, data),
    OFF(vfio_bitmap, pgsize),
    OFF(vfio_bitmap, size),
    OFF(vfio_bitmap, data),
    VOFF(vfio_device_info, flags),
    VOFF(vfio_device_info, num_regions),
    VOFF(vfio_device_info, num_irqs),
    VOFF(vfio_device_info, cap_offset),
    OFF(vfio_region_info, flags),
    OFF(vfio_region_info, index),
    OFF(vfio_region_info, cap_offset),
    OFF(vfio_region_info, size),
    OFF(vfio_region_info, offset),
    OFF(vfio_region_info_cap_sparse_mmap, nr_areas),
    OFF(vfio_region_info_cap_sparse_mmap, areas),
    OFF(vfio_region_info_cap_type, type),
    OFF(vfio_region_info_cap_type, subtype),
    OFF(vfio_irq_info, flags),
    OFF(vfio_irq_info, index),
    OFF(vfio_irq_info, count),
    OFF(vfio_irq_set, flags),
    OFF(vfio_irq_set, index),
    OFF(vfio_irq_set, start),
    OFF(vfio_irq_set, count),
    OFF(vfio_irq_set, data),
    OFF(vfio_device_feature, flags),
    OFF(vfio_device_feature, data),
    VOFF(vfio_device_bind_iommufd, flags),
    VOFF(vfio_device_bind_iommufd, iommufd),
    VOFF(vfio_device_bind_iommufd, out_devid),
    VOFF(vfio_device_bind_iommufd, token_uuid_ptr),
    VOFF(vfio_device_attach_iommufd_pt, pt_id),
    VOFF(vfio_device_attach_iommufd_pt, pasid),
    VOFF(vfio_device_detach_iommufd_pt, pasid),
    VOFF(iommu_destroy, id),
    VOFF(iommu_ioas_alloc, flags),
    VOFF(iommu_ioas_alloc, out_ioas_id),
    VOFF(iommu_iova_range, last),
    VOFF(iommu_ioas_iova_ranges, ioas_id),
    VOFF(iommu_ioas_iova_ranges, num_iovas),
    VOFF(iommu_ioas_iova_ranges, allowed_iovas),
    VOFF(iommu_ioas_iova_ranges, out_iova_alignment),
    VOFF(iommu_ioas_allow_iovas, num_iovas),
    VOFF(iommu_ioas_allow_iovas, allowed_iovas),
    VOFF(iommu_ioas_copy, length),
    VOFF(iommu_ioas_copy, dst_iova),
    VOFF(iommu_ioas_copy, src_iova),
    VOFF(iommu_ioas_map, flags),
    VOFF(iommu_ioas_map, ioas_id),
    VOFF(iommu_ioas_map, user_va),
    VOFF(iommu_ioas_map, length),
    VOFF(iommu_ioas_map, iova),
    VOFF(iommu_ioas_map_file, flags),
    VOFF(iommu_ioas_map_file, ioas_id),
    VOFF(iommu_ioas_map_file, fd),
    VOFF(iommu_ioas_map_file, start),
    VOFF(iommu_ioas_map_file, length),
    VOFF(iommu_ioas_map_file, iova),
    VOFF(iommu_ioas_unmap, ioas_id),
    VOFF(iommu_ioas_unmap, iova),
    VOFF(iommu_ioas_unmap, length),
    VOFF(iommu_option, option_id),
    VOFF(iommu_option, op),
    VOFF(iommu_option, object_id),
    VOFF(iommu_option, val64),
    VOFF(iommu_vfio_ioas, op),
};

static const kv constants[] = {
    IOC(VFIO_API_VERSION),
    IOC(VFIO_TYPE1_IOMMU),
    IOC(VFIO_TYPE1v2_IOMMU),
    IOC(VFIO_UNMAP_ALL),
    IOC(VFIO_UPDATE_VADDR),
    IOC(VFIO_GROUP_FLAGS_VIABLE),
    IOC(VFIO_GROUP_FLAGS_CONTAINER_SET),
    IOC(VFIO_IOMMU_INFO_PGSIZES),
    IOC(VFIO_IOMMU_INFO_CAPS),
    IOC(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE),
    IOC(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION),
    IOC(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL),
    IOC(VFIO_DMA_MAP_FLAG_READ),
    IOC(VFIO_DMA_MAP_FLAG_WRITE),
    IOC(VFIO_DMA_MAP_FLAG_VADDR),
    IOC(VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP),
    IOC(VFIO_DMA_UNMAP_FLAG_ALL),
    IOC(VFIO_DMA_UNMAP_FLAG_VADDR),
    IOC(VFIO_DEVICE_FLAGS_RESET),
    IOC(VFIO_DEVICE_FLAGS_PCI),
    IOC(VFIO_DEVICE_FLAGS_CAPS),
    IOC(VFIO_REGION_INFO_FLAG_READ),
    IOC(VFIO_REGION_INFO_FLAG_WRITE),
    IOC(VFIO_REGION_INFO_FLAG_MMAP),
    IOC(VFIO_REGION_INFO_FLAG_CAPS),
    IOC(VFIO_REGION_INFO_CAP_SPARSE_MMAP),
    IOC(VFIO_REGION_INFO_CAP_TYPE),
    IOC(VFIO_REGION_INFO_CAP_MSIX_MAPPABLE),
    IOC(VFIO_IRQ_INFO_EVENTFD),
    IOC(VFIO_IRQ_INFO_MASKABLE),
    IOC(VFIO_IRQ_INFO_AUTOMASKED),
    IOC(VFIO_IRQ_INFO_NORESIZE),
    IOC(VFIO_IRQ_SET_DATA_NONE),
    IOC(VFIO_IRQ_SET_DATA_BOOL),
    IOC(VFIO_IRQ_SET_DATA_EVENTFD),
    IOC(VFIO_IRQ_SET_ACTION_MASK),
    IOC(VFIO_IRQ_SET_ACTION_UNMASK),
    IOC(VFIO_IRQ_SET_ACTION_TRIGGER),
    IOC(VFIO_PCI_CONFIG_REGION_INDEX),
    IOC(VFIO_PCI_NUM_REGIONS),
    IOC(VFIO_PCI_MSIX_IRQ_INDEX),
    VIOC(IOMMU_IOAS_MAP_FIXED_IOVA),
    VIOC(IOMMU_IOAS_MAP_WRITEABLE),
    VIOC(IOMMU_IOAS_MAP_READABLE),
    VIOC(IOMMU_OPTION_RLIMIT_MODE),
    VIOC(IOMMU_OPTION_HUGE_PAGES),
    VIOC(IOMMU_OPTION_OP_SET),
    VIOC(IOMMU_OPTION_OP_GET),
};

static bool fill(napi_env env, napi_value obj, const kv *t, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!vu_set_u32(env, obj, t[i].name, t[i].value)) return false;
  return true;
}

/* layouts() -> { ioctl, size, offset, constant: Record<string, number>, headers: {...} } */
static napi_value js_layouts(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out, io, sz, off, cst, hdr;
  NAPI_CALL(env, napi_create_object(env, &out));
  NAPI_CALL(env, napi_create_object(env, &io));
  NAPI_CALL(env, napi_create_object(env, &sz));
  NAPI_CALL(env, napi_create_object(env, &off));
  NAPI_CALL(env, napi_create_object(env, &cst));
  NAPI_CALL(env, napi_create_object(env, &hdr));
#ifdef VU_HAVE_SYS_IOMMUFD
  bool sys_iommufd = true;
#else
  bool sys_iommufd = false;
#endif
#ifdef VU_HAVE_SYS_VFIO_CDEV
  bool sys_cdev = true;
#else
  bool sys_cdev = false;
#endif
  if (!fill(env, io, ioctls, VU_ARRAY_LEN(ioctls)) || !fill(env, sz, sizes, VU_ARRAY_LEN(sizes)) ||
      !fill(env, off, offsets, VU_ARRAY_LEN(offsets)) || !fill(env, cst, constants, VU_ARRAY_LEN(constants)) ||
      !vu_set_u32(env, hdr, "linuxVersionCode", LINUX_VERSION_CODE) ||
      !vu_set_bool(env, hdr, "iommufdHeader", sys_iommufd) || !vu_set_bool(env, hdr, "vfioCdevHeader", sys_cdev) ||
      !vu_set_val(env, out, "ioctl", io) || !vu_set_val(env, out, "size", sz) || !vu_set_val(env, out, "offset", off) ||
      !vu_set_val(env, out, "constant", cst) || !vu_set_val(env, out, "headers", hdr))
    return NULL;
  return out;
}

bool vu_init_layouts(napi_env env, napi_value exports) { return vu_export_fn(env, exports, "layouts", js_layouts); }
