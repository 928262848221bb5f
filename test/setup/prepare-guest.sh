#!/usr/bin/env bash
# Prepares everything the VM tests boot, in a cache outside the tree, and writes the manifest the tests read
# (test/lib/guest.ts): $VFIO_USER_CACHE/guest.json, VFIO_USER_CACHE defaulting to /var/cache/vfio-user-node.
#
#   debian-<kver>/        Debian trixie 6.12 kernel (type1 only): vmlinuz, config, and the VFIO, 9p, NVMe and ext4 modules
#                         (plus dependencies) decompressed into mods/ for busybox insmod, in load order.
#   uapi-<version>/       linux-libc-dev from trixie-backports (7.x), unpacked, NOT installed: guest programs
#                         compile with -isystem on it (bookworm's 6.1 headers lack iommufd IOAS_MAP_FILE).
# Both are downloaded with the private root's apt (install-qemu.sh, docs/setup.md), never the host's.
#   kernel-<key>/         self-built kernel with IOMMUFD + VFIO cdev + 9p built in (test/setup/build-kernel.sh).
#   guest.json            the manifest.
#
# Idempotent and fast when done (each part has its own completion marker). Needs test/setup/install-qemu.sh first.
# Env: VFIO_USER_CACHE (cache dir), VFIO_USER_SKIP_KERNEL_BUILD=1 (do not build the iommufd kernel; the manifest
# then lists it only if it is already cached), KERNEL_JOBS (make -j, default 2).
set -euo pipefail

