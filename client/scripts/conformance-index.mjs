#!/usr/bin/env node
// Writes docs/conformance-index.md from the conformance case table (after `npx tsc -b`).
// `--check` writes nothing and exits 1 when the committed file is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderCaseIndex } from '../dist/src/conformance/case-index.js';
import { allGroups } from '../dist/src/conformance/cases/index.js';

const target = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'conformance-index.md');
const text = renderCaseIndex(allGroups);
if (process.argv.includes('--check')) {
  let old = '';
  try {
    old = readFileSync(target, 'utf8');
  } catch {}
  if (old !== text) {
    console.error(`${target} is stale: run node client/scripts/conformance-index.mjs`);
    process.exit(1);
  }
} else {
  writeFileSync(target, text);
  console.log(`wrote ${target}`);
}
