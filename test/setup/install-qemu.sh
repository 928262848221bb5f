#!/usr/bin/env bash
# Installs the system packages that the QEMU and VM tests need, on Debian 12 (bookworm):
#   - QEMU >= 10.1 with the `vfio-user-pci` device, from Debian trixie-backports (bookworm has 7.2, trixie 10.0);
#   - what the guests need: busybox-static, cpio, xz-utils, zstd, kmod (depmod/modprobe resolve module deps);
#   - what the guest-kernel build needs: build-essential flex bison libelf-dev libssl-dev bc.
#
# Idempotent: when QEMU already offers vfio-user-pci and every package is installed it only prints versions.
#
# How (see shared/reference/vfio-user-protocol.md §6.1):
#   1. /etc/apt/sources.list.d/trixie.sources with the mirror of the existing debian.sources (not hard-coded),
#      suites trixie + trixie-backports, pinned at 100 in /etc/apt/preferences.d/ so that nothing upgrades to
#      trixie unless asked for.
#   2. The guest and build packages come from bookworm (plain install; gcc stays gcc-12).
#   3. QEMU: `-t trixie` plus explicit `/trixie-backports` for the QEMU packages. `-t trixie-backports` alone
#      cannot work with trixie pinned low: qemu 11.1 needs trixie's libc6/glib/gnutls, which are at priority 100
#      below bookworm's 500. `-t trixie` raises trixie to 990 for this one command only, so apt upgrades exactly
#      the libraries QEMU needs (libc6 2.41, the t64 transition libraries; a partial upgrade that Node 20 and
#      gcc survive, checked at the end) and nothing else.
set -euo pipefail

