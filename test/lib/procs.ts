// Finding processes a test left behind. A test's servers (and every hand-over successor, which runs the same
// command line) carry the test's temp dir on their command line, so scanning /proc for it finds them all, also
// those that are no child of the test (a successor's parent is the server that started it).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { sleep } from './wait.js';

/** Whether a process with this pid exists (signal 0; a zombie still counts until it is reaped). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Live (not zombie) processes other than this one whose command line contains `text`. */
export function processesMentioning(text: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (!readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(text)) continue;
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
      out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/**
 * The processes mentioning `text` still alive after `graceMs` (exits in flight land meanwhile); each is killed
 * with SIGKILL, so a failing test leaves nothing behind either. The caller asserts the list is empty.
 */
export async function killStrays(text: string, graceMs = 5000): Promise<number[]> {
  const t0 = Date.now();
  let stray = processesMentioning(text);
  while (stray.length > 0 && Date.now() - t0 < graceMs) {
    await sleep(20);
    stray = processesMentioning(text);
  }
  for (const pid of stray) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
  return stray;
}

/** What a finished child printed, and how it ended (`code` null when a signal ended it). */
export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `node args…` to completion with stdout and stderr collected. `timeoutMs` bounds it: the child is then
 * killed with SIGKILL and the result carries what it printed so far.
 */
export function runNode(
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    const kill =
      opts.timeoutMs === undefined ? undefined : setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs);
    p.on('close', (code) => {
      clearTimeout(kill);
      resolve({ code, stdout, stderr });
    });
  });
}
