// Our NVMe controller (server/src/devices/nvme) under a real Linux guest's own nvme driver (Debian 6.12 modules,
// busybox initramfs, q35 under TCG, no vIOMMU so the guest's RAM memfd is mapped once): the driver binds, the
// namespace has the right size, test/vm/guest/nvme-guest.c stamps a pattern over the whole namespace and reads it
// back, the machine powers off, a second boot (new QEMU, new server, same image) reads it back (persistence), and
// then: dd of the whole device matches the image file's md5, a controller reset and an unbind/rebind keep I/O
// working, ext2 is created, mounted, written and read back across a remount, fstrim and blkdiscard punch holes in
// the image. The same two guest payloads run against QEMU's built-in `-device nvme` on its own image as the
// control (if the control fails, the harness is broken, not our device).
import { createHash } from 'node:crypto';
import { closeSync, ftruncateSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createNvme, type NvmeDevice, VfioUserServer } from 'vfio-user-server';
import {
  assertGuestPassed,
  type BootResult,
  bootContext,
  bootGuest,
  buildGuestProgram,
  guestKernel,
  guestUnavailableReason,
} from '../lib/guest.js';
import { makeTempDir } from '../lib/qemu.js';
import { guestDeviceOptions } from '../qemu/cmdline.js';

const source = join(dirname(fileURLToPath(import.meta.url)), '../../vm/guest/nvme-guest.c');
const MiB = 1 << 20;
/** Namespace size: big enough for ext2 and a few files, small enough to stamp under TCG in seconds. */
const SIZE = 64 * MiB;
const SEED = 0x5eed;

const logger = process.env.VFIO_USER_TEST_LOG
  ? pino({ level: process.env.VFIO_USER_TEST_LOG, name: 'server' }, pino.destination({ fd: 2, sync: true }))
  : undefined;

/** Shell helpers for the payloads: `t DESC CMD...` counts a check, the summary line ends the payload. */
const PRELUDE = String.raw`
P=0; F=0
ok() { echo "ok - $*"; P=$((P + 1)); }
bad() { echo "FAIL - $*"; F=$((F + 1)); }
t() { d=$1; shift; if "$@"; then ok "$d"; else bad "$d"; fi; }
# Runs nvme-guest, echoes its check lines (not its own summary) and adds them to ours.
prog() {
  out=$(/bin/nvme-guest "$@" 2>&1); echo "$out" | grep -v ' passed, '
  P=$((P + $(echo "$out" | grep -c '^ok - '))); F=$((F + $(echo "$out" | grep -c '^FAIL - ')))
  echo "$out" | grep -q '^ok - ' || F=$((F + 1))
}
wait_dev() { i=0; while [ ! -b /dev/nvme0n1 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; [ -b /dev/nvme0n1 ]; }
wait_live() { i=0; while [ "$(cat /sys/class/nvme/nvme0/state 2>/dev/null)" != live ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done; [ "$(cat /sys/class/nvme/nvme0/state)" = live ]; }
t "the nvme driver created /dev/nvme0n1" wait_dev
BDF=$(basename "$(readlink /sys/class/nvme/nvme0/device)")
echo "bdf $BDF driver $(basename "$(readlink /sys/bus/pci/devices/$BDF/driver)")"
echo "sectors $(cat /sys/block/nvme0n1/size) model $(cat /sys/class/nvme/nvme0/model | sed 's/ *$//') queues $(ls /sys/block/nvme0n1/mq | wc -l)"
dmesg | grep -i nvme | sed 's/^/dmesg: /'
`;

const FIRST = `${PRELUDE}
prog write /dev/nvme0n1 ${SEED}
echo "summary"; echo "$P passed, $F failed"
`;

