#!/usr/bin/env node
// `make bench`: runs every benchmark in turn. Each one measures its own baseline in the same run (the C-to-C
// socket floor, a raw socket round trip, a raw C ioctl loop in the same guest) and prints its table with ratios
// against it. Benchmarks are not tests: nothing here asserts a number.
//
// Usage: node test/bench/run.mjs [name ...]   (default: all)
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const benches = [
  { name: 'native-rtt', file: 'native-rtt.mjs', what: 'socket round trip through the addon vs the C floor' },
  {
    name: 'hot-paths',
    file: 'hot-paths.mjs',
    what: 'REGION_READ round trip, DMA_MAP+DMA_UNMAP pairs/s and syscalls, 1 TiB map, C client, vs the C floor (pinned)',
  },
  {
    name: 'dma',
    file: 'dma-bench.mjs',
    what: 'DMA_MAP+DMA_UNMAP pairs/s through the server vs a raw round trip',
  },
  {
    name: 'guarded-copy',
    file: 'guarded-copy-bench.mjs',
    what: 'device DMA copies: unsealed memfd (SIGBUS guard) vs sealed memfd (plain copy)',
  },
  {
    name: 'iommu',
    file: 'iommu-bench.mjs',
    what: 'host map+unmap pairs/s through the server vs raw C ioctls (VM)',
  },
  {
    name: 'nvme',
    file: 'nvme-bench.mjs',
    what: "guest O_DIRECT IOPS on our NVMe (posted, trapped, shadow doorbells) vs QEMU's nvme (VM)",
  },
];
const wanted = process.argv.slice(2);
let failed = 0;
for (const b of benches) {
  if (wanted.length && !wanted.includes(b.name)) continue;
  const file = join(here, b.file);
  console.log(`\n### ${b.name}: ${b.what}`);
  if (!existsSync(file)) {
    console.log('(not present)');
    continue;
  }
  const r = spawnSync(process.execPath, [file], { stdio: 'inherit' });
  if (r.status !== 0) {
    failed++;
    console.log(`(${b.name} exited with ${r.status ?? r.signal})`);
  }
}
process.exit(failed ? 1 : 0);
