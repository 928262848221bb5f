#!/usr/bin/env node
// The hot paths of the server against their in-run floors (`make bench`, issue: region round trip, DMA map/unmap,
// huge maps). One C client (vfio-user-bench-client.c, QEMU-like: blocking, one process) talks to
//   - the C echo server (native-rtt-server.c: reads each message exactly, answers a 16-byte header): the floor;
//   - the addon's echo answering in place (native-rtt-server.mjs inplace): the event-loop floor of this design;
//   - our server, the real CLI (`vfio-user-server --device edu --iommu none`);
//   - optionally other vfio-user servers, VFIO_USER_BENCH_OTHER="name=command args...;name2=..." (started as
//     `command args... <socket>`): another checkout of this project (before/after), or a reference
//     implementation's sample built outside this repository.
// Everything is pinned to CPU 0 (taskset -c 0) so cross-CPU wake-ups do not dominate, and every figure is a ratio
// to the floor measured in the same run. Times are noisy on a shared machine; the syscall counts are not: each
// server is run once more under `strace -c -f` with W and W+N operations, and the difference divided by N is the
// syscalls per message (or per map+unmap pair), with the top syscalls listed. With --callgrind each server is also
// run under `valgrind --tool=callgrind` the same way (W and W+N operations): the difference in the instructions it
// executed (all threads) divided by N is the instructions per message or pair, a figure that, unlike time, does
// not depend on what else the machine is doing.
//
// Figures:
//   rtt    REGION_READ of 4 bytes of config space (region 7, offset 0), one outstanding: median/p99 µs, x floor;
//          our server answers those in the addon (docs/architecture.md, "Direct reads"), so it is measured once
//          more reading edu's BAR0 identification register, which the device model answers in JS;
//   dma    DMA_MAP + DMA_UNMAP of 4 KiB of one memfd (sent with every map), 1 and 64 pairs in flight: pairs/s,
//          x floor, syscalls per pair;
//   huge   one DMA_MAP (and DMA_UNMAP) of a 1 TiB sparse memfd: ms.
//
// Usage: node test/bench/hot-paths.mjs [--quick] [--json] [--no-strace] [--callgrind] [--only rtt,dma,huge]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
// Timed figures are taken in ROUNDS rounds, each running every server once in turn (rtt and dma counts are per
// round), so that a change in the machine's load hits every server alike; each round's figure is divided by the
// floor's in the same round, and the median and best of those ratios are reported.
const ROUNDS = quick ? 2 : 5;
// Warm-ups long enough for steady state: a server's DMA path was still 30% slower after 3,000 pairs than after
// 30,000 (V8 optimises the map/unmap handlers late), and a vIOMMU guest maps millions of pages.
const N = {
  rttWarm: quick ? 2000 : 20000,
  rtt: quick ? 10000 : 20000,
  dmaWarm: quick ? 1000 : 30000,
  dma: quick ? 5000 : 10000,
  straceWarm: 1000,
  strace: quick ? 2000 : 5000,
  cgWarm: 2000,
  cg: quick ? 2000 : 5000,
};
const pin = spawnSync('taskset', ['-c', '0', 'true']).status === 0;
const haveStrace = !args.includes('--no-strace') && spawnSync('strace', ['-V']).status === 0;
const wantCallgrind = args.includes('--callgrind');
if (wantCallgrind && spawnSync('valgrind', ['--version']).status !== 0)
  throw new Error('--callgrind needs valgrind (Debian package valgrind)');
const onlyAt = args.indexOf('--only');
const only = new Set(onlyAt >= 0 ? (args[onlyAt + 1] ?? '').split(',') : ['rtt', 'dma', 'huge']);

