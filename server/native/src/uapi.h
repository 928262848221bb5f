/*
 * Kernel uAPI for VFIO and iommufd.
 *
 * The type1/device structs come from <linux/vfio.h>. The iommufd structs and the VFIO cdev ioctls (6.6+) are
 * defined locally with a vu_ prefix because the build host's linux-libc-dev may predate them (Debian 12 ships 6.1
 * headers: no <linux/iommufd.h>); when the installed headers have them, the local copies are checked against them.
 * Offsets and sizes follow the kernel's uAPI headers and are static-asserted below and reported by layouts().
 */
#ifndef VU_UAPI_H
#define VU_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>
#include <linux/vfio.h>
#include <stddef.h>

#define VU_VFIO_TYPE (';')
#define VU_VFIO_BASE 100
#define VU_IOMMUFD_TYPE (';')

/* vfio_device_info is 24 bytes in current headers (a trailing pad); 6.1 headers stop at cap_offset (20). */
struct vu_vfio_device_info {
  __u32 argsz;
  __u32 flags;
  __u32 num_regions;
  __u32 num_irqs;
  __u32 cap_offset;
  __u32 pad;
};

/* ---- VFIO cdev (Linux 6.6+) ---- */

struct vu_vfio_device_bind_iommufd {
  __u32 argsz;
  __u32 flags;
  __s32 iommufd;
  __u32 out_devid;
  __aligned_u64 token_uuid_ptr; /* newer kernels, with flags TOKEN; older ones only read the first 16 bytes */
};
struct vu_vfio_device_attach_iommufd_pt {
  __u32 argsz;
  __u32 flags;
  __u32 pt_id;
  __u32 pasid;
};
struct vu_vfio_device_detach_iommufd_pt {
  __u32 argsz;
  __u32 flags;
  __u32 pasid;
};
#define VU_VFIO_DEVICE_BIND_IOMMUFD _IO(VU_VFIO_TYPE, VU_VFIO_BASE + 18)
#define VU_VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(VU_VFIO_TYPE, VU_VFIO_BASE + 19)
#define VU_VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(VU_VFIO_TYPE, VU_VFIO_BASE + 20)

/* ---- iommufd (Linux 6.2+; IOAS_MAP_FILE 6.13+) ---- */

enum {
  VU_IOMMUFD_CMD_BASE = 0x80,
  VU_IOMMUFD_CMD_DESTROY = VU_IOMMUFD_CMD_BASE,
  VU_IOMMUFD_CMD_IOAS_ALLOC = 0x81,
  VU_IOMMUFD_CMD_IOAS_ALLOW_IOVAS = 0x82,
  VU_IOMMUFD_CMD_IOAS_COPY = 0x83,
  VU_IOMMUFD_CMD_IOAS_IOVA_RANGES = 0x84,
  VU_IOMMUFD_CMD_IOAS_MAP = 0x85,
  VU_IOMMUFD_CMD_IOAS_UNMAP = 0x86,
  VU_IOMMUFD_CMD_OPTION = 0x87,
  VU_IOMMUFD_CMD_VFIO_IOAS = 0x88,
  VU_IOMMUFD_CMD_HWPT_ALLOC = 0x89,
  VU_IOMMUFD_CMD_GET_HW_INFO = 0x8a,
  VU_IOMMUFD_CMD_IOAS_MAP_FILE = 0x8f,
  VU_IOMMUFD_CMD_IOAS_CHANGE_PROCESS = 0x92,
};

