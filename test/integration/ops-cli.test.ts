// The operations tooling as an operator runs it, with the real programs: vfio-user-server under a NOTIFY_SOCKET
// listener (path and abstract) and under systemd-socket-activate (READY=1 only once the socket is served,
// STATUS= with the client state, STOPPING=1), SIGUSR1, vfio-user-ctl, --record decoded by vfio-user-trace with
// its filters, and vfio-user-trace's live proxy carrying a session (fds included) unchanged.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { VfioUserClient } from 'vfio-user-client';
import { bindDatagram, closeFd, FdWatcher, memfdCreate, recvDatagram } from 'vfio-user-native';
import { sleep, until } from '../lib/wait.js';

const here = dirname(fileURLToPath(import.meta.url)); // test/dist/integration
const root = join(here, '..', '..', '..');
const SERVER = join(root, 'server', 'bin', 'vfio-user-server.js');
const CTL = join(root, 'server', 'bin', 'vfio-user-ctl.js');
const TRACE = join(root, 'client', 'bin', 'vfio-user-trace.js');

/** A NOTIFY_SOCKET receiver: every datagram, with the time it arrived. */
class NotifyListener {
  readonly messages: { text: string; at: number }[] = [];
  private readonly fd: number;
  private readonly watcher: FdWatcher;
  onMessage: ((text: string) => void) | undefined;

  constructor(readonly path: string) {
    this.fd = bindDatagram(path);
    this.watcher = new FdWatcher(this.fd, () => {
      for (let d = recvDatagram(this.fd); d; d = recvDatagram(this.fd)) {
        const text = d.toString();
        this.messages.push({ text, at: Date.now() });
        this.onMessage?.(text);
      }
    });
  }

  has(re: RegExp): boolean {
    return this.messages.some((m) => re.test(m.text));
  }

  close(): void {
    this.watcher.close();
    closeFd(this.fd);
  }
}

interface Proc {
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  exited: Promise<number | null>;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  let out = '';
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
  });
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  return { child, stderr: () => err, stdout: () => out, exited };
}

