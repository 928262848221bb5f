#!/usr/bin/env node
// Runs every test suite of the project, each in its own process, and ends with ONE summary line
// `N passed, N failed` (totals over every suite) that CI reads.
//
// A suite is a command whose output ends with either uvu's summary (Total/Passed/Skipped) or a plain
// `N passed, N failed[, N skipped]` line. A suite that exits non-zero without reporting a failure counts as one
// failure, so a crash can never look green.
//
// Usage: node test/run-all.mjs [suite ...]   (default: every suite; names below)
//
// The tests run from compiled `dist` folders, so the runner first brings them up to date (`tsc -b`, incremental:
// about a second when nothing changed): a forgotten build can never run stale tests. VFIO_USER_TEST_NO_BUILD=1
// skips that (for a caller that has just built, like `make test`).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const uvu = join(root, 'node_modules', 'uvu', 'bin.js');

/** Directories holding compiled tests, by suite. */
// Every suite has a time limit: a hung suite is killed and counted as a failure, so CI never runs into its
// own 90-minute cap with nothing to show.
const DEFAULT_LIMIT_S = 15 * 60;

function uvuSuite(name, dir, pattern = '\\.test\\.js$', env = {}, limitS = DEFAULT_LIMIT_S) {
  return { name, cmd: process.execPath, args: [uvu, dir, pattern], env, dir, limitS };
}

function findFiles(dir, re) {
  if (!existsSync(dir)) return [];
  const out = [];
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry);
    if (statSync(p).isDirectory()) out.push(...findFiles(p, re));
    else if (re.test(entry)) out.push(p);
  }
  return out;
}

const suites = [
  uvuSuite('protocol', 'protocol/dist/test', undefined, {}, 300),
  uvuSuite('native', 'server/native/dist/test', undefined, {}, 300),
  {
    // The same native tests against the AddressSanitizer/UBSan build of the addon.
    ...uvuSuite('native-asan', 'server/native/dist/test', '\\.test\\.js$', {
      VFIO_USER_NATIVE_BUILD: 'asan',
      ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1',
      UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
    }),
    preload: ['libasan.so', 'libubsan.so'],
    // The npm install script builds only the plain addon; the sanitizer variant is the tests' business
    // (incremental: nothing is spawned when it is current).
    prepare: [process.execPath, [join(root, 'server', 'native', 'scripts', 'build.mjs'), '--asan']],
  },
  uvuSuite('server', 'server/dist/test', undefined, {}, 300),
  uvuSuite('client', 'client/dist/test', undefined, {}, 300),
  // Pack every package, install the tarballs into an empty folder offline, import, type-check and run the bins.
  uvuSuite('package', 'test/dist/package', undefined, {}, 420),
  uvuSuite('integration', 'test/dist/integration', undefined, {}, 300),
  // The bounded slice of the coverage-guided fuzzers (test/fuzz): fixed seed, fixed executions per target.
  uvuSuite('fuzz', 'test/dist/fuzz', undefined, {}, 300),
  // examples/: the example device under the real CLI, its client script, and the conformance suite against it.
  uvuSuite('examples', 'test/dist/examples', undefined, {}, 300),
  uvuSuite('qemu', 'test/dist/qemu', undefined, {}, 300),
  uvuSuite('conformance', 'test/dist/conformance'),
  // 25 min: the NVMe guest tests add four boots (ours and the control, each twice for persistence).
  uvuSuite('vm', 'test/dist/vm', undefined, {}, 1500),
];

function gccFile(name) {
  return new Promise((resolve) => {
    const p = spawn('gcc', [`-print-file-name=${name}`]);
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.on('close', () => resolve(out.trim()));
    p.on('error', () => resolve(''));
  });
}

function parseCounts(text) {
  // The last summary in the output wins.
  let passed = null;
  let failed = null;
  let skipped = 0;
  const plain = [...text.matchAll(/^(?:\w+:\s*)?(\d+) passed, (\d+) failed(?:, (\d+) skipped)?\s*$/gm)];
  const total = [...text.matchAll(/^\s*Total:\s+(\d+)/gm)];
  const pass = [...text.matchAll(/^\s*Passed:\s+(\d+)/gm)];
  const skip = [...text.matchAll(/^\s*Skipped:\s+(\d+)/gm)];
  if (total.length && pass.length) {
    const t = Number(total.at(-1)[1]);
    passed = Number(pass.at(-1)[1]);
    failed = t - passed;
    skipped = skip.length ? Number(skip.at(-1)[1]) : 0;
  } else if (plain.length) {
    const m = plain.at(-1);
    passed = Number(m[1]);
    failed = Number(m[2]);
    skipped = m[3] ? Number(m[3]) : 0;
  }
  return { passed, failed, skipped };
}

