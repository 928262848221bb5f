// The wire tracer against real QEMU: a qtest session with the server program run with --record decodes with
// vfio-user-trace into the exact message sequence (every command QEMU sent, each answered, the test's own
// accesses in order, from VERSION to the DEVICE_RESET of a system_reset, counts equal to the server's own
// counters), and vfio-user-trace's live proxy carries a whole QEMU attach unchanged: the messages the server
// recorded behind the proxy are byte for byte, fd count for fd count, the ones the proxy recorded in front.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TraceKind, TraceParser, type TraceRecord } from 'vfio-user-protocol';
import { makeTempDir, qemuUnavailableReason, spawnQemu } from '../lib/qemu.js';
import { QtestListener } from '../lib/qtest.js';
import { poll } from '../lib/wait.js';
import { qtestCommand } from './cmdline.js';
import { enableBar0, factorial, reg32, SLOT } from './edu-qtest.js';
import { Edu } from './harness.js';

const unavailable = qemuUnavailableReason();
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const SERVER = join(root, 'server', 'bin', 'vfio-user-server.js');
const CTL = join(root, 'server', 'bin', 'vfio-user-ctl.js');
const TRACE = join(root, 'client', 'bin', 'vfio-user-trace.js');

interface Proc {
  child: ChildProcess;
  err: () => string;
  out: () => string;
  exited: Promise<number | null>;
}

function run(args: string[]): Proc {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, err: () => err, out: () => out, exited: new Promise((r) => child.on('exit', (c) => r(c))) };
}

function messages(file: string): TraceRecord[] {
  const p = new TraceParser();
  const recs = p.push(readFileSync(file));
  p.end();
  return recs.filter((r) => r.kind === TraceKind.MESSAGE);
}

/** QEMU attaches to `vfioSocket`; the test reads edu's ident, computes 5!, resets the machine, and quits. */
async function qemuSession(dir: string, vfioSocket: string): Promise<void> {
  const qtestSocket = join(dir, 'qtest.sock');
  const listener = await QtestListener.listen(qtestSocket);
  const qemu = spawnQemu({
    args: qtestCommand({ qtestSocket, vfioSocket, ram: 'memfd' }),
    qmpSocket: join(dir, 'qmp.sock'),
    timeoutMs: 60_000,
  });
  try {
    const qt = await listener.accept(20_000, qemu.exited);
    const qmp = await qemu.qmp();
    assert.is(await qt.pciReadl(SLOT, 0, 0), Edu.VENDOR_DEVICE);
    await enableBar0(qt);
    assert.is(await reg32(qt, Edu.IDENT), Edu.IDENT_VALUE);
    assert.is(await factorial(qt, 5), 120);
    await qmp.execute('system_reset');
    await qmp.waitEvent('RESET', 10_000);
    const exit = await qemu.stop(qmp);
    assert.is(exit.code, 0, exit.stderr);
    qt.close();
  } finally {
    listener.close();
    qemu.kill('SIGKILL');
    await qemu.exited;
  }
}

async function startServer(dir: string): Promise<{ p: Proc; sock: string; ctl: string; rec: string }> {
  const sock = join(dir, 'vfio-user.sock');
  const ctl = join(dir, 'control.sock');
  const rec = join(dir, 'server.trace');
  const p = run([
    SERVER,
    '--socket-path',
    sock,
    '--control-socket',
    ctl,
    '--record',
    rec,
    '--log-format',
    'json',
  ]);
  assert.ok(await poll(() => p.err().includes('"msg":"ready"'), 15_000), p.err());
  return { p, sock, ctl, rec };
}

const LINE = /^\s*[\d.]+ (C>S|S>C) #(\d+) (\S+)( NO_REPLY)?(.*)$/;

