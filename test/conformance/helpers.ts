// Shared by the conformance tests: where things are, running the suite's CLI, starting servers.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runNode } from '../lib/procs.js';
import { poll } from '../lib/wait.js';

/** The repository root (this file runs from test/dist/conformance/). */
export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const cli = join(root, 'client', 'bin', 'vfio-user-conformance.js');
const here = join(root, 'test', 'dist', 'conformance');

/** How to start our server with `device`: the real CLI when it is built, else test/conformance/edu-server.ts. */
export function serverCommand(device = 'edu'): string {
  const real = join(root, 'server', 'dist', 'src', 'cli.js');
  if (existsSync(real))
    return `node ${join(root, 'server', 'bin', 'vfio-user-server.js')} --socket-path {socket} --device ${device}`;
  return `node ${join(here, 'edu-server.js')} --socket-path {socket} --device ${device}`;
}

export function proxyCommand(upstream: string, mode: string): string {
  return `node ${join(here, 'fault-proxy.js')} --socket-path {socket} --upstream ${upstream} --mode ${mode}`;
}

export interface CaseRow {
  id: string;
  group: string;
  basis: string;
  status: 'PASS' | 'WARN' | 'FAIL' | 'SKIP';
  level: string;
  rule: string;
  findings: { verdict: string; level: string; text: string; qemu: boolean; lvu?: boolean }[];
  exit?: string;
  reason: string;
  notes: string[];
  durationMs: number;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  report: {
    summary: { passed: number; warned: number; failed: number; skipped: number; total: number };
    cases: CaseRow[];
    setupError: string | null;
  };
  byId: Map<string, CaseRow>;
}

export function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'vfu-conformance-test-'));
}

/** Runs `vfio-user-conformance args... --json FILE` and returns its output and report. */
export async function runCli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const dir = tempDir();
  const json = join(dir, 'report.json');
  try {
    const { code, stdout, stderr } = await runNode([cli, ...args, '--json', json], {
      cwd: root,
      env: { ...process.env, ...env },
    });
    if (!existsSync(json)) throw new Error(`no report (exit ${code}): ${stderr || stdout.slice(-2000)}`);
    const report = JSON.parse(readFileSync(json, 'utf8')) as CliResult['report'];
    return { code, stdout, stderr, report, byId: new Map(report.cases.map((c) => [c.id, c])) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Starts a server process (command with {socket}) and waits for its socket file. */
export async function startServer(command: string, socketPath: string, cwd?: string): Promise<ChildProcess> {
  const p = spawn('/bin/sh', ['-c', `exec ${command.replaceAll('{socket}', socketPath)}`], {
    stdio: 'ignore',
    cwd,
  });
  if (
    !(await poll(() => existsSync(socketPath) || p.exitCode !== null, 15000, 50)) ||
    !existsSync(socketPath)
  ) {
    throw new Error(`server did not start: ${command}`);
  }
  return p;
}

export async function stopServer(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise((r) => p.on('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

/** Failing case ids, for messages. */
export function failures(r: CliResult): string {
  return r.report.cases
    .filter((c) => c.status === 'FAIL')
    .map((c) => `${c.id}: ${c.reason}`)
    .join('\n');
}
