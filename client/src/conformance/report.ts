// `--report`: the run as a person reads it. Per group: what the server does that QEMU 11.1 would not accept, what
// deviates from the spec (or its recommendations) but works with QEMU, and what is optional and missing (the
// skipped cases, by reason); then how the server process ended where it did.
import type { CaseResult } from './case.js';
import type { SuiteReport } from './runner.js';
import { summaryLine } from './runner.js';

const wrap = (s: string, n = 150) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);

export function renderReport(r: SuiteReport): string {
  const out: string[] = ['', `Report (profile ${r.profile}): ${summaryLine(r.summary)}`];
  if (r.setupError) out.push(`  discovery failed: ${r.setupError}`);
  const groups = new Map<string, CaseResult[]>();
  for (const c of r.cases) groups.set(c.group, [...(groups.get(c.group) ?? []), c]);
  for (const [name, cases] of groups) {
    const qemu: string[] = [];
    const spec: string[] = [];
    const missing = new Map<string, string[]>();
    for (const c of cases) {
      if (c.status === 'SKIP') {
        missing.set(c.reason, [...(missing.get(c.reason) ?? []), c.id]);
        continue;
      }
      for (const f of c.findings) {
        if (f.verdict === 'PASS') continue;
        const line = `    ${f.verdict}  ${c.id}  ${wrap(f.text)}`;
        if (f.qemu) qemu.push(line);
        else spec.push(line);
      }
    }
    const counts = (['PASS', 'WARN', 'FAIL', 'SKIP'] as const)
      .map((s) => `${cases.filter((c) => c.status === s).length} ${s.toLowerCase()}`)
      .join(', ');
    out.push('', `${name} (${counts})`);
    if (!qemu.length && !spec.length && !missing.size) {
      out.push('  nothing to report');
      continue;
    }
    if (qemu.length) out.push('  QEMU would not accept:', ...qemu);
    if (spec.length) out.push('  deviates from the spec or its recommendations, works with QEMU:', ...spec);
    if (missing.size) {
      out.push('  optional or not offered (not checked):');
      for (const [reason, ids] of missing) out.push(`    ${ids.join(', ')}: ${wrap(reason)}`);
    }
  }
  const exits = r.cases.filter((c) => c.exit);
  if (exits.length) {
    out.push('', 'The server process ended during:');
    for (const c of exits) out.push(`  ${c.id}: ${c.exit}`);
  }
  return `${out.join('\n')}\n`;
}
