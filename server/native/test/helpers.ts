// Shared test helpers: vfio-user-style framing, timeouts, fd-leak checks, thrown errors, a child-process peer.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Connection, type ConnectionOptions, closeFd, eventfd, openFds } from '../lib/index.js';

export const here = dirname(fileURLToPath(import.meta.url));
export const peerScript = join(here, 'peer.js');

/** A message: 16-byte header (id, command, size at offset 4, flags, error) followed by `payload`. */
export function frame(id: number, command: number, payload: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.alloc(16 + payload.length);
  b.writeUInt16LE(id & 0xffff, 0);
  b.writeUInt16LE(command, 2);
  b.writeUInt32LE(b.length, 4);
  b.set(payload, 16);
  return b;
}

export function jsonFrame(id: number, command: number, obj: unknown): Buffer {
  return frame(id, command, Buffer.from(JSON.stringify(obj)));
}

export function parseJson(msg: Buffer): Record<string, unknown> {
  return JSON.parse(msg.subarray(16).toString()) as Record<string, unknown>;
}

/** A message whose payload bytes are a function of (seq, i), to verify content after reassembly. */
export function patterned(seq: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt16LE(seq & 0xffff, 0);
  b.writeUInt16LE(1, 2);
  b.writeUInt32LE(size, 4);
  b.writeUInt32LE(seq, 8);
  for (let i = 16; i < size; i++) b[i] = (seq * 31 + i) & 0xff;
  return b;
}

export function checkPatterned(msg: Buffer, seq: number): boolean {
  if (msg.readUInt32LE(8) !== seq || msg.readUInt32LE(4) !== msg.length) return false;
  for (let i = 16; i < msg.length; i++) if (msg[i] !== ((seq * 31 + i) & 0xff)) return false;
  return true;
}

/** Deterministic sizes/fd counts for the back-to-back tests: 16 B .. 70 KB, 0-3 fds. */
export function mixedPlan(n: number): { size: number; nfds: number }[] {
  let x = 0x12345678;
  const rnd = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
  const out: { size: number; nfds: number }[] = [];
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const size =
      r < 0.4
        ? 16 + Math.floor(rnd() * 48)
        : r < 0.8
          ? 64 + Math.floor(rnd() * 4000)
          : 4096 + Math.floor(rnd() * 66000);
    out.push({ size, nfds: Math.floor(rnd() * 4) });
  }
  return out;
}

/** eventfds whose counters identify (message, slot): value = seq * 4 + slot + 1. */
export function taggedEventfds(seq: number, n: number): number[] {
  const fds: number[] = [];
  for (let j = 0; j < n; j++) fds.push(eventfd(seq * 4 + j + 1));
  return fds;
}

export function tick(): Promise<void> {
  return new Promise((r) => setImmediate(r));
}

export async function ticks(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await tick();
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`timeout after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/** Resolves after `ms`. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until cond() holds (polling each tick), or fails after ms. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timeout after ${ms} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** What the addon throws: Error{errno, code, syscall} (see src/common.h). */
export type CodedError = Error & { code?: string; errno?: number; syscall?: string };

/** Runs fn and returns what it threw; fails when it returns normally. */
export function thrown(fn: () => unknown): CodedError {
  try {
    fn();
  } catch (err) {
    return err as CodedError;
  }
  throw new Error('expected an exception');
}

/** Runs fn and asserts the process has as many open fds afterwards (after pending closes ran). */
export async function noLeak(fn: () => Promise<void> | void): Promise<void> {
  await ticks(2);
  const before = openFds();
  await fn();
  let after = openFds();
  for (let i = 0; i < 50 && after !== before; i++) {
    await sleep(5);
    after = openFds();
  }
  if (after !== before) throw new Error(`fd leak: ${before} open before, ${after} after`);
}

export interface Received {
  msgs: Buffer[];
  fds: number[][];
  closed: boolean;
  closeErr: (Error & { code?: string; errno?: number; syscall?: string }) | undefined;
  drains: number;
}

/** Starts `conn` collecting everything into a Received record. */
export function collect(conn: Connection, opts: ConnectionOptions = {}): Received {
  const r: Received = { msgs: [], fds: [], closed: false, closeErr: undefined, drains: 0 };
  conn.start(
    {
      onMessage(data, fds) {
        r.msgs.push(data);
        r.fds.push(fds);
      },
      onClose(err) {
        r.closed = true;
        r.closeErr = err;
      },
      onDrain() {
        r.drains++;
      },
    },
    opts,
  );
  return r;
}

export function closeAll(fds: number[][]): void {
  for (const list of fds) for (const fd of list) closeFd(fd);
}

/** Spawns the peer script (test/peer.ts) with `sock` as its fd 3 (or a path it connects to); optional prlimit. */
export function spawnPeer(role: string, sock: number | string, opts: { nofile?: number } = {}): ChildProcess {
  const args = typeof sock === 'string' ? [peerScript, role, sock] : [peerScript, role];
  const stdio: ('ignore' | 'pipe' | 'inherit' | number)[] = ['ignore', 'pipe', 'inherit'];
  if (typeof sock === 'number') stdio.push(sock);
  if (opts.nofile !== undefined) {
    return spawn('prlimit', [`--nofile=${opts.nofile}:${opts.nofile}`, '--', process.execPath, ...args], {
      stdio,
    });
  }
  return spawn(process.execPath, args, { stdio });
}

export function havePrlimit(): boolean {
  return ['/usr/bin/prlimit', '/bin/prlimit'].some((p) => existsSync(p));
}

/** Resolves with the child's exit code and stdout. */
export function childDone(child: ChildProcess): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: out }));
  });
}