test('a QEMU qtest session recorded with --record decodes into the exact message sequence', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable}`);
  const tmp = makeTempDir();
  const srv = await startServer(tmp.dir);
  try {
    await qemuSession(tmp.dir, srv.sock);
    assert.ok(await poll(() => srv.p.err().includes('"msg":"client disconnected"'), 10_000));
    const stats = JSON.parse(
      spawnSync(process.execPath, [CTL, srv.ctl, 'stats', '--json'], { encoding: 'utf8' }).stdout,
    ) as { stats: { messages: Record<string, number> } };
    srv.p.child.kill('SIGTERM');
    assert.is(await srv.p.exited, 0);

    const decoded = spawnSync(process.execPath, [TRACE, srv.rec], { encoding: 'utf8' });
    assert.is(decoded.status, 0, decoded.stderr);
    const lines = decoded.stdout.split('\n').filter((l) => LINE.test(l));
    const parsed = lines.map((l) => {
      const m = LINE.exec(l)!;
      return { dir: m[1]!, id: Number(m[2]), command: m[3]!, noReply: !!m[4], rest: m[5]!, line: l };
    });
    // Every command QEMU sent is there, as many times as the server counted it.
    const requests = parsed.filter((x) => x.dir === 'C>S');
    const counts: Record<string, number> = {};
    for (const r of requests) counts[r.command] = (counts[r.command] ?? 0) + 1;
    assert.equal(counts, stats.stats.messages);
    // Each request that wants a reply has exactly one, with the same id and command, and a latency.
    for (const r of requests.filter((x) => !x.noReply)) {
      const replies = parsed.filter((x) => x.dir === 'S>C' && x.id === r.id && x.command === r.command);
      assert.ok(replies.length >= 1, `no reply to ${r.line}`);
    }
    assert.ok(parsed.filter((x) => x.dir === 'S>C').every((x) => / [\d.]+ms$/.test(x.line)));
    // VERSION first; then, in order, the test's own accesses and the reset.
    assert.is(parsed[0]!.command, 'VERSION');
    assert.match(parsed[1]!.line, /S>C #\d+ VERSION ok major=0 minor=\d+ capabilities=\{"capabilities":/);
    const anchors = [
      /C>S #\d+ REGION_READ offset=0x0 region=0 count=4$/,
      /S>C #\d+ REGION_READ ok offset=0x0 region=0 data=4B ed000001 [\d.]+ms$/,
      // QEMU posts MMIO writes (NO_REPLY).
      /C>S #\d+ REGION_WRITE NO_REPLY offset=0x8 region=0 data=4B 05000000$/,
      /C>S #\d+ REGION_READ offset=0x8 region=0 count=4$/,
      /S>C #\d+ REGION_READ ok offset=0x8 region=0 data=4B 78000000 [\d.]+ms$/,
      /C>S #\d+ DEVICE_RESET$/,
      /S>C #\d+ DEVICE_RESET ok [\d.]+ms$/,
    ];
    let at = 0;
    for (const re of anchors) {
      const i = lines.findIndex((l, k) => k >= at && re.test(l));
      assert.ok(i >= 0, `${re} not found in order after line ${at}:\n${lines.slice(at, at + 40).join('\n')}`);
      at = i + 1;
    }
    // QEMU mapped guest RAM with fds and said which IRQs it wants: the DMA_MAP lines show flags and fds by name.
    assert.ok(lines.some((l) => /C>S #\d+ DMA_MAP argsz=32 flags=READ\|WRITE .* fds=1$/.test(l)));
  } finally {
    srv.p.child.kill('SIGKILL');
    tmp.cleanup();
  }
});

test('the live proxy carries a full QEMU attach unchanged (byte for byte, fds passed through)', async () => {
  assert.is(unavailable, null, `QEMU is required: ${unavailable}`);
  const tmp = makeTempDir();
  const srv = await startServer(tmp.dir);
  const front = join(tmp.dir, 'front.sock');
  const proxyRec = join(tmp.dir, 'proxy.trace');
  const proxy = run([TRACE, '--listen', front, '--server', srv.sock, '--record', proxyRec]);
  try {
    assert.ok(await poll(() => proxy.err().includes('listening on'), 10_000), proxy.err());
    await qemuSession(tmp.dir, front);
    assert.ok(await poll(() => srv.p.err().includes('"msg":"client disconnected"'), 10_000));
    proxy.child.kill('SIGINT');
    assert.is(await proxy.exited, 0);
    srv.p.child.kill('SIGTERM');
    assert.is(await srv.p.exited, 0);
    const behind = messages(srv.rec);
    const inFront = messages(proxyRec);
    assert.ok(behind.length > 20, `${behind.length} messages`);
    assert.is(inFront.length, behind.length);
    // Each direction is a byte stream of its own: the proxy and the server observe them at different points, so
    // only the interleaving of the two directions may differ; within a direction every message is identical.
    for (const fromServer of [0, 1]) {
      const b = behind.filter((r) => (r.flags & 1) === fromServer);
      const f = inFront.filter((r) => (r.flags & 1) === fromServer);
      assert.is(f.length, b.length, `messages ${fromServer ? 'S>C' : 'C>S'}`);
      for (let i = 0; i < b.length; i++) {
        assert.is(f[i]!.fds, b[i]!.fds, `fd count of message ${i}`);
        assert.equal(f[i]!.body, b[i]!.body, `bytes of message ${i}`);
      }
    }
    // The fds QEMU sent (guest RAM, IRQ eventfds) went through: some messages carried them.
    assert.ok(behind.some((r) => r.fds > 0));
    assert.match(proxy.out(), /C>S #\d+ DEVICE_RESET/);
  } finally {
    proxy.child.kill('SIGKILL');
    srv.p.child.kill('SIGKILL');
    tmp.cleanup();
  }
});

test.run();
