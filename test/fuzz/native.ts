// The addon's receive path (server/native/src/framing.c: framing, which message owns which fds, MSG_CTRUNC, end of
// stream, hand-over) under libFuzzer: server/native/fuzz/framing-fuzz.c, built with the host's clang
// (-fsanitize=fuzzer,address,undefined; only framing.c is instrumented for coverage, so `cov:` counts its edges).
// clang and its libFuzzer runtime are host packages of the set-up (test/setup/install-qemu.sh).
//
// Seeds are the protocol's wire vectors, each sent as one or two writes with as many fds as the message carries,
// in both framing modes (exact also with its recvmmsg read-ahead of the next header). Saved crash inputs (test/fuzz/regressions/native-framing/) run first.
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Vector } from './targets.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const nativeDir = join(root, 'server', 'native');
const outDir = join(nativeDir, 'build', 'fuzz');
export const NATIVE_TARGET = 'native-framing';
export const nativeBinary = join(outDir, 'framing-fuzz');
export const nativeRegressions = join(root, 'test', 'fuzz', 'regressions', NATIVE_TARGET);

const SAN = ['-fsanitize=address,undefined', '-fno-sanitize-recover=undefined'];
const CFLAGS = ['-g', '-O1', '-std=gnu11', '-Wall', '-Wextra', '-Werror', ...SAN];

function mtime(p: string): number {
  try {
    return statSync(p).mtimeMs;
  } catch {
    return -1;
  }
}

function cc(args: string[]): void {
  const r = spawnSync('clang', args, { cwd: nativeDir, encoding: 'utf8' });
  if (r.error) {
    throw new Error(
      `clang not found (${r.error.message}): run test/setup/install-qemu.sh (installs clang and libclang-rt-dev)`,
    );
  }
  if (r.status !== 0) throw new Error(`clang ${args.join(' ')} failed:\n${r.stderr}`);
}

/** Builds the harness when a source is newer than it. Returns its path. */
export function buildNativeFuzzer(): string {
  const inputs = ['src/framing.c', 'src/framing.h', 'fuzz/framing-fuzz.c'].map((f) => join(nativeDir, f));
  inputs.push(fileURLToPath(import.meta.url));
  if (mtime(nativeBinary) >= Math.max(...inputs.map(mtime))) return nativeBinary;
  mkdirSync(outDir, { recursive: true });
  const obj = join(outDir, 'framing.o');
  const harness = join(outDir, 'framing-fuzz.o');
  cc([...CFLAGS, '-fsanitize=fuzzer-no-link', '-c', 'src/framing.c', '-o', obj]);
  cc([...CFLAGS, '-Isrc', '-c', 'fuzz/framing-fuzz.c', '-o', harness]);
  cc([...SAN, '-fsanitize=fuzzer', harness, obj, '-o', `${nativeBinary}.tmp`]);
  renameSync(`${nativeBinary}.tmp`, nativeBinary);
  return nativeBinary;
}

const hexBytes = (hex: string) => Buffer.from(hex.replace(/[^0-9a-f]/gi, ''), 'hex');

/** A send operation of the harness: op 0 (bytes) or 1 (bytes with `fds` fds), length 1..8192. */
function sendOp(bytes: Uint8Array, fds: number): number[] {
  const n = bytes.length - 1;
  return [(fds ? 1 : 0) | ((n >> 8) << 3), n & 0xff, ...(fds ? [fds] : []), ...bytes];
}
const RECEIVE = 3 | (3 << 3); // four reads
/** The same, exact framing reading the next header with each message's rest (recvmmsg), as the addon does. */
const RECEIVE_AHEAD = RECEIVE | 0x80;

