// The packages as a user gets them: `npm pack` every workspace package (its prepack builds it), install the four
// tarballs into an empty folder outside the repository (offline: the tarballs plus the registry dependencies
// already in npm's cache), then import each package, type-check a consumer file against the installed types,
// and run both command-line programs from there with npx. Nothing of the checkout is visible to the consumer
// except TypeScript itself and @types/node (the consumer's own dev tools).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { poll } from '../lib/wait.js';
import { docMismatch, renderCommand, seabiosCommand } from '../qemu/cmdline.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const work = mkdtempSync(join(tmpdir(), 'vfio-user-pack-'));
const tarballs = join(work, 'tarballs');
const app = join(work, 'app');
const PACKAGES = ['vfio-user-protocol', 'vfio-user-native', 'vfio-user-server', 'vfio-user-client'];

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Run {
  const r = spawnSync(cmd, args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', ...env },
    timeout: 240_000,
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function must(r: Run, what: string): Run {
  if (r.status !== 0) assert.unreachable(`${what} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

const files = new Map<string, string[]>();

test('npm pack builds and packs all four packages', () => {
  mkdirSync(tarballs);
  must(run('npm', ['pack', '--workspaces', '--pack-destination', tarballs], root), 'npm pack');
  const made = readdirSync(tarballs).sort();
  assert.equal(made, PACKAGES.map((p) => `${p}-0.1.0.tgz`).sort());
  for (const p of PACKAGES) {
    const list = must(run('tar', ['-tzf', join(tarballs, `${p}-0.1.0.tgz`)], work), 'tar')
      .stdout.split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''));
    files.set(p, list);
    for (const f of ['package.json', 'README.md', 'LICENSE']) assert.ok(list.includes(f), `${p} lacks ${f}`);
    // The manifest fields a registry page shows. No `repository`: the project has no public home yet, and a
    // made-up URL would send users to a 404 (docs/packages.md).
    const manifest = JSON.parse(
      must(run('tar', ['-xzOf', join(tarballs, `${p}-0.1.0.tgz`), 'package/package.json'], work), 'tar')
        .stdout,
    ) as Record<string, unknown>;
    for (const f of ['description', 'keywords', 'license', 'engines'])
      assert.ok(manifest[f] !== undefined, `${p}: no ${f}`);
    assert.is(manifest.repository, undefined, `${p}: a repository URL`);
    // No test code and no build leftovers in what users download.
    assert.not.ok(
      list.some((f) => /(^|\/)test\//.test(f) || f.endsWith('.tsbuildinfo')),
      `${p} ships tests`,
    );
  }
  const has = (p: string, f: string) => assert.ok(files.get(p)!.includes(f), `${p} lacks ${f}`);
  has('vfio-user-protocol', 'dist/src/index.js');
  has('vfio-user-server', 'dist/src/index.d.ts');
  has('vfio-user-server', 'dist/src/pci/index.js');
  has('vfio-user-server', 'bin/vfio-user-server.js');
  has('vfio-user-client', 'bin/vfio-user-conformance.js');
  has('vfio-user-client', 'dist/src/conformance/cli.js');
  has('vfio-user-native', 'binding.gyp');
  has('vfio-user-native', 'scripts/build.mjs');
  has('vfio-user-native', 'src/socket.c');
  has('vfio-user-native', 'dist/lib/index.js');
  // The addon is built on the user's machine, and the server does not carry a second copy of it.
  assert.not.ok(files.get('vfio-user-native')!.some((f) => f.startsWith('build/')));
  assert.not.ok(files.get('vfio-user-server')!.some((f) => f.startsWith('native/')));
});

/**
 * The consumer's package-lock.json: the four tarballs as file: dependencies, and the registry packages they need
 * exactly as the workspace's lock file pins them (resolved URL and integrity), so `npm ci --offline` takes them
 * from npm's cache without asking the registry for metadata.
 */
function consumerLock(deps: Record<string, string>): unknown {
  const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, Record<string, unknown>>;
  };
  const packages: Record<string, unknown> = { '': { name: 'consumer', dependencies: deps } };
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (!key.startsWith('node_modules/') || entry.dev || entry.devOptional) continue;
    if (entry.link) {
      // A workspace package: its tarball, with the manifest fields npm ci needs (edges, bins, install script).
      const name = key.slice('node_modules/'.length);
      const ws = lock.packages[entry.resolved as string]!;
      const file = `${name}-0.1.0.tgz`;
      const integrity = `sha512-${createHash('sha512')
        .update(readFileSync(join(tarballs, file)))
        .digest('base64')}`;
      const out: Record<string, unknown> = { version: ws.version, resolved: deps[name], integrity };
      for (const f of ['license', 'dependencies', 'bin', 'engines', 'os', 'hasInstallScript']) {
        if (ws[f] !== undefined) out[f] = ws[f];
      }
      packages[key] = out;
    } else {
      packages[key] = entry;
    }
  }
  return { name: 'consumer', lockfileVersion: 3, requires: true, packages };
}

test('the tarballs install offline into an empty folder (addon built, plain variant only)', () => {
  mkdirSync(app);
  const deps = Object.fromEntries(PACKAGES.map((p) => [p, `file:../tarballs/${p}-0.1.0.tgz`]));
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify(
      {
        name: 'consumer',
        private: true,
        type: 'module',
        dependencies: deps,
        // npm 11's install-script policy: the addon's build is approved (a tarball is approved by its file:
        // spec, a registry package by its name, as `npm install-scripts approve` writes them); msgpackr's optional
        // accelerator is not needed (msgpackr falls back to JavaScript).
        allowScripts: {
          [`file:${join(tarballs, 'vfio-user-native-0.1.0.tgz')}`]: true,
          'msgpackr-extract': false,
        },
      },
      null,
      2,
    ),
  );
  writeFileSync(join(app, 'package-lock.json'), JSON.stringify(consumerLock(deps), null, 2));
  const r = must(run('npm', ['install', '--offline', '--no-audit'], app), 'npm install');
  if (/not yet covered by allowScripts/.test(r.stderr)) assert.unreachable(r.stderr);
  const native = join(app, 'node_modules', 'vfio-user-native', 'build');
  assert.ok(readdirSync(join(native, 'Release')).includes('vfio_user_native.node'));
  assert.not.ok(readdirSync(native).includes('asan'), 'the install built the ASan variant');
  // A real install, not links into the checkout.
  assert.not.ok(lstatSync(join(app, 'node_modules', 'vfio-user-server')).isSymbolicLink());
});

test('each package imports from the installed folder', () => {
  writeFileSync(
    join(app, 'imports.mjs'),
    `import * as protocol from 'vfio-user-protocol';
import * as native from 'vfio-user-native';
import * as server from 'vfio-user-server';
import * as pci from 'vfio-user-server/pci';
import * as client from 'vfio-user-client';
const checks = {
  protocol: typeof protocol.encodeHeader === 'function',
  native: typeof native.eventfd === 'function',
  server: typeof server.VfioUserServer === 'function' && typeof server.PciDevice === 'function',
  pci: pci.PciDevice === server.PciDevice,
  client: typeof client.VfioUserClient === 'function',
};
console.log(JSON.stringify(checks));
`,
  );
  const r = must(run(process.execPath, ['imports.mjs'], app), 'imports');
  assert.equal(JSON.parse(r.stdout), { protocol: true, native: true, server: true, pci: true, client: true });
});

test('a consumer TypeScript file type-checks against the installed types', () => {
  writeFileSync(
    join(app, 'consumer.ts'),
    `import { encodeHeader } from 'vfio-user-protocol';
import { VfioUserClient } from 'vfio-user-client';
import { type AccessSize, type DeviceContext, PciDevice, type PciDeviceModel, VfioUserServer } from 'vfio-user-server';
import { MsiCapability } from 'vfio-user-server/pci';

export class Counter implements PciDeviceModel {
  count = 0;
  readonly pci: PciDevice = new PciDevice(
    {
      vendorId: 0x1234,
      deviceId: 0x0002,
      classCode: 0xff0000,
      bars: [{ size: 4096, handler: { read: () => this.count, write: (_o: number, _s: AccessSize) => this.bump() } }],
      caps: { msi: { vectors: 1 } },
    },
    this,
  );
  private bump(): void {
    this.count++;
    this.pci.raise(0);
  }
  attach(_ctx: DeviceContext): void {}
}
export const msi: MsiCapability | undefined = new Counter().pci.msi;
export const server: typeof VfioUserServer = VfioUserServer;
export const client: typeof VfioUserClient = VfioUserClient;
export const header: typeof encodeHeader = encodeHeader;
`,
  );
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        target: 'ES2022',
        module: 'NodeNext',
        moduleResolution: 'NodeNext',
        strict: true,
        noEmit: true,
        types: ['node'],
        typeRoots: [join(root, 'node_modules', '@types')],
      },
      files: ['consumer.ts'],
    }),
  );
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
  must(run(process.execPath, [tsc, '-p', 'tsconfig.json'], app), 'tsc');
});

test('npx vfio-user-server --help and npx vfio-user-conformance --help run from the folder', () => {
  const s = must(run('npx', ['--offline', 'vfio-user-server', '--help'], app), 'vfio-user-server --help');
  assert.match(s.stdout, /^Usage: vfio-user-server/);
  const c = must(
    run('npx', ['--offline', 'vfio-user-conformance', '--help'], app),
    'vfio-user-conformance --help',
  );
  assert.match(c.stdout, /vfio-user-conformance --socket-path PATH/);
  assert.match(
    must(run('npx', ['--offline', 'vfio-user-server', '--version'], app), '--version').stdout,
    /^vfio-user-server 0\.1\.0\n$/,
  );
});

test('a device module in the folder runs under the installed CLI (imports only the public API)', () => {
  writeFileSync(
    join(app, 'counter.js'),
    `import { defineDevice, PciDevice } from 'vfio-user-server';
export default defineDevice({
  name: 'counter',
  options: { step: { type: 'integer', default: 1 } },
  create({ step }) {
    let count = 0;
    const pci = new PciDevice({
      vendorId: 0x1234, deviceId: 0x0001, classCode: 0xff0000,
      bars: [{ size: 4096, maxAccess: 4, handler: { read: () => count, write: () => { count += step; pci.raise(0); } } }],
      caps: { msi: { vectors: 1 } },
    });
    return pci;
  },
});
`,
  );
  const r = must(
    run(
      'npx',
      ['--offline', 'vfio-user-server', '--device', './counter.js,step=2', '--print-capabilities'],
      app,
    ),
    '--print-capabilities',
  );
  assert.equal((JSON.parse(r.stdout) as { device: unknown }).device, {
    name: 'counter',
    flags: 3,
    regions: 9,
    irqs: 5,
  });
  const bad = run(
    'npx',
    ['--offline', 'vfio-user-server', '--device', './counter.js,stride=2', '--socket-path', 's'],
    app,
  );
  assert.is(bad.status, 2);
  assert.match(bad.stderr, /unknown option 'stride' \(known: step\)/);
});

/** Where docs/writing-a-device.md puts the user's folder; the test's folder stands for it. */
const DOC_DIR = '/tmp/counter';
const DOC = 'docs/writing-a-device.md';
const docLine = (line: string) => {
  const m = docMismatch(DOC, line.split(app).join(DOC_DIR));
  if (m) assert.unreachable(m);
};

test('outside the repository: the example device under npx, driven by its client, enumerated by SeaBIOS', async () => {
  for (const f of ['counter.js', 'client.js'])
    copyFileSync(join(root, 'examples', 'counter', f), join(app, f));
  const sock = join(app, 'counter.sock');
  const serverLine = `npx vfio-user-server --device ./counter.js --socket-path ${sock}`;
  docLine(serverLine);
  // Its own process group: npx does not pass SIGTERM on to the server it runs, so the whole group is stopped.
  const srv = spawn('sh', ['-c', `exec ${serverLine}`], {
    cwd: app,
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  const exited = new Promise((res) => srv.on('close', res));
  let srvErr = '';
  srv.stderr.on('data', (d) => {
    srvErr += d;
  });
  try {
    await poll(() => existsSync(sock) || srv.exitCode !== null, 20_000, 50);
    if (!existsSync(sock)) assert.unreachable(`no server: ${srvErr}`);
    const clientLine = `node client.js ${sock}`;
    docLine(clientLine);
    const c = must(run('sh', ['-c', clientLine], app), 'client.js');
    assert.match(c.stdout, /count: 0 -> 6, interrupts: 3/);
    const why = qemuUnavailableReason();
    if (why) {
      console.log(`  SeaBIOS part skipped: ${why}`);
    } else {
      const log = join(app, 'seabios.log');
      const qemu = spawnQemu({ args: seabiosCommand({ vfioSocket: sock, logFile: log }), timeoutMs: 60_000 });
      try {
        const initRe = /PCI: init bdf=00:05\.0 id=1234:c0c0/;
        const read = () => (existsSync(log) ? readFileSync(log, 'latin1') : '');
        await poll(() => initRe.test(read()) || qemu.done, 45_000, 100);
        assert.match(read(), initRe, `${read()}\n${qemu.stderr}`);
        assert.match(read(), /PCI: map device bdf=00:05\.0\s+bar 0, addr [0-9a-f]+, size 00001000 \[mem\]/);
        docLine(renderCommand(qemu.command));
      } finally {
        qemu.kill('SIGKILL');
        await qemu.exited;
      }
    }
  } finally {
    if (srv.pid) process.kill(-srv.pid, 'SIGTERM');
    await exited;
  }
  // The conformance suite holds this same device to the spec in test/examples/counter.test.ts.
});

test.after(() => {
  rmSync(work, { recursive: true, force: true });
});

test.run();
