// The server under test as a process: optionally spawned by the suite (--spawn), found through /proc otherwise.
// Knows the listening socket (from /proc/net/unix, so waiting for it never opens a connection that a
// one-client server would count as its client), the pid that holds it, and its open fd count.

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  at: number;
}

/** Inode of the listening AF_UNIX socket bound at `path`, or null. */
export function listeningInode(path: string): number | null {
  let text: string;
  try {
    text = readFileSync('/proc/net/unix', 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path
    if (f.length < 8 || f.slice(7).join(' ') !== path) continue;
    const flags = Number.parseInt(f[3]!, 16);
    if (flags & 0x10000) return Number(f[6]);
  }
  return null;
}

/** The pid (lowest) holding socket inode `inode`, or null. */
export function pidHoldingInode(inode: number): number | null {
  const want = `socket:[${inode}]`;
  let best: number | null = null;
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const pid = Number(d);
    if (pid === process.pid) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${d}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${d}/fd/${fd}`) === want) {
          if (best === null || pid < best) best = pid;
          break;
        }
      } catch {
        // raced with close
      }
    }
  }
  return best;
}

export function fdCountOf(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return existsSync(`/proc/${pid}`) && !readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  } catch {
    return false;
  }
}

/**
 * Removes a socket file nobody listens on (left by an instance the suite stopped with a signal: a server need
 * not remove its socket then), so that the next instance the suite starts does not trip over the suite's own
 * leftovers. A live socket is never touched. Returns whether a file was removed.
 */
export function removeStaleSocket(path: string): boolean {
  if (!existsSync(path) || listeningInode(path) !== null) return false;
  rmSync(path, { force: true });
  return true;
}

/** Substitutes `{socket}` or appends `--socket-path PATH`. */
export function buildCommand(template: string, socketPath: string): string {
  const q = shellQuote(socketPath);
  return template.includes('{socket}')
    ? template.replaceAll('{socket}', q)
    : `${template} --socket-path ${q}`;
}

/** The template with its socket-path argument replaced by `replacement` (for --fd runs). */
export function replaceSocketArg(template: string, replacement: string): string {
  const forms = [/--socket-path[= ]\{socket\}/, /--socket-path[= ]'?\{socket\}'?/];
  for (const f of forms) if (f.test(template)) return template.replace(f, replacement);
  if (template.includes('{socket}')) return template.replaceAll('{socket}', '');
  return `${template} ${replacement}`;
}

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

export interface SpawnOptions {
  /** Extra fds to hand the child (fd 3, 4, ...). */
  extraFds?: number[];
  /** Where the child's stdout/stderr go (default: captured). */
  stdio?: [number | 'ignore', number | 'pipe', number | 'pipe'];
}

/** One spawned server process. */
export class ServerProcess {
  readonly child: ChildProcess;
  exit: ExitInfo | null = null;
  private log: string[] = [];
  private exitWaiters: (() => void)[] = [];

  constructor(
    readonly command: string,
    o: SpawnOptions = {},
  ) {
    const stdio: (number | 'ignore' | 'pipe')[] = [...(o.stdio ?? ['ignore', 'pipe', 'pipe'])];
    for (const fd of o.extraFds ?? []) stdio.push(fd);
    // `exec` keeps the shell's pid as the server's pid; detached gives it its own process group for cleanup.
    this.child = spawn('/bin/sh', ['-c', `exec ${command}`], { stdio, detached: true });
    const keep = (d: Buffer) => {
      this.log.push(d.toString());
      while (this.log.length > 200) this.log.shift();
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
    this.child.on('exit', (code, signal) => {
      this.exit = { code, signal, at: Date.now() };
      const w = this.exitWaiters;
      this.exitWaiters = [];
      for (const f of w) f();
    });
    this.child.on('error', (e) => {
      this.log.push(`spawn error: ${e.message}`);
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  /** The last `n` characters the process printed. */
  tail(n = 1500): string {
    const t = this.log.join('');
    return t.length > n ? `…${t.slice(-n)}` : t;
  }

  async waitExit(ms: number): Promise<ExitInfo | null> {
    if (this.exit) return this.exit;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.exitWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
    return this.exit;
  }

  signal(sig: NodeJS.Signals): void {
    if (this.exit) return;
    try {
      process.kill(this.pid, sig);
    } catch {
      // gone
    }
  }

  /** SIGTERM, then SIGKILL to the whole group. */
  async stop(): Promise<void> {
    if (!this.exit) {
      this.signal('SIGTERM');
      if (!(await this.waitExit(3000))) {
        try {
          process.kill(-this.pid, 'SIGKILL');
        } catch {
          this.signal('SIGKILL');
        }
        await this.waitExit(3000);
      }
    }
    // Children the server left behind in its group.
    try {
      process.kill(-this.pid, 'SIGKILL');
    } catch {
      // none left
    }
  }
}

export function describeExit(e: ExitInfo): string {
  return e.signal ? `killed by ${e.signal}` : `exited with code ${e.code}`;
}

/** The server under test: the socket, and the process when the suite spawns it. */
export class Target {
  proc: ServerProcess | null = null;
  /** Set while a case deliberately ends the process (no crash report for it). */
  expectExit = false;
  restarts = 0;
  private cachedPid: { inode: number; pid: number } | null = null;

  constructor(
    readonly socketPath: string,
    readonly spawnTemplate: string | null,
    readonly startTimeoutMs = 15000,
  ) {}

  get spawned(): boolean {
    return this.spawnTemplate !== null;
  }

  command(): string {
    if (!this.spawnTemplate) throw new Error('not spawning');
    return buildCommand(this.spawnTemplate, this.socketPath);
  }

  /** Start the server (spawn mode) and wait until it listens. */
  async start(): Promise<void> {
    if (!this.spawnTemplate) return;
    if (this.proc && !this.proc.exit) return;
    // A socket file left by a killed instance would make a strict server refuse to start (LIFE-09 tests that
    // on purpose); the harness removes it for ordinary restarts.
    removeStaleSocket(this.socketPath);
    this.proc = new ServerProcess(this.command());
    this.cachedPid = null;
    const ok = await waitListening(this.socketPath, this.startTimeoutMs, this.proc);
    if (!ok) {
      const p = this.proc;
      await p.stop();
      throw new Error(
        `server did not listen on ${this.socketPath} within ${this.startTimeoutMs} ms` +
          (p.exit ? ` (${describeExit(p.exit)})` : '') +
          (p.tail() ? `; output: ${p.tail(600)}` : ''),
      );
    }
  }

  async stop(): Promise<void> {
    if (this.proc) await this.proc.stop();
    this.cachedPid = null;
  }

  async restart(): Promise<void> {
    await this.stop();
    this.restarts++;
    await this.start();
  }

  /**
   * A spawned server that no longer listens may be on its way out (it exits after its client): wait a moment
   * for its exit status. Returns the exit, if it exited.
   */
  async settle(ms = 1500): Promise<ExitInfo | null> {
    const p = this.proc;
    if (!p) return null;
    if (!p.exit && !this.listening()) await p.waitExit(ms);
    return p.exit;
  }

  /** A spawned process that exited without a case expecting it. */
  unexpectedExit(): ExitInfo | null {
    if (!this.proc?.exit || this.expectExit) return null;
    return this.proc.exit;
  }

  /** The pid holding the listening socket (our spawned process, or whoever listens there). */
  serverPid(): number | null {
    const inode = listeningInode(this.socketPath);
    if (inode === null) return this.proc && !this.proc.exit ? this.proc.pid : null;
    if (this.cachedPid?.inode === inode && pidAlive(this.cachedPid.pid)) return this.cachedPid.pid;
    const pid = pidHoldingInode(inode);
    if (pid !== null) this.cachedPid = { inode, pid };
    return pid;
  }

  fdCount(): number | null {
    const pid = this.serverPid();
    return pid === null ? null : fdCountOf(pid);
  }

  listening(): boolean {
    return listeningInode(this.socketPath) !== null;
  }
}

export async function waitListening(path: string, ms: number, proc?: ServerProcess): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (listeningInode(path) !== null) return true;
    if (proc?.exit) return false;
    await sleep(25);
  }
  return false;
}