function pinned(cmd, argv) {
  return pin ? ['taskset', ['-c', '0', cmd, ...argv]] : [cmd, argv];
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Starts a server on `sock` and resolves once the socket exists; `tool` runs it under strace -c
 * ({ strace: file }) or callgrind ({ callgrind: file }, which execs the server in the same process).
 */
async function startServer(kind, sock, tool = {}) {
  let [cmd, argv] = kind.cmd(sock);
  if (tool.strace) [cmd, argv] = ['strace', ['-c', '-f', '-o', tool.strace, cmd, ...argv]];
  if (tool.callgrind)
    [cmd, argv] = [
      'valgrind',
      ['-q', '--tool=callgrind', `--callgrind-out-file=${tool.callgrind}`, cmd, ...argv],
    ];
  [cmd, argv] = pinned(cmd, argv);
  const child = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const ticks = tool.callgrind ? 24000 : 600; // valgrind starts Node.js slowly (minutes on a loaded machine)
  for (let i = 0; i < ticks && !existsSync(sock); i++) await sleep(25);
  if (!existsSync(sock)) throw new Error(`${kind.name}: no socket after ${ticks / 40} s`);
  return { child, exited, traced: !!tool.strace };
}

/** The process to signal: the server itself, not taskset/strace in front of it (strace ignores SIGTERM). */
function serverPid(s) {
  const pid = s.child.pid;
  if (!s.traced) return pid;
  for (let i = 0; i < 100; i++) {
    try {
      const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/);
      if (kids[0]) return Number(kids[0]);
    } catch {
      break;
    }
  }
  return pid;
}

async function stopServer(kind, s) {
  if (kind.exitsAtEof) {
    // Give it a moment to see the EOF; SIGTERM otherwise.
    const t = setTimeout(() => process.kill(serverPid(s), 'SIGTERM'), 2000);
    await s.exited;
    clearTimeout(t);
  } else {
    process.kill(serverPid(s), 'SIGTERM');
    await s.exited;
  }
}

