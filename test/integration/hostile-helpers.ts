// A real vfio-user-server (the CLI, edu device) in its own process, for the hostile-client reproductions
// (docs/hardening.md): a crash must not take the test down, and the server's own fds, RSS and CPU time are read
// from /proc/PID. Every reproduction ends with `answers()`: a fresh client negotiates and reads edu's ident, and
// the round trip is timed.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { VfioUserClient } from 'vfio-user-client';
import { Edu } from '../lib/edu-regs.js';
import { sleep } from '../lib/wait.js';

/** The server program; HOSTILE_SERVER_BIN runs the same reproductions against another build (before/after). */
const BIN =
  process.env.HOSTILE_SERVER_BIN ||
  join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'server', 'bin', 'vfio-user-server.js');

export interface ProcStats {
  fds: number;
  rssKiB: number;
  /** utime + stime, in clock ticks (100 Hz). */
  cpuTicks: number;
}

export class ServerProcess {
  readonly child: ChildProcess;
  readonly dir: string;
  readonly path: string;
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;

  /** `wrap`: a command line the server runs under (e.g. prlimit), before node. */
  constructor(args: string[] = [], env: NodeJS.ProcessEnv = {}, wrap: string[] = []) {
    this.dir = mkdtempSync(join(tmpdir(), 'vu-hostile-'));
    this.path = join(this.dir, 'vfio-user.sock');
    const argv = [BIN, '--socket-path', this.path, '--log-format', 'json', '--log-level', 'info', ...args];
    this.child = spawn(
      wrap.length ? wrap[0]! : process.execPath,
      wrap.length ? [...wrap.slice(1), process.execPath, ...argv] : argv,
      {
        env: { ...process.env, LISTEN_FDS: '', LISTEN_PID: '', ...env },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      // Keep the tail only: a flood test must not grow the test's own memory.
      this.stderr = (this.stderr + d).slice(-4 << 20);
      this.stderrBytes += d.length;
    });
    this.exited = new Promise((resolve) =>
      this.child.on('close', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      }),
    );
  }

  stderrBytes = 0;

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.exit === undefined;
  }

  static async start(
    args: string[] = [],
    env: NodeJS.ProcessEnv = {},
    wrap: string[] = [],
  ): Promise<ServerProcess> {
    const s = new ServerProcess(args, env, wrap);
    const t0 = Date.now();
    while (!existsSync(s.path)) {
      if (!s.alive) throw new Error(`server exited at start-up: ${s.stderr}`);
      if (Date.now() - t0 > 15_000) throw new Error(`server did not listen: ${s.stderr}`);
      await sleep(20);
    }
    return s;
  }

  stats(): ProcStats {
    const fds = readdirSync(`/proc/${this.pid}/fd`).length;
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? -1);
    const stat = readFileSync(`/proc/${this.pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { fds, rssKiB, cpuTicks: Number(f[11]) + Number(f[12]) };
  }

  /** The server's fd count once it stops changing (closes land a loop turn or more after a client leaves). */
  async settledFds(expected: number, timeoutMs = 3000): Promise<number> {
    const t0 = Date.now();
    let n = this.stats().fds;
    while (n !== expected && Date.now() - t0 < timeoutMs) {
      await sleep(10);
      n = this.stats().fds;
    }
    return n;
  }

  /** CPU time used over `ms` of wall time, as a fraction of one CPU. */
  async cpuShare(ms: number): Promise<number> {
    const a = this.stats().cpuTicks;
    await sleep(ms);
    return ((this.stats().cpuTicks - a) * 10) / ms;
  }

  /** JSON log records whose msg matches. */
  records(match: (r: Record<string, unknown>) => boolean): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.stderr.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const r = JSON.parse(line) as Record<string, unknown>;
        if (match(r)) out.push(r);
      } catch {
        // a partial line
      }
    }
    return out;
  }

  async stop(): Promise<void> {
    if (this.alive) {
      this.child.kill('SIGTERM');
      const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await this.exited;
      clearTimeout(t);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A negotiated client of `s`. */
export async function client(s: ServerProcess): Promise<VfioUserClient> {
  const c = await VfioUserClient.connect(s.path);
  await c.negotiate();
  return c;
}

/**
 * The server still serves: a new client (after `c`, if given, has left) negotiates and reads edu's ident.
 * Returns the fastest of three ident reads' round trips in ms.
 */
export async function answers(s: ServerProcess): Promise<number> {
  if (!s.alive) throw new Error(`server died: ${JSON.stringify(s.exit)}\n${s.stderr.slice(-2000)}`);
  const c = await client(s);
  try {
    // The fastest of three reads, the first within a second: a server whose loop is blocked or spinning is slow
    // on all three, while the machine's load (two CPUs shared by several test runs) can delay any single one.
    const first = await timedIdent(c);
    if (first > 1000) throw new Error(`the first request took ${first.toFixed(0)} ms`);
    return Math.min(first, await timedIdent(c), await timedIdent(c));
  } finally {
    c.close();
  }
}

/** Times one request on an existing client (the server answers within `limit` ms or this throws). */
export async function timedIdent(c: VfioUserClient, timeoutMs = 2000): Promise<number> {
  const t0 = performance.now();
  const b = await c.regionRead(0, BigInt(Edu.IDENT), 4, { timeoutMs });
  if (Buffer.from(b).readUInt32LE(0) !== Edu.IDENT_VALUE) throw new Error('edu ident mismatch');
  return performance.now() - t0;
}
