#!/usr/bin/env node
// Cost of the SIGBUS guard on device DMA (docs/hardening.md). In one run, through the address space's access API
// (DmaAddressSpace.read/write, the path device models use), for a region of a memfd sealed with F_SEAL_SHRINK
// (the baseline: a plain typed-array copy, as for QEMU's memory-backend-memfd) and of the same kind of memfd
// unsealed (every copy through the addon's guardedCopy), at 64 B, 4 KiB and 64 KiB. Reported: ns per access and
// the ratio guarded / sealed.
//
// Usage: node test/bench/guarded-copy-bench.mjs [--iters N] [--json]   (build first: npx tsc -b)
import * as native from 'vfio-user-native';
import { DmaAddressSpace } from 'vfio-user-server';

const args = process.argv.slice(2);
const iters = Number(args[args.indexOf('--iters') + 1] || 0) || 200_000;
const SIZE = 1 << 20;

async function space(sealed) {
  const fd = native.memfdCreate(sealed ? 'bench-sealed' : 'bench-unsealed', SIZE);
  native.pwrite(fd, new Uint8Array(SIZE).fill(7), 0n); // populated: measure copies, not first-touch faults
  if (sealed) native.addSeals(fd, native.F_SEAL_SHRINK | native.F_SEAL_GROW);
  const s = new DmaAddressSpace();
  await s.map({ iova: 0x100000n, size: BigInt(SIZE), prot: 3, fd, fileOffset: 0n });
  return s;
}

async function time(s, len, write) {
  const buf = new Uint8Array(len).fill(1);
  const n = Math.max(1000, Math.floor(iters / Math.max(1, len / 4096)));
  const step = async (k) => {
    const iova = 0x100000n + BigInt((k * 4096) % (SIZE - len));
    if (write) await s.write(iova, buf);
    else await s.read(iova, len);
  };
  for (let k = 0; k < 2000; k++) await step(k); // warm-up
  const t0 = process.hrtime.bigint();
  for (let k = 0; k < n; k++) await step(k);
  return Number(process.hrtime.bigint() - t0) / n;
}

const sealed = await space(true);
const unsealed = await space(false);
const rows = [];
for (const len of [64, 4096, 65536]) {
  for (const write of [false, true]) {
    // Interleave to share whatever else the machine is doing.
    const a = await time(sealed, len, write);
    const b = await time(unsealed, len, write);
    const a2 = await time(sealed, len, write);
    const b2 = await time(unsealed, len, write);
    const base = Math.min(a, a2);
    const guarded = Math.min(b, b2);
    rows.push({
      op: write ? 'write' : 'read',
      len,
      sealedNs: base,
      guardedNs: guarded,
      ratio: guarded / base,
    });
  }
}
await sealed.close();
await unsealed.close();
if (args.includes('--json')) console.log(JSON.stringify(rows));
else {
  console.log('op     bytes   sealed (plain) ns   unsealed (guarded) ns   ratio');
  for (const r of rows) {
    console.log(
      `${r.op.padEnd(6)} ${String(r.len).padStart(6)}   ${r.sealedNs.toFixed(0).padStart(17)}   ${r.guardedNs
        .toFixed(0)
        .padStart(21)}   ${r.ratio.toFixed(2)}`,
    );
  }
}
