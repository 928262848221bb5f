# Shared by the set-up scripts (sourced, not run). docs/setup.md explains the layout.
#
# The rule these scripts keep: the host's packages come only from the host's own Debian release. Anything from
# another release (QEMU >= 10.1, the Debian 6.12 guest kernel, 7.x uAPI headers and kernel sources) is fetched
# into a private Debian root under the project's cache, with that root's own apt, and never touches /etc/apt or
# the host's dpkg database.

CACHE=${VFIO_USER_CACHE:-/var/cache/vfio-user-node}
export VFIO_USER_CACHE=$CACHE
# The release the private root follows. QEMU >= 10.1 with vfio-user-pci is in its -backports suite.
PRIVATE_SUITE=trixie
# Files in $CACHE that other scripts and the tests read.
HOST_PACKAGES_MANIFEST=$CACHE/host-packages.txt # "<package> <version>" for each host package the set-up needs
QEMU_PATH_FILE=$CACHE/qemu-path                 # the qemu-system-x86_64 the tests and `make run` use
APT_OPTS=(-o DPkg::Lock::Timeout=600)

# The host's release codename (bookworm, trixie…), from /etc/os-release. A host that an earlier version of these
# scripts half-upgraded reports trixie there while its apt sources still say bookworm: the sources win.
host_codename() {
  local c
  c=$(awk '
    function flush() { if (!done && u != "" && s != "") { print s; done = 1; exit } u = ""; s = "" }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*$/ { flush(); next }
    tolower($1) == "uris:" { u = $2 }
    tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/ && s == "") s = $i }
    END { flush() }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$c" ] && [ -f /etc/apt/sources.list ]; then
    c=$(awk '$1 == "deb" && $3 !~ /-/ { print $3; exit }' /etc/apt/sources.list)
  fi
  if [ -z "$c" ]; then
    # shellcheck disable=SC1091
    c=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  fi
  echo "$c"
}

# The Debian mirror the host uses (first deb822 stanza or sources.list line of a plain release suite).
host_mirror() {
  local m
  m=$(awk '
    function flush() { if (!done && u != "" && s) { print u; done = 1; exit } u = ""; s = 0 }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*$/ { flush(); next }
    tolower($1) == "uris:" { u = $2 }
    tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) s = 1 }
    END { flush() }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $3 !~ /-/ { print $2; exit }' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# How install-qemu.sh makes the private root; bump the version when that changes, so that a new root is built.
PRIVATE_ROOT_RECIPE="debootstrap --variant=minbase; apt sources: suite and suite-backports, main; v1"

# The private root's directory. Its name hashes the recipe, the suite and the mirror.
private_root() {
  local key
  key=$(printf '%s\n%s\n%s\n' "$PRIVATE_ROOT_RECIPE" "$PRIVATE_SUITE" "$(host_mirror)" | sha256sum | cut -c1-12)
  echo "$CACHE/root-$PRIVATE_SUITE-$key"
}

# apt-get / apt-cache inside the private root (root only: chroot). Downloads land in the root's /var/tmp/dl,
# see `private_download`.
private_apt_get() { chroot "$(private_root)" apt-get "${APT_OPTS[@]}" "$@"; }
private_apt_cache() { chroot "$(private_root)" apt-cache "$@"; }

# Downloads the .deb of "$1" (a package, or package=version) with the private root's apt into directory "$2".
private_download() {
  local root dl
  root=$(private_root)
  dl=$(mktemp -d "$root/var/tmp/dl.XXXXXX")
  # The root's apt runs as root there (no _apt user can write the mktemp directory).
  chroot "$root" sh -c 'cd "$1" && apt-get -o APT::Sandbox::User=root -o DPkg::Lock::Timeout=600 download "$2"' \
    sh "${dl#"$root"}" "$1" >/dev/null
  mv "$dl"/*.deb "$2"/
  rm -rf "$dl"
}

# Prints the packages of "$@" that are not installed on the host.
missing_host_pkgs() {
  local p st
  for p in "$@"; do
    st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$st" = installed ] || echo "$p"
  done
}
