// vfio-user-server's command line: option parsing (cli-options.ts) and the real program spawned as a user would
// run it (server/bin/vfio-user-server.js): --help, --print-capabilities, usage errors (exit 2), serving on a
// socket path, an inherited fd and systemd's LISTEN_FDS, and the SIGTERM/SIGINT shutdown that removes the socket
// and logs the counters.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Listener } from 'vfio-user-native';
import {
  Command,
  decodeHeader,
  encodeCapabilities,
  encodeMessage,
  encodeVersionRequest,
  HEADER_SIZE,
  QEMU_LIMITS,
  QEMU_VERSION_JSON,
} from 'vfio-user-protocol';
import { parseCli, parseDeviceSpec, UsageError } from '../src/cli-options.js';
import { until } from './wait.js';

// server/dist/test/cli.test.js -> server/bin/vfio-user-server.js
const BIN = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'vfio-user-server.js');

// ------------------------------------------------------------------------------------------------------------
// Parsing

const parse = suite('cli: parseCli');

parse('defaults', () => {
  const o = parseCli(['--socket-path', '/tmp/x.sock'], {});
  assert.is(o.socketPath, '/tmp/x.sock');
  assert.is(o.fd, undefined);
  assert.is(o.socketActivated, false);
  assert.equal(o.device, { name: 'edu', params: {} });
  assert.is(o.iommu, 'none');
  assert.is(o.logLevel, 'info');
  assert.is(o.logFormat, undefined);
  assert.is(o.printCapabilities, false);
  assert.is(o.help, false);
  assert.equal(o.hostFds, { iommufd: undefined, container: undefined, group: undefined, device: undefined });
});

parse('--socket-path=PATH form, --fd, every option', () => {
  const o = parseCli(
    [
      '--fd=7',
      '--device',
      'edu,dmaDelayMs=100,factDelayMs=5',
      '--iommu',
      'iommufd',
      '--iommufd-fd',
      '9',
      '--vfio-device-fd=10',
      '--log-level',
      'debug',
      '--log-format',
      'json',
    ],
    {},
  );
  assert.is(o.fd, 7);
  assert.is(o.socketPath, undefined);
  assert.equal(o.device, { name: 'edu', params: { dmaDelayMs: '100', factDelayMs: '5' } });
  assert.is(o.iommu, 'iommufd');
  assert.is(o.hostFds.iommufd, 9);
  assert.is(o.hostFds.device, 10);
  assert.is(o.logLevel, 'debug');
  assert.is(o.logFormat, 'json');
  assert.is(parseCli(['--socket-path=/run/a.sock'], {}).socketPath, '/run/a.sock');
  for (const m of ['none', 'vfio', 'iommufd', 'auto']) {
    assert.is(parseCli(['--fd', '3', '--iommu', m], {}).iommu, m);
  }
});

parse('usage errors', () => {
  const bad: [string[], RegExp][] = [
    [[], /one of --socket-path or --fd is required/],
    [['--socket-path', 'a', '--fd', '3'], /exclusive/],
    [['--socket-path', ''], /must not be empty/],
    [['--fd', '-1'], /ambiguous/],
    [['--fd=-1'], /non-negative integer/],
    [['--fd', '3x'], /non-negative integer/],
    [['--fd', '99999999999'], /non-negative integer/],
    [['--fd', '3', '--iommu', 'intel'], /--iommu must be one of/],
    [['--fd', '3', '--log-level', 'loud'], /--log-level must be one of/],
    [['--fd', '3', '--log-format', 'xml'], /json or pretty/],
    [['--fd', '3', '--bogus'], /Unknown option/],
    [['--fd', '3', 'positional'], /positional/i],
    [['--fd', '3', '--device', ''], /empty device name/],
    [['--fd', '3', '--device', 'edu,novalue'], /key=value/],
    [['--fd', '3', '--device', 'edu,__proto__=1'], /not allowed/],
    [['--fd', '3', '--socket-path'], /argument missing|--socket-path/],
  ];
  for (const [argv, re] of bad) {
    try {
      parseCli(argv, {});
      assert.unreachable(`accepted ${JSON.stringify(argv)}`);
    } catch (e) {
      assert.instance(e, UsageError, `${JSON.stringify(argv)}: ${(e as Error).message}`);
      assert.match((e as Error).message, re, JSON.stringify(argv));
    }
  }
});