async function client(bin, sock, argv) {
  const [c, a] = pinned(bin, [sock, ...argv]);
  // The socket file exists from bind(); under valgrind listen() may come much later: retry a refused connect.
  for (let tries = 0; ; tries++) {
    const r = spawnSync(c, a, { encoding: 'utf8' });
    if (r.status === 0) return JSON.parse(r.stdout.trim());
    if (!/Connection refused/.test(r.stderr) || tries >= 600)
      throw new Error(`${bin} ${argv.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
    await sleep(100);
  }
}

/** One server lifetime: run the client with `argv`, return its JSON. */
async function once(kind, dir, bin, argv, tool) {
  const sock = join(dir, `${kind.name}-${Math.random().toString(36).slice(2)}.sock`);
  const s = await startServer(kind, sock, tool);
  try {
    return await client(bin, sock, argv);
  } finally {
    await stopServer(kind, s);
    rmSync(sock, { force: true });
  }
}

/** Parses `strace -c` output: { total, bySyscall }. */
function parseStrace(file) {
  const by = {};
  let total = 0;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = line.trim().match(/^[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$/);
    if (!m || m[2] === 'total') continue;
    by[m[2]] = Number(m[1]);
    total += Number(m[1]);
  }
  return { total, by };
}

/** Syscalls per operation: (run with W+N ops) - (run with W ops), divided by N. */
async function syscallsPer(kind, dir, bin, mkArgv) {
  if (!haveStrace) return undefined;
  const a = join(dir, 'strace-a.txt');
  const b = join(dir, 'strace-b.txt');
  await once(kind, dir, bin, mkArgv(N.straceWarm, 0), { strace: a });
  await once(kind, dir, bin, mkArgv(N.straceWarm, N.strace), { strace: b });
  const x = parseStrace(a);
  const y = parseStrace(b);
  const top = Object.keys(y.by)
    .map((k) => [k, (y.by[k] - (x.by[k] ?? 0)) / N.strace])
    .filter(([, v]) => v >= 0.05)
    .sort((p, q) => q[1] - p[1])
    .map(([k, v]) => `${k} ${v.toFixed(2)}`);
  return { perOp: (y.total - x.total) / N.strace, top };
}

/** The instructions a callgrind output file counted (all threads). */
function callgrindTotal(file) {
  const m = readFileSync(file, 'utf8').match(/^(?:summary|totals): (\d+)/m);
  if (!m) throw new Error(`no totals in ${file}`);
  return Number(m[1]);
}

/** Instructions per operation under callgrind: (run with W+N ops) - (run with W ops), divided by N. */
async function instructionsPer(kind, dir, bin, mkArgv, n = N.cg) {
  if (!wantCallgrind) return undefined;
  const a = join(dir, 'cg-a.out');
  const b = join(dir, 'cg-b.out');
  await once(kind, dir, bin, mkArgv(N.cgWarm, 0), { callgrind: a });
  await once(kind, dir, bin, mkArgv(N.cgWarm, n), { callgrind: b });
  return (callgrindTotal(b) - callgrindTotal(a)) / n;
}

export async function run() {
  const dir = mkdtempSync(join(tmpdir(), 'vu-hot-'));
  try {
    const bin = join(dir, 'client');
    const echo = join(dir, 'echo');
    execFileSync('gcc', ['-O2', '-o', bin, join(here, 'vfio-user-bench-client.c')]);
    execFileSync('gcc', ['-O2', '-o', echo, join(here, 'native-rtt-server.c')]);
    const cli = join(root, 'server', 'bin', 'vfio-user-server.js');
    if (!existsSync(join(root, 'server', 'dist', 'src', 'cli.js')))
      throw new Error('build first: npx tsc -b');
    const kinds = [
      { name: 'floor', label: 'C echo server (floor)', cmd: (s) => [echo, [s]], exitsAtEof: true },
      // What any server on this design pays before doing any work: the addon, the event loop and one JS callback
      // that answers each message in place (native-rtt-server.mjs inplace), no protocol at all.
      {
        name: 'loop',
        label: 'addon echo in place (event-loop floor)',
        cmd: (s) => [process.execPath, [join(here, 'native-rtt-server.mjs'), s, 'inplace']],
        exitsAtEof: true,
      },
      {
        name: 'ours',
        label: 'vfio-user-server (edu)',
        cmd: (s) => [
          process.execPath,
          [cli, '--socket-path', s, '--device', 'edu', '--iommu', 'none', '--log-level', 'warn'],
        ],
      },
    ];
    // More servers to compare in the same run: "name=command arg...;name2=..." (the socket path is appended).
    for (const entry of (process.env.VFIO_USER_BENCH_OTHER ?? '').split(';').filter(Boolean)) {
      const eq = entry.indexOf('=');
      const [cmd, ...rest] = entry
        .slice(eq + 1)
        .trim()
        .split(/\s+/);
      const name = entry.slice(0, eq);
      kinds.push({ name: name.replace(/\W/g, '_'), label: name, cmd: (s) => [cmd, [...rest, s]] });
    }
    const out = { pinned: pin, n: N, rounds: ROUNDS, rtt: [], dma: [], huge: [] };
    // The timed rows, in the order they are printed: rtt per server (ours twice: config space, then a BAR0
    // register its device model answers in JS), then dma per server and depth.
    const rttArgs = (region) => (w, n) => ['rtt', String(region), '0', '4', String(w), String(n)];
    const dmaArgs = (depth) => (w, n) => ['dma', String(w), String(n), String(depth)];
    const rows = [];
    for (const k of kinds) {
      if (!only.has('rtt')) break;
      rows.push({ kind: k, fig: 'rtt', server: k.label, args: rttArgs(7), n: [N.rttWarm, N.rtt] });
      if (k.name === 'ours')
        rows.push({
          kind: k,
          fig: 'rtt',
          server: `${k.label}, BAR0 register (device model in JS)`,
          args: rttArgs(0),
          n: [N.rttWarm, N.rtt],
        });
    }
    for (const k of kinds) {
      if (!only.has('dma')) break;
      for (const depth of [1, 64])
        rows.push({
          kind: k,
          fig: 'dma',
          server: k.label,
          depth,
          args: dmaArgs(depth),
          n: [N.dmaWarm, N.dma],
        });
    }
    for (const row of rows) row.runs = [];
    for (let round = 0; round < ROUNDS; round++)
      for (const row of rows) row.runs.push(await once(row.kind, dir, bin, row.args(...row.n)));
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];
    for (const row of rows) {
      const floor = rows.find((x) => x.fig === row.fig && x.depth === row.depth);
      const syscalls = await syscallsPer(row.kind, dir, bin, row.args);
      const instructions = await instructionsPer(row.kind, dir, bin, row.args);
      if (row.fig === 'rtt') {
        const ratios = row.runs.map((r, i) => r.medianUs / floor.runs[i].medianUs);
        out.rtt.push({
          server: row.server,
          medianUs: median(row.runs.map((r) => r.medianUs)),
          p99Us: median(row.runs.map((r) => r.p99Us)),
          ratio: median(ratios),
          best: Math.min(...ratios),
          p99Ratio: median(row.runs.map((r, i) => r.p99Us / floor.runs[i].p99Us)),
          syscalls,
          instructions,
        });
      } else {
        const ratios = row.runs.map((r, i) => r.pairsPerSec / floor.runs[i].pairsPerSec);
        out.dma.push({
          server: row.server,
          depth: row.depth,
          pairsPerSec: median(row.runs.map((r) => r.pairsPerSec)),
          ratio: median(ratios),
          best: Math.max(...ratios),
          syscalls,
          instructions,
        });
      }
    }
    for (const k of kinds)
      if (only.has('huge') && k.name !== 'floor')
        out.huge.push({ server: k.label, ...(await once(k, dir, bin, ['huge', '1024'])) });
    return out;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function print(r) {
  console.log(
    `hot paths, C client, ${r.pinned ? 'client and server pinned to CPU 0 (taskset -c 0)' : 'NOT pinned (no taskset)'}`,
  );
  const sc = (s) => (s ? `${s.perOp.toFixed(1)} (${s.top.slice(0, 5).join(', ')})` : 'n/a');
  const ins = (v) => (v === undefined ? 'n/a' : Math.round(v).toLocaleString('en')); // --callgrind
  if (r.rtt.length) {
    console.log(
      `\nREGION_READ 4 B of config space, one outstanding, ${r.rounds} rounds of ${r.n.rtt} after ${r.n.rttWarm} warm-up (µs: median of the rounds; x floor: median of the rounds' ratios, best in brackets)`,
    );
    console.log(
      '| server | p50 µs | p99 µs | p50 x floor | p99 x floor | syscalls per message | instructions per message |',
    );
    console.log('|---|---|---|---|---|---|---|');
    for (const x of r.rtt) {
      console.log(
        `| ${x.server} | ${x.medianUs.toFixed(2)} | ${x.p99Us.toFixed(2)} | ${x.ratio.toFixed(2)} (${x.best.toFixed(2)}) | ${x.p99Ratio.toFixed(2)} | ${sc(x.syscalls)} | ${ins(x.instructions)} |`,
      );
    }
  }
  if (r.dma.length) {
    console.log(
      `\nDMA_MAP + DMA_UNMAP, 4 KiB of one 1 MiB memfd sent with every map, ${r.rounds} rounds of ${r.n.dma} pairs (pairs/s: median of the rounds; x floor: median of the rounds' ratios, best in brackets)`,
    );
    console.log('| server | in flight | pairs/s | x floor | syscalls per pair | instructions per pair |');
    console.log('|---|---|---|---|---|---|');
    for (const x of r.dma) {
      console.log(
        `| ${x.server} | ${x.depth} | ${Math.round(x.pairsPerSec)} | ${x.ratio.toFixed(2)} (${x.best.toFixed(2)}) | ${sc(x.syscalls)} | ${ins(x.instructions)} |`,
      );
    }
  }
  if (r.huge.length) console.log('\nOne DMA_MAP + DMA_UNMAP of a 1 TiB sparse memfd');
  for (const x of r.huge)
    console.log(`  ${x.server}: map ${x.mapMs.toFixed(1)} ms, unmap ${x.unmapMs.toFixed(1)} ms`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const r = await run();
  if (args.includes('--json')) console.log(JSON.stringify(r, null, 2));
  else print(r);
}
