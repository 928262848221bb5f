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

test.run();
