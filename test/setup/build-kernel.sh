#!/usr/bin/env bash
# Builds the guest kernel with IOMMUFD + VFIO cdev + 9p (all built in, no modules) from Debian's newest
# `linux-source-7.x` (trixie-backports, downloaded with the private root's apt: install-qemu.sh, docs/setup.md;
# the recipe is explained in docs/testing.md), and caches the bzImage in
#   $VFIO_USER_CACHE/kernel-<key>/{bzImage,config,source-version}       (VFIO_USER_CACHE: /var/cache/vfio-user-node)
# where <key> hashes the source package name + version and THIS file (the config recipe lives here, so editing it
# rebuilds; keep unrelated logic in prepare-guest.sh). Prints the cache directory as its last stdout line.
#
# Usage: build-kernel.sh [--print-dir]   (--print-dir: only print the directory the build would use, build nothing)
# About 7-10 minutes on 2 vCPUs (niced, make -j2); seconds when cached.
set -euo pipefail

started=$(date +%s)
log() { printf '[build-kernel %4ss] %s\n' "$(($(date +%s) - started))" "$*" >&2; }
die() {
  printf '[build-kernel] FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"
JOBS=${KERNEL_JOBS:-2}

# Options enabled (all =y) and disabled: IOMMUFD with its selftest hooks, the VFIO cdev and legacy container, the
# Intel IOMMU with interrupt remapping (the guests run q35 + intel-iommu), and 9p/virtio for the host-root share
# (x86_64_defconfig already has 9p/virtio; spelled out so that the guarantee does not depend on defconfig).
ENABLE=(
  PCI PCI_MSI IOMMU_SUPPORT INTEL_IOMMU INTEL_IOMMU_SVM IRQ_REMAP X86_X2APIC
  VFIO VFIO_GROUP VFIO_CONTAINER VFIO_IOMMU_TYPE1 VFIO_VIRQFD VFIO_PCI_CORE VFIO_PCI VFIO_PCI_INTX
  IOMMUFD VFIO_DEVICE_CDEV IOMMUFD_DRIVER
  RUNTIME_TESTING_MENU FAULT_INJECTION IOMMUFD_TEST
  MEMFD_CREATE DEVTMPFS DEVTMPFS_MOUNT BLK_DEV_INITRD RD_GZIP SERIAL_8250 SERIAL_8250_CONSOLE
  IRQ_BYPASS_MANAGER UDMABUF DMABUF_HEAPS DEBUG_INFO_NONE
  NET_9P NET_9P_VIRTIO 9P_FS VIRTIO_PCI TMPFS HUGETLBFS
)
DISABLE=(
  DRM SOUND WLAN WIRELESS NETFILTER USB_SUPPORT HID INPUT_JOYSTICK INPUT_TABLET INPUT_TOUCHSCREEN AGP FB ETHERNET
  DEBUG_INFO DEBUG_INFO_DWARF5 DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT MODULE_SIG KVM XEN HYPERV SECURITY_SELINUX AUDIT
  CFG80211 MAC80211 BT NFS_FS EXT4_FS BTRFS_FS
)
REQUIRE=(
  IOMMUFD IOMMUFD_TEST VFIO_DEVICE_CDEV VFIO VFIO_PCI VFIO_CONTAINER VFIO_GROUP VFIO_IOMMU_TYPE1 INTEL_IOMMU
  IRQ_REMAP FAULT_INJECTION NET_9P NET_9P_VIRTIO 9P_FS VIRTIO_PCI DEVTMPFS BLK_DEV_INITRD RD_GZIP
  SERIAL_8250_CONSOLE TMPFS
)

# The newest linux-source-7.N the archive offers, and its candidate version.
[ -f "$(private_root)/.done" ] || die "no private root: run test/setup/install-qemu.sh first"
pkg=$(private_apt_cache search --names-only '^linux-source-7\.[0-9]+$' | awk '{print $1}' | sort -V | tail -1)
if [ -z "$pkg" ]; then
  log "no linux-source-7.x known to the private root's apt; running apt-get update"
  private_apt_get update -q >/dev/null
  pkg=$(private_apt_cache search --names-only '^linux-source-7\.[0-9]+$' | awk '{print $1}' | sort -V | tail -1)
fi
[ -n "$pkg" ] || die "no linux-source-7.x package in the private root's trixie-backports"
version=$(private_apt_cache policy "$pkg" | awk '/Candidate:/ {print $2}')
[ -n "$version" ] && [ "$version" != "(none)" ] || die "$pkg has no candidate version"

key=$(printf '%s=%s\n' "$pkg" "$version" | cat - "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
out="$CACHE/kernel-$key"
if [ "${1:-}" = --print-dir ]; then
  echo "$out"
  exit 0
fi
if [ -s "$out/bzImage" ]; then
  log "cached: $out/bzImage ($pkg $version)"
  echo "$out"
  exit 0
fi

mkdir -p "$CACHE"
# One build at a time per key (another `make test` or a developer may run this concurrently).
exec 9>"$CACHE/.kernel-$key.lock"
if ! flock -n 9; then
  log "another build of $key is running; waiting for it"
  flock 9
fi
if [ -s "$out/bzImage" ]; then
  echo "$out"
  exit 0
fi

work="$CACHE/build-$key"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
log "downloading $pkg $version"
private_download "$pkg=$version" "$work"
deb=$(ls ./*.deb)
tarball=$(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -E '/usr/src/linux-source-[0-9.]+\.tar\.(xz|bz2|gz)$' | sed -n 1p)
[ -n "$tarball" ] || die "no source tarball inside $deb"
log "extracting ${tarball#./}"
dpkg-deb --fsys-tarfile "$deb" | tar -xf - "$tarball"
rm -f "$deb"
case "$tarball" in
  *.xz) xz -T0 -dc "$tarball" | tar -xf - ;;
  *) tar -xf "$tarball" ;;
esac
rm -rf ./usr
src=$(find . -maxdepth 1 -type d -name 'linux-source-*' | sed -n 1p)
[ -n "$src" ] || die "source tree not found after extraction"
cd "$src"

log "configuring: x86_64_defconfig + ${#ENABLE[@]} enabled + ${#DISABLE[@]} disabled"
make -s x86_64_defconfig
args=()
for o in "${ENABLE[@]}"; do args+=(--enable "$o"); done
for o in "${DISABLE[@]}"; do args+=(--disable "$o"); done
scripts/config "${args[@]}"
make -s olddefconfig
for o in "${REQUIRE[@]}"; do
  grep -qx "CONFIG_$o=y" .config || die "CONFIG_$o is not =y after olddefconfig"
done

log "building bzImage (nice, make -j$JOBS); about 7-10 minutes"
t=$(date +%s)
nice -n 10 make -j"$JOBS" bzImage >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log" >&2
  die "kernel build failed (log: $work/build.log)"
}
log "bzImage built in $(($(date +%s) - t))s"

tmp="$out.tmp"
rm -rf "$tmp"
mkdir -p "$tmp"
cp arch/x86/boot/bzImage "$tmp/bzImage"
cp .config "$tmp/config"
echo "$pkg $version" >"$tmp/source-version"
echo "$(($(date +%s) - t))" >"$tmp/build-seconds"
rm -rf "$out"
mv "$tmp" "$out"
cd /
rm -rf "$work"
log "cached $out/bzImage ($(du -h "$out/bzImage" | cut -f1)) in $(($(date +%s) - started))s total"
echo "$out"