struct vu_iommu_destroy {
  __u32 size;
  __u32 id;
};
struct vu_iommu_ioas_alloc {
  __u32 size;
  __u32 flags;
  __u32 out_ioas_id;
};
struct vu_iommu_iova_range {
  __aligned_u64 start;
  __aligned_u64 last; /* inclusive */
};
struct vu_iommu_ioas_iova_ranges {
  __u32 size;
  __u32 ioas_id;
  __u32 num_iovas;
  __u32 reserved;
  __aligned_u64 allowed_iovas;
  __aligned_u64 out_iova_alignment;
};
struct vu_iommu_ioas_allow_iovas {
  __u32 size;
  __u32 ioas_id;
  __u32 num_iovas;
  __u32 reserved;
  __aligned_u64 allowed_iovas;
};
struct vu_iommu_ioas_copy {
  __u32 size;
  __u32 flags;
  __u32 dst_ioas_id;
  __u32 src_ioas_id;
  __aligned_u64 length;
  __aligned_u64 dst_iova;
  __aligned_u64 src_iova;
};
struct vu_iommu_ioas_map {
  __u32 size;
  __u32 flags;
  __u32 ioas_id;
  __u32 reserved;
  __aligned_u64 user_va;
  __aligned_u64 length;
  __aligned_u64 iova;
};
struct vu_iommu_ioas_map_file {
  __u32 size;
  __u32 flags;
  __u32 ioas_id;
  __s32 fd;
  __aligned_u64 start;
  __aligned_u64 length;
  __aligned_u64 iova;
};
struct vu_iommu_ioas_unmap {
  __u32 size;
  __u32 ioas_id;
  __aligned_u64 iova;
  __aligned_u64 length;
};
struct vu_iommu_option {
  __u32 size;
  __u32 option_id;
  __u16 op;
  __u16 reserved;
  __u32 object_id;
  __aligned_u64 val64;
};
struct vu_iommu_vfio_ioas {
  __u32 size;
  __u32 ioas_id;
  __u16 op;
  __u16 reserved;
};
struct vu_iommu_ioas_change_process {
  __u32 size;
  __u32 reserved;
};

#define VU_IOMMU_DESTROY _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_DESTROY)
#define VU_IOMMU_IOAS_ALLOC _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_ALLOC)
#define VU_IOMMU_IOAS_ALLOW_IOVAS _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_ALLOW_IOVAS)
#define VU_IOMMU_IOAS_COPY _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_COPY)
#define VU_IOMMU_IOAS_IOVA_RANGES _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_IOVA_RANGES)
#define VU_IOMMU_IOAS_MAP _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_MAP)
#define VU_IOMMU_IOAS_UNMAP _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_UNMAP)
#define VU_IOMMU_OPTION _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_OPTION)
#define VU_IOMMU_VFIO_IOAS _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_VFIO_IOAS)
#define VU_IOMMU_HWPT_ALLOC _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_HWPT_ALLOC)
#define VU_IOMMU_GET_HW_INFO _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_GET_HW_INFO)
#define VU_IOMMU_IOAS_MAP_FILE _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_MAP_FILE)
#define VU_IOMMU_IOAS_CHANGE_PROCESS _IO(VU_IOMMUFD_TYPE, VU_IOMMUFD_CMD_IOAS_CHANGE_PROCESS)

#define VU_IOMMU_IOAS_MAP_FIXED_IOVA 0x1
#define VU_IOMMU_IOAS_MAP_WRITEABLE 0x2
#define VU_IOMMU_IOAS_MAP_READABLE 0x4
#define VU_IOMMU_OPTION_RLIMIT_MODE 0
#define VU_IOMMU_OPTION_HUGE_PAGES 1
#define VU_IOMMU_OPTION_OP_SET 0
#define VU_IOMMU_OPTION_OP_GET 1

/* ---- sizes and offsets of the kernel uAPI (x86_64) ---- */

#define VU_ASSERT_SIZE(t, n) _Static_assert(sizeof(struct t) == (n), "sizeof(struct " #t ")")
#define VU_ASSERT_OFF(t, f, n) _Static_assert(offsetof(struct t, f) == (n), "offsetof(struct " #t ", " #f ")")

