// Spawning QEMU for tests, and a QMP client.
//
// QEMU (>= 10.1 with vfio-user-pci) is the one test/setup/install-qemu.sh chose (docs/setup.md). Every spawn has a hard timeout so a
// hung VM can never hang the suite; stdout/stderr are collected. For QMP the test listens on a UNIX socket first
// and QEMU connects to it (`-chardev socket,path=...` in client mode + `-mon mode=control`): no polling for a
// socket file, and a QEMU that dies early is noticed through its exit instead of a connect timeout.

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { sleep } from './wait.js';

/** The project's cache (guest kernels, the private Debian root with QEMU): $VFIO_USER_CACHE, as the set-up uses it. */
export function cacheDir(): string {
  return process.env.VFIO_USER_CACHE || '/var/cache/vfio-user-node';
}

/**
 * Path of qemu-system-x86_64: $QEMU, else the one test/setup/install-qemu.sh chose (recorded in the cache: the
 * host's own when it qualifies, else the wrapper of the private root's), else the first one on $PATH.
 * Throws if there is none.
 */
export function findQemu(): string {
  const env = process.env.QEMU;
  if (env) {
    if (!existsSync(env)) throw new Error(`QEMU=${env} does not exist`);
    return env;
  }
  const chosen = join(cacheDir(), 'qemu-path');
  if (existsSync(chosen)) {
    const p = readFileSync(chosen, 'utf8').trim();
    if (p && existsSync(p)) return p;
  }
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    const p = join(dir, 'qemu-system-x86_64');
    if (dir && existsSync(p)) return p;
  }
  throw new Error('qemu-system-x86_64 not found: run `bash test/setup/install-qemu.sh` (or `make qemu`)');
}

export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
  text: string;
}

const versionCache = new Map<string, QemuVersion>();