parse('--help and --print-capabilities need no socket', () => {
  assert.is(parseCli(['--help'], {}).help, true);
  assert.is(parseCli(['-h'], {}).help, true);
  assert.is(parseCli(['--print-capabilities'], {}).printCapabilities, true);
});

parse('systemd socket activation', () => {
  const o = parseCli([], { LISTEN_FDS: '1', LISTEN_PID: '4242' }, 4242);
  assert.is(o.fd, 3);
  assert.is(o.socketActivated, true);
  // Without LISTEN_PID (some launchers omit it) the fds are ours too.
  assert.is(parseCli([], { LISTEN_FDS: '1' }, 4242).fd, 3);
  // For another process: ignored, so a socket is still required.
  assert.throws(() => parseCli([], { LISTEN_FDS: '1', LISTEN_PID: '1' }, 4242), /required/);
  // Only one socket makes sense for one device.
  assert.throws(() => parseCli([], { LISTEN_FDS: '2', LISTEN_PID: '4242' }, 4242), /exactly one/);
  // An explicit choice wins over the environment.
  const e = parseCli(['--socket-path', '/tmp/s'], { LISTEN_FDS: '1', LISTEN_PID: '4242' }, 4242);
  assert.is(e.fd, undefined);
  assert.is(e.socketActivated, false);
  assert.is(parseCli(['--fd', '5'], { LISTEN_FDS: '1' }, 4242).fd, 5);
});

parse('parseDeviceSpec', () => {
  assert.equal(parseDeviceSpec('edu'), { name: 'edu', params: {} });
  assert.equal(parseDeviceSpec('edu,a=1,b=x=y'), { name: 'edu', params: { a: '1', b: 'x=y' } });
  assert.throws(() => parseDeviceSpec(',a=1'), /empty device name/);
  assert.throws(() => parseDeviceSpec('edu,=1'), /key=value/);
});

parse.run();

// ------------------------------------------------------------------------------------------------------------
// The real program

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A spawned CLI: output so far, a way to wait for a log line, and its exit. */
class Cli {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<Run>;
  private waiters: (() => void)[] = [];