VU_ASSERT_SIZE(vfio_group_status, 8);
VU_ASSERT_SIZE(vfio_iommu_type1_info, 24);
VU_ASSERT_OFF(vfio_iommu_type1_info, iova_pgsizes, 8);
VU_ASSERT_OFF(vfio_iommu_type1_info, cap_offset, 16);
VU_ASSERT_SIZE(vfio_info_cap_header, 8);
VU_ASSERT_SIZE(vfio_iommu_type1_info_cap_iova_range, 16);
VU_ASSERT_SIZE(vfio_iova_range, 16);
VU_ASSERT_SIZE(vfio_iommu_type1_info_cap_migration, 32);
VU_ASSERT_OFF(vfio_iommu_type1_info_cap_migration, pgsize_bitmap, 16);
VU_ASSERT_OFF(vfio_iommu_type1_info_cap_migration, max_dirty_bitmap_size, 24);
VU_ASSERT_SIZE(vfio_iommu_type1_info_dma_avail, 12);
VU_ASSERT_SIZE(vfio_iommu_type1_dma_map, 32);
VU_ASSERT_OFF(vfio_iommu_type1_dma_map, vaddr, 8);
VU_ASSERT_OFF(vfio_iommu_type1_dma_map, iova, 16);
VU_ASSERT_OFF(vfio_iommu_type1_dma_map, size, 24);
VU_ASSERT_SIZE(vfio_iommu_type1_dma_unmap, 24);
VU_ASSERT_OFF(vfio_iommu_type1_dma_unmap, iova, 8);
VU_ASSERT_OFF(vfio_iommu_type1_dma_unmap, size, 16);
VU_ASSERT_SIZE(vfio_bitmap, 24);
VU_ASSERT_SIZE(vu_vfio_device_info, 24);
VU_ASSERT_OFF(vu_vfio_device_info, cap_offset, 16);
_Static_assert(offsetof(struct vfio_device_info, cap_offset) == 16, "vfio_device_info.cap_offset");
VU_ASSERT_SIZE(vfio_region_info, 32);
VU_ASSERT_OFF(vfio_region_info, size, 16);
VU_ASSERT_OFF(vfio_region_info, offset, 24);
VU_ASSERT_SIZE(vfio_region_info_cap_sparse_mmap, 16);
VU_ASSERT_SIZE(vfio_region_sparse_mmap_area, 16);
VU_ASSERT_SIZE(vfio_region_info_cap_type, 16);
VU_ASSERT_SIZE(vfio_irq_info, 16);
VU_ASSERT_SIZE(vfio_irq_set, 20);
VU_ASSERT_SIZE(vfio_device_feature, 8);
VU_ASSERT_SIZE(vu_vfio_device_bind_iommufd, 24);
VU_ASSERT_OFF(vu_vfio_device_bind_iommufd, iommufd, 8);
VU_ASSERT_OFF(vu_vfio_device_bind_iommufd, out_devid, 12);
VU_ASSERT_OFF(vu_vfio_device_bind_iommufd, token_uuid_ptr, 16);
VU_ASSERT_SIZE(vu_vfio_device_attach_iommufd_pt, 16);
VU_ASSERT_OFF(vu_vfio_device_attach_iommufd_pt, pt_id, 8);
VU_ASSERT_SIZE(vu_vfio_device_detach_iommufd_pt, 12);
VU_ASSERT_SIZE(vu_iommu_destroy, 8);
VU_ASSERT_SIZE(vu_iommu_ioas_alloc, 12);
VU_ASSERT_SIZE(vu_iommu_iova_range, 16);
VU_ASSERT_SIZE(vu_iommu_ioas_iova_ranges, 32);
VU_ASSERT_OFF(vu_iommu_ioas_iova_ranges, num_iovas, 8);
VU_ASSERT_OFF(vu_iommu_ioas_iova_ranges, allowed_iovas, 16);
VU_ASSERT_OFF(vu_iommu_ioas_iova_ranges, out_iova_alignment, 24);
VU_ASSERT_SIZE(vu_iommu_ioas_allow_iovas, 24);
VU_ASSERT_SIZE(vu_iommu_ioas_copy, 40);
VU_ASSERT_SIZE(vu_iommu_ioas_map, 40);
VU_ASSERT_OFF(vu_iommu_ioas_map, flags, 4);
VU_ASSERT_OFF(vu_iommu_ioas_map, ioas_id, 8);
VU_ASSERT_OFF(vu_iommu_ioas_map, user_va, 16);
VU_ASSERT_OFF(vu_iommu_ioas_map, length, 24);
VU_ASSERT_OFF(vu_iommu_ioas_map, iova, 32);
VU_ASSERT_SIZE(vu_iommu_ioas_map_file, 40);
VU_ASSERT_OFF(vu_iommu_ioas_map_file, fd, 12);
VU_ASSERT_OFF(vu_iommu_ioas_map_file, start, 16);
VU_ASSERT_OFF(vu_iommu_ioas_map_file, length, 24);
VU_ASSERT_OFF(vu_iommu_ioas_map_file, iova, 32);
VU_ASSERT_SIZE(vu_iommu_ioas_unmap, 24);
VU_ASSERT_OFF(vu_iommu_ioas_unmap, iova, 8);
VU_ASSERT_OFF(vu_iommu_ioas_unmap, length, 16);
VU_ASSERT_SIZE(vu_iommu_option, 24);
VU_ASSERT_OFF(vu_iommu_option, op, 8);
VU_ASSERT_OFF(vu_iommu_option, object_id, 12);
VU_ASSERT_OFF(vu_iommu_option, val64, 16);
VU_ASSERT_SIZE(vu_iommu_vfio_ioas, 12);
VU_ASSERT_SIZE(vu_iommu_ioas_change_process, 8);

