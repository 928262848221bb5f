#!/usr/bin/env node
// NVMe in a Linux guest: our controller vs QEMU's built-in nvme, same guest, same run. One TCG guest (Debian 6.12,
// its own nvme driver, no vIOMMU, memfd RAM) gets four controllers, each on its own sparse 256 MiB image:
//   qemu      QEMU's `-device nvme` (the baseline)
//   posted    ours through vfio-user-pci, doorbell writes posted (QEMU's default: no reply awaited)
//   trapped   ours with x-no-posted-writes=on (every doorbell write waits for the server's reply)
//   shadow    ours offering Doorbell Buffer Config (Linux writes shadow doorbells + reads event indexes)
// test/vm/guest/nvme-guest.c `bench` runs 4 KiB random read and 128 KiB sequential read/write at QD1 and QD16
// (16 threads) on each with O_DIRECT; the table gives IOPS and each of ours as a ratio of QEMU's. The server side
// is profiled (V8 sampling profiler, in this process) and the top self-time functions are printed, with the
// device counters (doorbell writes and interrupts per command). Needs QEMU and prepare-guest.sh (nvme modules).
// Env: NVME_BENCH_SECS (per test, default 3).
import { closeSync, mkdtempSync, openSync, rmSync, truncateSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, '..', 'dist');
const { bootGuest, buildGuestProgram, guestKernel, guestUnavailableReason } = await import(
  join(dist, 'lib', 'guest.js')
);
const { vfioUserPci } = await import(join(dist, 'qemu', 'cmdline.js'));
const { createNvme, VfioUserServer } = await import('vfio-user-server');

const SECS = Number(process.env.NVME_BENCH_SECS ?? 3);
const SIZE = 256n << 20n;
const reason = guestUnavailableReason('debian');
if (reason || !guestKernel('debian')?.modules.nvme) {
  console.log(
    `(skipped: ${reason ?? 'no nvme modules in the guest manifest'}; run test/setup/prepare-guest.sh)`,
  );
  process.exit(0);
}

const dir = mkdtempSync(join(tmpdir(), 'nvme-bench-'));
const bin = await buildGuestProgram(join(here, '..', 'vm', 'guest', 'nvme-guest.c'), ['-pthread']);
const variants = [
  { name: 'posted', addr: '05.0', serial: 'OURS-POSTED', shadow: false, extra: {} },
  {
    name: 'trapped',
    addr: '06.0',
    serial: 'OURS-TRAPPED',
    shadow: false,
    extra: { 'x-no-posted-writes': true },
  },
  { name: 'shadow', addr: '07.0', serial: 'OURS-SHADOW', shadow: true, extra: {} },
];
const servers = [];
for (const v of variants) {
  const device = createNvme({
    image: join(dir, `${v.name}.img`),
    size: SIZE,
    queues: 2,
    serial: v.serial,
    shadowDoorbells: v.shadow,
  });
  const socketPath = join(dir, `${v.name}.sock`);
  const server = new VfioUserServer({ socketPath, device });
  await server.start();
  servers.push({ ...v, device, server, socketPath });
}
const qemuImage = join(dir, 'qemu.img');
closeSync(openSync(qemuImage, 'w'));
truncateSync(qemuImage, Number(SIZE)); // sparse, like ours

// Test by test, every controller in turn (found by serial), so a change in the machine's load hits all alike.
const TESTS = [
  'randread-4k-qd1',
  'randread-4k-qd16',
  'seqread-128k-qd1',
  'seqread-128k-qd16',
  'seqwrite-128k-qd1',
  'seqwrite-128k-qd16',
];
const script = `
for t in ${TESTS.join(' ')}; do
  for c in /sys/class/nvme/nvme*; do
    s=$(cat $c/serial | sed 's/ *$//'); n=$(basename $c)
    /bin/nvme-guest bench /dev/\${n}n1 ${SECS} $t | sed -n "s/^bench /bench $s /p"
  done
done
echo "1 passed, 0 failed"
`;