  constructor(
    args: string[],
    opts: { env?: NodeJS.ProcessEnv; stdio?: (number | 'pipe' | 'ignore')[] } = {},
  ) {
    this.child = spawn(process.execPath, [BIN, ...args], {
      env: opts.env ?? { ...process.env, LISTEN_FDS: '', LISTEN_PID: '' },
      stdio: (opts.stdio ?? ['ignore', 'pipe', 'pipe']) as never,
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      this.stdout += d;
      this.notify();
    });
    this.child.stderr!.on('data', (d: string) => {
      this.stderr += d;
      this.notify();
    });
    const kill = setTimeout(() => this.child.kill('SIGKILL'), 20_000);
    this.exited = new Promise((resolve) =>
      this.child.on('close', (code, signal) => {
        clearTimeout(kill);
        this.notify();
        resolve({ code, signal, stdout: this.stdout, stderr: this.stderr });
      }),
    );
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  /** The JSON log records on stderr so far. */
  records(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.stderr.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a partial line
      }
    }
    return out;
  }

  async waitFor(msg: string, timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.records().find((x) => x.msg === msg);
      if (r) return r;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`CLI exited before logging '${msg}':\n${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for '${msg}':\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
}

const runCli = (args: string[], env?: NodeJS.ProcessEnv) => new Cli(args, { env }).exited;

function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'vu-cli-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** QEMU 11.1.3's VERSION request, byte for byte (as observed on the wire). */
function qemuVersionRequest(): Uint8Array {
  const json = new TextEncoder().encode(`${QEMU_VERSION_JSON}\0`);
  return encodeMessage(
    { id: 0, command: Command.VERSION },
    encodeVersionRequest({ major: 0, minor: 0, capabilities: json }),
  );
}

/** Connects to `path`, sends QEMU's VERSION and resolves with the reply's header and JSON text. */
async function versionHandshake(path: string): Promise<{ flags: number; size: number; json: string }> {
  const sock: Socket = connect(path);
  try {
    return await new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const t = setTimeout(() => reject(new Error('no VERSION reply')), 5000);
      sock.on('error', reject);
      sock.on('connect', () => sock.write(qemuVersionRequest()));
      sock.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < HEADER_SIZE) return;
        const h = decodeHeader(new Uint8Array(buf.buffer, buf.byteOffset, HEADER_SIZE));
        if (buf.length < h.size) return;
        clearTimeout(t);
        const text = buf.subarray(HEADER_SIZE + 4, h.size).toString('utf8');
        resolve({ flags: h.flags, size: h.size, json: text.replace(/\0$/, '') });
      });
    });
  } finally {
    sock.destroy();
  }
}

const prog = suite('cli: the vfio-user-server program');

prog('--help prints the usage on stdout and exits 0', async () => {
  const r = await runCli(['--help']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^Usage: vfio-user-server \(--socket-path PATH \| --fd N\)/);
  for (const opt of ['--device', '--iommu', '--log-level', '--print-capabilities', 'SIGTERM']) {
    assert.ok(r.stdout.includes(opt), opt);
  }
  assert.is(r.stderr, '');
});

prog('--print-capabilities prints the VERSION capabilities as JSON and exits 0', async () => {
  const r = await runCli(['--print-capabilities', '--log-level', 'warn']);
  assert.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    type: string;
    version: { major: number; minor: number };
    capabilities: Record<string, unknown>;
    device: { name: string; flags: number; regions: number; irqs: number };
    iommu: string;
  };
  assert.is(out.type, 'vfio-user');
  assert.is(out.version.major, 0);
  assert.equal(out.capabilities, {
    max_msg_fds: 16,
    max_data_xfer_size: 1048576,
    pgsizes: 4096,
    max_dma_maps: 65535,
    twin_socket: { supported: true },
    // edu implements migration (session/migration.ts).
    migration: { pgsize: 4096, max_bitmap_size: 1048576 },
  });
  assert.equal(out.device, { name: 'edu', flags: 3, regions: 9, irqs: 5 });
  assert.is(out.iommu, 'none');
  // Within QEMU's limits, and the reply QEMU gets (no twin_socket: QEMU never offers it) fits its 214-byte buffer.
  assert.ok((out.capabilities.max_msg_fds as number) <= QEMU_LIMITS.maxMsgFds);
  assert.ok((out.capabilities.max_data_xfer_size as number) <= QEMU_LIMITS.maxDataXferSize);
  const { twin_socket: _twin, ...toQemu } = out.capabilities;
  const json = encodeCapabilities({
    maxMsgFds: toQemu.max_msg_fds as number,
    maxDataXferSize: toQemu.max_data_xfer_size as number,
    pgsizes: toQemu.pgsizes as number,
    maxDmaMaps: toQemu.max_dma_maps as number,
    migration: { pgsize: 4096, maxBitmapSize: 1048576 },
  });
  assert.ok(HEADER_SIZE + 4 + json.length <= 214, `reply of ${HEADER_SIZE + 4 + json.length} bytes`);
  // The probe socket it used is gone and nothing was logged at warn level.
  assert.is(r.stderr, '');
});

prog('usage errors exit 2 with the message and the usage on stderr, nothing on stdout', async () => {
  const tmp = tempDir();
  const sock = join(tmp.dir, 'never.sock');
  const cases: [string[], RegExp][] = [
    [[], /one of --socket-path or --fd is required/],
    [['--socket-path', sock, '--fd', '3'], /exclusive/],
    [['--socket-path', sock, '--iommu', 'intel'], /--iommu must be one of/],
    [['--socket-path', sock, '--bogus'], /Unknown option '--bogus'/],
    [['--socket-path', sock, '--device', 'nosuch'], /unknown device 'nosuch' \(known: [^)]*\bedu\b/],
    [['--socket-path', sock, '--device', 'edu,dmaDelayMs=-5'], /dmaDelayMs/],
    // Built-in devices refuse options they do not declare, naming the option.
    [
      ['--socket-path', sock, '--device', 'edu,foo=1'],
      /--device edu: unknown option 'foo' \(known: [^)]*dmaDelayMs/,
    ],
    [
      ['--socket-path', sock, '--device', './no/such/device.js'],
      /cannot load device module '.\/no\/such\/device.js': no such module/,
    ],
    [['--socket-path', sock, '--log-level', 'loud'], /--log-level/],
    [['--socket-path', sock, '--iommu', 'vfio'], /needs a passed-through host device/],
    [['--socket-path', sock, '--iommu', 'iommufd', '--device', 'edu'], /needs a passed-through host device/],
  ];
  const runs = await Promise.all(cases.map(([argv]) => runCli(argv)));
  runs.forEach((r, i) => {
    const [argv, re] = cases[i]!;
    assert.is(r.code, 2, `${JSON.stringify(argv)}: exit ${r.code}\n${r.stderr}`);
    assert.match(r.stderr, re, JSON.stringify(argv));
    assert.match(r.stderr, /^vfio-user-server: /);
    // One line, then the short usage (not the whole --help text).
    assert.match(
      r.stderr,
      /^vfio-user-server: [^\n]*\nUsage: vfio-user-server [^\n]*\nRun 'vfio-user-server --help'[^\n]*\n$/,
    );
    assert.is(r.stdout, '', JSON.stringify(argv));
  });
  assert.not.ok(existsSync(sock), 'no socket was created');
  tmp.cleanup();
});

prog('the backend descriptor for edu: description, type, binary = this program', async () => {
  const file = join(dirname(BIN), '..', 'vfio-user', '50-vfio-user-server-edu.json');
  const d = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  assert.equal(Object.keys(d).sort(), ['binary', 'description', 'type']);
  assert.is(d.type, 'edu');
  assert.match(String(d.binary), /^\/.*\/vfio-user-server$/);
  // The program it names answers --print-capabilities with edu when given no --device.
  const r = await runCli(['--print-capabilities']);
  assert.is((JSON.parse(r.stdout) as { device: { name: string } }).device.name, 'edu');
});

prog('--version prints the package version', async () => {
  const r = await runCli(['--version']);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /^vfio-user-server \d+\.\d+\.\d+\n$/);
});

prog('--print-capabilities ignores every option but --device and --iommu', async () => {
  const r = await runCli([
    '--print-capabilities',
    '--socket-path',
    'a',
    '--fd',
    '3',
    '--bogus',
    '--log-level',
    'x',
  ]);
  assert.is(r.code, 0, r.stderr);
  assert.is((JSON.parse(r.stdout) as { device: { name: string } }).device.name, 'edu');
  assert.is(r.stderr, '');
});

/** A device module outside the package, as a user writes one (it imports the server by path here). */
function writeDeviceModule(dir: string): string {
  const server = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'index.js');
  const file = join(dir, 'counter.mjs');
  writeFileSync(
    file,
    `import { defineDevice, PciDevice } from ${JSON.stringify(server)};
export default defineDevice({
  name: 'counter',
  options: { step: { type: 'integer', default: 1, min: 1 }, deviceId: { type: 'integer', default: 0x0001 } },
  create({ step, deviceId }, { log }) {
    let count = 0;
    log.info({ step }, 'counter created');
    return new PciDevice({
      vendorId: 0x1234, deviceId, classCode: 0xff0000,
      bars: [{ size: 4096, maxAccess: 4, handler: { read: () => count, write: () => { count += step; } } }],
    });
  },
});
`,
  );
  return file;
}

prog('--device ./module.js: a user device gets the whole CLI; its options are checked', async () => {
  const tmp = tempDir();
  try {
    const file = writeDeviceModule(tmp.dir);
    const caps = await runCli(['--print-capabilities', '--device', `${file},deviceId=0x2`]);
    assert.is(caps.code, 0, caps.stderr);
    assert.equal((JSON.parse(caps.stdout) as { device: unknown }).device, {
      name: 'counter',
      flags: 3,
      regions: 9,
      irqs: 5,
    });
    const bad = await runCli(['--socket-path', join(tmp.dir, 's'), '--device', `${file},stride=2`]);
    assert.is(bad.code, 2);
    assert.match(
      bad.stderr,
      /^vfio-user-server: --device [^:]+counter.mjs,?[^:]*: unknown option 'stride' \(known: step, deviceId\)\n/,
    );
    const low = await runCli(['--socket-path', join(tmp.dir, 's'), '--device', `${file},step=0`]);
    assert.is(low.code, 2);
    assert.match(low.stderr, /option step: expected a value >= 1, got '0'/);
    const notDevice = join(tmp.dir, 'plain.mjs');
    writeFileSync(notDevice, 'export default 42;\n');
    const nd = await runCli(['--socket-path', join(tmp.dir, 's'), '--device', notDevice]);
    assert.is(nd.code, 2);
    assert.match(nd.stderr, /does not export a device/);
    const path = join(tmp.dir, 'vu.sock');
    const cli = new Cli(['--socket-path', path, '--device', `${file},step=3`, '--log-format', 'json']);
    try {
      const ready = await cli.waitFor('ready');
      assert.is(ready.device, 'counter');
      // pino's base record has the pid: the ready line must not repeat it.
      const line = cli.stderr.split('\n').find((l) => l.includes('"msg":"ready"'))!;
      assert.is(line.match(/"pid":/g)?.length, 1, line);
      assert.ok(
        cli.records().some((x) => x.msg === 'counter created' && x.device === 'counter' && x.step === 3),
      );
      cli.child.kill('SIGTERM');
      assert.is((await cli.exited).code, 0);
    } finally {
      cli.child.kill('SIGKILL');
    }
  } finally {
    tmp.cleanup();
  }
});

prog('serves QEMU VERSION on --socket-path; SIGTERM removes the socket and logs the counters', async () => {
  const tmp = tempDir();
  const path = join(tmp.dir, 'vu.sock');
  const cli = new Cli(['--socket-path', path, '--log-format', 'json']);
  try {
    const ready = await cli.waitFor('ready');
    assert.is(ready.socket, path);
    assert.is(ready.device, 'edu');
    assert.is(ready.iommu, 'none');
    assert.ok(existsSync(path), 'socket file exists');
    const v = await versionHandshake(path);
    assert.is(v.flags, 1, 'a successful reply');
    assert.ok(v.size <= 214, `VERSION reply of ${v.size} bytes fits QEMU's buffer`);
    assert.equal(JSON.parse(v.json), {
      capabilities: {
        max_msg_fds: 16,
        max_data_xfer_size: 1048576,
        pgsizes: 4096,
        max_dma_maps: 65535,
        migration: { pgsize: 4096, max_bitmap_size: 1048576 },
      },
    });
    await cli.waitFor('client disconnected');
    cli.child.kill('SIGTERM');
    const r = await cli.exited;
    assert.is(r.code, 0, r.stderr);
    assert.not.ok(existsSync(path), 'socket removed at shutdown');
    const stopped = cli.records().find((x) => x.msg === 'stopped') as {
      stats: { connections: number; messages: Record<string, number> };
      dma: { live: number };
      device: { dmaTransfers: number };
    };
    assert.ok(stopped, `no 'stopped' record:\n${r.stderr}`);
    assert.is(stopped.stats.connections, 1);
    assert.is(stopped.stats.messages.VERSION, 1);
    assert.is(stopped.dma.live, 0);
    assert.is(stopped.device.dmaTransfers, 0);
    assert.ok(cli.records().some((x) => x.msg === 'shutting down' && x.signal === 'SIGTERM'));
    assert.is(r.stdout, '', 'logs never go to stdout');
  } finally {
    cli.child.kill('SIGKILL');
    tmp.cleanup();
  }
});