started=$(date +%s)
log() { printf '[install-qemu %3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
die() {
  printf '[install-qemu] FAILED: %s\n' "$*" >&2
  exit 1
}
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "must run as root (or with sudo available)"
  SUDO=sudo
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

QEMU_PKGS=(qemu-system-x86 qemu-system-common qemu-system-data seabios)
BASE_PKGS=(busybox-static cpio xz-utils zstd gzip kmod build-essential flex bison libelf-dev libssl-dev bc)
MIN_QEMU_MAJOR=10
MIN_QEMU_MINOR=1

SOURCES=/etc/apt/sources.list.d/trixie.sources
PREFS=/etc/apt/preferences.d/vfio-user-node-trixie
DEBIAN_SOURCES=/etc/apt/sources.list.d/debian.sources

# Prints the packages of "$@" that are not installed.
missing_pkgs() {
  local p st
  for p in "$@"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || echo "$p"
  done
}

# True when qemu-system-x86_64 is >= 10.1 and knows vfio-user-pci.
qemu_ok() {
  command -v qemu-system-x86_64 >/dev/null || return 1
  local v major minor
  v=$(qemu-system-x86_64 --version | sed -n '1s/.*version \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  read -r major minor <<<"$v"
  [ -n "${major:-}" ] || return 1
  if [ "$major" -lt "$MIN_QEMU_MAJOR" ] || { [ "$major" -eq "$MIN_QEMU_MAJOR" ] && [ "$minor" -lt "$MIN_QEMU_MINOR" ]; }; then
    return 1
  fi
  # Captured first: `| grep -q` would SIGPIPE the producer and trip pipefail.
  local props
  props=$(qemu-system-x86_64 -device vfio-user-pci,help 2>/dev/null) || return 1
  [[ "$props" == *socket* ]]
}

report() {
  log "qemu: $(qemu-system-x86_64 --version | head -1)"
  log "vfio-user-pci: $(qemu-system-x86_64 -device vfio-user-pci,help | grep -c '=') properties"
  log "node: $(node --version 2>/dev/null || echo 'not found')   gcc: $(gcc -dumpfullversion 2>/dev/null || echo 'not found')   libc: $(ldd --version | head -1 | awk '{print $NF}')"
}

missing_base=$(missing_pkgs "${BASE_PKGS[@]}")
if qemu_ok && [ -z "$missing_base" ] && [ -f "$SOURCES" ] && [ -f "$PREFS" ]; then
  log "already done: QEMU with vfio-user-pci and all packages present"
  report
  exit 0
fi

# --- 1. apt sources and pins -------------------------------------------------------------------------------
[ -f "$DEBIAN_SOURCES" ] || die "$DEBIAN_SOURCES not found: cannot tell which Debian mirror this machine uses"
# The URIs of the first stanza that lists a plain release suite (`bookworm`, not `bookworm-security`/-updates).
# Not matched against /etc/os-release: after this script's partial upgrade, base-files (from trixie) reports
# trixie there while debian.sources still says bookworm.
mirror=$(awk '
  function flush() { if (u != "" && s) { print u; found = 1; exit } u = ""; s = 0 }
  /^[[:space:]]*#/ { next }
  /^[[:space:]]*$/ { flush(); next }
  tolower($1) == "uris:" { u = $2 }
  tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) s = 1 }
  END { if (!found) flush() }' "$DEBIAN_SOURCES" | sed -n 1p)
[ -n "$mirror" ] || die "no URIs for a release suite in $DEBIAN_SOURCES"
log "Debian mirror (from $DEBIAN_SOURCES): $mirror"

want_sources="# Written by vfio-user-node test/setup/install-qemu.sh: QEMU >= 10.1 (vfio-user-pci) from trixie-backports.
Types: deb
URIs: $mirror
Suites: trixie trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
want_prefs="# Written by vfio-user-node test/setup/install-qemu.sh: never upgrade to trixie unless asked for.
Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=trixie-backports
Pin-Priority: 100"

changed=0
if [ "$(cat "$SOURCES" 2>/dev/null || true)" != "$want_sources" ]; then
  log "writing $SOURCES"
  printf '%s\n' "$want_sources" | $SUDO tee "$SOURCES" >/dev/null
  changed=1
fi
if [ "$(cat "$PREFS" 2>/dev/null || true)" != "$want_prefs" ]; then
  log "writing $PREFS (trixie and trixie-backports pinned at 100)"
  printf '%s\n' "$want_prefs" | $SUDO tee "$PREFS" >/dev/null
  changed=1
fi
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || die "debian-archive-keyring is not installed"

# --- 2. apt-get update ---------------------------------------------------------------------------------------
# Needed on a fresh machine (stale or missing lists) and whenever the sources changed; cheap otherwise.
t=$(date +%s)
log "apt-get update"
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -q >/tmp/install-qemu-apt-update.log 2>&1 ||
  {
    cat /tmp/install-qemu-apt-update.log >&2
    die "apt-get update failed"
  }
log "apt-get update done in $(($(date +%s) - t))s (changed sources: $changed)"
[[ "$(apt-cache policy qemu-system-x86)" == *trixie-backports* ]] || die "trixie-backports has no qemu-system-x86 after apt-get update"

# --- 3. guest and build packages from bookworm -----------------------------------------------------------------
missing_base=$(missing_pkgs "${BASE_PKGS[@]}")
if [ -n "$missing_base" ]; then
  t=$(date +%s)
  # shellcheck disable=SC2086
  log "installing from the base release: $(echo $missing_base)"
  # shellcheck disable=SC2086
  $SUDO apt-get install "${APT_OPTS[@]}" --no-install-recommends $missing_base
  log "base packages installed in $(($(date +%s) - t))s"
fi

# --- 4. QEMU from trixie-backports -------------------------------------------------------------------------------
if ! qemu_ok; then
  t=$(date +%s)
  bpo=()
  for p in "${QEMU_PKGS[@]}"; do bpo+=("$p/trixie-backports"); done
  log "installing QEMU: apt-get install -t trixie ${bpo[*]}"
  $SUDO apt-get install "${APT_OPTS[@]}" --no-install-recommends -t trixie "${bpo[@]}"
  log "QEMU installed in $(($(date +%s) - t))s"
fi

# --- 5. checks ---------------------------------------------------------------------------------------------------
qemu_ok || die "qemu-system-x86_64 still lacks vfio-user-pci (need >= $MIN_QEMU_MAJOR.$MIN_QEMU_MINOR)"
missing_base=$(missing_pkgs "${BASE_PKGS[@]}")
[ -z "$missing_base" ] || die "packages still missing: $missing_base"
node -e 'if (!/^v2\d\./.test(process.version)) process.exit(1)' || die "node no longer works after the upgrade"
tmpc=$(mktemp -d)
printf '#include <stdio.h>\nint main(void){puts("ok");return 0;}\n' >"$tmpc/t.c"
gcc -O2 -o "$tmpc/t" "$tmpc/t.c" && [ "$("$tmpc/t")" = ok ] || die "gcc no longer builds working programs"
gcc -static -O2 -o "$tmpc/ts" "$tmpc/t.c" && [ "$("$tmpc/ts")" = ok ] || die "gcc -static is broken"
rm -rf "$tmpc"
report
log "done in $(($(date +%s) - started))s"