async function runSuite(s) {
  const files = findFiles(join(root, s.dir), new RegExp(s.args[2]));
  if (files.length === 0) {
    console.log(`\n=== ${s.name}: no compiled tests under ${s.dir} (not built yet)`);
    return { passed: 0, failed: 0, skipped: 0, ran: false };
  }
  const env = { ...process.env, ...s.env };
  if (s.prepare) {
    const [cmd, args] = s.prepare;
    const ok = await new Promise((resolve) => {
      const p = spawn(cmd, args, { cwd: root, stdio: 'inherit' });
      p.on('close', (code) => resolve(code === 0));
      p.on('error', () => resolve(false));
    });
    if (!ok) {
      console.log(`\n=== ${s.name}: preparing it failed (${[cmd, ...args].join(' ')})`);
      return { passed: 0, failed: 1, skipped: 0, ran: true };
    }
  }
  if (s.preload) {
    const libs = await Promise.all(s.preload.map(gccFile));
    if (libs.some((l) => !l.startsWith('/'))) {
      console.log(`\n=== ${s.name}: sanitizer runtimes not found (${libs.join(' ')})`);
      return { passed: 0, failed: 1, skipped: 0, ran: true };
    }
    env.LD_PRELOAD = libs.join(':');
  }
  console.log(`\n=== ${s.name}: ${files.length} file(s) in ${relative(root, join(root, s.dir))}`);
  const started = Date.now();
  return await new Promise((resolve) => {
    const p = spawn(s.cmd, s.args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let text = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      console.log(`=== ${s.name}: still running after ${s.limitS}s; killing it`);
      try {
        process.kill(-p.pid, 'SIGKILL'); // the whole process group: QEMU and servers the tests started
      } catch {
        p.kill('SIGKILL');
      }
    }, s.limitS * 1000);
    p.stdout.on('data', (d) => {
      process.stdout.write(d);
      text += d;
    });
    p.stderr.on('data', (d) => {
      process.stderr.write(d);
      text += d;
    });
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      const c = parseCounts(text);
      let { passed, failed, skipped } = c;
      if (passed === null) {
        passed = 0;
        failed = 1;
      }
      if ((code !== 0 || signal || timedOut) && failed === 0) failed = 1;
      const secs = ((Date.now() - started) / 1000).toFixed(1);
      console.log(
        `=== ${s.name}: ${passed} passed, ${failed} failed, ${skipped} skipped in ${secs}s (exit ${code ?? signal})`,
      );
      resolve({ passed, failed, skipped, ran: true });
    });
  });
}

const wanted = process.argv.slice(2);
for (const w of wanted) {
  if (!suites.some((s) => s.name === w)) {
    console.error(`unknown suite '${w}'; suites: ${suites.map((s) => s.name).join(' ')}`);
    process.exit(2);
  }
}
const chosen = wanted.length ? suites.filter((s) => wanted.includes(s.name)) : suites;
if (process.env.VFIO_USER_TEST_NO_BUILD !== '1') {
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  const b = spawnSync(process.execPath, [tsc, '-b'], { cwd: root, stdio: 'inherit' });
  if (b.status !== 0) {
    console.log('=== build: tsc -b failed; no suite run');
    console.log('0 passed, 1 failed, 0 skipped');
    process.exit(1);
  }
}
let passed = 0;
let failed = 0;
let skipped = 0;
const lines = [];
for (const s of chosen) {
  const r = await runSuite(s);
  passed += r.passed;
  failed += r.failed;
  skipped += r.skipped;
  lines.push(
    `  ${s.name.padEnd(12)} ${r.ran ? `${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped` : 'not run'}`,
  );
}
console.log('\nSuites:');
for (const l of lines) console.log(l);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