prog('SIGINT also shuts down cleanly; pretty logs are readable lines', async () => {
  const tmp = tempDir();
  const path = join(tmp.dir, 'vu.sock');
  const cli = new Cli(['--socket-path', path, '--log-format', 'pretty']);
  try {
    await until(() => /ready/.test(cli.stderr), 5000, 'the ready line');
    assert.match(cli.stderr, /^\d\d:\d\d:\d\d\.\d{3} INFO {2}\[vfio-user-server\] ready socket=/m);
    assert.ok(existsSync(path));
    cli.child.kill('SIGINT');
    const r = await cli.exited;
    assert.is(r.code, 0, r.stderr);
    assert.not.ok(existsSync(path));
    assert.match(r.stderr, /INFO {2}\[vfio-user-server\] stopped stats=\{"connections":0/);
  } finally {
    cli.child.kill('SIGKILL');
    tmp.cleanup();
  }
});

prog('a stale socket file is replaced; a live one makes the second server exit 1', async () => {
  const tmp = tempDir();
  const path = join(tmp.dir, 'vu.sock');
  // A stale socket: bound, then its listener closed without unlinking (like a killed server).
  const stale = Listener.listen(path);
  stale.close({ unlink: false });
  assert.ok(existsSync(path));
  const a = new Cli(['--socket-path', path]);
  const b = { cli: undefined as Cli | undefined };
  try {
    await a.waitFor('ready');
    b.cli = new Cli(['--socket-path', path]);
    const r = await b.cli.exited;
    assert.is(r.code, 1, r.stderr);
    assert.match(r.stderr, /EADDRINUSE|in use/i);
    assert.ok(existsSync(path), 'the live server keeps its socket');
    // A regular file is not a socket: never deleted, never listened on.
    const file = join(tmp.dir, 'not-a-socket');
    writeFileSync(file, 'data');
    const f = await runCli(['--socket-path', file, '--log-format', 'pretty']);
    assert.is(f.code, 1, f.stderr);
    assert.ok(existsSync(file));
    // One line naming the path and the cause; no stack at the default level.
    assert.match(
      f.stderr,
      /FATAL \[vfio-user-server\] cannot serve on \S+not-a-socket: \S+not-a-socket exists and is not a socket/,
    );
    assert.is(f.stderr.match(/FATAL/g)?.length, 1, f.stderr);
    assert.not.match(f.stderr, /\n\s+at /, 'no stack trace');
    a.child.kill('SIGTERM');
    assert.is((await a.exited).code, 0);
    assert.not.ok(existsSync(path));
  } finally {
    a.child.kill('SIGKILL');
    b.cli?.child.kill('SIGKILL');
    tmp.cleanup();
  }
});

prog('--fd N and LISTEN_FDS serve an inherited listening socket', async () => {
  const tmp = tempDir();
  try {
    for (const how of ['--fd', 'LISTEN_FDS'] as const) {
      const path = join(tmp.dir, `${how}.sock`);
      const l = Listener.listen(path);
      const env: NodeJS.ProcessEnv = { ...process.env, LISTEN_FDS: '', LISTEN_PID: '' };
      // LISTEN_PID would have to be the child's pid, unknown before the spawn: launchers that cannot set it
      // leave it out, which the CLI accepts.
      if (how === 'LISTEN_FDS') env.LISTEN_FDS = '1';
      const args = how === '--fd' ? ['--fd', '3'] : [];
      const cli = new Cli(args, { env, stdio: ['ignore', 'pipe', 'pipe', l.fd] });
      try {
        l.close({ unlink: false }); // the child holds its own copy
        const ready = await cli.waitFor('ready');
        assert.is(ready.socket, how === '--fd' ? 'fd:3' : 'fd:3 (systemd)');
        const v = await versionHandshake(path);
        assert.is(v.flags, 1, how);
        cli.child.kill('SIGTERM');
        const r = await cli.exited;
        assert.is(r.code, 0, r.stderr);
      } finally {
        cli.child.kill('SIGKILL');
      }
    }
    // --fd on something that is not a listening socket is a runtime error.
    const r = await runCli(['--fd', '0']);
    assert.is(r.code, 1, r.stderr);
  } finally {
    tmp.cleanup();
  }
});

prog.run();