const SECOND = `${PRELUDE}
prog verify /dev/nvme0n1 ${SEED}
echo "md5 $(dd if=/dev/nvme0n1 bs=1M 2>/dev/null | md5sum | cut -d' ' -f1)"
head1=$(dd if=/dev/nvme0n1 bs=4k count=256 iflag=direct 2>/dev/null | md5sum)
echo 1 > /sys/class/nvme/nvme0/reset_controller
t "controller reset: live again" wait_live
t "I/O after the reset" [ "$(dd if=/dev/nvme0n1 bs=4k count=256 iflag=direct 2>/dev/null | md5sum)" = "$head1" ]
echo "$BDF" > /sys/bus/pci/drivers/nvme/unbind
t "unbind: the namespace is gone" [ ! -b /dev/nvme0n1 ]
echo "$BDF" > /sys/bus/pci/drivers/nvme/bind
t "rebind: the namespace is back" wait_dev
t "I/O after the rebind" [ "$(dd if=/dev/nvme0n1 bs=4k count=256 iflag=direct 2>/dev/null | md5sum)" = "$head1" ]
t "mke2fs" mke2fs -q /dev/nvme0n1
mkdir -p /mnt/nv
t "mount ext2" mount -t ext2 /dev/nvme0n1 /mnt/nv
dd if=/dev/urandom of=/mnt/nv/a bs=1M count=8 2>/dev/null
echo hello nvme > /mnt/nv/b
sa=$(sha256sum /mnt/nv/a | cut -d' ' -f1)
sync
t "umount" umount /mnt/nv
t "mount again" mount -t ext2 /dev/nvme0n1 /mnt/nv
t "file a read back" [ "$(sha256sum /mnt/nv/a | cut -d' ' -f1)" = "$sa" ]
t "file b read back" [ "$(cat /mnt/nv/b)" = "hello nvme" ]
rm /mnt/nv/a; sync
t "fstrim" fstrim /mnt/nv
t "umount" umount /mnt/nv
t "blkdiscard of the last 4 MiB" blkdiscard -o ${SIZE - 4 * MiB} -l ${4 * MiB} /dev/nvme0n1
prog zero /dev/nvme0n1 ${SIZE - 4 * MiB} ${4 * MiB}
echo "summary"; echo "$P passed, $F failed"
`;

/** The pattern nvme-guest stamps on block `block` (the first 16 bytes: block number and seed). */
function stampHead(block: number): Uint8Array {
  const b = new Uint8Array(16);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, BigInt(block), true);
  dv.setBigUint64(8, BigInt(SEED), true);
  return b;
}

function fileMd5(path: string): string {
  return createHash('md5').update(readFileSync(path)).digest('hex');
}

