// Finding processes a test left behind. A test's servers (and every hand-over successor, which runs the same
// command line) carry the test's temp dir on their command line, so scanning /proc for it finds them all, also
// those that are no child of the test (a successor's parent is the server that started it).
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
