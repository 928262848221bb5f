#!/usr/bin/env node
// Round-trip latency of the vfio-user-native socket path against the C-to-C kernel floor.
// A C client (one outstanding 24-byte request, 16-byte reply) talks to: a blocking C echo server (the floor),
// and the addon server (node native-rtt-server.mjs) with bulk and exact framing, and answering in place
// (onInboxMessage returns the reply's length: the floor of the session's fast path). Everything is pinned to CPU 0
// with taskset (when available), so cross-CPU wake-ups do not dominate. Prints median/p99 µs, the ratio to the
// floor, and the server's CPU time per round trip (from /proc/<pid>/stat).
//
// Usage: node test/bench/native-rtt.mjs [--iterations N] [--warmup N] [--json]
// Export: run({iterations, warmup}) -> results[]
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function hasTaskset() {
  return spawnSync('taskset', ['-c', '0', 'true']).status === 0;
}

function pinned(cmd, args, pin) {
  return pin ? ['taskset', ['-c', '0', cmd, ...args]] : [cmd, args];
}

function cpuTicks(pid) {
  // utime and stime are fields 14 and 15; the command name (field 2) may contain spaces, so split after ')'.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

const clkTck = Number(spawnSync('getconf', ['CLK_TCK']).stdout?.toString().trim()) || 100;

function startServer(cmd, args, pin) {
  const [c, a] = pinned(cmd, args, pin);
  const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('ready')) resolve();
    });
    child.on('error', reject);
    child.on('exit', (code) => reject(new Error(`server exited early (${code})`)));
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  return { child, ready, exited };
}

async function measure(name, serverCmd, serverArgs, client, sock, opts) {
  const srv = startServer(serverCmd, serverArgs, opts.pin);
  await srv.ready;
  // The server's pid: with taskset it execs in place, so the child pid is the server's.
  const pid = srv.child.pid;
  const t0 = cpuTicks(pid);
  const [c, a] = pinned(client, [sock, String(opts.warmup), String(opts.iterations)], opts.pin);
  const out = execFileSync(c, a, { encoding: 'utf8' });
  let t1 = t0;
  try {
    t1 = cpuTicks(pid);
  } catch {
    // already gone
  }
  await srv.exited;
  const r = JSON.parse(out.trim());
  const total = opts.warmup + opts.iterations;
  return { name, ...r, serverCpuUsPerMsg: (((t1 - t0) / clkTck) * 1e6) / total };
}

export async function run({ iterations = 100000, warmup = 10000 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'vu-bench-'));
  try {
    const client = join(dir, 'client');
    const server = join(dir, 'server');
    execFileSync('gcc', ['-O2', '-o', client, join(here, 'native-rtt-client.c')]);
    execFileSync('gcc', ['-O2', '-o', server, join(here, 'native-rtt-server.c')]);
    const addonServer = join(here, 'native-rtt-server.mjs');
    if (!existsSync(join(here, '..', '..', 'server', 'native', 'dist', 'lib', 'index.js'))) {
      throw new Error('build first: node server/native/scripts/build.mjs && npx tsc -b server/native');
    }
    const pin = hasTaskset();
    const opts = { iterations, warmup, pin };
    const sock = join(dir, 'rtt.sock');
    const results = [];
    results.push(await measure('C client -> C server (floor)', server, [sock], client, sock, opts));
    for (const mode of ['bulk', 'exact', 'inplace']) {
      results.push(
        await measure(
          `C client -> addon server (${mode})`,
          process.execPath,
          [addonServer, sock, mode],
          client,
          sock,
          opts,
        ),
      );
    }
    const floor = results[0];
    for (const r of results) r.ratioToFloor = r.medianUs / floor.medianUs;
    return { pinned: pin, iterations, warmup, results };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const res = await run({ iterations: arg('--iterations', 100000), warmup: arg('--warmup', 10000) });
  if (process.argv.includes('--json')) {
    console.log(JSON.stringify(res, null, 2));
  } else {
    console.log(
      `native-rtt: ${res.iterations} round trips after ${res.warmup} warm-up, 24 B request / 16 B reply, ` +
        `${res.pinned ? 'pinned with taskset -c 0' : 'NOT pinned (taskset missing)'}`,
    );
    console.log(
      `${'case'.padEnd(36)} ${'median µs'.padStart(10)} ${'p99 µs'.padStart(10)} ${'x floor'.padStart(8)} ${'srv CPU µs/msg'.padStart(15)}`,
    );
    for (const r of res.results) {
      console.log(
        `${r.name.padEnd(36)} ${r.medianUs.toFixed(2).padStart(10)} ${r.p99Us.toFixed(2).padStart(10)} ` +
          `${r.ratioToFloor.toFixed(2).padStart(8)} ${r.serverCpuUsPerMsg.toFixed(2).padStart(15)}`,
      );
    }
  }
}
