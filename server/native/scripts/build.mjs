#!/usr/bin/env node
// Builds the vfio-user-native addon, offline:
//   build/Release/vfio_user_native.node  with the node-gyp that npm bundles, against the local Node headers
//                                        (--nodedir=<prefix> when <prefix>/include/node/node_api.h exists);
//   build/asan/vfio_user_native.node     with --asan only: the AddressSanitizer/UBSan variant, one direct gcc
//                                        command line (the project's tests build it: `make native`, and
//                                        test/run-all.mjs before the native-asan suite).
// Incremental: nothing is spawned when the wanted outputs are newer than binding.gyp, src/* and this script.
// Runs as the package's npm "install" script (plain variant only: a consumer never needs the sanitizer build) and
// from `make native`. It ignores npm_config_* settings (a user's .npmrc must not change where headers come from)
// and never needs a download when headers are local.
//
// Usage: node scripts/build.mjs [--force] [--asan]
// Env:   VFIO_USER_NATIVE_REQUIRE_ASAN=1  fail (instead of warn) when the ASan variant cannot be built.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, statSync, utimesSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = new Set(process.argv.slice(2));
const force = args.has('--force');
const wantAsan = args.has('--asan');
const target = 'vfio_user_native';
const releaseOut = join(pkg, 'build', 'Release', `${target}.node`);
const asanDir = join(pkg, 'build', 'asan');
const asanOut = join(asanDir, `${target}.node`);
const srcDir = join(pkg, 'src');

const log = (msg) => console.log(`vfio-user-native: ${msg}`);

function mtime(p) {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
}

const sources = readdirSync(srcDir)
  .filter((f) => f.endsWith('.c'))
  .sort()
  .map((f) => join(srcDir, f));
const inputs = [
  join(pkg, 'binding.gyp'),
  fileURLToPath(import.meta.url),
  ...readdirSync(srcDir).map((f) => join(srcDir, f)),
];
const newestInput = Math.max(...inputs.map(mtime));

// Local headers (Debian/NodeSource put them under /usr/include/node).
const prefix = dirname(dirname(process.execPath));
const localHeaders = existsSync(join(prefix, 'include', 'node', 'node_api.h'));

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  const npmBins = [dirname(process.execPath)];
  for (const dir of (process.env.PATH ?? '').split(':')) if (existsSync(join(dir, 'npm'))) npmBins.push(dir);
  for (const bin of npmBins) {
    candidates.push(
      join(bin, '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    );
  }
  return candidates.find((c) => existsSync(c));
}

/** Environment for child builds: no npm_config_* (user .npmrc), everything else inherited. */
function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_config_/i.test(k)) env[k] = v;
  return env;
}

function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { cwd: pkg, stdio: 'inherit', env: cleanEnv(), ...opts });
  if (r.error) throw r.error;
  return r.status === 0;
}

function buildRelease() {
  const nodeGyp = findNodeGyp();
  if (!nodeGyp) throw new Error('cannot find node-gyp (expected the copy bundled with npm)');
  const common = ['--jobs=2'];
  if (localHeaders) common.push(`--nodedir=${prefix}`);
  else log(`no local headers under ${prefix}/include/node: node-gyp will fetch them (needs network)`);
  const configGypi = join(pkg, 'build', 'config.gypi');
  const needConfigure =
    force ||
    !existsSync(join(pkg, 'build', 'Makefile')) ||
    mtime(configGypi) < Math.max(mtime(join(pkg, 'binding.gyp')), mtime(fileURLToPath(import.meta.url)));
  if (needConfigure && !run(process.execPath, [nodeGyp, 'configure', ...common])) {
    throw new Error('node-gyp configure failed');
  }
  if (!run(process.execPath, [nodeGyp, 'build', ...common])) throw new Error('node-gyp build failed');
  // make may have had nothing to do (only this script changed): mark the output current for the fast path.
  const now = new Date();
  utimesSync(releaseOut, now, now);
  log(`built ${releaseOut}`);
}

function nodeIncludeDir() {
  if (localHeaders) return join(prefix, 'include', 'node');
  const devdir = process.env.npm_config_devdir || join(homedir(), '.cache', 'node-gyp');
  return join(devdir, process.versions.node, 'include', 'node');
}

function buildAsan() {
  mkdirSync(asanDir, { recursive: true });
  const tmp = `${asanOut}.tmp`;
  const cc = process.env.CC || 'gcc';
  const argv = [
    '-shared',
    '-fPIC',
    '-pthread',
    '-std=gnu11',
    '-Wall',
    '-Wextra',
    '-O1',
    '-g',
    '-fsanitize=address,undefined',
    '-fno-omit-frame-pointer',
    '-DNAPI_VERSION=8',
    '-D_GNU_SOURCE',
    '-DBUILDING_NODE_EXTENSION',
    `-I${nodeIncludeDir()}`,
    ...sources,
    '-o',
    tmp,
  ];
  if (!run(cc, argv)) return false;
  renameSync(tmp, asanOut);
  log(`built ${asanOut}`);
  return true;
}

try {
  const releaseStale = force || mtime(releaseOut) < newestInput;
  const asanStale = wantAsan && (force || mtime(asanOut) < newestInput);
  if (!releaseStale && !asanStale) {
    log('up to date');
    process.exit(0);
  }
  if (releaseStale) buildRelease();
  if (asanStale && !buildAsan()) {
    const msg = 'the AddressSanitizer/UBSan variant failed to build (is libasan installed?)';
    if (process.env.VFIO_USER_NATIVE_REQUIRE_ASAN === '1') throw new Error(msg);
    log(`warning: ${msg}`);
  }
} catch (err) {
  console.error(`vfio-user-native: ${err instanceof Error ? err.message : err}`);
  process.exit(1);
}
