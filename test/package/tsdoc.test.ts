// Every public export carries a doc comment: for each entry point a package publishes (the `types` of every
// subpath in its package.json `exports`), the TypeScript compiler resolves the module's exports from the built
// declaration files (what a user's editor shows) and the test fails naming every export whose declaration has
// no TSDoc. Re-exports count as documented when the original declaration is (e.g. a wire constant that
// vfio-user-server re-exports from vfio-user-protocol).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** The packages whose exports are a public API (the addon's are documented in docs/native-addon.md). */
const PACKAGES = ['protocol', 'server', 'client'];

interface Entry {
  spec: string;
  file: string;
}

function entryPoints(dir: string): Entry[] {
  const pkg = JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as {
    name: string;
    exports: Record<string, string | { types?: string }>;
  };
  const out: Entry[] = [];
  for (const [sub, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string' || !target.types) continue; // ./package.json
    out.push({
      spec: sub === '.' ? pkg.name : `${pkg.name}/${sub.slice(2)}`,
      file: join(root, dir, target.types),
    });
  }
  return out;
}

/** Names of the exports of `file` without a doc comment, and how many exports it has. */
function undocumented(program: ts.Program, file: string): { total: number; missing: string[] } {
  const checker = program.getTypeChecker();
  const sf = program.getSourceFile(file);
  if (!sf) throw new Error(`${file} is not part of the program`);
  const mod = checker.getSymbolAtLocation(sf);
  if (!mod) throw new Error(`${file} is not a module`);
  const exports = checker.getExportsOfModule(mod);
  const missing: string[] = [];
  for (const s of exports) {
    const target = s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s;
    if (!ts.displayPartsToString(target.getDocumentationComment(checker)).trim()) {
      const where = target.declarations?.[0]?.getSourceFile().fileName.slice(root.length + 1) ?? '?';
      missing.push(`${s.name} (${where})`);
    }
  }
  return { total: exports.length, missing };
}

const options: ts.CompilerOptions = {
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
  target: ts.ScriptTarget.ES2022,
  strict: true,
  noEmit: true,
  skipLibCheck: true,
};

test('the check itself: an undocumented export is reported, documented and re-exported ones are not', () => {
  const files: Record<string, string> = {
    '/virtual/a.ts':
      '/** Documented. */\nexport const a = 1;\nexport const b = 2;\nexport { c } from "./c.js";\n',
    '/virtual/c.ts': '/** Documented where declared. */\nexport const c = 3;\n',
  };
  const host = ts.createCompilerHost(options);
  const read = host.readFile.bind(host);
  host.readFile = (f) => files[f] ?? read(f);
  host.fileExists = (f) => f in files || ts.sys.fileExists(f);
  host.directoryExists = (d) => d === '/virtual' || ts.sys.directoryExists(d);
  const getSourceFile = host.getSourceFile.bind(host);
  host.getSourceFile = (f, v) =>
    files[f] !== undefined ? ts.createSourceFile(f, files[f]!, v) : getSourceFile(f, v);
  const program = ts.createProgram(['/virtual/a.ts'], options, host);
  const r = undocumented(program, '/virtual/a.ts');
  assert.is(r.total, 3);
  assert.equal(
    r.missing.map((m) => m.split(' ')[0]),
    ['b'],
  );
});

test('every export of every published entry point has a doc comment', () => {
  const entries = PACKAGES.flatMap(entryPoints);
  assert.equal(
    entries.map((e) => e.spec),
    ['vfio-user-protocol', 'vfio-user-server', 'vfio-user-server/pci', 'vfio-user-client'],
  );
  const program = ts.createProgram(
    entries.map((e) => e.file),
    options,
  );
  const report: string[] = [];
  for (const e of entries) {
    const { total, missing } = undocumented(program, e.file);
    assert.ok(total > 40, `${e.spec}: only ${total} exports found (wrong entry point?)`);
    console.log(`  ${e.spec}: ${total} exports, ${missing.length} without TSDoc`);
    if (missing.length) report.push(`${e.spec}: ${missing.join(', ')}`);
  }
  assert.is(report.length, 0, `exports without a doc comment:\n${report.join('\n')}`);
});

test.run();