/** Parses `qemu-system-x86_64 --version`. */
export function qemuVersion(binary = findQemu()): QemuVersion {
  const cached = versionCache.get(binary);
  if (cached) return cached;
  const r = spawnSync(binary, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  const text = (r.stdout ?? '').split('\n')[0] ?? '';
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  if (!m) throw new Error(`cannot parse QEMU version from '${text}' (${r.stderr ?? r.error})`);
  const v = { major: Number(m[1]), minor: Number(m[2]), micro: Number(m[3] ?? 0), text };
  versionCache.set(binary, v);
  return v;
}

/** True when `binary` knows the device (`-device NAME,help` succeeds), e.g. 'vfio-user-pci' or 'edu'. */
export function qemuHasDevice(name: string, binary = findQemu()): boolean {
  const r = spawnSync(binary, ['-device', `${name},help`], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0;
}

/** Null when QEMU with vfio-user-pci is usable, else the reason (for tests that must skip or fail loudly). */
export function qemuUnavailableReason(): string | null {
  let bin: string;
  try {
    bin = findQemu();
  } catch (e) {
    return (e as Error).message;
  }
  const v = qemuVersion(bin);
  if (v.major < 10 || (v.major === 10 && v.minor < 1)) return `QEMU ${v.text} is older than 10.1`;
  if (!qemuHasDevice('vfio-user-pci', bin)) return `${bin} has no vfio-user-pci device`;
  return null;
}

/** A private temporary directory for sockets and images, removed by the returned cleanup. */
export function makeTempDir(prefix = 'vfio-user-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The timeout fired and QEMU was killed. */
  timedOut: boolean;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface QemuSpawnOptions {
  /** Arguments after the binary. */
  args: string[];
  binary?: string;
  /** Hard limit: SIGTERM, then SIGKILL 2 s later. Default 60 s. */
  timeoutMs?: number;
  /** Prefix the command (e.g. ['unshare', '-m', '--', 'sh', '-c', ...]) — the binary and args are appended. */
  wrapper?: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Called with every stdout / stderr chunk (e.g. to echo the console while debugging). */
  onStdout?: (chunk: string) => void;
  onStderr?: (chunk: string) => void;
  /** Listen for QMP on this socket path before spawning (see `QemuProcess.qmp`). */
  qmpSocket?: string;
}

/** Command-line fragment that makes QEMU connect its QMP monitor to `socketPath` (where the test listens). */
export function qmpArgs(socketPath: string, id = 'qmp0'): string[] {
  return ['-chardev', `socket,id=${id},path=${socketPath}`, '-mon', `chardev=${id},mode=control`];
}

/** A running QEMU. `exited` always resolves (never rejects), at the latest when the timeout kills it. */
export class QemuProcess {
  readonly child: ChildProcess;
  readonly command: string[];
  readonly exited: Promise<QemuExit>;
  stdout = '';
  stderr = '';
  private exit: QemuExit | null = null;
  private readonly waiters: Array<() => void> = [];
  private readonly qmpListener: Promise<QmpClient> | null;
  private qmpServer: Server | null = null;

  constructor(opts: QemuSpawnOptions) {
    const binary = opts.binary ?? findQemu();
    const args = opts.qmpSocket ? [...opts.args, ...qmpArgs(opts.qmpSocket)] : opts.args;
    this.command = [...(opts.wrapper ?? []), binary, ...args];
    this.qmpListener = opts.qmpSocket ? this.listenQmp(opts.qmpSocket) : null;
    // Keep the rejection of an unused QMP listener from becoming an unhandled rejection.
    this.qmpListener?.catch(() => {});
    const started = Date.now();
    this.child = spawn(this.command[0]!, this.command.slice(1), {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      // stdin stays an open pipe that is never written: some chardevs stop at EOF on stdin.
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8');
    this.child.stderr!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      this.stdout += d;
      opts.onStdout?.(d);
      this.notify();
    });
    this.child.stderr!.on('data', (d: string) => {
      this.stderr += d;
      opts.onStderr?.(d);
      this.notify();
    });
    let timedOut = false;
    let killTimer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      this.child.kill('SIGTERM');
      killTimer = setTimeout(() => this.child.kill('SIGKILL'), 2000);
    }, opts.timeoutMs ?? 60_000);
    this.exited = new Promise<QemuExit>((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        clearTimeout(timer);
        clearTimeout(killTimer);
        this.qmpServer?.close();
        this.exit = {
          code,
          signal,
          timedOut,
          stdout: this.stdout,
          stderr: this.stderr,
          durationMs: Date.now() - started,
        };
        this.child.stdin?.destroy();
        this.notify();
        resolve(this.exit);
      };
      this.child.on('error', (err) => {
        this.stderr += `\nspawn error: ${err.message}\n`;
        finish(null, null);
      });
      this.child.on('close', finish);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True once QEMU has exited. */
  get done(): boolean {
    return this.exit !== null;
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private listenQmp(path: string): Promise<QmpClient> {
    return new Promise<QmpClient>((resolve, reject) => {
      const server = createServer();
      this.qmpServer = server;
      server.once('connection', (sock) => {
        server.close();
        QmpClient.fromSocket(sock).then(resolve, reject);
      });
      server.once('error', reject);
      server.once('close', () => reject(new Error('QEMU exited before connecting to QMP')));
      server.listen(path);
    });
  }

  /** The QMP client (capabilities negotiated). Needs `qmpSocket` at spawn. */
  async qmp(timeoutMs = 10_000): Promise<QmpClient> {
    if (!this.qmpListener) throw new Error('QemuProcess spawned without qmpSocket');
    return await withTimeout(
      this.qmpListener,
      timeoutMs,
      () => `QMP connection (stderr: ${this.stderr.trim()})`,
    );
  }

  /** Resolves with stdout+stderr once `re` matches it; rejects on timeout or if QEMU exits first. */
  async waitForOutput(re: RegExp, timeoutMs = 30_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.stdout) ?? re.exec(this.stderr);
      if (m) return m;
      if (this.exit)
        throw new Error(`QEMU exited (${this.exit.code ?? this.exit.signal}) before ${re} appeared`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${re} in QEMU output`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Sends a signal (default SIGTERM). */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.exit) this.child.kill(signal);
  }

  /**
   * Stops QEMU: QMP `quit` when `qmp` is given, else SIGTERM; SIGKILL after `graceMs`. Resolves with the exit.
   */
  async stop(qmp?: QmpClient, graceMs = 5000): Promise<QemuExit> {
    if (this.exit) return this.exit;
    if (qmp) {
      await qmp.execute('quit').catch(() => {});
    } else {
      this.child.kill('SIGTERM');
    }
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const e = await this.exited;
    clearTimeout(t);
    qmp?.close();
    return e;
  }
}

/** Spawns QEMU (see QemuProcess). */
export function spawnQemu(opts: QemuSpawnOptions): QemuProcess {
  return new QemuProcess(opts);
}

/** Runs QEMU to completion (or its timeout) and returns what it printed. */
export async function runQemu(opts: QemuSpawnOptions): Promise<QemuExit> {
  return await new QemuProcess(opts).exited;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what()}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(t);
  }
}

// ------------------------------------------------------------------------------------------------------------
// QMP

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** QMP client over a connected stream socket: newline-delimited JSON, replies in command order. */
export class QmpClient {
  /** Every event received so far, in order. */
  readonly events: QmpEvent[] = [];
  greeting: unknown = null;
  private buf = '';
  private readonly pending: Pending[] = [];
  private readonly eventWaiters: Array<() => void> = [];
  private closed: Error | null = null;
  private greeted: ((v: unknown) => void) | null = null;
  /** Index of the first event not yet returned by waitEvent. */
  private consumed = 0;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.onData(d));
    const fail = (err: Error) => {
      this.closed = err;
      for (const p of this.pending.splice(0)) p.reject(err);
      for (const w of this.eventWaiters.splice(0)) w();
    };
    sock.on('error', fail);
    sock.on('close', () => fail(this.closed ?? new Error('QMP connection closed')));
  }

  /** Reads the greeting and negotiates capabilities on an accepted/connected socket. */
  static async fromSocket(sock: Socket, timeoutMs = 10_000): Promise<QmpClient> {
    const c = new QmpClient(sock);
    const greeting = new Promise<unknown>((resolve) => {
      c.greeted = resolve;
    });
    c.greeting = await withTimeout(greeting, timeoutMs, () => 'QMP greeting');
    await c.execute('qmp_capabilities');
    return c;
  }

  /** Connects to a QMP server socket (QEMU started with `-qmp unix:PATH,server=on,wait=off`), retrying. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        return await QmpClient.fromSocket(sock, Math.max(1000, deadline - Date.now()));
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(50);
      }
    }
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('QMP' in msg) {
        this.greeted?.(msg);
        this.greeted = null;
      } else if ('event' in msg) {
        this.events.push(msg as unknown as QmpEvent);
        for (const w of this.eventWaiters.splice(0)) w();
      } else if ('return' in msg || 'error' in msg) {
        const p = this.pending.shift();
        if (!p) continue;
        if ('error' in msg) {
          const err = msg.error as { class?: string; desc?: string };
          p.reject(new QmpError(p.command, err.class ?? 'Error', err.desc ?? ''));
        } else {
          p.resolve(msg.return);
        }
      }
    }
  }

  /** Executes a command; rejects with QmpError when QEMU answers with an error. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ command, resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(
        `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`,
      );
    });
  }

  /**
   * Waits for an event named `name` (matching `predicate`) received after the `since`-th event (default: any
   * event not yet returned by a previous waitEvent, i.e. including ones that already arrived).
   */
  async waitEvent(
    name: string,
    timeoutMs = 10_000,
    predicate: (e: QmpEvent) => boolean = () => true,
    since = this.consumed,
  ): Promise<QmpEvent> {
    const deadline = Date.now() + timeoutMs;
    let from = since;
    for (;;) {
      for (; from < this.events.length; from++) {
        const e = this.events[from]!;
        if (e.event === name && predicate(e)) {
          this.consumed = from + 1;
          return e;
        }
      }
      if (this.closed) throw new Error(`QMP closed while waiting for ${name}: ${this.closed.message}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for QMP event ${name}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.eventWaiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** Closes the connection. */
  close(): void {
    this.sock.destroy();
  }
}
