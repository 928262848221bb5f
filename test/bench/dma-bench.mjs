#!/usr/bin/env node
// DMA map/unmap benchmark for the vfio-user server engine.
//
// Measures, in one run:
//  1. baseline: raw socket round trips through the addon against a trivial echo server (child process) that
//     answers each 48-byte request (with an fd, closed on receipt) and each 40-byte request with a 16-byte reply:
//     the floor a map+unmap pair cannot beat (two round trips);
//  2. DMA_MAP + DMA_UNMAP pairs per second through a real VfioUserServer (child process, `none` IOMMU backend):
//     4 KiB maps of one memfd, each DMA_MAP carrying a fresh dup of the fd as QEMU does, one request in flight
//     (QEMU outside a memory transaction) and 64 in flight (inside one);
//  3. the address space alone, in process, at 65,535 live 4 KiB fd-backed mappings: map, lookup (find), a
//     4-byte device read through the access API, unmap, per operation.
//
// Usage: node test/bench/dma-bench.mjs [--pairs N] [--json]   (build first: npx tsc -b server)

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as native from 'vfio-user-native';
import {
  Command,
  encodeDmaMapRequest,
  encodeDmaUnmapRequest,
  encodeMessage,
  encodeReplyMessage,
  encodeVersionRequest,
} from 'vfio-user-protocol';

const self = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};

// ---- child processes ------------------------------------------------------------------------------------------

/** A device with nothing behind it: the benchmark only exercises the engine. */
function nullDevice() {
  return {
    flags: 0x3,
    numRegions: 9,
    numIrqs: 5,
    regionInfo: (i) => (i === 7 ? { size: 256n, flags: 3 } : { size: 0n, flags: 0 }),
    irqInfo: () => ({ flags: 1, count: 0 }),
    regionRead: (_i, _o, n) => new Uint8Array(n),
    regionWrite: () => {},
    reset: () => {},
    attach: () => {},
    detach: () => {},
  };
}

async function serveVfio(path, framing) {
  const { VfioUserServer } = await import('vfio-user-server');
  const server = new VfioUserServer({ socketPath: path, device: nullDevice(), framing });
  await server.start();
  process.send?.('ready');
  process.on('message', async (m) => {
    if (m === 'stop') {
      await server.close();
      process.exit(0);
    }
  });
}

function serveEcho(path) {
  const l = native.Listener.listen(path);
  l.start((conn) => {
    conn.start({
      onMessage(data, fds) {
        for (const fd of fds) native.closeFd(fd);
        const id = data.readUInt16LE(0);
        const command = data.readUInt16LE(2);
        conn.send(encodeReplyMessage(id, command));
      },
      onClose() {},
    });
  });
  process.send?.('ready');
  process.on('message', (m) => {
    if (m === 'stop') {
      l.close();
      process.exit(0);
    }
  });
}

// ---- client side ----------------------------------------------------------------------------------------------

function startChild(kind, path, framing = 'exact') {
  const prof =
    process.env.DMA_BENCH_PROFILE && kind === 'vfio'
      ? ['--cpu-prof', `--cpu-prof-dir=${process.env.DMA_BENCH_PROFILE}`]
      : [];
  const child = spawn(process.execPath, [...prof, self, '--serve', kind, path, framing], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child));
    child.once('exit', (code) => reject(new Error(`${kind} server exited with ${code}`)));
  });
}

function stopChild(child) {
  return new Promise((resolve) => {
    child.once('exit', resolve);
    child.send('stop');
  });
}

/** A client that sends requests and resolves each when its reply (same id) arrives. */
function client(path) {
  const conn = native.Connection.connect(path);
  const waiting = new Map();
  let nextId = 0;
  conn.start({
    onMessage(data, fds) {
      for (const fd of fds) native.closeFd(fd);
      const id = data.readUInt16LE(0);
      const w = waiting.get(id);
      if (!w) return;
      waiting.delete(id);
      if (data.readUInt32LE(8) & 0x20) w.reject(new Error(`error reply ${data.readUInt32LE(12)}`));
      else w.resolve();
    },
    onClose() {},
  });
  return {
    request(command, payload, fds) {
      const id = nextId++ & 0xffff;
      return new Promise((resolve, reject) => {
        waiting.set(id, { resolve, reject });
        conn.send(encodeMessage({ id, command }, payload), fds);
        if (fds) for (const fd of fds) native.closeFd(fd);
      });
    },
    close: () => conn.close(),
  };
}

const MAP = (i) =>
  encodeDmaMapRequest({ flags: 3, offset: BigInt(i % 256) * 4096n, address: BigInt(i) * 4096n, size: 4096n });
const UNMAP = (i) => encodeDmaUnmapRequest({ flags: 0, address: BigInt(i) * 4096n, size: 4096n });

/** `pairs` map+unmap pairs with at most `depth` pairs in flight; returns pairs per second. */
async function runPairs(c, memfd, pairs, depth) {
  let next = 0;
  const t0 = process.hrtime.bigint();
  async function worker() {
    while (next < pairs) {
      const i = next++;
      await c.request(Command.DMA_MAP, MAP(i), [native.dupFd(memfd)]);
      await c.request(Command.DMA_UNMAP, UNMAP(i));
    }
  }
  await Promise.all(Array.from({ length: depth }, worker));
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return pairs / s;
}

