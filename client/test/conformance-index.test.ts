// docs/conformance-index.md is generated from the case table; this test fails when it is stale (regenerate with
// `node client/scripts/conformance-index.mjs` after `npx tsc -b`).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { renderCaseIndex } from '../src/conformance/case-index.js';
import { allGroups } from '../src/conformance/cases/index.js';

const docPath = join(
  dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  '..',
  'docs',
  'conformance-index.md',
);

test('docs/conformance-index.md matches the case table', () => {
  const want = renderCaseIndex(allGroups);
  const have = readFileSync(docPath, 'utf8');
  assert.ok(
    have === want,
    'docs/conformance-index.md is stale: run node client/scripts/conformance-index.mjs',
  );
});

test('the index lists every case id once', () => {
  const have = readFileSync(docPath, 'utf8');
  const ids = allGroups.flatMap((g) => g.cases.map((c) => c.id));
  assert.is(new Set(ids).size, ids.length, 'case ids are unique');
  for (const id of ids) assert.ok(have.includes(`| ${id} |`), `${id} listed`);
});

test('every case names its rule: a level and a citation', () => {
  for (const g of allGroups) {
    for (const c of g.cases) {
      assert.ok(c.rule, `${c.id} has a rule`);
      assert.ok(['must', 'qemu', 'should', 'choice'].includes(c.rule.level), `${c.id} level ${c.rule.level}`);
      assert.ok(c.rule.cite.length > 20, `${c.id} cites its rule`);
    }
  }
  // The rules the issue named: exact levels.
  const rule = (id: string) => allGroups.flatMap((g) => g.cases).find((c) => c.id === id)?.rule;
  assert.is(rule('MAP-10')?.level, 'must');
  assert.match(rule('MAP-10')?.cite ?? '', /must be failed by the server with EEXIST/);
  assert.is(rule('VER-31')?.level, 'choice');
  assert.is(rule('LIFE-09')?.level, 'choice');
  assert.is(rule('HDR-26')?.level, 'should');
  assert.is(rule('CFG-03')?.level, 'qemu');
  assert.is(rule('FEA-12')?.qemu, 'unused');
});

test.run();
