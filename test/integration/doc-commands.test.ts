// Every command line in the documentation is one a test runs. A `sh` code block in README.md or docs/*.md holds
// commands meant to be pasted (blocks with no info string show usage or output and are not commands); each of its
// command lines must be claimed by a test below, and each claiming test must really check that document (its
// source calls docMismatch with the document, or testDocMismatch for docs/testing.md, so the line it ran is
// asserted to be the one shown). The few commands no test can run on a development machine are listed in
// NOT_RUN with the reason, so an addition to them is a visible decision.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { projectRoot } from '../lib/guest.js';
import { readmeCommands, TEST_COMMANDS_DOC } from '../qemu/cmdline.js';

interface Claim {
  doc: string;
  /** The test file that runs the commands and checks the document shows them. */
  test: string;
  match: RegExp;
  /** How many command lines of the document this claim covers. */
  lines: number;
}

const CLAIMS: Claim[] = [
  {
    doc: TEST_COMMANDS_DOC,
    test: 'test/qemu/qtest-edu.test.ts',
    match: /^qemu-system-x86_64 -accel qtest /,
    lines: 2,
  },
  {
    doc: TEST_COMMANDS_DOC,
    test: 'test/qemu/seabios.test.ts',
    match: /^qemu-system-x86_64 -machine q35 /,
    lines: 1,
  },
  { doc: TEST_COMMANDS_DOC, test: 'test/vm/qemu-linux.test.ts', match: /intel_iommu=on quiet'$/, lines: 1 },
  {
    doc: TEST_COMMANDS_DOC,
    test: 'test/vm/qemu-viommu.test.ts',
    match: /intel_iommu=on quiet vfiotest=(type1|iommufd)'$/,
    lines: 2,
  },
  {
    doc: 'docs/writing-a-device.md',
    test: 'test/package/pack.test.ts',
    match:
      /^(npx vfio-user-server --device \.\/counter\.js |node client\.js |qemu-system-x86_64 -machine q35 )/,
    lines: 3,
  },
];

/** Commands shown for the reader to run that no test runs as shown, each with the reason. */
const NOT_RUN: { doc: string; match: RegExp; why: string }[] = [
  {
    doc: 'docs/writing-a-device.md',
    match:
      /^(mkdir -p \/tmp\/counter && cd \/tmp\/counter|npm init -y|npm install vfio-user-server vfio-user-client)$/,
    why: 'the packages are not published; test/package/pack.test.ts installs the packed tarballs in their place',
  },
  {
    doc: 'docs/operations.md',
    match: /./,
    why: 'installs systemd units as root on the host; test/integration/ops-cli.test.ts runs the units under systemd-socket-activate and their sandbox with util-linux',
  },
];

/** The command lines of the `sh` blocks of a Markdown text (continuations joined, blanks collapsed). */
function shCommands(text: string): string[] {
  const blocks = text.split('```');
  const sh: string[] = [];
  for (let i = 1; i < blocks.length; i += 2) {
    if (/^(sh|bash|shell)\s*\n/.test(blocks[i]!)) sh.push(`\`\`\`${blocks[i]}\`\`\``);
  }
  // Shell comments and the lines of a loop body are part of the block's one recipe, not commands of their own.
  return readmeCommands(sh.join('\n')).filter((l) => !l.startsWith('#'));
}

const docs = ['README.md', ...readdirSync(join(projectRoot, 'docs')).map((f) => `docs/${f}`)].filter((f) =>
  f.endsWith('.md'),
);

test('the sh-block reader finds commands and ignores other blocks', () => {
  const md = 'x\n```sh\na \\\n  b\n# note\nc\n```\n```\nusage: d\n```\n```js\ne()\n```\n';
  assert.equal(shCommands(md), ['a b', 'c']);
});

test('every command in a sh block of the docs is run by a test that checks the document', () => {
  const unclaimed: string[] = [];
  const used = new Map<Claim, number>();
  let total = 0;
  for (const doc of docs) {
    for (const line of shCommands(readFileSync(join(projectRoot, doc), 'utf8'))) {
      total++;
      const claim = CLAIMS.find((c) => c.doc === doc && c.match.test(line));
      if (claim) used.set(claim, (used.get(claim) ?? 0) + 1);
      else if (!NOT_RUN.some((n) => n.doc === doc && n.match.test(line))) unclaimed.push(`${doc}: ${line}`);
    }
  }
  assert.is(unclaimed.length, 0, `commands no test runs:\n${unclaimed.join('\n')}`);
  for (const c of CLAIMS)
    assert.is(used.get(c) ?? 0, c.lines, `${c.test} claims ${c.lines} lines of ${c.doc}`);
  assert.ok(total >= 9, `only ${total} commands found`);
});

test('each claiming test checks its document', () => {
  for (const c of CLAIMS) {
    const src = readFileSync(join(projectRoot, c.test), 'utf8');
    const checks =
      c.doc === TEST_COMMANDS_DOC
        ? /testDocMismatch\(/.test(src)
        : src.includes(`'${c.doc}'`) && /docMismatch\(/.test(src);
    assert.ok(checks, `${c.test} does not check that ${c.doc} shows the command it ran`);
  }
});

test.run();