const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 200 });
await session.post('Profiler.start');
const t0 = Date.now();
const r = await bootGuest({
  kernel: 'debian',
  iommu: false,
  memoryMiB: 1024,
  objects: ['memory-backend-memfd,id=mem0,size=1024M,share=on'],
  qemuArgs: [
    '-machine',
    'memory-backend=mem0',
    '-drive',
    `file=${qemuImage},if=none,id=nv0,format=raw,discard=unmap,cache=writeback`,
  ],
  devices: [
    ...servers.map((s) => {
      const d = JSON.parse(vfioUserPci(s.socketPath, s.addr, `vu-${s.name}`));
      return JSON.stringify({ ...d, ...s.extra });
    }),
    'nvme,serial=QEMU-NVME,drive=nv0,addr=08.0',
  ],
  moduleSets: ['nvme'],
  files: [{ path: '/bin/nvme-guest', source: bin }],
  script,
  timeoutMs: 600_000,
});
const { profile } = await session.post('Profiler.stop');
session.disconnect();
const wall = (Date.now() - t0) / 1000;

const results = new Map(); // serial -> test -> iops
for (const m of r.output.matchAll(/^bench (\S+) (\S+) ([\d.]+) ([\d.]+)$/gm)) {
  if (!results.has(m[1])) results.set(m[1], new Map());
  results.get(m[1]).set(m[2], { iops: Number(m[3]), mbps: Number(m[4]) });
}
const base = results.get('QEMU-NVME');
if (!base || r.exitCode !== 0) {
  console.log(
    `guest run failed (exit ${r.exitCode}):\n${r.console.slice(-4000)}\n${r.qemu.stderr.slice(-2000)}`,
  );
  process.exitCode = 1;
} else {
  const tests = [...base.keys()];
  const cols = ['qemu', ...variants.map((v) => v.name)];
  console.log(`guest: Debian 6.12 under TCG, 2 vCPUs; ${SECS} s per test; O_DIRECT; QD16 = 16 threads`);
  console.log(
    `| test | ${cols.map((c) => `${c} IOPS`).join(' | ')} | ${variants.map((v) => `${v.name}/qemu`).join(' | ')} |`,
  );
  console.log(`|---|${cols.map(() => '---:').join('|')}|${variants.map(() => '---:').join('|')}|`);
  for (const t of tests) {
    const q = base.get(t).iops;
    const row = [q.toFixed(0)];
    const ratios = [];
    for (const s of servers) {
      const v = results.get(s.serial)?.get(t)?.iops;
      row.push(v === undefined ? '-' : v.toFixed(0));
      ratios.push(v === undefined ? '-' : `${(v / q).toFixed(2)}x`);
    }
    console.log(`| ${t} | ${row.join(' | ')} | ${ratios.join(' | ')} |`);
  }
  for (const s of servers) {
    const st = s.device.controller.stats;
    const cmds = st.ioCommands || 1;
    console.log(
      `${s.name}: ${st.ioCommands} I/O commands, ${(st.doorbellWrites / cmds).toFixed(2)} doorbell writes and ` +
        `${(st.interrupts / cmds).toFixed(2)} interrupts per command, ${st.bounced} bounced, ` +
        `${s.device.controller.image.stats.cachedReads} of ${s.device.controller.image.stats.reads} reads from the page cache, ` +
        `server messages ${JSON.stringify(s.server.stats.messages)}`,
    );
  }
  // Where the server's time went (this process: all three servers), by function self time.
  const self = new Map();
  const dt = profile.timeDeltas.reduce((a, b) => a + b, 0) / Math.max(1, profile.samples.length) / 1000;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  let total = 0;
  for (const id of profile.samples) {
    const n = byId.get(id);
    const f = n.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    total += dt;
  }
  const idle = [...self.entries()].filter(([k]) => k.startsWith('(idle)')).reduce((a, [, v]) => a + v, 0);
  console.log(
    `server process profile: ${(total / 1000).toFixed(1)} s sampled over ${wall.toFixed(0)} s wall, ` +
      `${(((total - idle) / total) * 100).toFixed(0)}% busy; top self time:`,
  );
  for (const [k, v] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    console.log(`  ${((v / total) * 100).toFixed(1).padStart(5)}%  ${k}`);
  }
}
for (const s of servers) {
  await s.server.close();
  await s.device.controller.closeAndWait();
}
rmSync(dir, { recursive: true, force: true });