function logLines(p: Proc): Record<string, unknown>[] {
  return p
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function tmp(): string {
  return mkdtempSync(join(tmpdir(), 'vu-opscli-'));
}

// ------------------------------------------------------------------------------------------------------------

const N = suite('ops cli: systemd readiness');

for (const abstract of [false, true]) {
  N(
    `NOTIFY_SOCKET (${abstract ? 'abstract @name' : 'path'}): READY=1 once everything listens, STATUS= per client, SIGUSR1, STOPPING=1`,
    async () => {
      const dir = tmp();
      const sock = join(dir, 'vfio-user.sock');
      const ctl = join(dir, 'control.sock');
      const notifyPath = abstract ? `@vfio-user-notify-${process.pid}-${Date.now()}` : join(dir, 'notify');
      const notify = new NotifyListener(notifyPath);
      // At the moment READY=1 arrives, both sockets must already be served.
      let readyCheck: Promise<{ version: boolean; control: boolean }> | undefined;
      notify.onMessage = (text) => {
        if (/^READY=1$/m.test(text) && !readyCheck) {
          readyCheck = (async () => {
            const control = existsSync(ctl);
            const c = await VfioUserClient.connect(sock);
            await c.negotiate();
            return { version: true, control, c } as never;
          })();
        }
      };
      const p = run(
        process.execPath,
        [SERVER, '--socket-path', sock, '--control-socket', ctl, '--log-format', 'json'],
        {
          NOTIFY_SOCKET: notifyPath,
        },
      );
      try {
        await until(() => notify.has(/^READY=1$/m), 15000, 'READY=1');
        const ready = notify.messages.find((m) => /^READY=1$/m.test(m.text))!.text;
        assert.match(ready, /^STATUS=listening, no client$/m);
        assert.match(ready, new RegExp(`^MAINPID=${p.child.pid}$`, 'm'));
        const r = (await readyCheck!) as unknown as { version: boolean; control: boolean; c: VfioUserClient };
        assert.ok(r.version, 'a client negotiated right after READY=1');
        assert.ok(r.control, 'the control socket existed when READY=1 came');
        // The logged 'ready' line precedes the notification (the server was listening first).
        assert.ok(logLines(p).some((l) => l.msg === 'vfio-user server listening'));
        await until(() => notify.has(/^STATUS=serving client 1 \(pid \d+\)$/m), 5000, 'STATUS serving');
        // SIGUSR1: the counters in the log, and the server goes on.
        p.child.kill('SIGUSR1');
        await until(() => logLines(p).some((l) => l.msg === 'counters'), 5000, 'the counters line');
        const counters = logLines(p).find((l) => l.msg === 'counters') as {
          stats: { messages: Record<string, number> };
        };
        assert.is(counters.stats.messages.VERSION, 1);
        r.c.close();
        await until(
          () => notify.messages.filter((m) => /^STATUS=listening, no client$/m.test(m.text)).length >= 2,
          5000,
          'STATUS after disconnect',
        );
        p.child.kill('SIGTERM');
        assert.is(await p.exited, 0);
        assert.ok(notify.has(/^STOPPING=1$/m));
        const order = notify.messages.map((m) =>
          /READY=1/.test(m.text) ? 'READY' : /STOPPING=1/.test(m.text) ? 'STOPPING' : 'STATUS',
        );
        assert.equal([order[0], order.at(-1)], ['READY', 'STOPPING']);
        assert.not.ok(existsSync(ctl), 'the control socket is removed at exit');
      } finally {
        p.child.kill('SIGKILL');
        notify.close();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
}

/**
 * Connects to a socket systemd-socket-activate creates: the file appears at bind(), a moment before listen(), so a
 * connection refused then is retried.
 */
async function connectActivated(sock: string): Promise<VfioUserClient> {
  const t0 = Date.now();
  for (;;) {
    try {
      if (existsSync(sock)) return await VfioUserClient.connect(sock);
    } catch (err) {
      if (!/ECONNREFUSED/.test((err as Error).message) || Date.now() - t0 > 10_000) throw err;
    }
    if (Date.now() - t0 > 10_000) throw new Error(`${sock} never appeared`);
    await sleep(20);
  }
}

const haveActivate = spawnSync('systemd-socket-activate', ['--help'], { stdio: 'ignore' }).status === 0;

N('under systemd-socket-activate: LISTEN_FDS socket, READY=1, the waiting client is served', async () => {
  if (!haveActivate) {
    console.log('  (systemd-socket-activate not installed: Debian package systemd)');
    return;
  }
  const dir = tmp();
  const sock = join(dir, 'vfio-user.sock');
  const notify = new NotifyListener(join(dir, 'notify'));
  const p = run('systemd-socket-activate', [
    '-l',
    sock,
    '-E',
    `NOTIFY_SOCKET=${notify.path}`,
    process.execPath,
    SERVER,
    '--log-format',
    'json',
  ]);
  try {
    // systemd-socket-activate starts the service on the first connection, as systemd does.
    const c = await connectActivated(sock);
    const n = await c.negotiate();
    assert.is(n.major, 0);
    assert.ok(n.json?.includes('max_dma_maps'));
    await until(() => notify.has(/^READY=1$/m), 15000, 'READY=1');
    const started = logLines(p).find((l) => l.msg === 'ready') as { socket: string };
    assert.is(started.socket, 'fd:3 (systemd)');
    await until(() => notify.has(/^STATUS=serving client 1/m), 5000, 'STATUS serving');
    c.close();
    p.child.kill('SIGTERM');
    assert.is(await p.exited, 0);
    assert.ok(notify.has(/^STOPPING=1$/m));
  } finally {
    p.child.kill('SIGKILL');
    notify.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * The unit's sandbox, rebuilt with util-linux so it runs without systemd as PID 1: every mount read-only except
 * /proc, /sys, /dev (ProtectSystem=strict), a private /tmp (PrivateTmp), a writable runtime directory owned by the
 * service user (RuntimeDirectory), then an unprivileged user (DynamicUser), no new privileges and an empty
 * capability bounding set (NoNewPrivileges, CapabilityBoundingSet=).
 */
const SANDBOX = `set -e
for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$m" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0700,uid=65534,gid=65534 tmpfs /mnt
exec setpriv --reuid=65534 --regid=65534 --clear-groups --no-new-privs --bounding-set=-all --inh-caps=-all --ambient-caps=-all "$@"
`;

const haveSandbox =
  haveActivate &&
  process.getuid?.() === 0 &&
  spawnSync('unshare', ['--mount', 'true'], { stdio: 'ignore' }).status === 0 &&
  spawnSync('setpriv', ['--help'], { stdio: 'ignore' }).status === 0;

N(
  'the unit hardening is tolerated: read-only root, private /tmp, nobody, no new privileges, no capabilities',
  async () => {
    if (!haveSandbox) {
      console.log('  (needs root, unshare, setpriv and systemd-socket-activate)');
      return;
    }
    const dir = tmp();
    const sock = join(dir, 'dev.sock');
    const script = join(dir, 'sandbox.sh');
    writeFileSync(script, SANDBOX);
    const notifyName = `@vfio-user-sandbox-${process.pid}-${Date.now()}`; // abstract: reachable from the sandbox
    const notify = new NotifyListener(notifyName);
    const p = run('systemd-socket-activate', [
      '-l',
      sock,
      '-E',
      `NOTIFY_SOCKET=${notifyName}`,
      ...['unshare', '--mount', '--propagation', 'private', 'sh', script, process.execPath, SERVER],
      ...['--control-socket', '/mnt/control.sock', '--record', '/mnt/wire.trace', '--metrics', '127.0.0.1:0'],
      '--log-format',
      'json',
    ]);
    try {
      const c = await connectActivated(sock);
      await c.negotiate();
      const fd = memfdCreate('guest', 0x10000n);
      await c.dmaMap({ address: 0x100000n, size: 0x10000n, fd });
      closeFd(fd);
      await c.regionRead(7, 0n, 4);
      await until(() => notify.has(/^READY=1$/m), 15000, 'READY=1 from the sandbox');
      const m = logLines(p).find((l) => l.msg === 'metrics listening') as { port: number };
      const res = await fetch(`http://127.0.0.1:${m.port}/metrics`);
      assert.match(await res.text(), /vfio_user_dma_maps_live\{device="edu",socket="fd:3 \(systemd\)"\} 1/);
      c.close();
      p.child.kill('SIGTERM');
      assert.is(await p.exited, 0);
      const bad = logLines(p).filter((l) => (l.level as number) >= 40);
      assert.equal(bad, [], 'no warning or error in the sandbox');
      assert.ok(notify.has(/^STOPPING=1$/m));
    } finally {
      p.child.kill('SIGKILL');
      notify.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

const haveAnalyze = spawnSync('systemd-analyze', ['--version'], { stdio: 'ignore' }).status === 0;

N('the template units pass systemd-analyze verify (instance t1, ExecStart pointed at this checkout)', () => {
  if (!haveAnalyze) {
    console.log('  (systemd-analyze not installed)');
    return;
  }
  const dir = tmp();
  try {
    const units = join(root, 'server', 'systemd');
    const service = readFileSync(join(units, 'vfio-user-server@.service'), 'utf8');
    assert.match(service, /^ExecStart=\/usr\/local\/bin\/vfio-user-server /m);
    assert.match(service, /^Type=notify$/m);
    writeFileSync(
      join(dir, 'vfio-user-server@t1.service'),
      service.replace('/usr/local/bin/vfio-user-server', SERVER),
    );
    writeFileSync(
      join(dir, 'vfio-user-server@t1.socket'),
      readFileSync(join(units, 'vfio-user-server@.socket')),
    );
    const r = spawnSync(
      'systemd-analyze',
      [
        'verify',
        '--man=no',
        join(dir, 'vfio-user-server@t1.service'),
        join(dir, 'vfio-user-server@t1.socket'),
      ],
      { encoding: 'utf8', cwd: dir },
    );
    assert.is(r.status, 0, r.stderr);
    assert.is(r.stderr.trim(), '', r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

N.run();

// ------------------------------------------------------------------------------------------------------------

const T = suite('ops cli: vfio-user-ctl, --record and vfio-user-trace');

async function startServer(dir: string, extra: string[] = []): Promise<{ p: Proc; sock: string }> {
  const sock = join(dir, 'vfio-user.sock');
  const p = run(process.execPath, [SERVER, '--socket-path', sock, '--log-format', 'json', ...extra]);
  await until(() => logLines(p).some((l) => l.msg === 'ready'), 15000, 'the server to be ready');
  return { p, sock };
}

function runSync(cmd: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cmd, ...args], { encoding: 'utf8', timeout: 20000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The session every recording/proxy test drives: VERSION, DMA_MAP with an fd, reads (one failing), reset. */
async function session(path: string): Promise<void> {
  const c = await VfioUserClient.connect(path);
  await c.negotiate();
  const fd = memfdCreate('guest', 0x10000n);
  await c.dmaMap({ address: 0x100000n, size: 0x10000n, fd });
  closeFd(fd);
  await c.regionRead(7, 0n, 4);
  await c.regionRead(0, 0x200000n, 4).catch(() => {});
  await c.reset();
  c.close();
}

T('vfio-user-ctl: stats / session / bad command / no server / usage', async () => {
  const dir = tmp();
  const ctl = join(dir, 'control.sock');
  const { p, sock } = await startServer(dir, ['--control-socket', ctl]);
  try {
    await session(sock);
    const stats = runSync(CTL, [ctl, 'stats']);
    assert.is(stats.status, 0, stats.stderr);
    const v = JSON.parse(stats.stdout) as { stats: { messages: Record<string, number> } };
    assert.is(v.stats.messages.DMA_MAP, 1);
    assert.is(statSync(ctl).mode & 0o777, 0o600);
    const lv = runSync(CTL, [ctl, 'log-level', 'warn', '--json']);
    assert.is(lv.stdout.trim(), '{"previous":"info","level":"warn"}');
    const bad = runSync(CTL, [ctl, 'nonsense']);
    assert.is(bad.status, 1);
    assert.match(bad.stderr, /unknown command 'nonsense'/);
    assert.is(runSync(CTL, [join(dir, 'absent.sock'), 'stats']).status, 1);
    assert.is(runSync(CTL, []).status, 2);
  } finally {
    p.child.kill('SIGTERM');
    await p.exited;
    rmSync(dir, { recursive: true, force: true });
  }
});

const SEQUENCE = [
  /C>S #\d+ VERSION major=0 minor=\d+ capabilities=\{"capabilities":/,
  /S>C #\d+ VERSION ok major=0 minor=\d+ .* [\d.]+ms$/,
  /C>S #\d+ DMA_MAP argsz=32 flags=READ\|WRITE offset=0x0 address=0x100000 size=0x10000 fds=1$/,
  /S>C #\d+ DMA_MAP ok [\d.]+ms$/,
  /C>S #\d+ REGION_READ offset=0x0 region=7 count=4$/,
  /S>C #\d+ REGION_READ ok offset=0x0 region=7 data=4B 3412e811 [\d.]+ms$/,
  /C>S #\d+ REGION_READ offset=0x200000 region=0 count=4$/,
  /S>C #\d+ REGION_READ error EINVAL\(22\) [\d.]+ms$/,
  /C>S #\d+ DEVICE_RESET$/,
  /S>C #\d+ DEVICE_RESET ok [\d.]+ms$/,
];

function messageLines(out: string): string[] {
  return out.split('\n').filter((l) => /[CS]>[CS] #/.test(l));
}

T('--record FILE, decoded by vfio-user-trace: the exact sequence; --command, --errors, --slow', async () => {
  const dir = tmp();
  const rec = join(dir, 'session.trace');
  const { p, sock } = await startServer(dir, ['--record', rec]);
  try {
    await session(sock);
    await sleep(50);
  } finally {
    p.child.kill('SIGTERM');
    assert.is(await p.exited, 0);
  }
  try {
    const all = runSync(TRACE, [rec]);
    assert.is(all.status, 0, all.stderr);
    const lines = messageLines(all.stdout);
    assert.is(lines.length, SEQUENCE.length, all.stdout);
    for (const [i, re] of SEQUENCE.entries()) assert.match(lines[i]!, re);
    assert.match(all.stdout, /--- session start \{"session":1,"peer":\{"pid":\d+/);
    assert.match(all.stdout, /--- session end \{"session":1,"reason":"client closed the connection"\}/);

    const maps = messageLines(runSync(TRACE, [rec, '--command', 'dma_map']).stdout);
    assert.is(maps.length, 2);
    const errs = messageLines(runSync(TRACE, [rec, '--errors']).stdout);
    assert.is(errs.length, 2);
    assert.match(errs[0]!, SEQUENCE[6]!);
    assert.match(errs[1]!, SEQUENCE[7]!);
    assert.equal(messageLines(runSync(TRACE, [rec, '--slow', '100000']).stdout), []);
    assert.is(messageLines(runSync(TRACE, [rec, '--slow', '0']).stdout).length, SEQUENCE.length);

    const usage = runSync(TRACE, []);
    assert.is(usage.status, 2);
    const notATrace = runSync(TRACE, [SERVER]);
    assert.is(notATrace.status, 1);
    assert.match(notATrace.stderr, /not a vfio-user trace/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

T(
  'live proxy: a session through vfio-user-trace --listen/--server, fds passed through, printed and recorded',
  async () => {
    const dir = tmp();
    const { p, sock } = await startServer(dir, ['--control-socket', join(dir, 'control.sock')]);
    const front = join(dir, 'front.sock');
    const rec = join(dir, 'proxy.trace');
    const proxy = run(process.execPath, [TRACE, '--listen', front, '--server', sock, '--record', rec]);
    try {
      await until(() => proxy.stderr().includes('listening on'), 10000, 'the proxy to listen');
      assert.is(statSync(front).mode & 0o777, 0o600);
      await session(front);
      await until(() => messageLines(proxy.stdout()).length >= SEQUENCE.length, 5000, 'the proxy output');
      const lines = messageLines(proxy.stdout());
      for (const [i, re] of SEQUENCE.entries()) assert.match(lines[i]!, re);
      // The DMA_MAP's fd reached the server: it mapped a file-backed region (stats through vfio-user-ctl).
      const stats = JSON.parse(runSync(CTL, [join(dir, 'control.sock'), 'stats']).stdout) as {
        dma: { maps: number; files: number };
      };
      assert.is(stats.dma.maps, 1);
      proxy.child.kill('SIGINT');
      assert.is(await proxy.exited, 0);
      const decoded = messageLines(runSync(TRACE, [rec]).stdout);
      for (const [i, re] of SEQUENCE.entries()) assert.match(decoded[i]!, re);
    } finally {
      proxy.child.kill('SIGKILL');
      p.child.kill('SIGTERM');
      await p.exited;
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

T.run();
