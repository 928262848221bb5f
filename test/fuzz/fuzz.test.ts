// The bounded, deterministic slice of the coverage-guided fuzzers that `make test` runs (the `fuzz` suite): every
// target with a fixed seed and a fixed number of executions; any finding fails. Saved regression inputs
// (test/fuzz/regressions/<target>/*) run first. `make fuzz` runs the same targets for longer. The addon's C
// receive path runs under libFuzzer (native.ts), with the same rules: seeded, a fixed number of runs.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fuzz } from './engine.js';
import { NATIVE_TARGET, runNativeFuzzer, runNativeRegressions } from './native.js';
import { allTargets } from './suite.js';
import { loadVectors } from './targets.js';

const EXECS: Record<string, number> = {
  'protocol-decode': 2000,
  framer: 1000,
  'msgpack-budget': 2000,
  session: 400,
};
const SEED = 15;
/** libFuzzer executions of the C framing harness (a few hundred to a few thousand per second, load permitting). */
const NATIVE_RUNS = 4000;
const fuzzDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fuzz');
const regressions = join(fuzzDir, 'regressions');

const targets = await allTargets();
for (const t of targets) {
  test(`fuzz ${t.name}: saved regressions, then ${EXECS[t.name]} seeded executions, no finding`, async () => {
    const dir = join(regressions, t.name);
    if (existsSync(dir)) {
      for (const f of readdirSync(dir)) await t.run(new Uint8Array(readFileSync(join(dir, f))));
    }
    const r = await fuzz(t, { execs: EXECS[t.name] ?? 1000, seed: SEED });
    await t.close?.();
    console.log(
      `  ${r.target}: ${r.execs} execs in ${(r.ms / 1000).toFixed(1)} s, corpus ${r.corpus}, blocks ${r.blocksCovered}/${r.blocksTotal} (${((100 * r.blocksCovered) / Math.max(1, r.blocksTotal)).toFixed(0)}%), findings ${r.findings.length}`,
    );
    assert.ok(r.blocksCovered > 0, 'coverage is being measured');
    assert.is(
      r.findings.length,
      0,
      r.findings.map((f) => `${Buffer.from(f.input).toString('hex').slice(0, 120)}: ${f.error}`).join('\n'),
    );
  });
}

test(`fuzz ${NATIVE_TARGET} (libFuzzer, C): saved regressions, then ${NATIVE_RUNS} seeded runs, no finding`, async () => {
  assert.equal(await runNativeRegressions(), [], 'saved regression inputs pass');
  const r = await runNativeFuzzer({
    vectors: await loadVectors(),
    seed: SEED,
    runs: NATIVE_RUNS,
    artifactDir: join(fuzzDir, 'findings', NATIVE_TARGET),
  });
  console.log(
    `  ${NATIVE_TARGET}: ${r.runs} execs in ${r.seconds} s, corpus ${r.corpus}, cov ${r.cov}/${r.edges} edges of framing.c, ft ${r.ft}, findings ${r.artifacts.length}`,
  );
  assert.is(
    r.artifacts.length,
    0,
    `findings: ${r.artifacts.join(' ')}\n${r.log.split('\n').slice(-30).join('\n')}`,
  );
  assert.is(r.exitCode, 0, r.log.split('\n').slice(-30).join('\n'));
  assert.is(r.runs, NATIVE_RUNS, 'libFuzzer ran the fixed number of executions');
  assert.ok(r.cov > 0 && r.edges > 0, 'coverage of framing.c is being measured');
});

test.run();