_Static_assert(VFIO_GET_API_VERSION == 0x3b64, "VFIO_GET_API_VERSION");
_Static_assert(VFIO_IOMMU_MAP_DMA == 0x3b71, "VFIO_IOMMU_MAP_DMA");
_Static_assert(VFIO_IOMMU_UNMAP_DMA == 0x3b72, "VFIO_IOMMU_UNMAP_DMA");
_Static_assert(VU_VFIO_DEVICE_BIND_IOMMUFD == 0x3b76, "VFIO_DEVICE_BIND_IOMMUFD");
_Static_assert(VU_IOMMU_IOAS_MAP == 0x3b85, "IOMMU_IOAS_MAP");
_Static_assert(VU_IOMMU_IOAS_MAP_FILE == 0x3b8f, "IOMMU_IOAS_MAP_FILE");

/* When the installed headers are new enough, the local copies must agree with them. */
#if defined(__has_include)
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#define VU_HAVE_SYS_IOMMUFD 1
_Static_assert(sizeof(struct iommu_ioas_map) == sizeof(struct vu_iommu_ioas_map), "iommu_ioas_map");
_Static_assert(sizeof(struct iommu_ioas_unmap) == sizeof(struct vu_iommu_ioas_unmap), "iommu_ioas_unmap");
_Static_assert(sizeof(struct iommu_ioas_iova_ranges) == sizeof(struct vu_iommu_ioas_iova_ranges), "iova_ranges");
_Static_assert(IOMMU_IOAS_MAP == VU_IOMMU_IOAS_MAP, "IOMMU_IOAS_MAP");
_Static_assert(IOMMU_IOAS_UNMAP == VU_IOMMU_IOAS_UNMAP, "IOMMU_IOAS_UNMAP");
#ifdef IOMMU_IOAS_MAP_FILE
_Static_assert(sizeof(struct iommu_ioas_map_file) == sizeof(struct vu_iommu_ioas_map_file), "iommu_ioas_map_file");
_Static_assert(IOMMU_IOAS_MAP_FILE == VU_IOMMU_IOAS_MAP_FILE, "IOMMU_IOAS_MAP_FILE");
#endif
#endif
#endif
#ifdef VFIO_DEVICE_BIND_IOMMUFD
#define VU_HAVE_SYS_VFIO_CDEV 1
_Static_assert(VFIO_DEVICE_BIND_IOMMUFD == VU_VFIO_DEVICE_BIND_IOMMUFD, "VFIO_DEVICE_BIND_IOMMUFD");
_Static_assert(VFIO_DEVICE_ATTACH_IOMMUFD_PT == VU_VFIO_DEVICE_ATTACH_IOMMUFD_PT, "VFIO_DEVICE_ATTACH_IOMMUFD_PT");
#endif

#endif