started=$(date +%s)
log() { printf '[prepare-guest %4ss] %s\n' "$(($(date +%s) - started))" "$*"; }
die() {
  printf '[prepare-guest] FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get download into $CACHE, depmod)"
for t in cpio gzip xz zstd depmod modprobe dpkg-deb node flock gcc; do
  command -v "$t" >/dev/null || die "'$t' not found: run test/setup/install-qemu.sh first"
done
[ -f "$(private_root)/.done" ] || die "no private root: run test/setup/install-qemu.sh first"
[ -s "$QEMU_PATH_FILE" ] || die "no $QEMU_PATH_FILE: run test/setup/install-qemu.sh first"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (busybox-static): run test/setup/install-qemu.sh first"
# busybox-static must really be static: it runs alone in the initramfs.
if ldd "$BUSYBOX" >/dev/null 2>&1; then die "$BUSYBOX is dynamically linked; busybox-static is needed"; fi

mkdir -p "$CACHE"
exec 8>"$CACHE/.prepare.lock"
flock 8

updated=0
apt_update_once() {
  if [ "$updated" -eq 0 ]; then
    log "apt-get update (private root)"
    private_apt_get update -q >/dev/null
    updated=1
  fi
}

# --- 1. Debian trixie 6.12 kernel ---------------------------------------------------------------------------
# linux-image-amd64 of trixie names the current 6.12 ABI package (e.g. linux-image-6.12.107+deb13-amd64).
debian_image_pkg() { private_apt_cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-6\.12\./ {print $2}' | sed -n 1p; }
img=$(debian_image_pkg)
if [ -z "$img" ]; then
  apt_update_once
  img=$(debian_image_pkg)
fi
[ -n "$img" ] || die "cannot find trixie's linux-image-6.12.*-amd64 (run install-qemu.sh)"
kver=${img#linux-image-}
ddir="$CACHE/debian-$kver"
# One ordered module list per purpose (name:modules): VFIO, the 9p host share, the NVMe driver and ext4 (which
# also serves ext2) for the NVMe device tests. A cached kernel that lacks a newer set gets it added in place
# (each file lands with an atomic rename, so guests booting meanwhile never see a partial file).
MODULE_SETS="vfio:vfio-pci 9p:9p,9pnet_virtio nvme:nvme ext4:ext4"
missing=
for set in $MODULE_SETS; do
  [ -s "$ddir/mods/${set%%:*}.order" ] || missing="$missing $set"
done
if [ ! -f "$ddir/.done" ] || [ -n "$missing" ]; then
  t=$(date +%s)
  if [ -f "$ddir/.done" ]; then
    target=$ddir
    sets=$missing
    log "Debian kernel: adding module sets:$missing"
  else
    target=$ddir.tmp
    sets=$MODULE_SETS
    rm -rf "$ddir" "$ddir.tmp"
  fi
  mkdir -p "$target/mods"
  log "Debian kernel: downloading $img"
  scratch=$(mktemp -d "$CACHE/scratch.XXXXXX")
  private_download "$img" "$scratch" || die "apt-get download $img failed"
  dpkg-deb -x "$scratch"/*.deb "$scratch/root"
  ln -s usr/lib "$scratch/root/lib" 2>/dev/null || true # depmod/modprobe look under <base>/lib/modules
  if [ "$target" != "$ddir" ]; then
    cp "$scratch/root/boot/vmlinuz-$kver" "$target/vmlinuz"
    cp "$scratch/root/boot/config-$kver" "$target/config"
  fi
  depmod -b "$scratch/root" "$kver"
  # modprobe --show-depends prints dependencies first.
  for set in $sets; do
    name=${set%%:*}
    : >"$target/mods/$name.order.tmp"
    for m in $(echo "${set#*:}" | tr , ' '); do
      modprobe -d "$scratch/root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
      base=$(basename "$ko")
      case "$base" in
        *.ko.xz) out=${base%.xz} && xz -dc "$ko" >"$target/mods/$out.tmp" ;;
        *.ko.zst) out=${base%.zst} && zstd -q -dc "$ko" >"$target/mods/$out.tmp" ;;
        *.ko) out=$base && cp "$ko" "$target/mods/$out.tmp" ;;
        *) die "unexpected module file $ko" ;;
      esac
      mv "$target/mods/$out.tmp" "$target/mods/$out"
      echo "$out" >>"$target/mods/$name.order.tmp"
    done
    [ -s "$target/mods/$name.order.tmp" ] || die "no modules resolved for $name"
    mv "$target/mods/$name.order.tmp" "$target/mods/$name.order"
    log "Debian kernel: $name modules: $(tr '\n' ' ' <"$target/mods/$name.order")"
  done
  rm -rf "$scratch"
  if [ "$target" != "$ddir" ]; then
    echo "$img" >"$target/package"
    touch "$target/.done"
    mv "$target" "$ddir"
  fi
  log "Debian kernel $kver ready in $(($(date +%s) - t))s"
else
  log "Debian kernel $kver: cached"
fi

# --- 2. uAPI headers (linux-libc-dev from trixie-backports) --------------------------------------------------
uapi_version() { private_apt_cache madison linux-libc-dev 2>/dev/null | awk -F' *[|] *' '$3 ~ /trixie-backports/ {print $2}' | sort -V | tail -1; }
uv=$(uapi_version)
if [ -z "$uv" ]; then
  apt_update_once
  uv=$(uapi_version)
fi
[ -n "$uv" ] || die "no linux-libc-dev in trixie-backports"
udir="$CACHE/uapi-$uv"
if [ ! -f "$udir/.done" ]; then
  log "uAPI headers: downloading linux-libc-dev $uv"
  rm -rf "$udir" "$udir.tmp"
  scratch=$(mktemp -d "$CACHE/scratch.XXXXXX")
  private_download "linux-libc-dev=$uv" "$scratch" || die "apt-get download linux-libc-dev=$uv failed"
  dpkg-deb -x "$scratch"/*.deb "$udir.tmp"
  rm -rf "$scratch"
  grep -q IOMMU_IOAS_MAP_FILE "$udir.tmp/usr/include/linux/iommufd.h" || die "linux-libc-dev $uv lacks IOMMU_IOAS_MAP_FILE"
  touch "$udir.tmp/.done"
  mv "$udir.tmp" "$udir"
else
  log "uAPI headers linux-libc-dev $uv: cached"
fi
multiarch=$(gcc -print-multiarch)
[ -d "$udir/usr/include/$multiarch/asm" ] || die "no asm headers for $multiarch in linux-libc-dev $uv"

# --- 3. self-built kernel with IOMMUFD -------------------------------------------------------------------------
# Leftover trees of interrupted builds (1.5 GB+ each) whose build is not running: their lock is free.
for b in "$CACHE"/build-*; do
  [ -d "$b" ] || continue
  lock="$CACHE/.kernel-${b##*/build-}.lock"
  if (exec 7>"$lock" && flock -n 7); then
    log "removing the leftover kernel build tree $b"
    rm -rf "$b"
  fi
done
rm -rf "$CACHE"/scratch.* "$CACHE"/debian-*.tmp "$CACHE"/uapi-*.tmp # ours, under the prepare lock

kdir=
if [ "${VFIO_USER_SKIP_KERNEL_BUILD:-0}" = 1 ]; then
  d=$(bash "$here/build-kernel.sh" --print-dir)
  if [ -s "$d/bzImage" ]; then kdir=$d; fi
  log "iommufd kernel: build skipped (VFIO_USER_SKIP_KERNEL_BUILD=1); ${kdir:-not cached}"
else
  kdir=$(bash "$here/build-kernel.sh" | tail -1)
  [ -s "$kdir/bzImage" ] || die "build-kernel.sh did not produce $kdir/bzImage"
fi

# --- 4. manifest -------------------------------------------------------------------------------------------------
QEMU=$(cat "$QEMU_PATH_FILE")
tmpjson="$CACHE/guest.json.tmp"
CACHE="$CACHE" DDIR="$ddir" KVER="$kver" UDIR="$udir" UV="$uv" KDIR="$kdir" BUSYBOX="$BUSYBOX" QEMU="$QEMU" \
  MULTIARCH="$multiarch" node - "$tmpjson" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const e = process.env;
const order = (set) =>
  fs.readFileSync(path.join(e.DDIR, 'mods', `${set}.order`), 'utf8').split('\n').filter(Boolean)
    .map((m) => path.join(e.DDIR, 'mods', m));
const kernels = {
  debian: {
    name: 'debian',
    description: `Debian ${e.KVER} (type1 only; VFIO and 9p as modules)`,
    kernel: path.join(e.DDIR, 'vmlinuz'),
    config: path.join(e.DDIR, 'config'),
    release: e.KVER,
    iommufd: false,
    modules: { vfio: order('vfio'), '9p': order('9p'), nvme: order('nvme'), ext4: order('ext4') },
  },
};
if (e.KDIR) {
  kernels.iommufd = {
    name: 'iommufd',
    description: `self-built ${fs.readFileSync(path.join(e.KDIR, 'source-version'), 'utf8').trim()} (IOMMUFD, VFIO cdev, 9p built in)`,
    kernel: path.join(e.KDIR, 'bzImage'),
    config: path.join(e.KDIR, 'config'),
    release: fs.readFileSync(path.join(e.KDIR, 'source-version'), 'utf8').trim(),
    iommufd: true,
    modules: { vfio: [], '9p': [] },
  };
}
const manifest = {
  version: 1,
  cache: e.CACHE,
  qemu: e.QEMU,
  busybox: e.BUSYBOX,
  uapi: {
    version: e.UV,
    include: [path.join(e.UDIR, 'usr/include'), path.join(e.UDIR, 'usr/include', e.MULTIARCH)],
  },
  kernels,
};
for (const k of Object.values(kernels)) {
  for (const f of [k.kernel, ...Object.values(k.modules).flat()]) {
    if (!fs.existsSync(f)) throw new Error(`manifest: missing ${f}`);
  }
}
fs.writeFileSync(process.argv[2], `${JSON.stringify(manifest, null, 2)}\n`);
EOF
mv "$tmpjson" "$CACHE/guest.json"
log "manifest $CACHE/guest.json: kernels debian${kdir:+ iommufd}"
log "done in $(($(date +%s) - started))s"
