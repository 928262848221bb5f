#!/usr/bin/env bash
# Installs what the QEMU and VM tests need without moving the host to another Debian release (docs/setup.md):
#   - host packages, from the host's own release only (Debian 12 bookworm or 13 trixie): debootstrap, what the
#     guests need (busybox-static cpio xz-utils zstd gzip kmod) and what the guest-kernel build needs
#     (build-essential flex bison libelf-dev libssl-dev bc) and what the libFuzzer harness of the addon needs
#     (clang libclang-rt-dev: the release's default clang and its libFuzzer runtime, test/fuzz/native.ts). Each one
#     is recorded with its installed version in $VFIO_USER_CACHE/host-packages.txt, and a test checks that the
#     host's release offers exactly that version;
#   - QEMU >= 10.1 with `vfio-user-pci`: the host's own qemu-system-x86_64 when it qualifies (Debian 13 with
#     backports, Ubuntu, Fedora…), else trixie-backports' QEMU inside a private Debian root under the cache
#     (`debootstrap --variant=minbase trixie`, ~0.5 GB), run through the wrapper $VFIO_USER_CACHE/bin/qemu-system-x86_64
#     (the root's own loader and libraries, its firmware through -L, its modules through QEMU_MODULE_DIR).
#     QEMU=/path overrides both. The chosen binary's path is written to $VFIO_USER_CACHE/qemu-path.
# The private root is also the apt that prepare-guest.sh and build-kernel.sh download trixie packages with.
#
# Writes nothing under /etc/apt. It removes the trixie sources and pin files that earlier versions of this script
# wrote there; a host those versions already upgraded in part keeps working (its QEMU qualifies and is used).
# Idempotent: a second run with everything in place takes about a second.
set -euo pipefail

started=$(date +%s)
log() { printf '[install-qemu %3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
die() {
  printf '[install-qemu] FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$here/common.sh"

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get install of host packages, chroot into the private root)"
export DEBIAN_FRONTEND=noninteractive

HOST_PKGS=(debootstrap busybox-static cpio xz-utils zstd gzip kmod build-essential flex bison libelf-dev libssl-dev bc
  clang libclang-rt-dev)
# Installed into the private root (never into the host).
ROOT_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
MIN_QEMU_MAJOR=10
MIN_QEMU_MINOR=1
LEGACY_APT_FILES=(/etc/apt/sources.list.d/trixie.sources /etc/apt/preferences.d/vfio-user-node-trixie)

mkdir -p "$CACHE"
exec 8>"$CACHE/.install-qemu.lock"
flock 8

# True when "$1" is a QEMU >= 10.1 that knows vfio-user-pci.
qemu_ok() {
  local bin=$1 v major minor props
  [ -n "$bin" ] && [ -x "$bin" ] || return 1
  v=$("$bin" --version 2>/dev/null | sed -n '1s/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p') || return 1
  read -r major minor <<<"$v"
  [ -n "${major:-}" ] || return 1
  if [ "$major" -lt "$MIN_QEMU_MAJOR" ] || { [ "$major" -eq "$MIN_QEMU_MAJOR" ] && [ "$minor" -lt "$MIN_QEMU_MINOR" ]; }; then
    return 1
  fi
  # Captured first: `| grep -q` would SIGPIPE the producer and trip pipefail.
  props=$("$bin" -device vfio-user-pci,help 2>/dev/null) || return 1
  [[ "$props" == *socket* ]]
}

codename=$(host_codename)
case "$codename" in
  bookworm | trixie) ;;
  *) log "warning: host release '$codename' is not Debian 12 or 13; continuing (only these two are supported)" ;;
esac

# --- 1. what earlier versions wrote under /etc/apt ---------------------------------------------------------------
removed=0
for f in "${LEGACY_APT_FILES[@]}"; do
  if [ -f "$f" ] && grep -q 'vfio-user-node' "$f"; then
    log "removing $f (written by an earlier version of this script)"
    rm -f "$f"
    removed=1
  fi
done
if [ "$removed" = 1 ]; then
  apt-get "${APT_OPTS[@]}" update -q >/dev/null || die "apt-get update failed after removing the old trixie sources"
fi

# --- 2. host packages from the host's release --------------------------------------------------------------------
missing=$(missing_host_pkgs "${HOST_PKGS[@]}")
if [ -n "$missing" ]; then
  t=$(date +%s)
  # shellcheck disable=SC2086
  log "installing from $codename: $(echo $missing)"
  apt-get "${APT_OPTS[@]}" update -q >/dev/null || die "apt-get update failed"
  # -t pins the target release: nothing of another release can come in, even on a host with more sources.
  # shellcheck disable=SC2086
  apt-get install -y -q "${APT_OPTS[@]}" --no-install-recommends -t "$codename" $missing >/dev/null ||
    die "apt-get install -t $codename $missing failed"
  log "host packages installed in $(($(date +%s) - t))s"
