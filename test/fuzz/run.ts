// `make fuzz`: every target for longer (default 20,000 executions or 5 minutes each, seed from --seed or the
// clock); inputs that found new coverage are saved under test/fuzz/corpus/<target>/ (seeds for later runs, kept
// out of git unless they reproduce a bug), findings under test/fuzz/findings/ and printed. Exit 1 on a finding.
//
// Usage: node test/dist/fuzz/run.js [--execs N] [--minutes M] [--seed S] [target ...]
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuzz } from './engine.js';
import { NATIVE_TARGET, runNativeFuzzer } from './native.js';
import { allTargets } from './suite.js';
import { loadVectors } from './targets.js';

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  if (i < 0) return undefined;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const execs = Number(opt('--execs') ?? 20_000);
const minutes = Number(opt('--minutes') ?? 5);
const seed = Number(opt('--seed') ?? Date.now() % 2 ** 31);
const here = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fuzz');
let found = 0;
for (const t of await allTargets()) {
  if (args.length && !args.includes(t.name)) continue;
  const dir = join(here, 'corpus', t.name);
  mkdirSync(dir, { recursive: true });
  const save = (d: string, b: Uint8Array) =>
    writeFileSync(join(d, createHash('sha1').update(b).digest('hex').slice(0, 16)), b);
  const r = await fuzz(t, { execs, seed, timeLimitMs: minutes * 60_000, onNew: (b) => save(dir, b) });
  await t.close?.();
  console.log(
    `${r.target}: ${r.execs} execs in ${(r.ms / 1000).toFixed(1)} s, corpus ${r.corpus}, blocks ${r.blocksCovered}/${r.blocksTotal}, findings ${r.findings.length} (seed ${seed})`,
  );
  for (const f of r.findings) {
    found++;
    const fd = join(here, 'findings');
    mkdirSync(fd, { recursive: true });
    save(fd, f.input);
    console.log(
      `  FINDING ${Buffer.from(f.input).toString('hex').slice(0, 200)}\n  ${f.error.split('\n').slice(0, 6).join('\n  ')}`,
    );
  }
}
if (!args.length || args.includes(NATIVE_TARGET)) {
  const r = await runNativeFuzzer({
    vectors: await loadVectors(),
    seed,
    seconds: Math.max(1, Math.round(minutes * 60)),
    corpusDir: join(here, 'corpus', NATIVE_TARGET),
    artifactDir: join(here, 'findings', NATIVE_TARGET),
  });
  console.log(
    `${NATIVE_TARGET}: ${r.runs} execs in ${r.seconds} s, corpus ${r.corpus}, cov ${r.cov}/${r.edges} edges of framing.c, ft ${r.ft}, findings ${r.artifacts.length}, slow units ${r.slowUnits} (seed ${seed})`,
  );
  for (const a of r.artifacts) {
    found++;
    console.log(`  FINDING ${a}`);
  }
  if (r.exitCode !== 0 && !r.artifacts.length) {
    found++;
    console.log(r.log.split('\n').slice(-20).join('\n'));
  }
}
process.exit(found ? 1 : 0);
