// From findings (facts) to verdicts. A profile changes levels, never facts:
//
//   level   spec   qemu                                   lvu
//   must    FAIL   FAIL; WARN if QEMU tolerates it or     FAIL; WARN if it is libvfio-user's documented
//                  never uses the command                 behaviour
//   qemu    FAIL   FAIL                                   FAIL
//   should  WARN   WARN                                   WARN; PASS if libvfio-user's documented behaviour
//   choice  WARN   WARN                                   WARN; PASS if libvfio-user's documented behaviour
//   lvu     PASS   PASS                                   WARN (only libvfio-user's own choice differs)
//
// A case's verdict is its worst finding's (FAIL > WARN > PASS); findings that the profile accepts stay in the
// report as notes. SKIP is for cases that could not run (with the reason), unless a finding came first.
import type { Finding, Profile, Rule } from './case.js';

export type Verdict = 'PASS' | 'WARN' | 'FAIL';

export function verdictOf(f: Finding, profile: Profile, rule?: Rule): Verdict {
  switch (f.level) {
    case 'qemu':
      return 'FAIL';
    case 'must':
      if (profile === 'qemu' && (f.qemu === 'tolerates' || rule?.qemu === 'unused')) return 'WARN';
      if (profile === 'lvu' && f.lvu) return 'WARN';
      return 'FAIL';
    case 'should':
    case 'choice':
      return profile === 'lvu' && f.lvu ? 'PASS' : 'WARN';
    case 'lvu':
      return profile === 'lvu' ? 'WARN' : 'PASS';
  }
}

const RANK: Record<Verdict, number> = { PASS: 0, WARN: 1, FAIL: 2 };

export function worst(vs: Verdict[]): Verdict {
  return vs.reduce<Verdict>((a, v) => (RANK[v] > RANK[a] ? v : a), 'PASS');
}

/** Whether a finding is one QEMU 11.1 would not accept (for --report). */
export function breaksQemu(f: Finding, rule?: Rule): boolean {
  if (f.level === 'qemu') return true;
  return f.level === 'must' && f.qemu !== 'tolerates' && rule?.qemu !== 'unused';
}