fi
missing=$(missing_host_pkgs "${HOST_PKGS[@]}")
[ -z "$missing" ] || die "host packages still missing: $missing"
for p in "${HOST_PKGS[@]}"; do printf '%s %s\n' "$p" "$(dpkg-query -W -f='${Version}' "$p")"; done >"$HOST_PACKAGES_MANIFEST.tmp"
mv "$HOST_PACKAGES_MANIFEST.tmp" "$HOST_PACKAGES_MANIFEST"

# --- 3. the private root (trixie + trixie-backports, its own apt) ------------------------------------------------
root=$(private_root)
mirror=$(host_mirror)
if [ ! -f "$root/.done" ]; then
  t=$(date +%s)
  rm -rf "$root" "$root.tmp"
  log "private root: debootstrap --variant=minbase $PRIVATE_SUITE from $mirror into $root"
  debootstrap --variant=minbase "$PRIVATE_SUITE" "$root.tmp" "$mirror" >"$CACHE/debootstrap.log" 2>&1 ||
    die "debootstrap failed (log: $CACHE/debootstrap.log)"
  printf 'deb %s %s main\ndeb %s %s-backports main\n' "$mirror" "$PRIVATE_SUITE" "$mirror" "$PRIVATE_SUITE" \
    >"$root.tmp/etc/apt/sources.list"
  chroot "$root.tmp" apt-get "${APT_OPTS[@]}" update -q >/dev/null || die "apt-get update in the private root failed"
  touch "$root.tmp/.done"
  mv "$root.tmp" "$root"
  # Roots of earlier recipes.
  for old in "$CACHE"/root-*; do
    [ "$old" = "$root" ] || rm -rf "$old"
  done
  log "private root ready in $(($(date +%s) - t))s"
fi
# The package lists go stale (a point release replaces the files they name): refresh them once a day.
if [ -z "$(find "$root/var/lib/apt/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 -print -quit)" ]; then
  log "refreshing the private root's package lists"
  private_apt_get update -q >/dev/null || die "apt-get update in the private root failed"
fi

# --- 4. QEMU -------------------------------------------------------------------------------------------------------
wrapper="$CACHE/bin/qemu-system-x86_64"
qemu=
if [ -n "${QEMU:-}" ]; then
  qemu_ok "$QEMU" || die "QEMU=$QEMU is not a QEMU >= $MIN_QEMU_MAJOR.$MIN_QEMU_MINOR with vfio-user-pci"
  qemu=$QEMU
  log "QEMU from \$QEMU: $qemu"
elif host=$(command -v qemu-system-x86_64) && qemu_ok "$host"; then
  qemu=$host
  log "the host's QEMU qualifies: $qemu"
else
  # The marker names the package set, so a changed set is installed again.
  qemu_done="$root/.qemu-$(echo "${ROOT_PKGS[*]}" | sha256sum | cut -c1-12)"
  if [ ! -f "$qemu_done" ]; then
    t=$(date +%s)
    bpo=()
    for p in "${ROOT_PKGS[@]}"; do bpo+=("$p/$PRIVATE_SUITE-backports"); done
    log "private root: apt-get install ${bpo[*]}"
    chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${APT_OPTS[@]}" --no-install-recommends \
      "${bpo[@]}" >"$CACHE/qemu-install.log" 2>&1 || die "QEMU install in the private root failed (log: $CACHE/qemu-install.log)"
    touch "$qemu_done"
    log "QEMU installed in the private root in $(($(date +%s) - t))s"
  fi
  mkdir -p "$CACHE/bin"
  multiarch=$(chroot "$root" dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
  cat >"$wrapper.tmp" <<EOF
#!/bin/bash
# Written by vfio-user-node test/setup/install-qemu.sh: QEMU from the private Debian $PRIVATE_SUITE root
# $root, run with that root's loader and libraries so nothing of it is installed on the host.
root=$root
export QEMU_MODULE_DIR=\$root/usr/lib/$multiarch/qemu
exec -a "\$0" "\$root/lib64/ld-linux-x86-64.so.2" --library-path "\$root/usr/lib/$multiarch:\$root/lib/$multiarch" \\
  "\$root/usr/bin/qemu-system-x86_64" -L "\$root/usr/share/qemu" -L "\$root/usr/share/seabios" "\$@"
EOF
  chmod 755 "$wrapper.tmp"
  mv "$wrapper.tmp" "$wrapper"
  qemu=$wrapper
fi
qemu_ok "$qemu" || die "$qemu lacks vfio-user-pci (need >= $MIN_QEMU_MAJOR.$MIN_QEMU_MINOR)"
echo "$qemu" >"$QEMU_PATH_FILE.tmp"
mv "$QEMU_PATH_FILE.tmp" "$QEMU_PATH_FILE"

log "host: Debian $codename, $(ldd --version | head -1 | awk '{print "glibc " $NF}'), node $(node --version 2>/dev/null || echo '-')"
log "qemu: $qemu: $("$qemu" --version | head -1)"
log "cache: $CACHE"
log "done in $(($(date +%s) - started))s"