function inProcess65535(DmaAddressSpace) {
  return (async () => {
    const memfd = native.memfdCreate('bench-ram', 256 * 1024 * 1024);
    // Populate the file first: guest RAM is normally touched already, and a first-touch page fault per read
    // would measure the kernel's page allocation, not the lookup.
    const chunk = new Uint8Array(1 << 20).fill(1);
    for (let off = 0; off < 256; off++) native.pwrite(memfd, chunk, BigInt(off) << 20n);
    const s = new DmaAddressSpace();
    const n = 65535;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      await s.map({
        iova: BigInt(i) * 4096n,
        size: 4096n,
        prot: 3,
        fd: native.dupFd(memfd),
        fileOffset: BigInt(i) * 4096n,
      });
    }
    const t1 = process.hrtime.bigint();
    const probes = Array.from({ length: 100000 }, (_, k) => BigInt((k * 7919) % n) * 4096n + 8n);
    const t2 = process.hrtime.bigint();
    let hits = 0;
    for (const p of probes) if (s.find(p)) hits++;
    const t3 = process.hrtime.bigint();
    // First touches fault the pages into this process's page tables: do that untimed, then time a second pass.
    for (let k = 0; k < 20000; k++) await s.read(probes[k], 4);
    const t3b = process.hrtime.bigint();
    for (let k = 0; k < 20000; k++) await s.read(probes[k], 4);
    const t4 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await s.unmap(BigInt(i) * 4096n, 4096n);
    const t5 = process.hrtime.bigint();
    if (hits !== probes.length) throw new Error('lookup missed');
    const snap = s.snapshot();
    native.closeFd(memfd);
    const us = (a, b, k) => Number(b - a) / 1000 / k;
    return {
      mapUs: us(t0, t1, n),
      findUs: us(t2, t3, probes.length),
      readUs: us(t3b, t4, 20000),
      firstTouchReadUs: us(t3, t3b, 20000),
      unmapUs: us(t4, t5, n),
      mappingsAfter: snap.mappings,
    };
  })();
}

async function main() {
  const pairs = opt('--pairs', 20000);
  const dir = mkdtempSync(join(tmpdir(), 'dma-bench-'));
  const memfd = native.memfdCreate('bench-guest', 1024 * 1024);
  const results = {};
  try {
    // 1. baseline
    const echoPath = join(dir, 'echo.sock');
    const echo = await startChild('echo', echoPath);
    const ec = client(echoPath);
    await runPairs(ec, memfd, 2000, 1); // warm-up
    results.baselinePairsPerSec = await runPairs(ec, memfd, pairs, 1);
    results.baselinePairsPerSecDepth64 = await runPairs(ec, memfd, pairs, 64);
    ec.close();
    await stopChild(echo);

    // 2. the server, with each framing mode of the addon
    for (const framing of ['exact', 'bulk']) {
      const vfioPath = join(dir, `vfio-${framing}.sock`);
      const srv = await startChild('vfio', vfioPath, framing);
      const vc = client(vfioPath);
      await vc.request(Command.VERSION, encodeVersionRequest({ major: 0, minor: 0 }));
      // Guest RAM stays mapped while the vIOMMU maps and unmaps pages of it (the realistic pattern): the file's
      // mapping then lives on between pairs. Without it every pair would also mmap/munmap the file.
      await vc.request(
        Command.DMA_MAP,
        encodeDmaMapRequest({ flags: 3, offset: 0n, address: 1n << 40n, size: 1n << 20n }),
        [native.dupFd(memfd)],
      );
      await runPairs(vc, memfd, 2000, 1); // warm-up
      results[`server_${framing}`] = {
        depth1: await runPairs(vc, memfd, pairs, 1),
        depth64: await runPairs(vc, memfd, pairs, 64),
      };
      vc.close();
      await stopChild(srv);
    }

    // 3. in process, 65,535 live mappings
    const { DmaAddressSpace } = await import('vfio-user-server');
    results.at65535 = await inProcess65535(DmaAddressSpace);
  } finally {
    native.closeFd(memfd);
    rmSync(dir, { recursive: true, force: true });
  }

  if (args.includes('--json')) {
    console.log(JSON.stringify(results));
    return;
  }
  const r = results;
  const f = (x) => Math.round(x).toLocaleString('en-US');
  const pct = (a, b) => `${((a / b) * 100).toFixed(0)} %`;
  console.log(`DMA_MAP+DMA_UNMAP pairs/s, 4 KiB maps of one memfd, fresh dup fd per map (${pairs} pairs)`);
  console.log('| case | 1 in flight | 64 in flight |');
  console.log('|---|---|---|');
  console.log(
    `| raw socket baseline (2 round trips, echo server) | ${f(r.baselinePairsPerSec)} | ${f(r.baselinePairsPerSecDepth64)} |`,
  );
  for (const framing of ['exact', 'bulk']) {
    const x = r[`server_${framing}`];
    console.log(`| vfio-user server, none backend, ${framing} framing | ${f(x.depth1)} | ${f(x.depth64)} |`);
    console.log(
      `| ... / baseline | ${pct(x.depth1, r.baselinePairsPerSec)} | ${pct(x.depth64, r.baselinePairsPerSecDepth64)} |`,
    );
  }
  const a = r.at65535;
  console.log('\nAddress space at 65,535 live 4 KiB fd-backed mappings (one memfd), per operation:');
  console.log(
    `  map ${a.mapUs.toFixed(2)} us, lookup ${a.findUs.toFixed(3)} us, 4-byte read ${a.readUs.toFixed(2)} us ` +
      `(${a.firstTouchReadUs.toFixed(2)} us on a page's first touch), unmap ${a.unmapUs.toFixed(2)} us`,
  );
}

if (args[0] === '--serve') {
  if (args[1] === 'vfio') await serveVfio(args[2], args[3]);
  else serveEcho(args[2]);
} else {
  await main();
}
