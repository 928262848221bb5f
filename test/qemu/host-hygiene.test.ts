// The set-up leaves the host's Debian release alone (docs/setup.md): every host package it needs is installed in a
// version the host's own release offers, nothing it wrote is left under /etc/apt, and the QEMU the tests use is
// the project's (the private root's wrapper in the cache) or a host one that qualifies.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { cacheDir, findQemu, qemuUnavailableReason } from '../lib/qemu.js';

function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  assert.is(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** The host's release codename as its apt sources name it (the set-up's own rule, test/setup/common.sh). */
function hostCodename(): string {
  const out = sh('bash', [
    '-c',
    `. ${JSON.stringify(join(process.cwd(), 'test/setup/common.sh'))} && host_codename`,
  ]);
  return out.trim();
}

/**
 * The suites (`bookworm`, `bookworm-updates`…) that offer the installed version of `pkg`, from `apt-cache policy`:
 * the lines under the `***` entry of the version table, up to the next version.
 */
function suitesOfInstalled(policy: string): string[] {
  const lines = policy.split('\n');
  const start = lines.findIndex((l) => /^ \*\*\* /.test(l));
  if (start < 0) return [];
  const suites: string[] = [];
  for (const l of lines.slice(start + 1)) {
    if (!/^ {8}/.test(l)) break;
    const m = /^\s+\d+\s+\S+\s+(\S+)\/\S+\s/.exec(l);
    if (m) suites.push(m[1]!);
  }
  return suites;
}

/** Every version of the table with the suites that offer it (`apt-cache policy`; the installed one included). */
function versionTable(policy: string): { version: string; suites: string[] }[] {
  const out: { version: string; suites: string[] }[] = [];
  for (const l of policy.split('\n')) {
    const v = /^ (?:\*\*\*| {3}) (\S+) \d+$/.exec(l);
    if (v) {
      out.push({ version: v[1]!, suites: [] });
      continue;
    }
    const m = /^ {8}\s*\d+\s+\S+\s+(\S+)\/\S+\s/.exec(l);
    if (m && out.length) out[out.length - 1]!.suites.push(m[1]!);
  }
  return out;
}

/** dpkg's version order: a <= b. */
function versionLe(a: string, b: string): boolean {
  return spawnSync('dpkg', ['--compare-versions', a, 'le', b]).status === 0;
}

test('versionTable reads every version with its origins', () => {
  const policy = [
    'xz-utils:',
    '  Installed: 5.4.1-1',
    '  Candidate: 5.4.1-1+deb12u2',
    '  Version table:',
    '     5.4.1-1+deb12u2 500',
    '        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages',
    '     5.4.1-1+deb12u1 500',
    '        500 http://deb.debian.org/debian bookworm/main amd64 Packages',
    ' *** 5.4.1-1 100',
    '        100 /var/lib/dpkg/status',
  ].join('\n');
  assert.equal(versionTable(policy), [
    { version: '5.4.1-1+deb12u2', suites: ['bookworm-security'] },
    { version: '5.4.1-1+deb12u1', suites: ['bookworm'] },
    { version: '5.4.1-1', suites: [] },
  ]);
  assert.ok(versionLe('5.4.1-1', '5.4.1-1+deb12u1'));
  assert.not.ok(versionLe('5.6.4-1', '5.4.1-1+deb12u2'));
});

test('suitesOfInstalled reads the installed version’s origins', () => {
  const policy = [
    'bc:',
    '  Installed: 1.07.1-3+b1',
    '  Candidate: 1.07.1-3+b1',
    '  Version table:',
    '     1.08.1-1 100',
    '        100 http://deb.debian.org/debian trixie/main amd64 Packages',
    ' *** 1.07.1-3+b1 500',
    '        500 http://deb.debian.org/debian bookworm/main amd64 Packages',
    '        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages',
    '        100 /var/lib/dpkg/status',
  ].join('\n');
  assert.equal(suitesOfInstalled(policy), ['bookworm', 'bookworm-security']);
  assert.equal(suitesOfInstalled(' *** 1.0 100\n        100 /var/lib/dpkg/status\n'), []);
});

test('every host package the set-up needs comes from the host’s own release', () => {
  const manifest = join(cacheDir(), 'host-packages.txt');
  assert.ok(existsSync(manifest), `${manifest} missing: run test/setup/install-qemu.sh`);
  const codename = hostCodename();
  assert.ok(/^[a-z]+$/.test(codename), `host codename '${codename}'`);
  const entries = readFileSync(manifest, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ') as [string, string]);
  assert.ok(entries.length >= 10, `the manifest lists the set-up's packages (${entries.length})`);
  // One dpkg-query and one apt-cache call for all of them (apt-cache loads its whole cache per call).
  const installed = new Map(
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax (no :arch suffix)
    sh('dpkg-query', ['-W', '-f=${Package}\t${Version}\n', ...entries.map(([p]) => p)])
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t') as [string, string]),
  );
  const policies = new Map<string, string>();
  for (const block of sh('apt-cache', ['policy', ...entries.map(([p]) => p)]).split(/^(?=\S+:$)/m)) {
    policies.set(block.slice(0, block.indexOf(':')), block);
  }
  const foreign: string[] = [];
  for (const [pkg, version] of entries) {
    assert.is(installed.get(pkg), version, `${pkg}: installed ${installed.get(pkg)}, manifest ${version}`);
    const policy = policies.get(pkg) ?? '';
    const suites = suitesOfInstalled(policy);
    const host = (s: string) => s === codename || s.startsWith(`${codename}-`);
    if (suites.some(host)) continue;
    // A version no configured suite offers any more (a point release or security update superseded it, and the
    // machine was not upgraded) is still the host release's when that release offers the package at or above it;
    // a version from a later release is newer than anything the host's release has.
    const superseded =
      suites.length === 0 &&
      versionTable(policy).some((e) => e.suites.some(host) && versionLe(version, e.version));
    if (!superseded) {
      foreign.push(`${pkg} ${version} (offered by: ${suites.join(', ') || 'no configured release'})`);
    }
  }
  assert.equal(foreign, [], `not from ${codename}: ${foreign.join('; ')}`);
});

test('nothing of the set-up is left under /etc/apt', () => {
  for (const f of [
    '/etc/apt/sources.list.d/trixie.sources',
    '/etc/apt/preferences.d/vfio-user-node-trixie',
  ]) {
    const ours = existsSync(f) && readFileSync(f, 'utf8').includes('vfio-user-node');
    assert.not.ok(ours, `${f} was written by the set-up`);
  }
});

test('the tests use the project’s QEMU, or a host QEMU that qualifies', () => {
  assert.is(qemuUnavailableReason(), null);
  const qemu = findQemu();
  const chosen = readFileSync(join(cacheDir(), 'qemu-path'), 'utf8').trim();
  if (!process.env.QEMU) assert.is(qemu, chosen, 'the QEMU install-qemu.sh chose');
  if (qemu.startsWith(cacheDir())) {
    // The private root's wrapper: its libraries stay in the cache, the host's loader is not involved.
    const text = readFileSync(qemu, 'utf8');
    assert.match(text, /--library-path/);
    assert.ok(text.includes(cacheDir()), 'the wrapper runs the binary of the private root');
  }
});

test.run();
