// The index of conformance cases as Markdown (docs/conformance-index.md), rendered from the case table itself so
// the document cannot drift from the code: client/scripts/conformance-index.mjs writes it, and a client test
// fails when the committed file differs from what this renders.
import { basisKind, type Group } from './case.js';

const BASIS_CODES: [string, string][] = [
  ['S', 'the vfio-user specification requires it'],
  ['S~', 'the specification implies or recommends it'],
  ['L', "libvfio-user's choice (held exactly only under `--profile lvu`)"],
  ['Q', 'what QEMU (10.1/11.1) sends or relies on'],
  ['K', "the Linux kernel's VFIO semantics, which vfio-user mirrors"],
  ['PCI', 'a PCI specification rule'],
];

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

/** Renders the index of `groups` (the suite's `allGroups`) as a Markdown document. */
export function renderCaseIndex(groups: readonly Group[]): string {
  const total = groups.reduce((n, g) => n + g.cases.length, 0);
  const out: string[] = [
    '# Conformance cases',
    '',
    '<!-- Generated from client/src/conformance/cases by `node client/scripts/conformance-index.mjs`;',
    '     do not edit by hand (a client test fails when this file is stale). -->',
    '',
    `\`vfio-user-conformance\` holds a vfio-user server to the protocol with ${total} black-box cases in ` +
      `${groups.length} groups, run in this order. Each case names the rule it checks through its basis:`,
    '',
    '| basis | meaning |',
    '|---|---|',
    ...BASIS_CODES.map(([code, meaning]) => `| ${code} | ${meaning} |`),
    '',
    "ROB-* cases are the suite's own robustness additions. Each case names its rule (a quotation or section of the " +
      "specification, or the QEMU behaviour it protects) and the rule's level: **must** (a deviation is FAIL), " +
      '**qemu** (QEMU 11.1 breaks: FAIL), **should** (a recommendation: WARN), **choice** (an implementation choice ' +
      'the spec leaves open: WARN). The profile changes how levels are graded, not the facts: `--profile lvu` ' +
      "accepts libvfio-user's documented choices (and WARNs on its errnos), `--profile qemu` grades a must that " +
      'QEMU tolerates or never exercises as WARN.',
    '',
    '| group | title | cases |',
    '|---|---|---|',
    ...groups.map((g) => `| [${g.name}](#${g.name.toLowerCase()}) | ${cell(g.title)} | ${g.cases.length} |`),
  ];
  for (const g of groups) {
    out.push(
      '',
      `## ${g.name}`,
      '',
      cell(g.title),
      '',
      '| id | case | basis | level | rule |',
      '|---|---|---|---|---|',
    );
    for (const c of g.cases) {
      const rule = c.rule ? `${c.rule.cite}${c.rule.qemu === 'unused' ? ' (QEMU never sends it)' : ''}` : '';
      out.push(
        `| ${c.id} | ${cell(c.title)} | ${cell(c.basis)} (${basisKind(c.id, c.basis)}) | ${c.rule?.level ?? ''} | ${cell(rule)} |`,
      );
    }
  }
  return `${out.join('\n')}\n`;
}