function fileRange(path: string, offset: number, len: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const b = new Uint8Array(len);
    readSync(fd, b, 0, len, offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

interface Target {
  name: string;
  /** Boot with this payload; `image` is the disk either way. */
  boot(script: string, bin: string): Promise<BootResult & { dev?: NvmeDevice }>;
}

function ours(dir: string, image: string): Target {
  return {
    name: 'ours',
    async boot(script, bin) {
      const socket = join(dir, 'vfio-user.sock');
      const dev = createNvme({
        image,
        size: BigInt(SIZE),
        queues: 2,
        serial: 'VFIOUSERNVME-VM',
        log: logger,
      });
      const server = new VfioUserServer({ socketPath: socket, device: dev, logger });
      await server.start();
      try {
        const r = await bootGuest({
          kernel: 'debian',
          ...guestDeviceOptions(socket),
          iommu: false,
          moduleSets: ['nvme', 'ext4'],
          files: [{ path: '/bin/nvme-guest', source: bin }],
          script,
          timeoutMs: 240_000,
        });
        return { ...r, dev };
      } finally {
        await server.close();
        await dev.controller.closeAndWait();
      }
    },
  };
}

function control(image: string): Target {
  return {
    name: "QEMU's nvme",
    boot(script, bin) {
      return bootGuest({
        kernel: 'debian',
        iommu: false,
        qemuArgs: ['-drive', `file=${image},if=none,id=nv0,format=raw,discard=unmap,cache=writeback`],
        devices: ['nvme,serial=QEMUNVME,drive=nv0'],
        moduleSets: ['nvme', 'ext4'],
        files: [{ path: '/bin/nvme-guest', source: bin }],
        script,
        timeoutMs: 240_000,
      });
    },
  };
}

async function runBoth(t: Target, image: string): Promise<void> {
  const bin = await buildGuestProgram(source, ['-pthread']);
  // First boot: bind, size, pattern over the whole namespace, read back, power off.
  const r1 = await t.boot(FIRST, bin);
  const c1 = bootContext(r1);
  assertGuestPassed(r1, { program: `${t.name}: first boot`, minChecks: 3 });
  assert.match(r1.output, /driver nvme/, `bound to the guest's nvme driver${c1}`);
  assert.match(r1.output, new RegExp(`sectors ${SIZE / 512} `), `namespace size${c1}`);
  // The pattern is in the image file, at the right places.
  for (const block of [0, 1, SIZE / 4096 / 2, SIZE / 4096 - 1]) {
    assert.equal(
      fileRange(image, block * 4096, 16),
      stampHead(block),
      `${t.name}: block ${block} in the image`,
    );
  }
  const md5 = fileMd5(image);
  const w = /^write ([\d.]+) MB\/s$/m.exec(r1.output);
  // Second boot: the same image, a new machine (and for ours a new server).
  const r2 = await t.boot(SECOND, bin);
  const c2 = bootContext(r2);
  assertGuestPassed(r2, { program: `${t.name}: second boot`, minChecks: 17 });
  assert.match(r2.output, new RegExp(`^md5 ${md5}$`, 'm'), `dd of the device = md5 of the image${c2}`);
  // fstrim and blkdiscard freed most of the 64 MiB the pattern had allocated (ext2 metadata stays).
  const blocks = statSync(image).blocks;
  assert.ok(blocks * 512 < SIZE / 2, `${t.name}: image holds ${(blocks * 512) / MiB} MiB after the discards`);
  assert.ok(
    fileRange(image, SIZE - 4 * MiB, 4 * MiB).every((b) => b === 0),
    'discarded tail is zeros',
  );
  if (r2.dev) {
    const s = r2.dev.controller.stats;
    assert.ok(s.discards > 0, `DSM deallocate reached the device: ${JSON.stringify(s)}`);
    assert.ok(s.resets >= 2, `controller resets (probe, reset_controller, rebind): ${s.resets}`);
    assert.is(s.bounced, 0, 'every transfer went straight into mapped guest memory');
  }
  console.log(
    `  ${t.name}: boot 1 ${(r1.timings.wallMs / 1000).toFixed(1)} s (write ${w?.[1] ?? '?'} MB/s), ` +
      `boot 2 ${(r2.timings.wallMs / 1000).toFixed(1)} s, image ${((blocks * 512) / MiB).toFixed(1)} MiB allocated`,
  );
}

const reason = guestUnavailableReason('debian');
const k = guestKernel('debian');
if (reason || !k?.modules.nvme || !k.modules.ext4) {
  test('nvme guest tests', () => {
    assert.unreachable(
      `${reason ?? 'no nvme/ext4 modules in the manifest'}: run test/setup/prepare-guest.sh`,
    );
  });
} else {
  test("our NVMe under Linux's nvme driver: pattern, power cycle, dd, reset, rebind, ext2, discard", async () => {
    const tmp = makeTempDir('nvme-vm-');
    try {
      const image = join(tmp.dir, 'ours.img');
      await runBoth(ours(tmp.dir, image), image);
    } finally {
      tmp.cleanup();
    }
  });

  test("control: the same payloads against QEMU's built-in nvme", async () => {
    const tmp = makeTempDir('nvme-vm-ctl-');
    try {
      const image = join(tmp.dir, 'qemu.img');
      closeSync(openSync(image, 'w'));
      // A sparse 64 MiB file, like ours creates.
      const fd = openSync(image, 'r+');
      ftruncateSync(fd, SIZE);
      closeSync(fd);
      await runBoth(control(image), image);
    } finally {
      tmp.cleanup();
    }
  });
}

test.run();
