#!/usr/bin/env bash
# `make run`: prints the QEMU command line that attaches to the server, then runs vfio-user-server on $1 with
# device $2 in the foreground (Ctrl-C or SIGTERM stops it and removes the socket). The command line is the one
# the SeaBIOS test uses (docs/testing.md, "The tests' QEMU command lines"), with this socket and SeaBIOS's debug log on QEMU's stdout, and
# the QEMU binary the project really works with: $QEMU, else the one install-qemu.sh chose (the host's own when it
# qualifies, else the private root's wrapper in the cache; docs/setup.md).
set -euo pipefail
sock=${1:?usage: run-server.sh SOCKET [DEVICE]}
dev=${2:-edu}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if [ ! -f server/dist/src/cli.js ]; then
  echo "vfio-user-server is not built: run 'make build' (or 'npx tsc -b')" >&2
  exit 1
fi
case "$sock" in /*) ;; *) sock="$PWD/$sock" ;; esac
mkdir -p "$(dirname "$sock")"
qemu=${QEMU:-}
if [ -z "$qemu" ] && [ -s "${VFIO_USER_CACHE:-/var/cache/vfio-user-node}/qemu-path" ]; then
  qemu=$(cat "${VFIO_USER_CACHE:-/var/cache/vfio-user-node}/qemu-path")
fi
if [ -z "$qemu" ] || [ ! -x "$qemu" ]; then
  qemu=qemu-system-x86_64
  echo "note: no QEMU >= 10.1 set up yet: 'make qemu' (root) installs one into the project's cache" >&2
fi
# The socket path goes into QEMU's JSON -device argument: JSON-encode it.
json_path=$(node -e 'process.stdout.write(JSON.stringify(process.argv[1]))' "$sock")
cat <<EOF
vfio-user-server: device '$dev' on $sock
Attach QEMU (>= 10.1 with vfio-user-pci) from another terminal, for example SeaBIOS
enumerating the device (its log shows 'PCI: init bdf=00:05.0 id=1234:11e8'; stop it with Ctrl-C):

  $qemu -machine q35 -accel tcg -m 512M -nographic -nodefaults \\
    -object memory-backend-memfd,id=mem0,size=512M,share=on -machine memory-backend=mem0 \\
    -chardev stdio,id=dbg -device isa-debugcon,iobase=0x402,chardev=dbg \\
    -device '{"driver":"vfio-user-pci","id":"vu0","addr":"05.0","socket":{"type":"unix","path":$json_path}}'

Guest RAM must be a shared memfd (share=on) for the server to map it; docs/qemu.md has the rest, and docs/testing.md
the qtest harness and Linux guest command lines. QEMU does not reconnect: restart QEMU after restarting the server.
Stop the server with Ctrl-C.

EOF
exec node server/bin/vfio-user-server.js --socket-path "$sock" --device "$dev"