/** Harness inputs from the wire vectors: each message whole, then split after its header, in both modes. */
export function nativeSeeds(vectors: Vector[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  const msgs = vectors.map((v) => ({ bytes: hexBytes(v.hex), fds: Math.min(v.fds ?? 0, 253) }));
  for (let i = 0; i < msgs.length; i += 3) {
    const group = msgs.slice(i, i + 3).filter((m) => m.bytes.length >= 1 && m.bytes.length <= 8192);
    for (const exact of [0, 1]) {
      const whole: number[] = [exact | (3 << 1)]; // 1 MiB size limit
      const split: number[] = [exact | (3 << 1)];
      for (const m of group) {
        whole.push(...sendOp(m.bytes, m.fds), RECEIVE);
        if (m.bytes.length > 16) {
          split.push(
            ...sendOp(m.bytes.subarray(0, 16), m.fds),
            exact ? RECEIVE_AHEAD : RECEIVE,
            ...sendOp(m.bytes.subarray(16), 0),
            exact ? RECEIVE_AHEAD : RECEIVE,
          );
        } else split.push(...sendOp(m.bytes, m.fds), exact ? RECEIVE_AHEAD : RECEIVE);
      }
      out.push(Uint8Array.from(whole), Uint8Array.from(split));
    }
  }
  return out;
}

export interface NativeFuzzResult {
  exitCode: number | null;
  runs: number;
  seconds: number;
  /** libFuzzer's last status line: edges of framing.c reached, features, corpus size. */
  cov: number;
  ft: number;
  corpus: number;
  /** Instrumented edges (inline 8-bit counters) of framing.c. */
  edges: number;
  /** Crash/leak/timeout/out-of-memory inputs written by libFuzzer: findings. */
  artifacts: string[];
  /**
   * Inputs libFuzzer saw run longer than 10 s (slow-unit-*, removed): on this shared machine a stalled or loaded
   * VM, not a hang, which -timeout=20 reports as a finding. Counted, not failed on.
   */
  slowUnits: number;
  log: string;
}

/** libFuzzer's stderr: the last `#N ... cov: C ft: F corp: K/...` line, the module size and `Done N runs in S`. */
export function parseLibFuzzer(
  log: string,
): Pick<NativeFuzzResult, 'runs' | 'seconds' | 'cov' | 'ft' | 'corpus' | 'edges'> {
  const stats = [...log.matchAll(/^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/gm)].at(-1);
  const done = /^Done (\d+) runs in (\d+) second/m.exec(log);
  const mod = /Loaded 1 modules\s+\((\d+) inline 8-bit counters\)/.exec(log);
  return {
    runs: done ? Number(done[1]) : stats ? Number(stats[1]) : 0,
    seconds: done ? Number(done[2]) : 0,
    cov: stats ? Number(stats[2]) : 0,
    ft: stats ? Number(stats[3]) : 0,
    corpus: stats ? Number(stats[4]) : 0,
    edges: mod ? Number(mod[1]) : 0,
  };
}

function runBinary(args: string[], cwd: string): Promise<{ code: number | null; log: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(nativeBinary, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    p.stdout.on('data', (d) => {
      log += d;
    });
    p.stderr.on('data', (d) => {
      log += d;
    });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, log }));
  });
}

/**
 * Runs the harness over the seeds (and `corpusDir`, where new inputs are kept) for `runs` executions or `seconds`.
 * Crash inputs land in `artifactDir`.
 */
export async function runNativeFuzzer(opts: {
  vectors: Vector[];
  seed: number;
  runs?: number;
  seconds?: number;
  corpusDir?: string;
  artifactDir: string;
}): Promise<NativeFuzzResult> {
  buildNativeFuzzer();
  const work = mkdtempSync(join(tmpdir(), 'vfio-user-framing-fuzz-'));
  try {
    const seeds = join(work, 'seeds');
    mkdirSync(seeds);
    for (const [i, s] of nativeSeeds(opts.vectors).entries()) writeFileSync(join(seeds, `vector-${i}`), s);
    const corpus = opts.corpusDir ?? join(work, 'corpus');
    mkdirSync(corpus, { recursive: true });
    mkdirSync(opts.artifactDir, { recursive: true });
    const before = new Set(readdirSync(opts.artifactDir));
    const args = [
      `-seed=${opts.seed}`,
      '-max_len=4096',
      '-timeout=20',
      '-rss_limit_mb=1024',
      '-print_final_stats=1',
      `-artifact_prefix=${opts.artifactDir}/`,
    ];
    if (opts.runs !== undefined) args.push(`-runs=${opts.runs}`);
    if (opts.seconds !== undefined) args.push(`-max_total_time=${opts.seconds}`);
    const { code, log } = await runBinary([...args, corpus, seeds], work);
    const written = readdirSync(opts.artifactDir).filter((f) => !before.has(f));
    const slow = written.filter((f) => f.startsWith('slow-unit-'));
    for (const f of slow) rmSync(join(opts.artifactDir, f), { force: true });
    const artifacts = written
      .filter((f) => !f.startsWith('slow-unit-'))
      .map((f) => join(opts.artifactDir, f));
    return { exitCode: code, ...parseLibFuzzer(log), artifacts, slowUnits: slow.length, log };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Runs each saved regression input once; returns the failures (file and the harness's complaint). */
export async function runNativeRegressions(): Promise<string[]> {
  buildNativeFuzzer();
  if (!existsSync(nativeRegressions)) return [];
  const files = readdirSync(nativeRegressions).map((f) => join(nativeRegressions, f));
  if (!files.length) return [];
  const { code, log } = await runBinary(files, tmpdir());
  if (code === 0) return [];
  return [
    log
      .split('\n')
      .filter((l) => /framing-fuzz:|ERROR|SUMMARY|Running:/.test(l))
      .join('\n'),
  ];
}
